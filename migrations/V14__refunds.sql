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
