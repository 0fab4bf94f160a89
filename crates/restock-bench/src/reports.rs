//! The report figures: a tenant with 1,000,000 messages (200 releases of 5,000 over 100 days,
//! with clicks, purchases, opt-outs and delivery failures in realistic shares), seeded in SQL,
//! then the period report, one release's report and the period's daily breakdown timed through
//! the store, as the server runs them: once cold (every figure read from the messages), then
//! after the janitor has cached the settled releases' figures. The raw limit is one plain scan
//! of the tenant's messages.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use restock_domain::TenantPolicy;
use restock_store::reports::Scope;
use restock_store::Store;
use tokio_postgres::NoTls;

/// Releases, and messages in each: 1,000,000 messages.
pub const RELEASES: i64 = 200;
pub const PER_RELEASE: i64 = 5_000;
/// Timed runs of each report; the median is the figure.
const RUNS: usize = 3;

/// The seed, in plain set-based SQL. `$1` is the first restock's time; releases are half a day
/// apart. Shares are drawn from a hash of the row number, so every run seeds the same data.
const SEED: &[&str] = &[
    "INSERT INTO contacts (tenant_id, contact_id, phone_e164, created_at) \
     SELECT 'demo', md5('c' || g)::uuid, '+1415' || lpad(g::text, 7, '0'), $1::timestamptz \
     FROM generate_series(0, 249999) g",
    "INSERT INTO releases (tenant_id, release_id, restock_id, variant_id, location_id, strategy, holdout_bps, state, \
       available_at_restock, available_now, created_at, started_at, ended_at, updated_at) \
     SELECT 'demo', md5('r' || r)::uuid, md5('k' || r)::uuid, 'v-' || (r % 50), 'loc-1', 'immediate', 500, 'completed', \
       100, 0, $1::timestamptz + r * interval '12 hours', $1::timestamptz + r * interval '12 hours', \
       $1::timestamptz + r * interval '12 hours' + interval '1 hour', $1::timestamptz + r * interval '12 hours' \
     FROM generate_series(0, 199) r",
    "INSERT INTO subscriptions (tenant_id, subscription_id, contact_id, target_key, variant_id, customer_id, status, \
       created_at, updated_at, expires_at) \
     SELECT 'demo', md5('s' || r || '-' || g)::uuid, md5('c' || ((r * 5000 + g) % 250000))::uuid, \
       'v:v-' || (r % 50), 'v-' || (r % 50), CASE WHEN g % 3 = 0 THEN 'cust-' || ((r * 5000 + g) % 250000) END, \
       'expired', $1::timestamptz + r * interval '12 hours' - interval '3 days', \
       $1::timestamptz + r * interval '12 hours', $1::timestamptz + interval '400 days' \
     FROM generate_series(0, 199) r, generate_series(0, 4999) g",
    // 5% held out; of the texted, 3% undelivered (a third filtered), 2% failed, the rest sent or
    // delivered.
    "INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, variant_id, kind, position, \
       wave, status, segments, last_error_code, link_token, created_at, sent_at, report_at, first_click_at, updated_at) \
     SELECT 'demo', md5('m' || r || '-' || g)::uuid, md5('r' || r)::uuid, md5('s' || r || '-' || g)::uuid, \
       md5('c' || ((r * 5000 + g) % 250000))::uuid, 'v-' || (r % 50), 'first', \
       CASE WHEN h >= 50 THEN g END, CASE WHEN h >= 50 THEN 1 END, \
       CASE WHEN h < 50 THEN 'held_out' WHEN h < 80 THEN 'undelivered' WHEN h < 100 THEN 'failed' \
            WHEN h < 200 THEN 'sent' ELSE 'delivered' END, \
       CASE WHEN h >= 50 THEN 1 + (h % 2) ELSE 0 END, \
       CASE WHEN h >= 50 AND h < 60 THEN '30007' WHEN h >= 60 AND h < 100 THEN '30003' END, \
       md5('t' || r || '-' || g), t, CASE WHEN h >= 50 AND (h < 80 OR h >= 100) THEN t + g * interval '10 ms' END, \
       CASE WHEN h >= 200 OR (h >= 50 AND h < 80) THEN t + interval '1 minute' END, \
       CASE WHEN h >= 100 AND (h % 17) = 0 THEN t + interval '20 minutes' END, t \
     FROM generate_series(0, 199) r, generate_series(0, 4999) g, \
       LATERAL (SELECT abs(hashtext(r || '-' || g)) % 1000 AS h, $1::timestamptz + r * interval '12 hours' AS t) x",
    "INSERT INTO clicks (tenant_id, click_id, message_id, clicked_at) \
     SELECT m.tenant_id, md5('k' || m.message_id::text || n)::uuid, m.message_id, m.first_click_at + n * interval '1 minute' \
     FROM messages m, generate_series(0, 1) n WHERE m.first_click_at IS NOT NULL AND (n = 0 OR m.segments = 2)",
    // Purchases: a fifth of the clickers buy through the link, 1.5% of the other texted and 1%
    // of the held out buy within the day; a tenth of the buyers pay in EUR.
    "WITH b AS ( \
       SELECT m.*, s.customer_id, abs(hashtext('p' || m.message_id::text)) % 1000 AS h FROM messages m \
       JOIN subscriptions s ON s.tenant_id = m.tenant_id AND s.subscription_id = m.subscription_id), \
     buyers AS ( \
       SELECT * FROM b WHERE (first_click_at IS NOT NULL AND h < 200) \
         OR (status <> 'held_out' AND first_click_at IS NULL AND sent_at IS NOT NULL AND h < 15) \
         OR (status = 'held_out' AND h < 10)), \
     o AS (INSERT INTO purchases (tenant_id, order_id, request_hash, customer_id, contact_id, purchased_at, recorded_at, channel) \
       SELECT tenant_id, 'o-' || message_id, '\\x00', customer_id, contact_id, created_at + interval '2 hours', \
         created_at + interval '2 hours', CASE WHEN first_click_at IS NOT NULL THEN 'sms_link' ELSE 'web' END FROM buyers) \
     INSERT INTO purchase_lines (tenant_id, order_id, line_number, variant_id, quantity, total_minor, currency, customer_id, \
       contact_id, purchased_at, basis, message_id, release_id, subscription_id, channel) \
     SELECT tenant_id, 'o-' || message_id, 1, variant_id, 1 + h % 2, 2000 + h * 10, CASE WHEN h % 10 = 0 THEN 'EUR' ELSE 'USD' END, \
       customer_id, contact_id, created_at + interval '2 hours', \
       CASE WHEN status = 'held_out' THEN 'holdout' WHEN first_click_at IS NOT NULL THEN 'click' ELSE 'text' END, \
       message_id, release_id, subscription_id, CASE WHEN first_click_at IS NOT NULL THEN 'sms_link' ELSE 'web' END \
     FROM buyers",
    // 0.4% of the texted phones reply STOP an hour after a text.
    "INSERT INTO consent_events (tenant_id, contact_id, event_id, kind, source, occurred_at, recorded_at) \
     SELECT m.tenant_id, m.contact_id, md5('e' || m.message_id::text)::uuid, 'opt_out', 'sms', \
       m.sent_at + interval '1 hour', m.sent_at + interval '1 hour' \
     FROM messages m WHERE m.sent_at IS NOT NULL AND abs(hashtext('o' || m.message_id::text)) % 1000 < 4",
    // As autovacuum leaves a table at rest: statistics, and the visibility map that lets the
    // signup figures scan their index alone.
    "VACUUM ANALYZE",
];

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// What the reports section measured.
#[derive(Debug, serde::Serialize)]
pub struct ReportTimes {
    pub messages: i64,
    pub seed_seconds: f64,
    pub raw_scan_ms: f64,
    pub cold_period_report_ms: f64,
    pub settle_seconds: f64,
    pub period_report_ms: f64,
    pub release_report_ms: f64,
    pub daily_breakdown_ms: f64,
}

/// Seeds `url` (a fresh database) and times the reports on it.
pub async fn measure(url: &str) -> anyhow::Result<ReportTimes> {
    restock_store::migrate::run(url).await?;
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    let t0 = Utc.with_ymd_and_hms(2026, 1, 5, 15, 0, 0).unwrap();
    // Enough memory for the seed's joins not to spill a gigabyte to disk.
    client.execute("SET work_mem = '256MB'", &[]).await?;
    let started = Instant::now();
    for sql in SEED {
        let p: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            if sql.contains("$1") { &[&t0] } else { &[] };
        client.execute(*sql, p).await?;
    }
    let seed_seconds = started.elapsed().as_secs_f64();
    let messages: i64 = client
        .query_one("SELECT count(*) FROM messages", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        messages == RELEASES * PER_RELEASE,
        "seeded {messages} messages"
    );

    let store = Store::connect(url, 4)?;
    let policy = TenantPolicy {
        time_zone: "America/New_York".into(),
        ..TenantPolicy::default()
    };
    let windows = restock::reporting::windows(&policy);
    let (from, before) = (
        t0 - chrono::Duration::days(1),
        t0 + chrono::Duration::days(101),
    );
    // Before any release settled: every figure read from the messages.
    let s = Instant::now();
    let cold = store
        .report_figures("demo", &Scope::Period { from, before }, windows.clone())
        .await?;
    let cold_period = s.elapsed();
    // The janitor's work, once: every release has ended and its windows closed by then.
    let s = Instant::now();
    let settled =
        restock::reporting::settle(&store, "demo", &policy, before + chrono::Duration::days(30))
            .await?;
    let settle_seconds = s.elapsed().as_secs_f64();
    anyhow::ensure!(settled == RELEASES as usize, "settled {settled} releases");
    let mut raw = Vec::new();
    let mut period = Vec::new();
    let mut release = Vec::new();
    let mut daily = Vec::new();
    let one: uuid::Uuid = client
        .query_one(
            "SELECT release_id FROM releases ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    for _ in 0..RUNS {
        let s = Instant::now();
        client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE status = 'delivered') FROM messages WHERE tenant_id = 'demo'",
                &[],
            )
            .await?;
        raw.push(s.elapsed());
        let s = Instant::now();
        let f = store
            .report_figures("demo", &Scope::Period { from, before }, windows.clone())
            .await?;
        period.push(s.elapsed());
        if f != cold {
            let strip = |f: &restock_store::reports::Figures| {
                let mut f = f.clone();
                f.times_to_purchase.clear();
                f
            };
            anyhow::bail!(
                "the cached figures differ from the live ones:\n{:?}\n{:?}\n(times to purchase equal: {})",
                strip(&f),
                strip(&cold),
                f.times_to_purchase == cold.times_to_purchase
            );
        }
        let s = Instant::now();
        store
            .report_figures("demo", &Scope::Release(one), windows.clone())
            .await?;
        release.push(s.elapsed());
        let s = Instant::now();
        store
            .daily_figures("demo", from, before, &windows.time_zone)
            .await?;
        daily.push(s.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    Ok(ReportTimes {
        messages,
        seed_seconds,
        raw_scan_ms: ms(median(raw)),
        cold_period_report_ms: ms(cold_period),
        settle_seconds,
        period_report_ms: ms(median(period)),
        release_report_ms: ms(median(release)),
        daily_breakdown_ms: ms(median(daily)),
    })
}
