//! `tidemark demo --web`: the web chat page and the reference server it talks to.
//!
//! 1. Opens the server store in `--dir` (a temporary directory without it). A store that
//!    already holds the demo's people is used as it is; a new one is seeded ([`seed`]).
//! 2. Starts the reference server on 127.0.0.1:`--ws-port`.
//! 3. Serves the page and the package over HTTP on 127.0.0.1:`--http-port` ([`http`]), with
//!    the demo's login: `/demo/config` and `/demo/session?user=NAME`, which issues a token
//!    for any existing user. There are no passwords: this is a demo on the loopback address.
//! 4. Prints the URL to open and a line for scripts
//!    (`tidemark-web-demo ready {"http":...,"server":...}`), then runs until Ctrl-C or
//!    SIGTERM, and shuts the server down cleanly so a restart on the same `--dir` finds
//!    everything.

mod http;
mod seed;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tidemark_server::net::{Server, ServerOptions};
use tidemark_server::SqliteServerStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::DemoArgs;
use crate::error::{CliError, CliResult, Context};

/// The file of the server store inside `--dir`.
const SERVER_DB: &str = "server.db";

/// Runs `tidemark demo --web`.
pub async fn run(args: DemoArgs) -> CliResult<()> {
    if args.conversations == 0 {
        return Err(CliError::new("--conversations must be at least 1"));
    }
    let web_root = args.web_root.clone().unwrap_or_else(|| {
        // The repository this program was built from: the cli crate's parent.
        let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
        cli.parent().unwrap_or(cli).join("web")
    });
    let (page, package) = check_web_root(&web_root)?;

    // The temporary directory lives until the end of `run`: the store is inside.
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("tidemark-web-demo-")
                .tempdir()
                .context(|| "cannot create a temporary directory".to_owned())?;
            temp.path().to_path_buf()
        }
    };
    let server_db = dir.join(SERVER_DB);
    let store = open_or_seed(&server_db, &args).await?;

    let options = ServerOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], args.ws_port)),
        ..ServerOptions::default()
    };
    let server = Server::start(store, options)
        .await
        .context(|| format!("cannot start the server on 127.0.0.1:{}", args.ws_port))?;
    let server_url = server.url();
    let listener = match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.http_port))).await
    {
        Ok(listener) => listener,
        Err(e) => {
            let _ = server.shutdown().await;
            return Err(CliError::new(format!(
                "cannot serve the page on 127.0.0.1:{}: {e}",
                args.http_port
            )));
        }
    };
    let http_addr = listener
        .local_addr()
        .context(|| "cannot read the page's address".to_owned())?;
    // Registered before the ready line: a script may signal as soon as it reads it.
    let mut stop = StopSignals::register()?;

    let server = Arc::new(server);
    let site = Arc::new(http::Site {
        page,
        package,
        server_url: server_url.clone(),
        users: seed::PEOPLE.iter().map(|p| (*p).to_owned()).collect(),
        server: server.clone(),
    });
    let (stop_http, stop_http_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(listener, site, stop_http_rx));

    let http_url = format!("http://{http_addr}");
    println!(
        "reference server: {server_url} (store {})",
        server_db.display()
    );
    println!(
        "page: {} at /, the package {} at /tidemark/",
        web_root.join("demo").display(),
        web_root.join("package").display()
    );
    println!("open {http_url}/");
    println!(
        "log in as {}: the demo has no passwords, whoever reaches the page can be anyone",
        seed::PEOPLE.join(", ")
    );
    println!("Ctrl-C stops it");
    println!(
        "tidemark-web-demo ready {}",
        serde_json::json!({ "http": http_url, "server": server_url })
    );

    let why = stop.wait().await;
    println!("{why}: stopping");
    stop_http.send_replace(true);
    if let Err(e) = http_task.await {
        eprintln!("warning: the page's server failed: {e}");
    }
    // Every holder of the handle is gone with the HTTP server; the last one shuts down.
    let server = Arc::try_unwrap(server)
        .map_err(|_| CliError::new("the reference server is still in use; not shut down"))?;
    server
        .shutdown()
        .await
        .context(|| "the server did not shut down cleanly".to_owned())?;
    match &args.dir {
        Some(_) => println!("stopped; the store stays in {}", server_db.display()),
        None => println!("stopped; the temporary store is removed"),
    }
    Ok(())
}

/// The page's and the package's directories, canonical; refuses a web root without the
/// page or without the built package.
fn check_web_root(root: &Path) -> CliResult<(PathBuf, PathBuf)> {
    let page = root.join("demo");
    if !page.join("index.html").is_file() {
        return Err(CliError::new(format!(
            "no chat page at {}: give the directory holding demo/ and package/ with --web-root",
            page.join("index.html").display()
        )));
    }
    let package = root.join("package");
    let wasm = package.join("wasm");
    if !http::holds_wasm(&wasm) {
        return Err(CliError::new(format!(
            "the web package is not built: no .wasm in {}; run scripts/build-web.sh first",
            wasm.display()
        )));
    }
    let page = page
        .canonicalize()
        .context(|| format!("cannot resolve {}", page.display()))?;
    let package = package
        .canonicalize()
        .context(|| format!("cannot resolve {}", package.display()))?;
    Ok((page, package))
}

/// Opens the store at `path`: as it is when it holds the demo's people, else seeded.
async fn open_or_seed(path: &Path, args: &DemoArgs) -> CliResult<SqliteServerStore> {
    let path = path.to_path_buf();
    let (seed_value, conversations, messages) = (args.seed, args.conversations, args.messages);
    // SQLite blocks; the seeding of a big store takes seconds.
    tokio::task::spawn_blocking(move || -> CliResult<SqliteServerStore> {
        let mut store = SqliteServerStore::open(&path)
            .context(|| format!("cannot open the server store {}", path.display()))?;
        let found = seed::count(&store).context(|| format!("cannot read {}", path.display()))?;
        if let Some((conversations, messages)) = found {
            println!(
                "reusing the store {} as it is: alice has {conversations} conversations, \
                 {messages} messages",
                path.display()
            );
            return Ok(store);
        }
        let started = Instant::now();
        let seeded = seed::seed(&mut store, seed_value, conversations, messages)
            .context(|| format!("cannot seed {}", path.display()))?;
        println!(
            "seeded {} users, {} conversations for alice, {} messages in {:.2} s (seed {seed_value})",
            seeded.users,
            seeded.conversations,
            seeded.messages,
            started.elapsed().as_secs_f64()
        );
        Ok(store)
    })
    .await
    .context(|| "the seeding task failed".to_owned())?
}

/// Ctrl-C and (on Unix) SIGTERM, registered at once so neither is missed.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> CliResult<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let interrupt = signal(SignalKind::interrupt())
                .context(|| "cannot listen for Ctrl-C".to_owned())?;
            let terminate = signal(SignalKind::terminate())
                .context(|| "cannot listen for SIGTERM".to_owned())?;
            Ok(Self {
                interrupt,
                terminate,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the first signal; says which.
    async fn wait(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
