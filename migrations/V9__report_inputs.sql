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

-- Signups of a period, by creation time, with what the signup figures read: an index-only
-- scan instead of a heap fetch per signup.
CREATE INDEX subscriptions_by_created ON subscriptions (tenant_id, created_at)
    INCLUDE (variant_id, confirmation_requested, confirmed_at);

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

-- The report figures of a settled release: one that has ended and whose every window (text,
-- click, opt-out, lift, sell-through) has closed, so its figures no longer change. Reports add
-- these up instead of reading the release's messages again; a report over 1,000,000 messages
-- then reads a row per settled release and only the open releases' messages.
CREATE TABLE release_figures (
    tenant_id    text        NOT NULL,
    release_id   uuid        NOT NULL,
    variant_id   text        NOT NULL,
    -- The release's restock, and the end of the latest window its figures depend on: a
    -- purchase of the variant recorded in between (even late, with a past time) changes them.
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    figures      jsonb       NOT NULL,
    computed_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, release_id)
);
CREATE INDEX release_figures_by_variant ON release_figures (tenant_id, variant_id, window_end);

-- Whatever changes a settled release's figures drops its row (a late delivery report, a late
-- click, a purchase recorded late), so a report never adds up stale figures; the janitor
-- computes it again. Each writer holds a shared advisory lock on (tenant, variant) until it
-- commits, and the janitor takes it exclusively before reading, so a row is never computed
-- from a snapshot that misses a write whose drop came before the row's insert.
CREATE FUNCTION release_figures_lock(tenant text, variant text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock_shared(hashtextextended(tenant || chr(31) || variant, 7465737409));
$$;

CREATE FUNCTION release_figures_stale_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM release_figures_lock(NEW.tenant_id, NEW.variant_id);
    DELETE FROM release_figures WHERE tenant_id = NEW.tenant_id AND release_id = NEW.release_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER release_figures_stale_message
    AFTER UPDATE ON messages
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        OR OLD.first_click_at IS DISTINCT FROM NEW.first_click_at
        OR OLD.last_error_code IS DISTINCT FROM NEW.last_error_code)
    EXECUTE FUNCTION release_figures_stale_message();

CREATE FUNCTION release_figures_stale_click() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    m record;
BEGIN
    SELECT release_id, variant_id INTO m FROM messages
    WHERE tenant_id = NEW.tenant_id AND message_id = NEW.message_id;
    IF FOUND THEN
        PERFORM release_figures_lock(NEW.tenant_id, m.variant_id);
        DELETE FROM release_figures WHERE tenant_id = NEW.tenant_id AND release_id = m.release_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER release_figures_stale_click
    AFTER INSERT ON clicks
    FOR EACH ROW EXECUTE FUNCTION release_figures_stale_click();

CREATE FUNCTION release_figures_stale_purchase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM release_figures_lock(NEW.tenant_id, NEW.variant_id);
    DELETE FROM release_figures
    WHERE tenant_id = NEW.tenant_id
      AND (release_id = NEW.release_id
        OR (variant_id = NEW.variant_id AND window_end > NEW.purchased_at
            AND window_start <= NEW.purchased_at));
    RETURN NULL;
END
$$;
CREATE TRIGGER release_figures_stale_purchase
    AFTER INSERT OR UPDATE ON purchase_lines
    FOR EACH ROW EXECUTE FUNCTION release_figures_stale_purchase();
