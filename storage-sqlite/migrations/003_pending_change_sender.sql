-- Tidemark local store, schema version 3: a pending change (an edit or revoke waiting for its
-- target) records who sent it, because only the target's author may change a message.
--
-- The change message itself is stored in messages at the change's own seq, in the same batch
-- as its pending_changes row, so the sender is filled from there. A pending change whose
-- message is gone (its seq deleted since) keeps the empty sender, which matches no author:
-- it is never applied, which is the safe side of a rule that cannot be checked.

ALTER TABLE pending_changes ADD COLUMN sender TEXT NOT NULL DEFAULT '';

UPDATE pending_changes SET sender = COALESCE(
    (SELECT m.sender FROM messages m
      WHERE m.conversation = pending_changes.conversation AND m.seq = pending_changes.seq),
    '');
