//! `MemoryStorage` (the reference) against `SqliteStorage::open_in_memory()`.
//!
//! Arbitrary `WriteBatch`es over a small alphabet (3 conversations, seqs mostly 0..20 with a
//! few large values up to `i64::MAX`, 6 client ids, every `WriteOp` kind) are applied to both
//! stores. Both must agree on the outcome of every apply (Ok, or the same error variant), a
//! refused batch must leave each store as it was, and after every batch every read method
//! must give the same answer: load_snapshot (normalized by sorting, its order is unspecified),
//! conversation, conversations_page, messages_page in both directions, message_by_client_id,
//! unsent_messages, total_unread, outbox, tombstones, and check_integrity (Ok/Err and the
//! message). After the last batch the reads are checked again with every anchor and limit.
//!
//! Values above `i64::MAX` are a documented difference (SQLite refuses them) and are never
//! generated.

#![no_main]

use arbitrary::Arbitrary;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationCursor, ConversationId, ConversationKind,
    Direction, LatestMessage, MemoryStorage, Message, MessageStatus, OutboxEntry, PendingChange,
    Seq, SeqRanges, Storage, StorageError, SyncSnapshot, Timestamp, UserId, WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

const CONVS: [&str; 3] = ["c1", "c2", "c3"];
const IDS: [&str; 6] = ["m0", "m1", "m2", "m3", "m4", "m5"];
const BIG: [u64; 4] = [
    i64::MAX as u64,
    i64::MAX as u64 - 1,
    1 << 40,
    (i64::MAX as u64) / 2,
];

/// A number: small most of the time, sometimes one of the large values (never above
/// `i64::MAX`).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    Small(u8),
    Big(u8),
}

impl Num {
    fn get(self) -> u64 {
        match self {
            Num::Small(x) => u64::from(x % 21),
            Num::Big(i) => BIG[usize::from(i) % BIG.len()],
        }
    }
    fn seq(self) -> Seq {
        Seq(self.get())
    }
    fn time(self) -> Timestamp {
        Timestamp(self.get())
    }
}

fn conv(i: u8) -> ConversationId {
    ConversationId::from(CONVS[usize::from(i) % CONVS.len()])
}

fn client_id(i: u8) -> ClientMsgId {
    ClientMsgId::from(IDS[usize::from(i) % IDS.len()])
}

fn bytes(b: &[u8]) -> Vec<u8> {
    b.iter().take(12).copied().collect()
}

#[derive(Arbitrary, Debug, Clone)]
struct Ranges(Vec<(Num, u8)>);

impl Ranges {
    fn build(&self) -> SeqRanges {
        let mut set = SeqRanges::new();
        for (start, len) in self.0.iter().take(4) {
            let s = start.get();
            // Stay at or below i64::MAX.
            let e = s.saturating_add(u64::from(len % 6)).min(i64::MAX as u64);
            set.insert_range(Seq(s), Seq(e));
        }
        set
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Kind {
    Text,
    Image,
    File,
    Custom(u8),
    Edit(Num),
    Revoke(Num),
}

impl Kind {
    fn build(&self) -> ContentKind {
        match self {
            Kind::Text => ContentKind::Text,
            Kind::Image => ContentKind::Image,
            Kind::File => ContentKind::File,
            Kind::Custom(k) => ContentKind::Custom(["", "k", "poll ✓"][usize::from(k % 3)].into()),
            Kind::Edit(t) => ContentKind::Edit { target: t.seq() },
            Kind::Revoke(t) => ContentKind::Revoke { target: t.seq() },
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Status {
    Pending,
    Failed(u8),
}

#[derive(Arbitrary, Debug, Clone)]
struct Msg {
    conv: u8,
    seq: Option<Num>,
    id: u8,
    sender: u8,
    kind: Kind,
    content: Vec<u8>,
    created_at: Num,
    server_time: Option<Num>,
    /// For a message without a seq.
    status: Status,
    edit_seq: Option<Num>,
    revoked: bool,
}

impl Msg {
    fn build(&self) -> Message {
        let status = match (&self.seq, &self.status) {
            (Some(_), _) => MessageStatus::Sent,
            (None, Status::Pending) => MessageStatus::Pending,
            (None, Status::Failed(r)) => MessageStatus::Failed {
                reason: format!("r{}", r % 3),
            },
        };
        Message {
            conversation: conv(self.conv),
            seq: self.seq.map(Num::seq),
            client_msg_id: client_id(self.id),
            sender: user(self.sender),
            kind: self.kind.build(),
            content: bytes(&self.content),
            created_at: self.created_at.time(),
            server_time: self.server_time.map(Num::time),
            status,
            edit_seq: self.edit_seq.map(Num::seq),
            revoked: self.revoked,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct Conv {
    conv: u8,
    group: bool,
    server_max_seq: Num,
    server_min_seq: Num,
    held: Ranges,
    read_seq: Num,
    not_unread: Ranges,
    unread: Num,
    latest: Option<Msg>,
    last_activity: u8,
    deleted: Ranges,
}

impl Conv {
    fn build(&self) -> Conversation {
        let id = conv(self.conv);
        let latest = self.latest.as_ref().map(|m| {
            let mut m = m.build();
            m.conversation = id.clone();
            LatestMessage::of(&m)
        });
        Conversation {
            id: id.clone(),
            kind: if self.group {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            },
            server_max_seq: self.server_max_seq.seq(),
            server_min_seq: self.server_min_seq.seq(),
            held: self.held.build(),
            read_seq: self.read_seq.seq(),
            not_unread: self.not_unread.build(),
            unread: self.unread.get(),
            latest,
            // Few distinct values: ties in the list order are common.
            last_activity: Timestamp(u64::from(self.last_activity % 4)),
            deleted: self.deleted.build(),
        }
    }
}

/// One of the three senders messages and changes are drawn from.
fn user(n: u8) -> UserId {
    UserId(format!("u{}", n % 3))
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    PutConversation(Conv),
    PutMessages(Vec<Msg>),
    EditMessage {
        conv: u8,
        target: Num,
        edit_seq: Num,
        sender: u8,
        content: Vec<u8>,
    },
    RevokeMessage {
        conv: u8,
        target: Num,
        revoke_seq: Num,
        sender: u8,
    },
    PutTombstones {
        conv: u8,
        seqs: Ranges,
    },
    DeletePendingMessage {
        conv: u8,
        id: u8,
    },
    PutOutbox {
        conv: u8,
        id: u8,
        kind: Kind,
        content: Vec<u8>,
        created_at: Num,
        attempts: u8,
    },
    RemoveOutbox(u8),
    PutPendingChange {
        conv: u8,
        seq: Num,
        target: Num,
        sender: u8,
        revoke: bool,
        content: Vec<u8>,
    },
    RemovePendingChange {
        conv: u8,
        seq: Num,
    },
}

impl Op {
    fn build(&self) -> WriteOp {
        match self {
            Op::PutConversation(c) => WriteOp::PutConversation(c.build()),
            Op::PutMessages(ms) => {
                WriteOp::PutMessages(ms.iter().take(6).map(Msg::build).collect())
            }
            Op::EditMessage {
                conv: c,
                target,
                edit_seq,
                sender,
                content,
            } => WriteOp::EditMessage {
                conversation: conv(*c),
                target: target.seq(),
                edit_seq: edit_seq.seq(),
                sender: user(*sender),
                content: bytes(content),
            },
            Op::RevokeMessage {
                conv: c,
                target,
                revoke_seq,
                sender,
            } => WriteOp::RevokeMessage {
                conversation: conv(*c),
                target: target.seq(),
                revoke_seq: revoke_seq.seq(),
                sender: user(*sender),
            },
            Op::PutTombstones { conv: c, seqs } => WriteOp::PutTombstones {
                conversation: conv(*c),
                seqs: seqs.build(),
            },
            Op::DeletePendingMessage { conv: c, id } => WriteOp::DeletePendingMessage {
                conversation: conv(*c),
                client_msg_id: client_id(*id),
            },
            Op::PutOutbox {
                conv: c,
                id,
                kind,
                content,
                created_at,
                attempts,
            } => WriteOp::PutOutbox(OutboxEntry {
                conversation: conv(*c),
                client_msg_id: client_id(*id),
                kind: kind.build(),
                content: bytes(content),
                created_at: created_at.time(),
                attempts: u32::from(attempts % 5),
            }),
            Op::RemoveOutbox(id) => WriteOp::RemoveOutbox(client_id(*id)),
            Op::PutPendingChange {
                conv: c,
                seq,
                target,
                sender,
                revoke,
                content,
            } => {
                let target = target.seq();
                WriteOp::PutPendingChange(PendingChange {
                    conversation: conv(*c),
                    seq: seq.seq(),
                    target,
                    sender: user(*sender),
                    kind: if *revoke {
                        ContentKind::Revoke { target }
                    } else {
                        ContentKind::Edit { target }
                    },
                    content: bytes(content),
                })
            }
            Op::RemovePendingChange { conv: c, seq } => WriteOp::RemovePendingChange {
                conversation: conv(*c),
                seq: seq.seq(),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    batches: Vec<Vec<Op>>,
}

/// The variant of a storage error (details differ between backends).
fn variant(e: &StorageError) -> &'static str {
    e.code()
}

fn ok<T>(what: &str, r: Result<T, StorageError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

fn normalized(mut s: SyncSnapshot) -> SyncSnapshot {
    s.conversations.sort_by(|a, b| a.id.cmp(&b.id));
    s.pending_changes
        .sort_by(|a, b| (&a.conversation, a.seq).cmp(&(&b.conversation, b.seq)));
    s
}

fn snapshot(s: &impl Storage, name: &str) -> SyncSnapshot {
    normalized(ok(
        &format!("{name} load_snapshot"),
        block_on(s.load_snapshot()),
    ))
}

/// Every read method gives the same answer on both stores.
fn same_reads(m: &MemoryStorage, q: &SqliteStorage, thorough: bool, ctx: &str) {
    assert_eq!(
        snapshot(m, "memory"),
        snapshot(q, "sqlite"),
        "{ctx}: load_snapshot"
    );
    assert_eq!(
        ok("memory total_unread", block_on(m.total_unread())),
        ok("sqlite total_unread", block_on(q.total_unread())),
        "{ctx}: total_unread"
    );
    assert_eq!(
        ok("memory outbox", block_on(m.outbox())),
        ok("sqlite outbox", block_on(q.outbox())),
        "{ctx}: outbox"
    );
    let im = block_on(m.check_integrity()).map_err(|e| (variant(&e), e.to_string()));
    let iq = block_on(q.check_integrity()).map_err(|e| (variant(&e), e.to_string()));
    assert_eq!(im, iq, "{ctx}: check_integrity");

    let sizes: &[usize] = if thorough { &[1, 2, 3, 100] } else { &[2, 100] };
    for &size in sizes {
        let mut cursor: Option<ConversationCursor> = None;
        for _ in 0..8 {
            let pm = ok(
                "memory page",
                block_on(m.conversations_page(cursor.clone(), size)),
            );
            let pq = ok(
                "sqlite page",
                block_on(q.conversations_page(cursor.clone(), size)),
            );
            assert_eq!(pm, pq, "{ctx}: conversations_page({cursor:?}, {size})");
            match pm.last() {
                Some(last) if pm.len() == size => cursor = Some(ConversationCursor::after(last)),
                _ => break,
            }
        }
    }
    if thorough {
        for activity in [0, 2, 4, u64::MAX] {
            for id in ["", "c2", "c25", "zz"] {
                let cursor = ConversationCursor {
                    last_activity: Timestamp(activity),
                    id: ConversationId::from(id),
                };
                assert_eq!(
                    ok(
                        "memory page",
                        block_on(m.conversations_page(Some(cursor.clone()), 2))
                    ),
                    ok(
                        "sqlite page",
                        block_on(q.conversations_page(Some(cursor.clone()), 2))
                    ),
                    "{ctx}: conversations_page({cursor:?}, 2)"
                );
            }
        }
    }

    for c in CONVS.iter().chain(std::iter::once(&"unknown")) {
        let c = ConversationId::from(*c);
        assert_eq!(
            ok("memory conversation", block_on(m.conversation(&c))),
            ok("sqlite conversation", block_on(q.conversation(&c))),
            "{ctx}: conversation({c})"
        );
        assert_eq!(
            ok("memory tombstones", block_on(m.tombstones(&c))),
            ok("sqlite tombstones", block_on(q.tombstones(&c))),
            "{ctx}: tombstones({c})"
        );
        assert_eq!(
            ok("memory unsent", block_on(m.unsent_messages(&c))),
            ok("sqlite unsent", block_on(q.unsent_messages(&c))),
            "{ctx}: unsent_messages({c})"
        );
        for id in IDS {
            let id = ClientMsgId::from(id);
            // The senders messages are drawn from (see `ArbMessage`).
            for sender in (0..3).map(|i| UserId(format!("u{i}"))) {
                assert_eq!(
                    ok(
                        "memory by id",
                        block_on(m.message_by_client_id(&c, &sender, &id))
                    ),
                    ok(
                        "sqlite by id",
                        block_on(q.message_by_client_id(&c, &sender, &id))
                    ),
                    "{ctx}: message_by_client_id({c}, {sender}, {id})"
                );
            }
        }
        let anchors: Vec<Option<Seq>> = if thorough {
            [
                None,
                Some(0),
                Some(1),
                Some(5),
                Some(10),
                Some(20),
                Some(21),
            ]
            .into_iter()
            .map(|a| a.map(Seq))
            .chain(BIG.iter().map(|b| Some(Seq(*b))))
            .chain([Some(Seq(i64::MAX as u64 + 1)), Some(Seq(u64::MAX))])
            .collect()
        } else {
            vec![None, Some(Seq(10)), Some(Seq(u64::MAX))]
        };
        let limits: &[usize] = if thorough { &[0, 1, 3, 100] } else { &[3, 100] };
        for anchor in anchors {
            for direction in [Direction::Before, Direction::After] {
                for &limit in limits {
                    assert_eq!(
                        ok(
                            "memory messages_page",
                            block_on(m.messages_page(&c, anchor, direction, limit))
                        ),
                        ok(
                            "sqlite messages_page",
                            block_on(q.messages_page(&c, anchor, direction, limit))
                        ),
                        "{ctx}: messages_page({c}, {anchor:?}, {direction:?}, {limit})"
                    );
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let memory = MemoryStorage::new();
    let sqlite = match SqliteStorage::open_in_memory() {
        Ok(s) => s,
        Err(e) => panic!("open_in_memory failed: {e}"),
    };
    let batches: Vec<WriteBatch> = input
        .batches
        .iter()
        .take(12)
        .map(|ops| WriteBatch {
            ops: ops.iter().take(8).map(Op::build).collect(),
        })
        .collect();
    for (i, batch) in batches.iter().enumerate() {
        let before_m = snapshot(&memory, "memory");
        let before_q = snapshot(&sqlite, "sqlite");
        let rm = block_on(memory.apply(batch.clone()));
        let rq = block_on(sqlite.apply(batch.clone()));
        match (&rm, &rq) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "batch {i}: the stores report different refusals"),
            (Err(a), Err(b)) if variant(a) == variant(b) => {
                assert_eq!(
                    snapshot(&memory, "memory"),
                    before_m,
                    "batch {i}: memory refused it ({a}) but changed"
                );
                assert_eq!(
                    snapshot(&sqlite, "sqlite"),
                    before_q,
                    "batch {i}: sqlite refused it ({b}) but changed"
                );
            }
            _ => panic!("batch {i}: memory {rm:?}, sqlite {rq:?}\n{batch:#?}"),
        }
        same_reads(&memory, &sqlite, false, &format!("after batch {i}"));
    }
    same_reads(&memory, &sqlite, true, "at the end");
});
