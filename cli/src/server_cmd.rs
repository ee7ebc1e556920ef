//! `tidemark server`: the reference server and its admin commands.
//!
//! Everything here is argument parsing: the work is done by the transport crate's
//! `server::net::ops` functions, the same ones the `tidemark-server` binary calls, over the
//! SQLite server store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidemark_engine::{ConversationId, ConversationKind, UserId};
use tidemark_transport::server::net::{ops, ServerOptions};
use tidemark_transport::server::SqliteServerStore;

use crate::error::{CliError, CliResult};

/// Arguments of `tidemark server`: serve (no subcommand) or administer.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// An admin command; without one the server runs until ctrl-c.
    #[command(subcommand)]
    pub admin: Option<Admin>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// How `tidemark server` serves.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The server database (created if missing).
    #[arg(long, default_value = "tidemark-server.db")]
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
    /// Seconds of silence before a connection is closed.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
}

/// Admin commands; they open the database directly.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Create a user and print a new token for it.
    CreateUser {
        /// The server database.
        #[arg(long, default_value = "tidemark-server.db")]
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
        #[arg(long, default_value = "tidemark-server.db")]
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
        #[arg(long, default_value = "tidemark-server.db")]
        db: PathBuf,
        /// The conversation id.
        id: String,
        /// `direct` (two users) or `group`.
        #[arg(long, value_parser = ["direct", "group"], default_value = "direct")]
        kind: String,
        /// The members.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add an existing user to a conversation.
    AddMember {
        /// The server database.
        #[arg(long, default_value = "tidemark-server.db")]
        db: PathBuf,
        /// The conversation id.
        conversation: String,
        /// The user id.
        user: String,
    },
}

fn open(db: &Path) -> CliResult<SqliteServerStore> {
    SqliteServerStore::open(db).map_err(|e| {
        CliError::new(format!(
            "cannot open the server store {}: {e}",
            db.display()
        ))
    })
}

/// Runs `tidemark server`.
pub async fn run(args: ServerArgs) -> CliResult<()> {
    let Some(admin) = args.admin else {
        return serve(args.serve).await;
    };
    match admin {
        Admin::CreateUser { db, user, ttl_secs } => {
            let mut store = open(&db)?;
            let token = ops::create_user(&mut store, &UserId::from(user.as_str()), ttl_secs)
                .map_err(|e| CliError::new(format!("cannot create user {user}: {e}")))?;
            println!("{token}");
        }
        Admin::Token { db, user, ttl_secs } => {
            let mut store = open(&db)?;
            let token = ops::token(&mut store, &UserId::from(user.as_str()), ttl_secs)
                .map_err(|e| CliError::new(format!("cannot issue a token for {user}: {e}")))?;
            println!("{token}");
        }
        Admin::CreateConversation {
            db,
            id,
            kind,
            members,
        } => {
            let mut store = open(&db)?;
            let kind = if kind == "group" {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            };
            let members: Vec<UserId> = members.iter().map(|m| UserId::from(m.as_str())).collect();
            ops::create_conversation(
                &mut store,
                &ConversationId::from(id.as_str()),
                kind,
                &members,
            )
            .map_err(|e| CliError::new(format!("cannot create conversation {id}: {e}")))?;
            println!("created {id}");
        }
        Admin::AddMember {
            db,
            conversation,
            user,
        } => {
            let mut store = open(&db)?;
            ops::add_member(
                &mut store,
                &ConversationId::from(conversation.as_str()),
                &UserId::from(user.as_str()),
            )
            .map_err(|e| CliError::new(format!("cannot add {user} to {conversation}: {e}")))?;
            println!("added {user} to {conversation}");
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> CliResult<()> {
    // The host logs connections, refusals and shutdown through `tracing`; RUST_LOG filters.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second subscriber (never the case in this program) would only lose logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let store = open(&args.db)?;
    let options = ServerOptions {
        listen: args.listen,
        rate_per_sec: args.rate,
        rate_burst: args.burst,
        idle_timeout: Duration::from_secs(args.idle_secs.max(1)),
        ..ServerOptions::default()
    };
    let stop = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            // Without a signal handler the server could never stop cleanly.
            eprintln!("error: cannot listen for ctrl-c: {e}");
        }
    };
    // Scripts (and the tests) read the address from this line.
    let on_listening = |addr: SocketAddr| println!("listening on ws://{addr}");
    ops::serve(store, options, on_listening, stop)
        .await
        .map_err(|e| CliError::new(format!("the server failed: {e}")))?;
    println!("stopped");
    Ok(())
}
