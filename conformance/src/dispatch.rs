//! [`DispatchOracle`]: the dispatch rules of one device's engine, checked from what its
//! driver saw. The simulation ([`crate::sim`]) and the `engine_inputs` fuzz target feed it
//! every committed batch, every restart and every event, in the order the driver executed
//! them, and it reports each rule broken:
//! - `MessagesReceived` is not empty, carries only messages of its conversation, each with a
//!   seq, strictly ascending per conversation over the whole run (restarts included), so each
//!   (conversation, seq) is announced as new at most once;
//! - a message is announced only after a committed batch stored it, never when an earlier
//!   process stored it first (it is not new to the app), and never when this device first
//!   stored it as its own pending send (that is an ack, not a received message);
//! - `MessageSent` comes at most once per client id over the whole run, after a committed
//!   batch gave the send that very seq (unless the caller knows the seq is gone: deleted on
//!   the server, or no longer in the store). One known limit of the engine can be tolerated
//!   ([`DispatchOracle::tolerate_sent_again_after_restart`]): a later process announcing a
//!   send again at another seq, which only a server contradicting itself can cause.
//!
//! It reads no store: everything it knows comes from the batches it is told committed.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_engine::{ClientMsgId, ConversationId, Event, Seq, UserId, WriteBatch, WriteOp};

/// A message as the dispatch rules know it: conversation, sender, client id.
pub type MessageKey = (ConversationId, UserId, ClientMsgId);

/// What committed batches stored for a message.
#[derive(Clone, Copy, Debug)]
struct StoredInfo {
    /// The process whose batch first stored it.
    first_process: u32,
    /// First stored without a seq: this device's own send.
    first_pending: bool,
    /// The last seq a committed batch gave it.
    seq: Option<Seq>,
}

/// Checks one device's dispatch rules (see the module docs). Feed it, in execution order,
/// [`DispatchOracle::committed`] for every batch that committed,
/// [`DispatchOracle::restarted`] when a new engine starts from the store, and
/// [`DispatchOracle::event`] for every event; read what broke with
/// [`DispatchOracle::violations`].
#[derive(Clone, Debug)]
pub struct DispatchOracle {
    process: u32,
    stored: BTreeMap<MessageKey, StoredInfo>,
    /// (conversation, seq) announced as new in the current process.
    announced: BTreeSet<(ConversationId, Seq)>,
    /// Per conversation, the last seq announced as new (whole run).
    last_announced: BTreeMap<ConversationId, Seq>,
    /// Client ids `MessageSent` named (whole run), with the process and seq of the last one.
    sent: BTreeMap<ClientMsgId, (u32, Seq)>,
    /// Whether a later process may announce a send again at another seq.
    sent_again_after_restart: bool,
    violations: Vec<String>,
}

impl Default for DispatchOracle {
    fn default() -> Self {
        Self::new()
    }
}

impl DispatchOracle {
    /// Process 0, nothing stored yet.
    pub fn new() -> Self {
        Self {
            process: 0,
            stored: BTreeMap::new(),
            announced: BTreeSet::new(),
            last_announced: BTreeMap::new(),
            sent: BTreeMap::new(),
            sent_again_after_restart: false,
            violations: Vec::new(),
        }
    }

    /// Tolerates the engine's known limit: it knows the sends an earlier process acked only
    /// from the store, which keeps no trace of one acked at a seq already held or whose row
    /// the server deleted since; a server that delivers such a client id again at another seq
    /// gets a second `MessageSent` from a later process (ARCHITECTURE.md, known limits). The
    /// simulation's server never does that, so the simulation stays strict; the fuzz target,
    /// whose server is arbitrary, tolerates it unless told to be strict.
    pub fn tolerate_sent_again_after_restart(&mut self) {
        self.sent_again_after_restart = true;
    }

    /// The current process (0 at start, +1 per [`DispatchOracle::restarted`]).
    pub fn process(&self) -> u32 {
        self.process
    }

    /// A batch committed: the messages it puts (its [`written_messages`], taken before it
    /// was handed to the store) are stored from now on.
    pub fn committed(&mut self, written: &[(MessageKey, Option<Seq>)]) {
        for (key, seq) in written {
            let seq = *seq;
            let info = self.stored.entry(key.clone()).or_insert(StoredInfo {
                first_process: self.process,
                first_pending: seq.is_none(),
                seq: None,
            });
            if seq.is_some() {
                info.seq = seq;
            }
        }
    }

    /// A new engine (process) started from the store.
    pub fn restarted(&mut self) {
        self.process += 1;
        self.announced.clear();
    }

    /// The seq committed batches last gave a message (`None`: never stored with a seq).
    pub fn stored_seq(&self, key: &MessageKey) -> Option<Seq> {
        self.stored.get(key).and_then(|info| info.seq)
    }

    /// Checks one event. `whence` starts every violation message (device, process, time);
    /// `own_user` is the device's user; `seq_gone` says whether the seq a `MessageSent` names
    /// for this send is gone (deleted on the server, or no row for the send in the store),
    /// which excuses a send no committed batch gave that seq.
    pub fn event(
        &mut self,
        whence: &str,
        own_user: &UserId,
        event: &Event,
        seq_gone: impl FnOnce(&MessageKey, Seq) -> bool,
    ) {
        match event {
            Event::MessagesReceived {
                conversation,
                messages,
            } => {
                if messages.is_empty() {
                    self.violations.push(format!(
                        "{whence}: MessagesReceived for {conversation} without messages"
                    ));
                }
                for m in messages {
                    if &m.conversation != conversation {
                        self.violations.push(format!(
                            "{whence}: MessagesReceived for {conversation} carries a message of {}",
                            m.conversation
                        ));
                    }
                    let Some(seq) = m.seq else {
                        self.violations.push(format!(
                            "{whence}: MessagesReceived carries {} without a seq",
                            m.client_msg_id
                        ));
                        continue;
                    };
                    let last = self.last_announced.insert(conversation.clone(), seq);
                    if last.is_some_and(|l| l >= seq) {
                        self.violations.push(format!(
                            "{whence}: {conversation} seq {} announced after seq {:?} (not ascending)",
                            seq.0,
                            last.map(|l| l.0)
                        ));
                    }
                    if !self.announced.insert((conversation.clone(), seq)) {
                        self.violations.push(format!(
                            "{whence}: {conversation} seq {} announced as new twice in one process",
                            seq.0
                        ));
                    }
                    let key = (
                        conversation.clone(),
                        m.sender.clone(),
                        m.client_msg_id.clone(),
                    );
                    match self.stored.get(&key) {
                        None => self.violations.push(format!(
                            "{whence}: {conversation} seq {} announced before a committed batch stored it",
                            seq.0
                        )),
                        Some(info) if info.first_process < self.process => {
                            self.violations.push(format!(
                                "{whence}: {conversation} seq {} announced as new but stored by process {}",
                                seq.0, info.first_process
                            ))
                        }
                        Some(info) if info.first_pending => self.violations.push(format!(
                            "{whence}: own send {} ({conversation} seq {}) announced as received",
                            m.client_msg_id, seq.0
                        )),
                        Some(_) => {}
                    }
                }
            }
            Event::MessageSent {
                conversation,
                client_msg_id,
                seq,
            } => {
                match self.sent.insert(client_msg_id.clone(), (self.process, *seq)) {
                    None => {}
                    Some((process, earlier))
                        if process != self.process
                            && earlier != *seq
                            && self.sent_again_after_restart => {}
                    Some((process, earlier)) => self.violations.push(format!(
                        "{whence}: MessageSent twice for {client_msg_id} (first at seq {} in process {process})",
                        earlier.0
                    )),
                }
                let key = (
                    conversation.clone(),
                    own_user.clone(),
                    client_msg_id.clone(),
                );
                let stored_seq = self.stored_seq(&key);
                if stored_seq != Some(*seq) && !seq_gone(&key, *seq) {
                    self.violations.push(format!(
                        "{whence}: MessageSent {client_msg_id} at seq {} but committed batches gave it {:?}",
                        seq.0, stored_seq
                    ));
                }
            }
            _ => {}
        }
    }

    /// Every rule broken so far, in the order found.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

/// The messages a batch puts, keyed for the dispatch rules, with their seqs.
pub fn written_messages(batch: &WriteBatch) -> Vec<(MessageKey, Option<Seq>)> {
    let mut out = Vec::new();
    for op in &batch.ops {
        if let WriteOp::PutMessages(messages) = op {
            out.extend(messages.iter().map(|m| {
                (
                    (
                        m.conversation.clone(),
                        m.sender.clone(),
                        m.client_msg_id.clone(),
                    ),
                    m.seq,
                )
            }));
        }
    }
    out
}
