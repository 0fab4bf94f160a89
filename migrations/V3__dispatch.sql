-- Dispatch: releases (the plan of a restock), their waves, the outbox of messages, and clicks.
-- Keyed by tenant first, like every table (see V1).

-- One release per restock. Created in the restock's own transaction (state 'planning'), so a
-- restock never goes unannounced and two replicas never plan it twice.
CREATE TABLE releases (
    tenant_id            text        NOT NULL,
    release_id           uuid        NOT NULL,
    restock_id           uuid        NOT NULL,
    variant_id           text        NOT NULL,
    product_id           text,
    location_id          text,
    -- Set when planned, from the tenant's policy at that moment.
    strategy             text        CHECK (strategy IN ('immediate', 'staged', 'proportional')),
    stage_shares_bps     integer[]   NOT NULL DEFAULT '{}',
    wave_interval_ms     bigint      NOT NULL DEFAULT 0,
    oversubscription     double precision,
    holdout_bps          integer     NOT NULL DEFAULT 0,
    state                text        NOT NULL CHECK (state IN ('planning', 'sending', 'paused', 'sold_out', 'completed', 'cancelled')),
    state_reason         text        NOT NULL DEFAULT '',
    available_at_restock bigint      NOT NULL,
    -- The latest live stock read (at the restock, then before every wave); what send-time
    -- eligibility checks the stock rule against.
    available_now        bigint      NOT NULL,
    -- Texts in the plan are numbered 1..plan_size in send order (tier, then waitlist order);
    -- waves open ranges of them. next_position is the first not yet in an open wave.
    plan_size            integer     NOT NULL DEFAULT 0,
    next_position        integer     NOT NULL DEFAULT 1,
    next_wave            integer     NOT NULL DEFAULT 1,
    -- When the next wave is due; NULL when none is (all opened, or ended).
    next_wave_at         timestamptz,
    created_at           timestamptz NOT NULL,
    started_at           timestamptz,
    ended_at             timestamptz,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, release_id)
);
CREATE UNIQUE INDEX releases_one_per_restock ON releases (tenant_id, restock_id);
-- What the scheduler looks for: releases to plan, waves due, releases that may be complete.
CREATE INDEX releases_active ON releases (next_wave_at NULLS FIRST) WHERE state IN ('planning', 'sending');
CREATE INDEX releases_list_page ON releases (tenant_id, created_at DESC, release_id DESC);

CREATE TABLE release_waves (
    tenant_id        text        NOT NULL,
    release_id       uuid        NOT NULL,
    number           integer     NOT NULL,
    state            text        NOT NULL CHECK (state IN ('pending', 'waiting', 'sending', 'done', 'cancelled')),
    share_bps        integer     NOT NULL DEFAULT 0,
    first_position   integer,
    last_position    integer,
    scheduled_at     timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    available_before bigint,
    PRIMARY KEY (tenant_id, release_id, number)
);

-- The outbox: one row per recipient of a release (and per reminder). A message moves
-- planned/deferred -> sending (under a lease) -> an outcome; the lease and the unique index
-- below are what make every text go out at most once.
CREATE TABLE messages (
    tenant_id              text        NOT NULL,
    message_id             uuid        NOT NULL,
    release_id             uuid        NOT NULL,
    subscription_id        uuid        NOT NULL,
    contact_id             uuid        NOT NULL,
    variant_id             text        NOT NULL,
    kind                   text        NOT NULL CHECK (kind IN ('first', 'reminder')),
    -- Send order within the release; NULL for a message never to be sent (held out, skipped
    -- at planning).
    position               integer,
    -- The wave it was opened in; NULL until then. Only messages of an open wave are claimed.
    wave                   integer,
    status                 text        NOT NULL CHECK (status IN ('planned', 'held_out', 'deferred', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'suppressed', 'skipped', 'unknown')),
    reason                 text,
    -- Planned or deferred: when it may be claimed.
    due_at                 timestamptz,
    lease_until            timestamptz,
    lease_owner            text,
    attempts               integer     NOT NULL DEFAULT 0,
    -- When the last hand-over to the provider began; reconciliation asks from there.
    attempted_at           timestamptz,
    last_error_code        text,
    last_error_description text,
    last_error_permanent   boolean,
    last_error_at          timestamptz,
    -- Written before the hand-over, so a send whose outcome is lost can be found again.
    body                   text,
    segments               integer     NOT NULL DEFAULT 0,
    encoding               text,
    sender_id              text,
    provider_message_id    text,
    provider_status        text,
    -- The per-message short link: unguessable (128 random bits, base64url).
    link_token             text        NOT NULL,
    created_at             timestamptz NOT NULL,
    sent_at                timestamptz,
    report_at              timestamptz,
    first_click_at         timestamptz,
    updated_at             timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
-- One text per phone per restock (and one reminder), whatever the replicas or crashes do.
CREATE UNIQUE INDEX messages_one_per_phone ON messages (tenant_id, release_id, contact_id, kind);
CREATE UNIQUE INDEX messages_by_link ON messages (link_token);
-- The claim order: due first, then plan order.
CREATE INDEX messages_due ON messages (due_at, position)
    WHERE status IN ('planned', 'deferred') AND wave IS NOT NULL;
-- Messages still to go out, per wave: whether a wave or a release is done.
CREATE INDEX messages_open ON messages (tenant_id, release_id, wave)
    WHERE status IN ('planned', 'deferred', 'sending');
CREATE INDEX messages_leases ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_release_plan ON messages (tenant_id, release_id, position, message_id);
CREATE INDEX messages_by_provider_id ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;
-- The re-notify window: the latest text about a variant to a phone.
CREATE INDEX messages_last_text ON messages (tenant_id, contact_id, variant_id, sent_at DESC)
    WHERE sent_at IS NOT NULL;
CREATE INDEX messages_list_page ON messages (tenant_id, created_at DESC, message_id DESC);
CREATE INDEX messages_by_subscription ON messages (tenant_id, subscription_id);
-- ListMessages by phone, newest first.
CREATE INDEX messages_by_contact ON messages (tenant_id, contact_id, created_at DESC, message_id DESC);

CREATE TABLE clicks (
    tenant_id  text        NOT NULL,
    click_id   uuid        NOT NULL,
    message_id uuid        NOT NULL,
    clicked_at timestamptz NOT NULL,
    user_agent text,
    PRIMARY KEY (tenant_id, click_id)
);
CREATE INDEX clicks_by_message ON clicks (tenant_id, message_id, clicked_at);
