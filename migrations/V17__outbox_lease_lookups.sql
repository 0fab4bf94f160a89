-- The hot path looks messages up by key. An outcome (`status = 'sending' AND lease_owner = ..`)
-- implied the predicate of `messages_leases`, so with the outbox's statistics from before the
-- release (no message sending) the planner read the batch through that partial index: it holds
-- an entry for every version that was ever `sending` until vacuum, and a bitmap scan never
-- marks the dead ones, so each batch read every text sent so far (quadratic in the release).
-- The reconcilers, the index's readers, bound `lease_until` and still use it; the hot
-- statements do not imply `lease_until IS NOT NULL` and look each message up by its key.
DROP INDEX messages_leases;
CREATE INDEX messages_leases ON messages (lease_until)
    WHERE status = 'sending' AND lease_until IS NOT NULL;

-- Room on each page for a message's next version: marking a text handed changes no indexed
-- column, so with space on its page that update is HOT (no entry in any of the outbox's
-- indexes). New pages only; the planner's chunks fill them.
ALTER TABLE messages SET (fillfactor = 70);
