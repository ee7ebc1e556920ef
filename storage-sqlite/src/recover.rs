//! The way back from a damaged store: [`recover`].

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tidemark_engine::{Message, OutboxEntry, StorageError, WriteBatch, WriteOp};

use crate::native::{read_only_connection, sibling};
use crate::sql::codec::{decode_message, decode_outbox, message_columns, outbox_columns};
use crate::SqliteStorage;

/// Every outbox row, in no particular order: a plain table scan, so a damaged index
/// cannot hide rows the table still holds.
const SALVAGE_OUTBOX: &str = concat!("SELECT ", outbox_columns!(), " FROM outbox");
/// An outbox entry's pending row: the unsent row of its conversation and client id.
const SALVAGE_PENDING_ROW: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation = ?1 AND client_msg_id = ?2 AND seq IS NULL"
);

/// What [`recover`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Where the damaged store now lies (the old file, renamed; never deleted).
    pub set_aside: PathBuf,
    /// Every file moved: the store and, when they existed, its `-wal` and `-shm`, each
    /// renamed to the set-aside name plus its suffix so SQLite still finds them together.
    pub moved: Vec<PathBuf>,
    /// Outbox entries (unacknowledged sends) carried into the fresh store with their pending
    /// rows; the engine resends them under their client ids, so the server stores each once.
    pub outbox_salvaged: usize,
    /// Outbox entries seen but not carried over: the entry or its pending row did not
    /// decode. These sends are lost unless the server already holds them.
    pub outbox_lost: usize,
    /// Why salvage stopped early or read nothing (the file is not a database, the outbox
    /// table cannot be read to its end): entries past that point could not even be
    /// counted. `None` when the whole outbox was read.
    pub salvage_problem: Option<String>,
}

/// Sets a damaged store aside and starts a fresh one in its place, keeping what only this
/// device has: its unsent messages.
///
/// 1. Renames the file at `path` and its `-wal` and `-shm` to
///    `<path>.damaged-<unix ms>` (plus the same suffixes). Nothing is deleted; the renamed
///    files can be inspected or sent for analysis.
/// 2. Reads the outbox and each entry's pending row from the set-aside copy, read-only,
///    as far as the file allows. Garbage, a truncated file, damaged rows: salvage reports
///    what it could read, never panics, and never fails the recovery.
/// 3. Creates a fresh store at `path` holding the salvaged sends (pending rows and outbox
///    entries, one batch). Conversations, messages and read state are not carried over:
///    the next engine start syncs them from the server, as on a new device.
///
/// Call it with no client running on the store (the files are renamed under it). It does
/// not check that the store is damaged: a sound store is set aside and restarted all the
/// same, so an app that only wants to recover damage checks first
/// ([`SqliteStorage::wait_for_open_check`],
/// [`tidemark_engine::Storage::check_integrity`]).
///
/// Errors: [`StorageError::Backend`] when there is no file at `path` or a rename fails (the
/// files not yet moved stay where they were, and no fresh store is created over a log that
/// stayed behind); the fresh store's own errors when it cannot be created or written (the
/// set-aside files are kept either way).
pub fn recover(path: impl AsRef<Path>) -> Result<RecoveryReport, StorageError> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(StorageError::Backend {
            detail: format!("no store file at {}", path.display()),
            source: None,
        });
    }
    let set_aside = free_name(path);
    let mut moved = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let from = sibling(path, suffix);
        if !suffix.is_empty() && !from.exists() {
            continue;
        }
        let to = sibling(&set_aside, suffix);
        std::fs::rename(&from, &to).map_err(|e| StorageError::Backend {
            detail: format!(
                "setting {} aside as {} (moved so far: {moved:?})",
                from.display(),
                to.display()
            ),
            source: Some(Box::new(e)),
        })?;
        moved.push(to);
    }

    let salvage = salvage(&set_aside);
    let fresh = SqliteStorage::open(path)?;
    let mut ops = Vec::new();
    if !salvage.rows.is_empty() {
        ops.push(WriteOp::PutMessages(salvage.rows));
    }
    let outbox_salvaged = salvage.entries.len();
    ops.extend(salvage.entries.into_iter().map(WriteOp::PutOutbox));
    fresh.apply_sync(WriteBatch { ops })?;
    Ok(RecoveryReport {
        set_aside,
        moved,
        outbox_salvaged,
        outbox_lost: salvage.lost,
        salvage_problem: salvage.problem,
    })
}

/// `<path>.damaged-<unix ms>`, one millisecond later while that name (or its log) is taken.
fn free_name(path: &Path) -> PathBuf {
    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    loop {
        let candidate = sibling(path, &format!(".damaged-{ms}"));
        if !candidate.exists()
            && !sibling(&candidate, "-wal").exists()
            && !sibling(&candidate, "-shm").exists()
        {
            return candidate;
        }
        ms += 1;
    }
}

/// What salvage read from a damaged store.
#[derive(Default)]
struct Salvage {
    entries: Vec<OutboxEntry>,
    rows: Vec<Message>,
    lost: usize,
    problem: Option<String>,
}

fn salvage(path: &Path) -> Salvage {
    let mut out = Salvage::default();
    if let Err(problem) = salvage_into(path, &mut out) {
        out.problem = Some(problem);
    }
    out
}

/// Reads entry by entry, so one bad row costs that entry only; an error that stops the
/// walk itself is returned as the problem.
fn salvage_into(path: &Path, out: &mut Salvage) -> Result<(), String> {
    // Read-only, and immutable when there is no log: the set-aside files stay as they were,
    // with nothing new beside them.
    let conn =
        read_only_connection(path).map_err(|e| format!("cannot open the damaged store: {e}"))?;
    let mut outbox = conn
        .prepare(SALVAGE_OUTBOX)
        .map_err(|e| format!("cannot read the outbox: {e}"))?;
    let mut pending = conn
        .prepare(SALVAGE_PENDING_ROW)
        .map_err(|e| format!("cannot read pending messages: {e}"))?;
    let mut rows = outbox
        .query([])
        .map_err(|e| format!("cannot read the outbox: {e}"))?;
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("the outbox could not be read to its end: {e}")),
        };
        let Ok(entry) = decode_outbox(row) else {
            out.lost += 1;
            continue;
        };
        match pending_row(&mut pending, &entry) {
            Some(row) => {
                out.rows.push(row);
                out.entries.push(entry);
            }
            None => out.lost += 1,
        }
    }
}

/// The entry's pending row, if it reads and decodes (several would break the store's
/// invariant; the first is kept).
fn pending_row(stmt: &mut rusqlite::Statement<'_>, entry: &OutboxEntry) -> Option<Message> {
    let mut rows = stmt
        .query([&entry.conversation.0, &entry.client_msg_id.0])
        .ok()?;
    let row = rows.next().ok()??;
    decode_message(row).ok()
}
