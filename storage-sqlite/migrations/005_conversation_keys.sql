-- Tidemark local store, schema version 5: the message indexes are keyed by an integer per
-- conversation instead of its id.
--
-- Both unique indexes of messages began with the conversation id as text, so every row
-- repeated it in two indexes and every seek of a sync's insert compared it as a string, in
-- each b-tree level of four searches (the conflict check and the insert, per index). Now
-- conversation_keys gives each conversation id a small integer (never reused, never
-- deleted: a key outlives its rows), and the indexes are (conversation_key, sender,
-- client_msg_id) and (conversation_key, seq): the same uniqueness, exactly (a key stands for
-- one id), with an integer compare first.
--
-- The row keeps the id as text too: a message decodes from its own row, and readers that look
-- rows up by id without the key (recovery of a damaged store scans the table) still work.
--
-- SQLite cannot change a table's constraints in place: the table is rebuilt (as in migration
-- 002), inside the migration's transaction. Every row is kept, with its rowid; each version 4
-- row is unique under the new keys because each key stands for exactly one id.

CREATE TABLE conversation_keys (
    key INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE
) STRICT;

INSERT INTO conversation_keys (id)
SELECT DISTINCT conversation FROM messages ORDER BY conversation;

CREATE TABLE messages_v5 (
    id               INTEGER PRIMARY KEY,
    conversation     TEXT NOT NULL,
    conversation_key INTEGER NOT NULL,          -- conversation_keys.key of conversation
    seq              INTEGER,                   -- NULL while pending or failed
    client_msg_id    TEXT NOT NULL,
    sender           TEXT NOT NULL,
    kind             TEXT NOT NULL,             -- text|image|file|custom|edit|revoke
    kind_name        TEXT,                      -- the name of a custom kind
    target_seq       INTEGER,                   -- the target of an edit or revoke
    content          BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    server_time      INTEGER,
    status           TEXT NOT NULL,             -- pending|sent|failed
    failure_reason   TEXT,                      -- set iff status = 'failed'
    edit_seq         INTEGER,
    revoked          INTEGER NOT NULL,          -- 0 | 1
    -- Rows are found by (conversation, sender, client_msg_id) (a pending send and its echo
    -- are one row) and by (conversation, seq) (pages, edits, revokes, tombstones, and with
    -- seq IS NULL the unsent list and the outbox's rows), the conversation by its key.
    UNIQUE (conversation_key, sender, client_msg_id),
    UNIQUE (conversation_key, seq)
) STRICT;

INSERT INTO messages_v5 (id, conversation, conversation_key, seq, client_msg_id, sender, kind,
    kind_name, target_seq, content, created_at, server_time, status, failure_reason, edit_seq,
    revoked)
SELECT m.id, m.conversation, k.key, m.seq, m.client_msg_id, m.sender, m.kind, m.kind_name,
    m.target_seq, m.content, m.created_at, m.server_time, m.status, m.failure_reason,
    m.edit_seq, m.revoked
FROM messages m JOIN conversation_keys k ON k.id = m.conversation;

DROP TABLE messages;

ALTER TABLE messages_v5 RENAME TO messages;
