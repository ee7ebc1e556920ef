//! The demo's proof: alice's store holds exactly what the server holds.
//!
//! Reads the server through the [`ServerStore`] trait and alice's store through the
//! [`Storage`] trait only, as an app would. For every conversation of alice on the server,
//! every seq the server has must be in alice's store with the same sender, client id, kind
//! and content; the store must hold no other message (no extra rows, no unsent ones), no
//! conversation the server does not have, no gap below the server's max seq, and unread
//! counts equal to what the server's read positions say. Then the store's own integrity check
//! must pass.

use std::collections::BTreeSet;

use tidemark_engine::{
    ConversationCursor, ConversationId, Direction, MessageStatus, Seq, Storage, UserId,
};
use tidemark_server::ServerStore;
use tidemark_storage_sqlite::SqliteStorage;

use crate::error::{CliError, CliResult};

/// Most differences listed.
const MAX_DIFFERENCES: usize = 12;
/// Messages read per page from alice's store.
const PAGE: usize = 2_000;

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Conversations of alice on the server.
    pub conversations: u64,
    /// Messages on the server in them.
    pub server_messages: u64,
    /// Messages in alice's store.
    pub client_messages: u64,
    /// Unread for alice by the server's read positions: messages of others above her read
    /// seq.
    pub expected_unread: u64,
    /// The sum of the unread counts in alice's store.
    pub stored_unread: u64,
    /// The first differences (empty: verified).
    pub differences: Vec<String>,
    /// How many differences there were in all.
    pub difference_count: u64,
}

impl Verification {
    fn differ(&mut self, what: String) {
        self.difference_count += 1;
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(what);
        }
    }
}

fn server_err(e: impl std::fmt::Display) -> CliError {
    CliError::new(format!("cannot read the server's store: {e}"))
}

fn client_err(e: impl std::fmt::Display) -> CliError {
    CliError::new(format!("cannot read alice's store: {e}"))
}

/// Compares alice's store with the server's.
pub async fn verify<St: ServerStore>(
    server: &St,
    alice: &UserId,
    client: &SqliteStorage,
) -> CliResult<Verification> {
    let mut v = Verification::default();
    let mut server_ids = BTreeSet::new();
    let mut after: Option<ConversationId> = None;
    loop {
        let ids = server
            .conversations_of(alice, after.as_ref(), 500)
            .map_err(server_err)?;
        let Some(last) = ids.last() else { break };
        after = Some(last.clone());
        for id in ids {
            compare_conversation(server, alice, client, &id, &mut v).await?;
            server_ids.insert(id);
        }
    }
    v.conversations = server_ids.len() as u64;

    // Nothing in the store that the server does not have.
    let mut cursor: Option<ConversationCursor> = None;
    loop {
        let page = client
            .conversations_page(cursor, 500)
            .await
            .map_err(client_err)?;
        let Some(last) = page.last() else { break };
        cursor = Some(ConversationCursor::after(last));
        for c in page {
            if !server_ids.contains(&c.id) {
                v.differ(format!("{}: in alice's store but not on the server", c.id));
            }
        }
    }
    let outbox = client.outbox().await.map_err(client_err)?;
    if !outbox.is_empty() {
        v.differ(format!("alice's outbox holds {} entries", outbox.len()));
    }
    v.stored_unread = client.total_unread().await.map_err(client_err)?;
    if v.stored_unread != v.expected_unread {
        v.differ(format!(
            "total unread: alice's store says {}, the server's read positions say {}",
            v.stored_unread, v.expected_unread
        ));
    }
    if let Err(e) = client.check_integrity().await {
        v.differ(format!("integrity check of alice's store failed: {e}"));
    }
    Ok(v)
}

async fn compare_conversation<St: ServerStore>(
    server: &St,
    alice: &UserId,
    client: &SqliteStorage,
    id: &ConversationId,
    v: &mut Verification,
) -> CliResult<()> {
    let info = server
        .conversation(id)
        .map_err(server_err)?
        .ok_or_else(|| CliError::new(format!("the server lists {id} but has no header for it")))?;
    let expected = server
        .messages(id, Seq(1), info.max_seq, usize::MAX)
        .map_err(server_err)?;
    v.server_messages += expected.len() as u64;
    let read = server.read_seq(alice, id).map_err(server_err)?;
    let unread = expected
        .iter()
        .filter(|m| m.seq > read && &m.sender != alice && m.kind.change_target().is_none())
        .count() as u64;
    v.expected_unread += unread;

    let Some(local) = client.conversation(id).await.map_err(client_err)? else {
        v.differ(format!("{id}: missing from alice's store"));
        return Ok(());
    };
    if local.server_max_seq != info.max_seq {
        v.differ(format!(
            "{id}: alice's store knows max seq {}, the server has {}",
            local.server_max_seq.0, info.max_seq.0
        ));
    }
    let gaps = local.gaps();
    if !gaps.is_empty() {
        v.differ(format!(
            "{id}: alice's store has gaps {}",
            crate::inspect::ranges_text(&gaps)
        ));
    }
    if local.unread != unread {
        v.differ(format!(
            "{id}: unread {} in alice's store, {unread} by the server (read seq {})",
            local.unread, read.0
        ));
    }

    let mut wanted = expected.iter().peekable();
    let mut anchor: Option<Seq> = None;
    loop {
        let page = client
            .messages_page(id, anchor, Direction::After, PAGE)
            .await
            .map_err(client_err)?;
        let Some(last) = page.last() else { break };
        anchor = last.seq;
        for got in &page {
            v.client_messages += 1;
            let Some(seq) = got.seq else {
                v.differ(format!("{id}: a message without a seq in a seq page"));
                continue;
            };
            // Server messages below this seq that the page skipped are missing locally.
            while let Some(want) = wanted.next_if(|w| w.seq < seq) {
                v.differ(format!(
                    "{id}: seq {} is on the server, not in alice's store",
                    want.seq.0
                ));
            }
            match wanted.next_if(|w| w.seq == seq) {
                None => v.differ(format!(
                    "{id}: seq {} is in alice's store, not on the server",
                    seq.0
                )),
                Some(want) => {
                    let same = got.sender == want.sender
                        && got.client_msg_id == want.client_msg_id
                        && got.kind == want.kind
                        && got.content == want.content
                        && got.status == MessageStatus::Sent
                        && !got.revoked;
                    if !same {
                        v.differ(format!(
                            "{id} seq {}: alice has {} {} {:?} {:?}, the server {} {} {:?}",
                            seq.0,
                            got.sender,
                            got.client_msg_id,
                            String::from_utf8_lossy(&got.content),
                            got.status,
                            want.sender,
                            want.client_msg_id,
                            String::from_utf8_lossy(&want.content),
                        ));
                    }
                }
            }
        }
        if anchor.is_none() {
            break;
        }
    }
    for want in wanted {
        v.differ(format!(
            "{id}: seq {} is on the server, not in alice's store",
            want.seq.0
        ));
    }
    let unsent = client.unsent_messages(id).await.map_err(client_err)?;
    if !unsent.is_empty() {
        v.differ(format!(
            "{id}: {} unsent messages in alice's store",
            unsent.len()
        ));
    }
    Ok(())
}
