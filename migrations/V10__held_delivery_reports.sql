-- Delivery reports that arrived before their text's send outcome was recorded: the status
-- callback URL names restock's own message, but the provider id the report carries is not on
-- the message yet. Held here and applied (with their receipt, once) as soon as the outcome
-- lands; rows whose text never got a provider id are pruned by the janitor after the webhook
-- retention. No personal data: provider ids, statuses and error codes.
CREATE TABLE held_delivery_reports (
    tenant_id     text        NOT NULL,
    message_id    uuid        NOT NULL,
    message_sid   text        NOT NULL,
    status        text        NOT NULL,
    error_code    text,
    error_message text,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, message_id, message_sid, status)
);
CREATE INDEX held_delivery_reports_by_age ON held_delivery_reports (received_at);
