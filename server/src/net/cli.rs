//! The server's command line, shared by the `tidemark-server` binary and `tidemark server`:
//! one set of arguments and one [`run`], so the two programs cannot drift apart.
//!
//! ```text
//! serve --db inbox.db --listen 127.0.0.1:7700
//! create-user --db inbox.db alice                  # prints alice's token
//! token --db inbox.db alice --ttl-secs 3600
//! create-conversation --db inbox.db ab --kind direct alice bob
//! add-member --db inbox.db ab carol
//! ```
//!
//! The admin commands open the database directly; SQLite's locking (and the store's busy
//! timeout) lets them run while the server serves the same file.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tidemark_engine::{ConversationId, ConversationKind, UserId};

use super::ops::{self, OpsError};
use super::ServerOptions;
use crate::SqliteServerStore;

/// The database every command uses unless `--db` says otherwise.
const DEFAULT_DB: &str = "tidemark-server.db";

/// One server command.
#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Serve the database over WebSocket until ctrl-c, then shut down cleanly.
    Serve(ServeArgs),
    /// Create a user and print a new token for it.
    CreateUser {
        /// The server database (created if missing).
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// The user id.
        user: String,
        /// Token lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Print a new token for an existing user.
    Token {
        /// The server database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// The user id.
        user: String,
        /// Token lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Create a conversation of existing users.
    CreateConversation {
        /// The server database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// The conversation id.
        id: String,
        /// Direct (two users) or group.
        #[arg(long, value_enum, default_value = "direct")]
        kind: Kind,
        /// The members.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add an existing user to a conversation.
    AddMember {
        /// The server database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// The conversation id.
        conversation: String,
        /// The user id.
        user: String,
    },
    /// Expire every sync token handed out so far (devices presenting one get the full
    /// listing once), as a server does when it compacts its change history.
    ExpireSyncTokens {
        /// The server database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
    },
}

/// How `serve` listens and what it allows.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The server database (created if missing).
    #[arg(long, default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Requests per second per connection (0: unlimited).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Request burst per connection.
    #[arg(long, default_value_t = 2_000)]
    pub burst: u32,
    /// Largest accepted frame, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_frame_bytes: usize,
    /// Seconds between WebSocket pings.
    #[arg(long, default_value_t = 20)]
    pub heartbeat_secs: u64,
    /// Seconds of silence before a connection is closed.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// Frames queued per connection before it is closed as a slow consumer.
    #[arg(long, default_value_t = 4_096)]
    pub outgoing_queue: usize,
}

/// A conversation kind on the command line.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Kind {
    /// Two users.
    Direct,
    /// Any number of members.
    Group,
}

/// Sends the host's `tracing` logs (connections, refusals, shutdown) to stderr, filtered by
/// `RUST_LOG` (default `info`). A second call does nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn open(db: &Path) -> Result<SqliteServerStore, OpsError> {
    Ok(SqliteServerStore::open(db)?)
}

/// Runs one command; must be called inside a tokio runtime (`serve` runs the server on it).
/// Tokens and the listening address go to stdout, for scripts.
pub async fn run(command: ServerCommand) -> Result<(), OpsError> {
    match command {
        ServerCommand::Serve(args) => serve(args).await,
        ServerCommand::CreateUser { db, user, ttl_secs } => {
            let token = ops::create_user(&mut open(&db)?, &UserId::from(user.as_str()), ttl_secs)?;
            println!("{token}");
            Ok(())
        }
        ServerCommand::Token { db, user, ttl_secs } => {
            let token = ops::token(&mut open(&db)?, &UserId::from(user.as_str()), ttl_secs)?;
            println!("{token}");
            Ok(())
        }
        ServerCommand::CreateConversation {
            db,
            id,
            kind,
            members,
        } => {
            let kind = match kind {
                Kind::Direct => ConversationKind::Direct,
                Kind::Group => ConversationKind::Group,
            };
            let members: Vec<UserId> = members.iter().map(|m| UserId::from(m.as_str())).collect();
            ops::create_conversation(
                &mut open(&db)?,
                &ConversationId::from(id.as_str()),
                kind,
                &members,
            )?;
            println!("created {id}");
            Ok(())
        }
        ServerCommand::AddMember {
            db,
            conversation,
            user,
        } => {
            ops::add_member(
                &mut open(&db)?,
                &ConversationId::from(conversation.as_str()),
                &UserId::from(user.as_str()),
            )?;
            println!("added {user} to {conversation}");
            Ok(())
        }
        ServerCommand::ExpireSyncTokens { db } => {
            let floor = ops::expire_sync_tokens(&mut open(&db)?)?;
            println!("sync tokens below {floor} expired");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), OpsError> {
    let store = open(&args.db)?;
    let mut options = ServerOptions {
        listen: args.listen,
        rate_per_sec: args.rate,
        rate_burst: args.burst,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        idle_timeout: Duration::from_secs(args.idle_secs.max(1)),
        outgoing_queue: args.outgoing_queue,
        ..ServerOptions::default()
    };
    options.limits.max_frame_bytes = args.max_frame_bytes;
    let stop = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            // Without a signal handler the server could never stop cleanly.
            eprintln!("error: cannot listen for ctrl-c: {err}");
        }
    };
    // Scripts (and the tests) read the address from this line.
    let on_listening = |addr: SocketAddr| println!("listening on ws://{addr}");
    ops::serve(store, options, on_listening, stop).await?;
    // Whoever started the server may have stopped reading its output (a script that took
    // the address and closed the pipe): a clean stop must not end in a panic on a write.
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(())
}
