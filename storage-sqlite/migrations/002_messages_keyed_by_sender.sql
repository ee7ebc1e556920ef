-- Tidemark local store, schema version 2: messages are keyed by (conversation, sender,
-- client_msg_id).
--
-- Client ids are unique per (sender, conversation) only: two users may send messages with the
-- same client id in one conversation. Version 1 keyed rows by (conversation, client_msg_id),
-- so another user's message replaced a pending send with the same id, or was refused next to a
-- sent one. SQLite cannot change a table's constraints in place: the table is rebuilt (create
-- the new one, copy every row, drop the old one, rename), inside the migration's transaction.
-- Every version 1 row is unique under the new key too, so the copy keeps every row, with its
-- rowid.

CREATE TABLE messages_v2 (
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
    -- Rows are found by (conversation, sender, client_msg_id) (a pending send and its echo
    -- are one row) and by (conversation, seq) (pages, edits, revokes, tombstones, and with
    -- seq IS NULL the unsent list and the outbox's rows).
    UNIQUE (conversation, sender, client_msg_id),
    UNIQUE (conversation, seq)
) STRICT;

INSERT INTO messages_v2 (id, conversation, seq, client_msg_id, sender, kind, kind_name,
    target_seq, content, created_at, server_time, status, failure_reason, edit_seq, revoked)
SELECT id, conversation, seq, client_msg_id, sender, kind, kind_name,
    target_seq, content, created_at, server_time, status, failure_reason, edit_seq, revoked
FROM messages;

DROP TABLE messages;

ALTER TABLE messages_v2 RENAME TO messages;
