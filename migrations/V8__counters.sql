-- Counters kept in the transactions that change what they count, so hot reads are O(1): the
-- place in line of a new subscription, and a release's message tallies. Keyed by tenant first,
-- like every table (see V1).

-- Live subscriptions (pending confirmation, active, notified) per waitlist and priority tier.
-- Kept by statement triggers on `subscriptions`, whatever statement changes a status, so no
-- code path can forget them. A subscription past its expiry is still counted here until a
-- status says so; `waitlist_place` takes those off through `subscriptions_lapsing`.
CREATE TABLE waitlist_counts (
    tenant_id     text    NOT NULL,
    target_key    text    NOT NULL,
    priority_tier integer NOT NULL,
    live          bigint  NOT NULL,
    PRIMARY KEY (tenant_id, target_key, priority_tier)
);

-- One function for the three triggers: a statement's transition tables, summed per counter.
-- Rows are upserted in key order, so two statements never wait on each other's counters in
-- opposite orders.
CREATE FUNCTION waitlist_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO waitlist_counts AS w (tenant_id, target_key, priority_tier, live)
        SELECT n.tenant_id, n.target_key, n.priority_tier, count(*) FROM new_rows n
        WHERE n.status IN ('pending_confirmation', 'active', 'notified')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, target_key, priority_tier) DO UPDATE SET live = w.live + EXCLUDED.live;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO waitlist_counts AS w (tenant_id, target_key, priority_tier, live)
        SELECT x.tenant_id, x.target_key, x.priority_tier, sum(x.d) FROM (
            SELECT n.tenant_id, n.target_key, n.priority_tier, 1 AS d FROM new_rows n
            WHERE n.status IN ('pending_confirmation', 'active', 'notified')
            UNION ALL
            SELECT o.tenant_id, o.target_key, o.priority_tier, -1 FROM old_rows o
            WHERE o.status IN ('pending_confirmation', 'active', 'notified')) x
        GROUP BY 1, 2, 3 HAVING sum(x.d) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, target_key, priority_tier) DO UPDATE SET live = w.live + EXCLUDED.live;
    ELSE
        INSERT INTO waitlist_counts AS w (tenant_id, target_key, priority_tier, live)
        SELECT o.tenant_id, o.target_key, o.priority_tier, -count(*) FROM old_rows o
        WHERE o.status IN ('pending_confirmation', 'active', 'notified')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, target_key, priority_tier) DO UPDATE SET live = w.live + EXCLUDED.live;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER waitlist_counts_on_insert AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION waitlist_counts_apply();
CREATE TRIGGER waitlist_counts_on_update AFTER UPDATE ON subscriptions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION waitlist_counts_apply();
CREATE TRIGGER waitlist_counts_on_delete AFTER DELETE ON subscriptions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION waitlist_counts_apply();

INSERT INTO waitlist_counts (tenant_id, target_key, priority_tier, live)
SELECT tenant_id, target_key, priority_tier, count(*) FROM subscriptions
WHERE status IN ('pending_confirmation', 'active', 'notified') GROUP BY 1, 2, 3;

-- Live subscriptions already past their expiry, per waitlist: what the counters still count.
-- Normally empty, so looking there costs one index probe.
CREATE INDEX subscriptions_lapsing ON subscriptions (tenant_id, target_key, expires_at)
    WHERE status IN ('pending_confirmation', 'active', 'notified');

-- The place in line of a subscription just added (tier `tier`, insertion order `seq`), from
-- the counters: everyone live in a higher tier or in its own (the counters include it), less
-- `later` subscriptions of its tier added after it in the same transaction, less those past
-- their expiry. 1-based; `waiting` is everyone live and unexpired.
CREATE FUNCTION waitlist_place(
    p_tenant text, p_target text, p_tier integer, p_seq bigint, p_later bigint, p_now timestamptz)
RETURNS TABLE (place bigint, waiting bigint)
-- A set-returning SQL function: Postgres inlines it into the calling query (no call overhead).
LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT c.through_tier - p_later - l.ahead, c.live - l.lapsed
    FROM (SELECT COALESCE(sum(w.live) FILTER (WHERE w.priority_tier >= p_tier), 0)::bigint AS through_tier,
                 COALESCE(sum(w.live), 0)::bigint AS live
          FROM waitlist_counts w WHERE w.tenant_id = p_tenant AND w.target_key = p_target) c,
         (SELECT count(*) FILTER (WHERE o.priority_tier > p_tier
                   OR (o.priority_tier = p_tier AND o.seq < p_seq)) AS ahead,
                 count(*) AS lapsed
          FROM subscriptions o WHERE o.tenant_id = p_tenant AND o.target_key = p_target
            AND o.status IN ('pending_confirmation', 'active', 'notified') AND o.expires_at <= p_now) l
$$;
-- Subscribe pays for every index of `subscriptions`. These served only filters of
-- ListSubscriptions, which pages through `subscriptions_list_page` and filters on the way.
DROP INDEX subscriptions_by_variant;
DROP INDEX subscriptions_by_product;
DROP INDEX subscriptions_by_customer;

-- Message tallies of releases, per (release, wave, status, reason): what GetRelease and
-- WatchRelease show and what completes a wave, without counting the outbox. A statement that
-- moves messages appends its net change to `release_tally_deltas` (insert only: concurrent
-- senders never wait on one another's counters); the scheduler folds the deltas into
-- `release_tallies` (`release_tallies_fold`). A reader sums both, so a release is always
-- read exactly, whatever the fold has reached. Wave 0 is "in no wave", reason '' "none".
CREATE TABLE release_tallies (
    tenant_id  text        NOT NULL,
    release_id uuid        NOT NULL,
    wave       integer     NOT NULL,
    status     text        NOT NULL,
    reason     text        NOT NULL,
    messages   bigint      NOT NULL,
    segments   bigint      NOT NULL,
    -- The latest change that brought a message into the tally.
    updated_at timestamptz,
    PRIMARY KEY (tenant_id, release_id, wave, status, reason)
);
CREATE TABLE release_tally_deltas (
    tenant_id  text        NOT NULL,
    release_id uuid        NOT NULL,
    wave       integer     NOT NULL,
    status     text        NOT NULL,
    reason     text        NOT NULL,
    messages   bigint      NOT NULL,
    segments   bigint      NOT NULL,
    updated_at timestamptz
);
CREATE INDEX release_tally_deltas_by_release ON release_tally_deltas (tenant_id, release_id);

CREATE FUNCTION release_tallies_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO release_tally_deltas
        SELECT n.tenant_id, n.release_id, COALESCE(n.wave, 0), n.status, COALESCE(n.reason, ''),
               count(*), sum(n.segments), max(n.updated_at)
        FROM new_rows n GROUP BY 1, 2, 3, 4, 5;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO release_tally_deltas
        SELECT x.tenant_id, x.release_id, x.wave, x.status, x.reason, sum(x.d), sum(x.s), max(x.at)
        FROM (
            SELECT n.tenant_id, n.release_id, COALESCE(n.wave, 0) AS wave, n.status,
                   COALESCE(n.reason, '') AS reason, 1 AS d, n.segments AS s, n.updated_at AS at
            FROM new_rows n
            UNION ALL
            SELECT o.tenant_id, o.release_id, COALESCE(o.wave, 0), o.status, COALESCE(o.reason, ''),
                   -1, -o.segments, NULL
            FROM old_rows o) x
        GROUP BY 1, 2, 3, 4, 5 HAVING sum(x.d) <> 0 OR sum(x.s) <> 0;
    ELSE
        INSERT INTO release_tally_deltas
        SELECT o.tenant_id, o.release_id, COALESCE(o.wave, 0), o.status, COALESCE(o.reason, ''),
               -count(*), -sum(o.segments), NULL
        FROM old_rows o GROUP BY 1, 2, 3, 4, 5;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER release_tallies_on_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION release_tallies_apply();
CREATE TRIGGER release_tallies_on_update AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION release_tallies_apply();
CREATE TRIGGER release_tallies_on_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION release_tallies_apply();

-- Moves the deltas committed so far into the tallies, in one statement (a delta is either
-- still a delta or already folded, never both). Concurrent folds each take the rows they
-- deleted; tallies are upserted in key order.
CREATE FUNCTION release_tallies_fold() RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM release_tally_deltas RETURNING *),
    f AS (
        INSERT INTO release_tallies AS t
        SELECT tenant_id, release_id, wave, status, reason, sum(messages), sum(segments), max(updated_at)
        FROM d GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, release_id, wave, status, reason) DO UPDATE
        SET messages = t.messages + EXCLUDED.messages, segments = t.segments + EXCLUDED.segments,
            updated_at = GREATEST(t.updated_at, EXCLUDED.updated_at)
        RETURNING 1)
    SELECT count(*) FROM f
$$;

INSERT INTO release_tallies
SELECT tenant_id, release_id, COALESCE(wave, 0), status, COALESCE(reason, ''), count(*),
       sum(segments), max(updated_at)
FROM messages GROUP BY 1, 2, 3, 4, 5;

-- Whether a wave or a release still has messages to send is read from the tallies now; every
-- message paid for this index twice (planned, then sending).
DROP INDEX messages_open;

-- Where the planning of a release got to: its messages are written in committed chunks, and
-- this row, written with each chunk, says after which subscription (in plan order: tier
-- descending, then seq) planning goes on if it is cut short. Deleted when planning ends.
CREATE TABLE release_plans (
    tenant_id  text        NOT NULL,
    release_id uuid        NOT NULL,
    after_tier integer     NOT NULL,
    after_seq  bigint      NOT NULL,
    -- The last plan position given, and the tallies of the decisions so far.
    position   integer     NOT NULL,
    texts      integer     NOT NULL,
    held_out   integer     NOT NULL,
    skipped    integer     NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, release_id)
);
