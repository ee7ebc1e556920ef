//! The thread that owns the core: commands in, outputs routed to connection queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tidemark_engine::{DeviceId, Timestamp, UserId};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::messages::{Command, Outgoing, Refusal};
use super::Clock;
use crate::{
    check_token, AccountStore, ConnId, ServerCore, ServerOutput, ServerStore, ServerStoreError,
    TokenCheck,
};
use tidemark_transport::wire::{error_code, ServerFrame};

/// Most commands handled in one group commit: bounds how long the first one's answer waits.
const MAX_GROUP: usize = 512;

/// One connection's queues, as the core thread holds them.
struct Route {
    outgoing: mpsc::Sender<Outgoing>,
    kill: Option<oneshot::Sender<Refusal>>,
}

struct Host<St: ServerStore> {
    core: ServerCore<St>,
    routes: HashMap<ConnId, Route>,
}

/// The core thread's body: returns the store when told to shut down (or when every sender
/// is gone).
pub(crate) fn run<St>(
    core: ServerCore<St>,
    mut commands: mpsc::Receiver<Command<St>>,
    connections: Arc<AtomicUsize>,
) -> St
where
    St: ServerStore + AccountStore,
{
    let mut host = Host {
        core,
        routes: HashMap::new(),
    };
    let mut clock = Clock::default();
    let mut stopping = false;
    while let Some(first) = commands.blocking_recv() {
        // Group commit: the commands already queued are handled in one store transaction,
        // and nothing they cause (acks above all) is routed before it commits. Under load
        // one durable commit serves many requests; idle, a group is one command.
        let mut group = Some(first);
        let mut grouped = 0;
        let mut group_open = match host.core.store_mut().begin_group() {
            Ok(()) => true,
            Err(err) => {
                // Without a group every call commits on its own: slower, still correct.
                tracing::warn!(%err, "could not start a group commit");
                false
            }
        };
        while let Some(command) = group.take() {
            let now = clock.now();
            match command {
                Command::Admin(job) => {
                    // An admin job reports its result at once, so it must see (and leave)
                    // durable state: end the group before it.
                    if group_open {
                        host.commit_group();
                        group_open = false;
                    }
                    job(&mut host.core, now);
                }
                Command::Shutdown => {
                    stopping = true;
                    break;
                }
                other => host.handle(now, other),
            }
            grouped += 1;
            if grouped < MAX_GROUP && group_open {
                group = commands.try_recv().ok();
            }
        }
        if group_open {
            host.commit_group();
        }
        host.route();
        connections.store(host.routes.len(), Ordering::Relaxed);
        if stopping {
            break;
        }
    }
    // Dropping every outgoing queue: each connection writes what it holds, then the
    // shutdown error, and closes.
    let conns: Vec<ConnId> = host.routes.keys().copied().collect();
    for conn in conns {
        host.core.disconnect(conn);
    }
    host.routes.clear();
    connections.store(0, Ordering::Relaxed);
    host.core.into_store()
}

impl<St> Host<St>
where
    St: ServerStore + AccountStore,
{
    fn authenticate(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        user: UserId,
        device: DeviceId,
        token: &str,
    ) -> Result<(), Refusal> {
        // The same answer for an unknown user and a wrong token: nothing tells a prober
        // which users exist.
        let unauthorized = || Refusal::new(error_code::UNAUTHORIZED, "unknown user or bad token");
        match check_token(self.core.store(), &user, token, now) {
            Ok(TokenCheck::Valid) => {}
            Ok(TokenCheck::Expired) => {
                return Err(Refusal::new(
                    error_code::TOKEN_EXPIRED,
                    "the token has expired",
                ))
            }
            Ok(TokenCheck::Invalid) => return Err(unauthorized()),
            Err(err) => {
                tracing::error!(conn = conn.0, %err, "token check failed");
                return Err(internal());
            }
        }
        match self.core.connect(conn, user, device) {
            Ok(()) => Ok(()),
            Err(ServerStoreError::UnknownUser(_)) => Err(unauthorized()),
            Err(err) => {
                tracing::error!(conn = conn.0, %err, "connect failed");
                Err(internal())
            }
        }
    }

    /// Handles a connection's command.
    fn handle(&mut self, now: Timestamp, command: Command<St>) {
        match command {
            Command::Connect {
                conn,
                user,
                device,
                token,
                outgoing,
                kill,
                reply,
            } => {
                let answer = self.authenticate(now, conn, user, device, &token);
                let accepted = answer.is_ok();
                if accepted {
                    self.routes.insert(
                        conn,
                        Route {
                            outgoing,
                            kill: Some(kill),
                        },
                    );
                }
                if reply.send(answer.map(|()| now)).is_err() && accepted {
                    // The connection went away while waiting.
                    self.forget(conn);
                }
            }
            Command::Request { conn, id, request } => {
                self.core.handle_request(now, conn, id, request);
            }
            Command::Disconnect { conn } => self.forget(conn),
            // The run loop handles these itself.
            Command::Admin(_) | Command::Shutdown => {}
        }
    }

    /// Commits the open group. When that fails nothing of the group is stored, so nothing it
    /// caused may be told: the queued outputs are dropped and every connection is closed
    /// with `internal`; clients reconnect, resend (sends are idempotent) and pull.
    fn commit_group(&mut self) {
        let Err(err) = self.core.store_mut().commit_group() else {
            return;
        };
        tracing::error!(%err, "group commit failed: closing every connection");
        while self.core.poll_output().is_some() {}
        let conns: Vec<ConnId> = self.routes.keys().copied().collect();
        for conn in conns {
            if let Some(kill) = self.routes.get_mut(&conn).and_then(|r| r.kill.take()) {
                let _ = kill.send(internal());
            }
            self.forget(conn);
        }
    }

    /// Forgets a connection on both sides.
    fn forget(&mut self, conn: ConnId) {
        self.core.disconnect(conn);
        self.routes.remove(&conn);
    }

    /// Delivers every output the core queued, in order.
    fn route(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                ServerOutput::Respond { conn, id, response } => {
                    self.deliver(
                        conn,
                        Outgoing::Frame(ServerFrame::Response { id, response }),
                    );
                }
                ServerOutput::Push { conn, push } => {
                    self.deliver(conn, Outgoing::Frame(ServerFrame::Push { push }));
                }
                ServerOutput::Close { conn } => {
                    // The core forgot it already (a kick): close after what is queued.
                    self.deliver(conn, Outgoing::Close);
                    self.routes.remove(&conn);
                }
            }
        }
    }

    fn deliver(&mut self, conn: ConnId, out: Outgoing) {
        let Some(route) = self.routes.get_mut(&conn) else {
            return;
        };
        match route.outgoing.try_send(out) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    conn = conn.0,
                    "outgoing queue full: closing a slow consumer"
                );
                if let Some(kill) = route.kill.take() {
                    let _ = kill.send(Refusal::new(
                        error_code::SLOW_CONSUMER,
                        "the connection could not keep up; reconnect and pull",
                    ));
                }
                self.forget(conn);
            }
            // The connection task is gone; its disconnect is on its way.
            Err(TrySendError::Closed(_)) => self.forget(conn),
        }
    }
}

fn internal() -> Refusal {
    Refusal::new(error_code::INTERNAL, "the server failed; try again later")
}
