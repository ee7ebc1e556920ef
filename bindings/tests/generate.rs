//! The generator built from the pinned uniffi turns the library `cargo test` just built into
//! Python, Kotlin and Swift, and each names every type and function of the foreign API. (The
//! behaviour is tested from Python: bindings/tests/python, scripts/python-bindings-tests.sh.)
//!
//! Having an integration test also makes `cargo test` build the `uniffi-bindgen` binary and
//! the cdylib (`target/debug/uniffi-bindgen`, `target/debug/deps/libtidemark_ffi.so`), which
//! scripts/check.sh's Python stage reuses.

#![allow(clippy::unwrap_used, reason = "a test: a panic is the failure report")]

use std::path::PathBuf;
use std::process::Command;

/// The cdylib this build made. `cargo test` leaves it in `deps/` beside the bindgen binary's
/// directory (it copies only binaries up); `cargo build` copies it up too, so `deps/` holds
/// the newest either way.
fn library() -> PathBuf {
    let bindgen = PathBuf::from(env!("CARGO_BIN_EXE_uniffi-bindgen"));
    let dir = bindgen.parent().unwrap();
    let name = format!(
        "{}tidemark_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let lib = dir.join("deps").join(&name);
    assert!(lib.is_file(), "no cdylib at {}", lib.display());
    lib
}

/// Every type the foreign side sees.
const TYPES: &[&str] = &[
    "Store",
    "RecoveryReport",
    "TidemarkClient",
    "ClientListener",
    "ClientConfig",
    "ClientEvent",
    "TidemarkError",
    "Message",
    "MessageStatus",
    "ContentKind",
    "Conversation",
    "ConversationCursor",
    "ConversationKind",
    "LatestMessage",
    "Direction",
    "ConnectionState",
    "SyncState",
    "SyncPolicy",
    "HistoryLoaded",
    "SeqRange",
    "ServerError",
    "MessageChange",
    "Containment",
];

/// Every function and client method, in snake case (Python) and camel case (Kotlin, Swift).
const FUNCTIONS: &[(&str, &str)] = &[
    ("open_store", "openStore"),
    ("start_client", "startClient"),
    ("recover_store", "recoverStore"),
    ("path", "path"),
    ("on_event", "onEvent"),
    ("send_text", "sendText"),
    ("send_message", "sendMessage"),
    ("edit", "edit"),
    ("revoke", "revoke"),
    ("mark_read", "markRead"),
    ("retry", "retry"),
    ("cancel", "cancel"),
    ("load_history", "loadHistory"),
    ("shutdown", "shutdown"),
    ("set_token", "setToken"),
    ("is_closed", "isClosed"),
    ("user_id", "userId"),
    ("conversations", "conversations"),
    ("conversation", "conversation"),
    ("messages", "messages"),
    ("message", "message"),
    ("own_message", "ownMessage"),
    ("unsent_messages", "unsentMessages"),
    ("total_unread", "totalUnread"),
    ("pending_sends", "pendingSends"),
    ("connection_state", "connectionState"),
    ("sync_state", "syncState"),
];

#[test]
fn python_kotlin_and_swift_name_the_whole_api() {
    let lib = library();
    let out = tempfile::tempdir().unwrap();
    for (language, file) in [
        ("python", "tidemark_ffi.py"),
        ("kotlin", "uniffi/tidemark_ffi/tidemark_ffi.kt"),
        ("swift", "tidemark_ffi.swift"),
    ] {
        let dir = out.path().join(language);
        let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
            .args(["generate", "--library"])
            .arg(&lib)
            .args(["--language", language, "--out-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "uniffi-bindgen {language}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let code = std::fs::read_to_string(dir.join(file)).unwrap();
        for name in TYPES {
            assert!(code.contains(name), "{language} lacks {name}");
        }
        for (snake, camel) in FUNCTIONS {
            let declared = match language {
                "python" => format!("def {snake}("),
                "kotlin" => format!("fun `{camel}`("),
                _ => format!("func {camel}("),
            };
            assert!(code.contains(&declared), "{language} lacks {declared}");
        }
    }
}
