//! The dispatch figures: a restock of N waiting subscribers end to end (inventory event to the
//! last text a loopback Twilio receives, the server's peak memory), and the latency from an
//! inventory event to its first text. The server runs as a child process (`restock serve`), the
//! loopback Twilio in this process on a runtime of its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use restock::proto::v1 as pb;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use restock_sms::fake::FakeTwilio;
use tokio_postgres::NoTls;

use crate::server::ServerProcess;

/// Connections in the server's pool, and pgbench clients for the raw ceiling.
pub const SERVER_POOL: usize = 16;
/// How long a big restock may take before the bench gives up waiting for its last text.
pub const RESTOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Restocks in the latency run, and waiting subscribers of each.
pub const LATENCY_RESTOCKS: usize = 100;
const LATENCY_SUBSCRIBERS: usize = 20;
/// Between two restocks of the latency run, once the previous one's texts are all in.
const LATENCY_PAUSE: Duration = Duration::from_millis(50);
/// The first phone is +14152000000; phones count up from there (exchanges 200-209 of 415).
const FIRST_PHONE: u64 = 2_000_000;

/// The row work of one text as plain SQL on restock's own `messages` table, one statement per
/// phase of the engine: plan (insert, due in an open wave), claim (under a lease), record (sent).
pub const MESSAGE_SCRIPT: &str = "\\set n random(1, 1000000000)
INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, variant_id, kind, position, wave, status, due_at, body, segments, encoding, sender_id, link_token, created_at, updated_at) VALUES ('demo', gen_random_uuid(), '00000000-0000-0000-0000-000000000001', gen_random_uuid(), gen_random_uuid(), 'bulk-0', 'first', :n, 1, 'planned', now(), 'Demo Outfitters: Trail Runner 2 Moss / 9 is back in stock. http://127.0.0.1:8080/r/AAAAAAAAAAAAAAAAAAAAAA Reply STOP to opt out', 1, 'gsm7', '+15005550006', md5(:client_id || '-' || :n || '-' || random()), now(), now()) RETURNING message_id AS id \\gset
UPDATE messages SET status = 'sending', lease_owner = 'bench', lease_until = now() + interval '30 seconds', attempted_at = now(), updated_at = now() WHERE tenant_id = 'demo' AND message_id = :id;
UPDATE messages SET status = 'sent', provider_message_id = 'SM' || :n, provider_status = 'queued', segments = 1, sent_at = now(), attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE tenant_id = 'demo' AND message_id = :id AND status = 'sending' AND lease_owner = 'bench';
";

/// How long each pgbench run of the text row work lasts (short: the restocks take the time).
pub const PGBENCH_RUN: Duration = Duration::from_secs(5);

/// Texts per batch in [`MESSAGE_BATCH_SCRIPT`]: the engine's default claim batch.
pub const BATCH: usize = 500;

/// The same row work in batches of [`BATCH`], as the engine does it: plan a chunk in one
/// insert, claim a batch under leases (`FOR UPDATE SKIP LOCKED`), record its outcomes in one
/// update. One transaction of this script is [`BATCH`] texts.
pub const MESSAGE_BATCH_SCRIPT: &str = "\\set n random(1, 1000000000)
INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, variant_id, kind, position, wave, status, due_at, body, segments, encoding, sender_id, link_token, created_at, updated_at) SELECT 'demo', gen_random_uuid(), '00000000-0000-0000-0000-000000000001', gen_random_uuid(), gen_random_uuid(), 'bulk-0', 'first', g, 1, 'planned', now(), 'Demo Outfitters: Trail Runner 2 Moss / 9 is back in stock. http://127.0.0.1:8080/r/AAAAAAAAAAAAAAAAAAAAAA Reply STOP to opt out', 1, 'gsm7', '+15005550006', md5(:client_id || '-' || :n || '-' || g || random()), now(), now() FROM generate_series(1, 500) g;
WITH due AS (SELECT tenant_id, message_id FROM messages WHERE status IN ('planned', 'deferred') AND wave IS NOT NULL AND due_at <= now() ORDER BY due_at, position LIMIT 500 FOR UPDATE SKIP LOCKED) UPDATE messages m SET status = 'sending', lease_owner = 'bench-' || :client_id, lease_until = now() + interval '30 seconds', attempted_at = now(), updated_at = now() FROM due WHERE m.tenant_id = due.tenant_id AND m.message_id = due.message_id;
UPDATE messages SET status = 'sent', provider_message_id = 'SM' || message_id, provider_status = 'queued', segments = 1, sent_at = now(), attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE status = 'sending' AND lease_owner = 'bench-' || :client_id;
";

/// Sends of the provider floor (see `floors`), and how many at once.
pub const FLOOR_SENDS: usize = 20_000;
pub const FLOOR_SEND_CONCURRENCY: usize = 32;

/// Clients of [`MESSAGE_BATCH_SCRIPT`]: the engine's senders at the default concurrency.
pub const BATCH_CLIENTS: usize = 2;

/// The loopback Twilio's runtime: two threads of its own, so its answers do not wait behind the
/// bench's own tasks.
pub struct FakeRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl FakeRuntime {
    pub fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-twilio")
            .enable_all()
            .build()?;
        Ok(Self { rt: Some(rt) })
    }

    /// A fresh fake, served on this runtime.
    pub async fn twilio(&self) -> anyhow::Result<FakeTwilio> {
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        Ok(rt.spawn(FakeTwilio::start()).await??)
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        // Dropped from inside the bench's runtime, where a blocking shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// What every dispatch run needs.
pub struct Setup<'a> {
    /// `DATABASE_URL` of the private Postgres.
    pub db: &'a str,
    pub admin: &'a str,
    pub redis: &'a str,
    pub bin: &'a Path,
    pub fakes: &'a FakeRuntime,
    /// Prefix of this bench run's Redis keys and database names.
    pub run: &'a str,
    /// Where server logs go.
    pub out: &'a Path,
}

/// The n-th subscriber's phone: distinct valid US numbers.
pub fn phone(i: usize) -> String {
    format!("+1415{}", FIRST_PHONE + i as u64)
}

/// The subscriber index of a phone made by [`phone`].
fn index_of(phone: &str) -> Option<usize> {
    let n: u64 = phone.strip_prefix("+1415")?.parse().ok()?;
    n.checked_sub(FIRST_PHONE).map(|i| i as usize)
}

/// A fresh, migrated database named `name`; answers its URL.
async fn fresh_database(cx: &Setup<'_>, name: &str) -> anyhow::Result<String> {
    crate::recreate(cx.admin, name).await?;
    let url = crate::with_database(cx.db, name);
    restock_store::migrate::run(&url).await?;
    // Diagnosis: the plans of the server's slow statements, in the Postgres log (no
    // pg_stat_statements on the private Postgres).
    if let Ok(ms) = std::env::var("RESTOCK_BENCH_EXPLAIN_MS") {
        let ms: u64 = ms
            .parse()
            .context("RESTOCK_BENCH_EXPLAIN_MS: milliseconds")?;
        connect(cx.admin)
            .await?
            .batch_execute(&format!(
                "ALTER DATABASE \"{name}\" SET session_preload_libraries = 'auto_explain'; \
                 ALTER DATABASE \"{name}\" SET auto_explain.log_min_duration = {ms}; \
                 ALTER DATABASE \"{name}\" SET auto_explain.log_analyze = on;"
            ))
            .await?;
    }
    Ok(url)
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Inserts `n` opted-in, active subscribers of `tenant` in plain SQL, phones [`phone`]`(first)`
/// on: `per_variant` each on variants `{prefix}-0`, `{prefix}-1`... (contact, opt-in consent
/// event, subscription; the variants described). Answers how long it took.
async fn add_subscribers(
    url: &str,
    tenant: &str,
    prefix: &str,
    first: usize,
    n: usize,
    per_variant: usize,
) -> anyhow::Result<Duration> {
    for i in [first, first + n - 1] {
        restock_domain::Phone::parse(&phone(i), "")
            .map_err(|e| anyhow::anyhow!("bench phone {} refused: {e}", phone(i)))?;
    }
    let started = Instant::now();
    let client = connect(url).await?;
    let (n, per_variant) = (n as i64, per_variant as i64);
    client
        .execute(
            "INSERT INTO variants (tenant_id, variant_id, product_id, title, options, deep_link, updated_at) \
             SELECT $4, $1 || '-' || k, 'prod-' || $1 || '-' || k, 'Trail Runner 2', \
               '{\"color\": \"Moss\", \"size\": \"9\"}'::jsonb, 'https://demo.example.com/p/' || k, now() \
             FROM generate_series(0, ($2::bigint - 1) / $3::bigint) k",
            &[&prefix, &n, &per_variant, &tenant],
        )
        .await
        .context("inserting variants")?;
    client
        .execute(
            "WITH s AS MATERIALIZED ( \
               SELECT i, gen_random_uuid() AS contact_id, now() - interval '1 day' AS at \
               FROM generate_series(0, $2::bigint - 1) i), \
             c AS (INSERT INTO contacts (tenant_id, contact_id, phone_e164, created_at) \
               SELECT $5, contact_id, '+1415' || ($4::bigint + i), at FROM s), \
             e AS (INSERT INTO consent_events (tenant_id, contact_id, event_id, kind, source, \
                 consent_text, ip_address, user_agent, occurred_at, recorded_at) \
               SELECT $5, contact_id, gen_random_uuid(), 'opt_in', 'web', \
                 'Text me when it''s back. Reply STOP to opt out.', '203.0.113.9', 'bench', at, at FROM s) \
             INSERT INTO subscriptions (tenant_id, subscription_id, contact_id, target_key, variant_id, \
               status, created_at, updated_at, expires_at) \
             SELECT $5, gen_random_uuid(), contact_id, 'v:' || $1 || '-' || (i / $3::bigint), \
               $1 || '-' || (i / $3::bigint), 'active', at, at, at + interval '365 days' \
             FROM s ORDER BY i",
            &[
                &prefix,
                &n,
                &per_variant,
                &((FIRST_PHONE + first as u64) as i64),
                &tenant,
            ],
        )
        .await
        .context("inserting subscribers")?;
    // Diagnosis: texts of an old release, so `messages` is not empty when the server plans
    // (on an empty table Postgres may plan per-row lookups into it as sequential scans).
    let history: i64 = match std::env::var("RESTOCK_BENCH_HISTORY") {
        Ok(n) => n
            .parse()
            .context("RESTOCK_BENCH_HISTORY: a number of messages")?,
        Err(_) => 0,
    };
    if history > 0 {
        client
            .execute(
                "INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, \
                   variant_id, kind, position, wave, status, body, segments, link_token, created_at, \
                   sent_at, updated_at) \
                 SELECT 'demo', gen_random_uuid(), '00000000-0000-0000-0000-000000000001', \
                   gen_random_uuid(), gen_random_uuid(), 'old', 'first', i, 1, 'sent', 'old text', 1, \
                   md5(i::text || random()), now() - interval '30 days', now() - interval '30 days', \
                   now() - interval '30 days' \
                 FROM generate_series(1, $1::bigint) i",
                &[&history],
            )
            .await
            .context("inserting old messages")?;
    }
    // As autovacuum would have by the time a waitlist is this long.
    client.batch_execute("ANALYZE").await?;
    Ok(started.elapsed())
}

/// The environment of a `restock serve` sending through `fake` as fast as it can.
fn server_env(cx: &Setup<'_>, url: &str, label: &str, fake: &FakeTwilio) -> Vec<(String, String)> {
    let twilio = fake.config();
    [
        ("DATABASE_URL", url.to_string()),
        ("REDIS_URL", cx.redis.to_string()),
        ("RESTOCK__GRPC__PORT", "0".into()),
        ("RESTOCK__HTTP__PORT", "0".into()),
        ("RESTOCK__REDIS__KEY_PREFIX", format!("{}-{label}", cx.run)),
        ("RESTOCK__DATABASE__POOL_SIZE", SERVER_POOL.to_string()),
        ("RESTOCK__SMS__PROVIDER", "twilio".into()),
        ("RESTOCK__SMS__TWILIO_BASE_URL", twilio.base_url),
        ("RESTOCK__SMS__TWILIO_ACCOUNT_SID", twilio.account_sid),
        ("RESTOCK__SMS__TWILIO_AUTH_TOKEN", twilio.auth_token),
        // Text at any hour, as fast as the machine goes; phone caps never bind (each phone
        // gets one text) and their keys expire within the hour.
        ("RESTOCK__TENANTS__DEMO__QUIET_HOURS_START", "00:00".into()),
        ("RESTOCK__TENANTS__DEMO__QUIET_HOURS_END", "00:00".into()),
        ("RESTOCK__TENANTS__DEMO__SENDER_MPS", "1000000".into()),
        ("RESTOCK__TENANTS__DEMO__PHONE_CAP_HOURS", "1".into()),
        // A second brand, for the small restocks of the mixed run: the same policy.
        ("RESTOCK__TENANTS__BRANDB__DISPLAY_NAME", "Brand B".into()),
        (
            "RESTOCK__TENANTS__BRANDB__QUIET_HOURS_START",
            "00:00".into(),
        ),
        ("RESTOCK__TENANTS__BRANDB__QUIET_HOURS_END", "00:00".into()),
        ("RESTOCK__TENANTS__BRANDB__SENDER_MPS", "1000000".into()),
        ("RESTOCK__TENANTS__BRANDB__PHONE_CAP_HOURS", "1".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(crate::server::credential_env())
    .collect()
}

async fn start_server(
    cx: &Setup<'_>,
    url: &str,
    label: &str,
    fake: &FakeTwilio,
) -> anyhow::Result<(
    ServerProcess,
    EligibilityServiceClient<crate::server::Channel>,
)> {
    let log = cx.out.join(format!("server-{label}.log"));
    let server = ServerProcess::start(cx.bin, &server_env(cx, url, label, fake), &log).await?;
    let channel = crate::server::connect(&server.grpc).await?;
    Ok((server, EligibilityServiceClient::new(channel)))
}

/// Reports `variant` of `tenant` back in stock (its first event: a level never seen is armed,
/// so this is a restock); fails unless the server says a restock started.
async fn restock(
    client: &mut EligibilityServiceClient<crate::server::Channel>,
    tenant: &str,
    variant: &str,
) -> anyhow::Result<()> {
    let acks = client
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: tenant.into(),
            events: vec![pb::InventoryEvent {
                event_id: format!("restock-{variant}"),
                variant_id: variant.into(),
                location_id: "web".into(),
                available_to_sell: 50,
                order: Some(pb::inventory_event::Order::SequenceNumber(1)),
                ..Default::default()
            }],
        })
        .await?
        .into_inner()
        .acks;
    if !acks.iter().any(|a| a.restock_started) {
        bail!("the inventory event for {variant} started no restock: {acks:?}");
    }
    Ok(())
}

/// When things happened in one release, in seconds after the inventory event was sent (the
/// server's clock against the bench's: one machine, one clock).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Phases {
    /// The release row (the restock's transaction).
    pub release_created: Option<f64>,
    /// The planning transaction began (`messages.created_at`).
    pub planning_started: Option<f64>,
    /// The first claim (`min(messages.attempted_at)`): planning committed and a sender woke.
    pub first_claim: Option<f64>,
    /// `releases.started_at`: the first batch's outcomes were recorded.
    pub release_started: Option<f64>,
    pub first_sent: Option<f64>,
    pub last_sent: Option<f64>,
    /// The last message row written (its outcome recorded).
    pub last_updated: Option<f64>,
    pub messages: i64,
    pub sent: i64,
}

async fn phases(url: &str, event_at: f64) -> anyhow::Result<Phases> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT extract(epoch FROM r.created_at)::float8, extract(epoch FROM min(m.created_at))::float8, \
               extract(epoch FROM min(m.attempted_at))::float8, extract(epoch FROM r.started_at)::float8, \
               extract(epoch FROM min(m.sent_at))::float8, extract(epoch FROM max(m.sent_at))::float8, \
               extract(epoch FROM max(m.updated_at))::float8, count(m.message_id), \
               count(m.message_id) FILTER (WHERE m.status = 'sent') \
             FROM releases r LEFT JOIN messages m ON m.tenant_id = r.tenant_id AND m.release_id = r.release_id \
             GROUP BY r.release_id, r.created_at, r.started_at ORDER BY r.created_at LIMIT 1",
            &[],
        )
        .await?;
    let at = |i: usize| row.get::<_, Option<f64>>(i).map(|t| t - event_at);
    Ok(Phases {
        release_created: at(0),
        planning_started: at(1),
        first_claim: at(2),
        release_started: at(3),
        first_sent: at(4),
        last_sent: at(5),
        last_updated: at(6),
        messages: row.get(7),
        sent: row.get(8),
    })
}

/// One restock of `subscribers` waiting phones, end to end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestockRun {
    pub subscribers: usize,
    /// Inserting them in SQL (not part of any figure).
    pub insert_seconds: f64,
    /// Event sent to the first and the last text received by the fake; `None` if they did not
    /// all arrive within the timeout.
    pub to_first_text_seconds: Option<f64>,
    pub to_last_text_seconds: Option<f64>,
    pub texts_received: usize,
    /// How long the bench waited for them (the timeout, when they did not all come).
    pub waited_seconds: f64,
    /// Event sent to every message seen `sent` in the database (polled every 100 ms).
    pub to_all_sent_in_db_seconds: Option<f64>,
    pub texts_per_second: Option<f64>,
    /// The server's resident memory once started (before the restock), and its peak.
    pub rss_at_start_kib: u64,
    pub rss_peak_kib: u64,
    pub phases: Phases,
    /// Round trips to Redis of the frequency caps (the server's
    /// `restock_redis_round_trip_seconds_count`), over the whole restock.
    pub redis_round_trips: Option<f64>,
    /// Send batches: claims of due messages (distinct lease owner and claim time in the outbox).
    pub send_batches: i64,
    /// The one above over the other: the rule is at most one round trip per batch per slot.
    pub redis_round_trips_per_batch: Option<f64>,
    pub server_log: PathBuf,
}

/// Send batches of the outbox so far: each claim stamps its messages with one claim time
/// (`attempted_at`) and lease owner.
async fn send_batches(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM (SELECT DISTINCT lease_owner, attempted_at FROM messages \
             WHERE attempted_at IS NOT NULL) b",
            &[],
        )
        .await?
        .get(0))
}

/// A fresh database with `n` subscribers of one variant, a fresh server on it, and a restock;
/// waits up to `timeout` for its last text.
pub async fn restock_run(
    cx: &Setup<'_>,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<RestockRun> {
    // Named per run: a bench in another checkout may be running on the same Postgres.
    let name = format!("restock_bench_dispatch_{n}_{}", std::process::id());
    let url = fresh_database(cx, &name).await?;
    let variant = format!("bulk{n}");
    let inserted = add_subscribers(&url, "demo", &variant, 0, n, n).await?;
    eprintln!(
        "restock of {n} subscribers: inserted in {:.1}s; starting restock serve",
        inserted.as_secs_f64()
    );
    let fake = cx.fakes.twilio().await?;
    let label = format!("restock-{n}");
    let (server, mut client) = start_server(cx, &url, &label, &fake).await?;
    let rss_at_start_kib = server.memory_kib("VmRSS")?;
    let variant = format!("{variant}-0");

    let event_at = wall_now();
    let sent = Instant::now();
    restock(&mut client, "demo", &variant).await?;
    let all_in = fake.wait_for_messages(n, timeout).await;
    let waited_seconds = sent.elapsed().as_secs_f64();
    let messages = fake.messages();
    let first = messages.iter().map(|m| m.received_at).min();
    let last = messages.iter().map(|m| m.received_at).max();
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(sent).as_secs_f64());
    let (to_first, to_last) = (since(first), since(last).filter(|_| all_in));
    drop(messages);

    // The outcomes are recorded a batch at a time after the hand-overs.
    let db = connect(&url).await?;
    let mut to_all_sent = None;
    if all_in {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let sent_rows: i64 = db
                .query_one(
                    "SELECT count(*) FROM messages WHERE status = 'sent' AND variant_id = $1",
                    &[&variant],
                )
                .await?
                .get(0);
            if sent_rows as usize >= n {
                to_all_sent = Some(sent.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let rss_peak_kib = server.memory_kib("VmHWM")?;
    let redis_round_trips = server
        .metric("restock_redis_round_trip_seconds_count")
        .await?;
    let send_batches = send_batches(&db).await?;
    let phases = phases(&url, event_at).await?;
    let texts_received = fake.message_count();
    let server_log = server.log.clone();
    drop(server);
    Ok(RestockRun {
        subscribers: n,
        insert_seconds: inserted.as_secs_f64(),
        to_first_text_seconds: to_first,
        to_last_text_seconds: to_last,
        texts_received,
        waited_seconds,
        to_all_sent_in_db_seconds: to_all_sent,
        texts_per_second: to_last.map(|s| n as f64 / s),
        rss_at_start_kib,
        rss_peak_kib,
        phases,
        redis_round_trips,
        send_batches,
        redis_round_trips_per_batch: redis_round_trips
            .filter(|_| send_batches > 0)
            .map(|r| r / send_batches as f64),
        server_log,
    })
}

/// Event-to-first-text latencies in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyRun {
    pub restocks: usize,
    pub subscribers_each: usize,
    /// From the bench sending the event to the fake receiving the first text, per restock.
    pub end_to_end_ms: Vec<f64>,
    /// `releases.started_at - releases.created_at` (the server's clock), per restock.
    pub server_ms: Vec<f64>,
    /// Restocks whose first text did not come within 5 s.
    pub missed: usize,
}

/// Restocks, one after another, each of a variant with a few waiting subscribers, against
/// one running server.
pub async fn latency_run(cx: &Setup<'_>) -> anyhow::Result<LatencyRun> {
    let url = fresh_database(
        cx,
        &format!("restock_bench_dispatch_latency_{}", std::process::id()),
    )
    .await?;
    let n = LATENCY_RESTOCKS * LATENCY_SUBSCRIBERS;
    add_subscribers(&url, "demo", "lat", 0, n, LATENCY_SUBSCRIBERS).await?;
    let fake = cx.fakes.twilio().await?;
    let (server, mut client) = start_server(cx, &url, "latency", &fake).await?;
    let mut end_to_end_ms = Vec::with_capacity(LATENCY_RESTOCKS);
    let mut missed = 0;
    for k in 0..LATENCY_RESTOCKS {
        // The previous restocks' texts all in, so this one's first text is the next to come.
        fake.wait_for_messages(k * LATENCY_SUBSCRIBERS, Duration::from_secs(10))
            .await;
        tokio::time::sleep(LATENCY_PAUSE).await;
        let before = fake.message_count();
        let sent = Instant::now();
        restock(&mut client, "demo", &format!("lat-{k}")).await?;
        if !fake
            .wait_for_messages(before + 1, Duration::from_secs(5))
            .await
        {
            missed += 1;
            continue;
        }
        let first = fake
            .messages()
            .iter()
            .skip(before)
            .filter(|m| index_of(&m.to).map(|i| i / LATENCY_SUBSCRIBERS) == Some(k))
            .map(|m| m.received_at)
            .min();
        match first {
            Some(t) => end_to_end_ms.push(t.saturating_duration_since(sent).as_secs_f64() * 1e3),
            None => missed += 1,
        }
    }
    fake.wait_for_messages(n, Duration::from_secs(10)).await;
    let db = connect(&url).await?;
    let server_ms = db
        .query(
            "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM releases \
             WHERE started_at IS NOT NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(server);
    Ok(LatencyRun {
        restocks: LATENCY_RESTOCKS,
        subscribers_each: LATENCY_SUBSCRIBERS,
        end_to_end_ms,
        server_ms,
        missed,
    })
}

/// The mixed run's small restocks: subscribers each, one every [`MIXED_INTERVAL`], at most
/// [`MIXED_MAX_SMALL`] of them; their phones start at [`MIXED_SMALL_FIRST`] (after any big
/// restock's).
pub const MIXED_SMALL_SUBSCRIBERS: usize = 20;
pub const MIXED_INTERVAL: Duration = Duration::from_millis(100);
pub const MIXED_MAX_SMALL: usize = 3_000;
const MIXED_SMALL_FIRST: usize = 1_000_000;
/// The tenant of the mixed run's small restocks (tenant `demo` has the big one).
const MIXED_SMALL_TENANT: &str = "brandb";

/// Small restocks of one tenant while a big one of another tenant is running.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MixedRun {
    /// The big restock (tenant `demo`): subscribers, and event to its first and last text.
    pub big_subscribers: usize,
    pub big_to_first_text_seconds: Option<f64>,
    pub big_to_last_text_seconds: Option<f64>,
    /// Small restocks sent (tenant `brandb`), one every `interval_ms`, each of `small_each`.
    pub small_restocks: usize,
    pub small_each: usize,
    pub interval_ms: u64,
    /// Event to first text of the small restocks sent before the big one's last text, in ms.
    pub during_ms: Vec<f64>,
    /// The same of those sent after it (the stream stops within a second of it).
    pub after_ms: Vec<f64>,
    /// Small restocks whose first text never came: sent during the big one, and after it.
    pub missed_during: usize,
    pub missed_after: usize,
    /// How long the bench waited for texts, from the big one's event on.
    pub waited_seconds: f64,
    /// `releases.started_at - releases.created_at` of the small restocks (server clock), ms.
    pub small_server_ms: Vec<f64>,
    pub server_log: PathBuf,
}

/// One big restock of `big` subscribers for tenant `demo` and, from its event on until its
/// last text is in, a small restock of [`MIXED_SMALL_SUBSCRIBERS`] for tenant `brandb` every
/// [`MIXED_INTERVAL`]; waits up to `timeout` for the big one.
pub async fn mixed_run(cx: &Setup<'_>, big: usize, timeout: Duration) -> anyhow::Result<MixedRun> {
    let each = MIXED_SMALL_SUBSCRIBERS;
    let url = fresh_database(cx, &format!("restock_bench_mixed_{}", std::process::id())).await?;
    let seeded = add_subscribers(&url, "demo", "mixbig", 0, big, big).await?;
    add_subscribers(
        &url,
        MIXED_SMALL_TENANT,
        "mixsmall",
        MIXED_SMALL_FIRST,
        MIXED_MAX_SMALL * each,
        each,
    )
    .await?;
    eprintln!(
        "mixed: {big} subscribers inserted in {:.1}s; starting restock serve",
        seeded.as_secs_f64()
    );
    let fake = cx.fakes.twilio().await?;
    let (server, mut client) = start_server(cx, &url, "mixed", &fake).await?;

    let started = Instant::now();
    restock(&mut client, "demo", "mixbig-0").await?;
    let mut small_sent = Vec::new();
    let mut tick = tokio::time::interval(MIXED_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks_per_second = (1_000 / MIXED_INTERVAL.as_millis().max(1)).max(1) as usize;
    while small_sent.len() < MIXED_MAX_SMALL && started.elapsed() < timeout {
        tick.tick().await;
        // The big restock's texts all in: the stream has covered it. Counted once a second
        // (a copy of what the fake holds), and only once enough texts came for it to be so.
        if small_sent.len() % ticks_per_second == 0
            && fake.message_count() >= big
            && fake
                .messages()
                .iter()
                .filter(|m| index_of(&m.to).is_some_and(|i| i < big))
                .count()
                >= big
        {
            break;
        }
        let k = small_sent.len();
        small_sent.push(Instant::now());
        restock(&mut client, MIXED_SMALL_TENANT, &format!("mixsmall-{k}")).await?;
    }
    if small_sent.len() == MIXED_MAX_SMALL {
        eprintln!(
            "mixed: all {MIXED_MAX_SMALL} small restocks sent before the big one ended; the later part of it ran without them"
        );
    }
    let expected = big + each * small_sent.len();
    let left = timeout.saturating_sub(started.elapsed()) + Duration::from_secs(10);
    fake.wait_for_messages(expected, left).await;

    let messages = fake.messages();
    let mut big_first: Option<Instant> = None;
    let mut big_last: Option<Instant> = None;
    let mut big_texts = 0;
    let mut small_first: Vec<Option<Instant>> = vec![None; small_sent.len()];
    for m in &messages {
        let Some(i) = index_of(&m.to) else { continue };
        if i < big {
            big_texts += 1;
            big_first = Some(big_first.map_or(m.received_at, |t| t.min(m.received_at)));
            big_last = Some(big_last.map_or(m.received_at, |t| t.max(m.received_at)));
        } else if let Some(first) = i
            .checked_sub(MIXED_SMALL_FIRST)
            .and_then(|j| small_first.get_mut(j / each))
        {
            *first = Some(first.map_or(m.received_at, |t| t.min(m.received_at)));
        }
    }
    drop(messages);
    let all_big = big_texts >= big;
    let waited_seconds = started.elapsed().as_secs_f64();
    let (mut during_ms, mut after_ms) = (Vec::new(), Vec::new());
    let (mut missed_during, mut missed_after) = (0, 0);
    for (sent, first) in small_sent.iter().zip(&small_first) {
        // Unfinished, the big restock was running for every small one.
        let during = !all_big || big_last.is_some_and(|last| *sent < last);
        match (first, during) {
            (Some(first), true) => {
                during_ms.push(first.saturating_duration_since(*sent).as_secs_f64() * 1e3)
            }
            (Some(first), false) => {
                after_ms.push(first.saturating_duration_since(*sent).as_secs_f64() * 1e3)
            }
            (None, true) => missed_during += 1,
            (None, false) => missed_after += 1,
        }
    }
    let db = connect(&url).await?;
    let small_server_ms = db
        .query(
            "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM releases \
             WHERE tenant_id = $1 AND started_at IS NOT NULL",
            &[&MIXED_SMALL_TENANT],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(started).as_secs_f64());
    let server_log = server.log.clone();
    drop(server);
    Ok(MixedRun {
        big_subscribers: big,
        big_to_first_text_seconds: since(big_first),
        big_to_last_text_seconds: since(big_last).filter(|_| all_big),
        small_restocks: small_sent.len(),
        small_each: each,
        interval_ms: MIXED_INTERVAL.as_millis() as u64,
        during_ms,
        after_ms,
        missed_during,
        missed_after,
        waited_seconds,
        small_server_ms,
        server_log,
    })
}

/// The `p`-th percentile (0-100) by nearest rank of `samples` and `missed` more samples above
/// them all (texts that never came): `Ok(value)`, or `Err(())` when the rank falls on a missed
/// one; `Ok(None)` for no samples at all.
#[allow(clippy::result_unit_err)]
pub fn percentile_with_missed(samples: &[f64], missed: usize, p: f64) -> Result<Option<f64>, ()> {
    let total = samples.len() + missed;
    if total == 0 {
        return Ok(None);
    }
    let rank = (((p / 100.0) * total as f64).ceil() as usize).clamp(1, total);
    if rank > samples.len() {
        return Err(());
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(Some(sorted[rank - 1]))
}

/// The `p`-th percentile (0-100) by nearest rank; `None` for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn wall_now() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

/// Deletes the Redis keys of this run's servers (they would expire within the hour anyway).
pub async fn clear_redis(redis_url: &str, pattern: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis_url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(5_000)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len() as u64;
            let () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut con)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_phones_are_valid_and_distinct_us_numbers() {
        for i in [
            0,
            1,
            9_999,
            10_000,
            99_999,
            999_999,
            MIXED_SMALL_FIRST + 50_000,
        ] {
            let p = restock_domain::Phone::parse(&phone(i), "").expect("valid");
            assert_eq!(p.e164(), phone(i));
            assert_eq!(p.region(), Some("US"));
            assert_eq!(index_of(&phone(i)), Some(i));
        }
    }

    #[test]
    fn the_batched_script_works_in_batches_of_batch() {
        let n = BATCH.to_string();
        assert!(MESSAGE_BATCH_SCRIPT.contains(&format!("generate_series(1, {n})")));
        assert!(MESSAGE_BATCH_SCRIPT.contains(&format!("LIMIT {n}")));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn missed_samples_rank_above_every_measured_one() {
        let s: Vec<f64> = (1..=99).map(f64::from).collect();
        assert_eq!(percentile_with_missed(&s, 1, 50.0), Ok(Some(50.0)));
        assert_eq!(percentile_with_missed(&s, 1, 99.0), Ok(Some(99.0)));
        assert_eq!(percentile_with_missed(&s, 2, 99.0), Err(()));
        assert_eq!(percentile_with_missed(&[], 3, 50.0), Err(()));
        assert_eq!(percentile_with_missed(&[], 0, 50.0), Ok(None));
    }
}
