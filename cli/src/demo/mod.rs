//! `tidemark demo`: Tidemark end to end, checked.
//!
//! 1. Starts the reference server (SQLite store in a temporary directory) on a free port.
//! 2. Creates alice, a few senders and their conversations (mostly direct, some groups).
//! 3. Sends the messages over real WebSockets while alice's phone is offline: one connection
//!    per sender, all at once, each pipelining a window of sends (alice's laptop sends a few
//!    too, so her read position moves and her own messages must not count as unread).
//! 4. Brings alice's phone online as a child process (`tidemark demo-client`) that syncs
//!    everything into its own SQLite store, kills it with SIGKILL partway, restarts it on the
//!    same store and lets it finish.
//! 5. Stops the server and compares alice's store with the server's, message by message.
//!
//! It exits 0 only when the comparison finds no difference (`verification: OK`).
//!
//! `tidemark demo --web` is another mode: it serves the web chat page and runs the reference
//! server the page talks to (see [`web`]).

pub mod child;
mod load;
mod plan;
mod verify;
mod web;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark_engine::{ConversationKind, Storage};
use tidemark_server::net::{ops, Server, ServerHandle, ServerOptions};
use tidemark_server::SqliteServerStore;
use tidemark_storage_sqlite::SqliteStorage;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{CliError, CliResult};
use child::ChildLine;
use plan::{make_plan, Plan};

/// Arguments of `tidemark demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Serve the web chat page (web/demo, importing the package web/package) and run the
    /// reference server it talks to, until Ctrl-C or SIGTERM. Build the package first with
    /// scripts/build-web.sh. The demo has no passwords: whoever reaches the page can log in as
    /// any demo user.
    #[arg(long)]
    pub web: bool,
    /// Conversations to create (one in ten is a group). With --web: alice's conversations
    /// (default 20).
    #[arg(long, default_value_t = 1_000, default_value_if("web", "true", "20"))]
    pub conversations: usize,
    /// Messages to send while alice is offline. With --web: messages in alice's
    /// conversations (default 200).
    #[arg(
        long,
        default_value_t = 100_000,
        default_value_if("web", "true", "200")
    )]
    pub messages: usize,
    /// Users besides alice who send.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Sends each connection keeps in flight.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Kill the syncing client when this percentage of conversations is synced (0: never).
    #[arg(long, default_value_t = 40)]
    pub kill_at: u64,
    /// Seed for the generated conversations and messages.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the server's and alice's stores in this directory (default: a temporary one,
    /// removed at the end). With --web: the server's store; one already there is reused as
    /// it is (not seeded again), so a restart on the same directory finds everything.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --web: the HTTP port of the page, on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080, requires = "web")]
    pub http_port: u16,
    /// With --web: the WebSocket port of the reference server, on 127.0.0.1 (0: any free
    /// port; a fixed one lets the server restart on the same address).
    #[arg(long, default_value_t = 0, requires = "web")]
    pub ws_port: u16,
    /// With --web: the directory holding demo/ (the page) and package/ (the JavaScript
    /// package); default: this repository's web/ directory.
    #[arg(long, requires = "web")]
    pub web_root: Option<PathBuf>,
}

/// Fresh randomness for an engine's client ids: the clock and the process id (the engine
/// needs ids unique per device, not secrets).
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

type Store = SqliteServerStore;

/// Runs `tidemark demo`.
pub async fn run(args: DemoArgs) -> CliResult<()> {
    if args.web {
        return web::run(args).await;
    }
    if args.conversations == 0 {
        return Err(CliError::new("--conversations must be at least 1"));
    }
    // The temporary directory lives until the end of `run`: both stores are inside.
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
            for name in ["server.db", "alice-phone.db"] {
                if dir.join(name).exists() {
                    return Err(CliError::new(format!(
                        "{} already holds {name}: use an empty directory",
                        dir.display()
                    )));
                }
            }
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("tidemark-demo-")
                .tempdir()
                .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let server_db = dir.join("server.db");
    let alice_db = dir.join("alice-phone.db");
    let total_start = Instant::now();

    println!(
        "tidemark demo: {} conversations, {} messages, {} senders (seed {})",
        args.conversations, args.messages, args.senders, args.seed
    );
    let plan = make_plan(args.seed, args.senders, args.conversations, args.messages);

    // 1. The server.
    let store = SqliteServerStore::open(&server_db).map_err(|e| {
        CliError::new(format!(
            "cannot open the server store {}: {e}",
            server_db.display()
        ))
    })?;
    let options = ServerOptions {
        // The load generator sends as fast as the server takes it.
        rate_per_sec: 0,
        ..ServerOptions::default()
    };
    let server = Server::start(store, options)
        .await
        .map_err(|e| CliError::new(format!("cannot start the server: {e}")))?;
    let url = server.url();
    println!(
        "[1/5] server listening on {url} (SQLite store {})",
        server_db.display()
    );

    // 2. Users and conversations.
    let step = Instant::now();
    let (sender_tokens, alice_token) = create_accounts(&server, &plan).await?;
    let groups = plan
        .conversations
        .iter()
        .filter(|c| c.kind == ConversationKind::Group)
        .count();
    println!(
        "[2/5] created {} users and {} conversations ({} direct, {groups} groups) in {:.2} s",
        plan.senders.len() + 1,
        plan.conversations.len(),
        plan.conversations.len() - groups,
        step.elapsed().as_secs_f64()
    );

    // 3. Messages, while alice's phone is offline. Alice's laptop sends in the middle, so
    // her read position ends up partway through many conversations.
    let step = Instant::now();
    let split = plan.messages.len() * 3 / 5;
    let (first, rest) = plan.messages.split_at(split);
    let others = |ms: &[plan::PlannedMessage], alice: bool| -> Vec<plan::PlannedMessage> {
        ms.iter()
            .filter(|m| m.sender.is_none() == alice)
            .cloned()
            .collect()
    };
    let acked = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(plan.messages.len() as u64, "sending", "messages");
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let ticker = {
        let (bar, acked) = (bar.clone(), acked.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(acked.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut sent = 0;
    let mut connections = 0;
    for batch in [
        others(first, false),
        others(&plan.messages, true),
        others(rest, false),
    ] {
        let jobs = load::jobs_for(&plan, &batch, &sender_tokens, &alice_token);
        connections += jobs.len();
        let result = load::run_jobs(&url, &plan, jobs, args.window.max(1), acked.clone()).await;
        if result.is_err() {
            ticker.abort();
            bar.finish_and_clear();
        }
        sent += result?;
    }
    ticker.abort();
    bar.finish_and_clear();
    let send_secs = step.elapsed().as_secs_f64();
    println!(
        "[3/5] sent {sent} messages over {connections} WebSocket connections in {send_secs:.2} s: \
         {:.0} messages/s (window {} per connection)",
        sent as f64 / send_secs.max(1e-9),
        args.window
    );

    // 4. Alice's phone syncs, is killed, restarts and finishes.
    println!(
        "[4/5] alice's phone syncs everything (SyncPolicy::Full) into {}",
        alice_db.display()
    );
    let child = ChildCommand {
        url: url.clone(),
        token: alice_token.clone(),
        db: alice_db.clone(),
        pull_messages: pull_size(args.messages),
    };
    let first_run = child.run(args.kill_at).await?;
    let (committed_convs, committed) = held_in(&alice_db).await?;
    match first_run.killed_at {
        Some((done, total)) => println!(
            "      run 1: killed with SIGKILL at {done}/{total} conversations ({:.2} s in); \
             its store had committed {committed} messages, {committed_convs} conversations complete{}",
            first_run.elapsed.as_secs_f64(),
            if committed >= sent {
                " (the kill came after the last commit)"
            } else {
                ""
            }
        ),
        None => println!(
            "      run 1: finished {} ({:.2} s); run 2 restarts on its complete store",
            if args.kill_at == 0 {
                "without a kill (--kill-at 0)"
            } else {
                "before the kill point"
            },
            first_run.elapsed.as_secs_f64()
        ),
    }
    let second_run = child.run(0).await?;
    let finished = second_run
        .finished
        .clone()
        .ok_or_else(|| CliError::new("the restarted client exited without finishing the sync"))?;
    let resumed_from = second_run.started_held.unwrap_or(0);
    println!(
        "      run 2: resumed from {resumed_from} held messages{}, pulled the remaining {} in {:.2} s",
        if resumed_from == committed {
            " (exactly what run 1 committed)"
        } else {
            ""
        },
        finished.held.saturating_sub(resumed_from),
        second_run.elapsed.as_secs_f64()
    );
    let sync_secs = (first_run.elapsed + second_run.elapsed).as_secs_f64();

    // 5. Verify against the server's store, read after a clean shutdown.
    let store = server
        .shutdown()
        .await
        .map_err(|e| CliError::new(format!("the server did not shut down cleanly: {e}")))?;
    let alice_store = SqliteStorage::open_read_only(&alice_db).map_err(|e| {
        CliError::new(format!(
            "cannot open alice's store {}: {e}",
            alice_db.display()
        ))
    })?;
    let v = verify::verify(&store, &plan.alice, &alice_store).await?;
    println!(
        "[5/5] compared {} conversations and {} messages, seq by seq",
        v.conversations, v.server_messages
    );

    println!();
    println!("summary");
    println!(
        "  synced:        {} messages in {} conversations",
        v.client_messages, v.conversations
    );
    println!(
        "  sync time:     {sync_secs:.2} s over two runs: {:.0} messages/s",
        v.client_messages as f64 / sync_secs.max(1e-9)
    );
    println!(
        "  send rate:     {:.0} messages/s",
        sent as f64 / send_secs.max(1e-9)
    );
    println!(
        "  crash:         {}",
        match first_run.killed_at {
            Some((done, total)) => format!(
                "SIGKILL at {done}/{total} conversations; {committed} messages were committed, \
                 the restart resumed from {resumed_from}"
            ),
            None => "none (run 1 finished first)".to_owned(),
        }
    );
    println!(
        "  unread:        engine {} / store {} / expected from the server {}",
        finished.engine_unread, v.stored_unread, v.expected_unread
    );
    println!(
        "  total time:    {:.2} s",
        total_start.elapsed().as_secs_f64()
    );
    let mut problems = v.differences.clone();
    if finished.engine_unread != v.expected_unread {
        problems.push(format!(
            "the engine's total unread {} differs from the server's {}",
            finished.engine_unread, v.expected_unread
        ));
    }
    if v.server_messages as usize != sent as usize {
        problems.push(format!(
            "the server holds {} messages, {sent} were acked",
            v.server_messages
        ));
    }
    if args.dir.is_some() {
        println!(
            "  stores kept:   tidemark inspect {} (server: {})",
            alice_db.display(),
            server_db.display()
        );
    }
    if problems.is_empty() {
        println!("verification: OK");
        Ok(())
    } else {
        println!(
            "verification: FAILED ({} differences; the first ones follow)",
            v.difference_count.max(problems.len() as u64)
        );
        for p in &problems {
            println!("  - {p}");
        }
        Err(CliError::new("alice's store does not match the server"))
    }
}

/// A bar, hidden until given a draw target (stderr draws only on a terminal: piped output
/// stays clean).
fn progress_bar(len: u64, prefix: &'static str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "      {{prefix}} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {unit} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// Most messages per pull: small enough that the sync takes many steps (so the kill lands
/// in the middle), large enough to be efficient.
fn pull_size(messages: usize) -> u32 {
    (messages / 40).clamp(50, 2_000) as u32
}

/// Creates the users (with tokens) and the conversations; returns the senders' tokens and
/// alice's.
async fn create_accounts(
    server: &ServerHandle<Store>,
    plan: &Plan,
) -> CliResult<(Vec<String>, String)> {
    let plan = plan.clone();
    server
        .admin(move |core, _now| -> Result<(Vec<String>, String), String> {
            let alice = ops::create_user(core.store_mut(), &plan.alice, None)
                .map_err(|e| format!("cannot create {}: {e}", plan.alice))?;
            let mut tokens = Vec::with_capacity(plan.senders.len());
            for sender in &plan.senders {
                tokens.push(
                    ops::create_user(core.store_mut(), sender, None)
                        .map_err(|e| format!("cannot create {sender}: {e}"))?,
                );
            }
            for c in &plan.conversations {
                core.create_conversation(&c.id, c.kind, &c.members)
                    .map_err(|e| format!("cannot create {}: {e}", c.id))?;
            }
            Ok((tokens, alice))
        })
        .await
        .map_err(|e| CliError::new(format!("the server failed: {e}")))?
        .map_err(CliError::new)
}

/// (complete conversations, held messages) in alice's store.
async fn held_in(db: &Path) -> CliResult<(u64, u64)> {
    let store = SqliteStorage::open_read_only(db)
        .map_err(|e| CliError::new(format!("cannot open alice's store {}: {e}", db.display())))?;
    let snapshot = store
        .load_snapshot()
        .await
        .map_err(|e| CliError::new(format!("cannot read alice's store: {e}")))?;
    let complete = snapshot
        .conversations
        .iter()
        .filter(|c| c.gaps().is_empty())
        .count() as u64;
    let held = snapshot.conversations.iter().map(|c| c.held.count()).sum();
    Ok((complete, held))
}

/// How to start the child.
struct ChildCommand {
    url: String,
    token: String,
    db: PathBuf,
    pull_messages: u32,
}

/// What one child run did.
struct ChildRun {
    /// What the store held when it started.
    started_held: Option<u64>,
    /// (done, total) when it was killed.
    killed_at: Option<(u64, u64)>,
    /// Its final report, if it finished.
    finished: Option<ChildFinished>,
    /// From spawn to exit.
    elapsed: Duration,
}

#[derive(Clone, Debug)]
struct ChildFinished {
    held: u64,
    engine_unread: u64,
}

impl ChildCommand {
    /// Runs the child to its end; kills it once `kill_at` percent of the conversations are
    /// synced (`0`: never).
    async fn run(&self, kill_at: u64) -> CliResult<ChildRun> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(exe)
            .arg("demo-client")
            .args(["--url", &self.url])
            .args(["--user", plan::ALICE, "--device", plan::ALICE_PHONE])
            .args(["--token", &self.token])
            .arg("--db")
            .arg(&self.db)
            .args(["--pull-messages", &self.pull_messages.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A failing demo must not leave a syncing child behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CliError::new(format!("cannot start the client process: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::new("the client process has no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let bar = progress_bar(
            0,
            if kill_at > 0 { "run 1" } else { "run 2" },
            "conversations",
        );
        let mut run = ChildRun {
            started_held: None,
            killed_at: None,
            finished: None,
            elapsed: Duration::ZERO,
        };
        let mut failure = None;
        let mut shown = false;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| CliError::new(format!("cannot read the client's output: {e}")))?
        {
            // Anything else on stdout is not ours to interpret.
            let Ok(parsed) = serde_json::from_str::<ChildLine>(&line) else {
                continue;
            };
            if run.killed_at.is_some() {
                // Lines the child wrote before it died are stale.
                continue;
            }
            match parsed {
                ChildLine::Started { held, .. } => run.started_held = Some(held),
                ChildLine::Connected => {}
                ChildLine::Progress { done, total } => {
                    bar.set_length(total);
                    bar.set_position(done);
                    if !shown {
                        bar.set_draw_target(ProgressDrawTarget::stderr());
                        shown = true;
                    }
                    if kill_at > 0
                        && done < total
                        && done.saturating_mul(100) >= kill_at.saturating_mul(total)
                    {
                        // SIGKILL: the child gets no chance to finish a write or close the
                        // store; whatever SQLite committed is all there is.
                        child
                            .start_kill()
                            .map_err(|e| CliError::new(format!("cannot kill the client: {e}")))?;
                        run.killed_at = Some((done, total));
                        bar.set_message("(killed)");
                    }
                }
                ChildLine::Finished {
                    held,
                    engine_unread,
                    ..
                } => {
                    bar.set_message("(finished)");
                    run.finished = Some(ChildFinished {
                        held,
                        engine_unread,
                    });
                }
                ChildLine::Failed { message } => failure = Some(message),
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| CliError::new(format!("cannot wait for the client: {e}")))?;
        run.elapsed = started.elapsed();
        bar.finish_and_clear();
        if let Some(message) = failure {
            return Err(CliError::new(format!("the client failed: {message}")));
        }
        if run.killed_at.is_none() && !status.success() {
            return Err(CliError::new(format!("the client exited with {status}")));
        }
        Ok(run)
    }
}
