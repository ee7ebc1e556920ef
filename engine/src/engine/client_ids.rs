//! Client-id generation: making the ids of this device's sends and recognising them later.
//!
//! Owns the device prefix, the id counter and the salt (a digest of the snapshot the engine
//! started from). It never draws randomness of its own (the engine's generator is passed in,
//! since reconnect jitter draws from the same stream), never looks at the outbox (the caller
//! says which ids are taken) and never records anything durable: an id is durable only as
//! part of the outbox entry the engine writes.

use crate::model::{ClientMsgId, ConversationId, DeviceId, Timestamp};
use crate::rng::{mix64, SplitMix64};
use crate::storage::SyncSnapshot;

/// Makes and recognises this device's client ids.
#[derive(Debug)]
pub(super) struct ClientIds {
    /// `{device}:`, the start of every id this device makes.
    prefix: String,
    /// Client ids made by this engine (continuing above the outbox's and above every own id
    /// seen), part of each id so ids sort in creation order.
    created: u64,
    /// Digest of the snapshot the engine started from, mixed into the random part.
    salt: u64,
}

impl ClientIds {
    /// The ids of `device`, salted by the snapshot the engine starts from. The counter goes
    /// on above the own ids among `existing` (the outbox's).
    pub(super) fn new<'a>(
        device: &DeviceId,
        snapshot: &SyncSnapshot,
        existing: impl IntoIterator<Item = &'a ClientMsgId>,
    ) -> Self {
        let mut ids = Self {
            prefix: format!("{device}:"),
            created: 0,
            salt: snapshot_digest(snapshot),
        };
        ids.created = existing
            .into_iter()
            .filter_map(|id| ids.own_counter(id))
            .max()
            .unwrap_or(0);
        ids
    }

    /// A new client id for a send in `conversation`:
    /// `{device}:{time:012x}-{counter:06x}-{random:016x}-{tag:016x}`.
    ///
    /// - The device prefix marks this device's own sends, so an echo is known as one even
    ///   after the outbox forgot it (a send that failed here but reached the server).
    /// - Fixed-width time and counter: ids sort in creation order, so the outbox (ordered by
    ///   time, then id) resends same-millisecond messages in the order they were sent. The
    ///   counter continues above the outbox's ids after a restart.
    /// - The random part comes from `rng` (seeded from the seed and the start time) and a
    ///   digest of the snapshot the engine started from (see
    ///   [`EngineConfig::seed`](crate::EngineConfig::seed)).
    /// - The tag binds the id to its conversation ([`conversation_tag`]): an echo is
    ///   recognised by the prefix only in the conversation the send was made in.
    ///
    /// An id for which `taken` says yes (one already in the outbox) is never returned.
    pub(super) fn make(
        &mut self,
        rng: &mut SplitMix64,
        now: Timestamp,
        conversation: &ConversationId,
        taken: impl Fn(&ClientMsgId) -> bool,
    ) -> ClientMsgId {
        loop {
            self.created += 1;
            let r = rng.next_u64() ^ self.salt;
            let head = format!(
                "{}{:012x}-{:06x}-{:016x}",
                self.prefix, now.0, self.created, r
            );
            let id = ClientMsgId(format!(
                "{head}-{:016x}",
                conversation_tag(conversation, &head)
            ));
            if !taken(&id) {
                return id;
            }
        }
    }

    /// An id of this device arrived from the server. A new id must never equal a stored one
    /// of this device: after a restart in the same millisecond the random part can repeat
    /// (the snapshot the digest comes from may not show a send that never committed), so
    /// ids go on above every own counter seen.
    pub(super) fn saw(&mut self, id: &ClientMsgId) {
        if let Some(counter) = self.own_counter(id) {
            self.created = self.created.max(counter);
        }
    }

    /// Whether `id` was made by this device for a send in `conversation` (its prefix is this
    /// device's and its tag matches the conversation). Ids of other devices, of other
    /// conversations, and ids made before tags existed are not.
    pub(super) fn is_own_in(&self, conversation: &ConversationId, id: &ClientMsgId) -> bool {
        if !id.0.starts_with(&self.prefix) {
            return false;
        }
        let Some((head, tag)) = id.0.rsplit_once('-') else {
            return false;
        };
        tag.len() == 16
            && u64::from_str_radix(tag, 16).is_ok_and(|t| t == conversation_tag(conversation, head))
    }

    /// The counter of an id this device made, if `id` is one.
    fn own_counter(&self, id: &ClientMsgId) -> Option<u64> {
        let body = id.0.strip_prefix(&self.prefix)?;
        let counter = body.split('-').nth(1)?;
        u64::from_str_radix(counter, 16).ok()
    }
}

/// FNV-1a over `bytes`, continuing from `hash`. Stable across builds and platforms: client
/// id tags are stored and checked by later builds.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// The tag of a client id: a hash of the conversation and the id's other parts. Part of the
/// id format (stable), so it must never change.
fn conversation_tag(conversation: &ConversationId, head: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, conversation.0.as_bytes());
    // A separator byte that is not UTF-8, so ("ab", "c") and ("a", "bc") differ.
    let h = fnv1a(h, &[0xFF]);
    mix64(fnv1a(h, head.as_bytes()))
}

/// A digest of what the engine starts from, mixed into the random part of client ids: an
/// engine restarted with the same seed in the same millisecond, but after any durable change
/// (a send changes its conversation's record and the outbox), makes other ids.
fn snapshot_digest(snapshot: &SyncSnapshot) -> u64 {
    let mut outbox = FNV_OFFSET;
    for entry in &snapshot.outbox {
        outbox = fnv1a(outbox, entry.conversation.0.as_bytes());
        outbox = fnv1a(outbox, &[0xFF]);
        outbox = fnv1a(outbox, entry.client_msg_id.0.as_bytes());
        outbox = fnv1a(outbox, &[0xFF]);
    }
    // Conversations come in no particular order: combine their hashes by addition.
    let mut conversations = 0u64;
    for conv in &snapshot.conversations {
        let mut h = fnv1a(FNV_OFFSET, conv.id.0.as_bytes());
        h = fnv1a(h, &[0xFF]);
        for n in [
            conv.server_max_seq.0,
            conv.server_min_seq.0,
            conv.read_seq.0,
            conv.last_activity.0,
            conv.held.count(),
            conv.held.ranges().len() as u64,
            conv.deleted.count(),
        ] {
            h = fnv1a(h, &n.to_le_bytes());
        }
        if let Some(latest) = &conv.latest {
            h = fnv1a(h, latest.client_msg_id.0.as_bytes());
            h = fnv1a(h, &latest.seq.map_or(0, |s| s.0).to_le_bytes());
            h = fnv1a(h, &latest.time.0.to_le_bytes());
        }
        conversations = conversations.wrapping_add(mix64(h));
    }
    mix64(outbox ^ mix64(conversations) ^ snapshot.pending_changes.len() as u64)
}
