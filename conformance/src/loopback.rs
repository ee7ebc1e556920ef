//! An in-process server for the async driver: [`LoopbackServer`] runs the real inbox rules
//! ([`ServerCore`] over [`MemoryServerStore`]) behind a lock, and [`LoopbackTransport`]
//! connects one (user, device) to it through channels instead of sockets.
//!
//! Every request is answered synchronously inside [`RequestSink::send`]: the core handles it
//! under the lock and each [`ServerOutput`] (response, push, close) is routed at once to its
//! connection's channel, so responses and pushes reach every connection in the order the core
//! produced them. Server time is read from the [`Runtime`] the server was built with.
//!
//! Tests drive the server from outside with the admin helpers (users, conversations, appends
//! by other users, deletions, kicks, send faults), whose pushes are routed the same way, and
//! with the fault controls: [`LoopbackServer::disconnect_all`] drops every connection from
//! the server side, [`LoopbackServer::set_down`] makes new connects fail, and
//! [`LoopbackServer::set_lose_responses`] processes requests but loses their answers.
//!
//! The lock is a `std::sync::Mutex` and is never held across an `await`, so the module runs
//! on any executor and in a browser (wasm32).

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::stream::FusedStream;
use futures::{Stream, StreamExt};
use tidemark::runtime::Runtime;
use tidemark_engine::{
    ContentKind, ConversationId, ConversationKind, DeviceId, Incoming, Request, RequestId,
    RequestSink, Seq, SeqRanges, ServerError, ServerMessage, Timestamp, Transport, TransportError,
    UserId,
};

use crate::server::{
    AdminError, ConnId, MemoryServerStore, ServerConfig, ServerCore, ServerOutput, ServerStore,
    ServerStoreError,
};

/// What travels from the server to one connection.
type Frame = Result<Incoming, TransportError>;

/// The state behind the lock: the core plus the host's connection table.
struct Shared {
    core: ServerCore<MemoryServerStore>,
    /// The open connections' channels. Dropping a sender ends that connection's stream.
    conns: BTreeMap<ConnId, mpsc::UnboundedSender<Frame>>,
    next_conn: u64,
    down: bool,
    lose_responses: bool,
    connect_attempts: u64,
}

impl Shared {
    /// Delivers every output the core queued, in order.
    fn route(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                ServerOutput::Respond { conn, id, response } => {
                    if !self.lose_responses {
                        self.deliver(conn, Ok(Incoming::Response(id, response)));
                    }
                }
                ServerOutput::Push { conn, push } => self.deliver(conn, Ok(Incoming::Push(push))),
                // The core forgot the connection already; dropping the sender ends its
                // stream after what was delivered before.
                ServerOutput::Close { conn } => {
                    self.conns.remove(&conn);
                }
            }
        }
    }

    fn deliver(&mut self, conn: ConnId, frame: Frame) {
        let Some(tx) = self.conns.get(&conn) else {
            return;
        };
        if tx.unbounded_send(frame).is_err() {
            // The client dropped its end without closing: forget the connection.
            self.close(conn);
        }
    }

    /// Forgets a connection on both sides (core and channel table).
    fn close(&mut self, conn: ConnId) {
        self.core.disconnect(conn);
        self.conns.remove(&conn);
    }

    /// Drops the connections that match, server side: each gets a connection error, then its
    /// stream ends. Returns how many were dropped.
    fn drop_where(
        &mut self,
        mut matches: impl FnMut(&ServerCore<MemoryServerStore>, ConnId) -> bool,
    ) -> usize {
        let doomed: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|conn| matches(&self.core, *conn))
            .collect();
        for conn in &doomed {
            if let Some(tx) = self.conns.remove(conn) {
                let _ = tx.unbounded_send(Err(TransportError::Connection(
                    "connection dropped by the server".to_owned(),
                )));
            }
            self.core.disconnect(*conn);
        }
        doomed.len()
    }
}

/// An in-process inbox server. Cloning gives another handle to the same server.
///
/// See the module docs. `R` supplies the server's clock.
pub struct LoopbackServer<R: Runtime> {
    shared: Arc<Mutex<Shared>>,
    runtime: R,
}

impl<R: Runtime> Clone for LoopbackServer<R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<R: Runtime> fmt::Debug for LoopbackServer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("LoopbackServer")
            .field("connections", &shared.conns.len())
            .field("down", &shared.down)
            .field("lose_responses", &shared.lose_responses)
            .field("connect_attempts", &shared.connect_attempts)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> LoopbackServer<R> {
    /// An empty server with the default limits, telling time by `runtime`.
    pub fn new(runtime: R) -> Self {
        Self::with_config(ServerConfig::default(), runtime)
    }

    /// An empty server with these limits.
    pub fn with_config(config: ServerConfig, runtime: R) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                core: ServerCore::new(MemoryServerStore::new(), config),
                conns: BTreeMap::new(),
                next_conn: 1,
                down: false,
                lose_responses: false,
                connect_attempts: 0,
            })),
            runtime,
        }
    }

    /// A transport that connects as `user` on `device`.
    pub fn transport(&self, user: UserId, device: DeviceId) -> LoopbackTransport<R> {
        LoopbackTransport {
            server: self.clone(),
            user,
            device,
        }
    }

    /// The server's clock.
    pub fn now(&self) -> Timestamp {
        self.runtime.now()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every method leaves the state consistent before anything that can panic returns
        // control, and the store's methods are all-or-nothing: a poisoned lock is usable.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the core at server time `now` (passed in), then delivers every output it
    /// caused. For admin actions and reads the helpers below do not cover.
    pub fn with_core<T>(
        &self,
        f: impl FnOnce(&mut ServerCore<MemoryServerStore>, Timestamp) -> T,
    ) -> T {
        let now = self.runtime.now();
        let mut shared = self.lock();
        let out = f(&mut shared.core, now);
        shared.route();
        out
    }

    // ----- admin -----

    /// Creates a user; a no-op when it exists.
    pub fn create_user(&self, user: &UserId) -> Result<(), ServerStoreError> {
        self.with_core(|core, _| core.create_user(user))
    }

    /// Creates a conversation with these (existing) members.
    pub fn create_conversation(
        &self,
        id: &ConversationId,
        kind: ConversationKind,
        members: &[UserId],
    ) -> Result<(), ServerStoreError> {
        self.with_core(|core, _| core.create_conversation(id, kind, members))
    }

    /// Adds an existing user to a conversation.
    pub fn add_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<(), ServerStoreError> {
        self.with_core(|core, _| core.add_member(conversation, user))
    }

    /// Appends a message by `user` as if sent from a device that is not connected, now, and
    /// pushes it to every online connection of every member (see [`ServerCore::append_as`]).
    pub fn append_as(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ServerMessage, AdminError> {
        self.with_core(|core, now| core.append_as(now, user, conversation, kind, content))
    }

    /// Deletes these seqs and pushes the deletion to online members; returns the newly
    /// deleted seqs.
    pub fn delete_seqs(
        &self,
        conversation: &ConversationId,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, AdminError> {
        self.with_core(|core, _| core.delete_seqs(conversation, seqs))
    }

    /// Raises the history floor and pushes it to online members; returns the floor.
    pub fn set_min_seq(
        &self,
        conversation: &ConversationId,
        min_seq: Seq,
    ) -> Result<Seq, AdminError> {
        self.with_core(|core, _| core.set_min_seq(conversation, min_seq))
    }

    /// Kicks every connection of `user`: each gets [`tidemark_engine::Push::Kicked`], then
    /// its stream ends. Returns how many were kicked.
    pub fn kick(&self, user: &UserId, reason: &str) -> usize {
        self.with_core(|core, _| {
            core.connections_of(user)
                .into_iter()
                .filter(|conn| core.kick(*conn, reason))
                .count()
        })
    }

    /// The next `n` sends are answered with `error` and store nothing.
    pub fn fail_next_sends(&self, n: usize, error: ServerError) {
        self.with_core(|core, _| core.fail_next_sends(n, error));
    }

    // ----- faults -----

    /// Drops every connection from the server side: each stream yields a connection error
    /// and ends. Clients reconnect (unless the server is down). Returns how many dropped.
    pub fn disconnect_all(&self) -> usize {
        self.lock().drop_where(|_, _| true)
    }

    /// Drops every connection of `user` from the server side, like
    /// [`LoopbackServer::disconnect_all`]. Returns how many dropped.
    pub fn disconnect_user(&self, user: &UserId) -> usize {
        self.lock()
            .drop_where(|core, conn| core.session(conn).is_some_and(|s| &s.user == user))
    }

    /// While down, every connect fails with [`TransportError::Connection`]. Connections
    /// already open are left alone: call [`LoopbackServer::disconnect_all`] to drop them.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Whether connects fail.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// While set, requests are carried out (a send is stored and fanned out) but their
    /// responses are lost: the lost-ack fault. Pushes still arrive.
    pub fn set_lose_responses(&self, lose: bool) {
        self.lock().lose_responses = lose;
    }

    // ----- reads -----

    /// How many times a transport tried to connect (refused attempts included).
    pub fn connect_attempts(&self) -> u64 {
        self.lock().connect_attempts
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// How many connections of `user` are open.
    pub fn connections_of(&self, user: &UserId) -> usize {
        self.lock().core.connections_of(user).len()
    }

    /// Every existing message of a conversation, ascending by seq.
    pub fn messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<ServerMessage>, ServerStoreError> {
        let shared = self.lock();
        let store = shared.core.store();
        let info = store
            .conversation(conversation)?
            .ok_or_else(|| ServerStoreError::UnknownConversation(conversation.clone()))?;
        store.messages(conversation, Seq(1), info.max_seq, usize::MAX)
    }

    /// `user`'s read seq in a conversation, as the server holds it.
    pub fn read_seq(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Seq, ServerStoreError> {
        self.lock().core.store().read_seq(user, conversation)
    }

    // ----- the transport's side -----

    fn open(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<(ConnId, LoopbackSource), TransportError> {
        let mut shared = self.lock();
        shared.connect_attempts += 1;
        if shared.down {
            return Err(TransportError::Connection("server is down".to_owned()));
        }
        let conn = ConnId(shared.next_conn);
        shared.next_conn += 1;
        shared
            .core
            .connect(conn, user.clone(), device.clone())
            .map_err(|e| TransportError::Refused(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded();
        shared.conns.insert(conn, tx);
        Ok((conn, LoopbackSource { rx }))
    }

    fn request(&self, conn: ConnId, id: RequestId, request: Request) -> Result<(), TransportError> {
        let now = self.runtime.now();
        let mut shared = self.lock();
        if !shared.conns.contains_key(&conn) {
            return Err(TransportError::Closed);
        }
        shared.core.handle_request(now, conn, id, request);
        shared.route();
        Ok(())
    }

    fn close(&self, conn: ConnId) {
        self.lock().close(conn);
    }
}

/// Connects one (user, device) to a [`LoopbackServer`]. Made by
/// [`LoopbackServer::transport`].
pub struct LoopbackTransport<R: Runtime> {
    server: LoopbackServer<R>,
    user: UserId,
    device: DeviceId,
}

impl<R: Runtime> LoopbackTransport<R> {
    /// The server this transport connects to.
    pub fn server(&self) -> &LoopbackServer<R> {
        &self.server
    }
}

impl<R: Runtime> fmt::Debug for LoopbackTransport<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackTransport")
            .field("user", &self.user)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<R: Runtime> Transport for LoopbackTransport<R> {
    type Sink = LoopbackSink<R>;
    type Source = LoopbackSource;

    /// Fails with [`TransportError::Connection`] while the server is down and with
    /// [`TransportError::Refused`] for an unknown user.
    async fn connect(&mut self) -> Result<(Self::Sink, Self::Source), TransportError> {
        let (conn, source) = self.server.open(&self.user, &self.device)?;
        let sink = LoopbackSink {
            server: self.server.clone(),
            conn,
        };
        Ok((sink, source))
    }
}

/// The sending half of a loopback connection. Closing or dropping it closes the connection
/// on the server.
pub struct LoopbackSink<R: Runtime> {
    server: LoopbackServer<R>,
    conn: ConnId,
}

impl<R: Runtime> LoopbackSink<R> {
    /// The connection's id on the server.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

impl<R: Runtime> fmt::Debug for LoopbackSink<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackSink")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<R: Runtime> RequestSink for LoopbackSink<R> {
    /// Hands the request to the server, which answers before this returns. Fails with
    /// [`TransportError::Closed`] once the server dropped the connection.
    async fn send(&mut self, id: RequestId, request: Request) -> Result<(), TransportError> {
        self.server.request(self.conn, id, request)
    }

    async fn close(&mut self) {
        self.server.close(self.conn);
    }
}

impl<R: Runtime> Drop for LoopbackSink<R> {
    fn drop(&mut self) {
        // Closing twice is harmless; a sink dropped without `close` still leaves the server.
        self.server.close(self.conn);
    }
}

/// The receiving half of a loopback connection: responses and pushes, then an end when the
/// connection closes (a server-side drop yields a [`TransportError::Connection`] first).
#[derive(Debug)]
pub struct LoopbackSource {
    rx: mpsc::UnboundedReceiver<Frame>,
}

impl Stream for LoopbackSource {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl FusedStream for LoopbackSource {
    fn is_terminated(&self) -> bool {
        self.rx.is_terminated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use tidemark::testing::ManualRuntime;
    use tidemark_engine::{Push, Response};

    fn server() -> LoopbackServer<ManualRuntime> {
        let server = LoopbackServer::new(ManualRuntime::new(Timestamp(1_000)));
        for user in ["alice", "bob"] {
            server.create_user(&UserId::from(user)).unwrap();
        }
        server
            .create_conversation(
                &ConversationId::from("ab"),
                ConversationKind::Direct,
                &[UserId::from("alice"), UserId::from("bob")],
            )
            .unwrap();
        server
    }

    fn next(source: &mut LoopbackSource) -> Option<Frame> {
        futures::FutureExt::now_or_never(source.next()).flatten()
    }

    #[test]
    fn requests_are_answered_and_pushes_routed() {
        let server = server();
        let mut alice = server.transport(UserId::from("alice"), DeviceId::from("a1"));
        let mut bob = server.transport(UserId::from("bob"), DeviceId::from("b1"));
        let (mut a_sink, mut a_src) = block_on(alice.connect()).unwrap();
        let (_b_sink, mut b_src) = block_on(bob.connect()).unwrap();
        assert_eq!(server.connection_count(), 2);

        block_on(a_sink.send(RequestId(1), Request::Ping)).unwrap();
        assert!(matches!(
            next(&mut a_src),
            Some(Ok(Incoming::Response(
                RequestId(1),
                Response::Pong {
                    server_time: Timestamp(1_000)
                }
            )))
        ));

        let msg = server
            .append_as(
                &UserId::from("alice"),
                &ConversationId::from("ab"),
                ContentKind::Text,
                b"hi".to_vec(),
            )
            .unwrap();
        assert!(matches!(next(&mut b_src), Some(Ok(Incoming::Push(Push::Message(m)))) if m == msg));
        assert_eq!(
            server.messages(&ConversationId::from("ab")).unwrap(),
            vec![msg.clone()]
        );

        // The sender's own connections get it too (it came from another device), with the
        // read seq it implies.
        assert!(matches!(next(&mut a_src), Some(Ok(Incoming::Push(Push::Message(m)))) if m == msg));
        assert!(matches!(
            next(&mut a_src),
            Some(Ok(Incoming::Push(Push::ReadSeq { seq: Seq(1), .. })))
        ));
        assert!(next(&mut b_src).is_none());

        // A server-side drop: an error, then the end; sends fail.
        assert_eq!(server.disconnect_user(&UserId::from("alice")), 1);
        assert!(matches!(
            next(&mut a_src),
            Some(Err(TransportError::Connection(_)))
        ));
        assert!(next(&mut a_src).is_none());
        assert!(a_src.is_terminated());
        assert!(matches!(
            block_on(a_sink.send(RequestId(2), Request::Ping)),
            Err(TransportError::Closed)
        ));
        assert_eq!(server.connections_of(&UserId::from("alice")), 0);
        assert_eq!(server.connections_of(&UserId::from("bob")), 1);
    }

    #[test]
    fn down_refuses_connects_and_close_frees_the_connection() {
        let server = server();
        let mut alice = server.transport(UserId::from("alice"), DeviceId::from("a1"));
        server.set_down(true);
        assert!(matches!(
            block_on(alice.connect()),
            Err(TransportError::Connection(_))
        ));
        server.set_down(false);
        let (mut sink, mut src) = block_on(alice.connect()).unwrap();
        assert_eq!(server.connect_attempts(), 2);
        block_on(sink.close());
        assert_eq!(server.connection_count(), 0);
        assert!(next(&mut src).is_none());

        let mut nobody = server.transport(UserId::from("eve"), DeviceId::from("e1"));
        assert!(matches!(
            block_on(nobody.connect()),
            Err(TransportError::Refused(_))
        ));

        // Dropping a sink without closing also frees the connection.
        let (sink, _src) = block_on(alice.connect()).unwrap();
        assert_eq!(server.connection_count(), 1);
        drop(sink);
        assert_eq!(server.connection_count(), 0);
    }

    #[test]
    fn kicks_and_lost_responses() {
        let server = server();
        let mut bob = server.transport(UserId::from("bob"), DeviceId::from("b1"));
        let (mut sink, mut src) = block_on(bob.connect()).unwrap();
        server.set_lose_responses(true);
        block_on(sink.send(
            RequestId(1),
            Request::MarkRead {
                conversation: ConversationId::from("ab"),
                seq: Seq(0),
            },
        ))
        .unwrap();
        assert!(next(&mut src).is_none(), "the response was lost");
        server.set_lose_responses(false);

        assert_eq!(server.kick(&UserId::from("bob"), "bye"), 1);
        assert!(matches!(
            next(&mut src),
            Some(Ok(Incoming::Push(Push::Kicked { reason }))) if reason == "bye"
        ));
        assert!(next(&mut src).is_none());
        assert!(src.is_terminated());
        assert_eq!(server.connection_count(), 0);
    }
}
