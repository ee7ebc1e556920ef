//! The storage conformance suite: the [`Storage`] contract as executable cases, generic over
//! the backend, so the memory, SQLite and browser stores are held to the very same rules.
//!
//! Every case is an `async fn <name><F: Backend>(factory: F) -> CaseResult`. It opens one
//! fresh, empty store (device 0's) with [`Backend::open`], writes through [`Storage::apply`],
//! reads back through the trait's read methods, and where the case is about durability closes
//! and reopens the store with [`Backend::reopen`]. What the cases cover:
//! - every trait method, on a fresh store and on a populated one;
//! - `apply` atomicity (a batch rejected midway changes nothing: a full [`dump`] of every read
//!   method is equal before and after) and idempotency (the same batch twice = once);
//! - ordering and paging edges of `conversations_page` and `messages_page`;
//! - the merge rules of `WriteOp::PutMessages` (pending -> sent by client id, no downgrade,
//!   conflicts rejected), edits in seq order, revoke wins, tombstones, pending deletes, the
//!   outbox and pending changes;
//! - Unicode everywhere, 1 MiB payloads, values up to `i64::MAX`, 100k conversations;
//! - close and reopen, and `check_integrity` on good and on broken stores.
//!
//! A backend runs them all with [`crate::backend_suite!`]. Case assertions panic (they are test
//! code); storage failures and inconsistent reads come back as [`CaseError`].
//!
//! [`dump`], [`StoreDump`] and [`sample_batch`] are public so that a backend's own tests
//! (migrations, corruption handling) can compare whole stores too.

mod basics;
mod batches;
mod changes;
mod durability;
mod fixtures;
mod merge;
mod paging;
mod payloads;
mod queues;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::Backend;
use tidemark_engine::{
    ContentKind, Conversation, ConversationCursor, ConversationId, ConversationKind, Direction,
    LatestMessage, Message, OutboxEntry, Seq, SeqRanges, Storage, StorageError, SyncSnapshot,
    WriteBatch, WriteOp,
};

pub use basics::*;
pub use batches::*;
pub use changes::*;
pub use durability::*;
pub use merge::*;
pub use paging::*;
pub use payloads::*;
pub use queues::*;

use fixtures::{
    acked, cid, conv, edit, edit_change, failed, mid, outbox_entry, pending, revoke, sent,
    sent_run, tombstones,
};

/// What a case returns. Its own assertions panic; this carries the failures it cannot go on
/// after.
pub type CaseResult = Result<(), CaseError>;

/// Why a case could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// A storage call failed where the contract says it must succeed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The read methods returned something impossible (a page longer than its limit, out of
    /// order, a message without a seq in a page, ...).
    #[error("inconsistent reads: {0}")]
    Inconsistent(String),
}

// ----- dumps -----

/// The page size [`dump`] reads with: small, so even modest stores are read in several pages.
pub const DUMP_PAGE: usize = 64;

/// Everything a store shows through the [`Storage`] read methods, for comparing whole stores
/// (before and after a failed batch, a re-applied batch, a reopen). Built by [`dump`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDump {
    /// The conversation list, newest activity first, read page by page.
    pub conversations: Vec<Conversation>,
    /// Per conversation: its messages with a seq, ascending, read page by page.
    pub messages: BTreeMap<ConversationId, Vec<Message>>,
    /// Per conversation: `unsent_messages`.
    pub unsent: BTreeMap<ConversationId, Vec<Message>>,
    /// Per conversation: `tombstones`.
    pub tombstones: BTreeMap<ConversationId, SeqRanges>,
    /// `outbox()`.
    pub outbox: Vec<OutboxEntry>,
    /// `total_unread()`.
    pub total_unread: u64,
    /// `load_snapshot()`, normalized by [`normalize_snapshot`].
    pub snapshot: SyncSnapshot,
}

impl StoreDump {
    /// The first difference between two dumps, described for a failure message; `None` when
    /// they are equal.
    pub fn first_difference(&self, other: &StoreDump) -> Option<String> {
        first_slice_difference(
            "conversation list",
            &self.conversations,
            &other.conversations,
        )
        .or_else(|| first_map_difference("messages", &self.messages, &other.messages))
        .or_else(|| first_map_difference("unsent messages", &self.unsent, &other.unsent))
        .or_else(|| {
            let a: Vec<_> = self.tombstones.iter().collect();
            let b: Vec<_> = other.tombstones.iter().collect();
            first_slice_difference("tombstones", &a, &b)
        })
        .or_else(|| first_slice_difference("outbox", &self.outbox, &other.outbox))
        .or_else(|| {
            (self.total_unread != other.total_unread).then(|| {
                format!(
                    "total unread: {} vs {}",
                    self.total_unread, other.total_unread
                )
            })
        })
        .or_else(|| {
            first_slice_difference(
                "snapshot conversations",
                &self.snapshot.conversations,
                &other.snapshot.conversations,
            )
        })
        .or_else(|| {
            first_slice_difference(
                "snapshot outbox",
                &self.snapshot.outbox,
                &other.snapshot.outbox,
            )
        })
        .or_else(|| {
            first_slice_difference(
                "snapshot pending changes",
                &self.snapshot.pending_changes,
                &other.snapshot.pending_changes,
            )
        })
    }
}

fn first_slice_difference<T: PartialEq + fmt::Debug>(
    what: &str,
    a: &[T],
    b: &[T],
) -> Option<String> {
    if a == b {
        return None;
    }
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some(format!(
        "{what}: {} vs {} entries, first difference at index {at}: {:?} vs {:?}",
        a.len(),
        b.len(),
        a.get(at),
        b.get(at)
    ))
}

fn first_map_difference<T: PartialEq + fmt::Debug>(
    what: &str,
    a: &BTreeMap<ConversationId, Vec<T>>,
    b: &BTreeMap<ConversationId, Vec<T>>,
) -> Option<String> {
    let keys: BTreeSet<&ConversationId> = a.keys().chain(b.keys()).collect();
    keys.into_iter().find_map(|k| match (a.get(k), b.get(k)) {
        (Some(x), Some(y)) => first_slice_difference(&format!("{what} of {k:?}"), x, y),
        (x, y) => Some(format!(
            "{what} of {k:?}: read in one dump only ({} vs {})",
            x.is_some(),
            y.is_some()
        )),
    })
}

/// Panics with the first difference when `actual` is not `expected`.
pub fn assert_dumps_equal(expected: &StoreDump, actual: &StoreDump, context: &str) {
    if let Some(diff) = expected.first_difference(actual) {
        panic!("{context}: the store changed: {diff}");
    }
}

/// Puts a snapshot's unordered parts in a canonical order: conversations by id, pending
/// changes by (conversation, seq). The outbox keeps its order (oldest first is the contract).
pub fn normalize_snapshot(snapshot: &mut SyncSnapshot) {
    snapshot.conversations.sort_by(|a, b| a.id.cmp(&b.id));
    snapshot
        .pending_changes
        .sort_by(|a, b| (&a.conversation, a.seq).cmp(&(&b.conversation, b.seq)));
}

/// Reads the whole store through the [`Storage`] read methods: the conversation list page by
/// page, every listed conversation's messages page by page, unsent messages and tombstones,
/// the outbox, the total unread and the snapshot. Messages of conversations without a record
/// are not listed anywhere: name them with [`dump_including`].
pub async fn dump<S: Storage + ?Sized>(store: &S) -> Result<StoreDump, CaseError> {
    dump_including(store, &[]).await
}

/// [`dump`], reading the messages, unsent messages and tombstones of `extra` conversations
/// too (whether or not they have a record).
pub async fn dump_including<S: Storage + ?Sized>(
    store: &S,
    extra: &[ConversationId],
) -> Result<StoreDump, CaseError> {
    let conversations = conversations_in_pages(store, DUMP_PAGE).await?;
    let ids: BTreeSet<ConversationId> = conversations
        .iter()
        .map(|c| c.id.clone())
        .chain(extra.iter().cloned())
        .collect();
    let mut messages = BTreeMap::new();
    let mut unsent = BTreeMap::new();
    let mut tombstones = BTreeMap::new();
    for id in ids {
        messages.insert(
            id.clone(),
            messages_in_pages(store, &id, Direction::After, DUMP_PAGE).await?,
        );
        unsent.insert(id.clone(), store.unsent_messages(&id).await?);
        tombstones.insert(id.clone(), store.tombstones(&id).await?);
    }
    let mut snapshot = store.load_snapshot().await?;
    normalize_snapshot(&mut snapshot);
    Ok(StoreDump {
        conversations,
        messages,
        unsent,
        tombstones,
        outbox: store.outbox().await?,
        total_unread: store.total_unread().await?,
        snapshot,
    })
}

/// The whole conversation list, read `limit` at a time with [`ConversationCursor::after`] the
/// last entry of each page, checking every page is at most `limit` long and the list strictly
/// ordered (newest activity first, ties by id ascending).
pub async fn conversations_in_pages<S: Storage + ?Sized>(
    store: &S,
    limit: usize,
) -> Result<Vec<Conversation>, CaseError> {
    if limit == 0 {
        return Err(CaseError::Inconsistent("paging with limit 0".to_owned()));
    }
    let mut out: Vec<Conversation> = Vec::new();
    let mut cursor: Option<ConversationCursor> = None;
    loop {
        let page = store.conversations_page(cursor.clone(), limit).await?;
        if page.len() > limit {
            return Err(CaseError::Inconsistent(format!(
                "conversations_page returned {} conversations for limit {limit}",
                page.len()
            )));
        }
        for c in &page {
            if let Some(prev) = out.last() {
                let prev_key = (Reverse(prev.last_activity), &prev.id);
                if prev_key >= (Reverse(c.last_activity), &c.id) {
                    return Err(CaseError::Inconsistent(format!(
                        "conversation list out of order: {:?} ({}) then {:?} ({})",
                        prev.id, prev.last_activity.0, c.id, c.last_activity.0
                    )));
                }
            }
        }
        let full = page.len() == limit;
        cursor = page.last().map(ConversationCursor::after);
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Every message with a seq of `conversation`, ascending, read `limit` at a time: with
/// `Direction::After` from the oldest up (anchor: the last seq of the previous page), with
/// `Direction::Before` from the newest down (anchor: the first seq of the previous page).
/// Checks every page is at most `limit` long, ascending, of that conversation, with seqs, and
/// on the right side of its anchor.
pub async fn messages_in_pages<S: Storage + ?Sized>(
    store: &S,
    conversation: &ConversationId,
    direction: Direction,
    limit: usize,
) -> Result<Vec<Message>, CaseError> {
    if limit == 0 {
        return Err(CaseError::Inconsistent("paging with limit 0".to_owned()));
    }
    let mut pages: Vec<Vec<Message>> = Vec::new();
    let mut anchor: Option<Seq> = None;
    loop {
        let page = store
            .messages_page(conversation, anchor, direction, limit)
            .await?;
        if page.len() > limit {
            return Err(CaseError::Inconsistent(format!(
                "messages_page of {conversation:?} returned {} messages for limit {limit}",
                page.len()
            )));
        }
        let mut prev: Option<Seq> = None;
        for m in &page {
            let Some(seq) = m.seq else {
                return Err(CaseError::Inconsistent(format!(
                    "messages_page of {conversation:?} returned {:?} without a seq",
                    m.client_msg_id
                )));
            };
            if &m.conversation != conversation {
                return Err(CaseError::Inconsistent(format!(
                    "messages_page of {conversation:?} returned a message of {:?}",
                    m.conversation
                )));
            }
            if prev.is_some_and(|p| p >= seq) {
                return Err(CaseError::Inconsistent(format!(
                    "messages_page of {conversation:?} is not ascending at seq {}",
                    seq.0
                )));
            }
            let wrong_side = match (direction, anchor) {
                (Direction::After, Some(a)) => seq <= a,
                (Direction::Before, Some(a)) => seq >= a,
                (_, None) => false,
            };
            if wrong_side {
                return Err(CaseError::Inconsistent(format!(
                    "messages_page of {conversation:?} {direction:?} {anchor:?} returned seq {}",
                    seq.0
                )));
            }
            prev = Some(seq);
        }
        let full = page.len() == limit;
        anchor = match direction {
            Direction::After => page.last().and_then(|m| m.seq),
            Direction::Before => page.first().and_then(|m| m.seq),
        };
        pages.push(page);
        if !full {
            break;
        }
    }
    if direction == Direction::Before {
        pages.reverse();
    }
    Ok(pages.into_iter().flatten().collect())
}

// ----- the sample store -----

/// The conversations [`sample_batch`] writes.
pub const SAMPLE_CONVERSATIONS: [&str; 4] = ["alpha", "beta", "gamma", "empty"];

/// The ids of [`SAMPLE_CONVERSATIONS`] plus `delta`, which the suite's follow-up batches add:
/// what the atomicity and reopen cases pass to [`dump_including`].
pub fn sample_conversation_ids() -> Vec<ConversationId> {
    SAMPLE_CONVERSATIONS
        .iter()
        .chain(&["delta"])
        .map(|id| cid(id))
        .collect()
}

fn sample_conversations() -> Vec<Conversation> {
    let alpha = Conversation {
        kind: ConversationKind::Direct,
        read_seq: Seq(2),
        not_unread: SeqRanges::from_range(Seq(4), Seq(4)),
        deleted: SeqRanges::from_range(Seq(4), Seq(4)),
        latest: Some(LatestMessage::of(&sent("alpha", "alpha-6", 6))),
        ..conv("alpha", 600, 3, 6)
    };
    let beta = Conversation {
        server_max_seq: Seq(16),
        read_seq: Seq(10),
        not_unread: SeqRanges::from_range(Seq(4), Seq(9)),
        deleted: SeqRanges::from_range(Seq(4), Seq(9)),
        latest: Some(LatestMessage::of(&sent("beta", "beta-12", 12))),
        ..conv("beta", 900, 2, 14)
    };
    let gamma = Conversation {
        kind: ConversationKind::Direct,
        latest: Some(LatestMessage::of(&pending("gamma", "gamma-p", 800))),
        ..conv("gamma", 900, 0, 0)
    };
    vec![alpha, beta, gamma, conv("empty", 0, 0, 0)]
}

fn sample_outbox() -> Vec<OutboxEntry> {
    vec![
        outbox_entry("alpha", "alpha-p", 700),
        outbox_entry("gamma", "gamma-p", 800),
    ]
}

/// A well-formed store's worth of every kind of op: four conversations (`alpha`: messages at
/// 1..=6 with 4 tombstoned, a pending send with its outbox entry and a failed send; `beta`:
/// messages 1..=3 and 10..=14 with 4..=9 tombstoned, seq 2 edited by 13, seq 11 revoked by 14,
/// a pending change at 16 for 15; `gamma`: nothing held, a pending send with its outbox
/// entry; `empty`), in list order beta, gamma, alpha, empty. It passes `check_integrity`.
pub fn sample_batch() -> WriteBatch {
    let mut ops: Vec<WriteOp> = sample_conversations()
        .into_iter()
        .map(WriteOp::PutConversation)
        .collect();
    let mut alpha = sent_run("alpha", [1, 2, 3, 5, 6]);
    alpha.push(pending("alpha", "alpha-p", 700));
    alpha.push(failed("alpha", "alpha-f", 650));
    let mut beta = sent_run("beta", [1, 2, 3, 10, 11, 12]);
    beta.push(Message {
        kind: ContentKind::Edit { target: Seq(2) },
        content: b"beta two, edited".to_vec(),
        ..sent("beta", "beta-13", 13)
    });
    beta.push(Message {
        kind: ContentKind::Revoke { target: Seq(11) },
        content: Vec::new(),
        ..sent("beta", "beta-14", 14)
    });
    ops.extend([
        WriteOp::PutMessages(alpha),
        WriteOp::PutMessages(beta),
        WriteOp::PutMessages(vec![pending("gamma", "gamma-p", 800)]),
        tombstones("alpha", 4, 4),
        tombstones("beta", 4, 9),
        edit("beta", 2, 13, b"beta two, edited"),
        revoke("beta", 11),
    ]);
    ops.extend(sample_outbox().into_iter().map(WriteOp::PutOutbox));
    ops.push(WriteOp::PutPendingChange(sample_pending_change()));
    WriteBatch { ops }
}

fn sample_pending_change() -> tidemark_engine::PendingChange {
    edit_change("beta", 16, 15, "fifteen, edited")
}

/// `alpha` as [`followup_ops`] rewrites it.
fn followup_alpha() -> Conversation {
    Conversation {
        kind: ConversationKind::Direct,
        read_seq: Seq(2),
        not_unread: SeqRanges::from_range(Seq(3), Seq(4)),
        deleted: SeqRanges::from_range(Seq(3), Seq(4)),
        latest: Some(LatestMessage::of(&acked(
            &pending("alpha", "alpha-p", 700),
            8,
        ))),
        ..conv("alpha", 1_000, 4, 8)
    }
}

/// A valid batch over [`sample_batch`] with every kind of op: rewrites `alpha` (held to 8),
/// adds `delta` with a message, puts `alpha` 7, acks `alpha-p` at 8, edits `alpha` 1, revokes
/// `alpha` 2, tombstones `alpha` 3, deletes the failed `alpha-f`, removes `alpha-p`'s outbox
/// entry, sends `gamma-q` (pending row + outbox), puts a pending change in `delta` and removes
/// `beta`'s.
fn followup_ops() -> Vec<WriteOp> {
    vec![
        WriteOp::PutConversation(followup_alpha()),
        WriteOp::PutConversation(conv("delta", 50, 1, 1)),
        WriteOp::PutMessages(vec![
            sent("alpha", "alpha-7", 7),
            acked(&pending("alpha", "alpha-p", 700), 8),
            sent("delta", "delta-1", 1),
            pending("gamma", "gamma-q", 950),
        ]),
        edit("alpha", 1, 9, b"alpha one, edited"),
        revoke("alpha", 2),
        tombstones("alpha", 3, 3),
        WriteOp::DeletePendingMessage {
            conversation: cid("alpha"),
            client_msg_id: mid("alpha-f"),
        },
        WriteOp::RemoveOutbox(mid("alpha-p")),
        WriteOp::PutOutbox(outbox_entry("gamma", "gamma-q", 950)),
        WriteOp::PutPendingChange(edit_change("delta", 5, 4, "delta four, edited")),
        WriteOp::RemovePendingChange {
            conversation: cid("beta"),
            seq: Seq(16),
        },
    ]
}

/// The op that makes a batch fail: `beta`'s seq 1 is held by `beta-1`.
fn conflicting_op() -> WriteOp {
    WriteOp::PutMessages(vec![sent("beta", "intruder", 1)])
}

// ----- the macro -----

/// Every storage case, for [`crate::backend_suite!`]: `$test` is the bracketed test attribute
/// (empty natively), `$factory` the backend expression. Cases known to expose a bug carry
/// their `#[ignore = ...]` in this list, so every backend ignores them alike.
#[doc(hidden)]
#[macro_export]
macro_rules! __storage_suite_tests {
    ($test:tt $factory:expr) => {
        $crate::__storage_case_tests! {
            $test $factory;
            // basics
            empty_store_reads_empty,
            empty_batch_changes_nothing,
            put_conversation_round_trips_every_field,
            put_conversation_replaces_every_field,
            conversation_upsert_reorders_the_list,
            conversation_ids_are_exact,
            total_unread_sums_conversations,
            // paging
            conversations_page_orders_by_activity_then_id,
            conversations_page_single_item,
            conversations_page_exact_boundaries,
            conversations_page_limit_zero,
            conversations_page_cursor_positions,
            conversations_page_walks_the_whole_list,
            messages_page_without_messages,
            messages_page_single_message,
            messages_page_before,
            messages_page_after,
            messages_page_exact_boundaries,
            messages_page_limit_zero,
            messages_page_with_holes,
            messages_page_excludes_unsent_and_other_conversations,
            paging_extreme_anchors,
            // merge rules of PutMessages
            put_message_round_trips_every_field,
            message_by_client_id_finds_every_kind_of_row,
            pending_becomes_sent_on_ack,
            seqless_put_never_downgrades_a_sent_row,
            seqless_row_is_replaced_by_seqless_put,
            unsent_messages_oldest_first,
            sent_row_keeps_its_fields_when_put_again,
            same_message_twice_is_one_row,
            seq_held_by_another_client_id_is_rejected,
            client_id_at_another_seq_is_rejected,
            conflict_within_one_batch_is_rejected,
            client_ids_and_seqs_are_per_conversation,
            same_client_id_of_two_senders_is_two_rows,
            // edits, revokes, tombstones, pending deletes
            edit_replaces_content,
            edits_apply_in_seq_order,
            revoke_wins_over_edits,
            changes_by_another_sender_are_refused_and_reported,
            changes_to_missing_targets_are_noops,
            reput_keeps_edits_and_newer_copy_applies,
            reput_keeps_revoke_and_revoked_copy_revokes,
            put_at_tombstoned_seq_is_not_stored,
            tombstones_delete_stored_rows,
            tombstones_accumulate_as_a_union,
            delete_pending_touches_only_seqless_rows,
            // outbox, pending changes, snapshot
            outbox_orders_by_created_at_then_client_id,
            outbox_put_replaces_and_remove_removes,
            pending_changes_put_replace_remove,
            load_snapshot_returns_exactly_what_was_written,
            // batches
            failed_batch_changes_nothing,
            failed_batch_midway_changes_nothing,
            store_works_after_a_rejected_batch,
            reapplying_a_batch_changes_nothing,
            ops_apply_in_order_within_a_batch,
            sync_token_commits_with_its_batch,
            // payloads and scale
            unicode_round_trips_everywhere,
            conversation_ties_order_unicode_ids_bytewise,
            one_mib_payloads_round_trip,
            large_numbers_round_trip,
            hundred_thousand_conversations_snapshot,
            // durability and integrity
            reopen_empty_store,
            reopen_keeps_everything,
            reopen_after_rejected_batch,
            check_integrity_passes_on_a_well_formed_store,
            check_integrity_reports_message_outside_held_ranges,
            check_integrity_reports_outbox_entry_without_unsent_row,
        }
    };
}

/// One test per listed case; see [`crate::backend_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __storage_case_tests {
    ($test:tt $factory:expr; $($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $(
            $crate::__backend_test! {
                $test
                $(#[$attr])*
                async fn $name() {
                    if let Err(err) = $crate::storage_suite::$name($factory).await {
                        panic!("storage case {} failed: {err}", stringify!($name));
                    }
                }
            }
        )*
    };
}
