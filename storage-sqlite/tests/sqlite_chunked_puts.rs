//! Long `PutMessages` runs, as a sync's pulls write them, applied to the reference
//! `MemoryStorage` and to `SqliteStorage` give the same outcome and the same reads. The
//! SQLite store inserts runs of messages at free seqs many rows per statement and falls back
//! to the merge rule, in order, when a row of such a statement meets a stored one; the random
//! batches of `sqlite_differential` are too short to reach that path, these are not: runs of
//! up to 150 messages with, here and there, a duplicate, a clash of seqs, the echo of a
//! pending send, a tombstoned seq, an edit or revoke, or a message stored before.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

mod support;

use support::{assert_same_reads, cid, variant, Rng};
use tidemark_engine::{
    ClientMsgId, ContentKind, Direction, MemoryStorage, Message, MessageStatus, Seq, SeqRanges,
    Storage, Timestamp, UserId, WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

const SEEDS: u64 = 40;
const ROUNDS: usize = 8;

/// A plain sent text message of `u0`..`u2`.
fn sent(rng: &mut Rng, conv: &str, seq: u64, id: String) -> Message {
    Message {
        conversation: cid(conv),
        seq: Some(Seq(seq)),
        client_msg_id: ClientMsgId(id),
        sender: UserId(format!("u{}", rng.below(3))),
        kind: ContentKind::Text,
        content: format!("text {seq}").into_bytes(),
        created_at: Timestamp(seq),
        server_time: Some(Timestamp(1_000 + seq)),
        status: MessageStatus::Sent,
        edit_seq: None,
        revoked: false,
    }
}

/// One round's batch for `conv`: pending sends, then a long run of new messages (the next
/// seqs after `next_seq`) with occasional irregular ones mixed in.
fn round(
    rng: &mut Rng,
    conv: &str,
    next_seq: &mut u64,
    ids: &mut Vec<String>,
    stored: &mut Vec<Message>,
    pending: &mut Vec<Message>,
) -> WriteBatch {
    let mut ops = Vec::new();
    if rng.chance(3) {
        let from = *next_seq + 1 + rng.below(60);
        ops.push(WriteOp::PutTombstones {
            conversation: cid(conv),
            seqs: SeqRanges::from_range(Seq(from), Seq(from + rng.below(4))),
        });
    }
    let mut run: Vec<Message> = Vec::new();
    for _ in 0..rng.below(4) {
        let id = format!("mine{}", ids.len());
        ids.push(id.clone());
        let mut m = sent(rng, conv, 0, id);
        m.seq = None;
        m.server_time = None;
        m.status = if rng.chance(4) {
            MessageStatus::Failed {
                reason: "offline".into(),
            }
        } else {
            MessageStatus::Pending
        };
        pending.push(m.clone());
        run.push(m);
    }
    for _ in 0..20 + rng.below(130) {
        *next_seq += 1;
        let seq = *next_seq;
        let irregular = rng.below(40);
        let m = match irregular {
            // The echo of a pending send takes its row.
            0 if !pending.is_empty() => {
                let mut echo = pending.swap_remove(rng.below(pending.len() as u64) as usize);
                echo.seq = Some(Seq(seq));
                echo.server_time = Some(Timestamp(1_000 + seq));
                echo.status = MessageStatus::Sent;
                echo
            }
            // A message put again, from this run or an earlier batch (often at its own
            // seq: no change; sometimes at another: a rejection).
            1 if !run.is_empty() || !stored.is_empty() => {
                let from_run = !run.is_empty() && (stored.is_empty() || rng.chance(2));
                let mut again = if from_run {
                    run[rng.below(run.len() as u64) as usize].clone()
                } else {
                    stored[rng.below(stored.len() as u64) as usize].clone()
                };
                if again.seq.is_none() || rng.chance(8) {
                    again.seq = Some(Seq(seq));
                }
                again
            }
            // Another message at a seq already used in this run: a clash.
            2 if rng.chance(3) && seq > 1 => {
                let id = format!("n{}", ids.len());
                ids.push(id.clone());
                let earlier = seq - 1 - rng.below(seq.min(5) - 1);
                sent(rng, conv, earlier, id)
            }
            // An edit, a revoke, a custom kind, a revoked or edited copy: not plain rows.
            3..=5 => {
                let id = format!("n{}", ids.len());
                ids.push(id.clone());
                let mut m = sent(rng, conv, seq, id);
                match irregular {
                    3 => {
                        m.kind = ContentKind::Edit {
                            target: Seq(seq / 2 + 1),
                        }
                    }
                    4 => m.kind = ContentKind::Custom("poll".into()),
                    _ => {
                        m.revoked = rng.chance(2);
                        m.edit_seq = (!m.revoked).then_some(Seq(seq + 1));
                    }
                }
                m
            }
            _ => {
                let id = format!("n{}", ids.len());
                ids.push(id.clone());
                sent(rng, conv, seq, id)
            }
        };
        run.push(m);
    }
    stored.extend(run.iter().filter(|m| m.seq.is_some()).cloned());
    ops.push(WriteOp::PutMessages(run));
    WriteBatch { ops }
}

async fn all_messages(store: &impl Storage, conv: &str) -> Vec<Message> {
    store
        .messages_page(&cid(conv), None, Direction::After, 100_000)
        .await
        .unwrap()
}

#[tokio::test]
async fn long_runs_match_the_memory_store() {
    let (mut committed, mut rejected) = (0, 0);
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let memory = MemoryStorage::new();
        let sqlite = SqliteStorage::open_in_memory().unwrap();
        let (mut ids, mut stored, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        let mut next_seq = 0;
        for i in 0..ROUNDS {
            let conv = if rng.chance(3) { "c2" } else { "c1" };
            let batch = round(
                &mut rng,
                conv,
                &mut next_seq,
                &mut ids,
                &mut stored,
                &mut pending,
            );
            let rm = memory.apply(batch.clone()).await;
            let rs = sqlite.apply(batch.clone()).await;
            match (&rm, &rs) {
                (Ok(a), Ok(b)) if a == b => committed += 1,
                (Err(a), Err(b)) if variant(a) == variant(b) => rejected += 1,
                _ => panic!("seed {seed} round {i}: memory {rm:?}, sqlite {rs:?}"),
            }
            let context = format!("seed {seed} after round {i}");
            for conv in ["c1", "c2"] {
                assert_eq!(
                    all_messages(&memory, conv).await,
                    all_messages(&sqlite, conv).await,
                    "{context}: every message of {conv}"
                );
            }
            let thorough = i == ROUNDS - 1;
            assert_same_reads(&memory, &sqlite, &["c1", "c2"], &ids, thorough, &context).await;
        }
    }
    assert!(
        committed > 100 && rejected > 20,
        "{committed} committed, {rejected} rejected"
    );
    println!("{committed} batches committed, {rejected} rejected, on both stores alike");
}
