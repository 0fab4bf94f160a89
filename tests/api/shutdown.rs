//! Shutdown keeps its word, on the real binary: SIGTERM turns health NOT_SERVING at once, open
//! inventory streams end with UNAVAILABLE, new calls are answered UNAVAILABLE, in-flight calls
//! finish, and the whole drain takes at most the configured grace; a SIGTERM before the server
//! listens stops it cleanly.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use restock::proto::v1 as pb;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

use crate::helpers::*;

/// The grace the tests give: short, so a drain that waits for it is plain to see.
const GRACE: Duration = Duration::from_secs(3);

/// A `restock serve` process on free ports.
struct Process {
    child: Child,
    grpc: String,
}

impl Process {
    fn spawn(db_url: &str, grace: Duration) -> Child {
        let (_, redis) = base_env();
        Command::new(env!("CARGO_BIN_EXE_restock"))
            .arg("serve")
            .envs(test_credential_env())
            .env("DATABASE_URL", db_url)
            .env("REDIS_URL", redis)
            .env("RESTOCK__GRPC__PORT", "0")
            .env("RESTOCK__HTTP__PORT", "0")
            .env("RESTOCK__DATABASE__POOL_SIZE", "4")
            .env("RESTOCK__SERVER__HEALTH_CHECK_INTERVAL_MS", "50")
            .env(
                "RESTOCK__SERVER__SHUTDOWN_GRACE_SECONDS",
                grace.as_secs().to_string(),
            )
            .env(
                "RESTOCK__SMS__LOG_PATH",
                std::env::temp_dir()
                    .join(format!("restock-{}-outbox.jsonl", uuid::Uuid::new_v4()))
                    .display()
                    .to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts the binary and waits for its "restock listening" line.
    async fn start(db_url: &str, grace: Duration) -> Self {
        let mut child = Self::spawn(db_url, grace);
        let (grpc, _) = listening_addrs(&mut child).await;
        Self { child, grpc }
    }

    async fn channel(&self) -> Channel {
        connect(&self.grpc).await
    }

    fn terminate(&self) {
        terminate(&self.child);
    }

    /// Waits for the exit at most `limit`; answers the exit code.
    async fn exit_within(mut self, limit: Duration) -> Option<i32> {
        wait_exit(&mut self.child, limit).await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &Child) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_ends_an_open_inventory_stream_with_unavailable_and_exits_within_the_grace() {
    let server = Process::start(&fresh_database().await, GRACE).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = EligibilityServiceClient::new(server.channel().await)
        .stream_inventory(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::StreamInventoryRequest {
        tenant_id: "demo".into(),
        event: Some(event("e1", "sku-1", "web", 0, 1)),
    })
    .await
    .unwrap();
    let first = acks.next().await.unwrap().unwrap().ack.unwrap();
    assert_eq!(first.outcome, pb::InventoryOutcome::Applied as i32);

    let sigterm = Instant::now();
    server.terminate();
    // The stream ends at once, not when the grace runs out; the sender keeps it open.
    let end = tokio::time::timeout(GRACE / 2, acks.next())
        .await
        .expect("the stream must end well within the grace");
    let status = end
        .expect("an error status ends the stream")
        .expect_err("no ack after SIGTERM");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let code = server.exit_within(GRACE + Duration::from_secs(2)).await;
    assert_eq!(code, Some(0));
    let total = sigterm.elapsed();
    assert!(
        total < GRACE + Duration::from_secs(2),
        "the drain took {total:?} with a {GRACE:?} grace"
    );
    drop(tx);
}

#[tokio::test]
async fn health_is_not_serving_and_new_calls_unavailable_while_a_slow_call_drains() {
    let db_url = fresh_database().await;
    // A long grace: the process must exit when the slow call is done, not when the grace ends.
    let grace = Duration::from_secs(20);
    let server = Process::start(&db_url, grace).await;
    let channel = server.channel().await;
    let health = HealthClient::new(channel.clone());
    let check = |mut health: HealthClient<Channel>, want: ServingStatus| async move {
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok_and(|r| r.into_inner().status == want as i32)
    };
    eventually(Duration::from_secs(10), "serving", || {
        let health = health.clone();
        async move { check(health, ServingStatus::Serving).await }
    })
    .await;

    // The slow call: a snapshot whose sender has not sent its last chunk yet.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let chunk = |variant: &str| pb::SyncInventoryRequest {
        tenant_id: "demo".into(),
        snapshot_time: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() - 1,
            nanos: 0,
        }),
        levels: vec![pb::StockLevel {
            variant_id: variant.into(),
            location_id: "web".into(),
            available_to_sell: 2,
            ..Default::default()
        }],
        ..Default::default()
    };
    tx.send(chunk("sku-1")).await.unwrap();
    let mut sync_client = EligibilityServiceClient::new(channel.clone());
    let sync = tokio::spawn(async move {
        sync_client
            .sync_inventory(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    // The server holds the snapshot's transaction open while it waits for the next chunk.
    let (db, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = db_url.rsplit('/').next().unwrap().to_string();
    eventually(Duration::from_secs(10), "the sync in flight", || {
        let (db, name) = (&db, name.clone());
        async move {
            db.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'",
                &[&name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                > 0
        }
    })
    .await;

    server.terminate();
    let sigterm = Instant::now();
    // Health says NOT_SERVING at once, on the open connection.
    eventually(Duration::from_secs(1), "not serving", || {
        let health = health.clone();
        async move { check(health, ServingStatus::NotServing).await }
    })
    .await;
    assert!(sigterm.elapsed() < Duration::from_secs(1));
    // A new connection is answered, UNAVAILABLE, not left hanging.
    let fresh = tokio::time::timeout(Duration::from_secs(2), async {
        let channel = server.channel().await;
        EligibilityServiceClient::new(channel)
            .get_stock(pb::GetStockRequest {
                tenant_id: "demo".into(),
                variant_id: "sku-1".into(),
                location_ids: vec![],
            })
            .await
    })
    .await
    .expect("a call on a new connection during the drain must be answered");
    assert_eq!(
        fresh.expect_err("refused while draining").code(),
        tonic::Code::Unavailable
    );
    // The slow call finishes: the drain waits for it.
    tx.send(chunk("sku-2")).await.unwrap();
    drop(tx);
    let synced = tokio::time::timeout(Duration::from_secs(5), sync)
        .await
        .expect("the in-flight call finishes")
        .unwrap()
        .expect("the in-flight call succeeds");
    assert_eq!(synced.received_count, 2);
    // ... and once it is done the process exits, long before the grace.
    let code = server.exit_within(Duration::from_secs(3)).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn sigterm_before_the_server_listens_exits_zero() {
    // A "Postgres" that accepts and never answers: start-up stays in its migrations.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(4) {
            conns.push(c);
        }
        conns
    });
    let mut child = Process::spawn(&format!("postgres://postgres@127.0.0.1:{port}/none"), GRACE);
    // Poll (not sleep) until the process handles SIGTERM, at most a few seconds: a process
    // that never does is killed by the signal below, and the exit code shows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !catches_sigterm(child.id()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    terminate(&child);
    let code = wait_exit(&mut child, GRACE).await;
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!out.contains("restock listening"), "{out}");
    assert_eq!(code, Some(0), "a SIGTERM during start-up is a clean stop");
    drop(held);
}

/// Whether the process has a handler for SIGTERM (Linux: bit 15 of SigCgt).
fn catches_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}
