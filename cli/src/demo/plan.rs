//! What the demo puts on the server: users, conversations and messages, from a seed.
//!
//! Deterministic for a seed so a run can be repeated. The shape is what an inbox looks like
//! after time offline: mostly one-to-one conversations with a few groups, activity skewed
//! toward some conversations, and a few messages alice sent from her other device (they are
//! hers, so they never count as unread, and they move her read position).

use tidemark_engine::rng::SplitMix64;
use tidemark_engine::{ClientMsgId, ConversationId, ConversationKind, UserId};

/// The user whose device syncs.
pub const ALICE: &str = "alice";
/// Alice's device that goes offline and syncs.
pub const ALICE_PHONE: &str = "phone";
/// Alice's other device, which sends a few messages while the phone is offline.
pub const ALICE_LAPTOP: &str = "laptop";
/// The device the senders' connections use.
pub const SENDER_DEVICE: &str = "loadgen";
/// One in this many conversations is a group.
const GROUP_EVERY: usize = 10;
/// Per thousand messages, how many alice sends from her laptop.
const ALICE_PER_MILLE: u64 = 15;

/// A conversation to create.
#[derive(Clone, Debug)]
pub struct PlannedConversation {
    /// Its id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Alice first, then the senders in it.
    pub members: Vec<UserId>,
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct PlannedMessage {
    /// Index into [`Plan::conversations`].
    pub conversation: usize,
    /// Who sends it: `None` for alice (from her laptop), else an index into [`Plan::senders`].
    pub sender: Option<usize>,
    /// The sender's id for it.
    pub client_msg_id: ClientMsgId,
    /// Its text.
    pub content: Vec<u8>,
}

/// Everything the demo creates.
#[derive(Clone, Debug)]
pub struct Plan {
    /// alice.
    pub alice: UserId,
    /// The other users.
    pub senders: Vec<UserId>,
    /// The conversations, alice in every one.
    pub conversations: Vec<PlannedConversation>,
    /// The messages, in the order they are meant to be sent.
    pub messages: Vec<PlannedMessage>,
}

/// The workspace's PRNG ([`SplitMix64`]) with the draws the plan makes: small, fast, and
/// good enough to spread messages.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.modulo(n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.unit()
    }
}

const WORDS: &[&str] = &[
    "hey",
    "are",
    "you",
    "coming",
    "tonight",
    "the",
    "build",
    "is",
    "green",
    "again",
    "lunch",
    "at",
    "noon",
    "sounds",
    "good",
    "see",
    "slides",
    "attached",
    "thanks",
    "ok",
    "café",
    "naïve",
    "日本語",
    "👋",
    "🎉",
    "ship",
    "it",
    "tomorrow",
    "review",
    "please",
    "merged",
    "late",
    "train",
];

/// Appends three to 27 random words, each after a space: a message's chatter.
pub fn push_words(rng: &mut Rng, text: &mut String) {
    let words = 3 + rng.below(25);
    for _ in 0..words {
        text.push(' ');
        text.push_str(WORDS[rng.below(WORDS.len())]);
    }
}

/// Builds the plan: `senders` other users, `conversations` conversations and `messages`
/// messages.
pub fn make_plan(seed: u64, senders: usize, conversations: usize, messages: usize) -> Plan {
    let mut rng = Rng::new(seed);
    let senders: Vec<UserId> = (0..senders.max(1))
        .map(|i| UserId(format!("sender-{:02}", i + 1)))
        .collect();
    let width = conversations.max(1).to_string().len();
    let mut planned = Vec::with_capacity(conversations);
    for i in 0..conversations {
        let is_group = i % GROUP_EVERY == GROUP_EVERY - 1 && senders.len() > 1;
        let alice = UserId::from(ALICE);
        if is_group {
            // Three to five senders (as many as exist), distinct.
            let want = (3 + rng.below(3)).min(senders.len());
            let start = rng.below(senders.len());
            let mut members = vec![alice];
            members.extend((0..want).map(|k| senders[(start + k) % senders.len()].clone()));
            planned.push(PlannedConversation {
                id: ConversationId(format!("group-{i:0width$}")),
                kind: ConversationKind::Group,
                members,
            });
        } else {
            let peer = senders[i % senders.len()].clone();
            planned.push(PlannedConversation {
                id: ConversationId(format!("dm-{i:0width$}")),
                kind: ConversationKind::Direct,
                members: vec![alice, peer],
            });
        }
    }
    let sender_index = |user: &UserId| senders.iter().position(|s| s == user);
    let mut counters = vec![0u64; senders.len() + 1];
    let mut planned_messages = Vec::with_capacity(messages);
    for n in 0..messages {
        if planned.is_empty() {
            break;
        }
        // Half uniform, half skewed toward the first conversations: every conversation gets
        // something, a few get a lot.
        let u = rng.unit();
        let conversation = if n % 2 == 0 {
            rng.below(planned.len())
        } else {
            ((u * u * u) * planned.len() as f64) as usize % planned.len()
        };
        let conv = &planned[conversation];
        let from_alice = rng.next_u64() % 1000 < ALICE_PER_MILLE;
        let sender = if from_alice {
            None
        } else {
            // Members after alice are senders.
            let pick = &conv.members[1 + rng.below(conv.members.len() - 1)];
            sender_index(pick)
        };
        let slot = sender.map_or(senders.len(), |s| s);
        counters[slot] += 1;
        let client_msg_id = match sender {
            // The engine's convention: a client id starts with its device.
            None => ClientMsgId(format!("{ALICE_LAPTOP}:{}", counters[slot])),
            Some(s) => ClientMsgId(format!("{}:{}", senders[s], counters[slot])),
        };
        let mut text = format!("#{n}");
        push_words(&mut rng, &mut text);
        planned_messages.push(PlannedMessage {
            conversation,
            sender,
            client_msg_id,
            content: text.into_bytes(),
        });
    }
    Plan {
        alice: UserId::from(ALICE),
        senders,
        conversations: planned,
        messages: planned_messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_well_formed() {
        let a = make_plan(7, 8, 50, 5_000);
        let b = make_plan(7, 8, 50, 5_000);
        assert_eq!(a.messages.len(), 5_000);
        assert_eq!(a.conversations.len(), 50);
        assert_eq!(
            a.messages.iter().map(|m| &m.content).collect::<Vec<_>>(),
            b.messages.iter().map(|m| &m.content).collect::<Vec<_>>()
        );
        assert!(a
            .conversations
            .iter()
            .any(|c| c.kind == ConversationKind::Group));
        // Every sender of a message is a member of its conversation.
        for m in &a.messages {
            let conv = &a.conversations[m.conversation];
            if let Some(s) = m.sender {
                assert!(conv.members.contains(&a.senders[s]));
            }
        }
        // Client ids are unique per sender.
        let mut ids: Vec<_> = a.messages.iter().map(|m| m.client_msg_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.messages.len());
        assert!(a.messages.iter().any(|m| m.sender.is_none()));
    }
}
