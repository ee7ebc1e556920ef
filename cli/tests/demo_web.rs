//! `tidemark demo --web`: the page's HTTP server, the demo login, a native client syncing
//! with a token from it, and a restart on the same store and ports.
//!
//! Every test builds its own tiny web root in a temporary directory: the real page and
//! package are not needed (nor built) here.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{lines_of, Running, BIN, WAIT};
use tidemark::storage::MemoryStorage;
use tidemark::{Client, DeviceId, EngineConfig, Event, TokioRuntime, UserId};
use tidemark_transport::native::WsTransport;

const CONVERSATIONS: usize = 7;
const MESSAGES: usize = 30;

/// A web root with a page, a package and a wasm, plus files beside the roots that a path
/// escaping them would reach.
fn web_root(dir: &Path, with_wasm: bool) -> PathBuf {
    let root = dir.join("web");
    std::fs::create_dir_all(root.join("demo")).unwrap();
    std::fs::create_dir_all(root.join("package/wasm")).unwrap();
    std::fs::write(root.join("demo/index.html"), "<!doctype html><p>page</p>").unwrap();
    std::fs::write(root.join("package/index.js"), "export const x = 1;").unwrap();
    if with_wasm {
        std::fs::write(root.join("package/wasm/x.wasm"), b"\0asm\x01\0\0\0").unwrap();
    }
    std::fs::write(root.join("Cargo.toml"), "secret").unwrap();
    std::fs::write(root.join("x"), "secret").unwrap();
    std::fs::write(dir.join("x"), "secret").unwrap();
    root
}

/// A running `tidemark demo --web` and the addresses from its ready line.
struct Demo {
    http: String,
    server: String,
    /// What it printed before the ready line.
    before_ready: Vec<String>,
    lines: mpsc::Receiver<String>,
    process: Running,
}

impl Demo {
    fn start(dir: &Path, root: &Path, http_port: u16, ws_port: u16) -> Self {
        let mut process = Running(
            Command::new(BIN)
                .args(["demo", "--web", "--dir"])
                .arg(dir)
                .arg("--web-root")
                .arg(root)
                .args(["--http-port", &http_port.to_string()])
                .args(["--ws-port", &ws_port.to_string()])
                .args(["--conversations", &CONVERSATIONS.to_string()])
                .args(["--messages", &MESSAGES.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = lines_of(&mut process.0);
        let mut before_ready = Vec::new();
        loop {
            let line = lines.recv_timeout(WAIT).unwrap();
            if let Some(json) = line.strip_prefix("tidemark-web-demo ready ") {
                let ready: serde_json::Value = serde_json::from_str(json).unwrap();
                return Self {
                    http: ready["http"].as_str().unwrap().to_owned(),
                    server: ready["server"].as_str().unwrap().to_owned(),
                    before_ready,
                    lines,
                    process,
                };
            }
            before_ready.push(line);
        }
    }

    fn port_of(url: &str) -> u16 {
        url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGTERM, then waits for a clean exit; returns what it printed after the ready line.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.process.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        let exit = loop {
            if let Some(exit) = self.process.0.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.success(), "exit after SIGTERM: {exit}");
        self.lines.try_iter().collect()
    }

    /// One raw request; (status, head, body).
    fn request(&self, raw: &[u8]) -> (u16, String, Vec<u8>) {
        let addr = self.http.strip_prefix("http://").unwrap();
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        // The server may answer (and close) before reading all of an oversized request.
        let _ = tcp.write_all(raw);
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).unwrap();
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&response)));
        let head = String::from_utf8(response[..end].to_vec()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head, response[end + 4..].to_vec())
    }

    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
    }

    fn json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, head, body) = self.get(path);
        assert!(
            head.contains("Content-Type: application/json"),
            "{path}: {head}"
        );
        (status, serde_json::from_slice(&body).unwrap())
    }
}

/// The head's Content-Type.
fn content_type(head: &str) -> &str {
    head.lines()
        .find_map(|line| line.strip_prefix("Content-Type: "))
        .unwrap_or_default()
}

/// Syncs alice into a fresh memory store with `token`; (conversations, sum of their max
/// seqs).
fn sync_alice(url: &str, token: &str) -> (usize, u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (me, device) = (UserId::from("alice"), DeviceId::from("test"));
        let transport = WsTransport::new(url.to_owned(), me.clone(), device.clone(), token);
        let (client, driver) = Client::start(
            EngineConfig::new(me, device),
            MemoryStorage::new(),
            transport,
            TokioRuntime,
        )
        .await
        .unwrap();
        let mut events = client.events();
        tokio::spawn(driver);
        tokio::time::timeout(WAIT, async {
            while let Some(event) = events.next().await {
                if matches!(event, Event::SyncFinished) {
                    return;
                }
            }
            panic!("the client stopped before the sync finished");
        })
        .await
        .expect("the sync did not finish");
        let conversations = client.conversations(None, 10_000).await.unwrap();
        client.shutdown().await;
        let seqs = conversations.iter().map(|c| c.server_max_seq.0).sum();
        (conversations.len(), seqs)
    })
}

#[test]
fn serves_the_page_logs_in_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = web_root(dir.path(), true);
    let store = dir.path().join("store");
    let demo = Demo::start(&store, &root, 0, 0);
    assert!(
        demo.before_ready
            .iter()
            .any(|l| l.contains("seeded") && l.contains(&format!("{MESSAGES} messages"))),
        "{:?}",
        demo.before_ready
    );
    assert!(demo
        .before_ready
        .iter()
        .any(|l| l == &format!("open {}/", demo.http)));

    // Static files, with their types.
    let (status, head, body) = demo.get("/");
    assert_eq!(status, 200);
    assert_eq!(content_type(&head), "text/html; charset=utf-8");
    assert!(head.contains("Cache-Control: no-cache"));
    assert_eq!(body, b"<!doctype html><p>page</p>");
    assert_eq!(demo.get("/index.html").0, 200);
    let (status, head, body) = demo.get("/tidemark/index.js");
    assert_eq!(status, 200);
    assert_eq!(content_type(&head), "text/javascript; charset=utf-8");
    assert_eq!(body, b"export const x = 1;");
    let (status, head, _) = demo.get("/tidemark/wasm/x.wasm");
    assert_eq!(status, 200);
    assert_eq!(content_type(&head), "application/wasm");
    // HEAD: the head without the body.
    let (status, head, body) = demo.request(b"HEAD /tidemark/index.js HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length: 19"), "{head}");
    assert!(body.is_empty());

    // Nothing outside the roots, however the path is spelled.
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/x",
        "/%2E%2E%2Fx",
        "/tidemark/../../x",
        "/tidemark/%2e%2e/%2e%2e/x",
        "/tidemark/..%2f..%2fx",
        "//etc/passwd",
        "/%2fetc/passwd",
        "/missing.html",
        "/tidemark/missing.js",
    ] {
        let (status, _, body) = demo.get(path);
        assert_eq!(status, 404, "{path}");
        assert!(!body.starts_with(b"secret"), "{path}");
    }
    // Refusals: other methods, oversized and malformed requests.
    let (status, head, _) = demo.request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"));
    let huge_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    assert_eq!(demo.request(huge_header.as_bytes()).0, 431);
    let huge_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(16 * 1024));
    assert_eq!(demo.request(huge_line.as_bytes()).0, 431);
    assert_eq!(demo.request(b"NONSENSE\r\n\r\n").0, 400);

    // The demo's login.
    let (status, config) = demo.json("/demo/config");
    assert_eq!(status, 200);
    assert_eq!(config["server"], demo.server.as_str());
    assert_eq!(
        config["users"],
        serde_json::json!(["alice", "bob", "carol", "dave"])
    );
    let (status, session) = demo.json("/demo/session?user=alice");
    assert_eq!(status, 200);
    assert_eq!(session["user"], "alice");
    assert_eq!(session["server"], demo.server.as_str());
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(demo.json("/demo/session?user=nobody").0, 404);
    assert_eq!(demo.json("/demo/session").0, 400);
    assert_eq!(demo.json("/demo/session?user=").0, 400);
    assert_eq!(demo.json("/demo/session?user=a%20b").0, 400);

    // A real client syncs alice's seeded conversations with that token.
    let (conversations, seqs) = sync_alice(&demo.server, &token);
    assert_eq!(conversations, CONVERSATIONS);
    assert_eq!(seqs, MESSAGES as u64);

    // SIGTERM, then a restart on the same store and the same ports.
    let (http_port, ws_port) = (Demo::port_of(&demo.http), Demo::port_of(&demo.server));
    let (old_http, old_server) = (demo.http.clone(), demo.server.clone());
    let after = demo.terminate();
    assert!(after.iter().any(|l| l.starts_with("stopped")), "{after:?}");
    let demo = Demo::start(&store, &root, http_port, ws_port);
    assert_eq!(
        (demo.http.as_str(), demo.server.as_str()),
        (old_http.as_str(), old_server.as_str())
    );
    assert!(
        demo.before_ready
            .iter()
            .any(|l| l.contains("reusing the store")
                && l.contains(&format!(
                    "{CONVERSATIONS} conversations, {MESSAGES} messages"
                ))),
        "{:?}",
        demo.before_ready
    );
    assert!(!demo.before_ready.iter().any(|l| l.contains("seeded")));
    // The token from before the restart still works, and the data is all there.
    assert_eq!(
        sync_alice(&demo.server, &token),
        (CONVERSATIONS, MESSAGES as u64)
    );
    demo.terminate();
}

#[test]
fn refuses_to_start_without_the_built_package() {
    let dir = tempfile::tempdir().unwrap();
    let root = web_root(dir.path(), false);
    let mut child = Command::new(BIN)
        .args(["demo", "--web", "--http-port", "0", "--web-root"])
        .arg(&root)
        .arg("--dir")
        .arg(dir.path().join("store"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("it started without a wasm");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scripts/build-web.sh"), "{stderr}");
    assert!(stderr.contains("wasm"), "{stderr}");
}

#[test]
fn web_options_need_web() {
    let out = Command::new(BIN)
        .args(["demo", "--http-port", "1234"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
