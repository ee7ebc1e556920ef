//! Helpers for tests that run the built `tidemark` binary against `tidemark server`.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_tidemark");
pub const WAIT: Duration = Duration::from_secs(60);

/// Kills the process when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read on a thread.
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `tidemark server ARGS --db DB`; its stdout, trimmed.
pub fn admin(db: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("server")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "server {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A running `tidemark server` with alice and bob sharing the direct conversation `ab`.
pub struct Server {
    pub url: String,
    pub alice: String,
    pub bob: String,
    _process: Running,
}

impl Server {
    pub fn start(dir: &Path) -> Self {
        let db = dir.join("server.db");
        let alice = admin(&db, &["create-user", "alice"]);
        let bob = admin(&db, &["create-user", "bob"]);
        admin(
            &db,
            &[
                "create-conversation",
                "ab",
                "--kind",
                "direct",
                "alice",
                "bob",
            ],
        );
        let mut process = Running(
            Command::new(BIN)
                .args(["server", "serve", "--listen", "127.0.0.1:0", "--db"])
                .arg(&db)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = lines_of(&mut process.0);
        let first = lines.recv_timeout(WAIT).unwrap();
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        Self {
            url,
            alice,
            bob,
            _process: process,
        }
    }

    /// A whole `chat` session as `user` on `db` with `input` piped in; waits for its end.
    pub fn chat(&self, user: &str, db: &Path, input: &str) -> Output {
        let token = match user {
            "alice" => &self.alice,
            _ => &self.bob,
        };
        let mut child = Command::new(BIN)
            .args([
                "chat", "--url", &self.url, "--user", user, "--device", "d1", "--token", token,
            ])
            .arg("--db")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A chat that refuses its store exits before reading: a broken pipe is fine.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().unwrap()
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
