//! The real server on 127.0.0.1:0 over a fresh database, the test caller's channel to it, and
//! its workers, which a test may step one pass at a time instead of waiting for their loops.

use std::sync::Arc;

use chrono::Utc;
use restock::auth::{token_hash, Bearer, CredentialSettings, Names};
use restock::config::Settings;
use restock::proto::v1::dispatch_service_client::DispatchServiceClient;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;
use restock::startup::Application;
use restock_domain::clock::{Clock, ManualClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_postgres::NoTls;
use tonic::service::interceptor::InterceptedService;

use super::{base_env, fresh_database};

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
    /// The dispatch engine (unless `dispatch.enabled` is off), what [`TestApp::step`] drives.
    pub engine: Option<Arc<restock::workers::Engine>>,
    /// The HTTP client of [`TestApp::http_get`] and the webhooks (see `http.rs`).
    pub http: reqwest::Client,
    /// The provider auth token the app checks webhook signatures with.
    pub provider_token: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn waitlist(&self) -> WaitlistServiceClient<Channel> {
        WaitlistServiceClient::new(self.channel.clone())
    }

    pub fn eligibility(&self) -> EligibilityServiceClient<Channel> {
        EligibilityServiceClient::new(self.channel.clone())
    }

    pub fn dispatch(&self) -> DispatchServiceClient<Channel> {
        DispatchServiceClient::new(self.channel.clone())
    }

    /// One pass of every worker (scheduler, confirmations, senders until nothing is due), for
    /// an app spawned with `dispatch.background` off (`spawn_stepped_sender`); answers what it did.
    pub async fn step(&self) -> restock::workers::Step {
        let engine = self.engine.as_ref().expect("a dispatching app");
        assert!(
            !engine.settings.background,
            "step an app whose workers are not running already (dispatch.background = false)"
        );
        restock::workers::step(engine).await.expect("a worker pass")
    }

    /// Whether this app's workers run only when stepped.
    pub fn stepped(&self) -> bool {
        self.engine.as_ref().is_some_and(|e| !e.settings.background)
    }

    /// Waits until `check` holds: on a stepped app by stepping the workers, failing at once
    /// when a step finds nothing to do and `check` still fails; otherwise by polling the
    /// running loops for at most 20 s.
    pub async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if !self.stepped() {
            return super::eventually(std::time::Duration::from_secs(20), what, check).await;
        }
        while !check().await {
            let step = self.step().await;
            if step == restock::workers::Step::default() {
                assert!(
                    check().await,
                    "the workers are idle and never brought {what}"
                );
                return;
            }
        }
    }

    /// Steps until a step does nothing, at most `limit` steps; answers their sum.
    pub async fn settle(&self, limit: usize) -> restock::workers::Step {
        let mut all = restock::workers::Step::default();
        for _ in 0..limit {
            let step = self.step().await;
            if step == restock::workers::Step::default() {
                return all;
            }
            all.planned += step.planned;
            all.opened += step.opened;
            all.claimed += step.claimed;
        }
        panic!("the workers still had work after {limit} steps: {all:?}");
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
    // Tests settle and prune themselves, on a clock they move: a janitor pass made late (a
    // loaded machine) after a test advanced the clock would race them.
    settings.server.janitor_interval_seconds = 0;
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
    let provider_token = {
        use secrecy::ExposeSecret;
        settings.sms.twilio_auth_token.expose_secret().to_string()
    };
    let tls = settings.grpc.tls.is_some();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = Application::build_with_clock(settings, listener, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("build the app");
    let addr = app.grpc_addr();
    let http_addr = app.http_addr();
    let state = app.state();
    let engine = app.engine();
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
        engine,
        http: super::http_client(),
        provider_token,
        stop: Some(stop),
        handle: Some(handle),
    }
}
