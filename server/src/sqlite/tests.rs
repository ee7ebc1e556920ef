//! Store-level tests of [`SqliteServerStore`]: differential against the memory store,
//! persistence across reopen, refusal of foreign and newer files, and a timing (ignored).

use std::fmt::Debug;
use std::path::Path;
use std::time::Instant;

use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, Seq, SeqRanges, Timestamp, UserId,
};

use super::*;
use crate::{AccountStore, AppendOutcome, MemoryServerStore, NewMessage, ServerStore, TokenHash};

// --- a deterministic random sequence of calls --------------------------------------------------

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn cmid(&mut self) -> ClientMsgId {
        ClientMsgId::from(format!("m{}", self.below(150)))
    }

    /// A u64 that is usually small (near `around`) and sometimes extreme.
    fn num(&mut self, around: u64) -> u64 {
        match self.below(10) {
            0 => u64::MAX,
            1 => u64::MAX - self.below(3),
            2 => i64::MAX as u64 + self.below(3),
            _ => self.below(around + 3),
        }
    }
}

/// "zz" is never created: calls naming it must fail alike.
const USERS: &[&str] = &["a", "b", "c", "d", "zz"];
const CONVS: &[&str] = &["c0", "c1", "c2", "c3"];
const DEVICES: &[&str] = &["phone", "pc", "web"];
const CMIDS: &[&str] = &[
    "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11",
];
const HASHES: &[u8] = &[0, 1, 2];

fn hash(i: u8) -> TokenHash {
    [i; 32]
}

/// A call's result as text: the `Ok` value's Debug form, or the error's message (which names
/// its variant's subject, so two stores agree only when they fail the same way).
fn show<T: Debug>(r: Result<T, ServerStoreError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e})"),
    }
}

/// Every read over the id pools, as text.
fn snapshot<S: ServerStore + AccountStore>(s: &S) -> String {
    let mut out = Vec::new();
    // The change clocks agree (but for their random epochs), and so do the delta listings
    // since a few recent counter values: both stores count the same changes.
    let clock = s.change_clock().unwrap();
    out.push(format!("{} {}", clock.counter, clock.floor));
    let counter = clock.counter;
    for u in USERS {
        let u = UserId::from(*u);
        for back in [0, 1, 2, 5] {
            let since = counter.saturating_sub(back);
            out.push(show(s.conversations_changed_since(
                &u,
                since,
                None,
                usize::MAX,
            )));
        }
        out.push(show(s.user_exists(&u)));
        out.push(show(s.devices(&u)));
        out.push(show(s.conversations_of(&u, None, usize::MAX)));
        for c in CONVS {
            out.push(show(s.read_seq(&u, &ConversationId::from(*c))));
            out.push(show(s.is_member(&ConversationId::from(*c), &u)));
            // The memory store answers with the trait's reading of whole messages, SQLite
            // with its own narrow query: they must agree.
            out.push(show(s.unread_seqs(
                &ConversationId::from(*c),
                &u,
                Seq(0),
                Seq(u64::MAX),
            )));
        }
        for m in CMIDS {
            out.push(show(s.sent_record(&u, &ClientMsgId::from(*m))));
        }
        for h in HASHES {
            out.push(show(s.token_expiry(&u, &hash(*h))));
        }
    }
    for c in CONVS {
        let c = ConversationId::from(*c);
        out.push(show(s.conversation(&c)));
        out.push(show(s.members(&c)));
        out.push(show(s.messages(&c, Seq(0), Seq(u64::MAX), usize::MAX)));
        out.push(show(s.deleted(&c, Seq(0), Seq(u64::MAX))));
    }
    out.join("\n")
}

fn max_seq_of<S: ServerStore>(s: &S, c: &ConversationId) -> u64 {
    s.conversation(c)
        .unwrap()
        .map_or(0, |info: crate::ConversationInfo| info.max_seq.0)
}

/// One random call, applied to `s`; returns its result as text. `rng` must be in the same state
/// for every store the call is applied to, and `max_seq` must be the same.
fn random_call<S: ServerStore + AccountStore>(rng: &mut Rng, s: &mut S, max_seq: u64) -> String {
    let user = UserId::from(rng.pick(USERS));
    let conv = ConversationId::from(rng.pick(CONVS));
    match rng.below(21) {
        0 | 1 => show(s.create_user(&user)),
        2 => show(s.add_device(&user, &rng.pick(DEVICES).into())),
        3 => {
            let kind = if rng.below(2) == 0 {
                ConversationKind::Direct
            } else {
                ConversationKind::Group
            };
            let members: Vec<UserId> = (0..rng.below(4))
                .map(|_| UserId::from(rng.pick(USERS)))
                .collect();
            show(s.create_conversation(&conv, kind, &members))
        }
        4 => show(s.add_member(&conv, &user)),
        5..=9 => {
            let kind = match rng.below(6) {
                0 => ContentKind::Image,
                1 => ContentKind::Custom(format!("k{}", rng.below(3))),
                2 => ContentKind::Edit {
                    target: Seq(rng.num(max_seq)),
                },
                3 => ContentKind::Revoke {
                    target: Seq(rng.num(max_seq)),
                },
                4 => ContentKind::File,
                _ => ContentKind::Text,
            };
            let content = (0..rng.below(6)).map(|_| rng.below(256) as u8).collect();
            let message = NewMessage {
                conversation: conv,
                sender: user,
                client_msg_id: rng.cmid(),
                kind,
                content,
                created_at: Timestamp(rng.num(1_000)),
            };
            show(s.append(message, Timestamp(rng.num(1_000))))
        }
        10 | 11 => {
            let mut seqs = SeqRanges::new();
            for _ in 0..=rng.below(3) {
                let start = rng.below(max_seq + 3);
                let end = if rng.below(8) == 0 {
                    u64::MAX
                } else {
                    start + rng.below(4)
                };
                seqs.insert_range(Seq(start), Seq(end));
            }
            show(s.delete_seqs(&conv, &seqs))
        }
        12 => {
            let floor = if rng.below(6) == 0 {
                rng.num(max_seq)
            } else {
                rng.below(max_seq + 3)
            };
            show(s.set_min_seq(&conv, Seq(floor)))
        }
        13 => show(s.set_read_seq(&user, &conv, Seq(rng.num(max_seq)))),
        14 => {
            let expiry = (rng.below(3) != 0).then(|| Timestamp(rng.num(1_000)));
            show(s.insert_token(&user, hash(rng.below(3) as u8), expiry))
        }
        15 => show(s.revoke_tokens(&user)),
        16 => {
            let after = (rng.below(2) == 0).then(|| ConversationId::from(rng.pick(CONVS)));
            let limit = rng.below(4) as usize;
            show(s.conversations_of(&user, after.as_ref(), limit))
        }
        17 => {
            let from = rng.num(max_seq);
            let to = if rng.below(2) == 0 {
                from.saturating_add(rng.below(5))
            } else {
                rng.num(max_seq)
            };
            let limit = rng.below(5) as usize;
            show(s.messages(&conv, Seq(from), Seq(to), limit))
        }
        18 => {
            let from = rng.num(max_seq);
            let to = rng.num(max_seq);
            show(s.deleted(&conv, Seq(from), Seq(to)))
        }
        19 => show(s.message(&conv, Seq(rng.num(max_seq)))),
        _ => show(s.sent_record(&user, &rng.cmid())),
    }
}

/// What a differential run went through, so a test can check it was not all failed calls.
#[derive(Debug, Default)]
struct Coverage {
    appended: usize,
    duplicates: usize,
    errors: usize,
    /// Calls after which some message was readable.
    with_messages: usize,
    /// Calls after which some seq was deleted.
    with_deletions: usize,
    /// Calls after which some token existed.
    with_tokens: usize,
}

/// Applies the same `calls` random calls to both stores, comparing every result and every
/// read after each call.
fn run_differential<S: ServerStore + AccountStore>(
    seed: u64,
    calls: usize,
    memory: &mut MemoryServerStore,
    other: &mut S,
) -> Coverage {
    let mut seen = Coverage::default();
    let mut rng = Rng::new(seed);
    for i in 0..calls {
        // The max seq of the conversation the call is likely about shapes its numbers; it is
        // read from the reference so both stores get the same call.
        let probe = ConversationId::from(CONVS[(rng.0 % CONVS.len() as u64) as usize]);
        let max_seq = max_seq_of(memory, &probe);
        let mut rng_other = Rng(rng.0);
        let expected = random_call(&mut rng, memory, max_seq);
        let got = random_call(&mut rng_other, other, max_seq);
        assert_eq!(got, expected, "seed {seed}, call {i}: results differ");
        let (want, have) = (snapshot(memory), snapshot(other));
        if want != have {
            for (w, h) in want.lines().zip(have.lines()) {
                assert_eq!(
                    h, w,
                    "seed {seed}, after call {i} ({expected}): reads differ"
                );
            }
        }
        seen.appended += usize::from(expected.starts_with("Ok(Appended"));
        seen.duplicates += usize::from(expected.starts_with("Ok(Duplicate"));
        seen.errors += usize::from(expected.starts_with("Err("));
        seen.with_messages += usize::from(want.contains("ServerMessage"));
        seen.with_deletions += usize::from(want.contains("SeqRange"));
        seen.with_tokens += usize::from(want.contains("Ok(Some(Some(Timestamp"));
    }
    seen
}

/// The delta listing walks the change index, not all of the user's member rows.
#[test]
fn the_delta_listing_seeks_the_change_index() {
    let s = SqliteServerStore::open_in_memory().unwrap();
    let plan: Vec<String> = s
        .conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            super::store::CHANGED_SINCE
        ))
        .unwrap()
        .query_map(rusqlite::params!["alice", 5, None::<String>, 10], |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("SEARCH c USING COVERING INDEX conversations_by_change (change_seq>?)"),
        "{plan}"
    );
    assert!(
        plan.contains("SEARCH m USING PRIMARY KEY (user=? AND conversation=?)"),
        "{plan}"
    );
    assert!(
        plan.contains("members_by_change (user=? AND change_seq>?)"),
        "{plan}"
    );
}

#[test]
fn random_calls_agree_with_the_memory_store() {
    for seed in [1, 2, 3] {
        let mut memory = MemoryServerStore::new();
        let mut sqlite = SqliteServerStore::open_in_memory().unwrap();
        let seen = run_differential(seed, 1_500, &mut memory, &mut sqlite);
        // The run must have exercised the interesting paths, not just failed calls.
        println!("seed {seed}: {seen:?}");
        assert!(
            seen.appended > 100
                && seen.duplicates > 10
                && seen.errors > 10
                && seen.with_messages > 100
                && seen.with_deletions > 100
                && seen.with_tokens > 100,
            "seed {seed}: {seen:?}"
        );
    }
}

// --- files ---------------------------------------------------------------------------------

fn uid(s: &str) -> UserId {
    UserId::from(s)
}

fn cid(s: &str) -> ConversationId {
    ConversationId::from(s)
}

fn text(conv: &str, sender: &str, cmid: &str) -> NewMessage {
    NewMessage {
        conversation: cid(conv),
        sender: uid(sender),
        client_msg_id: cmid.into(),
        kind: ContentKind::Text,
        content: cmid.as_bytes().to_vec(),
        created_at: Timestamp(5),
    }
}

/// A small inbox with one of everything, applied to any store.
fn populate<S: ServerStore + AccountStore>(s: &mut S) {
    for u in ["a", "b", "c"] {
        s.create_user(&uid(u)).unwrap();
    }
    s.add_device(&uid("a"), &"phone".into()).unwrap();
    s.add_device(&uid("a"), &"pc".into()).unwrap();
    s.create_conversation(&cid("g"), ConversationKind::Group, &[uid("a"), uid("b")])
        .unwrap();
    s.create_conversation(&cid("d"), ConversationKind::Direct, &[uid("a"), uid("c")])
        .unwrap();
    s.add_member(&cid("g"), &uid("c")).unwrap();
    for i in 0..10 {
        s.append(text("g", "a", &format!("m{i}")), Timestamp(100 + i))
            .unwrap();
    }
    s.append(text("d", "c", "x"), Timestamp(200)).unwrap();
    s.delete_seqs(&cid("g"), &SeqRanges::from_range(Seq(5), Seq(6)))
        .unwrap();
    s.set_min_seq(&cid("g"), Seq(3)).unwrap();
    s.set_read_seq(&uid("b"), &cid("g"), Seq(7)).unwrap();
    s.insert_token(&uid("a"), hash(1), Some(Timestamp(9_000)))
        .unwrap();
    s.insert_token(&uid("b"), hash(2), None).unwrap();
}

#[test]
fn a_reopened_file_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let mut memory = MemoryServerStore::new();
    populate(&mut memory);
    {
        let mut file = SqliteServerStore::open(&path).unwrap();
        populate(&mut file);
    }
    let file = SqliteServerStore::open(&path).unwrap();
    assert_eq!(file.schema_version().unwrap(), SERVER_SCHEMA_VERSION);
    assert_eq!(snapshot(&file), snapshot(&memory));
    // And spelled out, so an empty snapshot could not pass.
    assert_eq!(
        file.devices(&uid("a")).unwrap(),
        vec!["pc".into(), "phone".into()]
    );
    let info = file.conversation(&cid("g")).unwrap().unwrap();
    assert_eq!(
        (info.max_seq, info.min_seq, info.last_activity),
        (Seq(10), Seq(3), Timestamp(109))
    );
    let seqs: Vec<u64> = file
        .messages(&cid("g"), Seq(0), Seq(100), 100)
        .unwrap()
        .iter()
        .map(|m| m.seq.0)
        .collect();
    assert_eq!(seqs, vec![3, 4, 7, 8, 9, 10]);
    assert_eq!(
        file.deleted(&cid("g"), Seq(1), Seq(10)).unwrap(),
        SeqRanges::from_range(Seq(5), Seq(6))
    );
    assert_eq!(file.read_seq(&uid("b"), &cid("g")).unwrap(), Seq(7));
    assert_eq!(
        file.token_expiry(&uid("a"), &hash(1)).unwrap(),
        Some(Some(Timestamp(9_000)))
    );
    assert_eq!(file.token_expiry(&uid("b"), &hash(2)).unwrap(), Some(None));
    assert_eq!(
        file.members(&cid("g")).unwrap(),
        vec![uid("a"), uid("b"), uid("c")]
    );
}

#[test]
fn random_calls_on_a_file_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let mut memory = MemoryServerStore::new();
    {
        let mut file = SqliteServerStore::open(&path).unwrap();
        run_differential(7, 400, &mut memory, &mut file);
    }
    let mut file = SqliteServerStore::open(&path).unwrap();
    assert_eq!(snapshot(&file), snapshot(&memory));
    // And it goes on from there.
    run_differential(8, 200, &mut memory, &mut file);
}

#[test]
fn idempotent_append_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let first = {
        let mut s = SqliteServerStore::open(&path).unwrap();
        populate(&mut s);
        match s.append(text("d", "a", "once"), Timestamp(300)).unwrap() {
            AppendOutcome::Appended(m) => m,
            other => panic!("expected Appended, got {other:?}"),
        }
    };
    let mut s = SqliteServerStore::open(&path).unwrap();
    let again = s.append(text("d", "a", "once"), Timestamp(400)).unwrap();
    let AppendOutcome::Duplicate(record) = again else {
        panic!("expected Duplicate, got {again:?}");
    };
    assert_eq!(
        (record.conversation, record.seq, record.server_time),
        (cid("d"), first.seq, Timestamp(300))
    );
    let info = s.conversation(&cid("d")).unwrap().unwrap();
    assert_eq!((info.max_seq, info.last_activity), (Seq(2), Timestamp(300)));
    // Even once the message itself is deleted, the key still answers.
    s.delete_seqs(&cid("d"), &SeqRanges::from_iter([first.seq]))
        .unwrap();
    assert!(matches!(
        s.append(text("d", "a", "once"), Timestamp(500)).unwrap(),
        AppendOutcome::Duplicate(_)
    ));
}

/// The file's bytes and the names next to it (a -wal or -shm file appearing is a write).
fn file_state(path: &Path) -> (Vec<u8>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (bytes, names)
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let long: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    for (name, bytes) in [("short.db", b"not a database".to_vec()), ("long.db", long)] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let before = file_state(&path);
        let err = SqliteServerStore::open(&path).unwrap_err();
        assert!(
            matches!(err, ServerStoreError::Corrupt { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(file_state(&path), before, "{name} changed");
    }
}

#[test]
fn a_foreign_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE other (x); INSERT INTO other VALUES (1);")
            .unwrap();
    }
    let before = file_state(&path);
    let err = SqliteServerStore::open(&path).unwrap_err();
    assert!(matches!(err, ServerStoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(file_state(&path), before);
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    {
        let mut s = SqliteServerStore::open(&path).unwrap();
        populate(&mut s);
        s.conn.pragma_update(None, "user_version", 99_i64).unwrap();
        // Back to a rollback journal so the file alone is the whole store.
        s.conn
            .pragma_update(None, "journal_mode", "DELETE")
            .unwrap();
    }
    let before = file_state(&path);
    let err = SqliteServerStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ServerStoreError::UnsupportedVersion {
                found: 99,
                supported: SERVER_SCHEMA_VERSION
            }
        ),
        "{err:?}"
    );
    assert_eq!(file_state(&path), before);
}

#[test]
fn a_second_connection_can_work_on_an_open_file() {
    // An admin command opening the server's file while the server runs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let mut server = SqliteServerStore::open(&path).unwrap();
    populate(&mut server);
    let mut admin = SqliteServerStore::open(&path).unwrap();
    admin.create_user(&uid("new")).unwrap();
    admin.add_member(&cid("g"), &uid("new")).unwrap();
    assert!(server.is_member(&cid("g"), &uid("new")).unwrap());
    server.append(text("g", "new", "hi"), Timestamp(1)).unwrap();
    assert_eq!(
        admin.conversation(&cid("g")).unwrap().unwrap().max_seq,
        Seq(11)
    );
}

#[test]
fn durability_sets_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    for (durability, expected) in [(Durability::Normal, 1_i64), (Durability::Full, 2)] {
        let path = dir.path().join(format!("{durability:?}.db"));
        let s = SqliteServerStore::open_with(
            &path,
            &SqliteServerOptions {
                durability,
                ..SqliteServerOptions::default()
            },
        )
        .unwrap();
        let sync: i64 = s
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let fk: i64 = s
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!((sync, mode.as_str(), fk), (expected, "wal", 1));
    }
}

#[test]
fn queries_use_their_indexes() {
    let s = SqliteServerStore::open_in_memory().unwrap();
    let plan = |sql: &str| -> String {
        let mut st = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = st.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    for (sql, want) in [
        (
            "SELECT conversation FROM members WHERE user = 'a' AND conversation > 'c'
             ORDER BY conversation LIMIT 5",
            "SEARCH members USING PRIMARY KEY (user=? AND conversation>?)",
        ),
        (
            "SELECT seq FROM messages WHERE conversation = 'c' AND seq BETWEEN 1 AND 9
             ORDER BY seq LIMIT 5",
            "SEARCH messages USING PRIMARY KEY (conversation=? AND seq>? AND seq<?)",
        ),
        (
            "SELECT seq FROM sent WHERE sender = 'a' AND client_msg_id = 'm'",
            "SEARCH sent USING PRIMARY KEY (sender=? AND client_msg_id=?)",
        ),
        (
            "SELECT user FROM members WHERE conversation = 'c' ORDER BY user",
            "SEARCH members USING COVERING INDEX members_by_conversation (conversation=?)",
        ),
    ] {
        let got = plan(sql);
        assert!(got.contains(want), "{sql}\n  plan: {got}\n  wanted: {want}");
        assert!(!got.contains("SCAN"), "{sql}\n  plan: {got}");
    }
}

#[test]
fn a_group_commits_together_and_a_failed_call_in_it_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.db");
    let mut s = SqliteServerStore::open(&path).unwrap();
    populate(&mut s);

    s.begin_group().unwrap();
    s.append(text("g", "b", "in-group-1"), Timestamp(300))
        .unwrap();
    // Fails (unknown conversation) inside the group: only this call is undone.
    assert!(s.append(text("nope", "b", "bad"), Timestamp(301)).is_err());
    s.append(text("g", "b", "in-group-2"), Timestamp(302))
        .unwrap();
    // Visible to later calls of the group at once.
    assert_eq!(max_seq_of(&s, &cid("g")), 12);
    s.commit_group().unwrap();
    drop(s);

    let s = SqliteServerStore::open(&path).unwrap();
    assert_eq!(max_seq_of(&s, &cid("g")), 12);
    assert!(s.sent_record(&uid("b"), &"bad".into()).unwrap().is_none());
    for id in ["in-group-1", "in-group-2"] {
        assert!(s.sent_record(&uid("b"), &id.into()).unwrap().is_some());
    }
}

#[test]
fn an_uncommitted_group_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.db");
    let mut s = SqliteServerStore::open(&path).unwrap();
    populate(&mut s);
    let before = snapshot(&s);
    s.begin_group().unwrap();
    s.append(text("g", "b", "lost"), Timestamp(300)).unwrap();
    drop(s); // the process ends before the group's commit
    let s = SqliteServerStore::open(&path).unwrap();
    assert_eq!(snapshot(&s), before);
}

#[test]
fn groups_do_nothing_on_the_memory_store_and_outside_a_group() {
    let mut m = MemoryServerStore::new();
    populate(&mut m);
    m.begin_group().unwrap();
    m.append(text("g", "b", "x1"), Timestamp(300)).unwrap();
    m.commit_group().unwrap();
    let mut s = SqliteServerStore::open_in_memory().unwrap();
    populate(&mut s);
    // A commit without a group is a no-op, as is a second begin.
    s.commit_group().unwrap();
    s.begin_group().unwrap();
    s.begin_group().unwrap();
    s.append(text("g", "b", "x1"), Timestamp(300)).unwrap();
    s.commit_group().unwrap();
    assert_eq!(snapshot(&s), snapshot(&m));
}

/// Not a test: how long 100,000 appends over 1,000 conversations take on a file, one call
/// (one transaction) per message, and 10,000 with `Durability::Full`. Run with
/// `cargo test -p tidemark-server --all-features -- --ignored --nocapture append_timing`
/// (add `--release` for optimized code). The file goes to a temporary directory under
/// `TIDEMARK_TIMING_DIR` when set (e.g. `/dev/shm` to take the disk out), else the system's.
#[test]
#[ignore = "a measurement, not a test"]
fn append_timing() {
    let dir = match std::env::var_os("TIDEMARK_TIMING_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    for durability in [Durability::Normal, Durability::Full] {
        let path = dir.path().join(format!("{durability:?}.db"));
        let mut s = SqliteServerStore::open_with(
            &path,
            &SqliteServerOptions {
                durability,
                ..SqliteServerOptions::default()
            },
        )
        .unwrap();
        s.create_user(&uid("u")).unwrap();
        for c in 0..1_000 {
            s.create_conversation(
                &cid(&format!("c{c:04}")),
                ConversationKind::Group,
                &[uid("u")],
            )
            .unwrap();
        }
        let n: u64 = match durability {
            Durability::Normal => 100_000,
            // One fsync per call: fewer, or it measures the disk for minutes.
            Durability::Full => 10_000,
        };
        let start = Instant::now();
        for i in 0..n {
            let conv = format!("c{:04}", i % 1_000);
            let message = NewMessage {
                conversation: cid(&conv),
                sender: uid("u"),
                client_msg_id: ClientMsgId::from(format!("m{i}")),
                kind: ContentKind::Text,
                content: format!("message number {i}").into_bytes(),
                created_at: Timestamp(i),
            };
            s.append(message, Timestamp(i)).unwrap();
        }
        let took = start.elapsed();
        println!(
            "{durability:?}: {n} appends over 1000 conversations in {:.2?} ({:.1} µs/append, {:.0} appends/s)",
            took,
            took.as_secs_f64() * 1e6 / n as f64,
            n as f64 / took.as_secs_f64()
        );
    }
}
