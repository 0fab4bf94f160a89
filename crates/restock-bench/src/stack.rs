//! `just bench stack`: what the tower stack in front of every service (observe, drain, auth,
//! limit, deadline) costs a Subscribe. Two servers on one shared state (one pool, one database,
//! one Subscribe batcher): the application as it ships, and the same WaitlistService with no
//! layer at all, only the bench caller put where the auth layer would put it. Both are driven
//! in the same run, in alternating rounds so drift (autovacuum, a warming cache, a neighbour's
//! build) falls on both alike; p50 and p99 of each, at 1 caller (the stack's own cost) and at
//! [`CONCURRENCY`] callers (under load, where the concurrency limit and the batching meet).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use restock::config::Settings;
use restock::grpc::waitlist::WaitlistApi;
use restock::proto::v1 as pb;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;
use restock::proto::v1::waitlist_service_server::WaitlistServiceServer;
use restock::startup::Application;
use tokio::net::TcpListener;

use crate::{recreate, server, with_database, Figures, CONCURRENCY};

/// The database of these figures (made by `recreate`, so the bench drops it).
pub const DATABASE: &str = "restock_bench_stack";

/// Each server's share of one measurement: [`ROUNDS`] rounds of this, alternating.
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 6;

/// Percentile `p` (0-1) of sorted `samples`, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// Subscribes from `callers` tasks for `run`, every call a new subscription (variants of this
/// run, `run_id`, so no call repeats another's); answers each call's latency.
async fn subscribe_latencies(
    client: &WaitlistServiceClient<server::Channel>,
    callers: usize,
    run: Duration,
    run_id: usize,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + run;
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let captured = prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() - 60,
                nanos: 0,
            };
            let mut took = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let n = caller * 100_000 + i;
                i += 1;
                let req = pb::SubscribeRequest {
                    tenant_id: "demo".into(),
                    variant_id: format!("sku-{run_id}-{}", n % 200),
                    // From 415-500-0000: a NANP exchange starts with 2-9.
                    phone_number: format!("+1415{:07}", 5_000_000 + n),
                    consent: Some(pb::Consent {
                        consent_text: "Text me when it's back. Reply STOP to opt out.".into(),
                        source: pb::ConsentSource::Web as i32,
                        capture_time: Some(captured),
                        ip_address: "203.0.113.9".into(),
                        user_agent: "bench".into(),
                    }),
                    ..Default::default()
                };
                let start = Instant::now();
                client.subscribe(req).await?;
                took.push(start.elapsed());
            }
            anyhow::Ok(took)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// One line of the figure: p50 and p99 through the stack and without it, at `callers`.
struct Pair {
    callers: usize,
    stack: Vec<Duration>,
    bare: Vec<Duration>,
}

impl Pair {
    fn figures(&self) -> (f64, f64, f64, f64) {
        (
            percentile_ms(&self.stack, 0.5),
            percentile_ms(&self.stack, 0.99),
            percentile_ms(&self.bare, 0.5),
            percentile_ms(&self.bare, 0.99),
        )
    }
}

/// Measures the stack's overhead on Subscribe and adds its rows to `figures`.
pub async fn stack_figures(
    db: &str,
    redis_url: &str,
    admin: &str,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    recreate(admin, DATABASE).await?;
    let mut settings = Settings::load_from(
        None,
        [
            ("DATABASE_URL".to_string(), with_database(db, DATABASE)),
            ("REDIS_URL".to_string(), redis_url.to_string()),
        ],
    )?;
    settings.database.pool_size = CONCURRENCY;
    // The waitlist API alone, as the Subscribe figure measures it.
    settings.dispatch.enabled = false;
    settings
        .auth
        .credentials
        .insert("bench".into(), server::credential());
    let app = Application::build(settings, TcpListener::bind("127.0.0.1:0").await?).await?;
    let state = app.state();
    let stack_addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stack_server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // The same service with nothing in front: the caller the auth layer would have found.
    let caller = Arc::new(restock::auth::Caller {
        name: "bench".into(),
        tenants: restock::auth::Tenants::All,
        scopes: restock::auth::Scope::ALL.into_iter().collect(),
    });
    let bare_listener = TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = bare_listener.local_addr()?;
    let bare = WaitlistServiceServer::with_interceptor(
        WaitlistApi::new(state.clone()),
        move |mut req: tonic::Request<()>| {
            req.extensions_mut().insert(caller.clone());
            Ok(req)
        },
    );
    let (bare_stop, bare_stopped) = tokio::sync::oneshot::channel::<()>();
    let bare_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(bare)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(bare_listener),
                async {
                    let _ = bare_stopped.await;
                },
            ),
    );

    let stack_client = WaitlistServiceClient::new(server::connect(stack_addr).await?);
    let bare_client = WaitlistServiceClient::new(server::connect(bare_addr).await?);
    // Warm both (connections in the pool, statement caches) before measuring.
    subscribe_latencies(&stack_client, CONCURRENCY, Duration::from_secs(1), 0).await?;
    subscribe_latencies(&bare_client, CONCURRENCY, Duration::from_secs(1), 1).await?;

    let mut pairs = Vec::new();
    let mut run_id = 2;
    for callers in [1, CONCURRENCY] {
        eprintln!(
            "restock: Subscribe through the tower stack and without it, {callers} caller(s), {} rounds of {}s each",
            ROUNDS,
            ROUND.as_secs()
        );
        let mut pair = Pair {
            callers,
            stack: Vec::new(),
            bare: Vec::new(),
        };
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always follows the other's writes.
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for through_stack in order {
                let client = if through_stack {
                    &stack_client
                } else {
                    &bare_client
                };
                let took = subscribe_latencies(client, callers, ROUND, run_id).await?;
                run_id += 1;
                if through_stack {
                    pair.stack.extend(took);
                } else {
                    pair.bare.extend(took);
                }
            }
        }
        pair.stack.sort();
        pair.bare.sort();
        pairs.push(pair);
    }
    let _ = stop.send(());
    let _ = bare_stop.send(());
    stack_server.await??;
    bare_server.await??;

    let mut json = serde_json::Map::new();
    for pair in &pairs {
        let (s50, s99, b50, b99) = pair.figures();
        if pair.stack.is_empty() || pair.bare.is_empty() {
            bail!("no Subscribe measured at {} callers", pair.callers);
        }
        let callers = pair.callers;
        figures.rows.extend([
            format!(
                "| Subscribe p50 through the tower stack, {callers} caller(s) ({} calls) | {s50:.2} ms | without the layers {b50:.2} ms ({} calls) | {:+.2} ms | |",
                pair.stack.len(),
                pair.bare.len(),
                s50 - b50
            ),
            format!(
                "| Subscribe p99 through the tower stack, {callers} caller(s) | {s99:.2} ms | without the layers {b99:.2} ms | {:+.2} ms | |",
                s99 - b99
            ),
        ]);
        json.insert(
            format!("callers_{callers}"),
            serde_json::json!({
                "stack_calls": pair.stack.len(),
                "bare_calls": pair.bare.len(),
                "stack_p50_ms": s50,
                "stack_p99_ms": s99,
                "bare_p50_ms": b50,
                "bare_p99_ms": b99,
                "p50_overhead_ms": s50 - b50,
                "p99_overhead_ms": s99 - b99,
            }),
        );
    }
    figures.json.insert(
        "tower_stack_subscribe".into(),
        serde_json::Value::Object(json),
    );
    Ok(())
}
