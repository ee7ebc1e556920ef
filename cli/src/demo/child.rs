//! `tidemark demo-client`: the demo's syncing device, as a separate process so the demo can
//! kill it (SIGKILL, no chance to clean up) in the middle of a sync and start it again.
//!
//! It runs [`Client`] with [`SyncPolicy::Full`] over SQLite and the WebSocket transport and
//! reports on stdout, one JSON object per line ([`ChildLine`]), so the parent can draw
//! progress and decide when to kill. It exits once the sync has finished.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tidemark::{
    Client, ConnectionState, ConversationCursor, DeviceId, EngineConfig, Event, SyncPolicy,
    TokioRuntime, UserId,
};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;

use crate::error::{CliError, CliResult};

/// Arguments of `tidemark demo-client`.
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// The server.
    #[arg(long)]
    pub url: String,
    /// The user.
    #[arg(long)]
    pub user: String,
    /// The device.
    #[arg(long)]
    pub device: String,
    /// The user's token.
    #[arg(long)]
    pub token: String,
    /// The client store.
    #[arg(long)]
    pub db: PathBuf,
    /// Most messages one pull asks for (smaller: more, finer progress steps).
    #[arg(long, default_value_t = 2000)]
    pub pull_messages: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

/// One line of the child's stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChildLine {
    /// The store is open: what it held before this run.
    Started {
        /// Conversations in the store.
        conversations: u64,
        /// Seqs held over all conversations (messages, as the demo deletes none).
        held: u64,
    },
    /// Connected to the server.
    Connected,
    /// `SyncProgress`: conversations fully pulled out of those to pull.
    Progress {
        /// Done.
        done: u64,
        /// To do.
        total: u64,
    },
    /// `SyncFinished`, with what the store and engine say then.
    Finished {
        /// Conversations in the store.
        conversations: u64,
        /// Seqs held over all conversations.
        held: u64,
        /// The sum of the stored unread counts.
        stored_unread: u64,
        /// The engine's own total unread.
        engine_unread: u64,
        /// From start to finish, in milliseconds.
        millis: u64,
    },
    /// The run failed.
    Failed {
        /// Why.
        message: String,
    },
}

fn emit(line: &ChildLine) {
    // One object per line; println! flushes at the newline, so the parent sees it at once.
    match serde_json::to_string(line) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("cannot encode a progress line: {e}"),
    }
}

/// (conversations, held seqs) in the store.
async fn held(client: &Client) -> CliResult<Held> {
    let mut held = Held::default();
    let mut cursor = None;
    loop {
        let page = client
            .conversations(cursor, 1_000)
            .await
            .map_err(|e| CliError::new(format!("cannot read the store: {e}")))?;
        let Some(last) = page.last() else {
            return Ok(held);
        };
        cursor = Some(ConversationCursor::after(last));
        held.conversations += page.len() as u64;
        held.seqs += page.iter().map(|c| c.held.count()).sum::<u64>();
        held.unread += page.iter().map(|c| c.unread).sum::<u64>();
    }
}

/// What the store holds, read through the client.
#[derive(Default)]
struct Held {
    conversations: u64,
    /// Seqs held, over every conversation.
    seqs: u64,
    /// The stored unread counts' sum.
    unread: u64,
}

/// Runs `tidemark demo-client`.
pub async fn run(args: ChildArgs) -> CliResult<()> {
    let result = sync(&args).await;
    if let Err(e) = &result {
        emit(&ChildLine::Failed {
            message: e.to_string(),
        });
    }
    result
}

async fn sync(args: &ChildArgs) -> CliResult<()> {
    let started = Instant::now();
    let storage = SqliteStorage::open(&args.db)
        .map_err(|e| CliError::new(format!("cannot open the store {}: {e}", args.db.display())))?;
    let user = UserId::from(args.user.as_str());
    let device = DeviceId::from(args.device.as_str());
    let transport = WsTransport::new(args.url.clone(), user.clone(), device.clone(), &args.token);
    let mut config = EngineConfig::new(user, device);
    config.seed = super::fresh_seed();
    config.policy = SyncPolicy::Full;
    config.pull_max_messages = args.pull_messages.max(1);
    let (client, driver) = Client::start(config, storage, transport, TokioRuntime)
        .await
        .map_err(|e| CliError::new(format!("cannot load the store: {e}")))?;
    let before = held(&client).await?;
    emit(&ChildLine::Started {
        conversations: before.conversations,
        held: before.seqs,
    });
    let mut events = client.events();
    // Progress is printed from a listener, which runs on the driver loop the moment the
    // event is released (right after its commit): the stream is read by another future and
    // can fall behind while the driver is busy, and the parent's kill must land where the
    // line says the sync is.
    client.add_listener(|event: &Event| match event {
        Event::ConnectionChanged {
            state: ConnectionState::Connected,
        } => emit(&ChildLine::Connected),
        Event::SyncProgress { done, total } => emit(&ChildLine::Progress {
            done: *done,
            total: *total,
        }),
        _ => {}
    });
    let deadline = Duration::from_secs(args.timeout_secs);
    let watch = async {
        let outcome = tokio::time::timeout(deadline, async {
            while let Some(event) = events.next().await {
                match event {
                    Event::SyncFinished => return Ok(()),
                    Event::Kicked { reason } => {
                        return Err(CliError::new(format!("kicked by the server: {reason}")))
                    }
                    Event::StorageFailed { error } => {
                        return Err(CliError::new(format!("the store failed: {error}")))
                    }
                    _ => {}
                }
            }
            Err(CliError::new("the client stopped before the sync finished"))
        })
        .await
        .unwrap_or_else(|_| {
            Err(CliError::new(format!(
                "the sync did not finish within {} s",
                args.timeout_secs
            )))
        });
        client.shutdown().await;
        outcome
    };
    let ((), outcome) = tokio::join!(driver, watch);
    outcome?;
    let engine_unread = client.total_unread();
    let after = held(&client).await?;
    emit(&ChildLine::Finished {
        conversations: after.conversations,
        held: after.seqs,
        stored_unread: after.unread,
        engine_unread,
        millis: started.elapsed().as_millis() as u64,
    });
    Ok(())
}
