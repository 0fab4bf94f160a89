-- Refunds: negative revenue credited to what the refunded line was credited to. Kept apart
-- from purchase_lines, which purchase suppression, the lift and sell-through read as
-- purchases: a refund is none of those. The refund's own id is idempotent through `purchases`
-- (its row there names the order refunded). Keyed by tenant first (see V1).

ALTER TABLE purchases ADD COLUMN refunded_order_id text;

CREATE TABLE refund_lines (
    tenant_id          text        NOT NULL,
    -- The refund's own id (its `purchases` row).
    refund_id          text        NOT NULL,
    line_number        integer     NOT NULL,
    -- The order and line refunded.
    order_id           text        NOT NULL,
    order_line_number  integer     NOT NULL,
    variant_id         text        NOT NULL,
    -- Units returned; 0 for money paid back without a return (a price adjustment).
    quantity           integer     NOT NULL CHECK (quantity >= 0),
    -- Paid back, positive; reports subtract it.
    amount_minor       bigint      NOT NULL CHECK (amount_minor > 0),
    currency           text        NOT NULL,
    refunded_at        timestamptz NOT NULL,
    -- Copied from the refunded line, so reports read one table.
    basis              text        NOT NULL CHECK (basis IN ('none', 'text', 'click', 'holdout')),
    message_id         uuid,
    release_id         uuid,
    channel            text        NOT NULL,
    recorded_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, refund_id, line_number)
);
-- Reports read a release's refunds; a refund reads what its line already had refunded.
CREATE INDEX refund_lines_by_release ON refund_lines (tenant_id, release_id) WHERE release_id IS NOT NULL;
CREATE INDEX refund_lines_by_order_line ON refund_lines (tenant_id, order_id, order_line_number);

-- A refund changes its release's figures: drop them from the cache (see V9).
CREATE FUNCTION release_figures_stale_refund() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM release_figures_lock(NEW.tenant_id, NEW.variant_id);
    DELETE FROM release_figures WHERE tenant_id = NEW.tenant_id AND release_id = NEW.release_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER release_figures_stale_refund
    AFTER INSERT ON refund_lines
    FOR EACH ROW WHEN (NEW.release_id IS NOT NULL)
    EXECUTE FUNCTION release_figures_stale_refund();

-- Signup figures from counts kept on write, not a pass over every subscription of a period: a
-- period report of a tenant with a million signups read them all (3.3 s of its 5 s). Counts
-- per (tenant, variant, quarter hour of creation): every time zone's offset is a whole number
-- of quarter hours, so a quarter hour lies within one local day of any zone, and a report adds
-- the quarters of its days up. '' stands for product-level signups (no variant). Kept by
-- triggers, like waitlist_counts (V8): every statement that writes both takes signup_counts
-- first (its insert trigger's name sorts first; a row trigger fires before V8's statement
-- triggers), rows in key order, so no two statements wait on each other in opposite orders.
-- Nothing deletes subscriptions (erasure rewrites them): inserts and confirmations are all
-- there is to count.
CREATE TABLE signup_counts (
    tenant_id              text        NOT NULL,
    variant_id             text        NOT NULL,
    quarter                timestamptz NOT NULL,
    signups                bigint      NOT NULL,
    confirmation_requested bigint      NOT NULL,
    confirmed              bigint      NOT NULL,
    PRIMARY KEY (tenant_id, variant_id, quarter)
);

CREATE FUNCTION signup_quarter(at timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT date_bin(interval '15 minutes', at, timestamptz '2000-01-01 00:00:00+00');
$$;

CREATE FUNCTION signup_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO signup_counts AS c (tenant_id, variant_id, quarter, signups, confirmation_requested, confirmed)
    SELECT n.tenant_id, COALESCE(n.variant_id, ''), signup_quarter(n.created_at), count(*),
        count(*) FILTER (WHERE n.confirmation_requested), count(n.confirmed_at)
    FROM new_rows n GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, variant_id, quarter) DO UPDATE SET
        signups = c.signups + EXCLUDED.signups,
        confirmation_requested = c.confirmation_requested + EXCLUDED.confirmation_requested,
        confirmed = c.confirmed + EXCLUDED.confirmed;
    RETURN NULL;
END
$$;
CREATE TRIGGER subscriptions_signup_counts_insert
    AFTER INSERT ON subscriptions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION signup_counts_insert();

-- A confirmation (or, by a repair, its removal): only rows whose confirmed_at changes fire.
CREATE FUNCTION signup_counts_confirmed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO signup_counts AS c (tenant_id, variant_id, quarter, signups, confirmation_requested, confirmed)
    VALUES (NEW.tenant_id, COALESCE(NEW.variant_id, ''), signup_quarter(NEW.created_at), 0, 0,
        CASE WHEN NEW.confirmed_at IS NULL THEN -1 ELSE 1 END)
    ON CONFLICT (tenant_id, variant_id, quarter) DO UPDATE SET confirmed = c.confirmed + EXCLUDED.confirmed;
    RETURN NULL;
END
$$;
CREATE TRIGGER subscriptions_signup_counts_confirmed
    AFTER UPDATE ON subscriptions
    FOR EACH ROW WHEN ((OLD.confirmed_at IS NULL) <> (NEW.confirmed_at IS NULL))
    EXECUTE FUNCTION signup_counts_confirmed();

INSERT INTO signup_counts (tenant_id, variant_id, quarter, signups, confirmation_requested, confirmed)
SELECT tenant_id, COALESCE(variant_id, ''), signup_quarter(created_at), count(*),
    count(*) FILTER (WHERE confirmation_requested), count(confirmed_at)
FROM subscriptions GROUP BY 1, 2, 3;

-- The median time to confirm reads the confirmed double opt-ins alone.
CREATE INDEX subscriptions_confirmed_by_created ON subscriptions (tenant_id, created_at)
    INCLUDE (variant_id, confirmed_at) WHERE confirmation_requested AND confirmed_at IS NOT NULL;
