//! `just bench`: measures restock on this machine and prints each figure as a ratio against the
//! same machine's raw limit, measured in the same run, so the figures travel between machines.
//! Writes the table as JSON under `target/bench/`.
//!
//! Subscribe is measured on a running platform: 3 s of Subscribe on the new database, then
//! ANALYZE (what autovacuum does in its first minute), then the figure; the first seconds' rate
//! is shown beside it. Its 16 callers each have their own connection, as pgbench's clients do.
//!
//! Floors (see `floors.rs`): the least machine CPU one text and one Subscribe can cost here
//! (their unavoidable writes in the narrowest tables, the provider call, the gRPC round trip),
//! and the best figure each leaves possible on this machine, beside the target.
//!
//! `just bench waitlist` measures Subscribe, inventory events and cap checks only; `just bench
//! dispatch` the dispatch engine only (see `dispatch.rs`); `just bench mixed` small restocks of
//! one tenant while a 100,000 one of another runs (event to first text, p50 / p99); `just bench
//! reports` the reports over 1,000,000 messages (see `reports.rs`); `just bench stack` what the
//! tower stack costs a Subscribe, p50 and p99 with and without it (see `stack.rs`). `just
//! bench-large` (`large`, not in the default run: it takes several minutes) a 1,000,000
//! subscriber restock against the 100,000 one, and the server's peak memory.
//!
//! Scale: `RESTOCK_BENCH_LARGE=<n>` subscribers of the large restock (its base: n / 10),
//! `RESTOCK_BENCH_MIXED=<n>` of the mixed run's big one. For a look at a bad figure:
//! `RESTOCK_BENCH_KEEP=1` keeps the databases, `RESTOCK_BENCH_EXPLAIN_MS=<ms>` logs the plans of
//! the server's slower statements to the Postgres log, `RESTOCK_BENCH_HISTORY=<n>` gives the
//! outbox `n` old texts before a restock, `RESTOCK_BIN` runs that server binary.

mod dispatch;
mod floors;
mod reports;
mod server;
mod stack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use restock::config::Settings;
use restock::proto::v1 as pb;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;
use restock::startup::Application;
use tokio::net::TcpListener;
use tokio_postgres::NoTls;

/// Concurrent callers, for restock and for pgbench alike.
const CONCURRENCY: usize = 16;
/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(10);

fn with_database(url: &str, name: &str) -> String {
    let (head, _) = url.rsplit_once('/').expect("a database URL has a path");
    format!("{head}/{name}")
}

/// Databases this run created, dropped at its end (and only those: a bench in another checkout
/// may be using the same Postgres).
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

async fn recreate(admin_url: &str, name: &str) -> anyhow::Result<()> {
    {
        let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
        if !created.iter().any(|n| n == name) {
            created.push(name.to_string());
        }
    }
    let (client, conn) = tokio_postgres::connect(admin_url, NoTls).await?;
    tokio::spawn(conn);
    client
        .execute(
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            &[],
        )
        .await?;
    client
        .execute(&format!("CREATE DATABASE \"{name}\""), &[])
        .await?;
    Ok(())
}

fn find_pgbench() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("pgbench"))
            .find(|p| p.exists())
    });
    if let Some(p) = on_path {
        return Ok(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("pgbench not found (Debian package postgresql-client or postgresql)")
}

/// Runs pgbench with `script` for [`RUN`] at [`CONCURRENCY`]; answers transactions per second.
fn pgbench(url: &str, script: &str) -> anyhow::Result<f64> {
    pgbench_at(url, script, CONCURRENCY)
}

/// Runs pgbench with `script` for [`RUN`] with `clients` connections.
fn pgbench_at(url: &str, script: &str, clients: usize) -> anyhow::Result<f64> {
    pgbench_for(url, script, clients, RUN)
}

/// Runs pgbench with `script` for `run` with `clients` connections.
fn pgbench_for(url: &str, script: &str, clients: usize, run: Duration) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("restock-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("script.sql");
    std::fs::write(&file, script)?;
    let out = Command::new(find_pgbench()?)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &run.as_secs().to_string(),
            "-f",
        ])
        .arg(&file)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("no tps in pgbench output: {text}"))
}

/// Runs pgbench like [`pgbench_for`], `units` of work per transaction, and measures the
/// machine's CPU over it (see [`floors`]).
fn pgbench_floor(
    url: &str,
    script: &str,
    clients: usize,
    run: Duration,
    units: f64,
) -> anyhow::Result<floors::Floor> {
    let cpu0 = floors::machine_cpu_seconds()?;
    let tps = pgbench_for(url, script, clients, run)?;
    let cpu = floors::machine_cpu_seconds()? - cpu0;
    let done = tps * units * run.as_secs_f64();
    Ok(floors::Floor {
        per_second: tps * units,
        cpu_us: cpu / done.max(1.0) * 1e6,
    })
}

/// Subscribes new phones from [`CONCURRENCY`] callers for [`RUN`]: to 200 variants in turn, or
/// all to `hot`. Phones are numbered from `first`.
async fn subscribe_rate(
    channels: &[server::Channel],
    hot: Option<&str>,
    first: usize,
    run: Duration,
) -> anyhow::Result<(f64, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + run;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CONCURRENCY {
        let mut client = WaitlistServiceClient::new(channels[caller % channels.len()].clone());
        let (next, errors) = (next.clone(), errors.clone());
        let hot = hot.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let captured = prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() - 60,
                nanos: 0,
            };
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let req = pb::SubscribeRequest {
                    tenant_id: "demo".into(),
                    variant_id: hot.clone().unwrap_or_else(|| format!("sku-{}", i % 200)),
                    phone_number: format!("+1415{:07}", first + i),
                    consent: Some(pb::Consent {
                        consent_text: "Text me when it's back. Reply STOP to opt out.".into(),
                        source: pb::ConsentSource::Web as i32,
                        capture_time: Some(captured),
                        ip_address: "203.0.113.9".into(),
                        user_agent: "bench".into(),
                    }),
                    ..Default::default()
                };
                if client.subscribe(req).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let done = next.load(Ordering::Relaxed);
    Ok((
        done as f64 / started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    ))
}

/// gRPC round trips with no application work behind them: the health service's `Check` on the
/// same server, over the same connections, at the same concurrency as [`subscribe_rate`]. The
/// ceiling of any unary RPC on this machine in this setup (client and server in one process,
/// sharing the cores with Postgres): Subscribe cannot be faster than this.
async fn noop_rate(channels: &[server::Channel], run: Duration) -> anyhow::Result<f64> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + run;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CONCURRENCY {
        let mut client = HealthClient::new(channels[caller % channels.len()].clone());
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// How long Subscribe runs before its figure is taken (see [`analyze`]).
const WARM_UP: Duration = Duration::from_secs(3);

/// Analyzes a database's tables, as autovacuum does once they have grown.
async fn analyze(url: &str) -> anyhow::Result<()> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute("ANALYZE").await?;
    Ok(())
}

/// Subscriptions already waiting on the hot variant of the Subscribe figure.
const HOT_WAITING: usize = 100_000;

/// Puts `n` active subscriptions (and their contacts) on variant `sku-hot`, straight in SQL.
async fn hot_waitlist(url: &str, n: usize) -> anyhow::Result<()> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute(&format!(
        "INSERT INTO contacts (tenant_id, contact_id, phone_e164, created_at) \
         SELECT 'demo', gen_random_uuid(), '+1212' || lpad(g::text, 7, '0'), now() FROM generate_series(1, {n}) g; \
         INSERT INTO subscriptions (tenant_id, subscription_id, contact_id, target_key, variant_id, status, \
           created_at, updated_at, expires_at) \
         SELECT tenant_id, gen_random_uuid(), contact_id, 'v:sku-hot', 'sku-hot', 'active', now(), now(), \
           now() + interval '90 days' FROM contacts WHERE tenant_id = 'demo' AND phone_e164 LIKE '+1212%'; \
         ANALYZE contacts; ANALYZE subscriptions;"
    ))
    .await?;
    Ok(())
}

/// The row work of one inventory event, as plain SQL: remember the event id, lock and update the
/// variant's total, upsert the (variant, location) level. Each pgbench client works on its own
/// variants, as each stream does.
const EVENT_SCRIPT: &str = "\\set v random(1, 1000)
\\set n random(1, 1000000000)
BEGIN;
INSERT INTO inventory_events (tenant_id, event_id, outcome, recorded_at) VALUES ('demo', :client_id || '-' || :n || '-' || random(), 'applied', now()) ON CONFLICT DO NOTHING;
INSERT INTO variant_stock (tenant_id, variant_id, available, armed, updated_at) VALUES ('demo', :client_id || '-' || :v, 0, true, now()) ON CONFLICT (tenant_id, variant_id) DO UPDATE SET updated_at = variant_stock.updated_at RETURNING available, armed;
SELECT available, on_order, last_sequence, last_observed_at, armed FROM inventory WHERE tenant_id = 'demo' AND variant_id = :client_id || '-' || :v AND location_id = 'web';
INSERT INTO inventory (tenant_id, variant_id, location_id, available, on_order, last_sequence, armed, updated_at) VALUES ('demo', :client_id || '-' || :v, 'web', :n % 5, 0, :n, false, now()) ON CONFLICT (tenant_id, variant_id, location_id) DO UPDATE SET available = EXCLUDED.available, last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at;
UPDATE variant_stock SET available = :n % 5, updated_at = now() WHERE tenant_id = 'demo' AND variant_id = :client_id || '-' || :v;
END;
";

/// Events sent but not yet acknowledged, per stream. Unbounded, a stream would queue tens of
/// seconds of events in flow-control buffers by the deadline, and draining them would make a
/// 10 s measurement last 30 s.
const IN_FLIGHT: usize = 256;

/// Streams inventory events on `streams` concurrent streams for [`RUN`]; answers events
/// applied per second (acks received) and how many started a restock.
async fn inventory_rate(channel: server::Channel, streams: usize) -> anyhow::Result<(f64, u64)> {
    use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
    use tokio_stream::StreamExt;
    let deadline = Instant::now() + RUN;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..streams {
        let mut client = EligibilityServiceClient::new(channel.clone());
        let run = format!("{}", std::process::id());
        let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        tasks.push(tokio::spawn(async move {
            let sending = window.clone();
            let events = tokio_stream::iter(0u64..)
                .take_while(move |_| Instant::now() < deadline)
                .then(move |i| {
                    let window = sending.clone();
                    async move {
                        // Given back by the ack of an earlier event.
                        window.acquire().await.expect("never closed").forget();
                        i
                    }
                })
                .map(move |i| pb::StreamInventoryRequest {
                    tenant_id: "demo".into(),
                    event: Some(pb::InventoryEvent {
                        event_id: format!("{run}-{streams}-{k}-{i}"),
                        variant_id: format!("bench-{streams}-{k}-{}", i % 1000),
                        location_id: "web".into(),
                        // Each variant alternates sold out / in stock by round: a restock
                        // every other round, as a busy catalogue would see.
                        available_to_sell: ((i / 1000) % 2) as i64 * 5,
                        order: Some(pb::inventory_event::Order::SequenceNumber(i + 1)),
                        ..Default::default()
                    }),
                });
            let mut acks = client.stream_inventory(events).await?.into_inner();
            let (mut n, mut restocks) = (0u64, 0u64);
            while let Some(ack) = acks.next().await {
                let ack = ack?.ack.unwrap_or_default();
                n += 1;
                restocks += u64::from(ack.restock_started);
                window.add_permits(1);
            }
            anyhow::Ok((n, restocks))
        }));
    }
    let (mut total, mut restocks) = (0, 0);
    for t in tasks {
        let (n, r) = t.await??;
        total += n;
        restocks += r;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), restocks))
}

/// `redis-benchmark`'s EVALSHA rate of a trivial script on the same Redis: the raw limit of one
/// script call.
fn redis_evalsha_rate(redis_url: &str) -> anyhow::Result<f64> {
    let port = redis_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .context("REDIS_URL has no port")?;
    let sha = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SCRIPT", "LOAD", "return 1"])
        .output()
        .context("redis-cli (Debian package redis-tools) is needed")?;
    let sha = String::from_utf8_lossy(&sha.stdout).trim().to_string();
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-n",
            "200000",
            "-P",
            "16",
            "-q",
            "EVALSHA",
            &sha,
            "0",
        ])
        .output()
        .context("redis-benchmark (Debian package redis-tools) is needed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA ...: 345423.16 requests per second, p50=..."
    text.split("requests per second")
        .next()
        .and_then(|head| head.rsplit(' ').find(|w| !w.is_empty()))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no rate in redis-benchmark output: {text}"))
}

/// `redis-benchmark`'s rate of the caps' own TAKE script on one phone bucket per call, random
/// phones, pipelined 16 deep: the raw limit of cap checks (one such script per text is the
/// least a check can cost).
fn redis_take_rate(redis_url: &str, prefix: &str) -> anyhow::Result<f64> {
    let port = redis_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .context("REDIS_URL has no port")?;
    let (script, args) = restock_caps::raw_phone_take(prefix);
    let sha = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SCRIPT", "LOAD", script])
        .output()
        .context("redis-cli (Debian package redis-tools) is needed")?;
    let sha = String::from_utf8_lossy(&sha.stdout).trim().to_string();
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-n",
            "200000",
            "-r",
            "100000000",
            "-P",
            "16",
            "-q",
            "EVALSHA",
            &sha,
        ])
        .args(&args)
        .output()
        .context("redis-benchmark (Debian package redis-tools) is needed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("requests per second")
        .next()
        .and_then(|head| head.rsplit(' ').find(|w| !w.is_empty()))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no rate in redis-benchmark output: {text}"))
}

/// Which figures a run measures: all by default; `just bench waitlist` or `just bench
/// dispatch` for one group.
struct Sections {
    waitlist: bool,
    /// `subscribe`: only the Subscribe figures of the waitlist group (and their pgbench).
    subscribe: bool,
    /// `caps`: only the cap-check figures.
    caps: bool,
    dispatch: bool,
    reports: bool,
    /// `stack`: the tower stack's overhead on Subscribe.
    stack: bool,
    /// `mixed`: small restocks of one tenant while a big one of another runs.
    mixed: bool,
    /// `large`: a 1,000,000 subscriber restock against a 100,000 one (`just bench-large`).
    large: bool,
}

impl Sections {
    fn from_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.is_empty() {
            return Ok(Self {
                waitlist: true,
                subscribe: false,
                caps: false,
                dispatch: true,
                reports: true,
                stack: true,
                mixed: true,
                large: false,
            });
        }
        let mut sections = Self {
            waitlist: false,
            subscribe: false,
            caps: false,
            dispatch: false,
            reports: false,
            stack: false,
            mixed: false,
            large: false,
        };
        for arg in &args {
            match arg.as_str() {
                "waitlist" => sections.waitlist = true,
                "subscribe" => sections.subscribe = true,
                "caps" => sections.caps = true,
                "dispatch" => sections.dispatch = true,
                "reports" => sections.reports = true,
                "stack" => sections.stack = true,
                "mixed" => sections.mixed = true,
                "large" => sections.large = true,
                other => bail!(
                    "unknown argument {other:?}: expected `waitlist`, `subscribe`, `caps`, `dispatch`, `mixed`, `reports`, `stack` and/or `large`"
                ),
            }
        }
        Ok(sections)
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Fails before minutes of work, naming the package, when a tool a figure needs is missing.
fn require_tools(sections: &Sections) -> anyhow::Result<()> {
    find_pgbench()?;
    if sections.waitlist || sections.caps {
        for tool in ["redis-cli", "redis-benchmark"] {
            on_path(tool)
                .with_context(|| format!("{tool} not found (Debian package redis-tools)"))?;
        }
    }
    Ok(())
}

/// The table's rows and the JSON document, as far as the run got.
#[derive(Default)]
struct Figures {
    rows: Vec<String>,
    json: serde_json::Map<String, serde_json::Value>,
}

/// Subscribe, inventory events and cap checks, each against its raw limit.
async fn waitlist_figures(
    db: &str,
    redis_url: &str,
    admin: &str,
    only_subscribe: bool,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    // Raw ceiling: pgbench inserting one row per transaction into a table shaped like ours.
    recreate(admin, "restock_bench_raw").await?;
    let raw_url = with_database(db, "restock_bench_raw");
    {
        let (c, conn) = tokio_postgres::connect(&raw_url, NoTls).await?;
        tokio::spawn(conn);
        c.batch_execute(
            "CREATE TABLE rows (tenant_id text, id uuid DEFAULT gen_random_uuid(), seq bigint GENERATED ALWAYS AS IDENTITY, \
             phone text, status text, created_at timestamptz DEFAULT now(), PRIMARY KEY (tenant_id, id)); \
             CREATE INDEX ON rows (tenant_id, seq);",
        )
        .await?;
    }
    eprintln!(
        "pgbench: single-row insert, {CONCURRENCY} clients, {}s",
        RUN.as_secs()
    );
    let raw_insert = pgbench(
        &raw_url,
        "\\set n random(1, 1000000000)\nINSERT INTO rows (tenant_id, phone, status) VALUES ('demo', :n, 'active');\n",
    )?;

    // restock: Subscribe over gRPC through the whole stack.
    recreate(admin, "restock_bench").await?;
    let mut settings = Settings::load_from(
        None,
        [
            (
                "DATABASE_URL".to_string(),
                with_database(db, "restock_bench"),
            ),
            ("REDIS_URL".to_string(), redis_url.to_string()),
        ],
    )?;
    settings.database.pool_size = CONCURRENCY;
    // The waitlist API alone, as these figures have always been: with the engine on, its
    // scheduler would plan the ~25,000 (empty) releases the inventory streams start, during the
    // measurement and for a minute and a half after it (it looks at the stop signal only
    // between passes). The engine has its own figures (`dispatch.rs`).
    settings.dispatch.enabled = false;
    settings
        .auth
        .credentials
        .insert("bench".into(), server::credential());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::build(settings, listener).await?;
    let state = app.state();
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = server::connect(addr).await?;
    // One connection per caller, as pgbench has one per client: calls on one HTTP/2
    // connection take turns in its single connection task (16 callers on one connection
    // reach a tenth of what they reach on their own connections, even with no work behind).
    let callers = server::connect_many(addr, CONCURRENCY).await?;
    // A running platform, not a database born a second ago: a fresh database's tables have no
    // statistics until autovacuum's first pass (up to a minute in), and plans made meanwhile
    // read them as empty. Subscribe for a moment, then analyze, as autovacuum would.
    eprintln!(
        "restock: Subscribe warm-up, {CONCURRENCY} callers, {}s, then ANALYZE",
        WARM_UP.as_secs()
    );
    let (subscribe_cold, errors_cold) = subscribe_rate(&callers, None, 4_000_000, WARM_UP).await?;
    analyze(&with_database(db, "restock_bench")).await?;
    eprintln!(
        "restock: Subscribe over gRPC, {CONCURRENCY} callers, {}s",
        RUN.as_secs()
    );
    let (subscribe, errors) = subscribe_rate(&callers, None, 5_000_000, RUN).await?;
    eprintln!("restock: {HOT_WAITING} waiting on one variant, then Subscribe to it, {CONCURRENCY} callers");
    hot_waitlist(&with_database(db, "restock_bench"), HOT_WAITING).await?;
    let (subscribe_hot, errors_hot) =
        subscribe_rate(&callers, Some("sku-hot"), 6_000_000, RUN).await?;
    eprintln!(
        "restock: gRPC health Check (no application work), {CONCURRENCY} callers, {}s",
        RUN.as_secs()
    );
    let noop =
        floors::measure(|| async { Ok(noop_rate(&callers, RUN).await? * RUN.as_secs_f64()) })
            .await?;
    eprintln!(
        "pgbench: a Subscribe's four writes in the narrowest tables, {} to a transaction, 2 clients, {}s",
        floors::SUBSCRIBE_BATCH,
        RUN.as_secs()
    );
    floors::create_tables(&raw_url).await?;
    let writes = pgbench_floor(
        &raw_url,
        floors::SUBSCRIBE_SCRIPT,
        2,
        RUN,
        floors::SUBSCRIBE_BATCH,
    )?;
    let floor_us = noop.cpu_us + writes.cpu_us;
    let ceiling = floors::ceiling_per_second(floor_us);
    let errors = errors + errors_hot + errors_cold;
    let stats = state.subscriber.stats();
    eprintln!(
        "subscribe batching: {} batches, {} batched, {} alone, {} failed batches",
        stats.batches, stats.batched, stats.alone, stats.failed_batches
    );
    let ratio = subscribe / raw_insert;
    figures.rows.extend([
        format!(
            "| Subscribe throughput, {CONCURRENCY} concurrent | {subscribe:.0}/s | pgbench single-row insert {raw_insert:.0}/s | {:.0}% | ≥ 50% |",
            ratio * 100.0
        ),
        format!(
            "| Subscribe throughput, {CONCURRENCY} concurrent, first {}s of a new database (no statistics yet) | {subscribe_cold:.0}/s | pgbench single-row insert {raw_insert:.0}/s | {:.0}% | (shown, not a target) |",
            WARM_UP.as_secs(),
            subscribe_cold / raw_insert * 100.0
        ),
        format!(
            "| Subscribe throughput, {CONCURRENCY} concurrent, one variant with {HOT_WAITING} waiting | {subscribe_hot:.0}/s | pgbench single-row insert {raw_insert:.0}/s | {:.0}% | ≥ 50%, as the row above |",
            subscribe_hot / raw_insert * 100.0
        ),
        format!(
            "| gRPC round trip with no application work (health `Check`), {CONCURRENCY} concurrent, same client and server | {:.0}/s ({:.0} µs of machine CPU each) | pgbench single-row insert {raw_insert:.0}/s | {:.0}% | the ceiling of any RPC here; Subscribe is {:.0}% of it |",
            noop.per_second,
            noop.cpu_us,
            noop.per_second / raw_insert * 100.0,
            subscribe / noop.per_second * 100.0
        ),
        format!(
            "| Floor of a Subscribe: that round trip ({:.0} µs) + its four writes in the narrowest tables, {} to a transaction (pgbench {:.0}/s, {:.0} µs) = {floor_us:.0} µs of machine CPU | at most {ceiling:.0}/s on {} cores | pgbench single-row insert {raw_insert:.0}/s | {:.0}% | 50% needs ≤ {:.0} µs a call |",
            noop.cpu_us,
            floors::SUBSCRIBE_BATCH,
            writes.per_second,
            writes.cpu_us,
            floors::cores(),
            ceiling / raw_insert * 100.0,
            floors::cores() / (raw_insert * 0.5) * 1e6,
        ),
    ]);
    let json = serde_json::json!({
        "concurrency": CONCURRENCY,
        "seconds": RUN.as_secs(),
        "subscribe_per_second": subscribe,
        "subscribe_hot_per_second": subscribe_hot,
        "subscribe_hot_waiting": HOT_WAITING,
        "subscribe_cold_per_second": subscribe_cold,
        "subscribe_cold_seconds": WARM_UP.as_secs(),
        "ratio_hot": subscribe_hot / raw_insert,
        "grpc_noop": noop,
        "subscribe_floor_writes": writes,
        "subscribe_floor_cpu_us": floor_us,
        "subscribe_ceiling_per_second": ceiling,
        "ratio_ceiling": ceiling / raw_insert,
        "pgbench_single_row_insert_per_second": raw_insert,
        "ratio": ratio,
        "target_ratio": 0.5,
    });
    if let serde_json::Value::Object(map) = json {
        figures.json.extend(map);
    }
    if errors > 0 {
        bail!("{errors} Subscribe calls failed");
    }
    if only_subscribe {
        let _ = stop.send(());
        server.await??;
        return Ok(());
    }
    eprintln!(
        "restock: StreamInventory, 1 and 4 streams, {}s each",
        RUN.as_secs()
    );
    let (events_1, restocks_1) = inventory_rate(channel.clone(), 1).await?;
    let (events_4, restocks_4) = inventory_rate(channel, 4).await?;
    let _ = stop.send(());
    server.await??;

    // restock's own schema, for the pgbench equivalent of an inventory event.
    recreate(admin, "restock_bench_sql").await?;
    let sql_url = with_database(db, "restock_bench_sql");
    restock_store::migrate::run(&sql_url).await?;
    eprintln!(
        "pgbench: the row work of one inventory event, 1 and 4 clients, {}s each",
        RUN.as_secs()
    );
    let raw_event_1 = pgbench_at(&sql_url, EVENT_SCRIPT, 1)?;
    let raw_event_4 = pgbench_at(&sql_url, EVENT_SCRIPT, 4)?;

    let (raw_evalsha, raw_take, cap_checks) = cap_figures(redis_url).await?;

    figures.rows.extend([
        format!(
            "| Inventory events applied, 1 stream ({restocks_1} restocks) | {events_1:.0}/s | pgbench event row work, 1 client {raw_event_1:.0}/s | {:.0}% | |",
            events_1 / raw_event_1 * 100.0
        ),
        format!(
            "| Inventory events applied, 4 streams ({restocks_4} restocks) | {events_4:.0}/s | pgbench event row work, 4 clients {raw_event_4:.0}/s | {:.0}% | |",
            events_4 / raw_event_4 * 100.0
        ),
    ]);
    cap_rows(raw_evalsha, raw_take, cap_checks, figures);
    let json = serde_json::json!({
        "inventory": {
            "events_per_second_1_stream": events_1,
            "events_per_second_4_streams": events_4,
            "pgbench_event_row_work_1_client": raw_event_1,
            "pgbench_event_row_work_4_clients": raw_event_4,
            "ratio_1": events_1 / raw_event_1,
            "ratio_4": events_4 / raw_event_4,
        },
    });
    if let serde_json::Value::Object(map) = json {
        figures.json.extend(map);
    }
    Ok(())
}

/// The caps' raw limits (EVALSHA of `return 1`, of the caps' own phone TAKE) and their
/// batched checks, all on the same Redis.
async fn cap_figures(redis_url: &str) -> anyhow::Result<(f64, f64, f64)> {
    eprintln!("redis-benchmark: EVALSHA of `return 1`, and of the caps' phone TAKE script; restock-caps: batched cap checks");
    let prefix = format!("bench-{}", std::process::id());
    let raw_evalsha = redis_evalsha_rate(redis_url)?;
    let raw_take = redis_take_rate(redis_url, &prefix)?;
    let caps = restock_caps::Caps::connect(redis_url, &prefix)?;
    let cap_checks = restock_caps::bench_checks(&caps, 50, 1_000).await?;
    Ok((raw_evalsha, raw_take, cap_checks))
}

fn cap_rows(raw_evalsha: f64, raw_take: f64, cap_checks: f64, figures: &mut Figures) {
    figures.rows.push(format!(
        "| Cap checks (phone + sender + tenant), batches of 1,000 | {cap_checks:.0}/s | redis-benchmark EVALSHA of the caps' phone TAKE, pipelined, random phones {raw_take:.0}/s (`return 1`: {raw_evalsha:.0}/s) | {:.0}% | ≥ 50% |",
        cap_checks / raw_take * 100.0
    ));
    figures.json.insert(
        "caps".into(),
        serde_json::json!({
            "checks_per_second": cap_checks,
            "redis_benchmark_take_per_second": raw_take,
            "redis_benchmark_evalsha_per_second": raw_evalsha,
            "ratio": cap_checks / raw_take,
            "ratio_to_return_1": cap_checks / raw_evalsha,
        }),
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "—".into(), |s| format!("{s:.2} s"))
}

/// One line of a restock's timeline: when each step happened after the event was sent.
fn timeline(run: &dispatch::RestockRun) -> String {
    let p = &run.phases;
    let ms = |t: Option<f64>| t.map_or_else(|| "—".into(), |t| format!("{:.0} ms", t * 1e3));
    format!(
        "{} subscribers: release created {}, planning began {}, first claim (plan committed) {}, \
         first text sent {}, release started {}, last text sent {}, last outcome written {}; \
         {} of {} messages sent (server log: {})",
        run.subscribers,
        ms(p.release_created),
        ms(p.planning_started),
        ms(p.first_claim),
        ms(p.first_sent),
        ms(p.release_started),
        ms(p.last_sent),
        ms(p.last_updated),
        p.sent,
        p.messages,
        run.server_log.display(),
    )
}

/// What the dispatch figures hand to the later sections of the same run.
struct DispatchOut {
    notes: Vec<String>,
    /// The 100,000 restock (the large figure's base, if it finished).
    big: dispatch::RestockRun,
    /// Idle event → first text, p50 and p99 in ms (next to the mixed figure).
    idle_ms: (Option<f64>, Option<f64>),
}

/// The Redis round trips per send batch of a restock, as a table row.
fn round_trip_row(r: &dispatch::RestockRun) -> String {
    let trips = r
        .redis_round_trips
        .map_or_else(|| "—".into(), |t| format!("{t:.0}"));
    let per_batch = r
        .redis_round_trips_per_batch
        .map_or_else(|| "—".into(), |t| format!("{t:.2}"));
    format!(
        "| Redis round trips of the caps per send batch, restock of {} ({trips} round trips / {} batches, `restock_redis_round_trip_seconds_count` / claims) | {per_batch} | | | ≤ 1 per batch per slot: one trip for the shared slots (sender, tenant), one for the phones' slots, no slot twice |",
        r.subscribers, r.send_batches,
    )
}

/// The dispatch engine: a restock of 100,000 (and 10,000) waiting subscribers through a child
/// `restock serve` and a loopback Twilio, and event-to-first-text latency.
async fn dispatch_figures(
    db: &str,
    redis_url: &str,
    admin: &str,
    out: &Path,
    run: &str,
    figures: &mut Figures,
) -> anyhow::Result<DispatchOut> {
    use dispatch::SERVER_POOL;
    let bin = server::binary()?;
    let fakes = dispatch::FakeRuntime::new()?;
    let cx = dispatch::Setup {
        db,
        admin,
        redis: redis_url,
        bin: &bin,
        fakes: &fakes,
        run,
        out,
    };

    // Raw ceiling: the row work of one text, one statement per phase, at the server's pool size.
    recreate(admin, "restock_bench_messages").await?;
    let messages_url = with_database(db, "restock_bench_messages");
    restock_store::migrate::run(&messages_url).await?;
    eprintln!(
        "pgbench: the row work of one text (plan insert, claim update, record update), {SERVER_POOL} clients, {}s",
        dispatch::PGBENCH_RUN.as_secs()
    );
    let raw_text = pgbench_for(
        &messages_url,
        dispatch::MESSAGE_SCRIPT,
        SERVER_POOL,
        dispatch::PGBENCH_RUN,
    )?;
    eprintln!(
        "pgbench: the same row work in batches of {}, {} clients, {}s",
        dispatch::BATCH,
        dispatch::BATCH_CLIENTS,
        dispatch::PGBENCH_RUN.as_secs()
    );
    let raw_batched = pgbench_for(
        &messages_url,
        dispatch::MESSAGE_BATCH_SCRIPT,
        dispatch::BATCH_CLIENTS,
        dispatch::PGBENCH_RUN,
    )? * dispatch::BATCH as f64;

    eprintln!(
        "pgbench: the floor of a text's row work (narrowest outbox), batches of {}, 2 clients, {}s",
        floors::TEXT_BATCH,
        dispatch::PGBENCH_RUN.as_secs()
    );
    floors::create_tables(&messages_url).await?;
    let text_rows = pgbench_floor(
        &messages_url,
        floors::TEXT_SCRIPT,
        2,
        dispatch::PGBENCH_RUN,
        floors::TEXT_BATCH,
    )?;
    eprintln!(
        "floor: {} sends to a loopback Twilio through restock's client, {} at once",
        dispatch::FLOOR_SENDS,
        dispatch::FLOOR_SEND_CONCURRENCY
    );
    let provider = fakes.twilio().await?;
    let sends = floors::measure(|| {
        floors::provider_sends(
            provider.config(),
            dispatch::FLOOR_SENDS,
            dispatch::FLOOR_SEND_CONCURRENCY,
        )
    })
    .await?;
    drop(provider);
    let text_floor_us = text_rows.cpu_us + sends.cpu_us;
    let text_ceiling = floors::ceiling_per_second(text_floor_us);

    eprintln!(
        "restock: {} restocks one after another, event to first text",
        dispatch::LATENCY_RESTOCKS
    );
    let latency = dispatch::latency_run(&cx).await?;
    eprintln!("restock: a restock of 10,000 subscribers");
    let small = dispatch::restock_run(&cx, 10_000, dispatch::RESTOCK_TIMEOUT).await?;
    eprintln!("restock: a restock of 100,000 subscribers");
    let big = dispatch::restock_run(&cx, 100_000, dispatch::RESTOCK_TIMEOUT).await?;

    let p = |s: &[f64], q: f64| dispatch::percentile(s, q);
    let ms = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.1}"));
    let (e2e_50, e2e_99) = (
        p(&latency.end_to_end_ms, 50.0),
        p(&latency.end_to_end_ms, 99.0),
    );
    let (srv_50, srv_99) = (p(&latency.server_ms, 50.0), p(&latency.server_ms, 99.0));
    for r in [&small, &big] {
        let rate = r.texts_per_second.map_or_else(
            || {
                format!(
                    "only {} of {} texts in {:.0} s",
                    r.texts_received, r.subscribers, r.waited_seconds
                )
            },
            |t| format!("{t:.0} texts/s"),
        );
        let ratio = r.texts_per_second.map_or_else(
            || "—".into(),
            |t| {
                format!(
                    "{:.0}% / {:.0}%",
                    t / raw_batched * 100.0,
                    t / raw_text * 100.0
                )
            },
        );
        let target = if r.subscribers == 100_000 {
            "< 10 s"
        } else {
            ""
        };
        figures.rows.push(format!(
            "| Restock of {} subscribers: event → last text at the provider (all `sent` in DB: {}) | {} ({rate}) | pgbench text row work (insert, claim, record): batches of {}, {} clients {raw_batched:.0}/s / one text per statement, {SERVER_POOL} clients {raw_text:.0}/s | {ratio} | {target} |",
            r.subscribers,
            seconds(r.to_all_sent_in_db_seconds),
            seconds(r.to_last_text_seconds),
            dispatch::BATCH,
            dispatch::BATCH_CLIENTS,
        ));
    }
    figures.rows.push(format!(
        "| Floor of a text: its row work in the narrowest outbox, batches of {} (pgbench {:.0}/s, {:.0} µs) + one send to the loopback provider through restock's client ({:.0}/s, {:.0} µs) = {text_floor_us:.0} µs of machine CPU | 100,000 texts in at least {:.1} s ({text_ceiling:.0}/s on {} cores) | | the 100,000 restock is at {} of it | < 10 s needs ≤ {:.0} µs a text |",
        floors::TEXT_BATCH,
        text_rows.per_second,
        text_rows.cpu_us,
        sends.per_second,
        sends.cpu_us,
        100_000.0 / text_ceiling,
        floors::cores(),
        big.texts_per_second.map_or_else(|| "—".into(), |t| format!("{:.0}%", t / text_ceiling * 100.0)),
        floors::cores() / 10_000.0 * 1e6,
    ));
    figures.rows.push(format!(
        "| Server peak RSS (VmHWM), 10,000 → 100,000 subscribers (at start: {:.0} → {:.0} MiB) | {:.0} → {:.0} MiB | | ×{:.2} | flat |",
        mib(small.rss_at_start_kib),
        mib(big.rss_at_start_kib),
        mib(small.rss_peak_kib),
        mib(big.rss_peak_kib),
        big.rss_peak_kib as f64 / small.rss_peak_kib as f64,
    ));
    figures.rows.push(format!(
        "| Inventory event → first text at the provider, p50 / p99 of {} restocks (server clock `started_at - created_at`: {} / {} ms) | {} / {} ms | | | p99 < 100 ms |",
        latency.end_to_end_ms.len(),
        ms(srv_50),
        ms(srv_99),
        ms(e2e_50),
        ms(e2e_99),
    ));
    figures.rows.push(round_trip_row(&big));
    let json = serde_json::json!({
        "server_pool": SERVER_POOL,
        "pgbench_text_row_work_per_second": raw_text,
        "pgbench_text_row_work_batched_per_second": raw_batched,
        "floor_text_rows": text_rows,
        "floor_provider_sends": sends,
        "floor_text_cpu_us": text_floor_us,
        "ceiling_texts_per_second": text_ceiling,
        "batch": dispatch::BATCH,
        "batch_clients": dispatch::BATCH_CLIENTS,
        "restock_100000": big,
        "restock_10000": small,
        "ratio": big.texts_per_second.map(|t| t / raw_text),
        "ratio_batched": big.texts_per_second.map(|t| t / raw_batched),
        "target_seconds": 10,
        "rss_peak_growth": big.rss_peak_kib as f64 / small.rss_peak_kib as f64,
        "latency": {
            "end_to_end_p50_ms": e2e_50,
            "end_to_end_p99_ms": e2e_99,
            "server_p50_ms": srv_50,
            "server_p99_ms": srv_99,
            "target_p99_ms": 100,
            "run": latency,
        },
    });
    figures.json.insert("dispatch".into(), json);
    if latency.missed > 0 {
        eprintln!(
            "warning: {} restocks of the latency run had no text within 5 s",
            latency.missed
        );
    }
    Ok(DispatchOut {
        notes: vec![timeline(&small), timeline(&big)],
        big,
        idle_ms: (e2e_50, e2e_99),
    })
}

/// A subscriber count from the environment variable `var` (`1000000` or `1_000_000`), else
/// `default`.
fn scale(var: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(var) {
        Ok(v) => {
            let n: usize = v
                .replace('_', "")
                .parse()
                .with_context(|| format!("{var}: a number of subscribers, got {v:?}"))?;
            if n < 10 {
                bail!("{var}: at least 10 subscribers");
            }
            Ok(n)
        }
        Err(_) => Ok(default),
    }
}

/// Small restocks of one tenant (20 subscribers each, one every 100 ms) while a 100,000 restock
/// of another tenant runs: event → first text of the small ones, next to the idle figure.
async fn mixed_figures(
    db: &str,
    redis_url: &str,
    admin: &str,
    out: &Path,
    run: &str,
    idle_ms: Option<(Option<f64>, Option<f64>)>,
    figures: &mut Figures,
) -> anyhow::Result<String> {
    let big = scale("RESTOCK_BENCH_MIXED", 100_000)?;
    let bin = server::binary()?;
    let fakes = dispatch::FakeRuntime::new()?;
    let cx = dispatch::Setup {
        db,
        admin,
        redis: redis_url,
        bin: &bin,
        fakes: &fakes,
        run,
        out,
    };
    eprintln!(
        "restock: a restock of {big} (tenant demo) and, while it runs, one of {} (tenant brandb) every {} ms",
        dispatch::MIXED_SMALL_SUBSCRIBERS,
        dispatch::MIXED_INTERVAL.as_millis()
    );
    // Long enough for the big one at the engine's old pace (about 700 texts a second).
    let timeout = dispatch::RESTOCK_TIMEOUT.max(Duration::from_secs((big / 500) as u64));
    let m = dispatch::mixed_run(&cx, big, timeout).await?;
    let p = |s: &[f64], q: f64| dispatch::percentile(s, q);
    let ms = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.1}"));
    // A small restock whose text never came ranks above every measured one.
    let with_missed = |s: &[f64], missed: usize, q: f64| {
        dispatch::percentile_with_missed(s, missed, q).map_or_else(
            |()| format!("none in {:.0} s", m.waited_seconds),
            |v| format!("{} ms", ms(v)),
        )
    };
    let ok = |r: Result<Option<f64>, ()>| r.ok().flatten();
    let (d50, d99) = (
        ok(dispatch::percentile_with_missed(
            &m.during_ms,
            m.missed_during,
            50.0,
        )),
        ok(dispatch::percentile_with_missed(
            &m.during_ms,
            m.missed_during,
            99.0,
        )),
    );
    let (s50, s99) = (p(&m.small_server_ms, 50.0), p(&m.small_server_ms, 99.0));
    let idle = idle_ms.map_or_else(
        || "idle: run with `dispatch`".into(),
        |(a, b)| format!("idle (the row above): {} / {} ms", ms(a), ms(b)),
    );
    figures.rows.push(format!(
        "| Inventory event → first text, p50 / p99 of {} small restocks ({} subscribers, tenant brandb, one every {} ms) during a {} restock of tenant demo (its last text {}; server clock of the {} small ones started: {} / {} ms; {} with no text) | {} / {} | {idle} | | p99 < 100 ms |",
        m.during_ms.len() + m.missed_during,
        m.small_each,
        m.interval_ms,
        m.big_subscribers,
        seconds(m.big_to_last_text_seconds),
        m.small_server_ms.len(),
        ms(s50),
        ms(s99),
        m.missed_during,
        with_missed(&m.during_ms, m.missed_during, 50.0),
        with_missed(&m.during_ms, m.missed_during, 99.0),
    ));
    figures.json.insert(
        "mixed".into(),
        serde_json::json!({
            "during_p50_ms": d50,
            "during_p99_ms": d99,
            "after_p50_ms": ok(dispatch::percentile_with_missed(&m.after_ms, m.missed_after, 50.0)),
            "after_p99_ms": ok(dispatch::percentile_with_missed(&m.after_ms, m.missed_after, 99.0)),
            "small_server_p50_ms": s50,
            "small_server_p99_ms": s99,
            "idle_p50_ms": idle_ms.and_then(|i| i.0),
            "idle_p99_ms": idle_ms.and_then(|i| i.1),
            "target_p99_ms": 100,
            "run": m,
        }),
    );
    if m.missed_during + m.missed_after > 0 {
        eprintln!(
            "warning: {} small restocks had no text within {:.0} s",
            m.missed_during + m.missed_after,
            m.waited_seconds
        );
    }
    Ok(format!(
        "mixed: big restock of {} first text {}, last text {}; {} small restocks sent, {} during it, {} after (p50 / p99 after: {} / {}); server log: {}",
        m.big_subscribers,
        seconds(m.big_to_first_text_seconds),
        seconds(m.big_to_last_text_seconds),
        m.small_restocks,
        m.during_ms.len() + m.missed_during,
        m.after_ms.len() + m.missed_after,
        with_missed(&m.after_ms, m.missed_after, 50.0),
        with_missed(&m.after_ms, m.missed_after, 99.0),
        m.server_log.display(),
    ))
}

/// Peak resident memory the server may reach in the large restock.
const LARGE_RSS_LIMIT_MIB: f64 = 256.0;
/// The large restock's total time may be at most this many times the base's (linear: 10).
const LARGE_RATIO_LIMIT: f64 = 11.0;

/// A 1,000,000 subscriber restock (`RESTOCK_BENCH_LARGE`) against the 100,000 one of the same
/// run (`base` if the dispatch figures measured it to the end, else measured here): total time
/// ratio and the server's peak memory.
async fn large_figures(
    db: &str,
    redis_url: &str,
    admin: &str,
    out: &Path,
    run: &str,
    base: Option<dispatch::RestockRun>,
    figures: &mut Figures,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let large = scale("RESTOCK_BENCH_LARGE", 1_000_000)?;
    let base_n = large / 10;
    let bin = server::binary()?;
    let fakes = dispatch::FakeRuntime::new()?;
    let cx = dispatch::Setup {
        db,
        admin,
        redis: redis_url,
        bin: &bin,
        fakes: &fakes,
        run,
        out,
    };
    let base = match base.filter(|b| b.subscribers == base_n && b.to_last_text_seconds.is_some()) {
        Some(b) => b,
        None => {
            eprintln!("restock: a restock of {base_n} subscribers (the large one's base)");
            // Long enough to finish at the engine's old pace: a ratio needs both ends.
            let timeout = Duration::from_secs(((base_n / 500) as u64).max(60));
            dispatch::restock_run(&cx, base_n, timeout).await?
        }
    };
    // Eleven times the base, with room; the base unfinished: about 1,000 texts a second.
    let timeout = match std::env::var("RESTOCK_BENCH_LARGE_TIMEOUT_S") {
        Ok(s) => Duration::from_secs(
            s.parse()
                .context("RESTOCK_BENCH_LARGE_TIMEOUT_S: seconds")?,
        ),
        Err(_) => base.to_last_text_seconds.map_or_else(
            || Duration::from_secs((large / 1_000) as u64 + 60),
            |t| Duration::from_secs_f64((t * LARGE_RATIO_LIMIT * 2.0).max(120.0)),
        ),
    };
    eprintln!(
        "restock: a restock of {large} subscribers (waiting up to {:.0} s for its last text)",
        timeout.as_secs_f64()
    );
    let big = dispatch::restock_run(&cx, large, timeout).await?;
    let ratio = match (big.to_last_text_seconds, base.to_last_text_seconds) {
        (Some(b), Some(a)) => Some(b / a),
        _ => None,
    };
    let rate = |r: &dispatch::RestockRun| {
        r.texts_per_second.map_or_else(
            || {
                format!(
                    "only {} of {} texts in {:.0} s",
                    r.texts_received, r.subscribers, r.waited_seconds
                )
            },
            |t| format!("{t:.0} texts/s"),
        )
    };
    figures.rows.push(format!(
        "| Restock of {large} subscribers: event → first text / last text at the provider (all `sent` in DB: {}) | {} / {} ({}) | the {base_n} restock of this run: {} / {} ({}) | {} | ≤ ×{LARGE_RATIO_LIMIT:.0} |",
        seconds(big.to_all_sent_in_db_seconds),
        seconds(big.to_first_text_seconds),
        seconds(big.to_last_text_seconds),
        rate(&big),
        seconds(base.to_first_text_seconds),
        seconds(base.to_last_text_seconds),
        rate(&base),
        match (ratio, base.to_last_text_seconds) {
            (Some(r), _) => format!("×{r:.2}"),
            // Unfinished: it took longer than it waited.
            (None, Some(a)) => format!("> ×{:.2}", big.waited_seconds / a),
            (None, None) => "—".into(),
        },
    ));
    figures.rows.push(format!(
        "| Server peak RSS (VmHWM), restock of {large} (at start: {:.0} MiB) | {:.0} MiB | the {base_n} restock: {:.0} MiB | ×{:.2} | < {LARGE_RSS_LIMIT_MIB:.0} MiB |",
        mib(big.rss_at_start_kib),
        mib(big.rss_peak_kib),
        mib(base.rss_peak_kib),
        big.rss_peak_kib as f64 / base.rss_peak_kib as f64,
    ));
    figures.rows.push(round_trip_row(&big));
    let took = started.elapsed().as_secs_f64();
    figures.json.insert(
        "large".into(),
        serde_json::json!({
            "subscribers": large,
            "base_subscribers": base_n,
            "ratio_to_base": ratio,
            "target_ratio": LARGE_RATIO_LIMIT,
            "rss_peak_mib": mib(big.rss_peak_kib),
            "target_rss_mib": LARGE_RSS_LIMIT_MIB,
            "section_seconds": took,
            "restock": big,
            "base": base,
        }),
    );
    Ok(vec![
        timeline(&base),
        timeline(&big),
        format!(
            "large: the section took {:.1} min (seeding {:.0} s + {:.0} s)",
            took / 60.0,
            base.insert_seconds,
            big.insert_seconds
        ),
    ])
}

/// This run's database of the reports section.
fn reports_database() -> String {
    format!("restock_bench_reports_{}", std::process::id())
}

/// Reports over 1,000,000 messages (see `reports.rs`), against one plain scan of them.
async fn report_figures(db: &str, admin: &str, figures: &mut Figures) -> anyhow::Result<()> {
    // Named per run, so a bench running beside it (another checkout) cannot drop it midway.
    let name = &reports_database();
    recreate(admin, name).await?;
    eprintln!("reports: seeding 1,000,000 messages...");
    let t = reports::measure(&with_database(db, name)).await?;
    eprintln!(
        "reports: seeded in {:.0} s; settled in {:.1} s",
        t.seed_seconds, t.settle_seconds
    );
    for (what, ms) in [
        ("period report, nothing settled", t.cold_period_report_ms),
        ("period report", t.period_report_ms),
        ("release report", t.release_report_ms),
        ("period daily breakdown", t.daily_breakdown_ms),
    ] {
        figures.rows.push(format!(
            "| {what}, {} messages (ms) | {ms:.0} | {:.0} (one scan of them) | {:.1} | < 1,000 ms |",
            t.messages,
            t.raw_scan_ms,
            ms / t.raw_scan_ms
        ));
    }
    figures
        .json
        .insert("reports".into(), serde_json::to_value(&t)?);
    Ok(())
}

/// Drops the bench's databases (unless `RESTOCK_BENCH_KEEP` is set, to look at them) and
/// deletes this run's Redis keys; says what failed but never fails.
async fn cleanup(admin: &str, redis_url: &str, run: &str) {
    let keep = std::env::var_os("RESTOCK_BENCH_KEEP").is_some();
    match tokio_postgres::connect(admin, NoTls).await {
        Ok(_) if keep => eprintln!("RESTOCK_BENCH_KEEP: the bench databases are kept"),
        Ok((client, conn)) => {
            tokio::spawn(conn);
            let created = CREATED.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for name in created {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = client.execute(&drop, &[]).await {
                    eprintln!("cleanup: dropping {name}: {e}");
                }
            }
        }
        Err(e) => eprintln!("cleanup: connecting to drop the bench databases: {e}"),
    }
    let patterns = [
        format!("{run}-*"),
        format!("bench-{}:*", std::process::id()),
    ];
    for pattern in patterns {
        if let Err(e) = dispatch::clear_redis(redis_url, &pattern).await {
            eprintln!("cleanup: deleting Redis keys {pattern}: {e}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sections = Sections::from_args()?;
    let db = std::env::var("DATABASE_URL").context("DATABASE_URL is unset: run `just bench`")?;
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL is unset: run `just bench`")?;
    require_tools(&sections)?;
    let admin = with_database(&db, "postgres");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let run = format!("restock-bench-{}", std::process::id());

    let started = Instant::now();
    let mut figures = Figures::default();
    let mut notes: Vec<String> = Vec::new();
    let measure = async {
        if sections.waitlist || sections.subscribe {
            let only_subscribe = !sections.waitlist;
            waitlist_figures(&db, &redis_url, &admin, only_subscribe, &mut figures).await?;
        }
        if sections.caps && !sections.waitlist {
            let (raw_evalsha, raw_take, cap_checks) = cap_figures(&redis_url).await?;
            cap_rows(raw_evalsha, raw_take, cap_checks, &mut figures);
        }
        let mut base = None;
        let mut idle_ms = None;
        if sections.dispatch {
            let d = dispatch_figures(&db, &redis_url, &admin, &out, &run, &mut figures).await?;
            notes.extend(d.notes);
            base = Some(d.big);
            idle_ms = Some(d.idle_ms);
        }
        if sections.mixed {
            let note =
                mixed_figures(&db, &redis_url, &admin, &out, &run, idle_ms, &mut figures).await?;
            notes.push(note);
        }
        if sections.reports {
            report_figures(&db, &admin, &mut figures).await?;
        }
        if sections.stack {
            stack::stack_figures(&db, &redis_url, &admin, &mut figures).await?;
        }
        if sections.large {
            let large =
                large_figures(&db, &redis_url, &admin, &out, &run, base, &mut figures).await?;
            notes.extend(large);
        } else if sections.dispatch {
            notes.push(
                "large: the 1,000,000 subscriber restock is not in this run (several minutes); `just bench-large` measures it".into(),
            );
        }
        anyhow::Ok(())
    };
    // Ctrl-C drops the measurement, and with it any child server (killed on drop).
    let result = tokio::select! {
        r = measure => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Whatever happened: the child servers are gone already (dropped on the way out).
    cleanup(&admin, &redis_url, &run).await;
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("restock-bench-{}", std::process::id())),
    );

    println!();
    println!("| figure | restock | raw limit (same machine, same run) | ratio | target |");
    println!("|---|---:|---:|---:|---:|");
    for row in &figures.rows {
        println!("{row}");
    }
    for note in &notes {
        println!("\n{note}");
    }
    let json = serde_json::Value::Object(figures.json);
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
    println!(
        "\nwritten: target/bench/bench.json (the run took {:.1} min)",
        started.elapsed().as_secs_f64() / 60.0
    );
    result
}
