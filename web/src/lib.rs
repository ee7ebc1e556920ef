//! # tidemark-web
//!
//! Tidemark's web SDK, the wasm half: the engine (`tidemark::Client` and its driver), the
//! browser store (`tidemark-storage-web`) and the browser WebSocket transport, in one module
//! that `web/package/worker.js` runs in a dedicated worker. The page never loads it: it holds
//! the package's typed proxy (`web/package/index.js`), which talks to that worker (in the
//! leader tab) or to the leader tab (from the others).
//!
//! The worker's whole interface is one class, `WebClient`: `start(options, onEvent)` opens
//! the store and starts the client; `call(method, args)` answers every call of the
//! TypeScript `Session` with a plain object, or rejects with `{ code, message }`. Values are
//! built field by field in the shapes `web/package/index.d.ts` declares; integers above
//! 2^53 - 1 are refused (`OutOfRange`), never rounded.
//!
//! Natively the crate is empty.
#![cfg(target_family = "wasm")]

mod convert;
mod js;

use futures::future::{LocalBoxFuture, Shared};
use futures::FutureExt;
use js_sys::{Function, Promise};
use tidemark::runtime::BrowserRuntime;
use tidemark::runtime::Runtime;
use tidemark::storage::Storage;
use tidemark::{
    Client, ClientMsgId, ConversationCursor, ConversationId, DeviceId, Direction, EngineConfig,
    Event, Seq, StorageError, SyncPolicy, Timestamp, UserId,
};
use tidemark_storage_web::{FileLayer, OpenOptions, WebStorage};
use tidemark_transport::browser::BrowserWsTransport;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use js::{array, Args, Failure, Obj};

/// The most a page of conversations or messages may ask for.
const MAX_PAGE: u32 = 1_000;

/// How long after the store opened the engine starts, unless a call needs it sooner. Loading
/// the engine's snapshot reads every conversation (about 150 ms for 10k conversations read
/// cold from OPFS) and nothing else runs in the worker meanwhile: the page's first reads,
/// which arrive within a few ms of `login` resolving, are answered from the store first.
const ENGINE_START_DELAY_MS: u64 = 30;

/// One signed-in user's engine in this worker.
#[wasm_bindgen]
pub struct WebClient {
    parts: Parts,
}

/// The client once started, shared by every call that needs it (`Client` is a cheap clone).
type StartedClient = Shared<LocalBoxFuture<'static, Result<Client, Failure>>>;

/// What a call works with.
#[derive(Clone)]
struct Parts {
    /// The open store: reads are answered from it, also before the client started.
    store: WebStorage,
    me: UserId,
    client: StartedClient,
    /// Done once the client started on its own, after the delay.
    started: Shared<LocalBoxFuture<'static, ()>>,
}

impl Parts {
    /// The client: started now if it has not been yet (for commands).
    async fn client(&self) -> Result<Client, Failure> {
        self.client.clone().await
    }

    /// The client, without starting it sooner than it starts on its own (for the state
    /// getters, which a page asks for beside its first reads).
    async fn started_client(&self) -> Result<Client, Failure> {
        self.started.clone().await;
        self.client().await
    }
}

#[wasm_bindgen]
impl WebClient {
    /// Opens the store (waiting for a previous owner, such as the worker of a leader tab that
    /// just closed, to let it go) and starts the client; `on_event(name, payload)` receives
    /// every event. `options`: `{ server, user, token, device, database?, storage?, sync? }`.
    ///
    /// Resolves once the store is open. The client starts (loads the engine's snapshot,
    /// connects) a moment later, or at the first call that needs it: reads are answered from
    /// the store meanwhile. If its start fails, the calls that need it fail with that error
    /// and a `storeUnusable` event says so.
    pub async fn start(options: JsValue, on_event: Function) -> Result<WebClient, JsValue> {
        Self::start_with(Args::new(options), on_event)
            .await
            .map_err(Failure::into_js)
    }

    /// Answers one call of the page's `Session` (see `web/package/index.d.ts`): resolves with
    /// its value or rejects with `{ code, message }`.
    pub fn call(&self, method: String, args: JsValue) -> Promise {
        let parts = self.parts.clone();
        future_to_promise(async move {
            answer(&parts, &method, Args::new(args))
                .await
                .map_err(Failure::into_js)
        })
    }
}

impl WebClient {
    async fn start_with(options: Args, on_event: Function) -> Result<WebClient, Failure> {
        let server = options.id("server")?;
        let user = UserId::from(options.id("user")?.as_str());
        let token = options.string("token")?;
        let device = DeviceId::from(options.id("device")?.as_str());
        let database = match options.opt_string("database")? {
            Some(name) => name,
            None => format!("tidemark-{user}"),
        };
        let layer = match options.opt_string("storage")?.as_deref() {
            None => FileLayer::preferred(),
            Some("opfs") => FileLayer::Opfs,
            Some("indexeddb") => FileLayer::IndexedDb,
            Some(other) => {
                return Err(Failure::bad_argument(format!(
                    "storage must be \"opfs\" or \"indexeddb\", not {other:?}"
                )))
            }
        };
        let mut config = EngineConfig::new(user.clone(), device.clone());
        match options.opt_string("sync")?.as_deref() {
            None | Some("recent") => {}
            Some("full") => config.policy = SyncPolicy::Full,
            Some(other) => {
                return Err(Failure::bad_argument(format!(
                    "sync must be \"recent\" or \"full\", not {other:?}"
                )))
            }
        }
        // Client ids must differ between runs on one device; the engine mixes this in.
        config.seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64
            ^ (js_sys::Date::now() as u64).rotate_left(32);
        let store =
            WebStorage::open(OpenOptions::new(database).layer(layer).wait_for_owner(true)).await?;
        let transport = BrowserWsTransport::new(server, user.clone(), device, token);
        let (runtime, me) = (BrowserRuntime::new(), user.clone());
        let starting_store = store.clone();
        let client = async move {
            let emit = move |name: &str, payload: JsValue| {
                // A throwing listener is the page's bug; the engine goes on.
                let _ = on_event.call2(&JsValue::NULL, &JsValue::from_str(name), &payload);
            };
            let (client, driver) =
                match Client::start(config, starting_store, transport, runtime).await {
                    Ok(started) => started,
                    Err(e) => {
                        let mut payload = Obj::new();
                        payload
                            .str("error", &e.to_string())
                            .bool("damaged", matches!(e, StorageError::Corrupt { .. }));
                        emit("storeUnusable", payload.into());
                        return Err(Failure::from(e));
                    }
                };
            client.add_listener(move |event: &Event| match convert::event(event, &me) {
                Ok(Some((name, payload))) => emit(name, payload),
                Ok(None) => {}
                Err(failure) => emit("error", failure.into_js()),
            });
            wasm_bindgen_futures::spawn_local(driver);
            Ok(client)
        };
        let client = client.boxed_local().shared();
        let deferred = client.clone();
        let runtime = BrowserRuntime::new();
        let started = async move {
            runtime
                .sleep_until(runtime.now().plus_millis(ENGINE_START_DELAY_MS))
                .await;
            let _ = deferred.await;
        };
        let started = started.boxed_local().shared();
        wasm_bindgen_futures::spawn_local(started.clone());
        Ok(WebClient {
            parts: Parts {
                store,
                me: user,
                client,
                started,
            },
        })
    }
}

fn conversation_id(args: &Args) -> Result<ConversationId, Failure> {
    Ok(ConversationId::from(args.id("conversationId")?.as_str()))
}

fn client_msg_id(args: &Args) -> Result<ClientMsgId, Failure> {
    Ok(ClientMsgId::from(args.id("clientMsgId")?.as_str()))
}

/// One call's answer.
async fn answer(parts: &Parts, method: &str, args: Args) -> Result<JsValue, Failure> {
    let (store, me) = (&parts.store, &parts.me);
    match method {
        "conversations" => {
            let limit = args.limit("limit", 50, MAX_PAGE)?;
            let after =
                match args.opt_object("after")? {
                    Some(cursor) => Some(ConversationCursor {
                        last_activity: Timestamp(cursor.opt_u64("lastActivity")?.ok_or_else(
                            || Failure::bad_argument("after.lastActivity is required"),
                        )?),
                        id: ConversationId::from(cursor.id("id")?.as_str()),
                    }),
                    None => None,
                };
            let page = store.conversations_page(after, limit as usize).await?;
            let next = match page.last() {
                Some(last) if page.len() == limit as usize => {
                    let mut cursor = Obj::new();
                    cursor
                        .num("lastActivity", last.last_activity.0)?
                        .str("id", &last.id.0);
                    cursor.into()
                }
                _ => JsValue::NULL,
            };
            let mut out = Obj::new();
            out.set("conversations", array(&page, convert::conversation)?)
                .set("next", next);
            Ok(out.into())
        }
        "conversation" => match store.conversation(&conversation_id(&args)?).await? {
            Some(conversation) => convert::conversation(&conversation),
            None => Ok(JsValue::NULL),
        },
        "messages" => {
            let conversation = conversation_id(&args)?;
            let limit = args.limit("limit", 50, MAX_PAGE)? as usize;
            let (anchor, direction) = match (args.opt_seq("before")?, args.opt_seq("after")?) {
                (Some(_), Some(_)) => {
                    return Err(Failure::bad_argument("give before or after, not both"))
                }
                (before, None) => (before, Direction::Before),
                (None, after) => (after, Direction::After),
            };
            let page = store
                .messages_page(&conversation, anchor, direction, limit)
                .await?;
            convert::messages(&page, me)
        }
        "loadHistory" => load_history(&parts.client().await?, &args).await,
        "newClientMsgId" => {
            let client = parts.client().await?;
            let id = client.new_client_msg_id(&conversation_id(&args)?).await?;
            Ok(JsValue::from_str(&id.0))
        }
        "send" => {
            let conversation = conversation_id(&args)?;
            let id = client_msg_id(&args)?;
            let kind = match args.opt_object("kind")? {
                Some(kind) => convert::kind_from(&kind)?,
                None => return Err(Failure::bad_argument("kind is required")),
            };
            let content = args.opt_bytes("content")?.unwrap_or_default();
            let client = parts.client().await?;
            let id = client
                .send_message_as(&conversation, id, kind, content)
                .await?;
            match client.own_message(&conversation, &id).await? {
                Some(message) => convert::message(&message, me),
                // Stored by the command that just returned; a store that lost it is broken.
                None => Err(Failure::new(
                    "Internal",
                    format!("message {id} is not in the store after its send"),
                )),
            }
        }
        "ownMessage" => {
            let conversation = conversation_id(&args)?;
            match store
                .message_by_client_id(&conversation, me, &client_msg_id(&args)?)
                .await?
            {
                Some(message) => convert::message(&message, me),
                None => Ok(JsValue::NULL),
            }
        }
        "retry" => {
            let conversation = conversation_id(&args)?;
            let client = parts.client().await?;
            client.retry(&conversation, &client_msg_id(&args)?).await?;
            Ok(JsValue::UNDEFINED)
        }
        "cancel" => {
            let conversation = conversation_id(&args)?;
            let client = parts.client().await?;
            client.cancel(&conversation, &client_msg_id(&args)?).await?;
            Ok(JsValue::UNDEFINED)
        }
        "markRead" => {
            let conversation = conversation_id(&args)?;
            // Without a seq: everything (the engine clamps to the highest seq it knows).
            let seq = args.opt_seq("seq")?.unwrap_or(Seq(u64::MAX));
            let client = parts.client().await?;
            client.mark_read(&conversation, seq).await?;
            Ok(JsValue::UNDEFINED)
        }
        "totalUnread" => js::number(parts.started_client().await?.total_unread()),
        "state" => {
            let client = parts.started_client().await?;
            let mut out = Obj::new();
            out.str(
                "connection",
                convert::connection_state(client.connection_state()),
            )
            .str("sync", convert::sync_state(client.sync_state()))
            .num("totalUnread", client.total_unread())?
            .num("pendingSends", client.pending_sends() as u64)?;
            Ok(out.into())
        }
        "shutdown" => {
            if let Ok(client) = parts.client().await {
                client.shutdown().await;
            }
            store.clone().close().await;
            Ok(JsValue::UNDEFINED)
        }
        other => Err(Failure::bad_argument(format!("unknown call {other:?}"))),
    }
}

/// `loadHistory`: the gaps below `before` pulled, then the page, and whether it is the start.
async fn load_history(client: &Client, args: &Args) -> Result<JsValue, Failure> {
    let conversation = conversation_id(args)?;
    let before = args.opt_seq("before")?;
    let limit = args.limit("limit", 50, MAX_PAGE)?;
    let loaded = client.load_history(&conversation, before, limit).await?;
    let page = client
        .messages(&conversation, before, Direction::Before, limit as usize)
        .await?;
    // The start is reached when every seq from the floor up to the page's oldest is held
    // (as messages, tombstones or known-deleted) and none of them is a message to show.
    let reached_start = match client.conversation(&conversation).await? {
        Some(conv) if loaded.complete => {
            let oldest = page
                .first()
                .and_then(|m| m.seq)
                .or(before)
                .unwrap_or(Seq(conv.server_max_seq.0.saturating_add(1)));
            let floor = Seq(conv.server_min_seq.0.max(1));
            let all_held = oldest <= floor
                || conv
                    .held
                    .contains_range(floor, Seq(oldest.0.saturating_sub(1)));
            all_held
                && client
                    .messages(&conversation, Some(oldest), Direction::Before, 1)
                    .await?
                    .is_empty()
        }
        _ => false,
    };
    let mut out = Obj::new();
    out.set("messages", convert::messages(&page, client.user())?)
        .bool("complete", loaded.complete)
        .bool("reachedStart", reached_start);
    Ok(out.into())
}
