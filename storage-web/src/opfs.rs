//! The OPFS file layer: SQLite on the access-handle pool VFS of sqlite-wasm-vfs (`sahpool`).
//!
//! Each database gets a pool of its own (its own OPFS directory and VFS name), so two tabs can
//! own two different databases: a pool holds synchronous access handles on every file of its
//! directory, and the browser lets only one context hold those. Sync access handles exist only
//! in dedicated workers. Each COMMIT is written through the handles and flushed before it
//! returns (with `synchronous=FULL`), so a committed batch is durable when `apply` returns; a
//! quota error in a write becomes `SQLITE_FULL`, which the SQL layer reports as
//! [`StorageError::Full`] with the batch rolled back.

use rsqlite_vfs::VfsFilesManager;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use js_sys::{Array, Function, Promise, Reflect};
use rusqlite::{Connection, OpenFlags};
use sqlite_wasm_rs::WasmOsCallback;
use sqlite_wasm_vfs::sahpool::{
    self, OpfsSAHError, OpfsSAHPoolCfg, OpfsSAHPoolCfgBuilder, OpfsSAHPoolUtil,
};
use tidemark_engine::StorageError;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::JsErrorText;

/// The OPFS directory holding every database's pool directory.
const ROOT: &str = "tidemark";

/// How long an opener that holds the lock waits for a departed owner's access handles:
/// 40 polls of 50 ms (the release was measured at tens of ms after a page closed).
const HANDLE_RELEASE_ATTEMPTS: u32 = 40;
const HANDLE_RELEASE_POLL_MS: u32 = 50;

/// The SQLite file inside a database's pool.
const FILE: &str = "/tidemark.db";

/// Slots each pool holds: the database, its journal and one spare. Temporary files never
/// reach the pool (`temp_store=MEMORY`).
const POOL_SLOTS: usize = 3;

thread_local! {
    /// Databases whose pool this worker installed (a pool stays registered, paused, after
    /// its store closed).
    static INSTALLED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Databases whose directory vanished under this worker's pool: that pool's handles
    /// point at deleted files, and it cannot be taken again here.
    static VANISHED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// The origin's OPFS root, asked for once: `directory_exists` runs after every commit.
    static OPFS_ROOT: RefCell<Option<JsValue>> = const { RefCell::new(None) };
}

/// One database's pool, paused (its access handles released) when dropped.
pub(crate) struct OpfsPool {
    util: OpfsSAHPoolUtil,
    name: String,
    /// The pool's directory was found deleted: its handles are not paused (Chromium's
    /// `close` of an access handle on a deleted file never returns).
    vanished: Cell<bool>,
}

impl std::fmt::Debug for OpfsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpfsPool").finish_non_exhaustive()
    }
}

impl OpfsPool {
    /// Takes (installs or resumes) database `name`'s pool. The caller holds its owner lock.
    pub(crate) async fn take(name: &str) -> Result<Self, StorageError> {
        if VANISHED.with(|v| v.borrow().contains(name)) {
            return Err(vanished(name));
        }
        // A pool installed before, now paused, must still have its directory: resuming it
        // over a deleted one would serve stale handles.
        if INSTALLED.with(|i| i.borrow().contains(name)) && !directory_exists(name).await? {
            VANISHED.with(|v| v.borrow_mut().insert(name.to_owned()));
            return Err(vanished(name));
        }
        let vfs = vfs_name(name);
        let config = OpfsSAHPoolCfgBuilder::new()
            .vfs_name(&vfs)
            .directory(&format!("{ROOT}/{name}"))
            .initial_capacity(POOL_SLOTS)
            .build();
        // We hold the database's Web Lock, so a context still holding the files' access
        // handles is one that let the lock go and is going away (a reloaded or closed tab):
        // the browser releases its handles a moment after its lock. Wait for that, briefly.
        let mut attempts = 0;
        let util = loop {
            match install_or_resume(&config).await {
                Err(StorageError::InUse { .. }) if attempts < HANDLE_RELEASE_ATTEMPTS => {
                    attempts += 1;
                    crate::idb::js::sleep(HANDLE_RELEASE_POLL_MS).await;
                }
                result => break result?,
            }
        };
        INSTALLED.with(|i| i.borrow_mut().insert(name.to_owned()));
        Ok(Self {
            util,
            name: name.to_owned(),
            vanished: Cell::new(false),
        })
    }

    /// Fails with [`StorageError::Gone`] once the pool's directory is no longer in OPFS
    /// (the site's data cleared, or evicted): the browser deletes the files under the open
    /// access handles, and writes to them still succeed, into nothing. So the store asks
    /// after each commit.
    pub(crate) async fn check_present(&self) -> Result<(), StorageError> {
        if !self.vanished.get() && directory_exists(&self.name).await? {
            return Ok(());
        }
        self.vanished.set(true);
        VANISHED.with(|v| v.borrow_mut().insert(self.name.clone()));
        Err(vanished(&self.name))
    }

    /// Opens the database file in this pool, creating it if absent.
    pub(crate) fn connect(&self, name: &str) -> Result<Connection, StorageError> {
        Connection::open_with_flags_and_vfs(
            FILE,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            vfs_name(name).as_str(),
        )
        .map_err(|e| tidemark_storage_sqlite::storage_error(e, "opening the database in OPFS"))
    }

    /// Removes every file of the pool (the database and its journal). Its connections must
    /// be closed. The pool's empty slot files stay (a few KiB).
    pub(crate) fn clear(&self) -> Result<(), StorageError> {
        self.util
            .clear()
            .map_err(|e| pool_error("deleting the database from OPFS", e))
    }
}

/// Installs (or takes back, paused) the pool of `config`.
async fn install_or_resume(config: &OpfsSAHPoolCfg) -> Result<OpfsSAHPoolUtil, StorageError> {
    let util = sahpool::install::<WasmOsCallback>(config, false)
        .await
        .map_err(|e| pool_error("opening the OPFS pool", e))?;
    // A pool this worker used before is kept registered but paused: take its handles back.
    if util.is_paused() {
        util.resume()
            .await
            .map_err(|e| pool_error("resuming the OPFS pool", e))?;
    }
    Ok(util)
}

impl Drop for OpfsPool {
    fn drop(&mut self) {
        if self.vanished.get() {
            // Closing handles on deleted files hangs the worker: leave them to its end.
            return;
        }
        // Releases the access handles so another tab or worker can take the pool once it
        // holds the owner lock. Fails only with a file still open, which the owner closed
        // before (the connection is dropped first); then the handles stay until this worker
        // ends, and the owner lock still keeps writers apart.
        let _ = self.util.pause();
    }
}

/// Whether database `name`'s pool directory exists in this origin's OPFS.
async fn directory_exists(name: &str) -> Result<bool, StorageError> {
    let failed = |e: JsValue| StorageError::Backend {
        detail: format!(
            "looking for the OPFS directory of database {name}: {}",
            JsErrorText::from_js(&e)
        ),
        source: None,
    };
    let mut directory = match OPFS_ROOT.with(|root| root.borrow().clone()) {
        Some(root) => root,
        None => {
            let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).map_err(failed)?;
            let storage = Reflect::get(&navigator, &"storage".into()).map_err(failed)?;
            let root = call_async(&storage, "getDirectory", &[])
                .await
                .map_err(failed)?;
            OPFS_ROOT.with(|cached| *cached.borrow_mut() = Some(root.clone()));
            root
        }
    };
    for part in [ROOT, name] {
        match call_async(&directory, "getDirectoryHandle", &[part.into()]).await {
            Ok(child) => directory = child,
            Err(e) if JsErrorText::from_js(&e).name == "NotFoundError" => return Ok(false),
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(true)
}

/// Calls `target.method(...args)` and awaits the promise it returns.
async fn call_async(target: &JsValue, method: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let function: Function = Reflect::get(target, &method.into())?.dyn_into()?;
    let promise = function.apply(target, &args.iter().collect::<Array>())?;
    JsFuture::from(Promise::from(promise)).await
}

fn vanished(name: &str) -> StorageError {
    StorageError::Gone {
        detail: format!(
            "the OPFS directory of database {name} was deleted (site data cleared or \
             evicted); it opens again, empty, once the browser released the deleted files' \
             handles (Chromium: in its next session)"
        ),
        source: None,
    }
}

fn vfs_name(name: &str) -> String {
    format!("tidemark-opfs-{name}")
}

/// Maps the pool's errors: no OPFS here (not a dedicated worker, not a secure context) and
/// handles held by another context are their own cases; the rest keeps its text.
fn pool_error(doing: &str, e: OpfsSAHError) -> StorageError {
    match e {
        OpfsSAHError::Opfs { ref message, .. }
            if message.contains("NoModificationAllowedError") =>
        {
            StorageError::InUse {
                detail: format!("{doing}: another context holds the files ({e})"),
            }
        }
        e => StorageError::Backend {
            detail: format!("{doing}: {e}"),
            source: None,
        },
    }
}
