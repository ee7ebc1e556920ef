//! `tidemark inspect DB`: what a client store holds, opened read-only.
//!
//! Reads only through the [`Storage`] trait (plus the snapshot for the outbox and pending
//! changes), so it shows what the engine itself would load. A file that is not a store, is
//! damaged or was written by a newer build is a clear error and a non-zero exit.

use std::path::PathBuf;

use serde_json::{json, Value};
use tidemark_engine::{
    Conversation, ConversationKind, LatestMessage, SeqRange, SeqRanges, Storage, StorageError,
};
use tidemark_storage_sqlite::SqliteStorage;

use crate::error::{CliError, CliResult, Context};

/// Arguments of `tidemark inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The client store (an SQLite file written by Tidemark).
    pub db: PathBuf,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many conversations (most recently active first); 0 shows all.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

/// Runs `tidemark inspect`.
pub async fn run(args: InspectArgs) -> CliResult<()> {
    if !args.db.is_file() {
        return Err(CliError::new(format!(
            "{} does not exist or is not a file",
            args.db.display()
        )));
    }
    if std::fs::metadata(&args.db).map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(CliError::new(format!(
            "{} is empty: not a Tidemark client store",
            args.db.display()
        )));
    }
    let storage =
        SqliteStorage::open_read_only(&args.db).map_err(|e| describe_open_error(&args.db, &e))?;
    let report = Report::read(&storage, args.limit)
        .await
        .map_err(|e| describe_open_error(&args.db, &e))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .context(|| "cannot write JSON".to_owned())?;
        println!("{text}");
    } else {
        report.print();
    }
    match &report.integrity {
        Ok(()) => Ok(()),
        Err(problem) => Err(CliError::new(format!(
            "{}: integrity check failed: {problem}",
            args.db.display()
        ))),
    }
}

/// Words an opening or reading failure for a person: which file, and what it means.
fn describe_open_error(db: &std::path::Path, e: &StorageError) -> CliError {
    let what = match e {
        StorageError::Corrupt { .. } => {
            "is not a Tidemark client store, or it is damaged".to_owned()
        }
        StorageError::UnsupportedVersion { found, supported } => format!(
            "was written by a newer Tidemark (schema {found}; this build reads up to {supported})"
        ),
        // Opening read-only, a store that needs its schema created or upgraded cannot be
        // opened: for an inspector that means an old or never-initialized store.
        StorageError::ReadOnly { .. } => {
            "needs a schema migration (an empty file or an older store); open it with the \
             client once"
                .to_owned()
        }
        _ => "cannot be read".to_owned(),
    };
    CliError::new(format!("{} {what} ({e})", db.display()))
}

/// Everything the inspector shows.
struct Report {
    conversations: Vec<Conversation>,
    total_conversations: usize,
    total_unread: u64,
    outbox: Vec<tidemark_engine::OutboxEntry>,
    pending_changes: Vec<tidemark_engine::PendingChange>,
    integrity: Result<(), String>,
}

impl Report {
    async fn read(storage: &SqliteStorage, limit: usize) -> Result<Self, StorageError> {
        // The snapshot is what the engine loads at start: the outbox and pending changes are
        // only reachable through it.
        let snapshot = storage.load_snapshot().await?;
        let total_conversations = snapshot.conversations.len();
        // The list order an app shows: most recently active first.
        let mut conversations = Vec::new();
        let mut cursor = None;
        loop {
            let page = storage.conversations_page(cursor, 500).await?;
            let Some(last) = page.last() else { break };
            cursor = Some(tidemark_engine::ConversationCursor::after(last));
            conversations.extend(page);
            if limit > 0 && conversations.len() >= limit {
                conversations.truncate(limit);
                break;
            }
        }
        let total_unread = storage.total_unread().await?;
        // An integrity failure is a finding to report, not a reason to stop reading.
        let integrity = storage.check_integrity().await.map_err(|e| e.to_string());
        Ok(Self {
            conversations,
            total_conversations,
            total_unread,
            outbox: snapshot.outbox,
            pending_changes: snapshot.pending_changes,
            integrity,
        })
    }

    fn print(&self) {
        println!(
            "conversations: {} (total unread {})",
            self.total_conversations, self.total_unread
        );
        if !self.conversations.is_empty() {
            println!(
                "  {:<24} {:<6} {:>7} {:>5} {:>7} {:>6} {:>6}  {:<20} {:<14} latest",
                "id", "kind", "max", "min", "held#", "unread", "read", "held", "gaps"
            );
        }
        for c in &self.conversations {
            println!(
                "  {:<24} {:<6} {:>7} {:>5} {:>7} {:>6} {:>6}  {:<20} {:<14} {}",
                c.id.as_str(),
                kind_name(c.kind),
                c.server_max_seq.0,
                c.server_min_seq.0,
                c.held.count(),
                c.unread,
                c.read_seq.0,
                ranges_text(c.held.ranges()),
                ranges_text(&c.gaps()),
                c.latest.as_ref().map(latest_text).unwrap_or_default()
            );
        }
        if self.conversations.len() < self.total_conversations {
            println!(
                "  ... {} more (use --limit 0 to show all)",
                self.total_conversations - self.conversations.len()
            );
        }
        println!("outbox: {}", self.outbox.len());
        for e in &self.outbox {
            println!(
                "  {} in {}: {:?}, {} bytes, created {} ms, {} attempts",
                e.client_msg_id,
                e.conversation,
                e.kind,
                e.content.len(),
                e.created_at.0,
                e.attempts
            );
        }
        println!("pending changes: {}", self.pending_changes.len());
        for p in &self.pending_changes {
            println!(
                "  {} seq {} -> target {}: {:?}",
                p.conversation, p.seq.0, p.target.0, p.kind
            );
        }
        match &self.integrity {
            Ok(()) => println!("integrity: ok"),
            Err(problem) => println!("integrity: FAILED: {problem}"),
        }
    }

    fn to_json(&self) -> Value {
        let conversations: Vec<Value> = self
            .conversations
            .iter()
            .map(|c| {
                json!({
                    "id": c.id.as_str(),
                    "kind": kind_name(c.kind),
                    "server_max_seq": c.server_max_seq.0,
                    "server_min_seq": c.server_min_seq.0,
                    "held": ranges_json(c.held.ranges()),
                    "held_count": c.held.count(),
                    "gaps": ranges_json(&c.gaps()),
                    "deleted": ranges_json(SeqRanges::ranges(&c.deleted)),
                    "unread": c.unread,
                    "read_seq": c.read_seq.0,
                    "last_activity": c.last_activity.0,
                    "latest": c.latest.as_ref().map(|l| json!({
                        "seq": l.seq.map(|s| s.0),
                        "sender": l.sender.as_str(),
                        "client_msg_id": l.client_msg_id.as_str(),
                        "preview": String::from_utf8_lossy(&l.preview),
                        "time": l.time.0,
                    })),
                })
            })
            .collect();
        let outbox: Vec<Value> = self
            .outbox
            .iter()
            .map(|e| {
                json!({
                    "conversation": e.conversation.as_str(),
                    "client_msg_id": e.client_msg_id.as_str(),
                    "kind": format!("{:?}", e.kind),
                    "bytes": e.content.len(),
                    "created_at": e.created_at.0,
                    "attempts": e.attempts,
                })
            })
            .collect();
        let pending: Vec<Value> = self
            .pending_changes
            .iter()
            .map(|p| {
                json!({
                    "conversation": p.conversation.as_str(),
                    "seq": p.seq.0,
                    "target": p.target.0,
                    "kind": format!("{:?}", p.kind),
                })
            })
            .collect();
        json!({
            "conversation_count": self.total_conversations,
            "total_unread": self.total_unread,
            "conversations": conversations,
            "outbox": outbox,
            "pending_changes": pending,
            "integrity": match &self.integrity {
                Ok(()) => json!("ok"),
                Err(problem) => json!({ "failed": problem }),
            },
        })
    }
}

fn kind_name(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

/// `1-50,60,70-80`, or `-` for none.
pub fn ranges_text(ranges: &[SeqRange]) -> String {
    if ranges.is_empty() {
        return "-".to_owned();
    }
    ranges
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.0.to_string()
            } else {
                format!("{}-{}", r.start.0, r.end.0)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn ranges_json(ranges: &[SeqRange]) -> Value {
    Value::Array(ranges.iter().map(|r| json!([r.start.0, r.end.0])).collect())
}

/// `#12 bob: hello th…` (the preview cut to a line's worth).
fn latest_text(latest: &LatestMessage) -> String {
    let text = String::from_utf8_lossy(&latest.preview);
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    let short = short.replace('\n', " ");
    match latest.seq {
        Some(seq) => format!("#{} {}: {short}", seq.0, latest.sender),
        None => format!("(pending) {}: {short}", latest.sender),
    }
}
