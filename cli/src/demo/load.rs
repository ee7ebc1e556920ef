//! Sending the plan's messages over real WebSockets, as the senders would.
//!
//! Each sender has one connection and pipelines its sends: up to `window` requests are on the
//! wire before the first ack is awaited, so throughput is bound by the server, not by round
//! trips. All senders run at once. Every send must be acked; an error stops the demo.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tidemark_engine::{ContentKind, DeviceId, Request, RequestId, Response, Timestamp, UserId};
use tidemark_transport::native::{WsConnection, WsOptions};
use tidemark_transport::wire::ServerFrame;

use super::plan::{Plan, PlannedMessage};
use crate::error::{CliError, CliResult};

/// One sender's part of a phase.
pub struct SenderJob {
    /// Who sends.
    pub user: UserId,
    /// From which device.
    pub device: DeviceId,
    /// Their token.
    pub token: String,
    /// What they send, in order.
    pub messages: Vec<PlannedMessage>,
}

/// Splits `messages` into one job per sender, in plan order. `tokens[i]` is sender `i`'s
/// token; `alice_token` is used for alice's messages.
pub fn jobs_for(
    plan: &Plan,
    messages: &[PlannedMessage],
    tokens: &[String],
    alice_token: &str,
) -> Vec<SenderJob> {
    let mut jobs: Vec<SenderJob> = plan
        .senders
        .iter()
        .zip(tokens)
        .map(|(user, token)| SenderJob {
            user: user.clone(),
            device: DeviceId::from(super::plan::SENDER_DEVICE),
            token: token.clone(),
            messages: Vec::new(),
        })
        .collect();
    let mut alice = SenderJob {
        user: plan.alice.clone(),
        device: DeviceId::from(super::plan::ALICE_LAPTOP),
        token: alice_token.to_owned(),
        messages: Vec::new(),
    };
    for m in messages {
        match m.sender {
            Some(s) => jobs[s].messages.push(m.clone()),
            None => alice.messages.push(m.clone()),
        }
    }
    jobs.push(alice);
    jobs.retain(|j| !j.messages.is_empty());
    jobs
}

/// Runs the jobs concurrently; returns how many sends were acked. `acked` counts acks as
/// they arrive, for a progress display.
pub async fn run_jobs(
    url: &str,
    plan: &Plan,
    jobs: Vec<SenderJob>,
    window: usize,
    acked: Arc<AtomicU64>,
) -> CliResult<u64> {
    let mut tasks = Vec::with_capacity(jobs.len());
    for job in jobs {
        let url = url.to_owned();
        let conversations: Vec<_> = plan.conversations.iter().map(|c| c.id.clone()).collect();
        let counter = acked.clone();
        tasks.push(tokio::spawn(async move {
            send_all(&url, &conversations, job, window, &counter).await
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task
            .await
            .map_err(|e| CliError::new(format!("a sender task failed: {e}")))??;
    }
    Ok(total)
}

/// One connection sending one job's messages, pipelined.
async fn send_all(
    url: &str,
    conversations: &[tidemark_engine::ConversationId],
    job: SenderJob,
    window: usize,
    progress: &AtomicU64,
) -> CliResult<u64> {
    let options = WsOptions::default();
    let mut conn = WsConnection::open(url, &job.user, &job.device, &job.token, &options)
        .await
        .map_err(|e| CliError::new(format!("{} cannot connect to {url}: {e}", job.user)))?;
    let total = job.messages.len();
    let mut next = 0usize;
    let mut in_flight = 0usize;
    let mut acked = 0u64;
    let now = || {
        Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    };
    while (acked as usize) < total {
        // Top the window up, then write everything queued in one go.
        let mut fed = false;
        while in_flight < window && next < total {
            let m = &job.messages[next];
            let request = Request::Send {
                conversation: conversations[m.conversation].clone(),
                client_msg_id: m.client_msg_id.clone(),
                kind: ContentKind::Text,
                content: m.content.clone(),
                created_at: now(),
            };
            conn.feed_request(RequestId(next as u64 + 1), request)
                .await
                .map_err(|e| CliError::new(format!("{} cannot send: {e}", job.user)))?;
            next += 1;
            in_flight += 1;
            fed = true;
        }
        if fed {
            conn.flush()
                .await
                .map_err(|e| CliError::new(format!("{} cannot send: {e}", job.user)))?;
        }
        // Wait for one frame, then take whatever else is already there.
        let first = tokio::time::timeout(Duration::from_secs(60), conn.next_frame())
            .await
            .map_err(|_| {
                CliError::new(format!(
                    "{}: no answer from the server for 60 s ({acked} of {total} acked)",
                    job.user
                ))
            })?;
        let mut frame = first;
        loop {
            match frame {
                None => {
                    return Err(CliError::new(format!(
                        "{}: the server closed the connection ({acked} of {total} acked)",
                        job.user
                    )))
                }
                Some(Err(e)) => {
                    return Err(CliError::new(format!(
                        "{}: connection failed: {e}",
                        job.user
                    )))
                }
                Some(Ok(ServerFrame::Response { response, id })) => match response {
                    Response::SendAck { .. } => {
                        acked += 1;
                        progress.fetch_add(1, Ordering::Relaxed);
                        in_flight = in_flight.saturating_sub(1);
                    }
                    Response::Error(e) => {
                        return Err(CliError::new(format!(
                            "{}: the server refused send {}: {} ({})",
                            job.user, id.0, e.message, e.code
                        )))
                    }
                    other => {
                        return Err(CliError::new(format!(
                            "{}: unexpected answer {other:?}",
                            job.user
                        )))
                    }
                },
                // Group messages of the other senders fan out to us too: not our concern.
                Some(Ok(ServerFrame::Push { .. })) => {}
                Some(Ok(ServerFrame::Error { code, message, .. })) => {
                    return Err(CliError::new(format!(
                        "{}: server error {code}: {message}",
                        job.user
                    )))
                }
                Some(Ok(ServerFrame::Welcome { .. })) => {
                    return Err(CliError::new(format!("{}: a second welcome", job.user)))
                }
            }
            match conn.next_frame().now_or_never() {
                Some(more) => frame = more,
                None => break,
            }
        }
    }
    conn.close().await;
    Ok(acked)
}
