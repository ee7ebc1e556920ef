use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationKind, MaxSeqEntry, PullRange, PulledRange, Seq,
    SeqRanges, ServerError,
};

use tidemark_engine::protocol::ErrorCode;

use super::*;

fn conv(id: &str) -> ConversationId {
    ConversationId(id.into())
}

fn message(seq: u64, content: &[u8]) -> ServerMessage {
    ServerMessage {
        conversation: conv("c1"),
        seq: Seq(seq),
        client_msg_id: ClientMsgId(format!("m{seq}")),
        sender: UserId("bob".into()),
        kind: ContentKind::Text,
        content: content.to_vec(),
        created_at: Timestamp(10),
        server_time: Timestamp(11),
    }
}

fn client_frames() -> Vec<ClientFrame> {
    vec![
        hello(&UserId("alice".into()), &DeviceId("phone".into()), "t0k"),
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::GetMaxSeqs {
                after: Some(conv("c0")),
                limit: 100,
                since: None,
            },
        },
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::GetMaxSeqs {
                after: None,
                limit: 100,
                since: Some(SyncToken::new("5f3a.42")),
            },
        },
        ClientFrame::Request {
            id: RequestId(2),
            request: Request::Pull {
                ranges: vec![PullRange {
                    conversation: conv("c1"),
                    from: Seq(1),
                    to: Seq(50),
                }],
                max_bytes: None,
            },
        },
        ClientFrame::Request {
            id: RequestId(3),
            request: Request::Send {
                conversation: conv("c1"),
                client_msg_id: ClientMsgId("d:1".into()),
                kind: ContentKind::Custom("x".into()),
                content: vec![0, 1, 2, 255, b'"'],
                created_at: Timestamp(5),
            },
        },
        ClientFrame::Request {
            id: RequestId(4),
            request: Request::Ping,
        },
    ]
}

fn server_frames() -> Vec<ServerFrame> {
    vec![
        ServerFrame::Welcome {
            version: PROTOCOL_VERSION,
            server_time: Timestamp(1),
        },
        ServerFrame::Response {
            id: RequestId(1),
            response: Response::MaxSeqs {
                entries: vec![MaxSeqEntry {
                    conversation: conv("c1"),
                    kind: ConversationKind::Group,
                    max_seq: Seq(9),
                    min_seq: Seq(0),
                    read_seq: Seq(3),
                    last_activity: Timestamp(7),
                    not_unread: SeqRanges::new(),
                    deleted_count: 1,
                }],
                has_more: false,
                token: None,
                full: true,
            },
        },
        ServerFrame::Response {
            id: RequestId(2),
            response: Response::Pulled {
                ranges: vec![PulledRange {
                    conversation: conv("c1"),
                    from: Seq(1),
                    to: Seq(2),
                    messages: vec![message(1, "héllo".as_bytes()), message(2, &[])],
                    missing: SeqRanges::new(),
                    min_seq: Seq(0),
                    max_seq: Seq(2),
                }],
            },
        },
        ServerFrame::Response {
            id: RequestId(3),
            response: Response::Error(ServerError::new(ErrorCode::NotMember, "no")),
        },
        ServerFrame::Push {
            push: Push::Message(message(3, b"hi")),
        },
        ServerFrame::Error {
            code: error_code::MALFORMED.into(),
            message: "bad".into(),
            fatal: false,
        },
        ServerFrame::Response {
            id: RequestId(1),
            response: Response::MaxSeqs {
                entries: Vec::new(),
                has_more: true,
                token: Some(SyncToken::new("5f3a.43")),
                full: false,
            },
        },
    ]
}

#[test]
fn every_frame_round_trips() {
    for frame in client_frames() {
        let text = encode(&frame);
        assert_eq!(
            decode_client(text.as_bytes(), &Limits::client_frames()),
            Ok(frame)
        );
    }
    for frame in server_frames() {
        let text = encode(&frame);
        assert_eq!(
            decode_server(text.as_bytes(), &Limits::server_frames()),
            Ok(frame)
        );
    }
}

/// The decoder reads the tag first when it comes first (as our encoder writes it), and still
/// takes every frame whose tag comes later, as serde's derive would.
#[test]
fn server_frames_decode_with_the_tag_anywhere() {
    for frame in server_frames() {
        let serde_json::Value::Object(fields) = serde_json::to_value(&frame).unwrap() else {
            panic!("a frame is an object");
        };
        // The tag last instead of first.
        let mut moved = serde_json::Map::new();
        for (key, value) in fields.iter().filter(|(key, _)| *key != "type") {
            moved.insert(key.clone(), value.clone());
        }
        moved.insert("type".into(), fields["type"].clone());
        let text = serde_json::to_string(&moved).unwrap();
        assert!(!text.starts_with(r#"{"type""#), "{text}");
        assert_eq!(
            decode_server(text.as_bytes(), &Limits::server_frames()),
            Ok(frame)
        );
    }
    let limits = Limits::server_frames();
    for bad in [
        &br#"{}"#[..],
        br#"{"type":"nope"}"#,
        br#"{"type":7}"#,
        br#"{"version":1,"server_time":2}"#,
        br#"{"version":1,"type":7,"server_time":2}"#,
        br#"{"version":1,"type":"welcome","server_time":2,"extra":0}"#,
        br#"{"type":"welcome","version":1,"server_time":2,"extra":0}"#,
        br#"{"type":"welcome","version":1}"#,
        br#"{"type":"push","push":"Nope"}"#,
    ] {
        match decode_server(bad, &limits) {
            Err(FrameError::Malformed(_)) => {}
            other => panic!("{:?} decoded as {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

#[test]
fn content_travels_as_base64() {
    let text = encode(&ServerFrame::Push {
        push: Push::Message(message(1, b"hi")),
    });
    assert!(text.contains(r#""content":"aGk=""#), "{text}");
}

#[test]
fn the_documented_hello_decodes() {
    let text = r#"{"type":"hello","version":1,"user":"alice","device":"phone","token":"x"}"#;
    let frame = decode_client(text.as_bytes(), &Limits::client_frames());
    assert_eq!(
        frame,
        Ok(hello(
            &UserId("alice".into()),
            &DeviceId("phone".into()),
            "x"
        ))
    );
}

#[test]
fn oversized_frames_are_refused_before_parsing() {
    let limits = Limits {
        max_frame_bytes: 16,
        ..Limits::client_frames()
    };
    let text = encode(&client_frames()[0]);
    assert_eq!(
        decode_client(text.as_bytes(), &limits),
        Err(FrameError::TooLarge {
            size: text.len(),
            limit: 16
        })
    );
}

#[test]
fn malformed_frames_are_typed_errors() {
    let limits = Limits::client_frames();
    for bad in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\xff\xfe",
        br#"{"type":"hello"}"#,
        br#"{"type":"nope"}"#,
        br#"{"type":"request","id":-1,"request":"Ping"}"#,
        br#"{"type":"request","id":1,"request":"Ping","extra":true}"#,
        br#"{"type":"request","id":1,"request":{"Send":{"conversation":"c","client_msg_id":"m","kind":"Text","content":"not base64!","created_at":0}}}"#,
    ] {
        match decode_client(bad, &limits) {
            Err(FrameError::Malformed(_)) => {}
            other => panic!("{:?} decoded as {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

#[test]
fn invalid_values_are_refused() {
    let limits = Limits::client_frames();
    let long = "x".repeat(limits.max_id_bytes + 1);
    let invalid = [
        hello(&UserId(String::new()), &DeviceId("d".into()), "t"),
        hello(&UserId(long.clone()), &DeviceId("d".into()), "t"),
        hello(
            &UserId("u".into()),
            &DeviceId("d".into()),
            &"t".repeat(limits.max_token_bytes + 1),
        ),
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::Pull {
                ranges: vec![PullRange {
                    conversation: conv("c"),
                    from: Seq(5),
                    to: Seq(4),
                }],
                max_bytes: None,
            },
        },
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::GetDeletions {
                conversations: vec![conv("c"); limits.max_items + 1],
            },
        },
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::GetMaxSeqs {
                after: None,
                limit: 0,
                since: None,
            },
        },
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::GetMaxSeqs {
                after: None,
                limit: 10,
                since: Some(SyncToken::new("x".repeat(SyncToken::MAX_BYTES + 1))),
            },
        },
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::MarkRead {
                conversation: conv(&long),
                seq: Seq(1),
            },
        },
        // A custom kind name is bounded like an id.
        ClientFrame::Request {
            id: RequestId(1),
            request: Request::Send {
                conversation: conv("c"),
                client_msg_id: ClientMsgId("m".into()),
                kind: ContentKind::Custom(long.clone()),
                content: Vec::new(),
                created_at: Timestamp(0),
            },
        },
    ];
    for frame in invalid {
        let text = encode(&frame);
        match decode_client(text.as_bytes(), &limits) {
            Err(FrameError::Invalid(_)) => {}
            other => panic!("{frame:?} decoded as {other:?}"),
        }
    }
}

#[test]
fn client_and_server_frames_do_not_mix() {
    let text = encode(&server_frames()[0]);
    assert!(decode_client(text.as_bytes(), &Limits::client_frames()).is_err());
    let text = encode(&client_frames()[0]);
    assert!(decode_server(text.as_bytes(), &Limits::server_frames()).is_err());
}

#[test]
fn incoming_maps_frames_for_the_engine() {
    let push = Push::Message(message(1, b"x"));
    assert_eq!(
        incoming(ServerFrame::Push { push: push.clone() }).ok(),
        Some(Incoming::Push(push))
    );
    assert_eq!(
        incoming(ServerFrame::Response {
            id: RequestId(4),
            response: Response::Pong {
                server_time: Timestamp(1)
            }
        })
        .ok(),
        Some(Incoming::Response(
            RequestId(4),
            Response::Pong {
                server_time: Timestamp(1)
            }
        ))
    );
    assert!(matches!(
        incoming(server_frames()[0].clone()),
        Err(TransportError::Protocol(_))
    ));
    assert!(matches!(
        incoming(server_frames()[5].clone()),
        Err(TransportError::Connection(_))
    ));
}

/// The fuzz target's committed seeds stay valid frames as the protocol changes (a seed that
/// no longer decodes would only exercise the error paths).
#[test]
fn the_fuzz_seeds_are_valid_frames() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/wire_frames");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let client = decode_client(&bytes, &Limits::client_frames());
        let server = decode_server(&bytes, &Limits::server_frames());
        assert!(
            client.is_ok() || server.is_ok(),
            "{}: {client:?} / {server:?}",
            String::from_utf8_lossy(&bytes)
        );
        seen += 1;
    }
    assert!(seen >= 10);
}

#[test]
fn pulls_with_and_without_a_byte_budget_decode() {
    let limits = Limits::client_frames();
    // A frame of a client that predates the byte budget.
    let old = br#"{"type":"request","id":1,"request":{"Pull":{"ranges":[{"conversation":"c","from":1,"to":2}]}}}"#;
    let Ok(ClientFrame::Request {
        request: Request::Pull { max_bytes, .. },
        ..
    }) = decode_client(old, &limits)
    else {
        panic!("an old pull frame must decode");
    };
    assert_eq!(max_bytes, None);
    let new = br#"{"type":"request","id":1,"request":{"Pull":{"ranges":[],"max_bytes":4096}}}"#;
    assert!(matches!(
        decode_client(new, &limits),
        Ok(ClientFrame::Request {
            request: Request::Pull {
                max_bytes: Some(4096),
                ..
            },
            ..
        })
    ));
    // Without a budget the frame is as before, byte for byte.
    let frame = ClientFrame::Request {
        id: RequestId(1),
        request: Request::Pull {
            ranges: Vec::new(),
            max_bytes: None,
        },
    };
    assert_eq!(
        encode(&frame),
        r#"{"type":"request","id":1,"request":{"Pull":{"ranges":[]}}}"#
    );
}

/// The size bound the server caps replies with is never below the encoded size, whatever
/// the ids, kind and content hold.
#[test]
fn message_size_bounds_the_encoded_size() {
    let nasty = "\"\\\u{1}\u{1f}\n\u{7f}é🦀".repeat(9);
    let kinds = [
        ContentKind::Text,
        ContentKind::Image,
        ContentKind::File,
        ContentKind::Custom(nasty.clone()),
        ContentKind::Custom(String::new()),
        ContentKind::Edit {
            target: Seq(u64::MAX),
        },
        ContentKind::Revoke {
            target: Seq(u64::MAX),
        },
    ];
    for kind in kinds {
        for len in [0, 1, 2, 3, 4, 1000, 64 * 1024] {
            let m = ServerMessage {
                conversation: conv(&nasty),
                seq: Seq(u64::MAX),
                client_msg_id: ClientMsgId(nasty.clone()),
                sender: UserId(nasty.clone()),
                kind: kind.clone(),
                content: vec![0xFF; len],
                created_at: Timestamp(u64::MAX),
                server_time: Timestamp(u64::MAX),
            };
            let encoded = serde_json::to_string(&m).unwrap().len() + 1;
            assert!(
                size::message(&m) >= encoded,
                "{kind:?}, {len} bytes: bound {} < {encoded}",
                size::message(&m)
            );
        }
    }
    let range = PulledRange {
        conversation: conv(&nasty),
        from: Seq(u64::MAX),
        to: Seq(u64::MAX),
        messages: Vec::new(),
        missing: SeqRanges::new(),
        min_seq: Seq(u64::MAX),
        max_seq: Seq(u64::MAX),
    };
    assert!(size::pulled_range(&range.conversation) > serde_json::to_string(&range).unwrap().len());
    let one = SeqRanges::from_range(Seq(u64::MAX - 1), Seq(u64::MAX));
    assert!(size::SEQ_RANGE >= serde_json::to_string(&one).unwrap().len());
}
