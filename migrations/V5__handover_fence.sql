-- When the sender that holds a message's lease decided to hand it to the provider (after its
-- last consent check, before the request). NULL while `sending` means no hand-over began, so a
-- message whose lease ran out can go back in line at once; set means the provider may have the
-- text, so it is looked up there before anything is resent. Cleared with every recorded outcome.
ALTER TABLE messages ADD COLUMN handed_at timestamptz;
-- Texts caught mid-send by this upgrade may have reached the provider: look them up.
UPDATE messages SET handed_at = COALESCE(attempted_at, updated_at) WHERE status = 'sending';

-- A texted subscription reads NOTIFIED (the public API's "texted about a restock") and stays in
-- line for the next restock, as it did while it read ACTIVE: the live set now includes it.
DROP INDEX subscriptions_one_live_per_target;
CREATE UNIQUE INDEX subscriptions_one_live_per_target
    ON subscriptions (tenant_id, contact_id, target_key)
    WHERE status IN ('pending_confirmation', 'active', 'notified');
DROP INDEX subscriptions_waitlist_order;
CREATE INDEX subscriptions_waitlist_order
    ON subscriptions (tenant_id, target_key, priority_tier DESC, seq)
    WHERE status IN ('pending_confirmation', 'active', 'notified');
DROP INDEX subscriptions_product_waitlist;
CREATE INDEX subscriptions_product_waitlist
    ON subscriptions (tenant_id, product_id, priority_tier DESC, seq)
    WHERE status IN ('pending_confirmation', 'active', 'notified') AND variant_id IS NULL;
-- Subscriptions texted before this migration.
UPDATE subscriptions s SET status = 'notified'
WHERE s.status = 'active' AND EXISTS (
    SELECT 1 FROM messages m WHERE m.tenant_id = s.tenant_id
      AND m.subscription_id = s.subscription_id AND m.sent_at IS NOT NULL);
