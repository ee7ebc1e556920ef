-- Tidemark local store, schema version 1.
--
-- Applied by src/sql/migrations.rs inside one transaction that also sets PRAGMA user_version.
-- Integers are SQLite's signed 64-bit: seqs, timestamps and counts above i64::MAX are refused
-- on write. Tables are STRICT so a value of the wrong type can only come from damage, which
-- the decoder reports as corruption.

-- Marks the file as a Tidemark store ('TDMK'), so a foreign SQLite file is refused on open.
PRAGMA application_id = 1413762379;

-- Conversation records: sync state and list entry, one row per conversation.
-- held, not_unread and deleted are SeqRanges as JSON pairs: [[start,end],...].
-- latest_* columns hold the LatestMessage; it is present iff latest_client_msg_id is not NULL.
-- Columns rather than JSON because the preview is bytes (JSON would quadruple it).
CREATE TABLE conversations (
    id                   TEXT PRIMARY KEY NOT NULL,
    kind                 TEXT NOT NULL,           -- 'direct' | 'group'
    server_max_seq       INTEGER NOT NULL,
    server_min_seq       INTEGER NOT NULL,
    held                 TEXT NOT NULL,
    read_seq             INTEGER NOT NULL,
    not_unread           TEXT NOT NULL,
    unread               INTEGER NOT NULL,
    last_activity        INTEGER NOT NULL,
    deleted              TEXT NOT NULL,
    latest_seq           INTEGER,
    latest_client_msg_id TEXT,
    latest_sender        TEXT,
    latest_kind          TEXT,
    latest_kind_name     TEXT,
    latest_target_seq    INTEGER,
    latest_preview       BLOB,
    latest_time          INTEGER
) STRICT;

-- The conversation list: newest activity first, ties by id; pages seek into it by cursor.
CREATE INDEX conversations_by_activity ON conversations (last_activity DESC, id ASC);

-- Messages, sent or not. Rows are found by (conversation, client_msg_id) (a pending send and
-- its echo are one row) and by (conversation, seq) (pages, edits, revokes, tombstones).
-- Several unsent rows of one conversation may have seq NULL: UNIQUE lets NULLs repeat, and
-- the (conversation, seq) index finds them (seq IS NULL) for the unsent list.
-- No foreign key to conversations: messages may be stored before their conversation record.
CREATE TABLE messages (
    id             INTEGER PRIMARY KEY,
    conversation   TEXT NOT NULL,
    seq            INTEGER,                       -- NULL while pending or failed
    client_msg_id  TEXT NOT NULL,
    sender         TEXT NOT NULL,
    kind           TEXT NOT NULL,                 -- text|image|file|custom|edit|revoke
    kind_name      TEXT,                          -- the name of a custom kind
    target_seq     INTEGER,                       -- the target of an edit or revoke
    content        BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    server_time    INTEGER,
    status         TEXT NOT NULL,                 -- pending|sent|failed
    failure_reason TEXT,                          -- set iff status = 'failed'
    edit_seq       INTEGER,
    revoked        INTEGER NOT NULL,              -- 0 | 1
    UNIQUE (conversation, client_msg_id),
    UNIQUE (conversation, seq)
) STRICT;

-- Seqs that no longer exist on the server, per conversation, as JSON pairs like held.
CREATE TABLE tombstones (
    conversation TEXT PRIMARY KEY NOT NULL,
    ranges       TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Unacked sends, keyed by client message id (as the engine keys them), read oldest first.
CREATE TABLE outbox (
    client_msg_id TEXT PRIMARY KEY NOT NULL,
    conversation  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    kind_name     TEXT,
    target_seq    INTEGER,
    content       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL
) STRICT;

CREATE INDEX outbox_by_age ON outbox (created_at, client_msg_id);

-- Edits and revokes waiting for their target, keyed by the change's own seq.
CREATE TABLE pending_changes (
    conversation TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    target       INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    kind_name    TEXT,
    target_seq   INTEGER,
    content      BLOB NOT NULL,
    PRIMARY KEY (conversation, seq)
) STRICT;
