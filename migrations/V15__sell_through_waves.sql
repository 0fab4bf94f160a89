-- Sell-through waves: a first share of the list, then waves sized from the live stock that
-- open once the previous wave's demand is absorbed (its recipients bought, or the stock fell
-- by, a share of its texts) or when their interval passes.
ALTER TABLE releases DROP CONSTRAINT releases_strategy_check;
ALTER TABLE releases ADD CONSTRAINT releases_strategy_check
    CHECK (strategy IN ('immediate', 'staged', 'proportional', 'sell_through'));
ALTER TABLE releases
    ADD COLUMN first_wave_share_bps integer CHECK (first_wave_share_bps BETWEEN 1 AND 10000),
    ADD COLUMN absorbed_share_bps   integer CHECK (absorbed_share_bps BETWEEN 1 AND 10000);

-- What opened a wave: its schedule, or its predecessor's absorbed demand.
ALTER TABLE release_waves
    ADD COLUMN opened_by text CHECK (opened_by IN ('schedule', 'sell_through'));
