//! The `tidemark-idb` SQLite VFS: main database files are the in-memory [`PagedFile`]s that
//! [`super::IdbFile`] loads from and flushes to IndexedDB; journals and temporary files live
//! in memory only (a crash loses them, which is right: only flushed states are durable).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use rsqlite_vfs::{
    AccessMode, FileKind, LockLevel, MemChunksFile, OpenAccess, OpenOptions, OpenRequest,
    OpenedFile, SQLiteIoMethods, SQLiteVfs, SyncOptions, VfsError, VfsErrorCode, VfsFile,
    VfsResult, VfsStore,
};
use sqlite_wasm_rs::WasmOsCallback;

use super::pages::PagedFile;

/// The files SQLite can open through the VFS in this JS context.
#[derive(Default)]
pub(crate) struct Files {
    /// Main database files, put here by `IdbFile::open` and removed by its `close`.
    databases: RefCell<HashMap<String, Rc<RefCell<PagedFile>>>>,
    /// Journals and other named side files, never persisted.
    side_files: RefCell<HashMap<String, Rc<RefCell<MemChunksFile>>>>,
    /// The last failure, for SQLite's `xGetLastError`.
    last_error: RefCell<Option<VfsError>>,
}

impl Files {
    /// Makes `file` openable as the main database `name`; false if the name is taken.
    pub(crate) fn insert_database(&self, name: &str, file: Rc<RefCell<PagedFile>>) -> bool {
        let mut databases = self.databases.borrow_mut();
        if databases.contains_key(name) {
            return false;
        }
        databases.insert(name.to_owned(), file);
        true
    }

    /// Forgets the main database `name` if it is still `file` (not a later replacement),
    /// with its side files.
    pub(crate) fn remove_database(&self, name: &str, file: &Rc<RefCell<PagedFile>>) {
        let mut databases = self.databases.borrow_mut();
        if databases
            .get(name)
            .is_some_and(|current| Rc::ptr_eq(current, file))
        {
            databases.remove(name);
            let prefix = format!("{name}-");
            self.side_files
                .borrow_mut()
                .retain(|side, _| !side.starts_with(&prefix));
        }
    }
}

/// The VFS's app data: the files, and the host's clock and randomness.
#[derive(Clone)]
pub(crate) struct AppData {
    files: Rc<Files>,
    os: Rc<WasmOsCallback>,
}

/// One SQLite handle on a file.
pub(crate) enum Handle {
    Database(Rc<RefCell<PagedFile>>),
    Side(Rc<RefCell<MemChunksFile>>),
}

impl VfsFile for Handle {
    fn read(&mut self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        match self {
            Self::Database(file) => Ok(file.borrow().read(buf, offset)),
            Self::Side(file) => file.borrow_mut().read(buf, offset),
        }
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> VfsResult<()> {
        match self {
            Self::Database(file) => file.borrow_mut().write(buf, offset),
            Self::Side(file) => file.borrow_mut().write(buf, offset),
        }
    }

    fn truncate(&mut self, size: u64) -> VfsResult<()> {
        match self {
            Self::Database(file) => file.borrow_mut().truncate(size),
            Self::Side(file) => file.borrow_mut().truncate(size),
        }
    }

    // Durability comes from `IdbFile::flush`, which the store awaits after each commit:
    // SQLite's sync has nothing to wait for.
    fn sync(&mut self, _options: SyncOptions) -> VfsResult<()> {
        Ok(())
    }

    fn size(&self) -> VfsResult<u64> {
        match self {
            Self::Database(file) => Ok(file.borrow().size()),
            Self::Side(file) => file.borrow().size(),
        }
    }

    // One connection per database per context (the store's owner, chosen with Web Locks
    // across contexts): there is nobody to lock against.
    fn lock(&mut self, _level: LockLevel) -> VfsResult<()> {
        Ok(())
    }

    fn unlock(&mut self, _level: LockLevel) -> VfsResult<()> {
        Ok(())
    }

    fn check_reserved_lock(&self) -> VfsResult<bool> {
        Ok(false)
    }
}

/// The VFS's file namespace.
pub(crate) struct Store;

fn cant_open(message: String) -> VfsError {
    VfsError::new(VfsErrorCode::CantOpen, message.into())
}

impl VfsStore for Store {
    type File = Handle;
    type AppData = AppData;

    fn record_error(data: &AppData, error: VfsError) {
        data.files.last_error.replace(Some(error));
    }

    fn last_error(data: &AppData) -> Option<VfsError> {
        data.files.last_error.borrow().clone()
    }

    fn open_file(data: &AppData, request: OpenRequest<'_>) -> VfsResult<OpenedFile<Handle>> {
        let options = request.options;
        let Some(filename) = request.filename else {
            // An anonymous temporary file.
            return Ok(OpenedFile {
                file: Handle::Side(Rc::default()),
                access: OpenAccess::ReadWrite,
            });
        };
        let name = filename.path();
        if options.kind() == Some(FileKind::MainDb) {
            // A database exists here only once IdbFile::open loaded it from IndexedDB.
            let database = data.files.databases.borrow().get(name).cloned();
            return match database {
                Some(file) if !options.exclusive() => Ok(OpenedFile {
                    file: Handle::Database(file),
                    access: options.access(),
                }),
                Some(_) => Err(cant_open(format!("database already exists: {name:?}"))),
                None => Err(cant_open(format!(
                    "database {name:?} is not loaded: open it with IdbFile::open first"
                ))),
            };
        }
        let mut side_files = data.files.side_files.borrow_mut();
        let file = match side_files.get(name) {
            Some(_) if options.exclusive() => {
                return Err(cant_open(format!("file already exists: {name:?}")));
            }
            Some(file) => file.clone(),
            None if options.create() => {
                let file = Rc::new(RefCell::new(MemChunksFile::default()));
                side_files.insert(name.to_owned(), file.clone());
                file
            }
            None => return Err(cant_open(format!("file not found: {name:?}"))),
        };
        Ok(OpenedFile {
            file: Handle::Side(file),
            access: options.access(),
        })
    }

    fn close_file(
        data: &AppData,
        name: Option<&str>,
        file: Handle,
        options: OpenOptions,
    ) -> VfsResult<()> {
        if let (Some(name), Handle::Side(file), true) = (name, &file, options.delete_on_close()) {
            let mut side_files = data.files.side_files.borrow_mut();
            if side_files
                .get(name)
                .is_some_and(|current| Rc::ptr_eq(current, file))
            {
                side_files.remove(name);
            }
        }
        Ok(())
    }

    fn access(data: &AppData, name: &str, _mode: AccessMode) -> VfsResult<bool> {
        Ok(data.files.databases.borrow().contains_key(name)
            || data.files.side_files.borrow().contains_key(name))
    }

    fn full_pathname(_data: &AppData, name: &str) -> VfsResult<String> {
        // A flat namespace: names are the caller's.
        Ok(name.to_owned())
    }

    fn delete_file(data: &AppData, name: &str, _sync_dir: bool) -> VfsResult<()> {
        if data.files.side_files.borrow_mut().remove(name).is_some() {
            return Ok(());
        }
        if data.files.databases.borrow().contains_key(name) {
            // The database is deleted with IdbFile::delete, never by SQLite.
            return Err(VfsError::new(
                VfsErrorCode::IoDelete,
                format!("database {name:?} is deleted through IndexedDB, not SQLite").into(),
            ));
        }
        Err(VfsError::new(
            VfsErrorCode::IoDeleteNoEntry,
            format!("file not found: {name:?}").into(),
        ))
    }
}

/// The I/O methods: rsqlite-vfs's defaults over [`Store`].
pub(crate) struct IoMethods;

impl SQLiteIoMethods for IoMethods {
    type Store = Store;
}

/// The VFS: rsqlite-vfs's defaults over [`Store`], with the host's services.
pub(crate) struct Vfs;

impl SQLiteVfs<IoMethods> for Vfs {
    type Os = WasmOsCallback;

    fn os(data: &AppData) -> &WasmOsCallback {
        &data.os
    }
}

thread_local! {
    /// The registration of this JS context (each worker has its own SQLite and VFS list).
    static REGISTERED: OnceCell<Result<Rc<Files>, String>> = const { OnceCell::new() };
}

/// Registers the VFS in this context on first use and returns its files.
pub(crate) fn files(vfs_name: &str) -> Result<Rc<Files>, String> {
    REGISTERED.with(|registered| {
        registered
            .get_or_init(|| {
                let files = Rc::new(Files::default());
                let data = AppData {
                    files: files.clone(),
                    os: Rc::new(WasmOsCallback),
                };
                register(vfs_name, data).map(|()| files)
            })
            .clone()
    })
}

#[allow(unsafe_code, reason = "registering a SQLite VFS is an FFI call")]
fn register(vfs_name: &str, data: AppData) -> Result<(), String> {
    // SAFETY: `IoMethods` and `Vfs` are rsqlite-vfs's default callbacks over one store,
    // so versions, file layout and app data type agree. wasm32 here is single-threaded
    // and this runs once per JS context (the thread_local OnceCell above), with no await
    // between the name check and the registration. The registration is kept for the
    // context's lifetime (`into_raw`), so the app data outlives every open file.
    let registration =
        unsafe { rsqlite_vfs::register_vfs::<IoMethods, Vfs>(vfs_name, data, false) }
            .map_err(|error| format!("registering SQLite VFS {vfs_name}: {error}"))?;
    let _ = registration.into_raw();
    Ok(())
}
