//! `tidemark-server`: the reference inbox server, and its admin commands.
//!
//! ```text
//! tidemark-server serve --db inbox.db --listen 127.0.0.1:7700
//! tidemark-server create-user --db inbox.db alice          # prints alice's token
//! tidemark-server token --db inbox.db alice --ttl-secs 3600
//! tidemark-server create-conversation --db inbox.db ab --kind direct alice bob
//! tidemark-server add-member --db inbox.db ab carol
//! ```
//!
//! The admin commands open the database directly; run them while the server is stopped, or
//! rely on the store's own locking.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tidemark_engine::{ConversationId, ConversationKind, UserId};
use tidemark_transport::server::net::{ops, ServerOptions};
use tidemark_transport::server::{ServerStoreError, SqliteServerStore};

/// The store the binary runs on.
type Store = SqliteServerStore;

/// Opens the store at `path`, creating it when missing.
fn open_store(path: &Path) -> Result<Store, ServerStoreError> {
    SqliteServerStore::open(path)
}

#[derive(Parser, Debug)]
#[command(
    name = "tidemark-server",
    version,
    about = "Tidemark's reference inbox server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves the database over WebSocket until ctrl-c, then shuts down cleanly.
    Serve {
        /// The server database.
        #[arg(long)]
        db: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// Requests per second per connection (0: unlimited).
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Request burst per connection.
        #[arg(long, default_value_t = 2_000)]
        burst: u32,
        /// Largest accepted frame, in bytes.
        #[arg(long, default_value_t = 256 * 1024)]
        max_frame_bytes: usize,
        /// Seconds between WebSocket pings.
        #[arg(long, default_value_t = 20)]
        heartbeat_secs: u64,
        /// Seconds of silence before a connection is closed.
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
        /// Frames queued per connection before it is closed as a slow consumer.
        #[arg(long, default_value_t = 4_096)]
        outgoing_queue: usize,
    },
    /// Creates a user and prints a new token for it.
    CreateUser {
        /// The server database.
        #[arg(long)]
        db: PathBuf,
        /// The user id.
        user: String,
        /// Token lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Prints a new token for an existing user.
    Token {
        /// The server database.
        #[arg(long)]
        db: PathBuf,
        /// The user id.
        user: String,
        /// Token lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Creates a conversation of existing users.
    CreateConversation {
        /// The server database.
        #[arg(long)]
        db: PathBuf,
        /// The conversation id.
        id: String,
        /// Direct (two users) or group.
        #[arg(long, value_enum)]
        kind: Kind,
        /// The members.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Adds an existing user to a conversation.
    AddMember {
        /// The server database.
        #[arg(long)]
        db: PathBuf,
        /// The conversation id.
        conversation: String,
        /// The user id.
        user: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Kind {
    Direct,
    Group,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), ops::OpsError> {
    match cli.command {
        Command::Serve {
            db,
            listen,
            rate,
            burst,
            max_frame_bytes,
            heartbeat_secs,
            idle_secs,
            outgoing_queue,
        } => {
            let store = open_store(&db)?;
            let mut options = ServerOptions {
                listen,
                rate_per_sec: rate,
                rate_burst: burst,
                heartbeat: Duration::from_secs(heartbeat_secs.max(1)),
                idle_timeout: Duration::from_secs(idle_secs.max(1)),
                outgoing_queue,
                ..ServerOptions::default()
            };
            options.limits.max_frame_bytes = max_frame_bytes;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let stop = async {
                    if let Err(err) = tokio::signal::ctrl_c().await {
                        // Without a signal handler the server could never stop cleanly.
                        eprintln!("error: cannot listen for ctrl-c: {err}");
                    }
                };
                let on_listening = |addr: SocketAddr| println!("listening on ws://{addr}");
                ops::serve(store, options, on_listening, stop).await
            })?;
            Ok(())
        }
        Command::CreateUser { db, user, ttl_secs } => {
            let mut store = open_store(&db)?;
            let token = ops::create_user(&mut store, &UserId::from(user.as_str()), ttl_secs)?;
            println!("{token}");
            Ok(())
        }
        Command::Token { db, user, ttl_secs } => {
            let mut store = open_store(&db)?;
            let token = ops::token(&mut store, &UserId::from(user.as_str()), ttl_secs)?;
            println!("{token}");
            Ok(())
        }
        Command::CreateConversation {
            db,
            id,
            kind,
            members,
        } => {
            let mut store = open_store(&db)?;
            let kind = match kind {
                Kind::Direct => ConversationKind::Direct,
                Kind::Group => ConversationKind::Group,
            };
            let members: Vec<UserId> = members.iter().map(|m| UserId::from(m.as_str())).collect();
            ops::create_conversation(
                &mut store,
                &ConversationId::from(id.as_str()),
                kind,
                &members,
            )?;
            Ok(())
        }
        Command::AddMember {
            db,
            conversation,
            user,
        } => {
            let mut store = open_store(&db)?;
            ops::add_member(
                &mut store,
                &ConversationId::from(conversation.as_str()),
                &UserId::from(user.as_str()),
            )?;
            Ok(())
        }
    }
}
