//! The IndexedDB file layer: a SQLite VFS (`tidemark-idb`) whose database files are held in
//! memory and persisted in IndexedDB by an explicit, awaited [`IdbFile::flush`].
//!
//! Usable on the main thread and in any worker. What it guarantees, unlike the removed
//! `relaxed-idb`:
//! - a flush writes every chunk changed since the last flush, and the size, in one
//!   IndexedDB transaction asking for `strict` durability, and returns only once that
//!   transaction completed: "flushed" means IndexedDB holds it;
//! - changed chunks are never forgotten: each keeps its pre-image (its content at the last
//!   flush) until a flush holding it completed. A failed flush puts the file back to the
//!   last flushed state and reports a typed error (quota: `Full`; database deleted, evicted
//!   or closed under us: `Gone`; anything else: `Backend`), and every later flush fails
//!   until the file is reopened.
//!
//! The cost: **the whole database is held in memory**, in the wasm heap, plus a copy of
//! each chunk changed since the last flush; opening reads every chunk (a 23.6 MB database
//! in about 0.3-0.5 s). The wasm32 heap is at most 4 GiB: in a dedicated worker of headless
//! Chromium 156 a database grew to 4,035 MiB before SQLite reported `out of memory` (a
//! clean SQLite error, the file layer and IndexedDB stayed consistent). The browser's
//! memory for the tab, and the app's own heap, make the practical limit lower.
//!
//! Layout in IndexedDB (layout version [`LAYOUT_VERSION`]): one IndexedDB database per
//! Tidemark database, object store `chunks` (key: chunk index, value: a `Uint8Array` of
//! [`CHUNK_SIZE`] bytes) and object store `meta` (key `"file"`: an object
//! `{ layout, size }`). The database is opened at whatever IndexedDB version it has (1 when
//! created): a later layout must keep `meta` and raise `layout`, which this build refuses
//! with `UnsupportedVersion`.
//!
//! Only main database files are persisted; journals and temporary files live in memory.
//! The connection is meant to run with `PRAGMA journal_mode=MEMORY` and
//! `locking_mode=NORMAL` (other journal modes work too; WAL does not, there is no shared
//! memory). One connection per database per JS context: the VFS's locks are no-ops.
//!
//! Reverting under an open connection is safe in `locking_mode=NORMAL`: the revert also
//! restores the header's file change counter, which SQLite compares when it next takes its
//! shared lock, dropping its page cache when it differs (the tests check it, schema
//! changes included). In `locking_mode=EXCLUSIVE` SQLite keeps its lock and its cache:
//! there the connection must be reopened after a revert.

pub(crate) mod js;
mod pages;
mod vfs;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::future::{select, Either};
use js_sys::{Array, JsString, Object, Reflect, Uint8Array};
use tidemark_engine::StorageError;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, IdbDatabase, IdbKeyRange, IdbTransaction};

use crate::error::JsErrorText;
use js::{Completion, Watched};
use pages::{chunk_count, PagedFile, CHUNK_SIZE};

/// The layout of the IndexedDB records this build writes and reads.
pub(crate) const LAYOUT_VERSION: u64 = 1;

/// How long a blocked delete waits for the other connections to close.
pub(crate) const DELETE_GRACE_MS: u32 = 1_000;

/// The durability a flush asks for by default: IndexedDB reports the transaction complete
/// only once the browser has flushed it to disk.
const STRICT: &str = "strict";

const CHUNKS: &str = "chunks";
const META: &str = "meta";
const META_KEY: &str = "file";

/// What IndexedDB told us about the connection, shared with its event handlers.
#[derive(Default)]
struct Status {
    /// Why the database is gone, if IndexedDB said so.
    gone: RefCell<Option<String>>,
    /// Why the last flush failed; no flush succeeds after one failed.
    failed: RefCell<Option<String>>,
    /// Our own `close` ran.
    closed: Cell<bool>,
    /// A flush is waiting for its transaction.
    flushing: Cell<bool>,
    /// Tests: the next flush aborts its transaction once every request is issued.
    #[cfg(test)]
    abort_next_flush: Cell<bool>,
}

/// One open database file in IndexedDB.
pub(crate) struct IdbFile {
    idb_name: String,
    file_name: String,
    db: IdbDatabase,
    file: Rc<RefCell<PagedFile>>,
    files: Rc<vfs::Files>,
    status: Rc<Status>,
    /// The durability flushes ask for: [`STRICT`] unless relaxed.
    durability: Cell<&'static str>,
    /// Kept alive while the connection is open: JS calls them.
    _on_versionchange: Closure<dyn FnMut(Event)>,
    _on_close: Closure<dyn FnMut(Event)>,
}

impl std::fmt::Debug for IdbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdbFile")
            .field("idb_name", &self.idb_name)
            .field("file_name", &self.file_name)
            .finish_non_exhaustive()
    }
}

fn backend(what: &str, error: &JsErrorText) -> StorageError {
    js::storage_error(what, error.clone(), None, false)
}

fn corrupt(idb_name: &str, detail: &str) -> StorageError {
    StorageError::Corrupt {
        detail: format!("IndexedDB database {idb_name}: {detail}"),
        source: None,
    }
}

/// Opens a transaction on both stores: read-only without a durability, else read-write
/// asking for it (`"strict"`, `"relaxed"`; the options argument is not in web-sys's stable
/// API, so it is passed through JS).
fn transaction(
    db: &IdbDatabase,
    durability: Option<&'static str>,
) -> Result<IdbTransaction, JsErrorText> {
    let stores = Array::of2(&JsString::from(CHUNKS), &JsString::from(META));
    let Some(durability) = durability else {
        return db
            .transaction_with_str_sequence(&stores)
            .map_err(|error| JsErrorText::from_js(&error));
    };
    let options = Object::new();
    let open = || -> Result<IdbTransaction, JsValue> {
        Reflect::set(&options, &"durability".into(), &durability.into())?;
        let open: js_sys::Function = Reflect::get(db, &"transaction".into())?.dyn_into()?;
        open.call3(db, &stores, &"readwrite".into(), &options)?
            .dyn_into::<IdbTransaction>()
    };
    open().map_err(|error| JsErrorText::from_js(&error))
}

/// Opens (creating when new) IndexedDB database `idb_name` with its two stores.
async fn open_database(idb_name: &str) -> Result<IdbDatabase, JsErrorText> {
    let request = js::indexed_db()?
        .open(idb_name)
        .map_err(|error| JsErrorText::from_js(&error))?;
    let upgrade_request = request.clone();
    // Runs only when the database is new: its version goes from 0 to 1.
    let on_upgrade = Closure::<dyn FnMut(Event)>::new(move |_event: Event| {
        if let Ok(db) = upgrade_request.result() {
            let db: IdbDatabase = db.unchecked_into();
            // A failure here aborts the upgrade, which fails the open request.
            let _ = db.create_object_store(CHUNKS);
            let _ = db.create_object_store(META);
        }
    });
    request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let opened = Watched::new(&request).result().await;
    request.set_onupgradeneeded(None);
    Ok(opened?.unchecked_into())
}

/// Chunks read per request when loading: bounds the JS copies alive at once to 4 MiB.
const LOAD_BATCH: usize = 1024;

/// Reads the whole file held in `db`, in one readonly transaction.
async fn load(db: &IdbDatabase, idb_name: &str) -> Result<PagedFile, StorageError> {
    let what = format!("loading IndexedDB database {idb_name}");
    let js_failure = |error: JsErrorText| backend(&what, &error);
    let names = db.object_store_names();
    if !names.contains(CHUNKS) || !names.contains(META) {
        return Err(corrupt(
            idb_name,
            "not a Tidemark database (stores missing)",
        ));
    }
    let tx = transaction(db, None).map_err(js_failure)?;
    let completion = Completion::new(&tx);
    let issue = |request: Result<web_sys::IdbRequest, JsValue>| {
        request
            .map(|request| Watched::new(&request))
            .map_err(|error| js_failure(JsErrorText::from_js(&error)))
    };
    let chunks_store = tx
        .object_store(CHUNKS)
        .map_err(|error| js_failure(JsErrorText::from_js(&error)))?;
    let meta_store = tx
        .object_store(META)
        .map_err(|error| js_failure(JsErrorText::from_js(&error)))?;
    let meta = issue(meta_store.get(&META_KEY.into()))?;
    let stored = issue(chunks_store.count())?;
    let meta = meta.result().await.map_err(js_failure)?;
    let stored = stored.result().await.map_err(js_failure)?.as_f64();

    let (size, count) = if meta.is_undefined() {
        (0, 0)
    } else {
        let number = |field: &str| -> Option<u64> {
            let value = Reflect::get(&meta, &field.into()).ok()?.as_f64()?;
            // Exact integers only: f64 holds every size below 2^53.
            (value >= 0.0 && value.fract() == 0.0 && value < 9_007_199_254_740_992.0)
                .then_some(value as u64)
        };
        let layout = number("layout").ok_or_else(|| corrupt(idb_name, "meta has no layout"))?;
        if layout != LAYOUT_VERSION {
            return Err(StorageError::UnsupportedVersion {
                found: layout,
                supported: LAYOUT_VERSION,
            });
        }
        let size = number("size").ok_or_else(|| corrupt(idb_name, "meta has no size"))?;
        (size, chunk_count(size))
    };
    // Every chunk of the file and nothing else: one flush writes the chunks, the deletion
    // of those past the end and the size atomically.
    if stored != Some(count as f64) {
        return Err(corrupt(
            idb_name,
            &format!("{stored:?} chunks stored for a file of {size} bytes"),
        ));
    }
    let mut chunks = Vec::new();
    chunks
        .try_reserve_exact(count)
        .map_err(|_| out_of_memory(idb_name, size))?;
    while chunks.len() < count {
        let first = chunks.len();
        let end = (first + LOAD_BATCH).min(count);
        let range = IdbKeyRange::bound_with_lower_open_and_upper_open(
            &JsValue::from_f64(first as f64),
            &JsValue::from_f64(end as f64),
            false,
            true,
        );
        // Issued from the previous request's success, so the transaction is still active.
        let values: Array = issue(range.and_then(|range| chunks_store.get_all_with_key(&range)))?
            .result()
            .await
            .map_err(js_failure)?
            .unchecked_into();
        if values.length() as usize != end - first {
            return Err(corrupt(
                idb_name,
                &format!("chunks {first}..{end} hold {} records", values.length()),
            ));
        }
        for value in values.iter() {
            let index = chunks.len();
            let bytes = if let Some(array) = value.dyn_ref::<Uint8Array>() {
                array.clone()
            } else if let Some(buffer) = value.dyn_ref::<js_sys::ArrayBuffer>() {
                Uint8Array::new(buffer)
            } else {
                return Err(corrupt(idb_name, &format!("chunk {index} is not bytes")));
            };
            if bytes.length() as usize != CHUNK_SIZE {
                return Err(corrupt(
                    idb_name,
                    &format!("chunk {index} has {} bytes", bytes.length()),
                ));
            }
            let mut chunk = Vec::new();
            chunk
                .try_reserve_exact(CHUNK_SIZE)
                .map_err(|_| out_of_memory(idb_name, size))?;
            chunk.resize(CHUNK_SIZE, 0);
            bytes.copy_to(&mut chunk);
            chunks.push(chunk.into_boxed_slice());
        }
    }
    // Returning before the transaction ended would let a close right after (the owner's
    // drop) leave the connection open a moment longer, blocking a delete.
    completion.done().await.map_err(js_failure)?;
    Ok(PagedFile::loaded(chunks, size))
}

fn out_of_memory(idb_name: &str, size: u64) -> StorageError {
    StorageError::Backend {
        detail: format!(
            "IndexedDB database {idb_name}: no memory to hold its {size} bytes (the IndexedDB \
             file layer keeps the whole database in memory)"
        ),
        source: None,
    }
}

impl IdbFile {
    /// The name of the SQLite VFS serving these files.
    pub(crate) const VFS: &'static str = "tidemark-idb";

    /// Opens (creating if absent) IndexedDB database `idb_name`, loads every chunk into
    /// memory, and makes `file_name` openable by SQLite under VFS [`IdbFile::VFS`]
    /// (`Connection::open_with_flags_and_vfs`). A name already open in this context gives
    /// `InUse`; a newer layout gives `UnsupportedVersion`.
    pub(crate) async fn open(idb_name: &str, file_name: &str) -> Result<IdbFile, StorageError> {
        let files = vfs::files(Self::VFS).map_err(|detail| StorageError::Backend {
            detail,
            source: None,
        })?;
        let db = open_database(idb_name)
            .await
            .map_err(|error| backend(&format!("opening IndexedDB database {idb_name}"), &error))?;
        let file = match load(&db, idb_name).await {
            Ok(file) => Rc::new(RefCell::new(file)),
            Err(error) => {
                db.close();
                return Err(error);
            }
        };
        if !files.insert_database(file_name, file.clone()) {
            db.close();
            return Err(StorageError::InUse {
                detail: format!("database file {file_name} is already open in this context"),
            });
        }

        let status = Rc::new(Status::default());
        let on_versionchange = {
            let (db, status, idb_name) = (db.clone(), status.clone(), idb_name.to_owned());
            Closure::<dyn FnMut(Event)>::new(move |_event: Event| {
                // Close at once, so the other context's delete (or upgrade) is not blocked.
                db.close();
                status.gone.replace(Some(format!(
                    "IndexedDB database {idb_name} is being deleted (or upgraded) by another \
                     connection"
                )));
            })
        };
        let on_close = {
            let (status, idb_name) = (status.clone(), idb_name.to_owned());
            Closure::<dyn FnMut(Event)>::new(move |_event: Event| {
                status.gone.replace(Some(format!(
                    "the browser closed IndexedDB database {idb_name} (evicted, or site data \
                     cleared)"
                )));
            })
        };
        db.set_onversionchange(Some(on_versionchange.as_ref().unchecked_ref()));
        db.set_onclose(Some(on_close.as_ref().unchecked_ref()));

        Ok(IdbFile {
            idb_name: idb_name.to_owned(),
            file_name: file_name.to_owned(),
            db,
            file,
            files,
            status,
            durability: Cell::new(STRICT),
            _on_versionchange: on_versionchange,
            _on_close: on_close,
        })
    }

    /// Writes every chunk changed since the last flush, and the size, in ONE readwrite
    /// transaction asking for `durability: "strict"`; returns only after the transaction's
    /// `complete` event.
    ///
    /// On any failure the file goes back to its state at the last successful flush and the
    /// error is typed: `QuotaExceededError` gives `Full`, a database closed, deleted or
    /// evicted under us gives `Gone`, anything else `Backend` (with the JS error's name and
    /// message). After a failure every later flush fails (`Gone`/`Backend`) until the file
    /// is reopened.
    pub(crate) async fn flush(&self) -> Result<(), StorageError> {
        let what = format!("flush of IndexedDB database {}", self.idb_name);
        if self.status.closed.get() {
            return Err(StorageError::Backend {
                detail: format!("{what}: the file was closed"),
                source: None,
            });
        }
        if let Some(failure) = self.status.failed.borrow().clone() {
            let detail = format!("{what}: an earlier flush failed ({failure}); reopen the file");
            return Err(match self.gone() {
                Some(_) => StorageError::Gone {
                    detail,
                    source: None,
                },
                None => StorageError::Backend {
                    detail,
                    source: None,
                },
            });
        }
        if self.status.flushing.get() {
            return Err(StorageError::Backend {
                detail: format!("{what}: another flush is in progress"),
                source: None,
            });
        }
        if let Some(reason) = self.gone() {
            // Nothing can be written any more; what is not flushed is lost with the database.
            self.file.borrow_mut().revert();
            self.status.failed.replace(Some(reason.clone()));
            return Err(StorageError::Gone {
                detail: format!("{what}: {reason}"),
                source: None,
            });
        }
        if !self.file.borrow().is_dirty() {
            return Ok(());
        }

        let (writes, removed_from, pending) = {
            let mut file = self.file.borrow_mut();
            let writes: Vec<(usize, Uint8Array)> = file
                .dirty_chunks()
                .map(|(index, chunk)| (index, Uint8Array::from(chunk)))
                .collect();
            let removed_from = file.first_removed_chunk();
            (writes, removed_from, file.begin_flush())
        };
        self.status.flushing.set(true);
        let outcome = self.write(&writes, removed_from, pending.size()).await;
        self.status.flushing.set(false);
        let outcome = match outcome {
            Err(error) if self.gone().is_none() && error.name == "AbortError" => {
                // The browser closing the database aborts its transactions first and fires
                // `close` after: let that event arrive before classifying.
                js::sleep(0).await;
                Err(error)
            }
            other => other,
        };
        match outcome {
            Ok(()) => {
                self.file.borrow_mut().finish_flush(pending);
                Ok(())
            }
            Err(error) => {
                self.file.borrow_mut().fail_flush(pending);
                self.status.failed.replace(Some(error.to_string()));
                let gone = self.gone();
                Err(js::storage_error(
                    &what,
                    error,
                    gone.as_deref(),
                    self.status.closed.get(),
                ))
            }
        }
    }

    /// The flush's transaction: puts the chunks, deletes those past the end, puts the meta.
    async fn write(
        &self,
        writes: &[(usize, Uint8Array)],
        removed_from: Option<usize>,
        size: u64,
    ) -> Result<(), JsErrorText> {
        let tx = transaction(&self.db, Some(self.durability.get()))?;
        let completion = Completion::new(&tx);
        let requests = || -> Result<(), JsValue> {
            let chunks = tx.object_store(CHUNKS)?;
            for (index, bytes) in writes {
                chunks.put_with_key(bytes, &JsValue::from_f64(*index as f64))?;
            }
            if let Some(first) = removed_from {
                let past_the_end = IdbKeyRange::lower_bound(&JsValue::from_f64(first as f64))?;
                chunks.delete(&past_the_end)?;
            }
            let meta = Object::new();
            Reflect::set(
                &meta,
                &"layout".into(),
                &JsValue::from_f64(LAYOUT_VERSION as f64),
            )?;
            Reflect::set(&meta, &"size".into(), &JsValue::from_f64(size as f64))?;
            tx.object_store(META)?
                .put_with_key(&meta, &META_KEY.into())?;
            Ok(())
        };
        if let Err(error) = requests() {
            // Nothing of a half-issued transaction may land; its abort event is ignored.
            let _ = tx.abort();
            return Err(JsErrorText::from_js(&error));
        }
        #[cfg(test)]
        if self.status.abort_next_flush.replace(false) {
            let _ = tx.abort();
        }
        completion.done().await
    }

    /// Puts the file back to its last flushed state (for a batch SQLite rolled back, or
    /// before a reopen); while a flush is in flight, to the state that flush writes (if it
    /// fails, the file goes further back by itself). Call it between SQLite transactions,
    /// never inside one.
    pub(crate) fn revert(&self) {
        self.file.borrow_mut().revert();
    }

    /// Why the database is gone, if IndexedDB told us: a `versionchange` (a delete from any
    /// context; our connection is closed at once so the delete is not blocked), or a
    /// `close` event (eviction, site data cleared).
    pub(crate) fn gone(&self) -> Option<String> {
        self.status.gone.borrow().clone()
    }

    /// Closes the IndexedDB connection and removes the file from the VFS's map (called on
    /// the owner's drop). Unflushed changes are dropped. Idempotent.
    pub(crate) fn close(&self) {
        if self.status.closed.replace(true) {
            return;
        }
        // The handlers' closures go with this value: JS must not call them afterwards.
        self.db.set_onversionchange(None);
        self.db.set_onclose(None);
        self.db.close();
        self.files.remove_database(&self.file_name, &self.file);
    }

    /// Deletes IndexedDB database `idb_name`, awaiting its success. Connections open in
    /// other contexts that do not close within [`DELETE_GRACE_MS`] of the `blocked` event
    /// give `InUse` instead of a hang (the browser keeps the delete queued: it happens once
    /// they close).
    pub(crate) async fn delete(idb_name: &str) -> Result<(), StorageError> {
        let what = format!("deleting IndexedDB database {idb_name}");
        let request = js::indexed_db()
            .and_then(|factory| {
                factory
                    .delete_database(idb_name)
                    .map_err(|error| JsErrorText::from_js(&error))
            })
            .map_err(|error| backend(&what, &error))?;
        let outcome = Watched::new(&request).result();
        let blocked = js::blocked(&request);
        futures::pin_mut!(outcome);
        let outcome = match select(outcome, blocked).await {
            Either::Left((outcome, _)) => outcome,
            // `blocked` also fires while connections are still closing (their last
            // transactions finishing): give them a moment before calling it in use.
            Either::Right((_, outcome)) => {
                let grace = js::sleep(DELETE_GRACE_MS);
                futures::pin_mut!(grace);
                match select(outcome, grace).await {
                    Either::Left((outcome, _)) => outcome,
                    Either::Right(_) => {
                        return Err(StorageError::InUse {
                            detail: format!(
                                "{what}: connections in other contexts are open and did not                                  close; the delete happens once they do"
                            ),
                        });
                    }
                }
            }
        };
        request.set_onblocked(None);
        outcome.map(drop).map_err(|error| backend(&what, &error))
    }

    /// Makes later flushes ask for `relaxed` durability (complete once the write reached the
    /// OS, before it is flushed to disk) or, with `false`, `strict` again.
    pub(crate) fn set_relaxed(&self, relaxed: bool) {
        self.durability
            .set(if relaxed { "relaxed" } else { STRICT });
    }

    /// Bytes held in memory for this file (its chunks and the pre-images of changed ones).
    pub(crate) fn len(&self) -> u64 {
        self.file.borrow().memory_len()
    }

    /// The file's logical size in bytes.
    #[allow(dead_code, reason = "read by the layer's tests")]
    pub(crate) fn size(&self) -> u64 {
        self.file.borrow().size()
    }

    /// The IndexedDB database's name.
    #[allow(dead_code, reason = "read by the layer's tests")]
    pub(crate) fn idb_name(&self) -> &str {
        &self.idb_name
    }
}

/// Failures the tests provoke.
#[cfg(test)]
#[allow(
    dead_code,
    reason = "called by the integration tests, which compile this module"
)]
impl IdbFile {
    /// Makes the next flush abort its IndexedDB transaction after issuing its requests.
    pub(crate) fn abort_next_flush(&self) {
        self.status.abort_next_flush.set(true);
    }

    /// Closes the IndexedDB connection without telling the file, as the browser does
    /// before its `close` event arrives.
    pub(crate) fn close_connection_silently(&self) {
        self.db.close();
    }
}

impl Drop for IdbFile {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use js_sys::Reflect;
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::{open_database, transaction, STRICT};

    #[wasm_bindgen_test]
    async fn flush_transactions_ask_for_strict_durability() {
        let db = open_database("idb-durability").await.unwrap();
        let tx = transaction(&db, Some(STRICT)).unwrap();
        let durability = Reflect::get(&tx, &"durability".into()).unwrap();
        assert_eq!(durability.as_string().as_deref(), Some("strict"));
        let tx = transaction(&db, None).unwrap();
        assert_eq!(tx.mode().unwrap(), web_sys::IdbTransactionMode::Readonly);
        db.close();
    }
}
