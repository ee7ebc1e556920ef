//! Crash test with a real process: a child process syncs into a SQLite file from the simulated
//! inbox server and is killed with SIGKILL at random moments; after every kill the parent
//! reopens the file, runs `check_integrity` (`PRAGMA integrity_check` plus the cross-checks)
//! and compares what the store holds with the server's truth; then the next child resumes
//! from the file the killed one left (hot WAL included). At the end one more session runs to
//! completion and the store must equal the server exactly.
//!
//! How it fits together:
//! - The child is this test binary run again (`std::env::current_exe()`), executing only the
//!   ignored test `kill_child`, which does nothing unless `TIDEMARK_KILL_CHILD` is set.
//! - When to kill comes from a seeded PRNG: most children up to 150 ms after they report the
//!   device running, every sixth within 2 ms of starting to open the store (first run:
//!   migrations; later: recovering the WAL the last child left, loading the snapshot).
//!   After a kill the parent checks a copy of the file and its WAL every other time (so the
//!   next child recovers the hot WAL itself) and the file in place otherwise.
//! - The server's content is deterministic: "round 0" creates ~200 conversations with a few
//!   thousand messages (edits, revokes, deletions, floors included), and every later round
//!   `r` adds a deterministic handful (appends, changes, a deletion or a floor now and then,
//!   a new conversation every few rounds), each derived only from a constant seed and `r`.
//!   A child is told which rounds the server already had; it rebuilds them, then keeps
//!   applying new rounds live (writing `round r` to its progress file *before* applying
//!   round `r`), so the parent knows an upper bound of what the killed child's server held.
//! - The device also sends notes (into two conversations no round touches). What the server
//!   accepted is not deterministic, so the child appends every accepted send to a journal
//!   file between simulation steps, before the ack can reach the device; the next child (and
//!   the parent) replay it into the rebuilt server. A send the server accepted but the child
//!   did not journal is, for the next child, a send the server never got: the device still
//!   has it pending and sends it again.
//! - The device's store is `SqliteStorage::open` on the file, wrapped so every batch writes
//!   `B` before and `E` after its `apply` to the progress file: a kill whose last marker is
//!   `B` landed inside `apply` (the SQLite transaction or its commit).
//!
//! Checked after every kill: the integrity check; every held seq (at or above the local
//! floor) is a stored message equal to the server's (sender, client id, kind, times, content
//! after the edits and revokes the device holds) or a tombstone; tombstones hide no server
//! message; held within `[1, server max]`; no duplicate seq or (sender, client id); unread
//! consistent; nothing lost since the previous kill (held only grows; a stored message stays
//! stored unless tombstoned or below the floor); every send the child reported committed is
//! in the store, pending in the outbox or sent at the seq the server gave it, and the server
//! holds each send once. At the end: the simulation's invariant checks, every server message
//! present and equal, max seqs and floors equal, the outbox empty, every send sent once.

// The child is killed with SIGKILL and the parent reads its signal: Unix only.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed setup step is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark_conformance::hooked::{ApplyHook, HookedStore};
use tidemark_conformance::invariants::compare_message;
use tidemark_conformance::server::{
    AppendOutcome, MemoryServerStore, NewMessage, ServerConfig, ServerCore, ServerStore,
};
use tidemark_conformance::sim::{Sim, SimConfig, SimRng};
use tidemark_conformance::storage_suite::{dump, StoreDump};
use tidemark_conformance::Backend;
use tidemark_engine::rng::mix;
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, Message, MessageStatus, Seq,
    SeqRanges, Storage, StorageError, SyncPolicy, Timestamp, UserId, WriteBatch,
};
use tidemark_storage_sqlite::SqliteStorage;

/// Set (to the work directory) only in the child process.
const CHILD_DIR_ENV: &str = "TIDEMARK_KILL_CHILD";
/// The child's number (seeds its simulation and names its progress file).
const CHILD_INDEX_ENV: &str = "TIDEMARK_KILL_CHILD_INDEX";
/// The last round the server already had when the previous child died.
const CHILD_ROUND_ENV: &str = "TIDEMARK_KILL_CHILD_ROUND";
/// The child test's name, as libtest knows it.
const CHILD_TEST: &str = "kill_child";

/// Everything deterministic derives from this.
const SEED: u64 = 0x7DE3_A2C0_0001_5EED;
/// Children killed.
const KILLS: u64 = 30;
/// Every `EARLY_EVERY`th child is killed at most `EARLY_MAX_MICROS` after it starts opening
/// the store (migrations on the first run, WAL recovery, the snapshot, the engine's first
/// outputs); the others up to `MAX_DELAY_MS` after they report the device running.
const EARLY_EVERY: u64 = 6;
const EARLY_MAX_MICROS: u64 = 2_000;
/// Most milliseconds a child runs after reporting ready.
const MAX_DELAY_MS: u64 = 150;

const ME: &str = "me";
const BOT: &str = "bot";
const OTHERS: u64 = 12;
const CONVERSATIONS: u64 = 200;
/// Conversations only the device's sends go to (no round touches them).
const NOTES: [&str; 2] = ["notes-0", "notes-1"];
/// A new conversation appears every this many rounds.
const NEW_CONVERSATION_EVERY: u64 = 9;
/// Server times of round `r` are `T_DATA + r * ROUND_SPAN + i`.
const T_DATA: u64 = 1_600_000_000_000;
const ROUND_SPAN: u64 = 1_000_000;
/// Child `k`'s simulated clock starts at `T_CLOCK + k * CLOCK_SPAN` (always moving forward).
const T_CLOCK: u64 = 1_700_000_000_000;
const CLOCK_SPAN: u64 = 100_000_000;
/// Most simulation steps one settle may take.
const MAX_SETTLE_STEPS: u64 = 2_000_000;

// ----- small helpers -----

fn cid(s: &str) -> ConversationId {
    ConversationId::from(s)
}

fn pick<'a, T>(rng: &mut SimRng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

/// A work directory under the system temp dir, removed on drop unless the test failed.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tidemark-sqlite-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the work directory {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("store.db")
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal.tsv")
}

fn progress_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("progress-{index}.log"))
}

// ----- the deterministic server content -----

fn conversation_ids(round: u64) -> Vec<ConversationId> {
    (0..CONVERSATIONS)
        .map(|i| cid(&format!("c{i:03}")))
        .chain(
            (1..=round)
                .filter(|r| r.is_multiple_of(NEW_CONVERSATION_EVERY))
                .map(|r| cid(&format!("n{r}"))),
        )
        .collect()
}

fn other(i: u64) -> UserId {
    UserId(format!("u{i:02}"))
}

/// Applies one round's content to a server. Round 0 sets everything up.
struct Round<'a> {
    server: &'a mut ServerCore<MemoryServerStore>,
    rng: SimRng,
    round: u64,
    event: u64,
}

impl Round<'_> {
    fn now(&mut self) -> Timestamp {
        self.event += 1;
        assert!(self.event < ROUND_SPAN);
        Timestamp(T_DATA + self.round * ROUND_SPAN + self.event)
    }

    fn body(&mut self, tag: &str) -> Vec<u8> {
        const WORDS: [&str; 10] = [
            "tide", "mark", "sync", "héllo", "wörld", "👋", "seq", "inbox", "crash", "kill",
        ];
        let len = 40 + self.rng.below(560) as usize;
        let mut s = format!("{tag} r{} e{}:", self.round, self.event);
        while s.len() < len {
            s.push(' ');
            let word = WORDS[self.rng.below(WORDS.len() as u64) as usize];
            s.push_str(word);
        }
        s.into_bytes()
    }

    /// Seqs of the plain (not edit or revoke) messages the server still has.
    fn plain_seqs(&self, conv: &ConversationId) -> Vec<Seq> {
        let store = self.server.store();
        let info = store.conversation(conv).unwrap().unwrap();
        store
            .messages(conv, Seq(1), info.max_seq, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|m| m.kind.change_target().is_none())
            .map(|m| m.seq)
            .collect()
    }

    fn append(&mut self, conv: &ConversationId) {
        let members = self.server.store().members(conv).unwrap();
        let others: Vec<UserId> = members.iter().filter(|u| u.0 != ME).cloned().collect();
        let sender = if self.rng.below(8) == 0 || others.is_empty() {
            UserId::from(ME)
        } else {
            pick(&mut self.rng, &others).clone()
        };
        let roll = self.rng.below(100);
        let targets = if roll < 9 {
            self.plain_seqs(conv)
        } else {
            Vec::new()
        };
        let (kind, content) = match roll {
            0..=5 if !targets.is_empty() => {
                let target = *pick(&mut self.rng, &targets);
                (ContentKind::Edit { target }, self.body("edit"))
            }
            6..=8 if !targets.is_empty() => {
                let target = *pick(&mut self.rng, &targets);
                (ContentKind::Revoke { target }, Vec::new())
            }
            9..=12 => (ContentKind::Image, self.body("image")),
            13..=15 => (ContentKind::Custom("poll".into()), self.body("poll")),
            _ => (ContentKind::Text, self.body("text")),
        };
        // Only a message's author may edit or revoke it: the change comes from them.
        let sender = match kind.change_target() {
            Some(target) => {
                self.server
                    .store()
                    .messages(conv, target, target, 1)
                    .unwrap()
                    .remove(0)
                    .sender
            }
            None => sender,
        };
        let now = self.now();
        self.server
            .append_as(now, &sender, conv, kind, content)
            .unwrap();
    }

    /// Deletes one plain message, or a run of up to three consecutive plain ones.
    fn delete_some(&mut self, conv: &ConversationId) {
        let plain = self.plain_seqs(conv);
        if plain.is_empty() {
            return;
        }
        let i = self.rng.below(plain.len() as u64) as usize;
        let mut end = i;
        let want = self.rng.below(3) as usize;
        while end + 1 < plain.len() && end - i < want && plain[end + 1] == plain[end].next() {
            end += 1;
        }
        self.server
            .delete_seqs(conv, &SeqRanges::from_range(plain[i], plain[end]))
            .unwrap();
    }

    fn raise_floor(&mut self, conv: &ConversationId, to: Seq) {
        let info = self.server.store().conversation(conv).unwrap().unwrap();
        if info.max_seq >= Seq(10) {
            let to = to.min(info.max_seq).max(info.min_seq);
            self.server.set_min_seq(conv, to).unwrap();
        }
    }

    fn setup(&mut self) {
        let me = UserId::from(ME);
        let bot = UserId::from(BOT);
        for user in [me.clone(), bot.clone()]
            .into_iter()
            .chain((0..OTHERS).map(other))
        {
            self.server.create_user(&user).unwrap();
        }
        for notes in NOTES {
            self.server
                .create_conversation(
                    &cid(notes),
                    ConversationKind::Direct,
                    &[me.clone(), bot.clone()],
                )
                .unwrap();
        }
        for (i, conv) in conversation_ids(0).iter().enumerate() {
            let (kind, n_others) = if i.is_multiple_of(3) {
                (ConversationKind::Direct, 1)
            } else {
                (ConversationKind::Group, 2 + self.rng.below(4))
            };
            let mut members = vec![me.clone()];
            while (members.len() as u64) < 1 + n_others {
                let u = other(self.rng.below(OTHERS));
                if !members.contains(&u) {
                    members.push(u);
                }
            }
            self.server
                .create_conversation(conv, kind, &members)
                .unwrap();
            let size = match self.rng.below(100) {
                0..=9 => self.rng.below(4),
                10..=69 => 5 + self.rng.below(16),
                70..=91 => 20 + self.rng.below(26),
                _ => 60 + self.rng.below(100),
            };
            for _ in 0..size {
                self.append(conv);
            }
            if self.rng.below(10) < 3 {
                for _ in 0..1 + self.rng.below(3) {
                    self.delete_some(conv);
                }
            }
            if self.rng.below(20) == 0 {
                let max = self
                    .server
                    .store()
                    .conversation(conv)
                    .unwrap()
                    .unwrap()
                    .max_seq;
                self.raise_floor(conv, Seq(max.0 / 3));
            }
        }
    }

    fn live(&mut self) {
        if self.round.is_multiple_of(NEW_CONVERSATION_EVERY) {
            let id = cid(&format!("n{}", self.round));
            let a = self.rng.below(OTHERS);
            let b = (a + 1 + self.rng.below(OTHERS - 1)) % OTHERS;
            self.server
                .create_conversation(
                    &id,
                    ConversationKind::Group,
                    &[UserId::from(ME), other(a), other(b)],
                )
                .unwrap();
            for _ in 0..3 {
                self.append(&id);
            }
        }
        let ids = conversation_ids(self.round);
        let hot: Vec<ConversationId> = (0..3).map(|_| pick(&mut self.rng, &ids).clone()).collect();
        for _ in 0..8 + self.rng.below(23) {
            let conv = if self.rng.chance(0.5) {
                pick(&mut self.rng, &hot).clone()
            } else {
                pick(&mut self.rng, &ids).clone()
            };
            self.append(&conv);
        }
        if self.rng.chance(0.3) {
            let conv = pick(&mut self.rng, &ids).clone();
            self.delete_some(&conv);
        }
        if self.rng.chance(0.05) {
            let conv = pick(&mut self.rng, &ids).clone();
            let min = self
                .server
                .store()
                .conversation(&conv)
                .unwrap()
                .unwrap()
                .min_seq;
            let to = Seq(min.0.max(1) + 1 + self.rng.below(5));
            self.raise_floor(&conv, to);
        }
    }
}

fn apply_round(server: &mut ServerCore<MemoryServerStore>, round: u64) {
    let mut r = Round {
        server,
        rng: SimRng::new(mix(SEED, round)),
        round,
        event: 0,
    };
    if round == 0 {
        r.setup();
    } else {
        r.live();
    }
}

/// Rounds `0..=rounds`, then the journal of accepted sends.
fn build_server(server: &mut ServerCore<MemoryServerStore>, rounds: u64, journal: &[Accepted]) {
    for round in 0..=rounds {
        apply_round(server, round);
    }
    let me = UserId::from(ME);
    for e in journal {
        let message = NewMessage {
            conversation: e.conversation.clone(),
            sender: me.clone(),
            client_msg_id: e.client_msg_id.clone(),
            kind: ContentKind::Text,
            content: e.content.clone().into_bytes(),
            created_at: e.created_at,
        };
        match server.store_mut().append(message, e.server_time).unwrap() {
            AppendOutcome::Appended(m) => assert_eq!(
                m.seq, e.seq,
                "journal replay: {} landed at another seq",
                e.client_msg_id
            ),
            AppendOutcome::Duplicate(r) => panic!(
                "journal holds send {} twice (first at {} seq {})",
                e.client_msg_id, r.conversation, r.seq.0
            ),
        }
        // What the server does after a send: the sender has read up to it.
        server
            .store_mut()
            .set_read_seq(&me, &e.conversation, e.seq)
            .unwrap();
    }
}

fn truth_server(dir: &Path, rounds: u64) -> (ServerCore<MemoryServerStore>, Vec<Accepted>) {
    let (journal, _) = read_journal(dir);
    let mut server = ServerCore::new(MemoryServerStore::new(), ServerConfig::default());
    build_server(&mut server, rounds, &journal);
    (server, journal)
}

// ----- the journal of sends the server accepted -----

/// A send the server accepted: one line of the journal.
#[derive(Clone, Debug)]
struct Accepted {
    conversation: ConversationId,
    seq: Seq,
    client_msg_id: ClientMsgId,
    created_at: Timestamp,
    server_time: Timestamp,
    content: String,
}

/// The complete lines of the journal, and the byte length they cover (a kill may have cut
/// the last line short).
fn read_journal(dir: &Path) -> (Vec<Accepted>, u64) {
    let mut text = String::new();
    if let Ok(mut f) = File::open(journal_path(dir)) {
        f.read_to_string(&mut text).unwrap();
    }
    let mut out = Vec::new();
    let mut valid = 0u64;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 6, "bad journal line {line:?}");
        out.push(Accepted {
            conversation: cid(fields[0]),
            seq: Seq(fields[1].parse().unwrap()),
            client_msg_id: ClientMsgId::from(fields[2]),
            created_at: Timestamp(fields[3].parse().unwrap()),
            server_time: Timestamp(fields[4].parse().unwrap()),
            content: fields[5].to_owned(),
        });
        valid += line.len() as u64;
    }
    (out, valid)
}

/// Appends what the server accepted into the notes conversations since the last call.
struct Journal {
    file: File,
    last: BTreeMap<ConversationId, Seq>,
}

impl Journal {
    /// Opens the journal for appending after the entries already replayed, cutting off a
    /// line a kill left incomplete.
    fn open(dir: &Path, replayed: &[Accepted], valid_len: u64) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(journal_path(dir))
            .unwrap();
        file.set_len(valid_len).unwrap();
        let file = OpenOptions::new()
            .append(true)
            .open(journal_path(dir))
            .unwrap();
        let mut last: BTreeMap<ConversationId, Seq> =
            NOTES.iter().map(|n| (cid(n), Seq(0))).collect();
        for e in replayed {
            last.insert(e.conversation.clone(), e.seq);
        }
        Self { file, last }
    }

    /// Called between simulation steps: a send the server accepted in the last step is
    /// written here before its ack (at least one step later) can reach the device.
    fn record(&mut self, server: &ServerCore<MemoryServerStore>) {
        for (conv, last) in &mut self.last {
            let info = server.store().conversation(conv).unwrap().unwrap();
            if info.max_seq <= *last {
                continue;
            }
            for m in server
                .store()
                .messages(conv, last.next(), info.max_seq, usize::MAX)
                .unwrap()
            {
                assert_eq!(m.seq, last.next(), "notes seqs are gap-free");
                let content = String::from_utf8(m.content.clone()).unwrap();
                assert!(!content.contains(['\t', '\n']));
                let line = format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    m.conversation,
                    m.seq.0,
                    m.client_msg_id,
                    m.created_at.0,
                    m.server_time.0,
                    content
                );
                // One write: a kill leaves the line whole or (at worst) cut, never mixed.
                self.file.write_all(line.as_bytes()).unwrap();
                *last = m.seq;
            }
        }
    }
}

// ----- the child's store: SQLite with apply markers -----

/// Writes progress lines to the child's progress file, one `write` per line (unbuffered:
/// whatever was written before the kill is in the file).
#[derive(Clone, Default)]
struct Progress(Option<Arc<File>>);

impl Progress {
    fn line(&self, text: &str) {
        if let Some(file) = &self.0 {
            let mut line = String::with_capacity(text.len() + 1);
            line.push_str(text);
            line.push('\n');
            (&**file).write_all(line.as_bytes()).unwrap();
        }
    }
}

/// [`SqliteStorage`] that marks the start (`B`) and end (`E`) of every `apply`.
type MarkedStore = HookedStore<SqliteStorage, Marks>;

/// The marks' hook: `B` before, `E <microseconds>` after.
struct Marks {
    progress: Progress,
    started: Mutex<Option<Instant>>,
}

impl ApplyHook for Marks {
    fn before_apply(&self, _batch: &mut WriteBatch) -> Result<(), StorageError> {
        self.progress.line("B");
        *self.started.lock().unwrap() = Some(Instant::now());
        Ok(())
    }

    fn after_apply(&self, _result: &Result<tidemark_engine::Applied, StorageError>) {
        let micros = self
            .started
            .lock()
            .unwrap()
            .take()
            .map_or(0, |t| t.elapsed().as_micros());
        self.progress.line(&format!("E {micros}"));
    }
}

/// Opens the one device's store: the SQLite file, every time (a restart reopens it).
struct FileFactory {
    path: PathBuf,
    progress: Progress,
}

#[async_trait::async_trait]
impl Backend for FileFactory {
    type Store = MarkedStore;

    async fn open(&self, _device: usize) -> Result<MarkedStore, StorageError> {
        Ok(HookedStore::new(
            SqliteStorage::open(&self.path)?,
            Marks {
                progress: self.progress.clone(),
                started: Mutex::new(None),
            },
        ))
    }
}

// ----- a device session (the child's body; the final run uses it in process) -----

struct Session {
    sim: Sim<FileFactory>,
    journal: Journal,
    progress: Progress,
}

/// Rebuilds the server (rounds `0..=rounds` plus the journal) and starts the device on the
/// store file.
async fn start_session(dir: &Path, index: u64, rounds: u64, progress: Progress) -> Session {
    let (replay, valid_len) = read_journal(dir);
    let config = SimConfig {
        seed: mix(SEED, 1_000 + index),
        start: Timestamp(T_CLOCK + index * CLOCK_SPAN),
        server: ServerConfig {
            max_pull_messages: 64,
            ..ServerConfig::default()
        },
        ..SimConfig::default()
    };
    let factory = FileFactory {
        path: db_path(dir),
        progress: progress.clone(),
    };
    let mut sim = Sim::with_config(factory, config);
    build_server(sim.server_mut(), rounds, &replay);
    let journal = Journal::open(dir, &replay, valid_len);
    progress.line("opening");
    sim.add_device(ME, "phone", |c| {
        c.policy = SyncPolicy::Full;
        // Many small batches: the sync takes long enough to be killed in the middle.
        c.pull_max_messages = 16;
        c.pull_max_conversations = 8;
        c.pulls_in_flight = 2;
        c.max_seqs_page = 50;
    })
    .await
    .unwrap();
    progress.line(&format!("ready {rounds}"));
    Session {
        sim,
        journal,
        progress,
    }
}

impl Session {
    /// Steps to quiescence, journaling accepted sends after every step.
    async fn settle(&mut self) {
        for _ in 0..MAX_SETTLE_STEPS {
            self.journal.record(self.sim.server());
            if self.sim.is_quiescent() {
                return;
            }
            let stepped = self.sim.step().await.unwrap();
            assert!(
                stepped,
                "stuck: nothing scheduled but {}",
                self.sim.describe_pending()
            );
        }
        panic!(
            "not quiescent after {MAX_SETTLE_STEPS} steps: {}",
            self.sim.describe_pending()
        );
    }

    fn assert_no_dispatch_violation(&self) {
        let violations = self.sim.dispatch_violations();
        if !violations.is_empty() {
            for v in &violations {
                self.progress.line(&format!("violation {v}"));
            }
            panic!("dispatch rules broken: {violations:#?}");
        }
    }

    /// The child's life: catch up, then apply round after round (with a note sent now and
    /// then) until killed.
    async fn run_forever(mut self, index: u64, mut round: u64) {
        let mut rng = SimRng::new(mix(SEED, 5_000 + index));
        // A child the parent lost track of must not run forever.
        let deadline = Instant::now() + Duration::from_secs(120);
        self.settle().await;
        self.assert_no_dispatch_violation();
        self.progress.line(&format!("idle {round}"));
        loop {
            assert!(Instant::now() < deadline, "child {index} was never killed");
            round += 1;
            // Before the round reaches the server: the parent's truth may be ahead of the
            // store, never behind it.
            self.progress.line(&format!("round {round}"));
            apply_round(self.sim.server_mut(), round);
            for _ in 0..rng.below(3) {
                let conv = NOTES[rng.below(NOTES.len() as u64) as usize];
                let text = format!("note r{round} p{index} {}", rng.below(1_000_000));
                let id = self.sim.send_text(0, conv, &text).await.unwrap();
                // Its outbox batch has committed.
                self.progress.line(&format!("sent {conv} {id}"));
            }
            self.settle().await;
            self.assert_no_dispatch_violation();
            self.progress.line(&format!("idle {round}"));
        }
    }
}

/// The child process: does nothing in a normal test run.
#[tokio::test(flavor = "current_thread")]
#[ignore = "the child process of sigkill_at_random_points_loses_nothing; a no-op without TIDEMARK_KILL_CHILD"]
async fn kill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let index: u64 = std::env::var(CHILD_INDEX_ENV).unwrap().parse().unwrap();
    let round: u64 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(progress_path(&dir, index))
        .unwrap();
    let progress = Progress(Some(Arc::new(file)));
    progress.line(&format!("start {round}"));
    let session = start_session(&dir, index, round, progress).await;
    session.run_forever(index, round).await;
}

// ----- the parent: spawn, kill, check -----

/// What a killed child's progress file says.
#[derive(Debug, Default)]
struct ChildReport {
    ready: bool,
    last_round: Option<u64>,
    idle_rounds: u64,
    sent: Vec<(ConversationId, ClientMsgId)>,
    batches_started: u64,
    batches_done: u64,
    /// Time spent inside `apply`, summed.
    apply_micros: u64,
    violations: Vec<String>,
}

fn read_report(path: &Path) -> ChildReport {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut report = ChildReport::default();
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let mut words = line.split(' ');
        match words.next() {
            Some("B") => report.batches_started += 1,
            Some("E") => {
                report.batches_done += 1;
                report.apply_micros += words.next().unwrap().parse::<u64>().unwrap();
            }
            Some("ready") => report.ready = true,
            Some("round") => report.last_round = Some(words.next().unwrap().parse().unwrap()),
            Some("idle") => report.idle_rounds += 1,
            Some("sent") => {
                let conv = cid(words.next().unwrap());
                let id = ClientMsgId::from(words.next().unwrap());
                report.sent.push((conv, id));
            }
            Some("violation") => report.violations.push(line.to_owned()),
            _ => {}
        }
    }
    report
}

/// A child process, killed (SIGKILL) and reaped when dropped, so a failing parent leaves
/// no child running.
struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path, index: u64, round: u64) -> ChildProcess {
    let out = File::create(dir.join(format!("child-{index}.out"))).unwrap();
    let err = File::create(dir.join(format!("child-{index}.err"))).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_INDEX_ENV, index.to_string())
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map(ChildProcess)
        .unwrap()
}

fn child_output(dir: &Path, index: u64) -> String {
    let read = |name: String| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        read(format!("child-{index}.out")),
        read(format!("child-{index}.err"))
    )
}

/// Panics (with the child's output) if it is no longer running.
fn assert_running(child: &mut ChildProcess, dir: &Path, index: u64) {
    if let Some(status) = child.0.try_wait().unwrap() {
        panic!(
            "child {index} ended by itself ({status}):\n{}",
            child_output(dir, index)
        );
    }
}

/// Waits until the child's progress file has a line starting with `marker`.
fn wait_for(child: &mut ChildProcess, dir: &Path, index: u64, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = progress_path(dir, index);
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|t| t.lines().any(|l| l.starts_with(marker))) {
            return;
        }
        assert_running(child, dir, index);
        assert!(
            Instant::now() < deadline,
            "child {index} never wrote {marker:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What the store held at one check, for the "nothing lost since" comparison.
#[derive(Default)]
struct Observed {
    held: BTreeMap<ConversationId, SeqRanges>,
    stored: BTreeMap<ConversationId, BTreeSet<Seq>>,
    messages: u64,
    tombstoned: u64,
    pending: u64,
}

/// Every check that holds after any kill (see the module docs). Returns what the store
/// holds; panics with every violation found.
async fn check_store(
    store: &SqliteStorage,
    truth: &MemoryServerStore,
    journal: &[Accepted],
    sends: &BTreeSet<(ConversationId, ClientMsgId)>,
    previous: Option<&Observed>,
    context: &str,
) -> (Observed, StoreDump) {
    let mut out: Vec<String> = Vec::new();
    if let Err(e) = store.check_integrity().await {
        out.push(format!("check_integrity: {e}"));
    }
    let d = dump(store)
        .await
        .unwrap_or_else(|e| panic!("{context}: reading the store failed: {e}"));
    let me = UserId::from(ME);
    let mut seen = Observed::default();
    let mut sum_unread = 0;
    for c in &d.conversations {
        let id = &c.id;
        sum_unread += c.unread;
        let Some(info) = truth.conversation(id).unwrap() else {
            out.push(format!("{id}: unknown to the server"));
            continue;
        };
        if !truth.is_member(id, &me).unwrap() {
            out.push(format!("{id}: not a member on the server"));
        }
        if c.server_max_seq > info.max_seq {
            out.push(format!(
                "{id}: local max seq {} beyond the server's {}",
                c.server_max_seq.0, info.max_seq.0
            ));
        }
        if c.held.min().is_some_and(|s| s < Seq(1))
            || c.held.max().is_some_and(|s| s > info.max_seq)
        {
            out.push(format!(
                "{id}: held {:?} is not within [1, {}]",
                c.held, info.max_seq.0
            ));
        }
        if c.server_min_seq.max(Seq(1)) > info.min_seq.max(Seq(1)) {
            out.push(format!(
                "{id}: local floor {} above the server's {}",
                c.server_min_seq.0, info.min_seq.0
            ));
        }
        if c.held.max().is_some_and(|s| s > c.server_max_seq) {
            out.push(format!(
                "{id}: holds {:?} beyond its own max seq {}",
                c.held, c.server_max_seq.0
            ));
        }
        for r in c.deleted.ranges() {
            if !c.held.contains_range(r.start, r.end) {
                out.push(format!(
                    "{id}: deleted {}..={} is not held",
                    r.start.0, r.end.0
                ));
            }
        }
        if c.unread != c.compute_unread() {
            out.push(format!(
                "{id}: stored unread {} but its fields give {}",
                c.unread,
                c.compute_unread()
            ));
        }

        let empty = Vec::new();
        let rows = d.messages.get(id).unwrap_or(&empty);
        let unsent = d.unsent.get(id).unwrap_or(&empty);
        let tombstones = d.tombstones.get(id).cloned().unwrap_or_default();
        let mut by_seq: BTreeMap<Seq, &Message> = BTreeMap::new();
        for m in rows {
            let Some(seq) = m.seq else {
                out.push(format!("{id}: page row {} without a seq", m.client_msg_id));
                continue;
            };
            if &m.conversation != id || m.status != MessageStatus::Sent {
                out.push(format!(
                    "{id} seq {}: conversation {} status {:?}",
                    seq.0, m.conversation, m.status
                ));
            }
            if by_seq.insert(seq, m).is_some() {
                out.push(format!("{id} seq {}: two rows", seq.0));
            }
        }
        let mut ids = BTreeSet::new();
        for m in rows.iter().chain(unsent) {
            if !ids.insert((&m.sender, &m.client_msg_id)) {
                out.push(format!(
                    "{id}: two rows for client id {} of {}",
                    m.client_msg_id, m.sender
                ));
            }
        }
        for m in unsent {
            if m.seq.is_some() || m.status != MessageStatus::Pending {
                out.push(format!(
                    "{id}: unsent row {} has seq {:?}, status {:?}",
                    m.client_msg_id, m.seq, m.status
                ));
            }
        }
        let mut changes: BTreeMap<Seq, Vec<&Message>> = BTreeMap::new();
        for (&seq, m) in &by_seq {
            if let Some(target) = m.kind.change_target().filter(|t| *t < seq) {
                changes.entry(target).or_default().push(m);
            }
        }
        for (&seq, m) in &by_seq {
            if !c.held.contains(seq) {
                out.push(format!("{id} seq {}: stored but not held", seq.0));
            }
            if tombstones.contains(seq) {
                out.push(format!("{id} seq {}: message and tombstone", seq.0));
            }
            match truth.message(id, seq).unwrap() {
                Some(t) => compare_message(
                    id,
                    m,
                    &t,
                    changes.get(&seq).map_or(&[][..], Vec::as_slice),
                    &mut out,
                ),
                None if seq > info.max_seq => out.push(format!(
                    "{id} seq {}: stored but the server's max is {}",
                    seq.0, info.max_seq.0
                )),
                // Deleted or below the floor since: a copy kept from before is allowed.
                None => {}
            }
        }
        let mut known: SeqRanges = by_seq.keys().copied().collect();
        known.union_with(&tombstones);
        let floor = c.server_min_seq.max(Seq(1));
        for r in c.held.ranges() {
            for gap in known.gaps_in(r.start.max(floor), r.end) {
                out.push(format!(
                    "{id}: held claims {}..={} but neither a message nor a tombstone is stored",
                    gap.start.0, gap.end.0
                ));
            }
        }
        // `deleted` is the tombstones plus everything below the floor.
        for r in tombstones.ranges() {
            for gap in c.deleted.gaps_in(r.start, r.end) {
                out.push(format!(
                    "{id}: tombstones {}..={} not in the record's deleted set",
                    gap.start.0, gap.end.0
                ));
            }
        }
        for r in c.deleted.ranges() {
            for gap in tombstones.gaps_in(r.start.max(floor), r.end) {
                out.push(format!(
                    "{id}: deleted {}..={} (at or above the floor) but not tombstoned",
                    gap.start.0, gap.end.0
                ));
            }
        }
        for r in tombstones.ranges() {
            if let Some(m) = truth.messages(id, r.start, r.end, 1).unwrap().first() {
                out.push(format!(
                    "{id} seq {}: tombstoned but the server has the message (lost)",
                    m.seq.0
                ));
            }
        }

        // Nothing lost since the previous check.
        if let Some(prev) = previous {
            if let Some(before) = prev.held.get(id) {
                for r in before.ranges() {
                    for gap in c.held.gaps_in(r.start, r.end) {
                        out.push(format!(
                            "{id}: held {}..={} before, not any more",
                            gap.start.0, gap.end.0
                        ));
                    }
                }
            }
            for &seq in prev.stored.get(id).into_iter().flatten() {
                if !by_seq.contains_key(&seq) && !tombstones.contains(seq) && seq >= floor {
                    out.push(format!(
                        "{id} seq {}: stored before, now neither stored nor tombstoned (lost)",
                        seq.0
                    ));
                }
            }
        }
        seen.held.insert(id.clone(), c.held.clone());
        seen.stored
            .insert(id.clone(), by_seq.keys().copied().collect());
        seen.messages += by_seq.len() as u64;
        seen.tombstoned += tombstones.count();
        seen.pending += unsent.len() as u64;
    }
    if let Some(prev) = previous {
        for id in prev.held.keys() {
            if !seen.held.contains_key(id) {
                out.push(format!("{id}: listed before, not any more"));
            }
        }
    }
    if sum_unread != d.total_unread {
        out.push(format!(
            "total unread {} is not the sum {sum_unread}",
            d.total_unread
        ));
    }
    let in_outbox: BTreeSet<(&ConversationId, &ClientMsgId)> = d
        .outbox
        .iter()
        .map(|e| (&e.conversation, &e.client_msg_id))
        .collect();
    for e in &d.outbox {
        let pending = d.unsent.get(&e.conversation).is_some_and(|u| {
            u.iter()
                .any(|m| m.client_msg_id == e.client_msg_id && m.status == MessageStatus::Pending)
        });
        if !pending {
            out.push(format!(
                "{}: outbox entry {} without a pending row",
                e.conversation, e.client_msg_id
            ));
        }
    }

    // Sends: the server holds each once; each accepted one and each one the child saw
    // committed is in the store, pending (with its outbox entry) or sent at the server's seq.
    let mut accepted: BTreeMap<&ClientMsgId, &Accepted> = BTreeMap::new();
    for e in journal {
        if accepted.insert(&e.client_msg_id, e).is_some() {
            out.push(format!(
                "{}: the server accepted send {} twice",
                e.conversation, e.client_msg_id
            ));
        }
    }
    let wanted: BTreeSet<(&ConversationId, &ClientMsgId)> = sends
        .iter()
        .map(|(c, i)| (c, i))
        .chain(journal.iter().map(|e| (&e.conversation, &e.client_msg_id)))
        .collect();
    for (conv, id) in wanted {
        let row = store
            .message_by_client_id(conv, &UserId::from(ME), id)
            .await
            .unwrap();
        let on_server = accepted.get(id);
        match row {
            None => out.push(format!("{conv}: send {id} has no row (lost)")),
            Some(row) => match (&row.status, row.seq, on_server) {
                (MessageStatus::Pending, None, _) => {
                    if !in_outbox.contains(&(conv, id)) {
                        out.push(format!("{conv}: pending send {id} not in the outbox"));
                    }
                }
                (MessageStatus::Sent, Some(seq), Some(e)) if e.seq == seq => {}
                (status, seq, e) => out.push(format!(
                    "{conv}: send {id} is {status:?} at {seq:?}; the server has it at {:?}",
                    e.map(|e| e.seq)
                )),
            },
        }
    }

    if !out.is_empty() {
        panic!(
            "{context}: {} violation(s):\n  - {}",
            out.len(),
            out.iter()
                .take(60)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  - ")
        );
    }
    (seen, d)
}

/// Copies the store file and its WAL (as the killed child left them) to `to`, so the check
/// opens the copy and the next child still finds the hot WAL.
fn copy_store(dir: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", db_path(dir).display()));
        if from.exists() {
            std::fs::copy(&from, to.join(format!("store.db{suffix}"))).unwrap();
        }
    }
}

#[derive(Default)]
struct Stats {
    early: u64,
    in_apply: u64,
    between: u64,
    before_ready: u64,
    kills: u64,
    batches: u64,
    sends: u64,
    /// Time children ran after reporting ready, and the part of it spent inside `apply`.
    live_micros: u64,
    apply_micros: u64,
    applies: u64,
}

#[tokio::test(flavor = "current_thread")]
async fn sigkill_at_random_points_loses_nothing() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let work = WorkDir::new();
    let dir = work.0.as_path();
    let mut rng = SimRng::new(mix(SEED, 0xC0FFEE));
    let mut rounds = 0u64;
    let mut sends: BTreeSet<(ConversationId, ClientMsgId)> = BTreeSet::new();
    let mut previous: Option<Observed> = None;
    let mut stats = Stats::default();

    for k in 0..KILLS {
        let mut child = spawn_child(dir, k, rounds);
        let spawned = Instant::now();
        let early = k.is_multiple_of(EARLY_EVERY);
        if early {
            // While it opens the store (migrations on the first run, WAL recovery, the
            // snapshot) and starts the engine.
            stats.early += 1;
            wait_for(&mut child, dir, k, "opening");
            std::thread::sleep(Duration::from_micros(rng.below(EARLY_MAX_MICROS)));
        } else {
            wait_for(&mut child, dir, k, "ready ");
            let ready = Instant::now();
            std::thread::sleep(Duration::from_millis(rng.below(MAX_DELAY_MS + 1)));
            stats.live_micros += ready.elapsed().as_micros() as u64;
        }
        assert_running(&mut child, dir, k);
        // SIGKILL on Unix.
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "child {k} did not die of SIGKILL: {status}"
        );
        stats.kills += 1;
        let alive_ms = spawned.elapsed().as_millis();

        let report = read_report(&progress_path(dir, k));
        assert!(
            report.violations.is_empty(),
            "child {k}: {:#?}",
            report.violations
        );
        let in_apply = report.batches_started > report.batches_done;
        let phase = if !report.ready {
            stats.before_ready += 1;
            "before ready"
        } else if in_apply {
            stats.in_apply += 1;
            "inside apply"
        } else {
            stats.between += 1;
            "between batches"
        };
        stats.batches += report.batches_done;
        if !early {
            stats.apply_micros += report.apply_micros;
            stats.applies += report.batches_done;
        }
        stats.sends += report.sent.len() as u64;
        if let Some(r) = report.last_round {
            rounds = rounds.max(r);
        }
        sends.extend(report.sent);

        // Check a copy every other time (the next child then recovers the hot WAL itself),
        // the file in place otherwise.
        let (truth, journal) = truth_server(dir, rounds);
        let check_path = if k.is_multiple_of(2) {
            let copy = dir.join("check");
            copy_store(dir, &copy);
            copy.join("store.db")
        } else {
            db_path(dir)
        };
        let store = SqliteStorage::open(&check_path)
            .unwrap_or_else(|e| panic!("kill {k}: reopening the store failed: {e}"));
        let context = format!("kill {k} ({phase})");
        let (seen, _) = check_store(
            &store,
            truth.store(),
            &journal,
            &sends,
            previous.as_ref(),
            &context,
        )
        .await;
        drop(store);
        println!(
            "kill {k:2}: after {alive_ms:4} ms, {phase:15}, batches committed {:4}, round {rounds:4}, \
             store: {} messages, {} tombstoned seqs, {} pending; journal {} sends",
            report.batches_done,
            seen.messages,
            seen.tombstoned,
            seen.pending,
            journal.len(),
        );
        previous = Some(seen);
    }

    // The last session runs to completion in process.
    let mut session = start_session(dir, KILLS, rounds, Progress::default()).await;
    session.settle().await;
    session.assert_no_dispatch_violation();
    if let Err(v) = session.sim.check_invariants().await {
        panic!("final session: {v}");
    }
    let (journal, _) = read_journal(dir);
    let store = session.sim.store(0).inner().clone();
    let truth = session.sim.server().store();
    let (seen, final_dump) =
        check_store(&store, truth, &journal, &sends, previous.as_ref(), "final").await;
    // Exactly the server: every conversation, every message, max seqs and floors equal,
    // nothing left to send.
    let mut out = Vec::new();
    let me = UserId::from(ME);
    let convs = truth.conversations_of(&me, None, usize::MAX).unwrap();
    let mut server_messages = 0u64;
    for id in &convs {
        let info = truth.conversation(id).unwrap().unwrap();
        let Some(local) = final_dump.conversations.iter().find(|c| &c.id == id) else {
            if info.max_seq > Seq(0) {
                out.push(format!("{id}: missing locally"));
            }
            continue;
        };
        if local.server_max_seq != info.max_seq {
            out.push(format!(
                "{id}: max seq {} vs the server's {}",
                local.server_max_seq.0, info.max_seq.0
            ));
        }
        if local.server_min_seq.max(Seq(1)) != info.min_seq.max(Seq(1)) {
            out.push(format!(
                "{id}: floor {} vs the server's {}",
                local.server_min_seq.0, info.min_seq.0
            ));
        }
        let floor = info.min_seq.max(Seq(1));
        if info.max_seq >= floor && !local.held.contains_range(floor, info.max_seq) {
            out.push(format!(
                "{id}: holds {:?}, not all of {}..={}",
                local.held, floor.0, info.max_seq.0
            ));
        }
        let stored = seen.stored.get(id).cloned().unwrap_or_default();
        for m in truth.messages(id, floor, info.max_seq, usize::MAX).unwrap() {
            server_messages += 1;
            if !stored.contains(&m.seq) {
                out.push(format!("{id} seq {}: not stored", m.seq.0));
            }
        }
    }
    if !final_dump.outbox.is_empty() {
        out.push(format!("outbox not empty: {:?}", final_dump.outbox));
    }
    if seen.pending != 0 {
        out.push(format!("{} unsent rows left", seen.pending));
    }
    for (conv, id) in &sends {
        let row = store
            .message_by_client_id(conv, &UserId::from(ME), id)
            .await
            .unwrap();
        if row.as_ref().map(|r| &r.status) != Some(&MessageStatus::Sent) {
            out.push(format!("{conv}: send {id} not sent: {row:?}"));
        }
    }
    assert!(out.is_empty(), "final: {out:#?}");
    drop(store);
    drop(session);

    // And the file, reopened cold, reads the same.
    let reopened = SqliteStorage::open(db_path(dir)).unwrap();
    reopened.check_integrity().await.unwrap();
    let again = dump(&reopened).await.unwrap();
    if let Some(diff) = final_dump.first_difference(&again) {
        panic!("reopened store differs: {diff}");
    }

    println!(
        "kills: {} ({} early, {} before the store was ready, {} inside apply, {} between batches)",
        stats.kills, stats.early, stats.before_ready, stats.in_apply, stats.between
    );
    println!(
        "children spent {:.0}% of their time after ready inside apply ({} ms of {} ms, {} µs per batch)",
        100.0 * stats.apply_micros as f64 / stats.live_micros.max(1) as f64,
        stats.apply_micros / 1000,
        stats.live_micros / 1000,
        stats.apply_micros / stats.applies.max(1)
    );
    println!(
        "totals: {rounds} rounds, {} conversations, {server_messages} server messages, {} stored, \
         {} batches committed by children, {} sends reported ({} accepted), {:.1} s",
        convs.len(),
        seen.messages,
        stats.batches,
        stats.sends,
        journal.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(stats.kills >= 20, "only {} kills", stats.kills);
}
