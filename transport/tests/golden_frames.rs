//! Golden frames of protocol v1: one exact encoded frame for every frame type, kept three
//! ways at once so none of them can drift from the others:
//! - the codec's [`encode`] of a typed value is compared with a committed insta snapshot
//!   (`tests/snapshots/golden_frames__<name>.snap`): a change of wire form is a snapshot diff;
//! - the snapshot's text is decoded with the real decoder and compared with the typed value;
//! - `docs/protocol.md` must contain every golden frame's exact text.
//!
//! Coverage: exhaustive `match`es name the wire variant of every frame, request, response,
//! push, content kind and conversation kind (a new variant does not compile until it is
//! listed there), and the variant names serde itself knows are compared with the ones the
//! goldens cover (a listed variant without a golden fails the test). Every [`ErrorCode`] gets
//! a request refusal golden by iterating [`ErrorCode::ALL`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test: a failed step is a failed test"
)]

use std::collections::BTreeSet;

use tidemark_engine::protocol::ErrorCode;
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeletionsEntry, DeviceId,
    MaxSeqEntry, PullRange, PulledRange, Push, Request, RequestId, Response, Seq, SeqRanges,
    ServerError, ServerMessage, SyncToken, Timestamp, UserId,
};
use tidemark_transport::wire::{
    decode_client, decode_server, encode, error_code, ClientFrame, Limits, ServerFrame,
    PROTOCOL_VERSION,
};

/// One golden: its snapshot name and the typed frame.
enum Golden {
    Client(&'static str, ClientFrame),
    Server(String, ServerFrame),
}

impl Golden {
    fn name(&self) -> &str {
        match self {
            Golden::Client(name, _) => name,
            Golden::Server(name, _) => name,
        }
    }

    fn encoded(&self) -> String {
        match self {
            Golden::Client(_, frame) => encode(frame),
            Golden::Server(_, frame) => encode(frame),
        }
    }
}

const T: u64 = 1_700_000_000_000;

fn conv(id: &str) -> ConversationId {
    ConversationId(id.into())
}

fn ranges(pairs: &[(u64, u64)]) -> SeqRanges {
    let mut set = SeqRanges::new();
    for &(start, end) in pairs {
        set.insert_range(Seq(start), Seq(end));
    }
    set
}

fn request(id: u64, request: Request) -> ClientFrame {
    ClientFrame::Request {
        id: RequestId(id),
        request,
    }
}

fn send(id: u64, client_msg_id: &str, kind: ContentKind, content: &[u8]) -> ClientFrame {
    request(
        id,
        Request::Send {
            conversation: conv("c1"),
            client_msg_id: ClientMsgId(client_msg_id.into()),
            kind,
            content: content.to_vec(),
            created_at: Timestamp(T),
        },
    )
}

fn response(id: u64, response: Response) -> ServerFrame {
    ServerFrame::Response {
        id: RequestId(id),
        response,
    }
}

fn message(seq: u64, sender: &str, content: &[u8]) -> ServerMessage {
    ServerMessage {
        conversation: conv("c1"),
        seq: Seq(seq),
        client_msg_id: ClientMsgId(format!("{sender}-phone:{seq}")),
        sender: UserId(sender.into()),
        kind: ContentKind::Text,
        content: content.to_vec(),
        created_at: Timestamp(T + seq * 1000),
        server_time: Timestamp(T + seq * 1000 + 7),
    }
}

fn client_goldens() -> Vec<Golden> {
    let client = |name, frame| Golden::Client(name, frame);
    vec![
        client(
            "hello",
            ClientFrame::Hello {
                version: PROTOCOL_VERSION,
                user: UserId("alice".into()),
                device: DeviceId("phone".into()),
                token: "tok_3f9a1c".into(),
            },
        ),
        client(
            "request_get_max_seqs",
            request(
                1,
                Request::GetMaxSeqs {
                    after: None,
                    limit: 1000,
                    since: None,
                },
            ),
        ),
        client(
            "request_get_max_seqs_since",
            request(
                1,
                Request::GetMaxSeqs {
                    after: None,
                    limit: 1000,
                    since: Some(SyncToken::new("9f2c47d1e0a3b586.41877")),
                },
            ),
        ),
        client(
            "request_get_max_seqs_next_page",
            request(
                2,
                Request::GetMaxSeqs {
                    after: Some(conv("c2")),
                    limit: 1000,
                    since: None,
                },
            ),
        ),
        client(
            "request_pull",
            request(
                3,
                Request::Pull {
                    ranges: vec![
                        PullRange {
                            conversation: conv("c1"),
                            from: Seq(101),
                            to: Seq(120),
                        },
                        PullRange {
                            conversation: conv("c2"),
                            from: Seq(1),
                            to: Seq(5),
                        },
                    ],
                    max_bytes: Some(4_194_304),
                },
            ),
        ),
        client(
            "request_pull_without_budget",
            request(
                4,
                Request::Pull {
                    ranges: vec![PullRange {
                        conversation: conv("c1"),
                        from: Seq(118),
                        to: Seq(120),
                    }],
                    max_bytes: None,
                },
            ),
        ),
        client(
            "request_send_text",
            send(5, "phone:1", ContentKind::Text, b"hello"),
        ),
        client(
            "request_send_image",
            send(6, "phone:2", ContentKind::Image, b"img/7f3a.png"),
        ),
        client(
            "request_send_file",
            send(7, "phone:3", ContentKind::File, b"file/report.pdf"),
        ),
        client(
            "request_send_custom",
            send(
                8,
                "phone:4",
                ContentKind::Custom("poll".into()),
                &[0x00, 0x01, 0xFF],
            ),
        ),
        client(
            "request_send_edit",
            send(
                9,
                "phone:5",
                ContentKind::Edit { target: Seq(121) },
                b"hello, world",
            ),
        ),
        client(
            "request_send_revoke",
            send(10, "phone:6", ContentKind::Revoke { target: Seq(121) }, b""),
        ),
        client(
            "request_get_deletions",
            request(
                11,
                Request::GetDeletions {
                    conversations: vec![conv("c1"), conv("c2")],
                },
            ),
        ),
        client(
            "request_mark_read",
            request(
                12,
                Request::MarkRead {
                    conversation: conv("c1"),
                    seq: Seq(120),
                },
            ),
        ),
        client("request_ping", request(13, Request::Ping)),
    ]
}

/// A realistic detail for each request refusal; the text is free-form.
fn refusal_detail(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotMember => "not a member of c9",
        ErrorCode::TooLarge => "content of 70000 bytes exceeds 65536",
        ErrorCode::InvalidValue => "created_at above i64::MAX",
        ErrorCode::InvalidTarget => "no message at seq 500 to change",
        ErrorCode::NotAuthor => "only the author may change seq 7",
        ErrorCode::ClientIdConflict => "phone:1 was used in another conversation",
        ErrorCode::RateLimited => "too many requests; slow down",
        ErrorCode::Internal => "the server failed; try again later",
        // The connection-level codes: the reference server sends them in error frames, never
        // as request refusals; their refusal form is what another server would send.
        ErrorCode::Unauthorized => "not allowed",
        ErrorCode::TokenExpired => "the token has expired",
        ErrorCode::UnsupportedVersion => "not spoken here",
        ErrorCode::Malformed => "a value breaks a rule",
        ErrorCode::Protocol => "out of order",
        ErrorCode::IdleTimeout => "too slow",
        ErrorCode::SlowConsumer => "too slow to read",
        ErrorCode::Shutdown => "the server is shutting down",
        // Never sent by a server: the engine's own refusal, in the same form.
        ErrorCode::UnexpectedResponse => "the server answered with the wrong kind of response",
        // `ErrorCode` is non-exhaustive; a new code gets a golden through `ErrorCode::ALL`.
        _ => "refused",
    }
}

/// The connection-level error frames a server sends, with the reference server's fatality and
/// wording.
fn error_frames() -> Vec<(&'static str, &'static str, bool)> {
    vec![
        (error_code::UNAUTHORIZED, "unknown user or bad token", true),
        (error_code::TOKEN_EXPIRED, "the token has expired", true),
        (
            error_code::UNSUPPORTED_VERSION,
            "this server speaks protocol version 1",
            true,
        ),
        (
            error_code::MALFORMED,
            "malformed frame: unknown variant `Nope`",
            false,
        ),
        (
            error_code::TOO_LARGE,
            "frame of 300000 bytes exceeds the limit of 262144",
            true,
        ),
        (
            error_code::PROTOCOL,
            "the first frame must be a hello",
            true,
        ),
        (error_code::IDLE, "nothing received for 60s", true),
        (
            error_code::SLOW_CONSUMER,
            "the connection could not keep up; reconnect and pull",
            true,
        ),
        (error_code::SHUTDOWN, "the server is shutting down", true),
        (
            error_code::INTERNAL,
            "the server failed; try again later",
            true,
        ),
    ]
}

fn server_goldens() -> Vec<Golden> {
    let server = |name: &str, frame| Golden::Server(name.to_owned(), frame);
    let mut goldens = vec![
        server(
            "welcome",
            ServerFrame::Welcome {
                version: PROTOCOL_VERSION,
                server_time: Timestamp(T),
            },
        ),
        server(
            "response_max_seqs",
            response(
                1,
                Response::MaxSeqs {
                    entries: vec![
                        MaxSeqEntry {
                            conversation: conv("c1"),
                            kind: ConversationKind::Group,
                            max_seq: Seq(120),
                            min_seq: Seq(0),
                            read_seq: Seq(100),
                            last_activity: Timestamp(T + 120_007),
                            not_unread: ranges(&[(105, 106)]),
                            deleted_count: 1,
                        },
                        MaxSeqEntry {
                            conversation: conv("c2"),
                            kind: ConversationKind::Direct,
                            max_seq: Seq(5),
                            min_seq: Seq(0),
                            read_seq: Seq(5),
                            last_activity: Timestamp(T + 5_007),
                            not_unread: SeqRanges::new(),
                            deleted_count: 0,
                        },
                    ],
                    has_more: false,
                    token: None,
                    full: true,
                },
            ),
        ),
        server(
            "response_max_seqs_full_with_token",
            response(
                1,
                Response::MaxSeqs {
                    entries: vec![MaxSeqEntry {
                        conversation: conv("c1"),
                        kind: ConversationKind::Group,
                        max_seq: Seq(120),
                        min_seq: Seq(0),
                        read_seq: Seq(100),
                        last_activity: Timestamp(T + 120_007),
                        not_unread: ranges(&[(105, 106)]),
                        deleted_count: 1,
                    }],
                    has_more: false,
                    token: Some(SyncToken::new("9f2c47d1e0a3b586.41877")),
                    full: true,
                },
            ),
        ),
        server(
            "response_max_seqs_delta",
            response(
                1,
                Response::MaxSeqs {
                    entries: vec![MaxSeqEntry {
                        conversation: conv("c1"),
                        kind: ConversationKind::Group,
                        max_seq: Seq(121),
                        min_seq: Seq(0),
                        read_seq: Seq(100),
                        last_activity: Timestamp(T + 121_003),
                        not_unread: ranges(&[(105, 106)]),
                        deleted_count: 1,
                    }],
                    has_more: false,
                    token: Some(SyncToken::new("9f2c47d1e0a3b586.41912")),
                    full: false,
                },
            ),
        ),
        server(
            "response_pulled",
            response(
                4,
                Response::Pulled {
                    ranges: vec![PulledRange {
                        conversation: conv("c1"),
                        from: Seq(118),
                        to: Seq(120),
                        messages: vec![message(119, "bob", b"hi"), message(120, "bob", b"ok?")],
                        missing: ranges(&[(118, 118)]),
                        min_seq: Seq(0),
                        max_seq: Seq(120),
                    }],
                },
            ),
        ),
        server(
            "response_send_ack",
            response(
                5,
                Response::SendAck {
                    client_msg_id: ClientMsgId("phone:1".into()),
                    seq: Seq(121),
                    server_time: Timestamp(T + 121_007),
                },
            ),
        ),
        server(
            "response_deletions",
            response(
                11,
                Response::Deletions {
                    entries: vec![DeletionsEntry {
                        conversation: conv("c1"),
                        seqs: ranges(&[(118, 118)]),
                        deleted_count: 1,
                    }],
                },
            ),
        ),
        server(
            "response_read_ack",
            response(
                12,
                Response::ReadAck {
                    conversation: conv("c1"),
                    seq: Seq(120),
                },
            ),
        ),
        server(
            "response_pong",
            response(
                13,
                Response::Pong {
                    server_time: Timestamp(T),
                },
            ),
        ),
        server(
            "push_message",
            ServerFrame::Push {
                push: Push::Message(message(122, "bob", b"see you")),
            },
        ),
        server(
            "push_read_seq",
            ServerFrame::Push {
                push: Push::ReadSeq {
                    conversation: conv("c1"),
                    seq: Seq(122),
                },
            },
        ),
        server(
            "push_deleted",
            ServerFrame::Push {
                push: Push::Deleted {
                    conversation: conv("c1"),
                    seqs: ranges(&[(118, 118), (121, 122)]),
                    min_seq: Seq(0),
                },
            },
        ),
        server(
            "push_conversation",
            ServerFrame::Push {
                push: Push::Conversation {
                    conversation: conv("c3"),
                    kind: ConversationKind::Group,
                },
            },
        ),
        server(
            "push_kicked",
            ServerFrame::Push {
                push: Push::Kicked {
                    reason: "token revoked".into(),
                },
            },
        ),
    ];
    for code in ErrorCode::ALL {
        goldens.push(server(
            &format!("response_error_{code}"),
            response(
                7,
                Response::Error(ServerError::new(code, refusal_detail(code))),
            ),
        ));
    }
    for (code, message, fatal) in error_frames() {
        goldens.push(server(
            &format!("error_{code}"),
            ServerFrame::Error {
                code: code.into(),
                message: message.into(),
                fatal,
            },
        ));
    }
    goldens
}

fn goldens() -> Vec<Golden> {
    let mut all = client_goldens();
    all.extend(server_goldens());
    all
}

/// The text of a committed snapshot, without insta's header.
fn snapshot_text(name: &str) -> String {
    let path = format!(
        "{}/tests/snapshots/golden_frames__{name}.snap",
        env!("CARGO_MANIFEST_DIR")
    );
    let file = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let (_, body) = file
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .unwrap_or_else(|| panic!("{path}: no insta header"));
    body.trim_end_matches('\n').to_owned()
}

#[test]
fn every_golden_frame_encodes_to_its_snapshot_and_decodes_back() {
    for golden in goldens() {
        let text = golden.encoded();
        insta::assert_snapshot!(golden.name().to_owned(), text);
        let committed = snapshot_text(golden.name());
        assert_eq!(committed, text, "{}", golden.name());
        match &golden {
            Golden::Client(name, frame) => assert_eq!(
                decode_client(committed.as_bytes(), &Limits::client_frames()).as_ref(),
                Ok(frame),
                "{name}"
            ),
            Golden::Server(name, frame) => assert_eq!(
                decode_server(committed.as_bytes(), &Limits::server_frames()).as_ref(),
                Ok(frame),
                "{name}"
            ),
        }
    }
}

#[test]
fn the_protocol_document_shows_every_golden_frame() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let missing: Vec<String> = goldens()
        .iter()
        .filter(|g| !doc.contains(&g.encoded()))
        .map(|g| format!("{}: {}", g.name(), g.encoded()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md lacks these golden frames (copy them in exactly):\n{}",
        missing.join("\n")
    );
}

#[test]
fn golden_names_are_unique() {
    let all = goldens();
    let names: BTreeSet<&str> = all.iter().map(Golden::name).collect();
    assert_eq!(names.len(), all.len());
}

// The wire name of each variant. These matches are exhaustive on purpose: a new variant does
// not compile until it is named here, and then `every_variant_has_a_golden` fails until a
// golden of it exists (and `docs/protocol.md` shows it).

fn client_frame_variant(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello { .. } => "hello",
        ClientFrame::Request { .. } => "request",
    }
}

fn server_frame_variant(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome { .. } => "welcome",
        ServerFrame::Response { .. } => "response",
        ServerFrame::Push { .. } => "push",
        ServerFrame::Error { .. } => "error",
    }
}

fn request_variant(request: &Request) -> &'static str {
    match request {
        Request::GetMaxSeqs { .. } => "GetMaxSeqs",
        Request::Pull { .. } => "Pull",
        Request::Send { .. } => "Send",
        Request::GetDeletions { .. } => "GetDeletions",
        Request::MarkRead { .. } => "MarkRead",
        Request::Ping => "Ping",
    }
}

fn response_variant(response: &Response) -> &'static str {
    match response {
        Response::MaxSeqs { .. } => "MaxSeqs",
        Response::Pulled { .. } => "Pulled",
        Response::SendAck { .. } => "SendAck",
        Response::Deletions { .. } => "Deletions",
        Response::ReadAck { .. } => "ReadAck",
        Response::Pong { .. } => "Pong",
        Response::Error(_) => "Error",
    }
}

fn push_variant(push: &Push) -> &'static str {
    match push {
        Push::Message(_) => "Message",
        Push::ReadSeq { .. } => "ReadSeq",
        Push::Deleted { .. } => "Deleted",
        Push::Conversation { .. } => "Conversation",
        Push::Kicked { .. } => "Kicked",
    }
}

fn content_kind_variant(kind: &ContentKind) -> &'static str {
    match kind {
        ContentKind::Text => "Text",
        ContentKind::Image => "Image",
        ContentKind::File => "File",
        ContentKind::Custom(_) => "Custom",
        ContentKind::Edit { .. } => "Edit",
        ContentKind::Revoke { .. } => "Revoke",
    }
}

fn conversation_kind_variant(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "Direct",
        ConversationKind::Group => "Group",
    }
}

/// The variant names serde accepts for `T`, read from its "unknown variant" error (the one
/// place serde's derive lists them at run time).
fn serde_variants<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    unknown: &str,
) -> BTreeSet<String> {
    let err = serde_json::from_str::<T>(unknown).unwrap_err().to_string();
    let (_, expected) = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("not an unknown-variant error: {err}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[derive(Default)]
struct Covered {
    client_frames: BTreeSet<String>,
    server_frames: BTreeSet<String>,
    requests: BTreeSet<String>,
    responses: BTreeSet<String>,
    pushes: BTreeSet<String>,
    content_kinds: BTreeSet<String>,
    conversation_kinds: BTreeSet<String>,
    error_codes: BTreeSet<ErrorCode>,
}

impl Covered {
    fn message(&mut self, message: &ServerMessage) {
        self.content_kinds
            .insert(content_kind_variant(&message.kind).into());
    }

    fn client(&mut self, frame: &ClientFrame) {
        self.client_frames
            .insert(client_frame_variant(frame).into());
        if let ClientFrame::Request { request, .. } = frame {
            self.requests.insert(request_variant(request).into());
            if let Request::Send { kind, .. } = request {
                self.content_kinds.insert(content_kind_variant(kind).into());
            }
        }
    }

    fn server(&mut self, frame: &ServerFrame) {
        self.server_frames
            .insert(server_frame_variant(frame).into());
        match frame {
            ServerFrame::Response { response, .. } => {
                self.responses.insert(response_variant(response).into());
                match response {
                    Response::MaxSeqs { entries, .. } => {
                        for entry in entries {
                            self.conversation_kinds
                                .insert(conversation_kind_variant(entry.kind).into());
                        }
                    }
                    Response::Pulled { ranges } => {
                        ranges
                            .iter()
                            .flat_map(|r| &r.messages)
                            .for_each(|m| self.message(m));
                    }
                    Response::Error(error) => {
                        self.error_codes.insert(error.error_code().unwrap());
                    }
                    _ => {}
                }
            }
            ServerFrame::Push { push } => {
                self.pushes.insert(push_variant(push).into());
                match push {
                    Push::Message(message) => self.message(message),
                    Push::Conversation { kind, .. } => {
                        self.conversation_kinds
                            .insert(conversation_kind_variant(*kind).into());
                    }
                    _ => {}
                }
            }
            ServerFrame::Welcome { .. } | ServerFrame::Error { .. } => {}
        }
    }
}

#[test]
fn every_variant_has_a_golden() {
    let mut covered = Covered::default();
    for golden in goldens() {
        match &golden {
            Golden::Client(_, frame) => covered.client(frame),
            Golden::Server(_, frame) => covered.server(frame),
        }
    }
    assert_eq!(
        covered.client_frames,
        serde_variants::<ClientFrame>(r#"{"type":"?"}"#)
    );
    assert_eq!(
        covered.server_frames,
        serde_variants::<ServerFrame>(r#"{"type":"?"}"#)
    );
    assert_eq!(covered.requests, serde_variants::<Request>(r#"{"?":{}}"#));
    assert_eq!(covered.responses, serde_variants::<Response>(r#"{"?":{}}"#));
    assert_eq!(covered.pushes, serde_variants::<Push>(r#"{"?":{}}"#));
    assert_eq!(
        covered.content_kinds,
        serde_variants::<ContentKind>(r#""?""#)
    );
    assert_eq!(
        covered.conversation_kinds,
        serde_variants::<ConversationKind>(r#""?""#)
    );
    assert_eq!(
        covered.error_codes,
        ErrorCode::ALL.into_iter().collect::<BTreeSet<_>>()
    );
    // Every connection-level code the wire module names has an error-frame golden.
    let frames: BTreeSet<&str> = error_frames().iter().map(|(code, ..)| *code).collect();
    for code in [
        error_code::UNAUTHORIZED,
        error_code::TOKEN_EXPIRED,
        error_code::UNSUPPORTED_VERSION,
        error_code::MALFORMED,
        error_code::TOO_LARGE,
        error_code::PROTOCOL,
        error_code::IDLE,
        error_code::SLOW_CONSUMER,
        error_code::SHUTDOWN,
        error_code::INTERNAL,
    ] {
        assert!(frames.contains(code), "no error frame golden for {code}");
    }
}
