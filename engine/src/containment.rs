//! The containment rule: what a client does with what a server sends that it cannot store or
//! must not apply. Written once here; the engine applies it where server data enters
//! ([`crate::Engine::handle_response`], [`crate::Engine::handle_push`]) and every backend
//! follows it through the engine's write ops and [`crate::storage::may_change`].
//!
//! A server is not trusted: a buggy, old or hostile one may deliver values no store can hold
//! (times or seqs above [`MAX_STORABLE`]), changes that point nowhere, or edits of someone
//! else's message. None of them may stop the batch they arrive in, other messages, other
//! conversations or later syncs, and none may change someone else's message. Per case:
//!
//! | what arrives | what the client does | the app is told |
//! | --- | --- | --- |
//! | a time (`created_at`, `server_time`) above [`MAX_STORABLE`] | stores the message with the time clamped to [`MAX_STORABLE`] | [`Containment::Clamped`] |
//! | a seq above [`MAX_STORABLE`] in a listing, a range, a read mark or a deletion | clamps it (a max or min seq, a read seq) or drops the part above (seq ranges) | nothing |
//! | a message at seq 0 or above [`MAX_STORABLE`] | skips it: no store can hold that seq | [`Containment::Skipped`] |
//! | an edit or revoke whose target is not an earlier seq of its conversation | holds its seq as a tombstone (accounted for, never unread, never shown) | [`Containment::Tombstoned`] |
//! | an edit or revoke by anyone but the target's author | stores the change message, never applies it | [`Containment::ChangeRefused`] |
//! | a send ack at a seq above [`MAX_STORABLE`] | treats it as an unexpected answer: the send is retried, then fails | [`crate::Event::SendFailed`] once attempts run out |
//!
//! A correct server never sends any of these (see the server promises in
//! `docs/protocol.md`): containment is what keeps one bad server value from wedging a client.

use crate::model::{ServerMessage, Timestamp};
use crate::output::Containment;
use crate::protocol::{Push, Response};
use crate::seq_ranges::SeqRanges;
use crate::Seq;

/// The largest seq, time or count every store holds exactly: SQLite's integers are signed
/// 64-bit, so values above `i64::MAX` cannot be stored in order.
pub const MAX_STORABLE: u64 = i64::MAX as u64;

/// What the engine does with one delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Store it as it is now (values may have been clamped: `clamped` says which).
    Store {
        /// What was clamped, for [`Containment::Clamped`]; `None` when nothing was.
        clamped: Option<Containment>,
    },
    /// Hold its seq as a tombstone and store nothing.
    Tombstone(Containment),
    /// Do not hold its seq at all.
    Skip(Containment),
}

/// Checks one delivered message against what every store can hold and what may be applied,
/// clamping its times in place. The author check of edits and revokes needs the target,
/// which only the store holds: it happens where the change is applied.
pub fn contain_message(msg: &mut ServerMessage) -> MessageVerdict {
    if msg.seq.0 == 0 || msg.seq.0 > MAX_STORABLE {
        return MessageVerdict::Skip(Containment::Skipped {
            reason: format!("seq {} is outside 1..={MAX_STORABLE}", msg.seq.0),
        });
    }
    if let Some(target) = msg.kind.change_target() {
        // A change can only follow its target (the server assigned the target's seq first).
        if target.0 == 0 || target >= msg.seq {
            return MessageVerdict::Tombstone(Containment::Tombstoned {
                reason: format!(
                    "change target {} is not an earlier seq than its own {}",
                    target.0, msg.seq.0
                ),
            });
        }
    }
    let mut fields = Vec::new();
    if clamp_time(&mut msg.created_at) {
        fields.push("created_at");
    }
    if clamp_time(&mut msg.server_time) {
        fields.push("server_time");
    }
    MessageVerdict::Store {
        clamped: (!fields.is_empty()).then(|| Containment::Clamped {
            fields: fields.join(","),
        }),
    }
}

/// Clamps the seqs and times of a response that do not belong to a message (those go
/// through [`contain_message`] at ingest). Returns `false` when the response cannot be used
/// at all (a send ack at a seq no store holds): the caller treats it as an unexpected answer.
pub fn contain_response(response: &mut Response) -> bool {
    match response {
        Response::MaxSeqs { entries, .. } => {
            for e in entries {
                clamp_seq(&mut e.max_seq);
                clamp_seq(&mut e.min_seq);
                clamp_seq(&mut e.read_seq);
                clamp_time(&mut e.last_activity);
                clamp_ranges(&mut e.not_unread);
            }
        }
        Response::Pulled { ranges } => {
            for r in ranges {
                clamp_seq(&mut r.from);
                clamp_seq(&mut r.to);
                clamp_seq(&mut r.min_seq);
                clamp_seq(&mut r.max_seq);
                clamp_ranges(&mut r.missing);
            }
        }
        Response::SendAck {
            seq, server_time, ..
        } => {
            if seq.0 == 0 || seq.0 > MAX_STORABLE {
                return false;
            }
            clamp_time(server_time);
        }
        Response::Deletions { entries } => {
            for e in entries {
                clamp_ranges(&mut e.seqs);
            }
        }
        Response::ReadAck { seq, .. } => clamp_seq(seq),
        Response::Pong { .. } | Response::Error(_) => {}
    }
    true
}

/// Clamps the seqs of a push that do not belong to a message.
pub fn contain_push(push: &mut Push) {
    match push {
        Push::ReadSeq { seq, .. } => clamp_seq(seq),
        Push::Deleted { seqs, min_seq, .. } => {
            clamp_ranges(seqs);
            clamp_seq(min_seq);
        }
        Push::Message(_) | Push::Conversation { .. } | Push::Kicked { .. } => {}
    }
}

fn clamp_time(t: &mut Timestamp) -> bool {
    let over = t.0 > MAX_STORABLE;
    if over {
        t.0 = MAX_STORABLE;
    }
    over
}

fn clamp_seq(s: &mut Seq) {
    s.0 = s.0.min(MAX_STORABLE);
}

fn clamp_ranges(r: &mut SeqRanges) {
    r.remove_range(Seq(MAX_STORABLE + 1), Seq(u64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientMsgId, ContentKind, ConversationId, UserId};

    fn msg(seq: u64, kind: ContentKind, created_at: u64) -> ServerMessage {
        ServerMessage {
            conversation: ConversationId::from("c"),
            seq: Seq(seq),
            client_msg_id: ClientMsgId::from("m"),
            sender: UserId::from("u"),
            kind,
            content: b"x".to_vec(),
            created_at: Timestamp(created_at),
            server_time: Timestamp(5),
        }
    }

    #[test]
    fn times_beyond_storable_are_clamped_and_reported() {
        let mut m = msg(3, ContentKind::Text, u64::MAX);
        let verdict = contain_message(&mut m);
        assert_eq!(m.created_at, Timestamp(MAX_STORABLE));
        assert_eq!(m.server_time, Timestamp(5));
        assert_eq!(
            verdict,
            MessageVerdict::Store {
                clamped: Some(Containment::Clamped {
                    fields: "created_at".into()
                })
            }
        );
        let mut ok = msg(3, ContentKind::Text, MAX_STORABLE);
        assert_eq!(
            contain_message(&mut ok),
            MessageVerdict::Store { clamped: None }
        );
    }

    #[test]
    fn changes_that_do_not_point_back_are_tombstoned() {
        for target in [0, 7, 8, u64::MAX] {
            let mut m = msg(
                7,
                ContentKind::Edit {
                    target: Seq(target),
                },
                1,
            );
            assert!(
                matches!(contain_message(&mut m), MessageVerdict::Tombstone(_)),
                "target {target}"
            );
            let mut r = msg(
                7,
                ContentKind::Revoke {
                    target: Seq(target),
                },
                1,
            );
            assert!(matches!(
                contain_message(&mut r),
                MessageVerdict::Tombstone(_)
            ));
        }
        let mut fine = msg(7, ContentKind::Edit { target: Seq(6) }, 1);
        assert_eq!(
            contain_message(&mut fine),
            MessageVerdict::Store { clamped: None }
        );
    }

    #[test]
    fn unstorable_seqs_are_skipped() {
        for seq in [0, MAX_STORABLE + 1, u64::MAX] {
            let mut m = msg(seq, ContentKind::Text, 1);
            assert!(matches!(contain_message(&mut m), MessageVerdict::Skip(_)));
        }
    }

    #[test]
    fn responses_and_pushes_are_clamped() {
        let mut ack = Response::SendAck {
            client_msg_id: ClientMsgId::from("m"),
            seq: Seq(u64::MAX),
            server_time: Timestamp(1),
        };
        assert!(!contain_response(&mut ack));
        let mut ranges = SeqRanges::from_range(Seq(MAX_STORABLE - 1), Seq(u64::MAX));
        let mut push = Push::Deleted {
            conversation: ConversationId::from("c"),
            seqs: ranges.clone(),
            min_seq: Seq(u64::MAX),
        };
        contain_push(&mut push);
        clamp_ranges(&mut ranges);
        assert_eq!(
            push,
            Push::Deleted {
                conversation: ConversationId::from("c"),
                seqs: SeqRanges::from_range(Seq(MAX_STORABLE - 1), Seq(MAX_STORABLE)),
                min_seq: Seq(MAX_STORABLE),
            }
        );
        assert_eq!(ranges.max(), Some(Seq(MAX_STORABLE)));
    }
}
