//! [`WebStorage`]: the [`Storage`] trait in the browser, on the SQL layer of
//! tidemark-storage-sqlite over a file layer chosen at open ([`FileLayer`]).

use std::cell::RefCell;
use std::rc::Rc;

use futures::lock::Mutex;
use rusqlite::{Connection, OpenFlags};
use tidemark_engine::{
    Applied, ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, Message,
    OutboxEntry, Seq, SeqRanges, Storage, StorageError, SyncSnapshot, UserId, WriteBatch,
};
use tidemark_storage_sqlite::{storage_error, SqliteStorage};

use crate::idb::IdbFile;
use crate::opfs::OpfsPool;
use crate::owner::OwnerLock;

/// Where a database's file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileLayer {
    /// The Origin Private File System, through synchronous access handles: only in a
    /// dedicated worker. Each commit is on disk when `apply` returns. The default wherever it
    /// is available.
    Opfs,
    /// IndexedDB, through a file layer of this crate: on the main thread and in any worker.
    /// The database is held in memory; each commit is written to IndexedDB in one
    /// transaction, and `apply` returns only once IndexedDB reports it complete. A failed
    /// write (quota, eviction, a closed database) fails that `apply` with a typed error,
    /// puts the store back to its last durable state and refuses further writes until the
    /// store is reopened.
    ///
    /// What it costs: the whole database is held in memory, in the wasm heap (at most
    /// 4 GiB: in Chromium 156 a database grew to 4,035 MiB before SQLite reported
    /// `out of memory`; the tab's memory makes the practical limit lower), and opening reads
    /// all of it (a 23.6 MB database in 0.3-0.6 s). [`WebStorage::memory_bytes`] says how
    /// much it holds.
    IndexedDb,
}

impl FileLayer {
    /// OPFS where this context has synchronous access handles (a dedicated worker in a
    /// secure context), IndexedDB elsewhere.
    pub fn preferred() -> Self {
        let global = js_sys::global();
        let has = |name: &str| js_sys::Reflect::has(&global, &name.into()).unwrap_or(false);
        if has("FileSystemSyncAccessHandle") && has("DedicatedWorkerGlobalScope") {
            FileLayer::Opfs
        } else {
            FileLayer::IndexedDb
        }
    }
}

/// How hard a commit is pushed to disk before [`Storage::apply`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Every commit is flushed to disk before `apply` returns (SQLite `synchronous=FULL` on
    /// OPFS, `strict` IndexedDB transactions). What the engine's rules assume: use it.
    #[default]
    Strict,
    /// The commit is written but not flushed (`synchronous=OFF` on OPFS, `relaxed`
    /// IndexedDB transactions): a power loss or an OS crash may lose the last commits (a tab
    /// or browser crash does not). For measuring what durability costs, and for data the
    /// server can always resend.
    Relaxed,
}

/// How to open a [`WebStorage`]: the database's name and, optionally, its file layer, whether
/// to wait for another owner, and the durability.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    name: String,
    layer: Option<FileLayer>,
    wait_for_owner: bool,
    durability: Durability,
}

impl OpenOptions {
    /// Database `name`: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (it names browser
    /// storage: an OPFS directory, a lock). One user and device per name is the usual choice.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            layer: None,
            wait_for_owner: false,
            durability: Durability::Strict,
        }
    }

    /// The file layer; the default is [`FileLayer::preferred`].
    pub fn layer(mut self, layer: FileLayer) -> Self {
        self.layer = Some(layer);
        self
    }

    /// When another tab or worker owns the database: `false` (the default) fails at once
    /// with [`StorageError::InUse`]; `true` waits until it lets go (closes the store, or its
    /// tab or worker goes away), without a time limit.
    pub fn wait_for_owner(mut self, wait: bool) -> Self {
        self.wait_for_owner = wait;
        self
    }

    /// The durability of each commit; [`Durability::Strict`] by default.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// A [`Storage`] in the browser: Tidemark's SQLite schema, migrations and queries (the SQL
/// layer of tidemark-storage-sqlite, the same code as natively) on SQLite compiled to wasm32,
/// over a [`FileLayer`].
///
/// **One owner.** Opening takes a Web Lock named after the database, so two tabs or workers
/// never both write one database: the second opener gets [`StorageError::InUse`], or waits
/// ([`OpenOptions::wait_for_owner`]). The browser releases the lock when its holder's tab or
/// worker goes away. There is never a fallback to memory: a store that cannot be opened
/// durably is an error.
///
/// **Errors** are the native backend's: [`StorageError::Corrupt`] for a damaged file,
/// [`StorageError::Full`] for the origin's quota (the batch is rolled back, nothing stored
/// before is lost), [`StorageError::UnsupportedVersion`] for a store of a newer build,
/// [`StorageError::InUse`] for another owner, [`StorageError::Backend`] for the rest (no OPFS
/// in this context, say).
///
/// Cheap to clone: clones share one connection. The database is released when the last
/// clone is dropped, or by [`WebStorage::close`], which also waits until the browser let go
/// of the lock. Single-threaded, like everything in a wasm32 context.
#[derive(Clone, Debug)]
pub struct WebStorage {
    inner: Rc<Inner>,
}

/// The open database. Fields drop in order: the connection first (a pool cannot be released
/// with a file open), then the file layer, then the lock, last, so no other owner can come
/// in while anything is still held.
#[derive(Debug)]
struct Inner {
    sql: SqliteStorage,
    file: LayerFile,
    /// One write (and its flush) at a time, and no read in the middle of one.
    gate: Mutex<()>,
    /// Why writes are refused until the store is reopened, if they are, and whether because
    /// the database is gone (which every later write then reports again).
    refused: RefCell<Option<(String, bool)>>,
    name: String,
    owner: RefCell<Option<OwnerLock>>,
}

/// The file layer of an open database.
#[derive(Debug)]
enum LayerFile {
    #[allow(
        dead_code,
        reason = "held for its Drop, which releases the pool's handles"
    )]
    Opfs(OpfsPool),
    IndexedDb(IdbFile),
}

impl WebStorage {
    /// Opens (creating if absent) the database of `options`: takes its owner lock, its file
    /// layer, and brings its schema up to date.
    pub async fn open(options: OpenOptions) -> Result<Self, StorageError> {
        check_name(&options.name)?;
        let layer = options.layer.unwrap_or_else(FileLayer::preferred);
        let owner = OwnerLock::acquire(&lock_name(&options.name), options.wait_for_owner).await?;
        // A failed open lets the lock go before it returns, so that the caller's next step
        // (deleting the damaged database, say) finds it free.
        let (sql, file) = match open_layer(&options, layer).await {
            Ok(opened) => opened,
            Err(e) => {
                owner.release().await;
                return Err(e);
            }
        };
        Ok(Self {
            inner: Rc::new(Inner {
                sql,
                file,
                gate: Mutex::new(()),
                refused: RefCell::new(None),
                name: options.name,
                owner: RefCell::new(Some(owner)),
            }),
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The file layer the database lives on.
    pub fn layer(&self) -> FileLayer {
        match self.inner.file {
            LayerFile::Opfs(_) => FileLayer::Opfs,
            LayerFile::IndexedDb(_) => FileLayer::IndexedDb,
        }
    }

    /// Bytes of memory the database's file takes in this context: on
    /// [`FileLayer::IndexedDb`] the whole file is held in memory (plus the pages changed by a
    /// commit still being written); `0` on OPFS, where it stays on disk.
    pub fn memory_bytes(&self) -> u64 {
        match &self.inner.file {
            LayerFile::Opfs(_) => 0,
            LayerFile::IndexedDb(file) => file.len(),
        }
    }

    /// Closes this handle. When it is the last one, the database is closed, its file layer
    /// released and its owner lock let go; this returns once the browser has released the
    /// lock, so an open that follows (here or in another tab) finds it free.
    pub async fn close(self) {
        let Ok(inner) = Rc::try_unwrap(self.inner) else {
            return;
        };
        let owner = inner.owner.borrow_mut().take();
        // The connection and the file layer go first: see `Inner`.
        drop(inner);
        if let Some(owner) = owner {
            owner.release().await;
        }
    }

    /// Deletes database `name` from `layer`. Takes its owner lock first: fails with
    /// [`StorageError::InUse`] while it is open anywhere.
    pub async fn delete(name: &str, layer: FileLayer) -> Result<(), StorageError> {
        check_name(name)?;
        let owner = OwnerLock::acquire(&lock_name(name), false).await?;
        let result = match layer {
            FileLayer::Opfs => OpfsPool::take(name).await.and_then(|pool| pool.clear()),
            FileLayer::IndexedDb => IdbFile::delete(&idb_name(name)).await,
        };
        owner.release().await;
        result
    }

    /// Refuses every later write until the store is reopened, and passes `e` on.
    fn refuse(&self, e: StorageError) -> StorageError {
        let gone = matches!(e, StorageError::Gone { .. });
        *self.inner.refused.borrow_mut() = Some((e.to_string(), gone));
        e
    }

    fn refusal(&self) -> Option<StorageError> {
        self.inner.refused.borrow().as_ref().map(|(why, gone)| {
            let detail = format!("writes refused until the store is reopened: {why}");
            // A vanished database stays `Gone`: retrying cannot bring it back, and the
            // driver must see the same verdict every time.
            if *gone {
                StorageError::Gone {
                    detail,
                    source: None,
                }
            } else {
                StorageError::Backend {
                    detail,
                    source: None,
                }
            }
        })
    }
}

/// Opens the database's file on `layer` and the SQL layer over it (schema migrated and, on
/// IndexedDB, flushed). Whatever was opened is closed again on error.
async fn open_layer(
    options: &OpenOptions,
    layer: FileLayer,
) -> Result<(SqliteStorage, LayerFile), StorageError> {
    let (file, conn) = match layer {
        FileLayer::Opfs => {
            let pool = OpfsPool::take(&options.name).await?;
            let conn = pool.connect(&options.name)?;
            (LayerFile::Opfs(pool), conn)
        }
        FileLayer::IndexedDb => {
            let file_name = format!("{}.db", options.name);
            let file = IdbFile::open(&idb_name(&options.name), &file_name).await?;
            file.set_relaxed(options.durability == Durability::Relaxed);
            let conn = Connection::open_with_flags_and_vfs(
                &file_name,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                IdbFile::VFS,
            )
            .map_err(|e| storage_error(e, "opening the database in IndexedDB"))?;
            (LayerFile::IndexedDb(file), conn)
        }
    };
    configure(&conn, layer, options.durability)?;
    let sql = SqliteStorage::from_connection(conn)?;
    if let LayerFile::IndexedDb(file) = &file {
        // The schema the SQL layer just created or migrated is in memory only: make it
        // durable now, or a revert would take it back.
        file.flush().await?;
    }
    Ok((sql, file))
}

/// The platform settings of a connection, before the SQL layer takes it.
fn configure(
    conn: &Connection,
    layer: FileLayer,
    durability: Durability,
) -> Result<(), StorageError> {
    let synchronous = match durability {
        Durability::Strict => "FULL",
        Durability::Relaxed => "OFF",
    };
    let journal = match layer {
        // A rollback journal in the pool (the faster of the durable modes measured here);
        // WAL would need exclusive locking, having no shared memory.
        FileLayer::Opfs => "TRUNCATE",
        // Atomicity comes from the IndexedDB transaction that holds a whole commit; the
        // journal only serves rollbacks, in memory. (Locking stays NORMAL: a reverted file
        // is then noticed by SQLite, which drops its page cache.)
        FileLayer::IndexedDb => "MEMORY",
    };
    let pragmas = format!(
        "PRAGMA journal_mode = {journal}; PRAGMA synchronous = {synchronous}; \
         PRAGMA temp_store = MEMORY;"
    );
    conn.execute_batch(&pragmas)
        .map_err(|e| storage_error(e, "configuring the connection"))
}

/// The IndexedDB database holding Tidemark database `name`.
fn idb_name(name: &str) -> String {
    format!("tidemark-{name}")
}

/// The Web Lock of database `name`, one per name whatever its layer.
fn lock_name(name: &str) -> String {
    format!("tidemark-storage:{name}")
}

/// A name that is safe as an OPFS directory, an IndexedDB name and a lock name.
fn check_name(name: &str) -> Result<(), StorageError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !matches!(name, "." | "..");
    if valid {
        Ok(())
    } else {
        Err(StorageError::Backend {
            detail: format!(
                "invalid database name {name:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.'"
            ),
            source: None,
        })
    }
}

#[async_trait::async_trait(?Send)]
impl Storage for WebStorage {
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.load_snapshot().await
    }

    async fn apply(&self, batch: WriteBatch) -> Result<Applied, StorageError> {
        let _gate = self.inner.gate.lock().await;
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        match &self.inner.file {
            LayerFile::Opfs(pool) => {
                // The commit is durable when SQLite returns, unless the files were deleted
                // under the pool (writes then still succeed): asked after every commit.
                let result = self.inner.sql.apply(batch).await;
                pool.check_present().await.map_err(|e| self.refuse(e))?;
                result
            }
            LayerFile::IndexedDb(file) => {
                if let Some(why) = file.gone() {
                    return Err(self.refuse(StorageError::Gone {
                        detail: why,
                        source: None,
                    }));
                }
                // SQLite commits into memory; the flush makes it durable.
                match self.inner.sql.apply(batch).await {
                    Ok(applied) => match file.flush().await {
                        Ok(()) => Ok(applied),
                        // The file is back at its last flush: so is every read from now on.
                        Err(e) => Err(self.refuse(e)),
                    },
                    Err(e) => {
                        // SQLite rolled the batch back; the pages it touched are as flushed.
                        file.revert();
                        Err(e)
                    }
                }
            }
        }
    }

    async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.conversation(id).await
    }

    async fn conversations_page(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.conversations_page(after, limit).await
    }

    async fn messages_page(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner
            .sql
            .messages_page(conversation, anchor, direction, limit)
            .await
    }

    async fn message_by_client_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner
            .sql
            .message_by_client_id(conversation, sender, client_msg_id)
            .await
    }

    async fn unsent_messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<Message>, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.unsent_messages(conversation).await
    }

    async fn total_unread(&self) -> Result<u64, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.total_unread().await
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.outbox().await
    }

    async fn tombstones(&self, conversation: &ConversationId) -> Result<SeqRanges, StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.tombstones(conversation).await
    }

    async fn check_integrity(&self) -> Result<(), StorageError> {
        let _gate = self.inner.gate.lock().await;
        self.inner.sql.check_integrity().await
    }
}
