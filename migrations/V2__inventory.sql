-- Inventory, restock detection and merchandising exclusions. Keyed by tenant first, like every
-- table (see V1).

-- One stock level per (variant, location). `armed` is the restock detector's state: whether the
-- next crossing of the threshold starts a restock.
CREATE TABLE inventory (
    tenant_id        text        NOT NULL,
    variant_id       text        NOT NULL,
    location_id      text        NOT NULL,
    available        bigint      NOT NULL CHECK (available >= 0),
    on_order         bigint      NOT NULL CHECK (on_order >= 0),
    -- The newest event applied: by sequence number or by observation time, whichever the
    -- sender uses for this level.
    last_sequence    bigint,
    last_observed_at timestamptz,
    armed            boolean     NOT NULL,
    last_event_id    text,
    last_restock_id  uuid,
    last_restock_at  timestamptz,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, variant_id, location_id)
);

-- The variant's level over all locations, for variant-level restocks. Its row is also the lock
-- that serialises every change of one variant's stock, so two replicas or two streams racing on
-- a variant take turns.
CREATE TABLE variant_stock (
    tenant_id       text        NOT NULL,
    variant_id      text        NOT NULL,
    available       bigint      NOT NULL CHECK (available >= 0),
    armed           boolean     NOT NULL,
    last_restock_id uuid,
    last_restock_at timestamptz,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, variant_id)
);

-- Event ids seen, so a resent event is acknowledged as a duplicate with its first answer.
CREATE TABLE inventory_events (
    tenant_id   text        NOT NULL,
    event_id    text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('applied', 'stale')),
    restock_id  uuid,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX inventory_events_by_age ON inventory_events (recorded_at);

-- A variant (at a location, or anywhere when location_id is NULL) crossing from unavailable to
-- available. `excluded` restocks are recorded but start no release.
CREATE TABLE restocks (
    tenant_id   text        NOT NULL,
    restock_id  uuid        NOT NULL,
    variant_id  text        NOT NULL,
    product_id  text,
    location_id text,
    available   bigint      NOT NULL,
    excluded    boolean     NOT NULL DEFAULT false,
    started_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, restock_id)
);
CREATE INDEX restocks_by_variant ON restocks (tenant_id, variant_id, started_at DESC);

-- Merchandising exclusions made through the API (tenant policy can list more).
CREATE TABLE exclusions (
    tenant_id    text        NOT NULL,
    exclusion_id uuid        NOT NULL,
    product_id   text,
    variant_id   text,
    reason       text        NOT NULL,
    creator      text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, exclusion_id),
    CHECK ((product_id IS NULL) <> (variant_id IS NULL))
);
-- At most one live exclusion per target; a lapsed one is marked deleted when replaced.
CREATE UNIQUE INDEX exclusions_one_live_per_target
    ON exclusions (tenant_id, COALESCE(product_id, ''), COALESCE(variant_id, ''))
    WHERE deleted_at IS NULL;
CREATE INDEX exclusions_list_page ON exclusions (tenant_id, created_at DESC, exclusion_id);

-- Waiting subscriptions of a product (product-level alerts are served by its variants).
CREATE INDEX subscriptions_product_waitlist
    ON subscriptions (tenant_id, product_id, priority_tier DESC, seq)
    WHERE status IN ('pending_confirmation', 'active') AND variant_id IS NULL;
