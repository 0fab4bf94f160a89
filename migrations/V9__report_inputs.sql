-- Report inputs: product-page views from the storefront, the double opt-in asked and answered
-- on each subscription, and the channel of each purchase. Keyed by tenant first (see V1).

-- Product-page views per day as the storefront counts them: aggregate only, no shopper in it.
-- One row per (tenant, target, day, source); a second report of the same key replaces the
-- first (the storefront re-sends a corrected day).
CREATE TABLE product_views (
    tenant_id   text        NOT NULL,
    -- 'v:' || variant_id or 'p:' || product_id: a variant's page, or a product page with no
    -- variant chosen.
    target_key  text        NOT NULL,
    variant_id  text,
    product_id  text,
    -- The calendar day in the tenant's time zone.
    day         date        NOT NULL,
    -- Where the views were counted (for example "web", "app"), so two storefronts of one
    -- brand do not overwrite each other.
    source      text        NOT NULL,
    view_count  bigint      NOT NULL CHECK (view_count >= 0),
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, target_key, day, source),
    CHECK ((variant_id IS NULL) <> (product_id IS NULL))
);
-- Period reports read a tenant's days.
CREATE INDEX product_views_by_day ON product_views (tenant_id, day);

-- Whether a subscription was created waiting for a double opt-in confirmation, and when it was
-- confirmed: the consent confirmation rate. Kept by triggers rather than by each writer, so
-- every path that creates or confirms a subscription (single and batched) records them. The
-- WHEN clauses keep the triggers off the common path (a subscription created active).
ALTER TABLE subscriptions
    ADD COLUMN confirmation_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN confirmed_at timestamptz;

CREATE FUNCTION subscriptions_confirmation_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.confirmation_requested := true;
    RETURN NEW;
END
$$;
CREATE TRIGGER subscriptions_confirmation_requested
    BEFORE INSERT ON subscriptions
    FOR EACH ROW WHEN (NEW.status = 'pending_confirmation')
    EXECUTE FUNCTION subscriptions_confirmation_requested();

CREATE FUNCTION subscriptions_confirmed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.confirmed_at := NEW.updated_at;
    RETURN NEW;
END
$$;
CREATE TRIGGER subscriptions_confirmed
    BEFORE UPDATE ON subscriptions
    FOR EACH ROW WHEN (OLD.status = 'pending_confirmation' AND NEW.status = 'active')
    EXECUTE FUNCTION subscriptions_confirmed();

-- Signups of a period, by creation time.
CREATE INDEX subscriptions_by_created ON subscriptions (tenant_id, created_at);

-- Where an order was placed. 'sms_link' means through a text's tracked link: last-click
-- revenue. Copied onto the lines, like the buyer, so reports read one table.
ALTER TABLE purchases
    ADD COLUMN channel text NOT NULL DEFAULT 'unknown'
        CHECK (channel IN ('sms_link', 'web', 'store', 'app', 'unknown'));
ALTER TABLE purchase_lines
    ADD COLUMN channel text NOT NULL DEFAULT 'unknown'
        CHECK (channel IN ('sms_link', 'web', 'store', 'app', 'unknown'));

-- Sell-through: what a variant sold in the day after each of its restocks.
CREATE INDEX purchase_lines_by_variant ON purchase_lines (tenant_id, variant_id, purchased_at);
