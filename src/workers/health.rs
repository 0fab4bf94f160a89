//! The standard `grpc.health.v1` service, kept true: a background task asks Postgres and Redis
//! whether they answer and sets each service serving or not by what it needs. Everything needs
//! Postgres; only dispatch needs Redis (its caps), so Redis down stops texting, not Subscribe,
//! and the server as a whole ("", what load balancers ask) follows Postgres.

use std::time::Duration;

use restock_store::Store;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service names whose status is reported, besides the server as a whole ("").
pub const SERVICES: &[&str] = &[
    "restock.v1.WaitlistService",
    "restock.v1.EligibilityService",
    "restock.v1.DispatchService",
];

/// The one service that needs Redis.
const DISPATCH: &str = "restock.v1.DispatchService";

/// Answers whether Redis answers PING, reconnecting after a failure.
pub struct RedisProbe {
    client: redis::Client,
    conn: Option<redis::aio::MultiplexedConnection>,
}

impl RedisProbe {
    pub fn new(client: redis::Client) -> Self {
        Self { client, conn: None }
    }

    pub async fn ping(&mut self) -> bool {
        if self.conn.is_none() {
            self.conn = self.client.get_multiplexed_async_connection().await.ok();
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let ok = redis::cmd("PING").query_async::<String>(conn).await.is_ok();
        if !ok {
            self.conn = None;
        }
        ok
    }
}

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for s in SERVICES {
        reporter.set_service_status(*s, status).await;
    }
}

/// Checks the dependencies every `interval` until `stop` is cancelled; logs each change and
/// keeps `metrics`' dependency gauges (what the NOT_SERVING alerts read) current.
pub async fn watch_dependencies(
    reporter: HealthReporter,
    store: Store,
    mut redis: RedisProbe,
    interval: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    stop: CancellationToken,
) {
    let timeout = interval.max(Duration::from_millis(500));
    let mut last: Option<(bool, bool)> = None;
    loop {
        let pg_ok = matches!(
            tokio::time::timeout(timeout, store.ping()).await,
            Ok(Ok(()))
        );
        let redis_ok = tokio::time::timeout(timeout, redis.ping())
            .await
            .unwrap_or(false);
        if stop.is_cancelled() {
            return;
        }
        metrics.dependency_up("postgres", pg_ok);
        metrics.dependency_up("redis", redis_ok);
        if last != Some((pg_ok, redis_ok)) {
            if pg_ok && redis_ok {
                tracing::info!("dependencies answer: serving");
            } else {
                tracing::warn!(
                    postgres = pg_ok,
                    redis = redis_ok,
                    "a dependency does not answer: the services that need it are not serving"
                );
            }
            let status = |ok: bool| {
                if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                }
            };
            for service in SERVICES {
                let ok = if *service == DISPATCH {
                    pg_ok && redis_ok
                } else {
                    pg_ok
                };
                reporter.set_service_status(*service, status(ok)).await;
            }
            reporter.set_service_status("", status(pg_ok)).await;
            last = Some((pg_ok, redis_ok));
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
