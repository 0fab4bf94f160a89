-- Double opt-in: the confirmation texts restock sends itself ("Reply YES to get a text when
-- ... is back"). One per phone per pending batch (the phone's subscriptions awaiting
-- confirmation since its last confirmation text), never more than one a day to a phone, within
-- quiet hours and caps. A text whose hand-over may have begun is never sent again: a lost
-- lease after `handed_at` ends as 'unknown'.
CREATE TABLE confirmation_texts (
    tenant_id           text        NOT NULL,
    confirmation_id     uuid        NOT NULL,
    contact_id          uuid        NOT NULL,
    status              text        NOT NULL
        CHECK (status IN ('planned', 'sending', 'sent', 'failed', 'unknown', 'cancelled')),
    due_at              timestamptz NOT NULL,
    attempts            integer     NOT NULL DEFAULT 0,
    lease_owner         text,
    lease_until         timestamptz,
    handed_at           timestamptz,
    sender_id           text,
    provider_message_id text,
    last_error          text,
    created_at          timestamptz NOT NULL,
    sent_at             timestamptz,
    updated_at          timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, confirmation_id)
);
-- One open confirmation per phone: the batch a new pending subscription joins.
CREATE UNIQUE INDEX confirmation_texts_one_open
    ON confirmation_texts (tenant_id, contact_id) WHERE status IN ('planned', 'sending');
CREATE INDEX confirmation_texts_due ON confirmation_texts (due_at) WHERE status = 'planned';
CREATE INDEX confirmation_texts_leases ON confirmation_texts (lease_until) WHERE status = 'sending';
CREATE INDEX confirmation_texts_by_contact ON confirmation_texts (tenant_id, contact_id, created_at);
-- Pending subscriptions, for scheduling confirmations and lapsing the unconfirmed.
CREATE INDEX subscriptions_pending_confirmation
    ON subscriptions (tenant_id, created_at) WHERE status = 'pending_confirmation';

-- A subscription never confirmed within the tenant's window lapses.
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_status_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_status_check
    CHECK (status IN ('pending_confirmation', 'active', 'notified', 'converted', 'expired',
                      'cancelled', 'lapsed'));
