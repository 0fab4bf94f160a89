-- Provider webhooks acted on, so a webhook replayed (a provider retry, or a captured request
-- sent again) is answered and changes nothing. Keyed by the provider's ids rather than by
-- tenant: one inbound text can concern every tenant on its sender. Holds no personal data (the
-- phone is not kept). Rows older than the retention (7 days, longer than the provider retries)
-- are pruned by the janitor.
CREATE TABLE webhook_receipts (
    -- 'inbound' (an inbound text) or 'status' (a delivery-status callback).
    kind        text        NOT NULL CHECK (kind IN ('inbound', 'status')),
    message_sid text        NOT NULL,
    -- The reported MessageStatus of a status callback (each status is its own callback);
    -- '' for an inbound text.
    status      text        NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL,
    PRIMARY KEY (kind, message_sid, status)
);
CREATE INDEX webhook_receipts_by_age ON webhook_receipts (received_at);
