//! `tidemark recover DB`: the way back from a damaged client store.
//!
//! A command of its own rather than a flag of `chat`: recovery needs no server, user or
//! token, changes files (so it should be asked for by name, not ride along with a chat
//! session), and an app's support script can run it alone. By default it acts only on a
//! store that is damaged (the checks `chat` runs, plus the full integrity check), so a
//! mistyped path cannot throw away a sound store's history; `--force` sets any store aside.

use std::path::{Path, PathBuf};

use tidemark_engine::{Storage, StorageError};
use tidemark_storage_sqlite::SqliteStorage;

use crate::error::{CliError, CliResult};

/// Arguments of `tidemark recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The client store to recover (the path `chat --db` was given).
    pub db: PathBuf,
    /// Set the store aside even if no damage is found (or it was written by a newer build).
    #[arg(long)]
    pub force: bool,
}

/// What the command tells a user to run when `db` is damaged.
pub fn advice(db: &Path) -> String {
    format!(
        "set it aside and start a fresh store (unsent messages are kept, the rest is synced \
         again from the server) with: tidemark recover {}",
        db.display()
    )
}

/// Runs `tidemark recover`.
pub async fn run(args: RecoverArgs) -> CliResult<()> {
    let db = &args.db;
    if !db.is_file() {
        return Err(CliError::new(format!(
            "{} does not exist or is not a file",
            db.display()
        )));
    }
    if !args.force {
        match damage(db).await {
            Damage::Found(problem) => println!("{} is damaged: {problem}", db.display()),
            Damage::None => {
                println!(
                    "{}: no damage found; nothing changed (pass --force to set it aside anyway)",
                    db.display()
                );
                return Ok(());
            }
            Damage::Refuse(why) => {
                return Err(CliError::new(format!(
                    "{} {why}; nothing changed (pass --force to set it aside anyway)",
                    db.display()
                )))
            }
        }
    }
    let report = tidemark_storage_sqlite::recover(db)
        .map_err(|e| CliError::new(format!("cannot recover {}: {e}", db.display())))?;
    println!("set aside: {}", report.set_aside.display());
    for moved in report.moved.iter().skip(1) {
        println!("  with: {}", moved.display());
    }
    println!("unsent messages kept: {}", report.outbox_salvaged);
    println!("unsent messages lost: {}", report.outbox_lost);
    if let Some(problem) = &report.salvage_problem {
        println!("salvage stopped early (more may be lost): {problem}");
    }
    println!(
        "fresh store: {} (the next `tidemark chat --db {}` syncs it from the server)",
        db.display(),
        db.display()
    );
    Ok(())
}

enum Damage {
    Found(String),
    None,
    /// Not damage, but not a store to replace either.
    Refuse(String),
}

/// Reads the store without changing it: the open checks, then the full integrity check.
async fn damage(db: &Path) -> Damage {
    let found = match SqliteStorage::open_read_only(db) {
        Ok(storage) => match storage.check_integrity().await {
            Ok(()) => return Damage::None,
            Err(e) => e,
        },
        Err(e) => e,
    };
    match found {
        StorageError::Corrupt { .. } => Damage::Found(found.to_string()),
        StorageError::UnsupportedVersion { .. } => Damage::Refuse(format!(
            "is not damaged but was written by a newer Tidemark ({found})"
        )),
        // A store that needs its schema created or upgraded is readable by `chat`.
        StorageError::ReadOnly { .. } => Damage::None,
        _ => Damage::Refuse(format!("cannot be checked ({found})")),
    }
}
