-- Tidemark local store, schema version 4: the sync token, the server's per-user change cursor
-- of the last complete listing. One row at most (id is always 1); no row means no token, so
-- the next connect asks for the full listing, which is what a store from before this version
-- did anyway.

CREATE TABLE sync_token (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL
) STRICT;
