//! Unit tests of the server rules, each run over every store: the memory store and, with the
//! `sqlite` feature, the SQLite store (in memory). Tests are generic functions over the
//! store; `for_each_store!` at the end instantiates them per store.

use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, MaxSeqEntry, PullRange, Push,
    Request, RequestId, Response, Seq, SeqRanges, ServerError, SyncToken, Timestamp, UserId,
};

use super::*;
use tidemark_engine::protocol::ErrorCode;

const T0: Timestamp = Timestamp(1_000);

fn uid(s: &str) -> UserId {
    UserId::from(s)
}

fn cid(s: &str) -> ConversationId {
    ConversationId::from(s)
}

/// alice and bob share group "g"; alice and carol share direct "d"; dave is alone.
/// Connections: alice 1 and 2, bob 3, carol 4.
fn server<St: ServerStore>(store: St, config: ServerConfig) -> ServerCore<St> {
    let mut server = ServerCore::new(store, config);
    for u in ["alice", "bob", "carol", "dave"] {
        server.create_user(&uid(u)).unwrap();
    }
    server
        .create_conversation(
            &cid("g"),
            ConversationKind::Group,
            &[uid("alice"), uid("bob")],
        )
        .unwrap();
    server
        .create_conversation(
            &cid("d"),
            ConversationKind::Direct,
            &[uid("alice"), uid("carol")],
        )
        .unwrap();
    for (conn, user, device) in [
        (1, "alice", "phone"),
        (2, "alice", "laptop"),
        (3, "bob", "phone"),
        (4, "carol", "phone"),
    ] {
        server
            .connect(ConnId(conn), uid(user), device.into())
            .unwrap();
    }
    server
}

fn drain<St: ServerStore>(server: &mut ServerCore<St>) -> Vec<ServerOutput> {
    std::iter::from_fn(|| server.poll_output()).collect()
}

fn send_req(conv: &str, cmid: &str, text: &str) -> Request {
    Request::Send {
        conversation: cid(conv),
        client_msg_id: ClientMsgId::from(cmid),
        kind: ContentKind::Text,
        content: text.as_bytes().to_vec(),
        created_at: Timestamp(7),
    }
}

/// Sends on `conn` and returns the response, dropping every other output.
fn request<St: ServerStore>(
    server: &mut ServerCore<St>,
    now: Timestamp,
    conn: u64,
    req: Request,
) -> Response {
    server.handle_request(now, ConnId(conn), RequestId(99), req);
    let outputs = drain(server);
    match outputs.into_iter().next() {
        Some(ServerOutput::Respond {
            conn: c,
            id,
            response,
        }) => {
            assert_eq!((c, id), (ConnId(conn), RequestId(99)));
            response
        }
        other => panic!("expected a response first, got {other:?}"),
    }
}

fn error_code(response: &Response) -> Option<(ErrorCode, bool)> {
    match response {
        Response::Error(e) => Some((e.error_code()?, e.permanent)),
        _ => None,
    }
}

fn pull<St: ServerStore>(
    server: &mut ServerCore<St>,
    conn: u64,
    ranges: &[(&str, u64, u64)],
) -> Response {
    let ranges = ranges
        .iter()
        .map(|(c, from, to)| PullRange {
            conversation: cid(c),
            from: Seq(*from),
            to: Seq(*to),
        })
        .collect();
    request(
        server,
        T0,
        conn,
        Request::Pull {
            ranges,
            max_bytes: None,
        },
    )
}

fn fill<St: ServerStore>(server: &mut ServerCore<St>, conv: &str, user: &str, n: u64) {
    for i in 0..n {
        server
            .append_as(
                T0.plus_millis(i),
                &uid(user),
                &cid(conv),
                ContentKind::Text,
                vec![i as u8],
            )
            .unwrap();
    }
    drain(server);
}

fn sends_get_consecutive_seqs_and_server_time<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    for (i, cmid) in ["a", "b", "c"].into_iter().enumerate() {
        let now = T0.plus_millis(i as u64 * 10);
        let r = request(&mut s, now, 1, send_req("g", cmid, "hi"));
        assert_eq!(
            r,
            Response::SendAck {
                client_msg_id: cmid.into(),
                seq: Seq(i as u64 + 1),
                server_time: now,
            }
        );
    }
    let m = s
        .append_as(
            T0.plus_millis(100),
            &uid("bob"),
            &cid("g"),
            ContentKind::Text,
            b"yo".to_vec(),
        )
        .unwrap();
    assert_eq!(m.seq, Seq(4));
    assert_eq!(m.client_msg_id, ClientMsgId::from("admin-1"));
    let info = s.store().conversation(&cid("g")).unwrap().unwrap();
    assert_eq!(info.max_seq, Seq(4));
    assert_eq!(info.last_activity, T0.plus_millis(100));
    // Sending marks read for the sender.
    assert_eq!(
        s.store().read_seq(&uid("alice"), &cid("g")).unwrap(),
        Seq(3)
    );
    assert_eq!(s.store().read_seq(&uid("bob"), &cid("g")).unwrap(), Seq(4));
}

fn resend_is_idempotent_and_does_not_fan_out_again<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let first = request(&mut s, T0, 1, send_req("g", "m1", "hello"));
    // The same client id later, from the user's other device, even with other content.
    s.handle_request(
        T0.plus_millis(500),
        ConnId(2),
        RequestId(5),
        send_req("g", "m1", "other"),
    );
    let outputs = drain(&mut s);
    assert_eq!(
        outputs,
        vec![ServerOutput::Respond {
            conn: ConnId(2),
            id: RequestId(5),
            response: first.clone(),
        }]
    );
    let all = s
        .store()
        .messages(&cid("g"), Seq(1), Seq(100), usize::MAX)
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].content, b"hello");
    // Another sender may use the same client id: the key is (sender, client id).
    let bob = request(&mut s, T0, 3, send_req("g", "m1", "bob's"));
    assert!(matches!(bob, Response::SendAck { seq: Seq(2), .. }));
}

fn send_fans_out_to_every_other_connection_of_every_member<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    s.handle_request(T0, ConnId(1), RequestId(1), send_req("g", "m1", "hi"));
    let outputs = drain(&mut s);
    assert!(matches!(
        &outputs[0],
        ServerOutput::Respond {
            conn: ConnId(1),
            response: Response::SendAck { seq: Seq(1), .. },
            ..
        }
    ));
    let mut targets: Vec<(u64, &str)> = outputs[1..]
        .iter()
        .map(|o| match o {
            ServerOutput::Push {
                conn,
                push: Push::Message(m),
            } => {
                assert_eq!(m.seq, Seq(1));
                (conn.0, "message")
            }
            ServerOutput::Push {
                conn,
                push: Push::ReadSeq { seq, .. },
            } => {
                assert_eq!(*seq, Seq(1));
                (conn.0, "read")
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    targets.sort();
    // alice's laptop gets the message and the read seq, bob the message; the sending
    // connection and carol (not a member) nothing.
    assert_eq!(targets, vec![(2, "message"), (2, "read"), (3, "message")]);

    // An admin append reaches every connection of every member, the sender's included.
    s.append_as(T0, &uid("bob"), &cid("g"), ContentKind::Text, vec![])
        .unwrap();
    let mut conns: Vec<(u64, bool)> = drain(&mut s)
        .into_iter()
        .map(|o| match o {
            ServerOutput::Push { conn, push } => (conn.0, matches!(push, Push::Message(_))),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    conns.sort();
    assert_eq!(conns, vec![(1, true), (2, true), (3, false), (3, true)]);

    // Disconnected connections get nothing.
    s.disconnect(ConnId(2));
    s.disconnect(ConnId(3));
    s.handle_request(T0, ConnId(1), RequestId(2), send_req("g", "m2", "hi"));
    assert_eq!(drain(&mut s).len(), 1);
}

fn non_members_are_refused<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let r = request(&mut s, T0, 3, send_req("d", "x", "hi"));
    assert_eq!(error_code(&r), Some((ErrorCode::NotMember, true)));
    let r = request(&mut s, T0, 3, send_req("nope", "x", "hi"));
    assert_eq!(error_code(&r), Some((ErrorCode::NotMember, true)));
    let r = request(
        &mut s,
        T0,
        3,
        Request::MarkRead {
            conversation: cid("d"),
            seq: Seq(1),
        },
    );
    assert_eq!(error_code(&r), Some((ErrorCode::NotMember, true)));
    // One unreadable range refuses the whole pull.
    fill(&mut s, "g", "alice", 2);
    let r = pull(&mut s, 3, &[("g", 1, 2), ("d", 1, 5)]);
    assert_eq!(error_code(&r), Some((ErrorCode::NotMember, true)));
    assert_eq!(
        s.store().conversation(&cid("d")).unwrap().unwrap().max_seq,
        Seq(0)
    );
    assert!(matches!(
        s.append_as(T0, &uid("bob"), &cid("d"), ContentKind::Text, vec![]),
        Err(AdminError::NotMember { .. })
    ));
}

fn oversized_content_is_refused_for_good<St: ServerStore>(store: St) {
    let mut s = server(
        store,
        ServerConfig {
            max_content_bytes: 4,
            ..ServerConfig::default()
        },
    );
    let r = request(&mut s, T0, 1, send_req("g", "x", "12345"));
    assert_eq!(error_code(&r), Some((ErrorCode::TooLarge, true)));
    let r = request(&mut s, T0, 1, send_req("g", "y", "1234"));
    assert!(matches!(r, Response::SendAck { seq: Seq(1), .. }));
}

fn injected_send_faults_store_nothing<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let fault = ServerError {
        code: "unavailable".into(),
        message: "try later".into(),
        permanent: false,
    };
    s.fail_next_sends(2, fault.clone());
    assert_eq!(
        request(&mut s, T0, 1, send_req("g", "m", "x")),
        Response::Error(fault.clone())
    );
    assert_eq!(
        request(&mut s, T0, 1, send_req("g", "m", "x")),
        Response::Error(fault)
    );
    assert!(matches!(
        request(&mut s, T0, 1, send_req("g", "m", "x")),
        Response::SendAck { seq: Seq(1), .. }
    ));
}

fn pull_reports_deleted_and_below_floor_seqs_as_missing<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    fill(&mut s, "g", "bob", 10);
    s.delete_seqs(&cid("g"), &SeqRanges::from_iter([Seq(5), Seq(6)]))
        .unwrap();
    assert_eq!(s.set_min_seq(&cid("g"), Seq(3)).unwrap(), Seq(3));
    drain(&mut s);
    let Response::Pulled { ranges } = pull(&mut s, 1, &[("g", 0, 50), ("g", 11, 20), ("g", 4, 4)])
    else {
        panic!("expected Pulled");
    };
    // The range beyond the max seq is left out; the first is clamped to 1..=10.
    assert_eq!(ranges.len(), 2);
    let r = &ranges[0];
    assert_eq!(
        (r.from, r.to, r.min_seq, r.max_seq),
        (Seq(1), Seq(10), Seq(3), Seq(10))
    );
    let seqs: Vec<u64> = r.messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, vec![3, 4, 7, 8, 9, 10]);
    let mut missing = SeqRanges::from_range(Seq(1), Seq(2));
    missing.insert_range(Seq(5), Seq(6));
    assert_eq!(r.missing, missing);
    assert_eq!(
        (ranges[1].from, ranges[1].to, ranges[1].messages.len()),
        (Seq(4), Seq(4), 1)
    );
    assert!(ranges[1].missing.is_empty());
    // A floor past everything: the whole history is missing.
    assert_eq!(s.set_min_seq(&cid("g"), Seq(100)).unwrap(), Seq(11));
    drain(&mut s);
    let Response::Pulled { ranges } = pull(&mut s, 1, &[("g", 1, 10)]) else {
        panic!("expected Pulled");
    };
    assert!(ranges[0].messages.is_empty());
    assert_eq!(ranges[0].missing, SeqRanges::from_range(Seq(1), Seq(10)));
}

fn pull_caps_messages_per_response<St: ServerStore>(store: St) {
    let mut s = server(
        store,
        ServerConfig {
            max_pull_messages: 3,
            ..ServerConfig::default()
        },
    );
    fill(&mut s, "g", "bob", 10);
    fill(&mut s, "d", "carol", 2);
    s.delete_seqs(&cid("g"), &SeqRanges::from_iter([Seq(2)]))
        .unwrap();
    drain(&mut s);
    // Cut inside the first range; the second is left out.
    let Response::Pulled { ranges } = pull(&mut s, 1, &[("g", 1, 10), ("d", 1, 2)]) else {
        panic!("expected Pulled");
    };
    assert_eq!(ranges.len(), 1);
    assert_eq!((ranges[0].from, ranges[0].to), (Seq(1), Seq(4)));
    assert_eq!(ranges[0].messages.len(), 3);
    assert_eq!(ranges[0].missing, SeqRanges::from_iter([Seq(2)]));
    // Exactly at the cap: the range is whole (the deleted tail included), the next left out.
    let Response::Pulled { ranges } = pull(&mut s, 1, &[("g", 8, 10), ("d", 1, 2)]) else {
        panic!("expected Pulled");
    };
    assert_eq!(ranges.len(), 1);
    assert_eq!((ranges[0].from, ranges[0].to), (Seq(8), Seq(10)));
    // Under the cap: both, and an empty (all deleted) range costs nothing.
    let Response::Pulled { ranges } = pull(&mut s, 1, &[("g", 2, 2), ("g", 9, 10), ("d", 2, 2)])
    else {
        panic!("expected Pulled");
    };
    let shape: Vec<(u64, u64, usize)> = ranges
        .iter()
        .map(|r| (r.from.0, r.to.0, r.messages.len()))
        .collect();
    assert_eq!(shape, vec![(2, 2, 0), (9, 10, 2), (2, 2, 1)]);
}

fn max_seqs_are_paged_by_conversation_id<St: ServerStore>(store: St) {
    let mut s = server(
        store,
        ServerConfig {
            max_seqs_page: 2,
            ..ServerConfig::default()
        },
    );
    for id in ["c1", "c2", "c3"] {
        s.create_conversation(
            &cid(id),
            ConversationKind::Group,
            &[uid("alice"), uid("bob")],
        )
        .unwrap();
    }
    fill(&mut s, "c2", "bob", 3);
    assert!(matches!(
        request(
            &mut s,
            T0,
            1,
            Request::MarkRead {
                conversation: cid("c2"),
                seq: Seq(2)
            }
        ),
        Response::ReadAck { seq: Seq(2), .. }
    ));
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        // A limit above the server's page size is cut to it.
        let r = request(
            &mut s,
            T0,
            1,
            Request::GetMaxSeqs {
                after: after.clone(),
                limit: 100,
                since: None,
            },
        );
        let Response::MaxSeqs {
            entries,
            has_more,
            full: true,
            ..
        } = r
        else {
            panic!("expected MaxSeqs");
        };
        pages += 1;
        assert!(entries.len() <= 2);
        after = entries.last().map(|e| e.conversation.clone());
        seen.extend(entries);
        if !has_more {
            break;
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<&str> = seen.iter().map(|e| e.conversation.as_str()).collect();
    assert_eq!(ids, vec!["c1", "c2", "c3", "d", "g"]);
    assert_eq!(
        seen[1],
        MaxSeqEntry {
            conversation: cid("c2"),
            kind: ConversationKind::Group,
            max_seq: Seq(3),
            min_seq: Seq(0),
            read_seq: Seq(2),
            last_activity: T0.plus_millis(2),
            not_unread: SeqRanges::new(),
            deleted_count: 0,
        }
    );
    assert_eq!(seen[3].kind, ConversationKind::Direct);
    // dave has no conversation.
    s.connect(ConnId(9), uid("dave"), "pc".into()).unwrap();
    assert!(matches!(
        request(
            &mut s,
            T0,
            9,
            Request::GetMaxSeqs {
                after: None,
                limit: 10,
                since: None,
            }
        ),
        Response::MaxSeqs {
            entries,
            has_more: false,
            token: Some(_),
            full: true,
        } if entries.is_empty()
    ));
}

fn read_seq_keeps_the_maximum_and_tells_other_devices<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    fill(&mut s, "g", "bob", 5);
    s.handle_request(
        T0,
        ConnId(1),
        RequestId(1),
        Request::MarkRead {
            conversation: cid("g"),
            seq: Seq(4),
        },
    );
    assert_eq!(
        drain(&mut s),
        vec![
            ServerOutput::Respond {
                conn: ConnId(1),
                id: RequestId(1),
                response: Response::ReadAck {
                    conversation: cid("g"),
                    seq: Seq(4)
                },
            },
            ServerOutput::Push {
                conn: ConnId(2),
                push: Push::ReadSeq {
                    conversation: cid("g"),
                    seq: Seq(4)
                },
            },
        ]
    );
    // Lower: the answer carries the kept maximum and nobody is told.
    s.handle_request(
        T0,
        ConnId(2),
        RequestId(2),
        Request::MarkRead {
            conversation: cid("g"),
            seq: Seq(2),
        },
    );
    assert_eq!(
        drain(&mut s),
        vec![ServerOutput::Respond {
            conn: ConnId(2),
            id: RequestId(2),
            response: Response::ReadAck {
                conversation: cid("g"),
                seq: Seq(4)
            },
        }]
    );
    // Beyond the max seq: clamped.
    let r = request(
        &mut s,
        T0,
        1,
        Request::MarkRead {
            conversation: cid("g"),
            seq: Seq(50),
        },
    );
    assert_eq!(
        r,
        Response::ReadAck {
            conversation: cid("g"),
            seq: Seq(5)
        }
    );
}

fn deletions_and_floors_are_pushed_to_online_members<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    fill(&mut s, "g", "bob", 5);
    let newly = s
        .delete_seqs(&cid("g"), &SeqRanges::from_range(Seq(2), Seq(9)))
        .unwrap();
    assert_eq!(newly, SeqRanges::from_range(Seq(2), Seq(5)));
    let outputs = drain(&mut s);
    let conns: Vec<u64> = outputs
        .iter()
        .map(|o| match o {
            ServerOutput::Push {
                conn,
                push: Push::Deleted { seqs, min_seq, .. },
            } => {
                assert_eq!((seqs, *min_seq), (&newly, Seq(0)));
                conn.0
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(conns, vec![1, 2, 3]);
    // Deleting again changes nothing and pushes nothing.
    assert!(s.delete_seqs(&cid("g"), &newly).unwrap().is_empty());
    assert!(drain(&mut s).is_empty());
    s.set_min_seq(&cid("g"), Seq(2)).unwrap();
    assert_eq!(drain(&mut s).len(), 3);
    // A lower floor is ignored.
    assert_eq!(s.set_min_seq(&cid("g"), Seq(1)).unwrap(), Seq(2));
    assert!(drain(&mut s).is_empty());
}

fn kick_pushes_then_closes_and_forgets_the_connection<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    assert!(s.kick(ConnId(2), "elsewhere"));
    assert_eq!(
        drain(&mut s),
        vec![
            ServerOutput::Push {
                conn: ConnId(2),
                push: Push::Kicked {
                    reason: "elsewhere".into()
                },
            },
            ServerOutput::Close { conn: ConnId(2) },
        ]
    );
    assert!(!s.is_connected(ConnId(2)));
    assert_eq!(s.connections_of(&uid("alice")), vec![ConnId(1)]);
    s.handle_request(T0, ConnId(2), RequestId(1), Request::Ping);
    assert!(drain(&mut s).is_empty());
    assert!(!s.kick(ConnId(2), "again"));
    assert_eq!(
        request(&mut s, T0, 1, Request::Ping),
        Response::Pong { server_time: T0 }
    );
}

fn unknown_users_cannot_connect<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    assert!(matches!(
        s.connect(ConnId(8), uid("mallory"), "x".into()),
        Err(ServerStoreError::UnknownUser(_))
    ));
    assert!(!s.is_connected(ConnId(8)));
    assert_eq!(
        s.store().devices(&uid("alice")).unwrap(),
        vec!["laptop".into(), "phone".into()]
    );
}

fn send_kind(conv: &str, cmid: &str, kind: ContentKind, created_at: Timestamp) -> Request {
    Request::Send {
        conversation: cid(conv),
        client_msg_id: ClientMsgId::from(cmid),
        kind,
        content: b"x".to_vec(),
        created_at,
    }
}

fn max_seq<St: ServerStore>(s: &ServerCore<St>, conv: &str) -> Seq {
    s.store().conversation(&cid(conv)).unwrap().unwrap().max_seq
}

/// Failure 1 of issue 9: values above what SQLite holds (i64) were acked, and every other
/// member's client then failed to store them.
fn values_no_store_can_hold_are_refused_for_good<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let r = request(
        &mut s,
        T0,
        1,
        send_kind("g", "t", ContentKind::Text, Timestamp(u64::MAX)),
    );
    assert_eq!(error_code(&r), Some((ErrorCode::InvalidValue, true)));
    let r = request(
        &mut s,
        T0,
        1,
        send_kind("g", "t2", ContentKind::Text, Timestamp(i64::MAX as u64 + 1)),
    );
    assert_eq!(error_code(&r), Some((ErrorCode::InvalidValue, true)));
    for (i, kind) in [
        ContentKind::Edit {
            target: Seq(u64::MAX),
        },
        ContentKind::Revoke {
            target: Seq(u64::MAX),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let r = request(&mut s, T0, 1, send_kind("g", &format!("e{i}"), kind, T0));
        assert_eq!(error_code(&r), Some((ErrorCode::InvalidTarget, true)));
    }
    assert_eq!(max_seq(&s, "g"), Seq(0));
    // Refused ids were not recorded: the same id with a good value is stored.
    let r = request(
        &mut s,
        T0,
        1,
        send_kind("g", "t", ContentKind::Text, Timestamp(i64::MAX as u64)),
    );
    assert!(matches!(r, Response::SendAck { seq: Seq(1), .. }), "{r:?}");
    let stored = s.store().message(&cid("g"), Seq(1)).unwrap().unwrap();
    assert_eq!(stored.created_at, Timestamp(i64::MAX as u64));
    // The server stamps its own time, whatever the client claims.
    assert_eq!(stored.server_time, T0);
}

/// Edits and revokes change an existing, ordinary message of their own conversation.
fn change_targets_must_be_live_ordinary_messages_of_the_conversation<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    for i in 1..=4 {
        let r = request(&mut s, T0, 1, send_req("g", &format!("m{i}"), "hi"));
        assert!(matches!(r, Response::SendAck { .. }));
    }
    s.delete_seqs(&cid("g"), &SeqRanges::from_iter([Seq(3)]))
        .unwrap();
    s.set_min_seq(&cid("g"), Seq(2)).unwrap();
    drain(&mut s);
    let r = request(
        &mut s,
        T0,
        1,
        send_kind("g", "edit-4", ContentKind::Edit { target: Seq(4) }, T0),
    );
    assert!(matches!(r, Response::SendAck { seq: Seq(5), .. }), "{r:?}");
    let cases = [
        ("g", 0, "seq 0"),
        ("g", 1, "below the floor"),
        ("g", 3, "deleted"),
        ("g", 5, "an edit"),
        ("g", 6, "above the max seq"),
        // alice's seq 4 of "g" is not a message of "d".
        ("d", 4, "another conversation's"),
    ];
    for (i, (conv, target, why)) in cases.into_iter().enumerate() {
        for (j, kind) in [
            ContentKind::Edit {
                target: Seq(target),
            },
            ContentKind::Revoke {
                target: Seq(target),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let r = request(
                &mut s,
                T0,
                1,
                send_kind(conv, &format!("c{i}-{j}"), kind, T0),
            );
            assert_eq!(
                error_code(&r),
                Some((ErrorCode::InvalidTarget, true)),
                "{why}"
            );
        }
    }
    assert_eq!((max_seq(&s, "g"), max_seq(&s, "d")), (Seq(5), Seq(0)));
}

/// Failure 3 of issue 9: any member could rewrite anyone's message.
fn only_the_author_edits_or_revokes<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    s.create_user(&uid("mallory")).unwrap();
    s.create_conversation(
        &cid("cm"),
        ConversationKind::Group,
        &[uid("carol"), uid("mallory")],
    )
    .unwrap();
    s.connect(ConnId(5), uid("mallory"), "phone".into())
        .unwrap();
    drain(&mut s);
    let r = request(&mut s, T0, 4, send_req("cm", "c1", "my own words"));
    assert!(matches!(r, Response::SendAck { seq: Seq(1), .. }));
    let edit = ContentKind::Edit { target: Seq(1) };
    let revoke = ContentKind::Revoke { target: Seq(1) };
    let r = request(&mut s, T0, 5, send_kind("cm", "m1", edit.clone(), T0));
    assert_eq!(error_code(&r), Some((ErrorCode::NotAuthor, true)));
    let r = request(&mut s, T0, 5, send_kind("cm", "m2", revoke.clone(), T0));
    assert_eq!(error_code(&r), Some((ErrorCode::NotAuthor, true)));
    assert_eq!(max_seq(&s, "cm"), Seq(1));
    // The author may.
    let r = request(&mut s, T0, 4, send_kind("cm", "c2", edit, T0));
    assert!(matches!(r, Response::SendAck { seq: Seq(2), .. }), "{r:?}");
    let r = request(&mut s, T0, 4, send_kind("cm", "c3", revoke, T0));
    assert!(matches!(r, Response::SendAck { seq: Seq(3), .. }), "{r:?}");
}

/// Failure 4 of issue 9: a client id reused in another conversation was acked with the
/// first conversation's seq, and nothing was stored.
fn client_id_reused_in_another_conversation_is_refused<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let first = request(&mut s, T0, 1, send_req("g", "same", "to g"));
    assert!(matches!(first, Response::SendAck { seq: Seq(1), .. }));
    let r = request(&mut s, T0, 1, send_req("d", "same", "to d"));
    assert_eq!(error_code(&r), Some((ErrorCode::ClientIdConflict, true)));
    assert_eq!(max_seq(&s, "d"), Seq(0));
    // A resend to the first conversation is still acked as the first time.
    assert_eq!(request(&mut s, T0, 2, send_req("g", "same", "to g")), first);
}

/// Ids and custom kind names over their limits are refused, before anything is stored.
fn long_ids_and_kind_names_are_refused<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let long = "k".repeat(129);
    let r = request(&mut s, T0, 1, send_req("g", &long, "x"));
    assert_eq!(error_code(&r), Some((ErrorCode::InvalidValue, true)));
    let r = request(
        &mut s,
        T0,
        1,
        send_kind("g", "c", ContentKind::Custom(long.clone()), T0),
    );
    assert_eq!(error_code(&r), Some((ErrorCode::InvalidValue, true)));
    assert_eq!(max_seq(&s, "g"), Seq(0));
    let r = request(
        &mut s,
        T0,
        1,
        send_kind(
            "g",
            &long[..128],
            ContentKind::Custom(long[..128].into()),
            T0,
        ),
    );
    assert!(matches!(r, Response::SendAck { seq: Seq(1), .. }), "{r:?}");
}

/// Failure 6 of issue 9: a resend of a stored send is answered with its original ack before
/// any other rule: the fault hook, a deletion of its seq, a floor above it.
fn resend_of_a_stored_send_is_acked_before_any_rule<St: ServerStore>(store: St) {
    let mut s = server(store, ServerConfig::default());
    let first = request(&mut s, T0, 1, send_req("g", "m1", "hello"));
    assert!(matches!(first, Response::SendAck { seq: Seq(1), .. }));
    s.delete_seqs(&cid("g"), &SeqRanges::from_iter([Seq(1)]))
        .unwrap();
    drain(&mut s);
    let fault = ServerError {
        code: "unavailable".into(),
        message: "no".into(),
        permanent: true,
    };
    s.fail_next_sends(1, fault.clone());
    // The deleted seq's client id is not sendable again, and the fault does not hit it.
    assert_eq!(
        request(&mut s, T0.plus_millis(9), 2, send_req("g", "m1", "hello")),
        first
    );
    // The fault is still queued for the next send that would store something.
    assert_eq!(
        request(&mut s, T0, 1, send_req("g", "m2", "new")),
        Response::Error(fault)
    );
    s.set_min_seq(&cid("g"), Seq(5)).unwrap();
    drain(&mut s);
    assert_eq!(request(&mut s, T0, 1, send_req("g", "m1", "hello")), first);
    assert_eq!(max_seq(&s, "g"), Seq(1));
}

/// Pull replies are capped by bytes too: the smaller of the server's and the client's
/// budget; the first message always goes; a range cut before its first message is left out.
fn pull_caps_replies_by_bytes<St: ServerStore>(store: St) {
    let mut s = server(
        store,
        ServerConfig {
            max_pull_bytes: 10_000,
            ..ServerConfig::default()
        },
    );
    // 3,000 bytes of content: about 4,300 encoded per message.
    for i in 0..5u64 {
        s.append_as(
            T0,
            &uid("bob"),
            &cid("g"),
            ContentKind::Image,
            vec![i as u8; 3_000],
        )
        .unwrap();
    }
    s.append_as(T0, &uid("carol"), &cid("d"), ContentKind::Text, vec![1])
        .unwrap();
    drain(&mut s);
    let pull_with = |s: &mut ServerCore<St>, max_bytes: Option<u64>| {
        let ranges = vec![
            PullRange {
                conversation: cid("g"),
                from: Seq(1),
                to: Seq(5),
            },
            PullRange {
                conversation: cid("d"),
                from: Seq(1),
                to: Seq(1),
            },
        ];
        match request(s, T0, 1, Request::Pull { ranges, max_bytes }) {
            Response::Pulled { ranges } => ranges
                .iter()
                .map(|r| (r.conversation.0.clone(), r.from.0, r.to.0, r.messages.len()))
                .collect::<Vec<_>>(),
            other => panic!("expected Pulled, got {other:?}"),
        }
    };
    // The server's budget: two messages, cut inside "g"; "d" left out.
    assert_eq!(pull_with(&mut s, None), vec![("g".into(), 1, 2, 2)]);
    // A smaller client budget wins; a budget below one message still carries one.
    assert_eq!(pull_with(&mut s, Some(5_000)), vec![("g".into(), 1, 1, 1)]);
    assert_eq!(pull_with(&mut s, Some(1)), vec![("g".into(), 1, 1, 1)]);
    // A larger client budget does not raise the server's.
    assert_eq!(
        pull_with(&mut s, Some(1 << 40)),
        vec![("g".into(), 1, 2, 2)]
    );
    // The reply fits its budget as encoded.
    let ranges = vec![PullRange {
        conversation: cid("g"),
        from: Seq(1),
        to: Seq(5),
    }];
    let reply = request(
        &mut s,
        T0,
        1,
        Request::Pull {
            ranges,
            max_bytes: None,
        },
    );
    assert!(serde_json::to_string(&reply).unwrap().len() <= 10_000);
    // A range whose first message does not fit after another range's is left out, not
    // answered as covering nothing.
    s.append_as(
        T0,
        &uid("carol"),
        &cid("d"),
        ContentKind::Image,
        vec![0; 9_000],
    )
    .unwrap();
    drain(&mut s);
    let ranges = vec![
        PullRange {
            conversation: cid("g"),
            from: Seq(5),
            to: Seq(5),
        },
        PullRange {
            conversation: cid("d"),
            from: Seq(2),
            to: Seq(2),
        },
    ];
    let Response::Pulled { ranges } = request(
        &mut s,
        T0,
        1,
        Request::Pull {
            ranges,
            max_bytes: None,
        },
    ) else {
        panic!("expected Pulled");
    };
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].conversation, cid("g"));
}

/// Every page of a listing on `conn` from `since`: the ids listed, the first page's token and
/// whether the listing was full.
fn listing<St: ServerStore>(
    s: &mut ServerCore<St>,
    conn: u64,
    since: Option<SyncToken>,
) -> (Vec<String>, Option<SyncToken>, bool) {
    drain(s);
    let mut ids = Vec::new();
    let mut first: Option<(Option<SyncToken>, bool)> = None;
    let mut after = None;
    loop {
        let Response::MaxSeqs {
            entries,
            has_more,
            token,
            full,
        } = request(
            s,
            T0,
            conn,
            Request::GetMaxSeqs {
                after: after.clone(),
                limit: 2,
                since: since.clone(),
            },
        )
        else {
            panic!("expected MaxSeqs");
        };
        first.get_or_insert((token, full));
        after = entries.last().map(|e| e.conversation.clone());
        ids.extend(entries.into_iter().map(|e| e.conversation.0));
        if !has_more {
            break;
        }
    }
    let (token, full) = first.unwrap();
    (ids, token, full)
}

fn sync_token_lists_exactly_what_changed<St: ServerStore>(store: St) {
    let mut s = server(
        store,
        ServerConfig {
            max_seqs_page: 2,
            ..ServerConfig::default()
        },
    );
    for c in ["c1", "c2", "c3"] {
        s.create_conversation(
            &cid(c),
            ConversationKind::Group,
            &[uid("alice"), uid("bob")],
        )
        .unwrap();
    }
    s.create_conversation(&cid("b1"), ConversationKind::Group, &[uid("bob")])
        .unwrap();
    fill(&mut s, "g", "bob", 3);
    fill(&mut s, "c3", "bob", 1);
    let (all, token, full) = listing(&mut s, 1, None);
    assert_eq!(all, ["c1", "c2", "c3", "d", "g"]);
    assert!(full);
    let token = token.unwrap();

    // Nothing changed: an empty delta, not a full listing.
    assert_eq!(
        listing(&mut s, 1, Some(token.clone())),
        (vec![], Some(token.clone()), false)
    );

    // A new message in c2, a read by alice's other device in g, alice joining b1, a new
    // conversation e; bob's read in c3 and a message in a conversation alice is not in do
    // not concern alice.
    fill(&mut s, "c2", "bob", 1);
    request(
        &mut s,
        T0,
        2,
        Request::MarkRead {
            conversation: cid("g"),
            seq: Seq(2),
        },
    );
    s.add_member(&cid("b1"), &uid("alice")).unwrap();
    s.create_conversation(
        &cid("e"),
        ConversationKind::Direct,
        &[uid("alice"), uid("carol")],
    )
    .unwrap();
    drain(&mut s);
    request(
        &mut s,
        T0,
        3,
        Request::MarkRead {
            conversation: cid("c3"),
            seq: Seq(1),
        },
    );
    s.create_conversation(&cid("b2"), ConversationKind::Group, &[uid("bob")])
        .unwrap();
    fill(&mut s, "b2", "bob", 1);
    drain(&mut s);
    let (delta, newer, full) = listing(&mut s, 1, Some(token.clone()));
    assert_eq!(delta, ["b1", "c2", "e", "g"]);
    assert!(!full);
    let newer = newer.unwrap();
    assert_ne!(newer, token);
    // Deletions and a raised floor are changes too.
    s.delete_seqs(&cid("g"), &SeqRanges::from_range(Seq(1), Seq(1)))
        .unwrap();
    s.set_min_seq(&cid("c3"), Seq(2)).unwrap();
    drain(&mut s);
    assert_eq!(listing(&mut s, 1, Some(newer.clone())).0, ["c3", "g"]);
    // bob's listing since the same token sees his read in c3 and his own conversations.
    assert_eq!(
        listing(&mut s, 3, Some(token.clone())).0,
        ["b2", "c2", "c3", "g"]
    );

    // A token the store did not make, or cannot serve, gets the full listing.
    let (epoch, counter) = token.as_str().split_once('.').unwrap();
    for unknown in [
        format!("0{epoch}.{counter}"),
        format!("{epoch}.{}", u64::MAX),
        format!("{epoch}.-1"),
        format!("{epoch}.+1"),
        epoch.to_string(),
        String::new(),
        "x".repeat(SyncToken::MAX_BYTES + 1),
    ] {
        let (ids, fresh, full) = listing(&mut s, 1, Some(SyncToken::new(unknown.clone())));
        assert!(full, "{unknown}");
        assert_eq!(ids, ["b1", "c1", "c2", "c3", "d", "e", "g"], "{unknown}");
        assert!(fresh.is_some());
    }

    // Below the floor: expired, so the full listing.
    s.expire_all_sync_tokens().unwrap();
    let (ids, fresh, full) = listing(&mut s, 1, Some(newer));
    assert!(full);
    assert_eq!(ids.len(), 7);
    // The token handed out after the floor was raised is served.
    assert_eq!(listing(&mut s, 1, fresh.clone()), (vec![], fresh, false));
}

/// Instantiates each generic test above once per store, as `memory::name` and `sqlite::name`.
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $name() {
                    super::$name(super::MemoryServerStore::new());
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::SqliteServerStore::open_in_memory().unwrap());
                }
            )*
        }
    };
}

for_each_store!(
    sync_token_lists_exactly_what_changed,
    sends_get_consecutive_seqs_and_server_time,
    resend_is_idempotent_and_does_not_fan_out_again,
    send_fans_out_to_every_other_connection_of_every_member,
    non_members_are_refused,
    oversized_content_is_refused_for_good,
    injected_send_faults_store_nothing,
    pull_reports_deleted_and_below_floor_seqs_as_missing,
    pull_caps_messages_per_response,
    max_seqs_are_paged_by_conversation_id,
    read_seq_keeps_the_maximum_and_tells_other_devices,
    deletions_and_floors_are_pushed_to_online_members,
    kick_pushes_then_closes_and_forgets_the_connection,
    unknown_users_cannot_connect,
    values_no_store_can_hold_are_refused_for_good,
    change_targets_must_be_live_ordinary_messages_of_the_conversation,
    only_the_author_edits_or_revokes,
    client_id_reused_in_another_conversation_is_refused,
    long_ids_and_kind_names_are_refused,
    resend_of_a_stored_send_is_acked_before_any_rule,
    pull_caps_replies_by_bytes,
);

/// The default limits fit the frames; a content limit whose sends or replies cannot fit a
/// frame is refused.
#[test]
fn configs_whose_messages_cannot_fit_a_frame_are_refused() {
    let frames = tidemark_transport::wire::Limits::client_frames();
    assert_eq!(ServerConfig::default().check(&frames), Ok(()));
    let too_big = ServerConfig {
        max_content_bytes: 256 * 1024,
        ..ServerConfig::default()
    };
    assert!(too_big.check(&frames).is_err());
    let huge_pull = ServerConfig {
        max_pull_bytes: 64 * 1024 * 1024,
        ..ServerConfig::default()
    };
    assert!(huge_pull.check(&frames).is_err());
    let long_ids = ServerConfig {
        max_id_bytes: 129,
        ..ServerConfig::default()
    };
    assert!(long_ids.check(&frames).is_err());
}
