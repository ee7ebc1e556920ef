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
//! The commands live in `tidemark_server::net::cli`, shared with `tidemark server`.

use std::process::ExitCode;

use clap::Parser;
use tidemark_server::net::cli::{self, ServerCommand};

#[derive(Parser, Debug)]
#[command(
    name = "tidemark-server",
    version,
    about = "Tidemark's reference inbox server"
)]
struct Cli {
    #[command(subcommand)]
    command: ServerCommand,
}

fn main() -> ExitCode {
    cli::init_logging();
    let command = Cli::parse().command;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|runtime| runtime.block_on(cli::run(command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
