-- Tidemark reference server store, schema version 1.
--
-- Applied by src/server/sqlite/migrations.rs inside one transaction that also sets
-- PRAGMA user_version. Tables are STRICT, so a value of the wrong type can only come from
-- damage, which the decoder reports as corruption.
--
-- Integers are SQLite's signed 64-bit. Seqs are assigned here one by one and stay far below
-- i64::MAX, so they are stored as they are and compared in SQL. Timestamps, read seqs and
-- edit/revoke targets come from callers as arbitrary u64s and are never compared in SQL: they
-- are stored bit for bit (u64 -> i64 two's complement) so every value round-trips.
--
-- Ids are TEXT with the default BINARY collation, which orders as Rust orders a String
-- (bytewise), so pages by id match the memory store.

-- Marks the file as a Tidemark server store ('TDMS'), so a foreign SQLite file (the client's
-- store included, which is 'TDMK') is refused on open.
PRAGMA application_id = 1413762387;

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE devices (
    user   TEXT NOT NULL REFERENCES users (id),
    device TEXT NOT NULL,
    PRIMARY KEY (user, device)
) STRICT, WITHOUT ROWID;

-- One row per conversation: its header. max_seq is the last assigned seq; an append bumps it
-- in the same transaction that inserts the message and its idempotency row.
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,              -- 'direct' | 'group'
    max_seq       INTEGER NOT NULL,
    min_seq       INTEGER NOT NULL,
    last_activity INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Membership. The primary key pages a user's conversations by id with a range scan
-- (conversations_of); the second index answers members() and is_member() per conversation.
CREATE TABLE members (
    user         TEXT NOT NULL REFERENCES users (id),
    conversation TEXT NOT NULL REFERENCES conversations (id),
    PRIMARY KEY (user, conversation)
) STRICT, WITHOUT ROWID;
CREATE INDEX members_by_conversation ON members (conversation, user);

-- Live messages only: deleting a seq or raising the floor deletes its row. A rowid table
-- (contents may be tens of KiB, too big for a WITHOUT ROWID b-tree), with the
-- (conversation, seq) key as a unique index that serves range pulls.
-- No foreign key on sender: the store keeps data, membership is the core's rule.
CREATE TABLE messages (
    conversation  TEXT NOT NULL REFERENCES conversations (id),
    seq           INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    sender        TEXT NOT NULL,
    kind          TEXT NOT NULL,              -- text|image|file|custom|edit|revoke
    kind_name     TEXT,                       -- the name of a custom kind
    target_seq    INTEGER,                    -- the target of an edit or revoke (bit cast)
    content       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,           -- bit cast
    server_time   INTEGER NOT NULL,           -- bit cast
    UNIQUE (conversation, seq)
) STRICT;

-- The idempotency index: (sender, client message id) -> where it went. Kept when the message
-- itself is deleted or falls below the floor, so a late resend is still acked, not re-stored.
CREATE TABLE sent (
    sender        TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    conversation  TEXT NOT NULL REFERENCES conversations (id),
    seq           INTEGER NOT NULL,
    server_time   INTEGER NOT NULL,           -- bit cast
    PRIMARY KEY (sender, client_msg_id)
) STRICT, WITHOUT ROWID;

-- Seqs deleted one by one, as disjoint, non-adjacent ranges first_seq..=last_seq per
-- conversation
-- (coalesced on every delete), so deleted(from, to) reads a handful of rows.
CREATE TABLE deleted_ranges (
    conversation TEXT NOT NULL REFERENCES conversations (id),
    first_seq    INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL,
    PRIMARY KEY (conversation, first_seq)
) STRICT, WITHOUT ROWID;

-- Read seqs; a missing row is Seq(0).
CREATE TABLE read_seqs (
    user         TEXT NOT NULL REFERENCES users (id),
    conversation TEXT NOT NULL REFERENCES conversations (id),
    seq          INTEGER NOT NULL,            -- bit cast
    PRIMARY KEY (user, conversation)
) STRICT, WITHOUT ROWID;

-- Access tokens as SHA-256 hashes; expires_at NULL never expires.
CREATE TABLE tokens (
    user       TEXT NOT NULL REFERENCES users (id),
    hash       BLOB NOT NULL,
    expires_at INTEGER,                       -- bit cast
    PRIMARY KEY (user, hash)
) STRICT, WITHOUT ROWID;
