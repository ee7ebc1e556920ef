//! # tidemark-web-tests
//!
//! The wasm side of the browser harness (`web-tests/run.mjs`). wasm-bindgen-test runs one
//! page per test binary and cannot reload it, restart the browser, open a second page, set a
//! quota or start a server; `run.mjs` can, and calls these exports inside a dedicated worker
//! (one open store per worker) through a small postMessage proxy. What each export gives the
//! scenarios:
//!
//! - `open`, `close`, `delete_database`: a `tidemark_storage_web::WebStorage` on either file layer,
//!   with its owner rule (`wait_for_owner`) and durability; errors reach JavaScript as objects
//!   with a stable `code` (the `StorageError` variant: `Full`, `Gone`, `InUse`, ...).
//! - `ingest`: deterministic messages written through `Storage::apply` in batches shaped like
//!   the engine's sync batches (the messages and their conversation's record, held range
//!   included), reporting each committed seq as soon as its `apply` returned, so a reload or
//!   a quota failure can be checked against exactly what was acknowledged.
//! - `stats` and `expected`: what is stored (count, holes, duplicates, held ranges and a
//!   checksum of every message) against what `ingest` wrote, so "nothing lost, nothing
//!   invented" is checked row by row, not only by count.
//! - `rows`: the rows `ingest` writes, for the sql.js baseline of the bench.
//! - `ping_bench`: round trips to the reference server through the browser transport.
//! - `sync_from_server`: the real `tidemark::Client` over the open store, the browser
//!   WebSocket transport and the browser runtime, syncing from a native reference server until
//!   it holds everything; `dump` lists the stored messages to compare with the server's.
//!
//! Natively the crate is empty.
#![cfg(target_family = "wasm")]

use std::cell::RefCell;
use std::fmt::Display;

use futures::StreamExt;
use js_sys::{Function, JSON};
use serde_json::{json, Value};
use tidemark::runtime::BrowserRuntime;
use tidemark::storage::{SeqRanges, Storage, WriteBatch, WriteOp};
use tidemark::{
    Client, ClientError, ClientMsgId, ContentKind, Conversation, ConversationCursor,
    ConversationId, ConversationKind, DeviceId, Direction, EngineConfig, Event, LatestMessage,
    Message, MessageStatus, Seq, StorageError, SyncPolicy, Timestamp, UserId,
};
use tidemark_storage_web::{Durability, FileLayer, OpenOptions, WebStorage};
use tidemark_transport::browser::BrowserWsTransport;
use wasm_bindgen::prelude::*;

thread_local! {
    /// The store this worker has open (one per worker, as an app would).
    static OPEN: RefCell<Option<WebStorage>> = const { RefCell::new(None) };
}

/// Messages per page when reading a conversation back.
const READ_PAGE: usize = 1_000;

// ----- values and errors crossing to JavaScript -----

fn to_js(value: &Value) -> JsValue {
    // serde_json always writes valid JSON, so the parse cannot fail; a failure would show as
    // `undefined` in the scenario's output rather than a panic here.
    JSON::parse(&value.to_string()).unwrap_or(JsValue::UNDEFINED)
}

fn js_error(code: &str, message: impl Display) -> JsValue {
    to_js(&json!({ "code": code, "message": message.to_string() }))
}

fn storage_error(err: &StorageError) -> JsValue {
    js_error(err.code(), err)
}

fn storage_error_value(err: &StorageError) -> Value {
    json!({ "code": err.code(), "message": err.to_string() })
}

fn client_error(err: &ClientError) -> JsValue {
    match err {
        ClientError::Storage(inner) => storage_error(inner),
        other => js_error("Client", other),
    }
}

fn layer_named(name: &str) -> Result<FileLayer, JsValue> {
    match name {
        "opfs" => Ok(FileLayer::Opfs),
        "idb" => Ok(FileLayer::IndexedDb),
        other => Err(js_error(
            "BadArgument",
            format!("unknown layer {other:?} (opfs or idb)"),
        )),
    }
}

fn layer_name(layer: FileLayer) -> &'static str {
    match layer {
        FileLayer::Opfs => "opfs",
        FileLayer::IndexedDb => "idb",
    }
}

/// The open store, or a `NotOpen` error.
fn current() -> Result<WebStorage, JsValue> {
    OPEN.with(|open| open.borrow().clone())
        .ok_or_else(|| js_error("NotOpen", "no store is open in this worker"))
}

/// Milliseconds from the worker's monotonic clock (`performance.now()`), or the wall clock.
fn now_ms() -> f64 {
    let performance = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
    performance
        .and_then(|p| {
            let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
            now.dyn_into::<Function>().ok()?.call0(&p).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

fn report(progress: Option<&Function>, value: f64) {
    if let Some(progress) = progress {
        // A progress callback that throws only loses a progress line.
        let _ = progress.call1(&JsValue::NULL, &JsValue::from_f64(value));
    }
}

/// Reports a panic to the worker (`self.reportPanic(message)`, set by www/worker.js) before
/// the wasm traps: a panic inside a spawned future otherwise ends as an unhandled rejection
/// that no caller sees, and the scenario would only time out.
#[wasm_bindgen(start)]
pub fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let global = js_sys::global();
        if let Ok(report) = js_sys::Reflect::get(&global, &"reportPanic".into()) {
            if let Ok(report) = report.dyn_into::<Function>() {
                let _ = report.call1(&global, &JsValue::from_str(&info.to_string()));
            }
        }
    }));
}

// ----- opening and closing -----

/// Opens database `name` on `layer` (`"opfs"` or `"idb"`) and keeps it as this worker's store.
/// With `wait_for_owner` it waits for another owner to close it; otherwise another owner is
/// an `InUse` error at once. `relaxed` asks for `Durability::Relaxed`. Resolves with
/// `{layer, ms}`.
#[wasm_bindgen]
pub async fn open(
    name: String,
    layer: String,
    wait_for_owner: bool,
    relaxed: bool,
) -> Result<JsValue, JsValue> {
    if OPEN.with(|open| open.borrow().is_some()) {
        return Err(js_error("AlreadyOpen", "this worker has a store open"));
    }
    let durability = if relaxed {
        Durability::Relaxed
    } else {
        Durability::Strict
    };
    let options = OpenOptions::new(&name)
        .layer(layer_named(&layer)?)
        .wait_for_owner(wait_for_owner)
        .durability(durability);
    let started = now_ms();
    let store = WebStorage::open(options)
        .await
        .map_err(|err| storage_error(&err))?;
    let opened = json!({ "layer": layer_name(store.layer()), "ms": now_ms() - started });
    OPEN.with(|open| *open.borrow_mut() = Some(store));
    Ok(to_js(&opened))
}

/// Closes this worker's store (releasing its database and Web Lock); nothing if none is open.
#[wasm_bindgen]
pub async fn close() {
    if let Some(store) = OPEN.with(|open| open.borrow_mut().take()) {
        store.close().await;
    }
}

/// Deletes database `name` on `layer`.
#[wasm_bindgen]
pub async fn delete_database(name: String, layer: String) -> Result<(), JsValue> {
    WebStorage::delete(&name, layer_named(&layer)?)
        .await
        .map_err(|err| storage_error(&err))
}

// ----- writing -----

/// Filler for message texts: with the number and the token, 50 to 170 bytes.
const FILLER: &str = "see you at the station at nine, bring the tickets and the umbrella, \
    it will rain all afternoon and the last train leaves early on sundays.";

/// A token of 32 letters and digits drawn from (conversation, seq): chat text is not as
/// repetitive as FILLER, and IndexedDB compresses what it stores, so without it a quota would
/// hold far more messages than real ones.
fn token(conversation: &ConversationId, seq: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut seed = Checksum::new();
    seed.bytes(conversation.0.as_bytes());
    seed.bytes(&seq.to_le_bytes());
    let mut state = seed.0 | 1;
    (0..32)
        .map(|_| {
            // xorshift64*: cheap, and plenty for bytes that only need to look random.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let drawn = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 58;
            // `drawn` is below 64, ALPHABET's length.
            char::from(ALPHABET[drawn as usize])
        })
        .collect()
}

/// The message `ingest` writes at `seq`: a function of its conversation and seq only, so
/// [`expected`] can recompute what must be stored.
fn message(conversation: &ConversationId, seq: u64) -> Message {
    let senders = ["alice", "bob", "carol"];
    // Both indices are below their bounds (3 and FILLER's length), so the casts are lossless.
    let sender = senders[(seq % 3) as usize];
    let filler = &FILLER[..(seq * 7 % 120) as usize];
    let token = token(conversation, seq);
    Message {
        conversation: conversation.clone(),
        seq: Some(Seq(seq)),
        client_msg_id: ClientMsgId(format!("{sender}-web:{seq}")),
        sender: UserId::from(sender),
        kind: ContentKind::Text,
        content: format!("message {seq}: {filler} #{token}").into_bytes(),
        created_at: Timestamp(1_700_000_000_000 + seq * 1_000),
        server_time: Some(Timestamp(1_700_000_000_000 + seq * 1_000 + 7)),
        status: MessageStatus::Sent,
        edit_seq: None,
        revoked: false,
    }
}

/// A batch as the engine writes one while syncing: the messages `first..=last` and the
/// conversation's record holding `1..=last`.
fn batch(conversation: &ConversationId, first: u64, last: u64) -> WriteBatch {
    let messages: Vec<Message> = (first..=last).map(|s| message(conversation, s)).collect();
    let mut record = Conversation::new(conversation.clone(), ConversationKind::Group);
    record.server_max_seq = Seq(last);
    record.held = SeqRanges::from_range(Seq(1), Seq(last));
    record.latest = messages.last().map(LatestMessage::of);
    record.last_activity = Timestamp(1_700_000_000_000 + last * 1_000 + 7);
    record.unread = record.compute_unread();
    WriteBatch {
        ops: vec![
            WriteOp::PutMessages(messages),
            WriteOp::PutConversation(record),
        ],
    }
}

/// Writes `count` messages of `conversation`, seqs from `first_seq` up, through
/// `Storage::apply` in batches of `per_batch`, calling `progress(last committed seq)` as soon
/// as each `apply` returned. Stops at the first failed batch. Resolves (also on failure) with
/// `{committed, last_seq, ms, error}`: the messages whose `apply` returned `Ok`, the last of
/// their seqs (`first_seq - 1` if none), the time spent in `apply`, and the failure as
/// `{code, message}` or `null`.
#[wasm_bindgen]
pub async fn ingest(
    conversation: String,
    first_seq: f64,
    count: u32,
    per_batch: u32,
    progress: Option<Function>,
) -> Result<JsValue, JsValue> {
    let store = current()?;
    if !(first_seq >= 1.0 && first_seq.fract() == 0.0 && first_seq < 9e15) || per_batch == 0 {
        return Err(js_error(
            "BadArgument",
            "first_seq must be a whole number >= 1 and per_batch >= 1",
        ));
    }
    let conversation = ConversationId::from(conversation.as_str());
    // Checked above: a whole number in u64 range.
    let first = first_seq as u64;
    let end = first + u64::from(count);
    let mut next = first;
    let mut spent = 0.0;
    let mut failure = Value::Null;
    while next < end {
        let last = (next + u64::from(per_batch) - 1).min(end - 1);
        let batch = batch(&conversation, next, last);
        let started = now_ms();
        let applied = store.apply(batch).await;
        spent += now_ms() - started;
        match applied {
            Ok(_) => {
                // Seqs stay far below 2^53, so they are exact as JavaScript numbers.
                report(progress.as_ref(), last as f64);
                next = last + 1;
            }
            Err(err) => {
                failure = storage_error_value(&err);
                break;
            }
        }
    }
    Ok(to_js(&json!({
        "committed": next - first,
        "last_seq": next - 1,
        "ms": spent,
        "error": failure,
    })))
}

// ----- reading back -----

/// FNV-1a over the fields that make a message what it is.
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn message(&mut self, message: &Message) {
        self.bytes(&message.seq.map_or(0, |s| s.0).to_le_bytes());
        self.bytes(message.sender.0.as_bytes());
        self.bytes(&[0]);
        self.bytes(message.client_msg_id.0.as_bytes());
        self.bytes(&[0]);
        self.bytes(&message.content);
        self.bytes(&[0]);
    }

    /// As hex: a u64 is not exact as a JavaScript number.
    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The open store and every stored message of `conversation` with a seq, ascending.
async fn stored_messages(
    conversation: &str,
) -> Result<(WebStorage, ConversationId, Vec<Message>), JsValue> {
    let store = current()?;
    let conversation = ConversationId::from(conversation);
    let messages = all_messages(&store, &conversation)
        .await
        .map_err(|err| storage_error(&err))?;
    Ok((store, conversation, messages))
}

/// Every stored message of a conversation with a seq, ascending, read page by page.
async fn all_messages(
    storage: &dyn Storage,
    conversation: &ConversationId,
) -> Result<Vec<Message>, StorageError> {
    let mut all: Vec<Message> = Vec::new();
    loop {
        let anchor = all.last().and_then(|m| m.seq);
        let page = storage
            .messages_page(conversation, anchor, Direction::After, READ_PAGE)
            .await?;
        let full = page.len() == READ_PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

fn ranges_value(ranges: &SeqRanges) -> Value {
    ranges
        .ranges()
        .iter()
        .map(|r| json!([r.start.0, r.end.0]))
        .collect()
}

/// The messages `ingest` writes for `conversation`, seqs `first_seq..first_seq + count`, as
/// plain rows `{seq, sender, clientMsgId, content, createdAt, serverTime}` (content as text):
/// the bench inserts exactly these rows into sql.js, the baseline beside `ingest`.
#[wasm_bindgen]
pub fn rows(conversation: String, first_seq: u32, count: u32) -> JsValue {
    let conversation = ConversationId::from(conversation.as_str());
    let first = u64::from(first_seq);
    let rows: Vec<Value> = (first..first + u64::from(count))
        .map(|seq| {
            let m = message(&conversation, seq);
            json!({
                "seq": seq,
                "sender": m.sender.0,
                "clientMsgId": m.client_msg_id.0,
                "content": String::from_utf8_lossy(&m.content),
                "createdAt": m.created_at.0,
                "serverTime": m.server_time.map(|t| t.0),
            })
        })
        .collect();
    to_js(&Value::Array(rows))
}

/// What the open store holds of `conversation`: `{messages, first_seq, last_seq, holes,
/// duplicates, checksum, held, server_max_seq}`. `holes` counts missing seqs between the
/// first and the last; `duplicates` counts seqs seen twice.
#[wasm_bindgen]
pub async fn stats(conversation: String) -> Result<JsValue, JsValue> {
    let (store, conversation, messages) = stored_messages(&conversation).await?;
    let record = store
        .conversation(&conversation)
        .await
        .map_err(|err| storage_error(&err))?;
    let mut checksum = Checksum::new();
    let (mut holes, mut duplicates) = (0u64, 0u64);
    let mut previous: Option<u64> = None;
    for message in &messages {
        checksum.message(message);
        let seq = message.seq.map_or(0, |s| s.0);
        match previous {
            Some(p) if seq <= p => duplicates += 1,
            Some(p) => holes += seq - p - 1,
            None => {}
        }
        previous = Some(seq.max(previous.unwrap_or(0)));
    }
    let seq_of = |m: Option<&Message>| m.and_then(|m| m.seq).map_or(0, |s| s.0);
    Ok(to_js(&json!({
        "messages": messages.len(),
        "first_seq": seq_of(messages.first()),
        "last_seq": seq_of(messages.last()),
        "holes": holes,
        "duplicates": duplicates,
        "checksum": checksum.hex(),
        "held": record.as_ref().map(|r| ranges_value(&r.held)),
        "server_max_seq": record.as_ref().map(|r| r.server_max_seq.0),
    })))
}

/// The checksum [`stats`] must report after `ingest` committed seqs `1..=last_seq`.
#[wasm_bindgen]
pub fn expected(conversation: String, last_seq: f64) -> String {
    let conversation = ConversationId::from(conversation.as_str());
    let mut checksum = Checksum::new();
    // A bad number gives the checksum of nothing, which a non-empty store never matches.
    let last = if last_seq >= 0.0 { last_seq as u64 } else { 0 };
    for seq in 1..=last {
        checksum.message(&message(&conversation, seq));
    }
    checksum.hex()
}

/// Every conversation of the open store: `[{id, server_max_seq, held}]`.
#[wasm_bindgen]
pub async fn conversations() -> Result<JsValue, JsValue> {
    let store = current()?;
    let mut all: Vec<Conversation> = Vec::new();
    loop {
        let after = all.last().map(ConversationCursor::after);
        let page = store
            .conversations_page(after, 100)
            .await
            .map_err(|err| storage_error(&err))?;
        let full = page.len() == 100;
        all.extend(page);
        if !full {
            break;
        }
    }
    let list: Vec<Value> = all
        .iter()
        .map(|c| {
            json!({
                "id": c.id.0,
                "server_max_seq": c.server_max_seq.0,
                "held": ranges_value(&c.held),
            })
        })
        .collect();
    Ok(to_js(&Value::Array(list)))
}

/// Every stored message of `conversation` with a seq, ascending: `[{seq, sender, content}]`
/// (content as text, invalid UTF-8 replaced).
#[wasm_bindgen]
pub async fn dump(conversation: String) -> Result<JsValue, JsValue> {
    let (_, _, messages) = stored_messages(&conversation).await?;
    let rows: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "seq": m.seq.map_or(0, |s| s.0),
                "sender": m.sender.0,
                "content": String::from_utf8_lossy(&m.content),
            })
        })
        .collect();
    Ok(to_js(&Value::Array(rows)))
}

// ----- the engine against a real server -----

/// Runs a `tidemark::Client` over the open store, `BrowserWsTransport` to `url` as `user` on
/// `device` and `BrowserRuntime`, pulling everything (`SyncPolicy::Full`) in pulls of
/// `pull_max_messages`, until the engine reports the sync finished; then shuts the client
/// down (the store stays open). `progress(n)` is called with the number of messages received
/// so far after each commit the engine announces. Resolves with `{received, ms}`; a store
/// failure rejects with its code.
#[wasm_bindgen]
pub async fn sync_from_server(
    url: String,
    user: String,
    device: String,
    token: String,
    pull_max_messages: u32,
    progress: Option<Function>,
) -> Result<JsValue, JsValue> {
    let store = current()?;
    let (user, device) = (UserId::from(user.as_str()), DeviceId::from(device.as_str()));
    let mut config = EngineConfig::new(user.clone(), device.clone());
    config.policy = SyncPolicy::Full;
    config.pull_max_messages = pull_max_messages.max(1);
    config.pulls_in_flight = 1;
    // Client ids must not repeat across runs; the clock is fresh enough for a test.
    config.seed = js_sys::Date::now() as u64;
    let transport = BrowserWsTransport::new(url, user, device, token);
    let started = now_ms();
    let (client, driver) = Client::start(config, store, transport, BrowserRuntime::new())
        .await
        .map_err(|err| storage_error(&err))?;
    let mut events = client.events();
    wasm_bindgen_futures::spawn_local(driver);
    let mut received = 0usize;
    let outcome = loop {
        match events.next().await {
            Some(Event::MessagesReceived { messages, .. }) => {
                received += messages.len();
                report(progress.as_ref(), received as f64);
            }
            Some(Event::SyncFinished) => break Ok(()),
            Some(Event::StoreUnusable { error, .. }) => {
                break Err(js_error("StoreUnusable", error));
            }
            Some(Event::Kicked { reason }) => break Err(js_error("Kicked", reason)),
            Some(_) => {}
            None => break Err(client_error(&ClientError::Closed)),
        }
    };
    client.shutdown().await;
    outcome?;
    Ok(to_js(
        &json!({ "received": received, "ms": now_ms() - started }),
    ))
}

/// Round trips to the reference server from this worker: connects with the browser WebSocket
/// transport (hello and welcome included, not timed), sends `Ping` and waits for its `Pong`
/// `count` times one after another (after 100 untimed warm-up pings), and resolves with
/// `{count, mean_us, p50_us, p99_us}`. Pushes that arrive meanwhile are skipped.
/// The percentiles are only as fine as the worker's clock (see below).
#[wasm_bindgen]
pub async fn ping_bench(
    url: String,
    user: String,
    device: String,
    token: String,
    count: u32,
) -> Result<JsValue, JsValue> {
    use tidemark::transport::protocol::{Request, RequestId, Response};
    use tidemark::transport::{Incoming, RequestSink, Transport};
    const WARM_UP: u64 = 100;
    let mut transport = BrowserWsTransport::new(
        url,
        UserId::from(user.as_str()),
        DeviceId::from(device.as_str()),
        token,
    );
    let transport_error = |e: tidemark::transport::TransportError| js_error("Transport", e);
    let (mut sink, mut source) = transport.connect().await.map_err(transport_error)?;
    let mut times = Vec::with_capacity(count as usize);
    let mut timed_from = now_ms();
    for n in 0..WARM_UP + u64::from(count) {
        if n == WARM_UP {
            timed_from = now_ms();
        }
        let started = now_ms();
        sink.send(RequestId(n), Request::Ping)
            .await
            .map_err(transport_error)?;
        loop {
            match source.next().await {
                Some(Ok(Incoming::Response(id, Response::Pong { .. }))) if id == RequestId(n) => {
                    break
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(transport_error(e)),
                None => return Err(js_error("Transport", "the connection closed")),
            }
        }
        if n >= WARM_UP {
            times.push((now_ms() - started) * 1_000.0);
        }
    }
    // The mean from the whole run: a worker's clock is coarse (100 µs in Chromium without
    // cross-origin isolation), so single round trips give only the percentiles.
    let mean = (now_ms() - timed_from) * 1_000.0 / f64::from(count.max(1));
    sink.close().await;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q) as usize)
            .copied()
    };
    Ok(to_js(&json!({
        "count": times.len(),
        "mean_us": mean,
        "p50_us": at(0.5),
        "p99_us": at(0.99),
    })))
}
