//! The page's HTTP side: a minimal HTTP/1.1 server for GET and HEAD, one request per
//! connection (`Connection: close`).
//!
//! - `/demo/config` and `/demo/session?user=NAME`: the demo's login (JSON);
//! - `/tidemark/...`: the JavaScript package (`<web-root>/package/`);
//! - anything else: the chat page (`<web-root>/demo/`), a directory meaning its `index.html`.
//!
//! Paths are percent-decoded, then every segment must be a plain name: `..`, `.`, empty
//! segments, backslashes and NULs answer 404, and a file must resolve (symlinks followed)
//! inside its root. Heads larger than [`MAX_HEAD`] are refused with 431; the server never
//! reads a body.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidemark_engine::UserId;
use tidemark_server::net::{ops, ServerHandle};
use tidemark_server::{ServerStore, SqliteServerStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Largest request head (request line and headers) read; larger ones get 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest wait for a complete request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a token issued by `/demo/session` stays valid: a day of demo.
const SESSION_TTL_SECS: u64 = 24 * 60 * 60;
/// Longest user name `/demo/session` accepts.
const MAX_USER_NAME: usize = 64;

/// What the HTTP server serves.
pub struct Site {
    /// The chat page's directory, canonical.
    pub page: PathBuf,
    /// The JavaScript package's directory, canonical.
    pub package: PathBuf,
    /// The reference server's WebSocket URL, for the page.
    pub server_url: String,
    /// The users the page offers.
    pub users: Vec<String>,
    /// The running reference server, which issues the tokens.
    pub server: Arc<ServerHandle<SqliteServerStore>>,
}

/// Accepts connections until `stop` turns true, then waits for the requests in flight.
pub async fn serve(listener: TcpListener, site: Arc<Site>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop_requested(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(handle(tcp, site.clone()));
                }
                // Typically out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // A request in flight gets a moment to finish; its connection does not hold the
    // server's shutdown up for longer.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Resolves once `stop` turns true (or its sender is gone, which means the same).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A response before it is written.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
            allow: false,
        }
    }

    fn text(status: u16, text: &str) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            format!("{text}\n").into_bytes(),
        )
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string().into_bytes())
    }

    fn not_found() -> Self {
        Self::text(404, "not found")
    }
}

/// The parts of a request head the server looks at.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    method: String,
    target: String,
}

/// Serves one connection: one request, one response, close.
async fn handle(mut tcp: TcpStream, site: Arc<Site>) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tcp)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Err(status)) => {
            let response = Response::text(status, reason(status));
            let _ = write_response(&mut tcp, &response, false).await;
            drain(&mut tcp).await;
            return;
        }
        // Closed before a full head, or too slow: nothing to answer.
        Ok(Ok(None)) | Err(_) => return,
    };
    let head_only = head.method == "HEAD";
    let response = if head.method == "GET" || head_only {
        route(&site, &head.target).await
    } else {
        Response {
            allow: true,
            ..Response::text(405, "method not allowed")
        }
    };
    let _ = write_response(&mut tcp, &response, head_only).await;
}

/// Reads up to the end of the head: `Ok(None)` when the peer closes first, `Err(status)`
/// for a head to refuse.
async fn read_head(tcp: &mut TcpStream) -> Result<Option<RequestHead>, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(&buf) {
            return parse_head(&buf[..end]).map(Some);
        }
        if buf.len() >= MAX_HEAD {
            return Err(431);
        }
        let n = match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the blank line ending the head starts, if it arrived within [`MAX_HEAD`].
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .filter(|&end| end + 4 <= MAX_HEAD)
}

/// Parses a head (without its blank line): the request line must be
/// `METHOD SP TARGET SP HTTP/1.x`, the headers valid UTF-8 lines with a colon.
fn parse_head(head: &[u8]) -> Result<RequestHead, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(400);
    }
    if lines.any(|line| !line.contains(':')) {
        return Err(400);
    }
    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
    })
}

/// Writes status line, headers and (unless `head_only`) the body.
async fn write_response(
    tcp: &mut TcpStream,
    response: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.allow {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    if !head_only {
        tcp.write_all(&response.body).await?;
    }
    tcp.shutdown().await
}

/// Reads and drops what the peer still sends (briefly), so closing the socket does not
/// reset the connection before the peer read a refusal.
async fn drain(tcp: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut left = 1024 * 1024;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

/// The response to a GET of `target`.
async fn route(site: &Site, target: &str) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/demo/config" => Response::json(
            200,
            &json!({ "server": site.server_url, "users": site.users }),
        ),
        "/demo/session" => session(site, query).await,
        _ => {
            let (root, rest) = match path.strip_prefix("/tidemark/") {
                Some(rest) => (&site.package, rest),
                None => (&site.page, path.trim_start_matches('/')),
            };
            let (root, rest) = (root.clone(), rest.to_owned());
            // File reads block: off the async workers.
            let found = tokio::task::spawn_blocking(move || {
                let file = resolve(&root, &rest)?;
                let body = std::fs::read(&file).ok()?;
                Some((content_type(&file), body))
            })
            .await;
            match found {
                Ok(Some((content_type, body))) => Response::new(200, content_type, body),
                Ok(None) | Err(_) => Response::not_found(),
            }
        }
    }
}

/// `/demo/session?user=NAME`: a fresh token for an existing user.
async fn session(site: &Site, query: &str) -> Response {
    let user = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "user")
        .and_then(|(_, value)| percent_decode(value));
    let Some(user) = user.filter(|name| valid_user_name(name)) else {
        return Response::json(
            400,
            &json!({ "error": "give a user name: /demo/session?user=alice" }),
        );
    };
    let id = UserId(user.clone());
    let issued = site
        .server
        .admin(move |core, _now| -> Result<Option<String>, String> {
            if !core.store().user_exists(&id).map_err(|e| e.to_string())? {
                return Ok(None);
            }
            ops::token(core.store_mut(), &id, Some(SESSION_TTL_SECS))
                .map(Some)
                .map_err(|e| e.to_string())
        })
        .await;
    match issued {
        Ok(Ok(Some(token))) => Response::json(
            200,
            &json!({ "server": site.server_url, "user": user, "token": token }),
        ),
        Ok(Ok(None)) => Response::json(404, &json!({ "error": format!("no user {user}") })),
        Ok(Err(message)) => Response::json(500, &json!({ "error": message })),
        Err(e) => Response::json(500, &json!({ "error": e.to_string() })),
    }
}

/// Letters, digits, `.`, `_` and `-`, up to [`MAX_USER_NAME`] bytes.
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Decodes `%XX` escapes; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file under `root` that the (still percent-encoded) relative path names, or `None`
/// when there is none or the path tries to leave `root`.
fn resolve(root: &Path, encoded: &str) -> Option<PathBuf> {
    let relative = safe_relative(encoded)?;
    let mut file = root.join(relative);
    if std::fs::metadata(&file).ok()?.is_dir() {
        file.push("index.html");
    }
    // Symlinks inside the root could point out of it.
    let file = std::fs::canonicalize(&file).ok()?;
    let meta = std::fs::metadata(&file).ok()?;
    (meta.is_file() && file.starts_with(root)).then_some(file)
}

/// The decoded path as plain names only: no `..`, `.`, empty segment, root, prefix,
/// backslash or NUL.
fn safe_relative(encoded: &str) -> Option<PathBuf> {
    let decoded = percent_decode(encoded)?;
    let decoded = decoded.strip_suffix('/').unwrap_or(&decoded);
    let mut relative = PathBuf::new();
    if decoded.is_empty() {
        return Some(relative);
    }
    for segment in decoded.split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.contains(['\\', '\0', ':'])
        {
            return None;
        }
        let mut components = Path::new(segment).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(_)), None) => relative.push(segment),
            _ => return None,
        }
    }
    Some(relative)
}

/// The content type by file extension (`application/octet-stream` for the rest).
fn content_type(file: &Path) -> &'static str {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        // TypeScript declarations are read as text, never run.
        Some("ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether `dir` holds a `.wasm` file (the built package's).
pub fn holds_wasm(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|entry| {
            entry.path().extension().is_some_and(|e| e == "wasm")
                && entry
                    .file_type()
                    .is_ok_and(|t| t.is_file() || t.is_symlink())
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn heads_parse_or_are_refused() {
        let head = parse_head(b"GET /x?y=1 HTTP/1.1\r\nHost: a").unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/x?y=1");
        assert_eq!(parse_head(b"GET /x HTTP/2\r\nHost: a"), Err(400));
        assert_eq!(parse_head(b"GET x HTTP/1.1"), Err(400));
        assert_eq!(parse_head(b"GET  /x HTTP/1.1"), Err(400));
        assert_eq!(parse_head(b"GET /x HTTP/1.1\r\nno colon"), Err(400));
        assert_eq!(parse_head(b"get /x HTTP/1.1"), Err(400));
        assert_eq!(parse_head(&[0xff, b' ', b'/']), Err(400));
        assert_eq!(parse_head(b""), Err(400));
    }

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(safe_relative(""), Some(PathBuf::new()));
        assert_eq!(safe_relative("a/b.js"), Some(PathBuf::from("a/b.js")));
        assert_eq!(safe_relative("wasm/"), Some(PathBuf::from("wasm")));
        assert_eq!(
            safe_relative("caf%C3%A9.js"),
            Some(PathBuf::from("café.js"))
        );
        for bad in [
            "..",
            "../Cargo.toml",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "a/../../x",
            "./a",
            "/etc/passwd",
            "%2fetc/passwd",
            "a//b",
            "a\\..\\b",
            "a%5c..",
            "a%00b",
            "c:x",
            "%zz",
            "%c3",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("a.MJS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.map")), "application/json");
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
    }

    #[test]
    fn user_names() {
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("friend-01"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("a b"));
        assert!(!valid_user_name(&"a".repeat(65)));
        assert_eq!(percent_decode("al%69ce").as_deref(), Some("alice"));
    }
}
