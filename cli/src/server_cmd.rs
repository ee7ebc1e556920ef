//! `tidemark server`: the reference server and its admin commands.
//!
//! The commands are `tidemark_server::net::cli`, the same the `tidemark-server`
//! binary runs: this module only adapts its errors.

use tidemark_server::net::cli::{self, ServerCommand};

use crate::error::{CliError, CliResult};

/// Runs `tidemark server <command>`.
pub async fn run(command: ServerCommand) -> CliResult<()> {
    if matches!(command, ServerCommand::Serve(_)) {
        cli::init_logging();
    }
    cli::run(command)
        .await
        .map_err(|e| CliError::new(format!("server: {e}")))
}
