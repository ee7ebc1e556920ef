-- Tidemark reference server store, schema version 3: messages are stored in (conversation,
-- seq) order, keyed by it (WITHOUT ROWID).
--
-- A pull reads a run of one conversation's seqs. In version 2 each row was found in the
-- (conversation, seq) index and then read from the rowid table, where rows lie in the order
-- they were appended, all conversations interleaved: every pulled row cost a second b-tree
-- search and, in a large store, a page of its own. Keyed by (conversation, seq), the rows of
-- a pull lie side by side and are read by one range scan, with no second lookup.
--
-- The trade: a WITHOUT ROWID b-tree keeps less of a row in its page before spilling to
-- overflow pages (about 1 KB of a 4 KiB page instead of about 4 KB), so long contents (large
-- custom payloads) cost an extra page read each; chat text and references to media fit.
--
-- SQLite cannot change a table's key in place: the table is rebuilt (create, copy every row,
-- drop, rename) inside the migration's transaction. Every row is kept: (conversation, seq)
-- was already unique, and NOT NULL in both columns.

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

INSERT INTO messages_v3 (conversation, seq, client_msg_id, sender, kind, kind_name, target_seq,
    content, created_at, server_time)
SELECT conversation, seq, client_msg_id, sender, kind, kind_name, target_seq, content,
    created_at, server_time
FROM messages ORDER BY conversation, seq;

DROP TABLE messages;

ALTER TABLE messages_v3 RENAME TO messages;
