-- The outbox keeps only the indexes its hot path needs. Every version of a message (planned,
-- sending, sent: three per text) is written into every index, so each index costs a text three
-- index insertions; what is read rarely reads through the indexes that stay.

-- The claim takes due messages release by release, in turns (a small restock is not queued
-- behind a large one), each release one range of this index in plan order.
DROP INDEX messages_due;
CREATE INDEX messages_due ON messages (tenant_id, release_id, due_at, position)
    WHERE status IN ('planned', 'deferred') AND wave IS NOT NULL;

-- The re-notify window reads a phone's few texts through messages_by_contact.
DROP INDEX messages_last_text;

-- A subscription's texts are its phone's texts (messages_by_contact), filtered.
DROP INDEX messages_by_subscription;

-- A release's cached figures go stale when one of its messages changes status, is first
-- clicked or records an error. Once per statement, not per row: a batch of 500 outcomes took
-- 500 trigger calls, each an advisory lock and a DELETE, and every text changes status twice.
-- Same locks (sorted, shared), same rows deleted, before the same commit.
DROP TRIGGER release_figures_stale_message ON messages;
DROP FUNCTION release_figures_stale_message();
CREATE FUNCTION release_figures_stale_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The locks first (held to commit), then the drop, as the row trigger did.
    PERFORM release_figures_lock(s.tenant_id, s.variant_id)
    FROM (SELECT DISTINCT n.tenant_id, n.variant_id
          FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.message_id = n.message_id
          WHERE o.status IS DISTINCT FROM n.status
             OR o.first_click_at IS DISTINCT FROM n.first_click_at
             OR o.last_error_code IS DISTINCT FROM n.last_error_code
          ORDER BY 1, 2) s;
    DELETE FROM release_figures f
    USING (SELECT DISTINCT n.tenant_id, n.release_id
           FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.message_id = n.message_id
           WHERE o.status IS DISTINCT FROM n.status
              OR o.first_click_at IS DISTINCT FROM n.first_click_at
              OR o.last_error_code IS DISTINCT FROM n.last_error_code) s
    WHERE f.tenant_id = s.tenant_id AND f.release_id = s.release_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER release_figures_stale_messages
    AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION release_figures_stale_messages();
