-- Waitlist and consent. Every table is keyed by tenant first, with no cross-tenant foreign keys,
-- so the schema can be distributed by tenant (Citus) without change.

-- One contact per (tenant, phone). After erasure the phone is NULL and `erased_hash` keeps a
-- keyed hash of it, so counts stay true and nothing personal is left.
CREATE TABLE contacts (
    tenant_id   text        NOT NULL,
    contact_id  uuid        NOT NULL,
    phone_e164  text,
    erased_hash text,
    erased_at   timestamptz,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contact_id),
    CHECK ((phone_e164 IS NULL) = (erased_at IS NOT NULL))
);
CREATE UNIQUE INDEX contacts_by_phone ON contacts (tenant_id, phone_e164) WHERE phone_e164 IS NOT NULL;

-- The append-only consent ledger. A contact's consent state is derived from it, never stored.
CREATE TABLE consent_events (
    tenant_id       text        NOT NULL,
    contact_id      uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    kind            text        NOT NULL CHECK (kind IN ('opt_in', 'confirm', 'opt_out')),
    source          text        NOT NULL,
    consent_text    text,
    ip_address      text,
    user_agent      text,
    reason          text,
    subscription_id uuid,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, event_id)
);
CREATE INDEX consent_events_ledger_order ON consent_events (tenant_id, contact_id, seq);

-- Nothing in the ledger is updated or deleted, except by erasure, which sets
-- `restock.erasure` for its own transaction only.
CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('restock.erasure', true) = 'on' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'consent_events is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER consent_events_append_only
    BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION consent_events_append_only();

-- What texts can say about a variant, as storefronts last described it.
CREATE TABLE variants (
    tenant_id  text        NOT NULL,
    variant_id text        NOT NULL,
    product_id text,
    title      text,
    options    jsonb       NOT NULL DEFAULT '{}',
    deep_link  text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, variant_id)
);

CREATE TABLE subscriptions (
    tenant_id        text        NOT NULL,
    subscription_id  uuid        NOT NULL,
    -- Insertion order: the waitlist order within a tier, and the keyset of list pages.
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    contact_id       uuid        NOT NULL,
    -- Canonical form of what is waited for (variant, or product + wanted options).
    target_key       text        NOT NULL,
    variant_id       text,
    product_id       text,
    wanted_options   jsonb       NOT NULL DEFAULT '{}',
    customer_id      text,
    session_id       text,
    location_ids     text[]      NOT NULL DEFAULT '{}',
    desired_quantity integer     NOT NULL DEFAULT 1 CHECK (desired_quantity >= 1),
    priority_tier    integer     NOT NULL DEFAULT 0 CHECK (priority_tier >= 0),
    status           text        NOT NULL CHECK (status IN ('pending_confirmation', 'active', 'notified', 'converted', 'expired', 'cancelled')),
    cancel_reason    text,
    time_zone        text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id),
    CHECK (variant_id IS NOT NULL OR product_id IS NOT NULL)
);
-- At most one live subscription per (tenant, target, phone): the database, not the code, is the
-- last word when two requests race.
CREATE UNIQUE INDEX subscriptions_one_live_per_target
    ON subscriptions (tenant_id, contact_id, target_key)
    WHERE status IN ('pending_confirmation', 'active');
-- Waitlist position and, later, release planning: live subscriptions of a target in order.
CREATE INDEX subscriptions_waitlist_order
    ON subscriptions (tenant_id, target_key, priority_tier DESC, seq)
    WHERE status IN ('pending_confirmation', 'active');
CREATE INDEX subscriptions_list_page ON subscriptions (tenant_id, seq);
CREATE INDEX subscriptions_by_contact ON subscriptions (tenant_id, contact_id, seq);
CREATE INDEX subscriptions_by_variant ON subscriptions (tenant_id, variant_id, seq) WHERE variant_id IS NOT NULL;
CREATE INDEX subscriptions_by_product ON subscriptions (tenant_id, product_id, seq) WHERE product_id IS NOT NULL;
CREATE INDEX subscriptions_by_customer ON subscriptions (tenant_id, customer_id, seq) WHERE customer_id IS NOT NULL;

-- Subscribe retries: the first answer of a key, and a fingerprint of its request so a key reused
-- for another request is refused.
CREATE TABLE idempotency_keys (
    tenant_id       text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    bytea       NOT NULL,
    subscription_id uuid        NOT NULL,
    created         boolean     NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);
