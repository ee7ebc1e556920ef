//! `tidemark chat`: a line-based client for one user on one device.
//!
//! Commands are lines, so a pipe can drive it as well as a person:
//! `/list`, `/open ID`, `/history`, `/read`, `/help`, `/quit`; any other line is sent to the
//! open conversation. What the engine reports (new messages, unread changes, connection
//! state, sends acked or failed) is printed as it arrives. At the end of input it waits
//! (a bounded time) for unacked sends to reach the server before it exits, so
//! `echo hi | tidemark chat ...` really sends.
//!
//! A damaged store is refused: at open (the file's shape, then the quick check that
//! [`SqliteStorage::open`] starts, awaited before the client runs), and mid-session (a read
//! that finds damage, or the client stopping with [`Event::StoreUnusable`]). The chat then
//! ends with a non-zero exit and names the command that recovers the store
//! (`tidemark recover DB`). Nothing is written into a store once damage is known.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use tidemark::transport::Transport;
use tidemark::{
    Client, ClientError, ClientMsgId, ConnectionState, ConversationCursor, ConversationId,
    DeviceId, Direction, EngineConfig, Event, EventStream, HistoryLoaded, Message, Seq,
    StorageError, SyncPolicy, TokioRuntime, UserId,
};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::error::{CliError, CliResult, Context};

/// Messages shown per page of history.
const PAGE: usize = 20;
/// How long `/wait` waits for the first sync, and a history load for its answer, before
/// input is read again.
const HOLD: Duration = Duration::from_secs(60);
/// How long the end of input waits for unacked sends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `tidemark chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The server, e.g. ws://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Who to sign in as.
    #[arg(long)]
    pub user: String,
    /// This device's id (each device keeps its own store and read state).
    #[arg(long)]
    pub device: String,
    /// The user's access token (`tidemark server create-user` prints one).
    #[arg(long)]
    pub token: String,
    /// The local store; created if missing.
    #[arg(long)]
    pub db: PathBuf,
    /// Open this conversation at start (as `/open ID`).
    #[arg(long)]
    pub open: Option<String>,
}

/// One line of input, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatCommand {
    /// `/list`: the conversation list with unread counts.
    List,
    /// `/open ID`: show a conversation and make it the target of plain lines.
    Open(String),
    /// `/history`: the page of messages before the oldest one shown.
    History,
    /// `/read`: mark the open conversation read up to its newest message.
    Read,
    /// `/wait`: read no further input until the first sync has finished (for scripts).
    Wait,
    /// `/help`.
    Help,
    /// `/quit` (end of input does the same).
    Quit,
    /// Any other line: send it to the open conversation.
    Send(String),
    /// A blank line: nothing.
    Nothing,
    /// An unknown or malformed command, with what is wrong.
    Invalid(String),
}

/// Parses one input line. Lines starting with `/` are commands; `//text` sends `/text`.
pub fn parse_line(line: &str) -> ChatCommand {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return ChatCommand::Nothing;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return ChatCommand::Send(line.to_owned());
    };
    if rest.starts_with('/') {
        return ChatCommand::Send(rest.to_owned());
    }
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    match (name, args.as_slice()) {
        ("list" | "ls", []) => ChatCommand::List,
        ("open" | "o", [id]) => ChatCommand::Open((*id).to_owned()),
        ("open" | "o", _) => ChatCommand::Invalid("usage: /open CONVERSATION_ID".into()),
        ("history" | "h", []) => ChatCommand::History,
        ("read" | "r", []) => ChatCommand::Read,
        ("wait" | "w", []) => ChatCommand::Wait,
        ("help" | "?", _) => ChatCommand::Help,
        ("quit" | "q" | "exit", []) => ChatCommand::Quit,
        (name, _) => ChatCommand::Invalid(format!("unknown command /{name} (try /help)")),
    }
}

const HELP: &str = "\
commands:
  /list          conversations, most recent first, with unread counts
  /open ID       open a conversation (shows its newest messages)
  /history       older messages of the open conversation
  /read          mark the open conversation read
  /wait          wait until the first sync has finished (useful in scripts)
  /help          this text
  /quit          leave (waits briefly for unsent messages)
  any other line is sent to the open conversation (start it with // to send a leading /)";

/// Runs `tidemark chat`.
pub async fn run(args: ChatArgs) -> CliResult<()> {
    let storage = SqliteStorage::open(&args.db).map_err(|e| open_error(&args.db, &e))?;
    // Before the client starts: its first write would wait for this verdict anyway, but a
    // person should hear about damage before typing into a session that cannot work.
    storage
        .wait_for_open_check()
        .map_err(|e| open_error(&args.db, &e))?;
    let user = UserId::from(args.user.as_str());
    let device = DeviceId::from(args.device.as_str());
    let transport = WsTransport::new(args.url.clone(), user.clone(), device.clone(), args.token);
    let mut config = EngineConfig::new(user, device);
    config.seed = crate::demo::fresh_seed();
    config.policy = SyncPolicy::NewestFirst {
        per_conversation: PAGE as u32,
        background_fill: false,
    };
    let input = BufReader::new(tokio::io::stdin());
    println!(
        "tidemark chat: {} as {} ({})",
        args.url, args.user, args.device
    );
    run_session(config, storage, transport, input, args.open)
        .await
        .map_err(|e| match e {
            SessionError::Store {
                detail,
                damaged: true,
            } => damaged(&args.db, &detail),
            SessionError::Store { detail, .. } => CliError::new(format!(
                "the store {} cannot be used: {detail}",
                args.db.display()
            )),
            SessionError::Other(e) => e,
        })
}

/// Words a failure to open the store for a person.
fn open_error(db: &Path, e: &StorageError) -> CliError {
    match e {
        StorageError::Corrupt { detail, .. } => damaged(db, detail),
        _ => CliError::new(format!("cannot open the store {}: {e}", db.display())),
    }
}

/// The message for a damaged store: what happened, that nothing more was written, and the
/// way back.
fn damaged(db: &Path, detail: &str) -> CliError {
    CliError::new(format!(
        "the store {} is damaged ({detail}); nothing more is written to it. To {}",
        db.display(),
        crate::recover::advice(db)
    ))
}

/// How a chat session ended badly.
#[derive(Debug)]
pub enum SessionError {
    /// The store cannot be used (the client stopped for good, or a read found damage).
    Store {
        /// What was found.
        detail: String,
        /// Whether it is damage (`tidemark recover` is the way back).
        damaged: bool,
    },
    /// Anything else, already worded.
    Other(CliError),
}

impl From<CliError> for SessionError {
    fn from(e: CliError) -> Self {
        Self::Other(e)
    }
}

/// The chat loop over any transport and input, so tests can drive it in process.
pub async fn run_session<T, I>(
    config: EngineConfig,
    storage: SqliteStorage,
    transport: T,
    input: I,
    open_at_start: Option<String>,
) -> Result<(), SessionError>
where
    T: Transport + 'static,
    I: AsyncBufRead + Unpin,
{
    let (client, driver) = Client::start(config, storage, transport, TokioRuntime)
        .await
        .context(|| "cannot load the store".to_owned())?;
    let mut events = client.events();
    let driver = tokio::spawn(driver);
    let mut chat = Chat {
        client: client.clone(),
        open: None,
        oldest_shown: None,
        waiting_history: None,
        synced: false,
        waiting_sync: false,
        unacked: Default::default(),
        unusable: None,
    };
    if let Some(id) = open_at_start {
        chat.open(id).await;
    }
    let mut lines = input.lines();
    let wait_limit = tokio::time::sleep(Duration::from_secs(0));
    tokio::pin!(wait_limit);
    loop {
        if chat.damage().is_some() {
            break;
        }
        tokio::select! {
            // While a /wait or a history load holds, input is not read (events still are),
            // so a script's next line sees what the previous one asked for.
            line = lines.next_line(), if !chat.holding() => match line {
                Ok(Some(line)) => {
                    if !chat.command(parse_line(&line)).await {
                        break;
                    }
                    if chat.holding() {
                        wait_limit.as_mut().reset(tokio::time::Instant::now() + HOLD);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("! cannot read input: {e}");
                    break;
                }
            },
            event = events.next() => match event {
                Some(event) => chat.event(event).await,
                None => break,
            },
            loaded = async { (&mut chat.waiting_history.as_mut().expect("checked: a load is waiting").0).await },
                if chat.waiting_history.is_some() =>
            {
                let anchor = chat.waiting_history.take().and_then(|(_, anchor)| anchor);
                chat.history_loaded(loaded, anchor).await;
            }
            () = &mut wait_limit, if chat.holding() => {
                println!("! no answer within {} s; going on", HOLD.as_secs());
                chat.waiting_sync = false;
                chat.waiting_history = None;
            }
        }
    }
    let damage = chat.damage();
    if damage.is_none() {
        chat.drain_outbox(&mut events).await;
    }
    client.shutdown().await;
    driver
        .await
        .map_err(|e| CliError::new(format!("the client task failed: {e}")))?;
    if let Some((detail, damaged)) = damage {
        return Err(SessionError::Store { detail, damaged });
    }
    println!("bye");
    Ok(())
}

/// A history load in flight.
type HistoryLoad = BoxFuture<'static, Result<HistoryLoaded, ClientError>>;

/// The chat's state between lines.
struct Chat {
    client: Client,
    /// Where plain lines go.
    open: Option<ConversationId>,
    /// The oldest seq printed for the open conversation: `/history` pages below it.
    oldest_shown: Option<Seq>,
    /// A `/history` (or the load of `/open`) waiting for its result, with its anchor.
    waiting_history: Option<(HistoryLoad, Option<Seq>)>,
    /// A sync has finished since the start.
    synced: bool,
    /// A `/wait` holds input until `synced`.
    waiting_sync: bool,
    /// Sends of this session not yet acked or failed: the end of input waits for them.
    unacked: std::collections::HashSet<ClientMsgId>,
    /// The store cannot be used: the client stopped for good on it, or a read found
    /// damage. Why, and whether it is damage.
    unusable: Option<(String, bool)>,
}

impl Chat {
    /// Why the session must end because of the store, if it must: the client stopped on it,
    /// or a read of the chat's own found damage (the store then refuses writes, and the
    /// client would stop at its next one).
    fn damage(&self) -> Option<(String, bool)> {
        self.unusable.clone()
    }

    /// Words a failed read for a person; a read that found damage ends the session (the
    /// store refuses writes from then on, so the client would stop at its next one).
    fn read_failed(&mut self, what: &str, e: &ClientError) {
        println!("! cannot read {what}: {e}");
        if let ClientError::Storage(StorageError::Corrupt { detail, .. }) = e {
            self.unusable.get_or_insert_with(|| (detail.clone(), true));
        }
    }

    /// Whether input waits (for a sync or a history load).
    fn holding(&self) -> bool {
        self.waiting_sync || self.waiting_history.is_some()
    }

    /// Carries out one command; `false` ends the chat.
    async fn command(&mut self, command: ChatCommand) -> bool {
        match command {
            ChatCommand::Nothing => {}
            ChatCommand::Help => println!("{HELP}"),
            ChatCommand::Quit => return false,
            ChatCommand::Wait => self.waiting_sync = !self.synced,
            ChatCommand::Invalid(why) => println!("! {why}"),
            ChatCommand::List => self.list().await,
            ChatCommand::Open(id) => self.open(id).await,
            ChatCommand::History => self.history().await,
            ChatCommand::Read => self.read().await,
            ChatCommand::Send(text) => self.send(text).await,
        }
        true
    }

    async fn list(&mut self) {
        let mut cursor: Option<ConversationCursor> = None;
        let mut shown = 0usize;
        loop {
            let page = match self.client.conversations(cursor, 100).await {
                Ok(page) => page,
                Err(e) => {
                    self.read_failed("the conversation list", &e);
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = Some(ConversationCursor::after(last));
            for c in &page {
                let latest = c
                    .latest
                    .as_ref()
                    .map(|l| {
                        format!(
                            "{}: {}",
                            l.sender,
                            one_line(&String::from_utf8_lossy(&l.preview), 50)
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "  {:<24} {:<6} unread {:>4}  {latest}",
                    c.id.as_str(),
                    format!("{:?}", c.kind).to_lowercase(),
                    c.unread
                );
            }
            shown += page.len();
        }
        if shown == 0 {
            println!("  (no conversations yet)");
        }
    }

    async fn open(&mut self, id: String) {
        let id = ConversationId::from(id);
        match self.client.conversation(&id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                println!("! no conversation {id} (yet: /list shows what is synced)");
                return;
            }
            Err(e) => {
                self.read_failed(id.as_str(), &e);
                return;
            }
        }
        self.open = Some(id.clone());
        self.oldest_shown = None;
        println!("== {id}");
        self.print_page(None, false).await;
        // The newest page may not be held yet (or only partly): ask for it; what arrives is
        // printed when the load finishes.
        self.load_history(id, None);
    }

    /// Starts a history load; input waits (events still print) until it finishes.
    fn load_history(&mut self, conversation: ConversationId, anchor: Option<Seq>) {
        let client = self.client.clone();
        self.waiting_history = Some((
            Box::pin(async move {
                client
                    .load_history(&conversation, anchor, PAGE as u32)
                    .await
            }),
            anchor,
        ));
    }

    /// A history load finished: print what it brought.
    async fn history_loaded(
        &mut self,
        result: Result<HistoryLoaded, ClientError>,
        anchor: Option<Seq>,
    ) {
        match result {
            Ok(loaded) if Some(&loaded.conversation) == self.open.as_ref() => {
                if !loaded.complete {
                    println!("! history incomplete (connection lost); try again");
                }
                // The newest page was printed at /open; print it again only when the store
                // had nothing then.
                if anchor.is_some() {
                    self.print_page(anchor, false).await;
                } else if self.oldest_shown.is_none() {
                    // Said "nothing held" already; speak only if something came.
                    self.print_page(None, true).await;
                }
            }
            // Another conversation was opened meanwhile.
            Ok(_) => {}
            Err(e) => println!("! cannot load history: {e}"),
        }
    }

    async fn history(&mut self) {
        let Some(open) = self.open.clone() else {
            println!("! open a conversation first (/open ID)");
            return;
        };
        let anchor = self.oldest_shown;
        if anchor == Some(Seq(1)) {
            println!("  (beginning of the conversation)");
            return;
        }
        self.load_history(open, anchor);
    }

    /// Prints the stored page before `anchor` (the newest one with `None`); an empty page
    /// is announced unless `quiet_if_empty`.
    async fn print_page(&mut self, anchor: Option<Seq>, quiet_if_empty: bool) {
        let Some(open) = self.open.clone() else {
            return;
        };
        match self
            .client
            .messages(&open, anchor, Direction::Before, PAGE)
            .await
        {
            Ok(page) if page.is_empty() => {
                if !quiet_if_empty {
                    println!("  (no messages held here)");
                }
            }
            Ok(page) => {
                for m in &page {
                    print_message(m);
                }
                if let Some(first) = page.first().and_then(|m| m.seq) {
                    self.oldest_shown = Some(self.oldest_shown.map_or(first, |s| s.min(first)));
                }
            }
            Err(e) => self.read_failed("messages", &e),
        }
    }

    async fn read(&mut self) {
        let Some(open) = self.open.clone() else {
            println!("! open a conversation first (/open ID)");
            return;
        };
        let max = match self.client.conversation(&open).await {
            Ok(Some(c)) => c.server_max_seq,
            Ok(None) => return,
            Err(e) => {
                self.read_failed(open.as_str(), &e);
                return;
            }
        };
        match self.client.mark_read(&open, max).await {
            Ok(()) => println!("* {open} read up to #{}", max.0),
            Err(e) => println!("! cannot mark read: {e}"),
        }
    }

    async fn send(&mut self, text: String) {
        let Some(open) = self.open.clone() else {
            println!("! open a conversation first (/open ID); /help lists commands");
            return;
        };
        match self.client.send_text(&open, &text).await {
            Ok(id) => {
                println!("* sending {id}");
                self.unacked.insert(id);
            }
            Err(e) => println!("! cannot send: {e}"),
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::MessagesReceived {
                conversation,
                messages,
            } => {
                if Some(&conversation) == self.open.as_ref() {
                    for m in &messages {
                        print_message(m);
                    }
                } else {
                    println!("* {} new in {conversation}", messages.len());
                }
            }
            Event::MessageUpdated {
                conversation, seq, ..
            } => println!("* message #{} of {conversation} changed", seq.0),
            Event::MessagesDeleted { conversation, seqs } => {
                println!("* {} messages of {conversation} deleted", seqs.count())
            }
            Event::MessageContained {
                conversation,
                seq,
                containment,
            } => println!(
                "! message #{} of {conversation} contained: {containment:?}",
                seq.0
            ),
            Event::MessageSent {
                conversation,
                client_msg_id,
                seq,
            } => {
                self.unacked.remove(&client_msg_id);
                println!("* sent {client_msg_id} as #{} in {conversation}", seq.0);
                // Our own message, in the open conversation's flow like everyone else's.
                if Some(&conversation) == self.open.as_ref() {
                    if let Ok(Some(m)) =
                        self.client.own_message(&conversation, &client_msg_id).await
                    {
                        print_message(&m);
                    }
                }
            }
            Event::SendFailed {
                conversation,
                client_msg_id,
                error,
            } => {
                self.unacked.remove(&client_msg_id);
                println!(
                    "! send {client_msg_id} in {conversation} failed: {} ({})",
                    error.message, error.code
                );
            }
            Event::TotalUnreadChanged { total } => println!("* unread: {total}"),
            Event::SyncStarted => println!("* syncing"),
            Event::SyncFinished => {
                println!("* synced");
                self.synced = true;
                self.waiting_sync = false;
            }
            Event::ConnectionChanged { state } => println!(
                "* {}",
                match state {
                    ConnectionState::Connected => "connected",
                    ConnectionState::Connecting => "connecting",
                    ConnectionState::Disconnected => "disconnected",
                }
            ),
            // Answered by the awaited load itself.
            Event::HistoryLoaded { .. } => {}
            Event::Kicked { reason } => println!("! the server ended the session: {reason}"),
            Event::StorageFailed { error } => println!("! storage failed: {error}"),
            Event::StoreUnusable { error, damaged } => {
                println!("! the store cannot be used: {error}");
                self.unusable = Some((error, damaged));
            }
            Event::SyncProgress { .. } | Event::ConversationsChanged { .. } => {}
        }
    }

    /// Waits (bounded) until every send is acked, printing events meanwhile.
    async fn drain_outbox(&mut self, events: &mut EventStream) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        loop {
            // Every send has its event: the outbox entry leaves in the batch whose commit
            // releases it, so both are checked.
            let pending = self.client.pending_sends();
            if pending == 0 && self.unacked.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                println!("! {pending} messages not acked yet; they are sent on the next start");
                return;
            }
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => self.event(event).await,
                    None => return,
                },
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

fn print_message(m: &Message) {
    let seq = m
        .seq
        .map_or_else(|| "pending".to_owned(), |s| format!("#{}", s.0));
    let body = if m.revoked {
        "(revoked)".to_owned()
    } else {
        String::from_utf8_lossy(&m.content).into_owned()
    };
    println!("  [{}] {seq} {}: {body}", m.conversation, m.sender);
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(parse_line("/list"), ChatCommand::List);
        assert_eq!(parse_line("/open dm-1\n"), ChatCommand::Open("dm-1".into()));
        assert!(matches!(parse_line("/open"), ChatCommand::Invalid(_)));
        assert!(matches!(parse_line("/open a b"), ChatCommand::Invalid(_)));
        assert_eq!(parse_line("/history"), ChatCommand::History);
        assert_eq!(parse_line("/read"), ChatCommand::Read);
        assert_eq!(parse_line("/wait"), ChatCommand::Wait);
        assert_eq!(parse_line("/quit"), ChatCommand::Quit);
        assert_eq!(parse_line("/help"), ChatCommand::Help);
        assert_eq!(parse_line("  "), ChatCommand::Nothing);
        assert_eq!(
            parse_line("hello there"),
            ChatCommand::Send("hello there".into())
        );
        assert_eq!(parse_line("//slash"), ChatCommand::Send("/slash".into()));
        assert!(matches!(parse_line("/frobnicate"), ChatCommand::Invalid(_)));
    }

    #[test]
    fn long_previews_are_cut() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
