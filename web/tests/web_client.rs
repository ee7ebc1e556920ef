//! The worker's interface (`WebClient`) at its boundary, in a dedicated worker of headless
//! Chromium: what JavaScript passes in is checked field by field (a clear `BadArgument`, never
//! a trap), and what goes out is exact or refused (`OutOfRange` above 2^53 - 1). The whole
//! SDK (page, worker, tabs, server) is tested by `web-tests/sdk.mjs` with Playwright.

#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use js_sys::{Function, Object, Reflect};
use tidemark::storage::{Storage, WriteBatch, WriteOp};
use tidemark::{Conversation, ConversationId, ConversationKind, Seq};
use tidemark_storage_web::{FileLayer, OpenOptions, WebStorage};
use tidemark_web::WebClient;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// A plain object from `(key, value)` pairs.
fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let out = Object::new();
    for (key, value) in fields {
        Reflect::set(&out, &JsValue::from_str(key), value).unwrap();
    }
    out.into()
}

/// A database name of its own for each test run.
fn database(test: &str) -> String {
    format!("web-client-{test}-{}", js_sys::Date::now() as u64)
}

/// Login options for `database`, against a port nobody listens on: the client runs, offline.
fn options(database: &str) -> Vec<(&'static str, JsValue)> {
    vec![
        ("server", "ws://127.0.0.1:9".into()),
        ("user", "alice".into()),
        ("token", "t".into()),
        ("device", "d1".into()),
        ("database", database.into()),
    ]
}

fn code(error: &JsValue) -> String {
    Reflect::get(error, &"code".into())
        .unwrap()
        .as_string()
        .unwrap()
}

async fn call(client: &WebClient, method: &str, args: JsValue) -> Result<JsValue, JsValue> {
    JsFuture::from(client.call(method.to_owned(), args)).await
}

fn no_events() -> Function {
    Function::new_no_args("")
}

#[wasm_bindgen_test]
async fn bad_login_options_are_refused_with_bad_argument() {
    let name = database("options");
    let cases: Vec<(&str, JsValue)> = vec![
        ("user", JsValue::from_f64(7.0)),
        ("user", "".into()),
        ("server", JsValue::NULL),
        ("storage", "localStorage".into()),
        ("sync", "everything".into()),
    ];
    for (key, value) in cases {
        let mut fields = options(&name);
        fields.retain(|(k, _)| *k != key);
        fields.push((key, value));
        let refused = WebClient::start(object(&fields), no_events()).await;
        let error = refused.err().unwrap();
        assert_eq!(code(&error), "BadArgument", "{key}");
    }
    // Not an object at all.
    let error = WebClient::start(JsValue::from_str("alice"), no_events())
        .await
        .err()
        .unwrap();
    assert_eq!(code(&error), "BadArgument");
}

#[wasm_bindgen_test]
async fn call_arguments_are_checked_field_by_field() {
    let name = database("args");
    let client = WebClient::start(object(&options(&name)), no_events())
        .await
        .unwrap();
    let chat = || ("conversationId", JsValue::from_str("chat"));
    let refused: Vec<(&str, JsValue)> = vec![
        ("teleport", object(&[])),
        ("conversations", object(&[("limit", 0.into())])),
        ("conversations", object(&[("limit", 1_001.into())])),
        ("conversations", object(&[("limit", 2.5.into())])),
        (
            "conversations",
            object(&[("after", object(&[("id", "c".into())]))]),
        ),
        ("messages", object(&[])),
        ("messages", object(&[chat(), ("before", (-1).into())])),
        (
            "messages",
            object(&[chat(), ("before", 9_007_199_254_740_992.0.into())]),
        ),
        ("messages", object(&[chat(), ("before", "3".into())])),
        (
            "messages",
            object(&[chat(), ("before", 3.into()), ("after", 1.into())]),
        ),
        ("send", object(&[chat(), ("clientMsgId", "x".into())])),
        (
            "send",
            object(&[
                chat(),
                ("clientMsgId", "x".into()),
                ("kind", object(&[("type", "poem".into())])),
            ]),
        ),
        (
            "send",
            object(&[
                chat(),
                ("clientMsgId", "x".into()),
                ("kind", object(&[("type", "text".into())])),
                ("content", "not bytes".into()),
            ]),
        ),
    ];
    for (method, args) in refused {
        let error = call(&client, method, args).await.err().unwrap();
        assert_eq!(code(&error), "BadArgument", "{method}");
    }
    // Well-formed calls about a conversation the store does not have.
    let error = call(&client, "markRead", object(&[chat()]))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&error), "UnknownConversation");
    let error = call(&client, "newClientMsgId", object(&[chat()]))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&error), "UnknownConversation");
    let none = call(&client, "conversation", object(&[chat()]))
        .await
        .unwrap();
    assert!(none.is_null());
    let state = call(&client, "state", object(&[])).await.unwrap();
    let pending = Reflect::get(&state, &"pendingSends".into()).unwrap();
    assert_eq!(pending.as_f64(), Some(0.0));
    call(&client, "shutdown", object(&[])).await.unwrap();
    let error = call(&client, "state", object(&[])).await;
    // Reads still answer after shutdown; commands do not.
    assert!(error.is_ok());
    let error = call(&client, "markRead", object(&[chat()]))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&error), "Closed");
}

#[wasm_bindgen_test]
async fn a_seq_beyond_what_a_number_holds_is_refused_not_rounded() {
    let name = database("range");
    // A store holding a conversation whose server max seq is 2^60 (a server may use u64).
    let store = WebStorage::open(OpenOptions::new(name.clone()).layer(FileLayer::Opfs))
        .await
        .unwrap();
    let mut huge = Conversation::new(ConversationId::from("huge"), ConversationKind::Group);
    huge.server_max_seq = Seq(1 << 60);
    let fine = Conversation::new(ConversationId::from("fine"), ConversationKind::Direct);
    let batch = WriteBatch {
        ops: vec![
            WriteOp::PutConversation(huge),
            WriteOp::PutConversation(fine),
        ],
    };
    store.apply(batch).await.unwrap();
    store.close().await;

    let client = WebClient::start(object(&options(&name)), no_events())
        .await
        .unwrap();
    let error = call(
        &client,
        "conversation",
        object(&[("conversationId", "huge".into())]),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(code(&error), "OutOfRange");
    // The other conversation reads as usual, with exact numbers.
    let fine = call(
        &client,
        "conversation",
        object(&[("conversationId", "fine".into())]),
    )
    .await
    .unwrap();
    assert_eq!(Reflect::get(&fine, &"kind".into()).unwrap(), "direct");
    assert_eq!(
        Reflect::get(&fine, &"maxSeq".into()).unwrap().as_f64(),
        Some(0.0)
    );
    call(&client, "shutdown", object(&[])).await.unwrap();
}
