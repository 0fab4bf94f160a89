//! Floors: the least CPU any design must spend on this machine for one text and for one
//! Subscribe, measured in the same run, and the best figure they leave possible. A target
//! above its ceiling cannot be met here by any change to restock's code; it needs more cores
//! (or the database and the provider on other machines) or another budget.
//!
//! Each floor is work restock cannot skip, stripped of everything else:
//! - a text: its durable row in the narrowest outbox (key, release, position, status, due time,
//!   lease, hand-over mark, provider id; the primary key, the due index and the provider id
//!   index that webhooks need), inserted at planning, taken under a lease and marked handed
//!   over, and given its outcome, in batches of [`BATCH`](crate::dispatch::BATCH); and the
//!   call to the loopback provider (restock's own HTTP client and the fake Twilio). No
//!   contact, consent, subscription, cap, body or link is read or written.
//! - a Subscribe: the gRPC round trip with no work behind (health `Check`), and its four writes
//!   (contact, subscription, consent event, waitlist counter) in the narrowest tables, sixteen
//!   to a transaction: every one of the 16 callers' calls in one, the most batching they allow
//!   (restock's batcher averages 4 to 5).
//!
//! CPU is the whole machine's busy time over the measurement (`/proc/stat`): Postgres, pgbench,
//! the client and the fake alike, since they share the cores in the real figures too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use restock_sms::provider::{OutboundSms, Provider, Sender};
use restock_sms::TwilioClient;
use tokio_postgres::NoTls;

/// The machine's busy CPU seconds since boot (all cores; `/proc/stat`, in USER_HZ = 100).
pub fn machine_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user, nice, system, (idle), (iowait), irq, softirq, steal
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0.0))
        .sum();
    Ok(busy / 100.0)
}

/// Cores of this machine.
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// A rate and the machine's CPU per unit while it ran.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    pub per_second: f64,
    pub cpu_us: f64,
}

/// Runs `work` (answering units done) and measures the machine's CPU over it.
pub async fn measure<F, Fut>(work: F) -> anyhow::Result<Floor>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let (cpu0, t0) = (machine_cpu_seconds()?, Instant::now());
    let units = work().await?;
    let (cpu, elapsed) = (machine_cpu_seconds()? - cpu0, t0.elapsed().as_secs_f64());
    Ok(Floor {
        per_second: units / elapsed,
        cpu_us: cpu / units.max(1.0) * 1e6,
    })
}

/// The narrowest outbox (made in the bench's scratch database).
pub const TEXT_TABLE: &str = "CREATE TABLE floor_outbox ( \
    tenant_id text NOT NULL, message_id uuid NOT NULL DEFAULT gen_random_uuid(), \
    release_id uuid NOT NULL, position integer NOT NULL, status text NOT NULL, \
    due_at timestamptz, lease_owner text, lease_until timestamptz, handed_at timestamptz, \
    provider_message_id text, sent_at timestamptz, PRIMARY KEY (tenant_id, message_id)) \
    WITH (fillfactor = 70); \
    CREATE INDEX ON floor_outbox (tenant_id, release_id, due_at, position) WHERE status = 'planned'; \
    CREATE INDEX ON floor_outbox (provider_message_id) WHERE provider_message_id IS NOT NULL;";

/// A batch of texts through the narrowest outbox: planned, claimed under a lease and marked
/// handed over in the same write (no engine can do with fewer), given its outcome.
pub const TEXT_SCRIPT: &str = "INSERT INTO floor_outbox (tenant_id, release_id, position, status, due_at) \
SELECT 'demo', '00000000-0000-0000-0000-000000000001', g, 'planned', now() FROM generate_series(1, 500) g;
WITH due AS (SELECT tenant_id, message_id FROM floor_outbox WHERE tenant_id = 'demo' AND release_id = '00000000-0000-0000-0000-000000000001' AND status = 'planned' AND due_at <= now() ORDER BY due_at, position LIMIT 500 FOR UPDATE SKIP LOCKED) \
UPDATE floor_outbox q SET status = 'sending', lease_owner = 'c' || :client_id::int, lease_until = now() + interval '30 s', handed_at = now() FROM due WHERE q.tenant_id = due.tenant_id AND q.message_id = due.message_id;
UPDATE floor_outbox SET status = 'sent', provider_message_id = 'SM' || message_id, sent_at = now(), lease_owner = NULL, lease_until = NULL WHERE status = 'sending' AND lease_owner = 'c' || :client_id::int;
";

/// Texts per transaction of [`TEXT_SCRIPT`].
pub const TEXT_BATCH: f64 = 500.0;

/// The narrowest tables a Subscribe writes.
pub const SUBSCRIBE_TABLES: &str = "CREATE TABLE floor_contacts (tenant_id text, \
    contact_id uuid DEFAULT gen_random_uuid(), phone text, PRIMARY KEY (tenant_id, contact_id)); \
    CREATE UNIQUE INDEX ON floor_contacts (tenant_id, phone); \
    CREATE TABLE floor_subscriptions (tenant_id text, subscription_id uuid DEFAULT gen_random_uuid(), \
    contact_id uuid, target_key text, status text, seq bigint GENERATED ALWAYS AS IDENTITY, \
    created_at timestamptz DEFAULT now(), PRIMARY KEY (tenant_id, subscription_id)); \
    CREATE UNIQUE INDEX ON floor_subscriptions (tenant_id, contact_id, target_key); \
    CREATE INDEX ON floor_subscriptions (tenant_id, target_key, seq); \
    CREATE TABLE floor_consent (tenant_id text, contact_id uuid, seq bigint GENERATED ALWAYS AS IDENTITY, \
    kind text, consent_text text, at timestamptz DEFAULT now(), PRIMARY KEY (tenant_id, contact_id, seq)); \
    CREATE TABLE floor_counts (tenant_id text, target_key text, live bigint, PRIMARY KEY (tenant_id, target_key));";

/// Subscribes per transaction of [`SUBSCRIBE_SCRIPT`].
pub const SUBSCRIBE_BATCH: f64 = 16.0;

/// Sixteen new phones subscribe to one of 200 variants: contact, subscription, consent event,
/// counter (whose new value answers the place in line).
pub const SUBSCRIBE_SCRIPT: &str = "\\set n random(1, 2000000000)
\\set k random(1, 200)
BEGIN;
WITH c AS (INSERT INTO floor_contacts (tenant_id, phone) SELECT 'demo', '+1' || (:n::bigint + g) || '-' || :client_id::int FROM generate_series(1, 16) g ON CONFLICT (tenant_id, phone) DO UPDATE SET phone = EXCLUDED.phone RETURNING contact_id), \
s AS (INSERT INTO floor_subscriptions (tenant_id, contact_id, target_key, status) SELECT 'demo', contact_id, 'sku-' || :k::int, 'active' FROM c RETURNING contact_id) \
INSERT INTO floor_consent (tenant_id, contact_id, kind, consent_text) SELECT 'demo', contact_id, 'opt_in', 'Text me when it is back. Reply STOP to opt out.' FROM s;
INSERT INTO floor_counts VALUES ('demo', 'sku-' || :k::int, 16) ON CONFLICT (tenant_id, target_key) DO UPDATE SET live = floor_counts.live + 16 RETURNING live;
COMMIT;
";

/// Makes the floor tables in `url` (a scratch database of the bench).
pub async fn create_tables(url: &str) -> anyhow::Result<()> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute(TEXT_TABLE).await?;
    c.batch_execute(SUBSCRIBE_TABLES).await?;
    Ok(())
}

/// Sends `n` texts to `fake` from `concurrency` tasks through restock's Twilio client.
pub async fn provider_sends(
    config: restock_sms::TwilioConfig,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client = Arc::new(TwilioClient::new(config)?);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let sms = OutboundSms {
                    reference: format!("floor-{i}"),
                    to: format!("+1415{:07}", 3_000_000 + i),
                    from: Sender::Number("+15005550006".into()),
                    body: "Demo Outfitters: Trail Runner 2 Moss / 9 is back in stock. \
                           http://127.0.0.1:8080/r/AAAAAAAAAAAAAAAAAAAAAA Reply STOP to opt out"
                        .into(),
                    status_callback: Some(format!(
                        "http://127.0.0.1:8080/webhooks/twilio/status?m=floor-{i}"
                    )),
                    validity: Some(Duration::from_secs(3600)),
                    not_after: None,
                    fallback_from: None,
                    traceparent: Some(
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                    ),
                };
                client.send(&sms).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64)
}

/// The fastest a figure can be on this machine with `cpu_us` of CPU per unit: all cores busy.
pub fn ceiling_per_second(cpu_us: f64) -> f64 {
    cores() / (cpu_us / 1e6)
}
