-- Tidemark reference server store, schema version 2: the change clock behind sync tokens.
--
-- One store-wide counter: every change to what a user's max-seq entry says takes its next
-- value and records it on the row it changed (conversations.change_seq for a conversation's
-- seqs, activity and deletions; members.change_seq for a member's read seq or joining). A
-- token "<epoch>.<counter>" lists, next time, only the rows with a higher value.
--
-- The epoch is drawn here, once per database, so a token of another database (or of this
-- one before it was recreated) is never taken for one of this database. Tokens below
-- `floor` are expired. Rows from before this version keep change_seq 0: every token is
-- issued after the migration, at counter 0 or above, so none of them is missed.

CREATE TABLE change_clock (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   TEXT NOT NULL,
    counter INTEGER NOT NULL,
    floor   INTEGER NOT NULL
) STRICT;

INSERT INTO change_clock (id, epoch, counter, floor)
VALUES (1, lower(hex(randomblob(8))), 0, 0);

ALTER TABLE conversations ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;

-- The delta listing walks the conversations changed since a token (then checks membership
-- by primary key) and the user's own member rows changed since it.
CREATE INDEX conversations_by_change ON conversations (change_seq);
CREATE INDEX members_by_change ON members (user, change_seq);
