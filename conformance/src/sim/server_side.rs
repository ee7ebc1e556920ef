//! The server side: the one [`ServerCore`] every device talks to, its admin actions as the
//! scenarios use them (appends by users without a device, deletions, floors, send faults,
//! kicks), and routing its outputs onto the devices' links.

use tidemark_engine::{
    ContentKind, ConversationId, Incoming, Seq, SeqRanges, ServerError, ServerMessage, UserId,
};

use super::links::Frame;
use super::{Sim, SimError};
use crate::server::{ConnId, MemoryServerStore, ServerCore, ServerOutput};
use crate::Backend;

impl<F: Backend> Sim<F> {
    // ----- server -----

    /// The server, for reads.
    pub fn server(&self) -> &ServerCore<MemoryServerStore> {
        &self.server
    }

    /// The server, for admin actions not wrapped here. Its outputs are routed at the next
    /// step (or any `Sim` call that runs devices).
    pub fn server_mut(&mut self) -> &mut ServerCore<MemoryServerStore> {
        &mut self.server
    }

    /// Appends a message by `user` (as from a device that is not connected) and routes its
    /// fan-out.
    pub fn append_as(
        &mut self,
        user: impl Into<UserId>,
        conversation: impl Into<ConversationId>,
        kind: ContentKind,
        content: impl Into<Vec<u8>>,
    ) -> Result<ServerMessage, SimError> {
        let message = self.server.append_as(
            self.now,
            &user.into(),
            &conversation.into(),
            kind,
            content.into(),
        )?;
        self.flush_server();
        Ok(message)
    }

    /// Appends a text message by `user`.
    pub fn append_text(
        &mut self,
        user: impl Into<UserId>,
        conversation: impl Into<ConversationId>,
        text: &str,
    ) -> Result<ServerMessage, SimError> {
        self.append_as(
            user,
            conversation,
            ContentKind::Text,
            text.as_bytes().to_vec(),
        )
    }

    /// Deletes seqs on the server (pushing the deletion to online members).
    pub fn delete_seqs(
        &mut self,
        conversation: impl Into<ConversationId>,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, SimError> {
        let newly = self.server.delete_seqs(&conversation.into(), seqs)?;
        self.flush_server();
        Ok(newly)
    }

    /// Raises a conversation's history floor on the server (pushing it to online members).
    pub fn set_min_seq(
        &mut self,
        conversation: impl Into<ConversationId>,
        seq: Seq,
    ) -> Result<Seq, SimError> {
        let floor = self.server.set_min_seq(&conversation.into(), seq)?;
        self.flush_server();
        Ok(floor)
    }

    /// Makes the server answer the next `n` sends with `error`.
    pub fn fail_next_sends(&mut self, n: usize, error: ServerError) {
        self.server.fail_next_sends(n, error);
    }

    /// Has the server kick device `d`'s connection. Returns whether it was connected.
    pub fn kick(&mut self, d: usize, reason: &str) -> bool {
        let dev = &self.devices[d];
        let kicked = match (dev.conn, dev.connected) {
            (Some(conn), true) => self.server.kick(conn, reason),
            _ => false,
        };
        self.flush_server();
        kicked
    }

    /// Puts the server's outputs on the network.
    pub(super) fn flush_server(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                ServerOutput::Respond { conn, id, response } => {
                    self.send_to_device(conn, Incoming::Response(id, response));
                }
                ServerOutput::Push { conn, push } => {
                    self.send_to_device(conn, Incoming::Push(push))
                }
                ServerOutput::Close { conn } => {
                    if let Some(&d) = self.conn_owner.get(&conn) {
                        // After everything already sent on the connection.
                        let delay = self.devices[d].to_device.max_delay_ms().saturating_add(1);
                        self.net.schedule(
                            self.now.plus_millis(delay),
                            Frame::DeviceSideClose { device: d, conn },
                        );
                    }
                }
            }
        }
    }

    pub(super) fn send_to_device(&mut self, conn: ConnId, incoming: Incoming) {
        let Some(&d) = self.conn_owner.get(&conn) else {
            return;
        };
        let dev = &self.devices[d];
        if dev.partitioned {
            return;
        }
        let link = dev.to_device;
        self.net.send(
            self.now,
            &mut self.rng,
            &link,
            Frame::Incoming {
                device: d,
                conn,
                incoming,
            },
        );
    }
}
