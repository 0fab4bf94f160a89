-- Purchases, for attribution and purchase suppression. Keyed by tenant first (see V1).

-- One row per order; recording the same order again is answered from here.
CREATE TABLE purchases (
    tenant_id    text        NOT NULL,
    order_id     text        NOT NULL,
    -- SHA-256 of the request's content: the same order id with other content is refused.
    request_hash bytea       NOT NULL,
    customer_id  text,
    contact_id   uuid,
    purchased_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
);

-- Each line with what it was attributed to.
CREATE TABLE purchase_lines (
    tenant_id       text        NOT NULL,
    order_id        text        NOT NULL,
    line_number     integer     NOT NULL,
    variant_id      text        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity > 0),
    total_minor     bigint      NOT NULL CHECK (total_minor >= 0),
    currency        text        NOT NULL,
    location_id     text,
    -- Copied from the order, so suppression and attribution read one table.
    customer_id     text,
    contact_id      uuid,
    purchased_at    timestamptz NOT NULL,
    basis           text        NOT NULL CHECK (basis IN ('none', 'text', 'click', 'holdout')),
    message_id      uuid,
    release_id      uuid,
    subscription_id uuid,
    PRIMARY KEY (tenant_id, order_id, line_number)
);
-- Purchase suppression: the latest purchase of a variant by a phone, or by a customer.
CREATE INDEX purchase_lines_by_contact ON purchase_lines (tenant_id, contact_id, variant_id, purchased_at DESC)
    WHERE contact_id IS NOT NULL;
CREATE INDEX purchase_lines_by_customer ON purchase_lines (tenant_id, customer_id, variant_id, purchased_at DESC)
    WHERE customer_id IS NOT NULL;
CREATE INDEX purchase_lines_by_release ON purchase_lines (tenant_id, release_id) WHERE release_id IS NOT NULL;
