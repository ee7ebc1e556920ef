-- Tidemark reference server store, schema version 3: messages are stored in
-- (conversation, seq) order.
--
-- Version 1 kept messages in a rowid table with a UNIQUE (conversation, seq) index, so a pull
-- walked the index and looked every message up in the table by rowid. Appends interleave
-- conversations, so those lookups land all over the table: in a profile of the core thread
-- serving a 1M-message sync, the lookups (sqlite3BtreeTableMoveto and the pages they load)
-- were 40% of its time. A WITHOUT ROWID table keyed by (conversation, seq) is that index with
-- the rows in it: a pull is one range scan, and an append writes one b-tree instead of two.
--
-- What version 1 feared: rows of tens of KiB in such a b-tree. They are allowed (up to
-- max_content_bytes, 64 KiB by default) and spill to overflow pages as they would in a rowid
-- table; only the b-tree's fan-out is lower where they sit. IM messages are mostly a few
-- hundred bytes, and a pull reads them in key order either way.
--
-- SQLite cannot change a table's key in place: the table is rebuilt (create, copy every row,
-- drop, rename) inside the migration's transaction. Every row is unique under the new key
-- already (it was the unique index).

CREATE TABLE messages_v3 (
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
    PRIMARY KEY (conversation, seq)
) STRICT, WITHOUT ROWID;

INSERT INTO messages_v3 (conversation, seq, client_msg_id, sender, kind, kind_name,
    target_seq, content, created_at, server_time)
SELECT conversation, seq, client_msg_id, sender, kind, kind_name,
    target_seq, content, created_at, server_time
FROM messages ORDER BY conversation, seq;

DROP TABLE messages;

ALTER TABLE messages_v3 RENAME TO messages;
