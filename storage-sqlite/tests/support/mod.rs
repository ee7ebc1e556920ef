//! Helpers shared by the integration tests: temp dirs, model builders, a seeded PRNG, random
//! batches, and a comparison of every read method between two stores.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tidemark_engine::rng::SplitMix64;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationCursor, ConversationId, ConversationKind,
    Direction, LatestMessage, Message, MessageStatus, OutboxEntry, PendingChange, Seq, SeqRanges,
    Storage, StorageError, Timestamp, UserId, WriteBatch, WriteOp,
};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tidemark-sqlite-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A read-only test may have left a file without write permission.
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                if let Ok(meta) = e.metadata() {
                    let mut perm = meta.permissions();
                    #[allow(clippy::permissions_set_readonly_false)]
                    perm.set_readonly(false);
                    let _ = std::fs::set_permissions(e.path(), perm);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn cid(s: &str) -> ConversationId {
    ConversationId::from(s)
}

pub fn pending(conv: &str, id: &str, at: u64) -> Message {
    Message {
        conversation: cid(conv),
        seq: None,
        client_msg_id: ClientMsgId::from(id),
        sender: UserId::from("me"),
        kind: ContentKind::Text,
        content: format!("body {id}").into_bytes(),
        created_at: Timestamp(at),
        server_time: None,
        status: MessageStatus::Pending,
        edit_seq: None,
        revoked: false,
    }
}

pub fn sent(conv: &str, id: &str, seq: u64) -> Message {
    Message {
        seq: Some(Seq(seq)),
        server_time: Some(Timestamp(1000 + seq)),
        status: MessageStatus::Sent,
        ..pending(conv, id, seq)
    }
}

/// A conversation holding `1..=max`, so messages in that range pass the integrity check.
pub fn conversation(id: &str, activity: u64, max: u64) -> Conversation {
    Conversation {
        server_max_seq: Seq(max),
        held: SeqRanges::from_range(Seq(1), Seq(max)),
        last_activity: Timestamp(activity),
        unread: max / 2,
        latest: Some(LatestMessage::of(&sent(id, "latest", max.max(1)))),
        ..Conversation::new(cid(id), ConversationKind::Group)
    }
}

pub fn batch(ops: Vec<WriteOp>) -> WriteBatch {
    WriteBatch { ops }
}

/// A batch that builds a small, consistent store: conversations, messages within their held
/// ranges, a tombstone, an edit, a revoke, an unsent send with its outbox entry, a pending
/// change. Passes the integrity check.
pub fn sample_batch() -> WriteBatch {
    let mut ops = Vec::new();
    for (i, name) in ["alpha", "beta", "gamma"].into_iter().enumerate() {
        let mut conv = conversation(name, 100 + i as u64, 12);
        conv.deleted = SeqRanges::from_range(Seq(11), Seq(12));
        ops.push(WriteOp::PutConversation(conv));
        let mut msgs: Vec<Message> = (1..=10)
            .map(|s| sent(name, &format!("{name}-{s}"), s))
            .collect();
        msgs[2].kind = ContentKind::Custom("poll ✓".into());
        msgs[3].content = "héllo wörld 👋".as_bytes().to_vec();
        msgs[4].kind = ContentKind::Edit { target: Seq(1) };
        ops.push(WriteOp::PutMessages(msgs));
        ops.push(WriteOp::PutTombstones {
            conversation: cid(name),
            seqs: SeqRanges::from_range(Seq(11), Seq(12)),
        });
    }
    ops.push(WriteOp::EditMessage {
        conversation: cid("alpha"),
        target: Seq(1),
        edit_seq: Seq(5),
        sender: UserId::from("me"),
        content: b"edited".to_vec(),
    });
    ops.push(WriteOp::RevokeMessage {
        conversation: cid("beta"),
        target: Seq(2),
        revoke_seq: Seq(6),
        sender: UserId::from("me"),
    });
    let mut failed = pending("alpha", "failed-1", 7);
    failed.status = MessageStatus::Failed {
        reason: "too large".into(),
    };
    ops.push(WriteOp::PutMessages(vec![
        pending("alpha", "out-1", 50),
        failed,
    ]));
    ops.push(WriteOp::PutOutbox(OutboxEntry {
        conversation: cid("alpha"),
        client_msg_id: ClientMsgId::from("out-1"),
        kind: ContentKind::Text,
        content: b"body out-1".to_vec(),
        created_at: Timestamp(50),
        attempts: 2,
    }));
    ops.push(WriteOp::PutPendingChange(PendingChange {
        conversation: cid("gamma"),
        seq: Seq(14),
        target: Seq(13),
        sender: UserId::from("me"),
        kind: ContentKind::Revoke { target: Seq(13) },
        content: Vec::new(),
    }));
    batch(ops)
}

/// The workspace's PRNG ([`SplitMix64`]) with the draws these tests make: seeded, good
/// enough to pick test cases.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.modulo(n)
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The ids random batches draw from: few, so ops collide (same seq, same client id, ties in
/// the list order) and the merge and rejection rules are exercised.
pub const CONVS: [&str; 3] = ["c1", "c2", "c3"];
pub const MAX_SEQ: u64 = 16;

pub fn client_ids() -> Vec<String> {
    (0..10).map(|i| format!("m{i}")).collect()
}

fn random_conv(rng: &mut Rng) -> ConversationId {
    cid(CONVS[rng.below(CONVS.len() as u64) as usize])
}

fn random_ranges(rng: &mut Rng) -> SeqRanges {
    let mut set = SeqRanges::new();
    for _ in 0..rng.below(3) {
        let start = 1 + rng.below(MAX_SEQ);
        set.insert_range(Seq(start), Seq(start + rng.below(5)));
    }
    set
}

fn random_kind(rng: &mut Rng) -> ContentKind {
    match rng.below(8) {
        0 => ContentKind::Image,
        1 => ContentKind::File,
        2 => ContentKind::Custom(format!("k{}", rng.below(3))),
        3 => ContentKind::Edit {
            target: Seq(1 + rng.below(MAX_SEQ)),
        },
        4 => ContentKind::Revoke {
            target: Seq(1 + rng.below(MAX_SEQ)),
        },
        _ => ContentKind::Text,
    }
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(12) as usize;
    (0..len).map(|_| rng.below(256) as u8).collect()
}

fn random_message(rng: &mut Rng, ids: &[String]) -> Message {
    let conv = *rng.pick(&CONVS);
    let id = rng.pick(ids).clone();
    let seq = (!rng.chance(3)).then(|| Seq(1 + rng.below(MAX_SEQ)));
    let status = match (seq, rng.below(3)) {
        (Some(_), _) => MessageStatus::Sent,
        (None, 0) => MessageStatus::Failed {
            reason: format!("r{}", rng.below(3)),
        },
        (None, _) => MessageStatus::Pending,
    };
    Message {
        conversation: cid(conv),
        seq,
        client_msg_id: ClientMsgId(id),
        sender: UserId(format!("u{}", rng.below(3))),
        kind: random_kind(rng),
        content: random_bytes(rng),
        created_at: Timestamp(rng.below(6)),
        server_time: seq.map(|s| Timestamp(1000 + s.0)),
        status,
        edit_seq: rng.chance(4).then(|| Seq(1 + rng.below(MAX_SEQ))),
        revoked: rng.chance(8),
    }
}

fn random_conversation(rng: &mut Rng, ids: &[String]) -> Conversation {
    let conv = *rng.pick(&CONVS);
    let latest = rng.chance(2).then(|| {
        let mut m = random_message(rng, ids);
        m.conversation = cid(conv);
        LatestMessage::of(&m)
    });
    Conversation {
        id: cid(conv),
        kind: if rng.chance(2) {
            ConversationKind::Direct
        } else {
            ConversationKind::Group
        },
        server_max_seq: Seq(rng.below(MAX_SEQ + 4)),
        server_min_seq: Seq(rng.below(3)),
        held: random_ranges(rng),
        read_seq: Seq(rng.below(MAX_SEQ)),
        not_unread: random_ranges(rng),
        unread: rng.below(20),
        latest,
        // Few distinct values: ties in the list order are common.
        last_activity: Timestamp(rng.below(4)),
        deleted: random_ranges(rng),
    }
}

/// One random op over the small id pools.
pub fn random_op(rng: &mut Rng, ids: &[String]) -> WriteOp {
    match rng.below(12) {
        0 | 1 => WriteOp::PutConversation(random_conversation(rng, ids)),
        2..=4 => {
            let n = 1 + rng.below(4);
            WriteOp::PutMessages((0..n).map(|_| random_message(rng, ids)).collect())
        }
        5 => WriteOp::EditMessage {
            conversation: random_conv(rng),
            target: Seq(rng.below(MAX_SEQ + 1)),
            edit_seq: Seq(rng.below(MAX_SEQ + 1)),
            sender: UserId(format!("u{}", rng.below(3))),
            content: random_bytes(rng),
        },
        6 => WriteOp::RevokeMessage {
            conversation: random_conv(rng),
            target: Seq(rng.below(MAX_SEQ + 1)),
            revoke_seq: Seq(rng.below(MAX_SEQ + 1)),
            sender: UserId(format!("u{}", rng.below(3))),
        },
        7 => WriteOp::PutTombstones {
            conversation: random_conv(rng),
            seqs: random_ranges(rng),
        },
        8 => WriteOp::DeletePendingMessage {
            conversation: random_conv(rng),
            client_msg_id: ClientMsgId(rng.pick(ids).clone()),
        },
        9 => {
            if rng.chance(2) {
                WriteOp::RemoveOutbox(ClientMsgId(rng.pick(ids).clone()))
            } else {
                WriteOp::PutOutbox(OutboxEntry {
                    conversation: random_conv(rng),
                    client_msg_id: ClientMsgId(rng.pick(ids).clone()),
                    kind: random_kind(rng),
                    content: random_bytes(rng),
                    created_at: Timestamp(rng.below(6)),
                    attempts: rng.below(4) as u32,
                })
            }
        }
        _ => {
            let conversation = random_conv(rng);
            let seq = Seq(1 + rng.below(MAX_SEQ));
            if rng.chance(2) {
                WriteOp::RemovePendingChange { conversation, seq }
            } else {
                let target = Seq(1 + rng.below(MAX_SEQ));
                WriteOp::PutPendingChange(PendingChange {
                    conversation,
                    seq,
                    target,
                    sender: UserId(format!("u{}", rng.below(3))),
                    kind: if rng.chance(2) {
                        ContentKind::Edit { target }
                    } else {
                        ContentKind::Revoke { target }
                    },
                    content: random_bytes(rng),
                })
            }
        }
    }
}

pub fn random_batch(rng: &mut Rng, ids: &[String]) -> WriteBatch {
    let n = 1 + rng.below(5);
    batch((0..n).map(|_| random_op(rng, ids)).collect())
}

/// The variant of a storage error (details differ between backends).
pub fn variant(e: &StorageError) -> &'static str {
    e.code()
}

/// Every read method of `a` and `b` gives the same answer, over the given conversations and
/// client ids. `thorough` also walks every anchor and page size.
pub async fn assert_same_reads(
    a: &impl Storage,
    b: &impl Storage,
    convs: &[&str],
    ids: &[String],
    thorough: bool,
    context: &str,
) {
    assert_eq!(
        a.load_snapshot().await.unwrap(),
        b.load_snapshot().await.unwrap(),
        "{context}: load_snapshot"
    );
    assert_eq!(
        a.total_unread().await.unwrap(),
        b.total_unread().await.unwrap(),
        "{context}: total_unread"
    );
    assert_eq!(
        a.outbox().await.unwrap(),
        b.outbox().await.unwrap(),
        "{context}: outbox"
    );
    let ia = a.check_integrity().await.map_err(|e| e.to_string());
    let ib = b.check_integrity().await.map_err(|e| e.to_string());
    assert_eq!(ia, ib, "{context}: check_integrity");

    // The whole list, page by page, for several page sizes.
    for size in [1usize, 2, 3, 100] {
        let mut cursor: Option<ConversationCursor> = None;
        loop {
            let pa = a.conversations_page(cursor.clone(), size).await.unwrap();
            let pb = b.conversations_page(cursor.clone(), size).await.unwrap();
            assert_eq!(pa, pb, "{context}: conversations_page({cursor:?}, {size})");
            match pa.last() {
                Some(last) if pa.len() == size => cursor = Some(ConversationCursor::after(last)),
                _ => break,
            }
        }
    }
    // Cursors that name no stored conversation.
    for activity in 0..5 {
        for id in ["", "c2", "c25", "zz"] {
            let cursor = ConversationCursor {
                last_activity: Timestamp(activity),
                id: cid(id),
            };
            assert_eq!(
                a.conversations_page(Some(cursor.clone()), 2).await.unwrap(),
                b.conversations_page(Some(cursor.clone()), 2).await.unwrap(),
                "{context}: conversations_page({cursor:?})"
            );
        }
    }

    for &conv in convs {
        let c = cid(conv);
        assert_eq!(
            a.conversation(&c).await.unwrap(),
            b.conversation(&c).await.unwrap(),
            "{context}: conversation({conv})"
        );
        assert_eq!(
            a.tombstones(&c).await.unwrap(),
            b.tombstones(&c).await.unwrap(),
            "{context}: tombstones({conv})"
        );
        assert_eq!(
            a.unsent_messages(&c).await.unwrap(),
            b.unsent_messages(&c).await.unwrap(),
            "{context}: unsent_messages({conv})"
        );
        for id in ids {
            let id = ClientMsgId(id.clone());
            // The senders of `random_message`.
            for sender in (0..3).map(|i| UserId(format!("u{i}"))) {
                assert_eq!(
                    a.message_by_client_id(&c, &sender, &id).await.unwrap(),
                    b.message_by_client_id(&c, &sender, &id).await.unwrap(),
                    "{context}: message_by_client_id({conv}, {sender}, {id})"
                );
            }
        }
        let anchors: Vec<Option<Seq>> = if thorough {
            std::iter::once(None)
                .chain((0..=MAX_SEQ + 6).map(|s| Some(Seq(s))))
                .chain([Some(Seq(u64::MAX))])
                .collect()
        } else {
            vec![None, Some(Seq(MAX_SEQ / 2)), Some(Seq(u64::MAX))]
        };
        let limits: &[usize] = if thorough { &[0, 1, 3, 100] } else { &[3, 100] };
        for anchor in anchors {
            for direction in [Direction::Before, Direction::After] {
                for &limit in limits {
                    assert_eq!(
                        a.messages_page(&c, anchor, direction, limit).await.unwrap(),
                        b.messages_page(&c, anchor, direction, limit).await.unwrap(),
                        "{context}: messages_page({conv}, {anchor:?}, {direction:?}, {limit})"
                    );
                }
            }
        }
    }
}
