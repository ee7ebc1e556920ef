//! `tidemark chat` driven through stdin against a running `tidemark server`: a message sent
//! by one chat reaches another.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");
const WAIT: Duration = Duration::from_secs(60);

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
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

/// Waits for a line containing `needle`; returns every line seen so far.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no line with {needle:?}; saw:\n{}", seen.join("\n"));
}

fn admin(db: &Path, args: &[&str]) -> String {
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

fn write(stdin: &mut ChildStdin, text: &str) {
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

#[test]
fn a_message_sent_from_a_piped_chat_reaches_another_chat() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let alice_token = admin(&db, &["create-user", "alice"]);
    let bob_token = admin(&db, &["create-user", "bob"]);
    assert_eq!(alice_token.len(), 64, "{alice_token}");
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

    let mut server = Running(
        Command::new(BIN)
            .args(["server", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let server_lines = lines_of(&mut server.0);
    let first = server_lines.recv_timeout(WAIT).unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let chat = |user: &str, token: &str| {
        Command::new(BIN)
            .args([
                "chat", "--url", &url, "--user", user, "--device", "d1", "--token", token,
            ])
            .arg("--db")
            .arg(dir.path().join(format!("{user}.db")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Bob listens with the conversation open.
    let mut bob = Running(chat("bob", &bob_token));
    let bob_lines = lines_of(&mut bob.0);
    let mut bob_stdin = bob.0.stdin.take().unwrap();
    write(&mut bob_stdin, "/wait\n/open ab\n");
    let mut bob_seen = Vec::new();
    wait_for(&bob_lines, "== ab", &mut bob_seen);

    // Alice's whole session is a pipe: it ends at end of input, after the send is acked.
    let mut alice = chat("alice", &alice_token);
    let mut alice_stdin = alice.stdin.take().unwrap();
    write(
        &mut alice_stdin,
        "/wait\n/list\n/open ab\nhello from alice\n/read\n",
    );
    drop(alice_stdin);
    let out = alice.wait_with_output().unwrap();
    let alice_out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "alice's chat failed:\n{alice_out}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alice_out.contains("* connected"), "{alice_out}");
    assert!(alice_out.contains("== ab"), "{alice_out}");
    assert!(alice_out.contains("* sent "), "{alice_out}");
    assert!(alice_out.contains("as #1 in ab"), "{alice_out}");

    // Bob's chat printed it as a new message of the open conversation.
    wait_for(&bob_lines, "alice: hello from alice", &mut bob_seen);
    assert!(
        bob_seen
            .iter()
            .any(|l| l.contains("[ab] #1 alice: hello from alice")),
        "{bob_seen:?}"
    );
    write(&mut bob_stdin, "/list\n/quit\n");
    wait_for(&bob_lines, "bye", &mut bob_seen);
    let status = bob.0.wait().unwrap();
    assert!(status.success());
    // Bob's list shows the conversation with the message unread.
    assert!(
        bob_seen
            .iter()
            .any(|l| l.contains("ab") && l.contains("unread    1")),
        "{bob_seen:?}"
    );
}
