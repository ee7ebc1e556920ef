//! `tidemark`: the runnable face of Tidemark.
//!
//! - `tidemark demo`: starts the reference server, fills it with conversations and messages
//!   over real WebSockets, syncs a client into SQLite in a child process that is killed
//!   mid-sync and restarted, and verifies the client's store against the server's.
//!   `tidemark demo --web` serves the web chat page and runs the reference server it uses.
//! - `tidemark server`: the reference server and its admin commands.
//! - `tidemark chat`: an interactive, line-based client.
//! - `tidemark inspect`: a read-only look into a client store.
//! - `tidemark recover`: sets a damaged client store aside and starts a fresh one.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod chat;
mod demo;
mod error;
mod inspect;
mod recover;
mod server_cmd;

/// Tidemark: an offline-first message sync engine for inbox-model IM servers.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the self-checking demo: a server, a load of messages, a client synced through a crash
    /// (with --web: serve the web chat page and the server it talks to).
    Demo(demo::DemoArgs),
    /// The demo's client process (started by `demo`; prints progress as JSON lines).
    #[command(hide = true)]
    DemoClient(demo::child::ChildArgs),
    /// Run the reference server, or administer its store.
    Server {
        /// What to do.
        #[command(subcommand)]
        command: tidemark_server::net::cli::ServerCommand,
    },
    /// Chat interactively (or from a pipe) as one user on one device.
    Chat(chat::ChatArgs),
    /// Show what a client store holds, read-only.
    Inspect(inspect::InspectArgs),
    /// Set a damaged client store aside (renamed, never deleted) and start a fresh one that
    /// keeps the unsent messages; the next chat syncs the rest from the server.
    Recover(recover::RecoverArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::DemoClient(args) => demo::child::run(args).await,
            Command::Server { command } => server_cmd::run(command).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Recover(args) => recover::run(args).await,
        }
    });
    // Spawned tasks (socket readers, the server) must not hold the exit up.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
