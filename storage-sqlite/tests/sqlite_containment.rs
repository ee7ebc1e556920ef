//! The client's containment rule (`tidemark_engine::containment`) end to end: an engine fed
//! what a server that checks nothing would deliver, writing to a real store (SQLite, and
//! the memory reference beside it). One bad message never stops its batch, its
//! conversation, the other conversations of the same pull or later syncs, and no one's
//! edit or revoke changes another user's message.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use tidemark_engine::containment::MAX_STORABLE;
use tidemark_engine::*;
use tidemark_storage_sqlite::SqliteStorage;

fn cfg() -> EngineConfig {
    let mut c = EngineConfig::new(UserId::from("me"), DeviceId::from("phone"));
    c.seed = 7;
    c
}

fn msg(conv: &str, seq: u64, sender: &str, kind: ContentKind, text: &str) -> ServerMessage {
    ServerMessage {
        conversation: ConversationId::from(conv),
        seq: Seq(seq),
        client_msg_id: ClientMsgId(format!("{sender}-{seq}")),
        sender: UserId::from(sender),
        kind,
        content: text.as_bytes().to_vec(),
        created_at: Timestamp(seq),
        server_time: Timestamp(1000 + seq),
    }
}

fn entry(conv: &str, max: u64) -> MaxSeqEntry {
    MaxSeqEntry {
        conversation: ConversationId::from(conv),
        kind: ConversationKind::Group,
        max_seq: Seq(max),
        min_seq: Seq(0),
        read_seq: Seq(0),
        last_activity: Timestamp(max),
        not_unread: SeqRanges::new(),
        deleted_count: 0,
    }
}

/// Drains outputs, applying every write to `store` (which must take it: a refused batch
/// would stop the engine, which is the wedge this file guards against) and committing it
/// with the store's report. Returns the requests and events.
async fn drive<S: Storage>(
    engine: &mut Engine,
    store: &S,
    now: Timestamp,
) -> (Vec<(RequestId, Request)>, Vec<Event>) {
    let mut requests = Vec::new();
    let mut events = Vec::new();
    loop {
        match engine.poll_output() {
            Output::Timeout(_) => return (requests, events),
            Output::Write(id, batch) => {
                let applied = store
                    .apply(batch)
                    .await
                    .expect("the store takes every batch");
                engine.handle_batch_committed(now, id, &applied);
            }
            Output::Request(id, r) => requests.push((id, r)),
            Output::Event(e) => events.push(e),
            Output::Connect | Output::Disconnect { .. } => {}
        }
    }
}

/// A connected engine that listed `entries` and was answered its first pull with
/// `messages`, keyed by conversation. Returns the events of the pull.
async fn synced_with<S: Storage>(
    store: &S,
    entries: Vec<MaxSeqEntry>,
    messages: Vec<ServerMessage>,
) -> (Engine, Vec<Event>) {
    let now = Timestamp(1);
    let mut engine = Engine::new(cfg(), store.load_snapshot().await.unwrap(), now);
    assert_eq!(engine.poll_output(), Output::Connect);
    engine.handle_connected(now);
    let (reqs, _) = drive(&mut engine, store, now).await;
    engine.handle_response(
        now,
        reqs[0].0,
        Response::MaxSeqs {
            entries: entries.clone(),
            has_more: false,
            token: None,
            full: true,
        },
    );
    let (reqs, _) = drive(&mut engine, store, now).await;
    let (pull_id, Request::Pull { ranges, .. }) = reqs
        .iter()
        .find(|(_, r)| matches!(r, Request::Pull { .. }))
        .cloned()
        .expect("a pull follows the listing")
    else {
        unreachable!()
    };
    let pulled = ranges
        .iter()
        .map(|r| PulledRange {
            conversation: r.conversation.clone(),
            from: r.from,
            to: r.to,
            messages: messages
                .iter()
                .filter(|m| m.conversation == r.conversation)
                .cloned()
                .collect(),
            missing: SeqRanges::new(),
            min_seq: Seq(0),
            max_seq: entries
                .iter()
                .find(|e| e.conversation == r.conversation)
                .map_or(Seq(0), |e| e.max_seq),
        })
        .collect();
    engine.handle_response(now, pull_id, Response::Pulled { ranges: pulled });
    let (_, events) = drive(&mut engine, store, now).await;
    (engine, events)
}

fn contained(events: &[Event]) -> Vec<(String, u64, Containment)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageContained {
                conversation,
                seq,
                containment,
            } => Some((conversation.to_string(), seq.0, containment.clone())),
            _ => None,
        })
        .collect()
}

fn received(events: &[Event], conv: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessagesReceived {
                conversation,
                messages,
            } if conversation.as_str() == conv => {
                Some(messages.iter().filter_map(|m| m.seq.map(|s| s.0)))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// Issue 9, failure 1: a member's send with `created_at` = u64::MAX, and edits and revokes
/// whose target is u64::MAX, arrive in one pull with a clean second conversation. Before the
/// containment rule the store refused the whole batch ("above the largest value SQLite
/// stores"), the engine restarted into the same pull forever, and both conversations stayed
/// empty. Now: the time is clamped, the changes are held as tombstones, everything else is
/// stored and announced, and the sync ends.
async fn unstorable_values_do_not_wedge_the_sync<S: Storage>(store: S) {
    let t = |seq, text| msg("ab", seq, "alice", ContentKind::Text, text);
    let mut huge_time = t(2, "from the far future");
    huge_time.created_at = Timestamp(u64::MAX);
    let messages = vec![
        t(1, "hello"),
        huge_time,
        msg(
            "ab",
            3,
            "alice",
            ContentKind::Edit {
                target: Seq(u64::MAX),
            },
            "edit of nothing",
        ),
        msg(
            "ab",
            4,
            "alice",
            ContentKind::Revoke {
                target: Seq(u64::MAX),
            },
            "",
        ),
        t(5, "still here"),
        msg("clean", 1, "bob", ContentKind::Text, "clean one"),
        msg("clean", 2, "bob", ContentKind::Text, "clean two"),
    ];
    let (engine, events) =
        synced_with(&store, vec![entry("ab", 5), entry("clean", 2)], messages).await;

    assert!(!engine.is_stopped(), "the engine must not stop: {events:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::SyncFinished)),
        "{events:?}"
    );
    assert_eq!(received(&events, "ab"), vec![1, 2, 5]);
    assert_eq!(received(&events, "clean"), vec![1, 2]);
    let c = contained(&events);
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(
        c[0],
        (
            "ab".into(),
            2,
            Containment::Clamped {
                fields: "created_at".into()
            }
        )
    );
    assert!(matches!(c[1], (_, 3, Containment::Tombstoned { .. })));
    assert!(matches!(c[2], (_, 4, Containment::Tombstoned { .. })));

    let ab = store.conversation(&"ab".into()).await.unwrap().unwrap();
    assert_eq!(ab.held, SeqRanges::from_range(Seq(1), Seq(5)));
    assert!(ab.gaps().is_empty());
    assert_eq!(ab.unread, 3, "the tombstoned changes are not unread");
    let page = store
        .messages_page(&"ab".into(), None, Direction::After, 10)
        .await
        .unwrap();
    let seqs: Vec<u64> = page.iter().filter_map(|m| m.seq.map(|s| s.0)).collect();
    assert_eq!(seqs, vec![1, 2, 5]);
    assert_eq!(page[1].created_at, Timestamp(MAX_STORABLE));
    assert_eq!(
        store.tombstones(&"ab".into()).await.unwrap(),
        SeqRanges::from_range(Seq(3), Seq(4))
    );
    let clean = store.conversation(&"clean".into()).await.unwrap().unwrap();
    assert_eq!(clean.held, SeqRanges::from_range(Seq(1), Seq(2)));
    store.check_integrity().await.unwrap();
}

/// Issue 9, failure 3, on the client: mallory's edit and revoke of carol's message, whether
/// the target is already stored (the store refuses them and says so) or arrives after them
/// (the engine refuses them when the target lands), never change carol's words, and are
/// announced as refusals, not updates. Carol's own edit applies.
async fn foreign_changes_never_apply<S: Storage>(store: S) {
    let carol = |seq, text| msg("g", seq, "carol", ContentKind::Text, text);
    let change = |seq, sender, kind, text| msg("g", seq, sender, kind, text);
    // The first pull holds seqs 1-3: carol's message, mallory's edit and revoke of it.
    let first = vec![
        carol(1, "my own words"),
        change(
            2,
            "mallory",
            ContentKind::Edit { target: Seq(1) },
            "mallory's words",
        ),
        change(3, "mallory", ContentKind::Revoke { target: Seq(1) }, ""),
    ];
    let (mut engine, events) = synced_with(&store, vec![entry("g", 3)], first).await;
    assert!(!engine.is_stopped());
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::MessageUpdated { .. })),
        "a refused change is not announced as an update: {events:?}"
    );
    let refusals: Vec<u64> = contained(&events)
        .into_iter()
        .filter(|(_, _, c)| c == &Containment::ChangeRefused { target: Seq(1) })
        .map(|(_, seq, _)| seq)
        .collect();
    assert_eq!(refusals, vec![2, 3]);
    let m = first_row(&store).await;
    assert_eq!(m.content, b"my own words".to_vec());
    assert!(!m.revoked && m.edit_seq.is_none());
    let preview = |conv: Conversation| conv.latest.map(|l| l.preview);
    assert_eq!(
        preview(store.conversation(&"g".into()).await.unwrap().unwrap()),
        Some(b"my own words".to_vec()),
        "the list entry is untouched by mallory too"
    );

    // Pushed later: mallory edits again (refused by the store), carol edits (applied).
    let now = Timestamp(2);
    engine.handle_push(
        now,
        Push::Message(change(
            4,
            "mallory",
            ContentKind::Edit { target: Seq(1) },
            "forged again",
        )),
    );
    engine.handle_push(
        now,
        Push::Message(change(
            5,
            "carol",
            ContentKind::Edit { target: Seq(1) },
            "carol's edit",
        )),
    );
    let (_, events) = drive(&mut engine, &store, now).await;
    let updates: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::MessageUpdated { .. }))
        .collect();
    assert_eq!(updates.len(), 1, "{events:?}");
    assert!(matches!(
        updates[0],
        Event::MessageUpdated {
            change: MessageChange::Edited {
                edit_seq: Seq(5),
                ..
            },
            ..
        }
    ));
    assert_eq!(
        contained(&events),
        vec![("g".into(), 4, Containment::ChangeRefused { target: Seq(1) })]
    );
    assert_eq!(first_row(&store).await.content, b"carol's edit".to_vec());
    assert_eq!(
        preview(store.conversation(&"g".into()).await.unwrap().unwrap()),
        Some(b"carol's edit".to_vec())
    );

    // Changes that arrive before their target (a newest-first hole): mallory's waits as a
    // pending change and is refused when carol's message lands; carol's applies.
    engine.handle_push(
        now,
        Push::Message(change(
            8,
            "mallory",
            ContentKind::Revoke { target: Seq(6) },
            "",
        )),
    );
    engine.handle_push(
        now,
        Push::Message(change(
            9,
            "carol",
            ContentKind::Edit { target: Seq(7) },
            "carol fixed it",
        )),
    );
    let (reqs, _) = drive(&mut engine, &store, now).await;
    assert_eq!(
        store.load_snapshot().await.unwrap().pending_changes.len(),
        2
    );
    let (pull_id, _) = reqs
        .iter()
        .find(|(_, r)| matches!(r, Request::Pull { .. }))
        .cloned()
        .expect("the gap below the pushes is pulled");
    engine.handle_response(
        now,
        pull_id,
        Response::Pulled {
            ranges: vec![PulledRange {
                conversation: "g".into(),
                from: Seq(6),
                to: Seq(7),
                messages: vec![carol(6, "six"), carol(7, "sevn")],
                missing: SeqRanges::new(),
                min_seq: Seq(0),
                max_seq: Seq(9),
            }],
        },
    );
    let (_, events) = drive(&mut engine, &store, now).await;
    assert_eq!(
        contained(&events),
        vec![("g".into(), 8, Containment::ChangeRefused { target: Seq(6) })]
    );
    let announced: Vec<(u64, Vec<u8>, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::MessagesReceived { messages, .. } => Some(messages.clone()),
            _ => None,
        })
        .flatten()
        .map(|m| (m.seq.unwrap().0, m.content, m.revoked))
        .collect();
    assert_eq!(
        announced,
        vec![
            (6, b"six".to_vec(), false),
            (7, b"carol fixed it".to_vec(), false)
        ]
    );
    let page = store
        .messages_page(&"g".into(), Some(Seq(8)), Direction::Before, 2)
        .await
        .unwrap();
    assert_eq!(page[0].content, b"six".to_vec());
    assert!(!page[0].revoked);
    assert_eq!(page[1].content, b"carol fixed it".to_vec());
    assert!(store
        .load_snapshot()
        .await
        .unwrap()
        .pending_changes
        .is_empty());
    store.check_integrity().await.unwrap();
}

/// The message at seq 1 of conversation `g`.
async fn first_row<S: Storage>(store: &S) -> Message {
    store
        .messages_page(&"g".into(), Some(Seq(2)), Direction::Before, 1)
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn unstorable_values_do_not_wedge_the_sync_on_sqlite() {
    unstorable_values_do_not_wedge_the_sync(SqliteStorage::open_in_memory().unwrap()).await;
}

#[tokio::test]
async fn unstorable_values_do_not_wedge_the_sync_on_memory() {
    unstorable_values_do_not_wedge_the_sync(MemoryStorage::new()).await;
}

#[tokio::test]
async fn foreign_changes_never_apply_on_sqlite() {
    foreign_changes_never_apply(SqliteStorage::open_in_memory().unwrap()).await;
}

#[tokio::test]
async fn foreign_changes_never_apply_on_memory() {
    foreign_changes_never_apply(MemoryStorage::new()).await;
}
