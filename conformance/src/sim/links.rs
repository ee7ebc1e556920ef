//! The devices' links and connections: per-direction link settings (latency, loss, ...,
//! applied by [`Netem`]), partitions, disconnects and healing, the frames in flight
//! ([`Frame`]), and delivering each frame to the server or the device it is for.

use tidemark_engine::{Incoming, Request, RequestId};

use super::{LinkConfig, Sim, SimError};
use crate::server::ConnId;
use crate::Backend;

/// One direction of a device's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDir {
    /// Device to server (requests).
    ToServer,
    /// Server to device (responses, pushes).
    ToDevice,
}

/// Something in flight.
#[derive(Clone, Debug)]
pub(super) enum Frame {
    /// A connect attempt's handshake finished.
    ConnectDone { device: usize, conn: ConnId },
    /// A request on its way to the server.
    Request {
        device: usize,
        conn: ConnId,
        id: RequestId,
        request: Request,
    },
    /// The server learns that the device side closed (or died).
    ServerSideClose { conn: ConnId },
    /// A response or push on its way to a device.
    Incoming {
        device: usize,
        conn: ConnId,
        incoming: Incoming,
    },
    /// The device learns that the server closed the connection.
    DeviceSideClose { device: usize, conn: ConnId },
}

impl<F: Backend> Sim<F> {
    // ----- network -----

    /// Sets both directions of device `d`'s link.
    pub fn set_link(&mut self, d: usize, link: LinkConfig) {
        self.devices[d].to_server = link;
        self.devices[d].to_device = link;
    }

    /// Sets one direction of device `d`'s link (for example lose only responses).
    pub fn set_link_dir(&mut self, d: usize, dir: LinkDir, link: LinkConfig) {
        match dir {
            LinkDir::ToServer => self.devices[d].to_server = link,
            LinkDir::ToDevice => self.devices[d].to_device = link,
        }
    }

    /// Sets every device's link.
    pub fn set_all_links(&mut self, link: LinkConfig) {
        for d in 0..self.devices.len() {
            self.set_link(d, link);
        }
    }

    /// Cuts device `d` off: every frame to or from it is lost, including those in flight, and
    /// connects fail. The connection is not closed: the engine notices by its own timeouts.
    pub fn partition(&mut self, d: usize) {
        self.devices[d].partitioned = true;
    }

    /// Ends device `d`'s partition.
    pub fn heal(&mut self, d: usize) {
        self.devices[d].partitioned = false;
    }

    /// Whether device `d` is partitioned.
    pub fn is_partitioned(&self, d: usize) -> bool {
        self.devices[d].partitioned
    }

    /// Drops device `d`'s connection now: the engine is told at once, the server after the
    /// frames already on their way to it (which still arrive).
    pub async fn disconnect(&mut self, d: usize) -> Result<(), SimError> {
        if self.devices[d].conn.is_none() {
            return Ok(());
        }
        self.close_connection(d);
        let now = self.now;
        if let Some(engine) = self.devices[d].engine.as_mut() {
            engine.handle_disconnected(now, "connection dropped");
        }
        self.run_device(d).await?;
        self.flush_server();
        Ok(())
    }

    /// Restores every link to [`SimConfig::link`](super::SimConfig::link), ends every partition, and drops every
    /// open connection so each engine reconnects and resyncs. Pushes have no retry, so what
    /// a lossy phase lost (a read seq, a deletion) is only learned again by a resync; call
    /// this before checking end-state invariants after faults.
    pub async fn heal_all(&mut self) -> Result<(), SimError> {
        let link = self.config.link;
        for d in 0..self.devices.len() {
            self.set_link(d, link);
            self.heal(d);
        }
        for d in 0..self.devices.len() {
            if self.devices[d].conn.is_some() {
                self.disconnect(d).await?;
            }
        }
        Ok(())
    }

    // ----- network plumbing -----

    pub(super) fn open_connection(&mut self, d: usize) {
        self.close_connection(d);
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conn_owner.insert(conn, d);
        let dev = &mut self.devices[d];
        dev.conn = Some(conn);
        dev.connected = false;
        // The handshake takes a round trip.
        let handshake = dev
            .to_server
            .latency_ms
            .saturating_add(dev.to_device.latency_ms);
        self.net.schedule(
            self.now.plus_millis(handshake),
            Frame::ConnectDone { device: d, conn },
        );
    }

    /// Forgets device `d`'s connection on the device side; the server learns of it after the
    /// frames already on their way to it.
    pub(super) fn close_connection(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let Some(conn) = dev.conn.take() else {
            return;
        };
        if std::mem::replace(&mut dev.connected, false) {
            let at = self
                .now
                .plus_millis(dev.to_server.max_delay_ms().saturating_add(1));
            self.net.schedule(at, Frame::ServerSideClose { conn });
        } else {
            self.conn_owner.remove(&conn);
        }
    }

    pub(super) async fn deliver(&mut self, frame: Frame) -> Result<(), SimError> {
        let now = self.now;
        match frame {
            Frame::ConnectDone { device: d, conn } => {
                let dev = &mut self.devices[d];
                if dev.conn != Some(conn) {
                    return Ok(());
                }
                let Some(engine) = dev.engine.as_mut() else {
                    return Ok(());
                };
                let accepted = !dev.partitioned
                    && self
                        .server
                        .connect(conn, dev.user.clone(), dev.id.clone())
                        .is_ok();
                if accepted {
                    dev.connected = true;
                    engine.handle_connected(now);
                } else {
                    let reason = if dev.partitioned {
                        "server unreachable"
                    } else {
                        "server refused the connection"
                    };
                    dev.conn = None;
                    self.conn_owner.remove(&conn);
                    engine.handle_disconnected(now, reason);
                }
                self.run_device(d).await
            }
            Frame::Request {
                device: d,
                conn,
                id,
                request,
            } => {
                if !self.devices[d].partitioned && self.server.is_connected(conn) {
                    self.server.handle_request(now, conn, id, request);
                    self.flush_server();
                }
                Ok(())
            }
            Frame::ServerSideClose { conn } => {
                self.server.disconnect(conn);
                self.conn_owner.remove(&conn);
                Ok(())
            }
            Frame::Incoming {
                device: d,
                conn,
                incoming,
            } => {
                let dev = &mut self.devices[d];
                if dev.partitioned || dev.conn != Some(conn) || !dev.connected {
                    return Ok(());
                }
                let Some(engine) = dev.engine.as_mut() else {
                    return Ok(());
                };
                match incoming {
                    Incoming::Response(id, response) => engine.handle_response(now, id, response),
                    Incoming::Push(push) => engine.handle_push(now, push),
                }
                self.run_device(d).await
            }
            Frame::DeviceSideClose { device: d, conn } => {
                let dev = &mut self.devices[d];
                // A close does not cross a partition either.
                if dev.partitioned || dev.conn != Some(conn) {
                    return Ok(());
                }
                dev.conn = None;
                dev.connected = false;
                self.conn_owner.remove(&conn);
                if let Some(engine) = dev.engine.as_mut() {
                    engine.handle_disconnected(now, "closed by the server");
                }
                self.run_device(d).await
            }
        }
    }
}
