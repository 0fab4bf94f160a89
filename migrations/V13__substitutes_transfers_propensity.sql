-- Close substitutes, waitlist transfers and propensity scores. Keyed by tenant first (see V1);
-- no foreign keys (see DESIGN, Citus).

-- A group of variants and products a shopper treats as one another's substitutes: buying any
-- member suppresses restock texts about the others (within the purchase-suppression window).
-- `source` says who owns the group: the API (SetSubstituteGroup) or the tenant's configuration,
-- which is written here at start so one query serves both.
CREATE TABLE substitute_groups (
    tenant_id  text        NOT NULL,
    group_id   text        NOT NULL,
    source     text        NOT NULL CHECK (source IN ('api', 'config')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, group_id)
);
CREATE INDEX substitute_groups_list_page ON substitute_groups (tenant_id, group_id);

-- One row per member: `member_key` is `v:<variant>` or `p:<product>`, as subscriptions' target
-- keys are.
CREATE TABLE substitute_members (
    tenant_id  text NOT NULL,
    group_id   text NOT NULL,
    member_key text NOT NULL,
    variant_id text,
    product_id text,
    PRIMARY KEY (tenant_id, group_id, member_key),
    CHECK ((variant_id IS NULL) <> (product_id IS NULL))
);
-- The groups a variant or product belongs to.
CREATE INDEX substitute_members_by_member ON substitute_members (tenant_id, member_key);

-- The variants whose purchase suppresses restock texts about `p_variant`: every variant of
-- every other member of its groups (a product member stands for its known variants), never
-- the variant itself nor a member through which it belongs to the group. Empty when it belongs
-- to none, which is the common case and one index probe.
CREATE FUNCTION substitute_variants(p_tenant text, p_variant text) RETURNS text[]
LANGUAGE sql STABLE AS $$
    WITH mine AS (
        SELECT m.group_id, m.member_key FROM substitute_members m
        WHERE m.tenant_id = p_tenant AND m.member_key IN (
            'v:' || p_variant,
            'p:' || (SELECT v.product_id FROM variants v
                     WHERE v.tenant_id = p_tenant AND v.variant_id = p_variant)))
    SELECT COALESCE(array_agg(DISTINCT x.variant_id ORDER BY x.variant_id), '{}') FROM (
        SELECT o.variant_id FROM mine
        JOIN substitute_members o ON o.tenant_id = p_tenant AND o.group_id = mine.group_id
        WHERE o.variant_id IS NOT NULL AND o.member_key NOT IN (SELECT member_key FROM mine)
        UNION ALL
        SELECT v.variant_id FROM mine
        JOIN substitute_members o ON o.tenant_id = p_tenant AND o.group_id = mine.group_id
        JOIN variants v ON v.tenant_id = p_tenant AND v.product_id = o.product_id
        WHERE o.product_id IS NOT NULL AND o.member_key NOT IN (SELECT member_key FROM mine)
    ) x WHERE x.variant_id <> p_variant
$$;

-- A caller's (a model service's) estimate, 0 to 1, that the subscriber buys when texted.
-- NULL: no score; such subscriptions come after scored ones of their tier under
-- `release_order = tier_score_arrival`.
ALTER TABLE subscriptions ADD COLUMN propensity_score real
    CHECK (propensity_score IS NULL OR (propensity_score >= 0 AND propensity_score <= 1));

-- Planning by score (`release_order = tier_score_arrival`): a tier's scored subscriptions by
-- score, then arrival. Only scored rows are in these indexes, so Subscribe (which writes no
-- score) does not pay for them; the unscored part of a tier is read along
-- `subscriptions_waitlist_order` and `subscriptions_product_waitlist`. They cover what the
-- keyset reads (an index-only scan in order): without `subscription_id` the planner prefers a
-- bitmap of every row below the cursor and a sort, per chunk, which is quadratic.
CREATE INDEX subscriptions_scored_order
    ON subscriptions (tenant_id, target_key, priority_tier DESC, propensity_score DESC, seq)
    INCLUDE (subscription_id)
    WHERE status IN ('pending_confirmation', 'active', 'notified') AND propensity_score IS NOT NULL;
CREATE INDEX subscriptions_scored_product_order
    ON subscriptions (tenant_id, product_id, priority_tier DESC, propensity_score DESC, seq)
    INCLUDE (subscription_id)
    WHERE status IN ('pending_confirmation', 'active', 'notified') AND variant_id IS NULL
      AND propensity_score IS NOT NULL;
-- Where an interrupted planning by score got to within its tier: the score of the last
-- subscription planned, or -1 in the tier's unscored part.
ALTER TABLE release_plans ADD COLUMN after_score real NOT NULL DEFAULT -1;
