//! Test harness: a fresh database per test, cloned from a migrated template, and the real
//! server on 127.0.0.1:0.

use std::sync::Arc;

use chrono::Utc;
use restock::auth::{token_hash, Bearer, CredentialSettings, Names};
use restock::config::Settings;
use restock::proto::v1 as pb;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;
use restock::startup::Application;
use restock_domain::clock::{Clock, ManualClock};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, OnceCell};
use tokio_postgres::NoTls;
use tonic::service::interceptor::InterceptedService;

/// The bearer token of the test caller that every test channel carries: every tenant, every
/// scope (tests of auth itself add callers of their own, see `auth.rs`).
pub const TEST_TOKEN: &str = "test-token-with-full-access";

/// A channel to a test server that presents [`TEST_TOKEN`] on every call.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel` presenting `token`.
pub fn with_token(channel: tonic::transport::Channel, token: &str) -> Channel {
    InterceptedService::new(channel, Bearer::new(token))
}

/// Connects to `addr` (host:port) as the test caller.
pub async fn connect(addr: impl std::fmt::Display) -> Channel {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    with_token(channel, TEST_TOKEN)
}

/// A credential allowed `tenants` and `scopes` (a list each, `*` for all).
pub fn credential(token: &str, tenants: &[&str], scopes: &[&str]) -> CredentialSettings {
    let names = |v: &[&str]| Names(v.iter().map(|s| s.to_string()).collect());
    CredentialSettings {
        token_sha256: Some(token_hash(token)),
        cert_sha256: None,
        tenants: names(tenants),
        scopes: names(scopes),
    }
}

/// The environment that gives a `restock serve` child the test caller.
pub fn test_credential_env() -> Vec<(String, String)> {
    [
        ("TOKEN_SHA256", token_hash(TEST_TOKEN)),
        ("TENANTS", "*".to_string()),
        ("SCOPES", "*".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("RESTOCK__AUTH__CREDENTIALS__TEST__{k}"), v))
    .collect()
}

/// The URL of the Postgres and Redis that `just test` started.
pub fn base_env() -> (String, String) {
    let db = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is unset: run the tests with `just test`");
    let redis =
        std::env::var("REDIS_URL").expect("REDIS_URL is unset: run the tests with `just test`");
    (db, redis)
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, _) = url.rsplit_once('/').expect("a database URL has a path");
    let query = url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}/{name}{query}")
}

async fn admin() -> tokio_postgres::Client {
    let (db, _) = base_env();
    let (client, conn) = tokio_postgres::connect(&with_database(&db, "postgres"), NoTls)
        .await
        .expect("connect to the test Postgres");
    tokio::spawn(conn);
    client
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database migrated once per migration set, which every test clones.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut files: Vec<_> =
                std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
            files.sort();
            for f in files {
                for b in std::fs::read(f).unwrap() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
            let name = format!("restock_template_{h:016x}");
            let admin = admin().await;
            admin
                .execute("SELECT pg_advisory_lock(7465737401)", &[])
                .await
                .unwrap();
            // Databases of earlier runs are dropped here, once per test process; only those
            // over an hour old (the name carries its creation time), so test processes running
            // side by side keep theirs.
            for row in admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'restock_test_%'",
                    &[],
                )
                .await
                .unwrap()
            {
                let db: String = row.get(0);
                let created = db
                    .strip_prefix("restock_test_")
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|ts| ts.parse::<i64>().ok())
                    .unwrap_or(0);
                if Utc::now().timestamp() - created < 3_600 {
                    continue;
                }
                let _ = admin
                    .execute(
                        &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                        &[],
                    )
                    .await;
            }
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                admin
                    .execute(
                        &format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
                        &[],
                    )
                    .await
                    .unwrap();
                admin
                    .execute(&format!("CREATE DATABASE \"{building}\""), &[])
                    .await
                    .unwrap();
                let (db, _) = base_env();
                restock_store::migrate::run(&with_database(&db, &building))
                    .await
                    .expect("migrate the template");
                admin
                    .execute(
                        &format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\""),
                        &[],
                    )
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(7465737401)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

/// A fresh, migrated database; answers its URL.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!(
        "restock_test_{}_{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    admin()
        .await
        .execute(
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
            &[],
        )
        .await
        .expect("clone the template database");
    let (db, _) = base_env();
    with_database(&db, &name)
}

/// Seconds since the epoch on a test clock.
pub trait ClockExt {
    fn now_ts(&self) -> i64;
    fn now_dt(&self) -> chrono::DateTime<Utc>;
}

impl ClockExt for ManualClock {
    fn now_ts(&self) -> i64 {
        self.now().timestamp()
    }

    fn now_dt(&self) -> chrono::DateTime<Utc> {
        self.now()
    }
}

/// A running server and clients of it.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The HTTP listener: links, webhooks, metrics.
    pub http_addr: std::net::SocketAddr,
    pub db_url: String,
    pub channel: Channel,
    pub clock: Arc<ManualClock>,
    pub state: Arc<restock::state::AppState>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn waitlist(&self) -> WaitlistServiceClient<Channel> {
        WaitlistServiceClient::new(self.channel.clone())
    }

    pub fn eligibility(
        &self,
    ) -> restock::proto::v1::eligibility_service_client::EligibilityServiceClient<Channel> {
        restock::proto::v1::eligibility_service_client::EligibilityServiceClient::new(
            self.channel.clone(),
        )
    }

    /// A direct connection to this test's database, for checking what was (not) written.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// Rows in a table of this test's database.
    pub async fn count(&self, table: &str) -> i64 {
        self.db()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await?
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns a server whose settings `tweak` may change.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(fresh_database().await, tweak).await
}

/// Spawns a server on an existing database: a second replica of another test app.
pub async fn spawn_app_on(db_url: String, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    restock::telemetry::init();
    let (_, redis) = base_env();
    let mut settings = Settings::load_from(
        None,
        [
            ("DATABASE_URL".to_string(), db_url.clone()),
            ("REDIS_URL".to_string(), redis),
        ],
    )
    .expect("test settings");
    settings.database.pool_size = 8;
    settings.server.health_check_interval_ms = 50;
    settings.server.shutdown_grace_seconds = 5;
    settings.erasure_key = Some("test-erasure-key-0123456789".into());
    settings.http.port = 0;
    settings
        .auth
        .credentials
        .insert("test".into(), credential(TEST_TOKEN, &["*"], &["*"]));
    // Replicas of one test share their database, so they share caps too; tests do not.
    settings.redis.key_prefix = format!("t:{}", db_url.rsplit('/').next().unwrap_or("db"));
    settings.sms.log_path = std::env::temp_dir()
        .join(format!("restock-{}-outbox.jsonl", uuid::Uuid::new_v4()))
        .display()
        .to_string();
    tweak(&mut settings);
    let tls = settings.grpc.tls.is_some();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = Application::build_with_clock(settings, listener, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("build the app");
    let addr = app.grpc_addr();
    let http_addr = app.http_addr();
    let state = app.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // A TLS server's tests make channels of their own (see `mtls.rs`); this plain-text one
    // would fail, so it is only made, never connected.
    let channel = if tls {
        with_token(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy(),
            TEST_TOKEN,
        )
    } else {
        connect(addr).await
    };
    TestApp {
        addr,
        http_addr,
        db_url,
        channel,
        clock,
        state,
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// A consent as a web form captures it.
pub fn web_consent() -> pb::Consent {
    pb::Consent {
        consent_text: "Text me when it's back. Msg & data rates may apply. Reply STOP to opt out."
            .into(),
        source: pb::ConsentSource::Web as i32,
        capture_time: Some(prost_types::Timestamp {
            seconds: Utc::now().timestamp() - 60,
            nanos: 0,
        }),
        ip_address: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (test)".into(),
    }
}

/// A valid Subscribe request for the `demo` tenant.
pub fn subscribe_request(variant: &str, phone: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        tenant_id: "demo".into(),
        variant_id: variant.into(),
        phone_number: phone.into(),
        default_region: "US".into(),
        consent: Some(web_consent()),
        ..Default::default()
    }
}

/// The fields named by an INVALID_ARGUMENT's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    bad.field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// Waits for a `restock serve` child's first line, `restock listening: grpc=ADDR http=ADDR`;
/// answers the two addresses.
pub async fn listening_addrs(child: &mut std::process::Child) -> (String, String) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let (grpc, http) = line
        .trim()
        .strip_prefix("restock listening: grpc=")
        .and_then(|rest| rest.split_once(" http="))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (grpc.to_string(), http.to_string())
}
