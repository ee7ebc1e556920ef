//! The sync cursor: the server's per-user change token the engine holds, the listing run
//! that may replace it, and whether the store may hold it.
//!
//! Owns when a token is written or removed:
//! - a new token only once the run's listing is complete and every deletion list it asked
//!   for has been answered, so the batch holding the token also holds (or follows)
//!   everything the token covers. A run that loses its connection, or a deletion list that
//!   fails, leaves the old token in place: the next connect asks the same question again;
//! - the store holds no token while a read mark waits for the server's ack: read marks live
//!   in memory only, and after a restart a full listing is what finds the conversations
//!   whose local read seq is ahead of the server's (a delta would not list them). In memory
//!   the token stays, since the outbox resends the marks on the next connection.
//!
//! Never sees the store or the wire: the engine records the op it hands back.

use crate::protocol::SyncToken;

/// The token held, whether the store holds it, and the run in progress.
#[derive(Debug, Default)]
pub(super) struct SyncCursor {
    /// The newest token of a complete run: the next run's `since`.
    held: Option<SyncToken>,
    /// Whether the store holds `held` (or nothing when `held` is `None`), counting the
    /// batches emitted but not committed yet.
    stored: bool,
    run: Option<CursorRun>,
}

/// One listing run (one connection's `GetMaxSeqs` pages and the deletion lists they asked).
#[derive(Debug, Default)]
struct CursorRun {
    /// What the run sends as `since`: the held token, dropped once the server answered with
    /// a full listing (it did not know the token, so later pages need not offer it).
    since: Option<SyncToken>,
    /// Whether a page has been answered; the first page's token is the run's.
    answered: bool,
    /// The first page's token (the lowest: what changed between pages is listed next time).
    token: Option<SyncToken>,
    /// Whether the listing is a delta (the server knew `since`).
    delta: bool,
    /// The listing's last page has been handled.
    listing_done: bool,
    /// Deletion lists asked and not answered yet.
    deletions_outstanding: u32,
    /// A deletion list failed: this run's token would cover data not held. Not kept.
    spoiled: bool,
}

impl SyncCursor {
    /// Starts from the token the snapshot held.
    pub(super) fn new(stored: Option<SyncToken>) -> Self {
        Self {
            held: stored,
            stored: true,
            run: None,
        }
    }

    /// A connection's listing run starts; returns the `since` of its first page.
    pub(super) fn start(&mut self) -> Option<SyncToken> {
        let since = self.held.clone();
        self.run = Some(CursorRun {
            since: since.clone(),
            ..CursorRun::default()
        });
        since
    }

    /// The run is abandoned (connection lost): the held token stays.
    pub(super) fn abandon(&mut self) {
        self.run = None;
    }

    /// A listing page arrived with this token and `full` flag.
    pub(super) fn page(&mut self, token: Option<SyncToken>, full: bool) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if !run.answered {
            run.answered = true;
            // A token that does not fit is one no store is asked to keep: treated as none.
            run.token = token.filter(SyncToken::fits);
            run.delta = !full && run.since.is_some();
            if full {
                run.since = None;
            }
        }
    }

    /// The `since` the next page of this run carries.
    pub(super) fn since(&self) -> Option<SyncToken> {
        self.run.as_ref().and_then(|r| r.since.clone())
    }

    /// Whether this run's listing is a delta: conversations it did not list are unchanged
    /// on the server, so what they still miss must be found in the engine's own state.
    pub(super) fn is_delta(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.delta)
    }

    /// The listing's last page was handled.
    pub(super) fn listing_done(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.listing_done = true;
        }
        self.finish_run();
    }

    /// `n` deletion lists were asked.
    pub(super) fn deletions_asked(&mut self, n: u32) {
        if let Some(run) = self.run.as_mut() {
            run.deletions_outstanding += n;
        }
    }

    /// A deletion list was answered (`ok`) or refused.
    pub(super) fn deletions_answered(&mut self, ok: bool) {
        if let Some(run) = self.run.as_mut() {
            run.deletions_outstanding = run.deletions_outstanding.saturating_sub(1);
            run.spoiled |= !ok;
        }
        self.finish_run();
    }

    /// Ends the run once its listing is done and every deletion list answered: its token,
    /// unless spoiled, is held from now on (and written by [`SyncCursor::store_op`]).
    fn finish_run(&mut self) {
        let Some(run) = self.run.as_ref() else {
            return;
        };
        if !run.listing_done || run.deletions_outstanding > 0 {
            return;
        }
        let Some(run) = self.run.take() else {
            return;
        };
        if run.spoiled {
            return;
        }
        if let Some(token) = run.token {
            if self.held.as_ref() != Some(&token) {
                self.held = Some(token);
                self.stored = false;
            }
        }
    }

    /// What the batch being built must write so the store holds the token exactly when no
    /// read mark waits for its ack: `Some(op value)` or `None` for nothing to write. Called
    /// when every input's batch is emitted, so the write rides on the batch of the change
    /// that made it necessary.
    pub(super) fn store_op(&mut self, reads_pending: bool) -> Option<Option<SyncToken>> {
        if reads_pending {
            if self.stored && self.held.is_some() {
                self.stored = false;
                return Some(None);
            }
            return None;
        }
        if self.stored {
            return None;
        }
        self.stored = true;
        self.held.clone().map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn token(s: &str) -> SyncToken {
        SyncToken::new(s)
    }

    #[test]
    fn the_first_pages_token_is_written_once_the_run_is_complete() {
        let mut c = SyncCursor::new(Some(token("a.1")));
        assert_eq!(c.start(), Some(token("a.1")));
        c.page(Some(token("a.5")), false);
        assert!(c.is_delta());
        c.page(Some(token("a.7")), false);
        assert_eq!(c.since(), Some(token("a.1")));
        c.deletions_asked(1);
        c.listing_done();
        assert_eq!(c.store_op(false), None);
        c.deletions_answered(true);
        assert_eq!(c.store_op(false), Some(Some(token("a.5"))));
        assert_eq!(c.store_op(false), None);
        assert_eq!(c.start(), Some(token("a.5")));
    }

    #[test]
    fn a_failed_deletion_list_or_a_lost_connection_keeps_the_old_token() {
        let mut c = SyncCursor::new(Some(token("a.1")));
        c.start();
        c.page(Some(token("a.5")), true);
        assert!(!c.is_delta());
        assert_eq!(c.since(), None);
        c.deletions_asked(1);
        c.listing_done();
        c.deletions_answered(false);
        assert_eq!(c.store_op(false), None);
        assert_eq!(c.start(), Some(token("a.1")));
        c.page(Some(token("a.6")), false);
        c.abandon();
        c.listing_done();
        assert_eq!(c.store_op(false), None);
        assert_eq!(c.start(), Some(token("a.1")));
    }

    #[test]
    fn the_store_holds_no_token_while_a_read_waits_for_its_ack() {
        let mut c = SyncCursor::new(Some(token("a.1")));
        assert_eq!(c.store_op(true), Some(None));
        assert_eq!(c.store_op(true), None);
        // A run completing meanwhile is held in memory, written once the read is acked.
        c.start();
        c.page(Some(token("a.3")), false);
        c.listing_done();
        assert_eq!(c.store_op(true), None);
        assert_eq!(c.start(), Some(token("a.3")));
        c.abandon();
        assert_eq!(c.store_op(false), Some(Some(token("a.3"))));
        // Without a token there is nothing to remove.
        let mut c = SyncCursor::new(None);
        assert_eq!(c.store_op(true), None);
        assert_eq!(c.store_op(false), None);
    }

    #[test]
    fn an_oversized_token_is_not_kept() {
        let mut c = SyncCursor::new(None);
        c.start();
        c.page(Some(token(&"x".repeat(SyncToken::MAX_BYTES + 1))), true);
        c.listing_done();
        assert_eq!(c.store_op(false), None);
        assert_eq!(c.start(), None);
    }
}
