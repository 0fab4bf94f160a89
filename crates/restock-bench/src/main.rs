//! `just bench`: measures restock on this machine and prints each figure as a ratio against the
//! same machine's raw limit, measured in the same run, so the figures travel between machines.
//! Writes the table as JSON under `target/bench/`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

async fn recreate(admin_url: &str, name: &str) -> anyhow::Result<()> {
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
            &CONCURRENCY.to_string(),
            "-j",
            "2",
            "-T",
            &RUN.as_secs().to_string(),
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

async fn subscribe_rate(
    client: WaitlistServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<(f64, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + RUN;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (mut client, next, errors) = (client.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let captured = prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() - 60,
                nanos: 0,
            };
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let req = pb::SubscribeRequest {
                    tenant_id: "demo".into(),
                    variant_id: format!("sku-{}", i % 200),
                    phone_number: format!("+1415{:07}", 5_000_000 + i),
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = std::env::var("DATABASE_URL").context("DATABASE_URL is unset: run `just bench`")?;
    let redis = std::env::var("REDIS_URL").context("REDIS_URL is unset: run `just bench`")?;
    let admin = with_database(&db, "postgres");

    // Raw ceiling: pgbench inserting one row per transaction into a table shaped like ours.
    recreate(&admin, "restock_bench_raw").await?;
    let raw_url = with_database(&db, "restock_bench_raw");
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
    recreate(&admin, "restock_bench").await?;
    let mut settings = Settings::load_from(
        None,
        [
            (
                "DATABASE_URL".to_string(),
                with_database(&db, "restock_bench"),
            ),
            ("REDIS_URL".to_string(), redis),
        ],
    )?;
    settings.database.pool_size = CONCURRENCY;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::build(settings, listener).await?;
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    eprintln!(
        "restock: Subscribe over gRPC, {CONCURRENCY} callers, {}s",
        RUN.as_secs()
    );
    let (subscribe, errors) = subscribe_rate(WaitlistServiceClient::new(channel)).await?;
    let _ = stop.send(());
    server.await??;
    if errors > 0 {
        bail!("{errors} Subscribe calls failed");
    }

    let ratio = subscribe / raw_insert;
    println!();
    println!("| figure | restock | raw limit (same machine, same run) | ratio | target |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| Subscribe throughput, {CONCURRENCY} concurrent | {subscribe:.0}/s | pgbench single-row insert {raw_insert:.0}/s | {:.0}% | ≥ 50% |",
        ratio * 100.0
    );
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({
        "concurrency": CONCURRENCY,
        "seconds": RUN.as_secs(),
        "subscribe_per_second": subscribe,
        "pgbench_single_row_insert_per_second": raw_insert,
        "ratio": ratio,
        "target_ratio": 0.5,
    });
    std::fs::write(
        out.join("subscribe.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("\nwritten: target/bench/subscribe.json");
    Ok(())
}
