//! How rusqlite's errors become [`StorageError`]s.
//!
//! The mapping is by SQLite's primary result code, so extended codes (`SQLITE_READONLY_DBMOVED`,
//! `SQLITE_CORRUPT_INDEX`, ...) land with their family. The rusqlite error is kept as the
//! source of every variant that has one.

use rusqlite::ErrorCode;
use tidemark_engine::StorageError;

/// Maps an error outside a write batch (open, migrations, reads). Public as
/// [`crate::storage_error`] so a platform opening its own connection (the browser backend)
/// reports its errors exactly as this crate does.
pub fn storage_error(e: rusqlite::Error, doing: &str) -> StorageError {
    if let Some(code) = e.sqlite_error_code() {
        match code {
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                return StorageError::Corrupt {
                    detail: format!("{doing}: {e}"),
                    source: Some(Box::new(e)),
                };
            }
            ErrorCode::DiskFull => {
                return StorageError::Full {
                    source: Some(Box::new(e)),
                }
            }
            ErrorCode::ReadOnly => {
                return StorageError::ReadOnly {
                    source: Some(Box::new(e)),
                }
            }
            _ => {}
        }
    }
    match e {
        // A column of the wrong type, an integer out of range or text that is not UTF-8 can
        // only come from a damaged or foreign file: our writes never produce them (STRICT).
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => StorageError::Corrupt {
            detail: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        },
        e => StorageError::Backend {
            detail: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        },
    }
}

/// Maps an error while applying a write batch: a constraint violation means the batch broke
/// a rule (two rows at one seq, say), which the trait reports as
/// [`StorageError::Rejected`]. That variant has no source field, so the SQLite message goes
/// into its text.
pub(crate) fn batch_error(e: rusqlite::Error) -> StorageError {
    if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
        return StorageError::Rejected(format!("constraint violated: {e}"));
    }
    storage_error(e, "applying a write batch")
}

/// A damaged value found while decoding a row.
pub(crate) fn corrupt(detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        detail: detail.into(),
        source: None,
    }
}
