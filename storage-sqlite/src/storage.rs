//! [`SqliteStorage`]: the [`Storage`] trait over one SQLite connection.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};
use tidemark_engine::{
    Applied, ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, Message,
    OutboxEntry, Seq, SeqRanges, Storage, StorageError, SyncSnapshot, UserId, WriteBatch,
};

use crate::sql::error::{batch_error, storage_error};
use crate::sql::{integrity, migrations, read, write};

/// How many prepared statements each connection keeps: every statement the store runs fits,
/// so none is compiled twice.
const STATEMENT_CACHE: usize = 64;

/// A [`Storage`] on SQLite. Cheap to clone: clones share one connection, so a test can drop
/// an engine and start another on the same store, as the memory store allows.
///
/// Open it with [`SqliteStorage::open`] (a file), [`SqliteStorage::open_read_only`] or
/// [`SqliteStorage::open_in_memory`]; a platform with its own way of opening SQLite (the
/// browser backend) hands its connection to [`SqliteStorage::from_connection`].
///
/// Every trait method behaves as [`tidemark_engine::MemoryStorage`]'s does, with one limit:
/// SQLite integers are signed, so a batch carrying a seq, timestamp or count above
/// `i64::MAX` is rejected ([`StorageError::Rejected`]) instead of stored.
///
/// rusqlite is synchronous: each read takes the connection's lock and runs its statements
/// inline, so a call blocks its thread for as long as SQLite works (microseconds for a page,
/// longer for the snapshot of a big store). Natively, [`Storage::apply`] instead hands its
/// batch to the store's writer thread and awaits the commit, so the caller's thread (the
/// driver's) goes on meanwhile; batches commit in the order they were handed over. On wasm32
/// there are no threads and `apply` runs inline too. Calls from several tasks are serialized
/// by the lock.
///
/// **Damage is sticky.** Once any call has reported [`StorageError::Corrupt`] (a read, a
/// write, [`Storage::check_integrity`], [`SqliteStorage::quick_check`] or the check
/// [`SqliteStorage::open`] starts), every later [`Storage::apply`] on this store and its
/// clones fails with `Corrupt` before touching the file: writing into a damaged b-tree can
/// spread the damage, and the only way back is [`crate::recover`]. Reads keep working as far
/// as the file allows, so an app can still show what is there.
#[derive(Clone)]
pub struct SqliteStorage {
    conn: Arc<Mutex<Connection>>,
    health: Arc<Health>,
    /// Natively, batches are applied on the store's own thread (see [`crate::writer`]).
    #[cfg(not(target_family = "wasm"))]
    writer: Arc<crate::writer::Writer>,
}

/// What this store knows about its file's damage, shared by clones.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The first corruption reported; once set, writes are refused.
    damage: OnceLock<String>,
    /// Whether the check started at open is still running: writes wait for its verdict.
    checking: Mutex<bool>,
    checked: Condvar,
}

impl Health {
    /// Remembers a `Corrupt` error as the store's damage (the first one wins).
    pub(crate) fn note(&self, e: &StorageError) {
        if let StorageError::Corrupt { detail, .. } = e {
            let _ = self.damage.set(detail.clone());
        }
    }

    fn noted<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }

    /// A check of the file starts; writes wait until [`Health::finish_check`].
    #[cfg_attr(
        target_family = "wasm",
        allow(dead_code, reason = "native opener only")
    )]
    pub(crate) fn start_check(&self) {
        *self.checking.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// The open check ended (`Err` only for damage it found).
    #[cfg_attr(
        target_family = "wasm",
        allow(dead_code, reason = "native opener only")
    )]
    pub(crate) fn finish_check(&self, verdict: Result<(), StorageError>) {
        if let Err(e) = &verdict {
            self.note(e);
        }
        *self.checking.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.checked.notify_all();
    }

    fn wait_for_check(&self) {
        let mut running = self.checking.lock().unwrap_or_else(PoisonError::into_inner);
        while *running {
            running = self
                .checked
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn refusal(&self) -> Option<StorageError> {
        self.damage.get().map(|detail| StorageError::Corrupt {
            detail: format!(
                "writes refused: the store was found damaged ({detail}); set it aside with \
                 recover and resync"
            ),
            source: None,
        })
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: formatting must not wait for (or deadlock on) a running batch.
        let path = match self.conn.try_lock() {
            Ok(conn) => conn.path().unwrap_or(":memory:").to_owned(),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                p.into_inner().path().unwrap_or(":memory:").to_owned()
            }
            Err(std::sync::TryLockError::WouldBlock) => "<busy>".to_owned(),
        };
        f.debug_struct("SqliteStorage")
            .field("path", &path)
            .finish_non_exhaustive()
    }
}

impl SqliteStorage {
    /// Wraps an open connection: checks that it holds a Tidemark store this build can read,
    /// then brings its schema up to date. The connection's platform settings (journal mode,
    /// synchronous, busy timeout, VFS) are the caller's.
    ///
    /// Errors: [`StorageError::Corrupt`] for a file that is not a database or not a Tidemark
    /// store, [`StorageError::UnsupportedVersion`] for a store written by a newer build (left
    /// untouched), [`StorageError::ReadOnly`] when a migration is due but the store cannot be
    /// written.
    pub fn from_connection(conn: Connection) -> Result<Self, StorageError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Query planner stability: without it SQLite (3.4x+) re-plans a cached statement
        // whenever a LIMIT value changes, which costs a full re-prepare per page read. The
        // plans are fixed by the schema's indexes anyway (tests check them).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(|e| storage_error(e, "enabling the query planner stability guarantee"))?;
        migrations::migrate(&conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let health: Arc<Health> = Arc::default();
        Ok(Self {
            #[cfg(not(target_family = "wasm"))]
            writer: crate::writer::Writer::start({
                let (conn, health) = (Arc::clone(&conn), Arc::clone(&health));
                // `apply` hands over batches with changes only.
                move |batch| apply_changes(&conn, &health, batch)
            }),
            conn,
            health,
        })
    }

    /// Shared with the open check's thread.
    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The first corruption this store (or a clone) reported, if any. Once set, every
    /// [`Storage::apply`] fails with [`StorageError::Corrupt`]; see [`crate::recover`].
    /// Does not wait for the check [`SqliteStorage::open`] starts
    /// ([`SqliteStorage::wait_for_open_check`] does).
    pub fn damage(&self) -> Option<String> {
        self.health.damage.get().cloned()
    }

    /// Waits until the check that [`SqliteStorage::open`] started on an existing file has
    /// finished, then returns `Err(Corrupt)` if the store is known to be damaged (by that
    /// check or by any call so far). Returns at once for stores without that check (new
    /// files, [`SqliteStorage::open_read_only`], [`SqliteStorage::from_connection`]). An app
    /// that wants to refuse a damaged store before showing anything calls this after opening;
    /// one that does not still never writes into damage, since `apply` waits for the same
    /// verdict.
    pub fn wait_for_open_check(&self) -> Result<(), StorageError> {
        self.health.wait_for_check();
        match self.health.damage.get() {
            Some(detail) => Err(StorageError::Corrupt {
                detail: detail.clone(),
                source: None,
            }),
            None => Ok(()),
        }
    }

    /// Runs SQLite's `PRAGMA quick_check` on this connection now: every page and b-tree is
    /// read and checked (not the indexes' agreement with their tables, which
    /// [`Storage::check_integrity`] adds). Damage found is `Err(Corrupt)` and makes the store
    /// refuse writes. Holds the connection for as long as it reads the whole file (850 ms
    /// for 1M messages, 173 MiB, measured by `tests/sqlite_quick_check_cost.rs`), so other
    /// calls wait meanwhile.
    pub fn quick_check(&self) -> Result<(), StorageError> {
        let result = integrity::quick_check(&self.lock());
        self.health.noted(result)
    }

    /// A new, empty store in memory, gone when the last clone is dropped. For tests.
    pub fn open_in_memory() -> Result<Self, StorageError> {
        let conn =
            Connection::open_in_memory().map_err(|e| storage_error(e, "opening a memory store"))?;
        Self::from_connection(conn)
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`); a write that would grow
    /// it further fails with [`StorageError::Full`] and changes nothing. SQLite never sets the
    /// cap below the current size: the cap in force is returned, so `set_max_page_count(1)`
    /// freezes the store at its size. Holds for this connection (and its clones) only.
    pub fn set_max_page_count(&self, pages: u64) -> Result<u64, StorageError> {
        let conn = self.lock();
        let pages = i64::try_from(pages).unwrap_or(i64::MAX);
        let cap: i64 = conn
            .pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))
            .map_err(|e| storage_error(e, "setting max_page_count"))?;
        Ok(cap.unsigned_abs())
    }

    /// The connection, locked. A panic while it was held cannot have left a batch half
    /// applied: the batch's transaction rolls back when it is dropped during the unwind. So a
    /// poisoned lock is taken over rather than failing every later call.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// [`Storage::apply`] on the calling thread.
    pub(crate) fn apply_sync(&self, batch: WriteBatch) -> Result<Applied, StorageError> {
        apply_checked(&self.conn, &self.health, batch)
    }
}

/// `conn`, locked (see [`SqliteStorage::lock`]).
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A batch of events alone: nothing to write, so nothing to wait for and no thread to hop to.
/// `Some` with its result, `None` for a batch with changes.
fn apply_empty(health: &Health, batch: &WriteBatch) -> Option<Result<Applied, StorageError>> {
    // A sync that found nothing new writes nothing, so it need not wait for the open check: a
    // reconnect to an unchanged account is done in one round trip, not after a check of the
    // whole file. Known damage still refuses it.
    batch
        .is_empty()
        .then(|| health.refusal().map_or(Ok(Applied::default()), Err))
}

/// [`Storage::apply`]'s work on the calling thread.
fn apply_checked(
    conn: &Mutex<Connection>,
    health: &Health,
    batch: WriteBatch,
) -> Result<Applied, StorageError> {
    match apply_empty(health, &batch) {
        Some(result) => result,
        None => apply_changes(conn, health, batch),
    }
}

/// A batch with changes (see [`apply_empty`]), on whichever thread runs it.
fn apply_changes(
    conn: &Mutex<Connection>,
    health: &Health,
    batch: WriteBatch,
) -> Result<Applied, StorageError> {
    // A store with damage, known or being looked for, takes no write: SQLite does not check
    // every page it writes beside, so a write can build on a damaged page.
    health.wait_for_check();
    if let Some(refusal) = health.refusal() {
        return Err(refusal);
    }
    let result = apply_unchecked(&mut lock(conn), batch);
    health.noted(result)
}

fn apply_unchecked(conn: &mut Connection, batch: WriteBatch) -> Result<Applied, StorageError> {
    // IMMEDIATE takes the write lock up front: a busy store fails (after the busy timeout)
    // here, before any op ran, rather than halfway through the batch.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(batch_error)?;
    // On error the transaction is dropped, which rolls every op of the batch back.
    let applied = write::apply_batch(&tx, batch)?;
    tx.commit().map_err(batch_error)?;
    Ok(applied)
}

// The bodies are synchronous: the lock is never held across an await.
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl Storage for SqliteStorage {
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError> {
        self.health.noted(read::load_snapshot(&self.lock()))
    }

    async fn apply(&self, batch: WriteBatch) -> Result<Applied, StorageError> {
        #[cfg(not(target_family = "wasm"))]
        {
            if let Some(result) = apply_empty(&self.health, &batch) {
                return result;
            }
            match self.writer.submit(batch) {
                Ok(result) => result.await.unwrap_or_else(|_| {
                    Err(StorageError::Backend {
                        detail: "the store's writer thread stopped before the batch's result"
                            .to_owned(),
                        source: None,
                    })
                }),
                Err(batch) => self.apply_sync(batch),
            }
        }
        #[cfg(target_family = "wasm")]
        self.apply_sync(batch)
    }

    async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StorageError> {
        self.health.noted(read::conversation(&self.lock(), id))
    }

    async fn conversations_page(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StorageError> {
        self.health
            .noted(read::conversations_page(&self.lock(), after, limit))
    }

    async fn messages_page(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        self.health.noted(read::messages_page(
            &self.lock(),
            conversation,
            anchor,
            direction,
            limit,
        ))
    }

    async fn message_by_client_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StorageError> {
        self.health.noted(read::message_by_client_id(
            &self.lock(),
            conversation,
            sender,
            client_msg_id,
        ))
    }

    async fn unsent_messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<Message>, StorageError> {
        self.health
            .noted(read::unsent_messages(&self.lock(), conversation))
    }

    async fn total_unread(&self) -> Result<u64, StorageError> {
        self.health.noted(read::total_unread(&self.lock()))
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StorageError> {
        self.health.noted(read::outbox(&self.lock()))
    }

    async fn tombstones(&self, conversation: &ConversationId) -> Result<SeqRanges, StorageError> {
        self.health
            .noted(read::tombstones(&self.lock(), conversation))
    }

    async fn check_integrity(&self) -> Result<(), StorageError> {
        integrity::check_classified(&self.lock()).map_err(|(e, damage)| {
            if damage {
                self.health.note(&e);
            }
            e
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::sync::mpsc;
    use std::time::Duration;

    use tidemark_engine::{Storage, SyncToken, WriteBatch, WriteOp};

    use super::*;

    fn apply_in_thread(store: &SqliteStorage, batch: WriteBatch) -> mpsc::Receiver<bool> {
        let (tx, rx) = mpsc::channel();
        let store = store.clone();
        std::thread::spawn(move || {
            let result = futures::executor::block_on(store.apply(batch));
            let _ = tx.send(result.is_ok());
        });
        rx
    }

    #[test]
    fn an_empty_batch_does_not_wait_for_the_open_check_and_a_write_does() {
        let store = SqliteStorage::open_in_memory().unwrap();
        store.health().start_check();
        let empty = apply_in_thread(&store, WriteBatch::default());
        assert_eq!(empty.recv_timeout(Duration::from_secs(10)), Ok(true));

        let mut batch = WriteBatch::default();
        batch.ops.push(WriteOp::PutMessages(Vec::new()));
        let write = apply_in_thread(&store, batch);
        assert!(
            write.recv_timeout(Duration::from_millis(300)).is_err(),
            "a write waits while the check runs"
        );
        store.health().finish_check(Ok(()));
        assert_eq!(write.recv_timeout(Duration::from_secs(10)), Ok(true));
    }

    fn token_batch(token: &str) -> WriteBatch {
        WriteBatch {
            ops: vec![WriteOp::PutSyncToken(Some(SyncToken(token.to_owned())))],
        }
    }

    #[test]
    fn batches_commit_on_the_writer_thread_in_the_order_they_were_handed_over() {
        let store = SqliteStorage::open_in_memory().unwrap();
        // Both are handed over before either is awaited: the second must commit last.
        let mut first = store.apply(token_batch("1.1"));
        let mut second = store.apply(token_batch("1.2"));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let _ = first.as_mut().poll(&mut cx);
        let _ = second.as_mut().poll(&mut cx);
        futures::executor::block_on(async {
            first.await.unwrap();
            second.await.unwrap();
        });
        let snapshot = futures::executor::block_on(store.load_snapshot()).unwrap();
        assert_eq!(snapshot.sync_token, Some(SyncToken("1.2".to_owned())));
    }

    #[test]
    fn dropping_the_last_clone_closes_the_file_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStorage::open(&path).unwrap();
        futures::executor::block_on(store.apply(token_batch("1.1"))).unwrap();
        let wal = crate::native::sibling(&path, "-wal");
        assert!(wal.exists(), "an open WAL store has its log");
        drop(store.clone());
        assert!(wal.exists(), "a clone's drop leaves the store open");
        drop(store);
        // SQLite removes the log when its last connection closes: the writer thread, which
        // holds the connection too, has finished by the time the drop returned.
        assert!(!wal.exists(), "the log is gone: the connection was closed");
    }

    #[test]
    fn an_empty_batch_on_a_damaged_store_is_refused() {
        let store = SqliteStorage::open_in_memory().unwrap();
        store.health().note(&StorageError::Corrupt {
            detail: "found by the open check".into(),
            source: None,
        });
        let refused = futures::executor::block_on(store.apply(WriteBatch::default()));
        assert!(matches!(refused, Err(StorageError::Corrupt { .. })));
    }
}
