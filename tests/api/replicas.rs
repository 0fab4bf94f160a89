//! Several server processes on one Postgres and Redis, and processes killed mid-release: every
//! eligible phone is texted exactly once, whatever happens to the senders.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use restock_sms::fake::FakeTwilio;

/// A `restock serve` process sending through `fake`.
pub struct Server {
    pub child: Child,
    pub channel: Channel,
    /// Its HTTP listener (links, webhooks).
    pub http: String,
}

impl Server {
    pub async fn start(
        db_url: &str,
        prefix: &str,
        fake: &FakeTwilio,
        extra: &[(&str, &str)],
    ) -> Self {
        let (_, redis) = base_env();
        let config = fake.config();
        let mut command = Command::new(env!("CARGO_BIN_EXE_restock"));
        command
            .arg("serve")
            .envs(test_credential_env())
            .env("DATABASE_URL", db_url)
            .env("REDIS_URL", redis)
            .env("RESTOCK__GRPC__PORT", "0")
            .env("RESTOCK__HTTP__PORT", "0")
            .env("RESTOCK__REDIS__KEY_PREFIX", prefix)
            .env("RESTOCK__DATABASE__POOL_SIZE", "8")
            .env("RESTOCK__SMS__PROVIDER", "twilio")
            .env("RESTOCK__SMS__TWILIO_BASE_URL", &config.base_url)
            .env("RESTOCK__SMS__TWILIO_ACCOUNT_SID", &config.account_sid)
            .env("RESTOCK__SMS__TWILIO_AUTH_TOKEN", &config.auth_token)
            .env("RESTOCK__DISPATCH__POLL_INTERVAL_MS", "50")
            // The real clock runs here: text at any hour, so the test passes at any hour.
            .env("RESTOCK__TENANTS__DEMO__QUIET_HOURS_START", "00:00")
            .env("RESTOCK__TENANTS__DEMO__QUIET_HOURS_END", "00:00")
            .env("RESTOCK__TENANTS__DEMO__SENDER_MPS", "5000")
            .stdout(Stdio::piped())
            // `TEST_LOG=1` shows the servers' logs.
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let (grpc, http) = listening_addrs(&mut child).await;
        let channel = connect(grpc).await;
        Self {
            child,
            channel,
            http,
        }
    }

    /// Sends the process `signal` (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An app-less handle for the shared helpers: subscribes and restocks through `channel`.
pub async fn subscribe_through(channel: &Channel, variant: &str, phones: &[String]) {
    use futures::StreamExt;
    futures::stream::iter(phones.iter().cloned())
        .map(|p| {
            let mut client =
                restock::proto::v1::waitlist_service_client::WaitlistServiceClient::new(
                    channel.clone(),
                );
            let variant = variant.to_string();
            async move {
                client
                    .subscribe(subscribe_request(&variant, &p))
                    .await
                    .expect("subscribe");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

pub async fn restock_through(channel: &Channel, variant: &str, available: i64, seq: u64) {
    use restock::proto::v1 as pb;
    restock::proto::v1::eligibility_service_client::EligibilityServiceClient::new(channel.clone())
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![event(
                &format!("ev-{seq}"),
                variant,
                "loc-1",
                available,
                seq,
            )],
        })
        .await
        .unwrap();
}

pub async fn message_statuses(db_url: &str) -> HashMap<String, i64> {
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query("SELECT status, count(*) FROM messages GROUP BY status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn three_servers_text_each_of_2000_subscribers_exactly_once() {
    let fake = FakeTwilio::start().await.unwrap();
    let db_url = fresh_database().await;
    let prefix = format!("t:{}", uuid::Uuid::new_v4().simple());
    let servers = [
        Server::start(&db_url, &prefix, &fake, &[]).await,
        Server::start(&db_url, &prefix, &fake, &[]).await,
        Server::start(&db_url, &prefix, &fake, &[]).await,
    ];
    let phones = phones(2000, 0);
    subscribe_through(&servers[0].channel, "sku-1", &phones).await;
    // Every server sees the stream; only one release may come of it.
    restock_through(&servers[0].channel, "sku-1", 0, 1).await;
    restock_through(&servers[1].channel, "sku-1", 50, 2).await;
    restock_through(&servers[2].channel, "sku-1", 50, 2).await;
    assert!(
        fake.wait_for_messages(2000, Duration::from_secs(60)).await,
        "only {} texts arrived",
        fake.message_count()
    );
    eventually(Duration::from_secs(20), "every message sent", || async {
        message_statuses(&db_url).await.get("sent") == Some(&2000)
    })
    .await;
    // A moment more: a duplicate would show up now if any server were to send one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = per_phone(&fake);
    assert_eq!(sent.len(), 2000);
    assert!(sent.values().all(|&n| n == 1));
    assert_eq!(fake.message_count(), 2000);
    let statuses = message_statuses(&db_url).await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    drop(servers);
}

#[tokio::test]
async fn a_server_killed_mid_release_loses_and_doubles_nothing() {
    let fake = FakeTwilio::start().await.unwrap();
    let db_url = fresh_database().await;
    let prefix = format!("t:{}", uuid::Uuid::new_v4().simple());
    // Slow enough to be caught mid-release: 100 texts a second, short leases.
    let paced = [
        ("RESTOCK__TENANTS__DEMO__SENDER_MPS", "100"),
        ("RESTOCK__DISPATCH__LEASE_SECONDS", "2"),
        ("RESTOCK__DISPATCH__BATCH_SIZE", "100"),
    ];
    let mut first = Server::start(&db_url, &prefix, &fake, &paced).await;
    let phones = phones(600, 0);
    subscribe_through(&first.channel, "sku-1", &phones).await;
    restock_through(&first.channel, "sku-1", 0, 1).await;
    restock_through(&first.channel, "sku-1", 40, 2).await;
    assert!(fake.wait_for_messages(150, Duration::from_secs(30)).await);
    // The next texts are created at the provider but their answers hang: the process dies
    // with them in flight, so only the provider knows they went out.
    let requests = fake.create_requests();
    fake.stall_next(10, Duration::from_secs(5));
    eventually(Duration::from_secs(30), "texts in flight", || async {
        fake.create_requests() >= requests + 5
    })
    .await;
    first.kill();
    let texted_before = fake.message_count();
    assert!(texted_before < 600, "the release finished before the kill");

    let _second = Server::start(&db_url, &prefix, &fake, &paced).await;
    // The dead server's leases (2 s) are settled in about one lease: never-handed texts go
    // back in line at once, handed ones are looked up side by side.
    let started = std::time::Instant::now();
    // Generous for a loaded machine; the time it took is printed.
    eventually(
        Duration::from_secs(60),
        "no lease of the dead server left",
        || async { !message_statuses(&db_url).await.contains_key("sending") },
    )
    .await;
    eprintln!(
        "the dead server's leases were settled {:.1?} after the second server started",
        started.elapsed()
    );
    assert!(
        fake.wait_for_messages(600, Duration::from_secs(60)).await,
        "only {} texts arrived; {:?}",
        fake.message_count(),
        outbox(&db_url).await
    );
    eventually(Duration::from_secs(30), "every message sent", || async {
        message_statuses(&db_url).await.get("sent") == Some(&600)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = per_phone(&fake);
    assert_eq!(sent.len(), 600);
    let doubled: Vec<_> = sent.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubled.is_empty(), "texted twice: {doubled:?}");
    // The texts stalled at the kill were found at the provider, not sent again.
    let (client, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sids: i64 = client
        .query_one(
            "SELECT count(DISTINCT provider_message_id) FROM messages WHERE status = 'sent'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sids, 600);
}

/// The outbox by status and reason, for a failure's message.
pub async fn outbox(db_url: &str) -> Vec<(String, Option<String>, i64)> {
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query(
            "SELECT status, reason, count(*) FROM messages GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}
