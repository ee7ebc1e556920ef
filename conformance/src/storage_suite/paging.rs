//! Ordering and paging of the conversation list and of message pages.

use std::cmp::Reverse;

use tidemark_engine::{Direction, Storage};

use super::fixtures::*;
use super::{messages_in_pages, Backend, CaseResult};

const BEFORE: Direction = Direction::Before;
const AFTER: Direction = Direction::After;

/// The list is newest activity first; ties in activity are broken by id ascending, whatever
/// the order the conversations were written in.
pub async fn conversations_page_orders_by_activity_then_id<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let ops = [("m", 5), ("b", 5), ("z", 9), ("a", 1), ("c", 5), ("k", 9)]
        .iter()
        .map(|(id, at)| put_conv(conv(id, *at, 0, 0)))
        .collect();
    apply(&store, ops).await?;
    let expected = strs(["k", "z", "b", "c", "m", "a"]);
    assert_eq!(list_ids(&store, None, 100).await?, expected);
    assert_eq!(walk_ids(&store, 1).await?, expected);
    assert_eq!(walk_ids(&store, 4).await?, expected);
    Ok(())
}

/// One conversation: the first page is it (limit 1 or 100), and the page after it is empty.
pub async fn conversations_page_single_item<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let only = conv("only", 42, 1, 0);
    apply(&store, vec![put_conv(only.clone())]).await?;
    assert_eq!(store.conversations_page(None, 1).await?, vec![only.clone()]);
    assert_eq!(
        store.conversations_page(None, 100).await?,
        vec![only.clone()]
    );
    assert!(store
        .conversations_page(Some(cursor(42, "only")), 1)
        .await?
        .is_empty());
    assert_eq!(walk_ids(&store, 1).await?, strs(["only"]));
    Ok(())
}

/// Pages that end exactly at the end of the list: 6 conversations read 3, 6, 4 and 7 at a
/// time give full pages, then the rest, then an empty page, never a repeat.
pub async fn conversations_page_exact_boundaries<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let ops = (1..=6u64)
        .map(|i| put_conv(conv(&format!("c{i}"), i * 10, 0, 0)))
        .collect();
    apply(&store, ops).await?;
    let expected = strs(["c6", "c5", "c4", "c3", "c2", "c1"]);
    for (limit, sizes) in [
        (3, vec![3, 3, 0]),
        (6, vec![6, 0]),
        (4, vec![4, 2]),
        (7, vec![6]),
    ] {
        let mut seen: Vec<String> = Vec::new();
        let mut after = None;
        let mut got_sizes = Vec::new();
        loop {
            let page = store.conversations_page(after.clone(), limit).await?;
            got_sizes.push(page.len());
            let full = page.len() == limit;
            after = page.last().map(tidemark_engine::ConversationCursor::after);
            seen.extend(page.into_iter().map(|c| c.id.0));
            if !full || got_sizes.len() > 10 {
                break;
            }
        }
        assert_eq!(got_sizes, sizes, "page sizes with limit {limit}");
        assert_eq!(seen, expected, "list read {limit} at a time");
    }
    Ok(())
}

/// Limit 0 returns no conversation, with or without a cursor.
pub async fn conversations_page_limit_zero<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("a", 1, 0, 0)), put_conv(conv("b", 2, 0, 0))],
    )
    .await?;
    assert!(store.conversations_page(None, 0).await?.is_empty());
    assert!(store
        .conversations_page(Some(cursor(2, "b")), 0)
        .await?
        .is_empty());
    assert!(store
        .conversations_page(Some(cursor(1_000, "")), 0)
        .await?
        .is_empty());
    Ok(())
}

/// A cursor need not name a stored conversation: one newer than everything gives the whole
/// list, one at an entry continues right after it, one between two entries or between ties
/// continues at its (activity, id) position, one past the oldest gives nothing.
pub async fn conversations_page_cursor_positions<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let ops = [("a", 10), ("b", 10), ("c", 10), ("d", 20), ("e", 5)]
        .iter()
        .map(|(id, at)| put_conv(conv(id, *at, 0, 0)))
        .collect();
    apply(&store, ops).await?;
    let cases: [((u64, &str), Vec<String>); 11] = [
        ((1_000_000, ""), strs(["d", "a", "b", "c", "e"])),
        ((20, "d"), strs(["a", "b", "c", "e"])),
        ((20, "a"), strs(["d", "a", "b", "c", "e"])),
        ((20, "z"), strs(["a", "b", "c", "e"])),
        ((10, "aa"), strs(["b", "c", "e"])),
        ((10, "c"), strs(["e"])),
        ((15, "zzz"), strs(["a", "b", "c", "e"])),
        ((5, ""), strs(["e"])),
        ((5, "e"), Vec::new()),
        ((4, ""), Vec::new()),
        ((0, ""), Vec::new()),
    ];
    for ((at, id), expected) in cases {
        assert_eq!(
            list_ids(&store, Some(cursor(at, id)), 10).await?,
            expected,
            "page after cursor ({at}, {id:?})"
        );
    }
    assert_eq!(
        list_ids(&store, Some(cursor(10, "")), 2).await?,
        strs(["a", "b"])
    );
    Ok(())
}

/// Walking 300 conversations with many activity ties page by page (sizes 1, 7, 299, 300, 301)
/// visits every one once, in the order (activity desc, id asc).
pub async fn conversations_page_walks_the_whole_list<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let records: Vec<(u64, String)> = (0..300u64)
        .map(|i| ((i * 7) % 13, format!("c{i:03}")))
        .collect();
    apply(
        &store,
        records
            .iter()
            .map(|(at, id)| put_conv(conv(id, *at, 0, 0)))
            .collect(),
    )
    .await?;
    let mut expected = records.clone();
    expected.sort_by(|a, b| (Reverse(a.0), &a.1).cmp(&(Reverse(b.0), &b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    for limit in [1, 7, 299, 300, 301] {
        assert_eq!(walk_ids(&store, limit).await?, expected, "walk by {limit}");
    }
    Ok(())
}

/// Message pages of a conversation without messages are empty at every anchor and direction:
/// an unknown conversation, one with a record and held seqs but no rows, one with only
/// pending and failed rows.
pub async fn messages_page_without_messages<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![
            put_conv(conv("held", 1, 0, 5)),
            put_conv(conv("unsent", 2, 0, 0)),
            put(vec![pending("unsent", "p", 1), failed("unsent", "f", 2)]),
        ],
    )
    .await?;
    for conv_id in ["unknown", "held", "unsent"] {
        for direction in [BEFORE, AFTER] {
            for anchor in [
                None,
                Some(0),
                Some(1),
                Some(3),
                Some(5),
                Some(6),
                Some(1_000),
            ] {
                for limit in [1, 10] {
                    assert_eq!(
                        page_seqs(&store, conv_id, anchor, direction, limit).await?,
                        no_seqs(),
                        "{conv_id} {direction:?} {anchor:?} limit {limit}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// One message at seq 5: anchors below, at and above it in both directions.
pub async fn messages_page_single_message<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let m = sent("c", "m", 5);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 5)), put(vec![m.clone()])],
    )
    .await?;
    let cases: [(Option<u64>, Direction, Vec<u64>); 12] = [
        (None, BEFORE, vec![5]),
        (None, AFTER, vec![5]),
        (Some(5), BEFORE, vec![]),
        (Some(5), AFTER, vec![]),
        (Some(6), BEFORE, vec![5]),
        (Some(6), AFTER, vec![]),
        (Some(4), BEFORE, vec![]),
        (Some(4), AFTER, vec![5]),
        (Some(0), BEFORE, vec![]),
        (Some(0), AFTER, vec![5]),
        (Some(100), BEFORE, vec![5]),
        (Some(100), AFTER, vec![]),
    ];
    for (anchor, direction, expected) in cases {
        for limit in [1, 100] {
            assert_eq!(
                page_seqs(&store, "c", anchor, direction, limit).await?,
                expected,
                "{direction:?} {anchor:?} limit {limit}"
            );
        }
    }
    assert_eq!(
        store.messages_page(&cid("c"), None, BEFORE, 1).await?,
        vec![m],
        "the row itself"
    );
    Ok(())
}

/// `Direction::Before` without an anchor is the newest `limit` messages, ascending; with an
/// anchor the newest `limit` strictly below it (anchor at, below and above existing seqs).
pub async fn messages_page_before<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 20)), put(sent_run("c", 1..=20))],
    )
    .await?;
    let cases: [(Option<u64>, usize, Vec<u64>); 9] = [
        (None, 5, (16..=20).collect()),
        (None, 100, (1..=20).collect()),
        (Some(16), 5, (11..=15).collect()),
        (Some(3), 5, vec![1, 2]),
        (Some(1), 5, vec![]),
        (Some(0), 5, vec![]),
        (Some(21), 3, vec![18, 19, 20]),
        (Some(1_000), 3, vec![18, 19, 20]),
        (Some(20), 1, vec![19]),
    ];
    for (anchor, limit, expected) in cases {
        assert_eq!(
            page_seqs(&store, "c", anchor, BEFORE, limit).await?,
            expected,
            "Before {anchor:?} limit {limit}"
        );
    }
    Ok(())
}

/// `Direction::After` without an anchor is the oldest `limit` messages; with an anchor the
/// oldest `limit` strictly above it (anchor at, below and above existing seqs).
pub async fn messages_page_after<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 20)), put(sent_run("c", 1..=20))],
    )
    .await?;
    let cases: [(Option<u64>, usize, Vec<u64>); 9] = [
        (None, 5, (1..=5).collect()),
        (None, 100, (1..=20).collect()),
        (Some(0), 5, (1..=5).collect()),
        (Some(5), 5, (6..=10).collect()),
        (Some(18), 5, vec![19, 20]),
        (Some(20), 5, vec![]),
        (Some(21), 5, vec![]),
        (Some(1_000), 5, vec![]),
        (Some(1), 1, vec![2]),
    ];
    for (anchor, limit, expected) in cases {
        assert_eq!(
            page_seqs(&store, "c", anchor, AFTER, limit).await?,
            expected,
            "After {anchor:?} limit {limit}"
        );
    }
    Ok(())
}

/// Ten messages read 5 at a time end exactly: two full pages then an empty one, both
/// directions; 10 and 11 at a time give everything in one page.
pub async fn messages_page_exact_boundaries<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 10)), put(sent_run("c", 1..=10))],
    )
    .await?;
    assert_eq!(
        page_seqs(&store, "c", None, AFTER, 5).await?,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        page_seqs(&store, "c", Some(5), AFTER, 5).await?,
        vec![6, 7, 8, 9, 10]
    );
    assert_eq!(page_seqs(&store, "c", Some(10), AFTER, 5).await?, no_seqs());
    assert_eq!(
        page_seqs(&store, "c", None, BEFORE, 5).await?,
        vec![6, 7, 8, 9, 10]
    );
    assert_eq!(
        page_seqs(&store, "c", Some(6), BEFORE, 5).await?,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(page_seqs(&store, "c", Some(1), BEFORE, 5).await?, no_seqs());
    for limit in [10, 11] {
        assert_eq!(page_seqs(&store, "c", None, AFTER, limit).await?.len(), 10);
        assert_eq!(page_seqs(&store, "c", None, BEFORE, limit).await?.len(), 10);
    }
    let all: Vec<u64> = (1..=10).collect();
    for limit in [1, 3, 5, 10] {
        for direction in [AFTER, BEFORE] {
            let walked: Vec<u64> = messages_in_pages(&store, &cid("c"), direction, limit)
                .await?
                .iter()
                .filter_map(|m| m.seq.map(|s| s.0))
                .collect();
            assert_eq!(walked, all, "walk {direction:?} by {limit}");
        }
    }
    Ok(())
}

/// Limit 0 returns no message, whatever the anchor and direction.
pub async fn messages_page_limit_zero<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 3)), put(sent_run("c", 1..=3))],
    )
    .await?;
    for direction in [BEFORE, AFTER] {
        for anchor in [None, Some(0), Some(2), Some(9)] {
            assert_eq!(
                page_seqs(&store, "c", anchor, direction, 0).await?,
                no_seqs(),
                "{direction:?} {anchor:?} limit 0"
            );
        }
    }
    Ok(())
}

/// Sparse seqs (2, 3, 7, 11, 12, 20): anchors inside holes, and the limit counts messages,
/// not seqs.
pub async fn messages_page_with_holes<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 20)),
            put(sent_run("c", [20, 3, 11, 2, 12, 7])),
        ],
    )
    .await?;
    let cases: [(Option<u64>, Direction, usize, Vec<u64>); 11] = [
        (None, AFTER, 100, vec![2, 3, 7, 11, 12, 20]),
        (Some(7), BEFORE, 2, vec![2, 3]),
        (Some(10), BEFORE, 2, vec![3, 7]),
        (Some(3), AFTER, 2, vec![7, 11]),
        (Some(8), AFTER, 10, vec![11, 12, 20]),
        (None, BEFORE, 4, vec![7, 11, 12, 20]),
        (None, AFTER, 1, vec![2]),
        (Some(2), BEFORE, 5, vec![]),
        (Some(1), BEFORE, 5, vec![]),
        (Some(20), AFTER, 5, vec![]),
        (Some(15), BEFORE, 1, vec![12]),
    ];
    for (anchor, direction, limit, expected) in cases {
        assert_eq!(
            page_seqs(&store, "c", anchor, direction, limit).await?,
            expected,
            "{direction:?} {anchor:?} limit {limit}"
        );
    }
    Ok(())
}

/// Pages hold only the asked conversation's rows with a seq: pending and failed rows never
/// appear, and another conversation with the same seqs and client ids stays apart.
pub async fn messages_page_excludes_unsent_and_other_conversations<F: Backend>(
    factory: F,
) -> CaseResult {
    let store = factory.open(0).await?;
    let x: Vec<_> = (1..=3).map(|s| sent("x", &format!("m{s}"), s)).collect();
    let mut y: Vec<_> = (1..=5).map(|s| sent("y", &format!("m{s}"), s)).collect();
    for m in &mut y {
        m.content = format!("y's {}", m.client_msg_id).into_bytes();
    }
    apply(
        &store,
        vec![
            put_conv(conv("x", 1, 0, 3)),
            put_conv(conv("y", 2, 0, 5)),
            put(x.clone()),
            put(y.clone()),
            put(vec![pending("x", "p", 1), failed("x", "f", 2)]),
        ],
    )
    .await?;
    for direction in [BEFORE, AFTER] {
        assert_eq!(
            store.messages_page(&cid("x"), None, direction, 100).await?,
            x,
            "x {direction:?}"
        );
        assert_eq!(
            store.messages_page(&cid("y"), None, direction, 100).await?,
            y,
            "y {direction:?}"
        );
    }
    assert_eq!(page_seqs(&store, "x", Some(3), AFTER, 10).await?, no_seqs());
    assert_eq!(
        page_seqs(&store, "y", Some(3), AFTER, 10).await?,
        vec![4, 5]
    );
    assert_eq!(unsent_ids(&store, "x").await?, strs(["p", "f"]));
    assert!(store.unsent_messages(&cid("y")).await?.is_empty());
    Ok(())
}

/// Anchors and cursors at the ends of the number range: `Seq(u64::MAX)`, seqs just above
/// `i64::MAX` and `Timestamp(u64::MAX)` behave as "above everything" (a backend storing
/// signed 64-bit integers must not wrap them around).
pub async fn paging_extreme_anchors<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![
            put_conv(conv("c", 5, 0, 3)),
            put_conv(conv("d", 3, 0, 0)),
            put(sent_run("c", 1..=3)),
        ],
    )
    .await?;
    let big = i64::MAX as u64;
    let cases: [(u64, Direction, Vec<u64>); 6] = [
        (u64::MAX, BEFORE, vec![1, 2, 3]),
        (u64::MAX, AFTER, vec![]),
        (big, AFTER, vec![]),
        (big, BEFORE, vec![1, 2, 3]),
        (big + 1, AFTER, vec![]),
        (big + 1, BEFORE, vec![1, 2, 3]),
    ];
    for (anchor, direction, expected) in cases {
        assert_eq!(
            page_seqs(&store, "c", Some(anchor), direction, 10).await?,
            expected,
            "{direction:?} Seq({anchor})"
        );
    }
    for (at, id) in [
        (u64::MAX, ""),
        (u64::MAX, "\u{10FFFF}"),
        (big + 1, ""),
        (big, ""),
    ] {
        assert_eq!(
            list_ids(&store, Some(cursor(at, id)), 10).await?,
            strs(["c", "d"]),
            "cursor ({at}, {id:?})"
        );
    }
    assert_eq!(
        list_ids(&store, Some(cursor(0, "\u{10FFFF}")), 10).await?,
        Vec::<String>::new()
    );
    Ok(())
}
