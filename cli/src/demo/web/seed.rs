//! What `tidemark demo --web` puts in a new server store: the page's people, their
//! conversations and messages, from a seed.
//!
//! Written straight into the store before the server starts, through the same
//! [`ServerStore`] calls the server makes when it accepts a send (`append`, then the sender's
//! read seq), in one group commit: sending 20,000 messages to 10,000 conversations over
//! WebSockets would take far longer, and the result is the same rows.

use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, Seq, Timestamp, UserId,
};
use tidemark_server::net::wall_clock;
use tidemark_server::{
    AppendOutcome, NewMessage, ServerStore, ServerStoreError, SqliteServerStore,
};

use super::super::plan::{push_words, Rng};

/// The people of the page, in the order the page lists them. Alice is the one whose
/// conversations are counted.
pub const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Server time between two seeded messages: the history spreads back from now.
const MESSAGE_SPACING_MS: u64 = 30_000;
/// One in this many generated conversations is a group.
const GROUP_EVERY: usize = 10;
/// One in this many messages is alice's own.
const ALICE_EVERY: u64 = 5;

/// What [`seed`] created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// Users, the page's people included.
    pub users: usize,
    /// Alice's conversations.
    pub conversations: usize,
    /// Messages appended.
    pub messages: usize,
}

/// A conversation to create, alice first among its members.
struct Planned {
    id: ConversationId,
    kind: ConversationKind,
    members: Vec<UserId>,
}

/// The conversations: direct alice-bob, direct alice-carol, the group `team` of the four,
/// then generated ones (each with its own generated user) up to `conversations` in all.
fn plan_conversations(conversations: usize) -> (Vec<Planned>, Vec<UserId>) {
    let [alice, bob, carol, dave] = PEOPLE.map(UserId::from);
    let mut planned = vec![
        Planned {
            id: ConversationId::from("dm-alice-bob"),
            kind: ConversationKind::Direct,
            members: vec![alice.clone(), bob.clone()],
        },
        Planned {
            id: ConversationId::from("dm-alice-carol"),
            kind: ConversationKind::Direct,
            members: vec![alice.clone(), carol.clone()],
        },
        Planned {
            id: ConversationId::from("team"),
            kind: ConversationKind::Group,
            members: vec![alice.clone(), bob.clone(), carol.clone(), dave.clone()],
        },
    ];
    planned.truncate(conversations);
    let mut generated = Vec::new();
    let width = conversations.to_string().len();
    for i in planned.len()..conversations {
        let friend = UserId(format!("friend-{i:0width$}"));
        generated.push(friend.clone());
        if i % GROUP_EVERY == GROUP_EVERY - 1 {
            // A group with one of the page's other people, so they see groups too.
            let person = [&bob, &carol, &dave][i % 3].clone();
            planned.push(Planned {
                id: ConversationId(format!("group-{i:0width$}")),
                kind: ConversationKind::Group,
                members: vec![alice.clone(), person, friend],
            });
        } else {
            planned.push(Planned {
                id: ConversationId(format!("dm-{i:0width$}")),
                kind: ConversationKind::Direct,
                members: vec![alice.clone(), friend],
            });
        }
    }
    (planned, generated)
}

/// Which conversation message `n` goes to: while there are messages enough, every
/// conversation gets one (the page's own ones last, so they are the most recent); the rest
/// go a third to the page's conversations and the others anywhere.
fn conversation_of(rng: &mut Rng, n: usize, messages: usize, conversations: usize) -> usize {
    let named = conversations.min(3);
    if messages >= conversations && n < conversations {
        return conversations - 1 - n;
    }
    if rng.below(3) == 0 {
        rng.below(named)
    } else {
        rng.below(conversations)
    }
}

/// Creates the users, alice's `conversations` conversations and `messages` messages in a new
/// store, as one group commit. Seqs come from the store, as for a send.
pub fn seed(
    store: &mut SqliteServerStore,
    seed: u64,
    conversations: usize,
    messages: usize,
) -> Result<Seeded, ServerStoreError> {
    let (planned, generated) = plan_conversations(conversations);
    store.begin_group()?;
    // A failure leaves the group uncommitted, so nothing of it stays: a half-seeded store
    // would be taken for a seeded one by the next start.
    let seeded = fill(store, seed, &planned, &generated, messages)?;
    store.commit_group()?;
    Ok(seeded)
}

fn fill(
    store: &mut SqliteServerStore,
    seed: u64,
    planned: &[Planned],
    generated: &[UserId],
    messages: usize,
) -> Result<Seeded, ServerStoreError> {
    for user in PEOPLE.map(UserId::from).iter().chain(generated) {
        store.create_user(user)?;
    }
    for c in planned {
        store.create_conversation(&c.id, c.kind, &c.members)?;
    }
    let mut rng = Rng::new(seed);
    let start = wall_clock()
        .0
        .saturating_sub(MESSAGE_SPACING_MS.saturating_mul(messages as u64));
    let mut appended = 0;
    for n in 0..messages {
        if planned.is_empty() {
            break;
        }
        let conv = &planned[conversation_of(&mut rng, n, messages, planned.len())];
        let sender = if rng.next_u64().is_multiple_of(ALICE_EVERY) {
            &conv.members[0]
        } else {
            &conv.members[1 + rng.below(conv.members.len() - 1)]
        };
        let mut text = String::new();
        push_words(&mut rng, &mut text);
        let at = Timestamp(start + MESSAGE_SPACING_MS * n as u64);
        let message = NewMessage {
            conversation: conv.id.clone(),
            sender: sender.clone(),
            // The engine's convention: a client id starts with its device.
            client_msg_id: ClientMsgId(format!("seed:{n}")),
            kind: ContentKind::Text,
            content: text.trim_start().as_bytes().to_vec(),
            created_at: at,
        };
        if let AppendOutcome::Appended(stored) = store.append(message, at)? {
            // As after a send: the sender has read up to its own message.
            store.set_read_seq(sender, &conv.id, stored.seq)?;
            appended += 1;
        }
    }
    Ok(Seeded {
        users: PEOPLE.len() + generated.len(),
        conversations: planned.len(),
        messages: appended,
    })
}

/// Alice's conversations and the messages in them, for a store found on disk. `None` when
/// the store holds no alice (it was never seeded).
pub fn count(store: &SqliteServerStore) -> Result<Option<(usize, usize)>, ServerStoreError> {
    let alice = UserId::from(PEOPLE[0]);
    if !store.user_exists(&alice)? {
        return Ok(None);
    }
    const PAGE: usize = 1_000;
    let (mut conversations, mut messages) = (0, 0);
    let mut after: Option<ConversationId> = None;
    loop {
        let page = store.conversations_of(&alice, after.as_ref(), PAGE)?;
        for id in &page {
            if let Some(info) = store.conversation(id)? {
                messages += store.messages(id, Seq(1), info.max_seq, usize::MAX)?.len();
            }
        }
        conversations += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    Ok(Some((conversations, messages)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn seeds_the_page_people_and_counts_back() {
        let mut store = SqliteServerStore::open_in_memory().unwrap();
        let seeded = seed(&mut store, 1, 12, 40).unwrap();
        assert_eq!(seeded.conversations, 12);
        assert_eq!(seeded.messages, 40);
        assert_eq!(count(&store).unwrap(), Some((12, 40)));
        let bob = UserId::from("bob");
        assert!(store
            .is_member(&ConversationId::from("team"), &bob)
            .unwrap());
        // Every conversation got a message, and alice wrote some.
        let mut from_alice = 0;
        for id in store
            .conversations_of(&UserId::from("alice"), None, 100)
            .unwrap()
        {
            let held = store.messages(&id, Seq(1), Seq(1_000), 1_000).unwrap();
            assert!(!held.is_empty(), "{id} has no message");
            from_alice += held.iter().filter(|m| m.sender.0 == "alice").count();
        }
        assert!(from_alice > 0);
    }

    #[test]
    fn fewer_conversations_than_the_named_ones() {
        let mut store = SqliteServerStore::open_in_memory().unwrap();
        let seeded = seed(&mut store, 1, 2, 5).unwrap();
        assert_eq!(seeded.conversations, 2);
        assert_eq!(count(&store).unwrap(), Some((2, 5)));
    }
}
