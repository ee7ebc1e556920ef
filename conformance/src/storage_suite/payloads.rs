//! Unicode, large payloads, large numbers and many conversations.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use tidemark_engine::{
    ContentKind, Conversation, ConversationKind, Direction, LatestMessage, Message, MessageStatus,
    OutboxEntry, PendingChange, Seq, SeqRanges, Storage, Timestamp, UserId, WriteBatch, WriteOp,
};

use super::fixtures::*;
use super::{
    assert_dumps_equal, conversations_in_pages, dump_including, normalize_snapshot, Backend,
    CaseResult,
};

/// A conversation id with emoji, Hebrew, a combining accent, bidi controls and a NUL.
const UNICODE_CONV: &str = "会话-💬-שלום-e\u{301}-\u{202E}rtl\u{202C}-\0-end";

/// Emoji (ZWJ sequences, flags), CJK, Hangul, Arabic and Hebrew, an RLM, a NUL, a BOM, then
/// bytes that are not UTF-8 at all.
fn unicode_content(tag: &str) -> Vec<u8> {
    let mut bytes = format!(
        "{tag}: emoji 👩‍👩‍👧‍👦🏳️‍🌈🇯🇵 CJK 漢字かなカナ 한글 RTL مرحبا بالعالم שלום \u{200F} NUL \0 BOM \u{FEFF} end"
    )
    .into_bytes();
    bytes.extend([0xFF, 0xFE, 0xC0, 0x80, 0x00, 0xED, 0xA0, 0x80]);
    bytes
}

/// Unicode everywhere round-trips byte for byte: conversation, client and user ids with emoji,
/// CJK, RTL text, combining marks, bidi controls and NUL; content with all of that and invalid
/// UTF-8; custom kind names, failure reasons, previews, the outbox, pending changes,
/// tombstones and edits; also after a reopen.
pub async fn unicode_round_trips_everywhere<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let sender = UserId::from("用户-👤-مستخدم-\0");
    let m1 = Message {
        sender: sender.clone(),
        kind: ContentKind::Custom("类型/🧩/\u{5d0}\0".to_owned()),
        content: unicode_content("one"),
        ..sent(UNICODE_CONV, "клиент-🆔-مرحبا-\0-1", 1)
    };
    let m2 = Message {
        sender: sender.clone(),
        content: unicode_content("two"),
        ..sent(UNICODE_CONV, "メッセージ-✉️-2", 2)
    };
    let p = Message {
        content: unicode_content("pending"),
        ..pending(UNICODE_CONV, "待发-📨-\u{202E}", 50)
    };
    let f = Message {
        status: MessageStatus::Failed {
            reason: "拒绝 ❌ رفض \0".to_owned(),
        },
        content: unicode_content("failed"),
        ..pending(UNICODE_CONV, "失败-💥", 40)
    };
    let entry = OutboxEntry {
        kind: ContentKind::Custom("类型/📎".to_owned()),
        content: unicode_content("outbox"),
        ..outbox_entry(UNICODE_CONV, "待发-📨-\u{202E}", 50)
    };
    let change = PendingChange {
        content: unicode_content("change"),
        ..edit_change(UNICODE_CONV, 9, 8, "")
    };
    let record = Conversation {
        latest: Some(LatestMessage {
            sender,
            preview: unicode_content("preview"),
            ..LatestMessage::of(&m2)
        }),
        ..conv(UNICODE_CONV, 77, 5, 4)
    };
    let edited = unicode_content("edited ✏️");
    apply(
        &store,
        vec![
            put_conv(record.clone()),
            put(vec![m1.clone(), m2.clone(), p.clone(), f.clone()]),
            WriteOp::PutOutbox(entry.clone()),
            WriteOp::PutPendingChange(change.clone()),
            tombstones(UNICODE_CONV, 3, 3),
            edit_by(&m2.sender.0, UNICODE_CONV, 2, 5, &edited),
        ],
    )
    .await?;

    let c = cid(UNICODE_CONV);
    let m2_edited = Message {
        content: edited,
        edit_seq: Some(Seq(5)),
        ..m2
    };
    assert_eq!(store.conversation(&c).await?, Some(record.clone()));
    assert_eq!(store.conversations_page(None, 10).await?, vec![record]);
    assert_eq!(
        store.messages_page(&c, None, Direction::After, 10).await?,
        vec![m1.clone(), m2_edited.clone()]
    );
    for m in [&m1, &m2_edited, &p, &f] {
        assert_eq!(
            store
                .message_by_client_id(&c, &m.sender, &m.client_msg_id)
                .await?
                .as_ref(),
            Some(m),
            "{:?}",
            m.client_msg_id
        );
    }
    assert_eq!(store.unsent_messages(&c).await?, vec![f, p]);
    assert_eq!(store.outbox().await?, vec![entry]);
    assert_eq!(store.load_snapshot().await?.pending_changes, vec![change]);
    assert_eq!(
        store.tombstones(&c).await?,
        SeqRanges::from_range(Seq(3), Seq(3))
    );
    assert_eq!(store.total_unread().await?, 5);
    store.check_integrity().await?;

    let before = dump_including(&store, std::slice::from_ref(&c)).await?;
    let store = factory.reopen(0, store).await?;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &[c]).await?,
        "unicode store after reopen",
    );
    Ok(())
}

/// Ties in the conversation list order ids bytewise (Rust's `String` order: UTF-8 bytes, so by
/// code point), with no locale, case folding or normalization: ASCII upper case, NULs,
/// accented Latin, Greek, CJK, fullwidth forms, emoji, the last code point.
pub async fn conversation_ties_order_unicode_ids_bytewise<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let ids = [
        "b",
        "B",
        "a",
        "\u{e9}",
        "e\u{301}",
        "中文",
        "😀",
        "\u{ff}",
        "\u{10FFFF}",
        "a\0b",
        "a\0",
        "ab",
        "Ω",
        "\u{FF21}",
        "z",
        "Z",
        "_",
        "0",
    ];
    let mut ops: Vec<WriteOp> = ids.iter().map(|id| put_conv(conv(id, 42, 0, 0))).collect();
    ops.push(put_conv(conv("newest", 43, 0, 0)));
    apply(&store, ops).await?;
    let mut expected: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    expected.insert(0, "newest".to_owned());
    for limit in [1, 4, 100] {
        assert_eq!(walk_ids(&store, limit).await?, expected, "walk by {limit}");
    }
    assert_eq!(
        list_ids(&store, Some(cursor(42, "a\0")), 3).await?,
        strs(["a\0b", "ab", "b"])
    );
    Ok(())
}

const MIB: usize = 1 << 20;

/// A 1 MiB payload of every byte value in a seed-dependent pattern.
fn payload(seed: usize) -> Vec<u8> {
    (0..MIB)
        .map(|i| ((i * 31 + seed * 7 + i / 251) % 256) as u8)
        .collect()
}

fn assert_payload(actual: Option<&[u8]>, expected: &[u8], what: &str) {
    let Some(actual) = actual else {
        panic!("{what}: missing");
    };
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(at) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{what}: differs at byte {at}: {} vs {}",
            actual[at], expected[at]
        );
    }
}

/// 1 MiB payloads round-trip byte for byte: a message's content, an edit's content, an outbox
/// entry, a pending change; also after a reopen.
pub async fn one_mib_payloads_round_trip<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let a = Message {
        content: payload(1),
        ..sent("c", "a", 1)
    };
    let p = Message {
        content: payload(2),
        ..pending("c", "p", 5)
    };
    let entry = OutboxEntry {
        content: payload(2),
        ..outbox_entry("c", "p", 5)
    };
    let change = PendingChange {
        content: payload(3),
        ..edit_change("c", 9, 8, "")
    };
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 2)),
            put(vec![a, p, sent("c", "b", 2)]),
            WriteOp::PutOutbox(entry),
            WriteOp::PutPendingChange(change),
            edit("c", 2, 3, &payload(4)),
        ],
    )
    .await?;
    check_mib_payloads(&store, "as written").await?;
    let store = factory.reopen(0, store).await?;
    check_mib_payloads(&store, "after reopen").await
}

async fn check_mib_payloads<S: Storage>(store: &S, when: &str) -> CaseResult {
    let a = row(store, "c", "a").await?;
    assert_payload(a.as_ref().map(|m| &m.content[..]), &payload(1), when);
    let p = row(store, "c", "p").await?;
    assert_payload(p.as_ref().map(|m| &m.content[..]), &payload(2), when);
    let page = store
        .messages_page(&cid("c"), None, Direction::After, 10)
        .await?;
    assert_eq!(page.len(), 2, "{when}");
    assert_payload(page.first().map(|m| &m.content[..]), &payload(1), when);
    assert_payload(page.get(1).map(|m| &m.content[..]), &payload(4), when);
    let outbox = store.outbox().await?;
    assert_payload(outbox.first().map(|e| &e.content[..]), &payload(2), when);
    let snapshot = store.load_snapshot().await?;
    assert_payload(
        snapshot.pending_changes.first().map(|c| &c.content[..]),
        &payload(3),
        when,
    );
    store.check_integrity().await?;
    Ok(())
}

/// Numbers up to `i64::MAX` round-trip and order as numbers: seqs near 2^62 and at
/// `i64::MAX`, timestamps at `i64::MAX`, unread counts beyond `u32`, `u32::MAX` attempts.
pub async fn large_numbers_round_trip<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let big = i64::MAX as u64;
    let base = 1u64 << 62;
    let record = Conversation {
        server_max_seq: Seq(big),
        server_min_seq: Seq(base),
        held: ranges(&[(base, base + 2), (big - 1, big)]),
        read_seq: Seq(base),
        not_unread: ranges(&[(big - 1, big - 1)]),
        unread: 1 << 40,
        last_activity: Timestamp(big),
        deleted: ranges(&[(big - 5, big - 3)]),
        ..conv("big", 0, 0, 0)
    };
    let messages: Vec<Message> = [base, base + 1, base + 2, big - 1, big]
        .iter()
        .map(|&s| Message {
            created_at: Timestamp(big),
            server_time: Some(Timestamp(big)),
            edit_seq: (s == base).then_some(Seq(big)),
            ..sent("big", &format!("m{s}"), s)
        })
        .collect();
    let entry = OutboxEntry {
        created_at: Timestamp(big),
        attempts: u32::MAX,
        ..outbox_entry("big", "p", 0)
    };
    let p = Message {
        created_at: Timestamp(big),
        ..pending("big", "p", 0)
    };
    let change = edit_change("big", big, big - 1, "x");
    apply(
        &store,
        vec![
            put_conv(record.clone()),
            put_conv(conv("older", big - 1, 1, 0)),
            put_conv(conv("oldest", 1, 1, 0)),
            put(messages.clone()),
            put(vec![p.clone()]),
            WriteOp::PutOutbox(entry.clone()),
            WriteOp::PutPendingChange(change.clone()),
            tombstones("big", big - 5, big - 3),
        ],
    )
    .await?;
    assert_eq!(store.conversation(&cid("big")).await?, Some(record));
    assert_eq!(walk_ids(&store, 1).await?, strs(["big", "older", "oldest"]));
    assert_eq!(
        list_ids(&store, Some(cursor(big, "big")), 10).await?,
        strs(["older", "oldest"])
    );
    assert_eq!(store.total_unread().await?, (1 << 40) + 2);
    assert_eq!(
        store
            .messages_page(&cid("big"), None, Direction::After, 10)
            .await?,
        messages
    );
    assert_eq!(
        page_seqs(&store, "big", Some(big), Direction::Before, 2).await?,
        vec![base + 2, big - 1]
    );
    assert_eq!(
        page_seqs(&store, "big", Some(base + 2), Direction::After, 1).await?,
        vec![big - 1]
    );
    assert_eq!(
        page_seqs(&store, "big", Some(base), Direction::Before, 10).await?,
        no_seqs()
    );
    assert_eq!(row(&store, "big", "p").await?, Some(p));
    assert_eq!(store.outbox().await?, vec![entry]);
    assert_eq!(store.load_snapshot().await?.pending_changes, vec![change]);
    assert_eq!(
        store.tombstones(&cid("big")).await?,
        ranges(&[(big - 5, big - 3)])
    );
    store.check_integrity().await?;
    Ok(())
}

const MANY: u64 = 100_000;
const MANY_BATCH: u64 = 5_000;

/// Conversation `i` of the 100k case: activity ties in pairs, varied sync state.
fn many_record(i: u64) -> Conversation {
    let max = i % 1_000 + 1;
    Conversation {
        kind: if i.is_multiple_of(2) {
            ConversationKind::Direct
        } else {
            ConversationKind::Group
        },
        server_max_seq: Seq(max + 5),
        held: SeqRanges::from_range(Seq(1), Seq(max)),
        read_seq: Seq(max / 2),
        unread: i % 4,
        last_activity: Timestamp((i * 7_919) % (MANY / 2)),
        ..conv(&format!("conv-{i:06}"), 0, 0, 0)
    }
}

/// 100k conversations written in batches of 5,000: the snapshot holds exactly 100k distinct
/// records, spot-checked field by field; `conversation()` finds them; the total unread is the
/// sum; the first list page and a walk of the whole list (pages of 2,000) are in order.
pub async fn hundred_thousand_conversations_snapshot<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let mut start = 0;
    while start < MANY {
        let ops = (start..start + MANY_BATCH)
            .map(|i| put_conv(many_record(i)))
            .collect();
        store.apply(WriteBatch { ops }).await?;
        start += MANY_BATCH;
    }

    let mut snapshot = store.load_snapshot().await?;
    assert_eq!(snapshot.conversations.len() as u64, MANY);
    normalize_snapshot(&mut snapshot);
    let distinct = snapshot.conversations.windows(2).all(|w| w[0].id < w[1].id);
    assert!(distinct, "snapshot conversations are distinct");
    let spots = [0, 1, 4_242, 50_000, 77_777, MANY - 1];
    let wanted: BTreeMap<String, u64> =
        spots.iter().map(|&i| (format!("conv-{i:06}"), i)).collect();
    let mut found = 0;
    for c in &snapshot.conversations {
        if let Some(&i) = wanted.get(c.id.as_str()) {
            assert_eq!(c, &many_record(i), "snapshot record {i}");
            found += 1;
        }
    }
    assert_eq!(found, spots.len(), "spot-checked records in the snapshot");
    assert!(snapshot.outbox.is_empty() && snapshot.pending_changes.is_empty());
    for &i in &spots {
        assert_eq!(
            store.conversation(&cid(&format!("conv-{i:06}"))).await?,
            Some(many_record(i))
        );
    }
    assert_eq!(store.total_unread().await?, MANY / 4 * 6);

    let mut order: Vec<(Reverse<u64>, String)> = (0..MANY)
        .map(|i| {
            let r = many_record(i);
            (Reverse(r.last_activity.0), r.id.0)
        })
        .collect();
    order.sort();
    let expected: Vec<String> = order.into_iter().map(|(_, id)| id).collect();
    let first = list_ids(&store, None, 20).await?;
    assert_eq!(first, expected[..20].to_vec(), "first page");
    let walked: Vec<String> = conversations_in_pages(&store, 2_000)
        .await?
        .into_iter()
        .map(|c| c.id.0)
        .collect();
    assert_eq!(walked.len() as u64, MANY);
    assert!(walked == expected, "the walked list is in order");
    Ok(())
}
