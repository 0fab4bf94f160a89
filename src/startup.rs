//! Start-up: builds the application from settings around a bound listener (tests bind port 0
//! and read the address back), and runs it until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use restock_domain::clock::{Clock, SystemClock};
use restock_store::Store;
use secrecy::ExposeSecret;
use std::future::IntoFuture;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::config::{ProviderKind, Settings};
use crate::grpc;
use crate::proto::v1::dispatch_service_server::DispatchServiceServer;
use crate::proto::v1::eligibility_service_server::EligibilityServiceServer;
use crate::proto::v1::waitlist_service_server::WaitlistServiceServer;
pub use crate::state::AppState;
use crate::state::PageTokens;
use crate::workers::health::{self, RedisProbe};

/// HTTP/2 flow-control window of one stream: what one inventory stream may have in flight
/// unread (about 2,000 events).
const STREAM_WINDOW: u32 = 128 * 1024;
/// HTTP/2 flow-control window of a connection; h2 allows buffered small frames up to half of
/// it, so sixteen streams of small events fit with room to spare.
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// The SMS provider the settings name.
fn provider(settings: &Settings) -> anyhow::Result<Arc<dyn restock_sms::Provider>> {
    Ok(match settings.sms.provider {
        ProviderKind::Log => {
            let path = std::path::Path::new(&settings.sms.log_path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {} (sms.log_path)", dir.display()))?;
            }
            Arc::new(
                restock_sms::LogProvider::open(path)
                    .with_context(|| format!("opening {} (sms.log_path)", path.display()))?,
            )
        }
        ProviderKind::Twilio => {
            let sms = &settings.sms;
            let mut config = restock_sms::TwilioConfig::new(
                sms.twilio_account_sid.clone(),
                sms.twilio_auth_token.expose_secret().to_string(),
            );
            config.base_url = sms.twilio_base_url.clone();
            let primary: Arc<dyn restock_sms::Provider> = Arc::new(
                restock_sms::TwilioClient::new(config).map_err(|e| anyhow::anyhow!("sms: {e}"))?,
            );
            let secondary: Option<Arc<dyn restock_sms::Provider>> =
                if sms.fallback_twilio_account_sid.is_empty() {
                    None
                } else {
                    let mut config = restock_sms::TwilioConfig::new(
                        sms.fallback_twilio_account_sid.clone(),
                        sms.fallback_twilio_auth_token.expose_secret().to_string(),
                    );
                    config.base_url = if sms.fallback_twilio_base_url.is_empty() {
                        sms.twilio_base_url.clone()
                    } else {
                        sms.fallback_twilio_base_url.clone()
                    };
                    Some(Arc::new(restock_sms::TwilioClient::new(config).map_err(
                        |e| anyhow::anyhow!("sms.fallback_twilio_account_sid: {e}"),
                    )?))
                };
            Arc::new(restock_sms::Failover::new(
                primary,
                secondary,
                Duration::from_secs(sms.fallback_cool_down_seconds),
            ))
        }
    })
}

/// The TLS of the gRPC listener, from the files `grpc.tls` names.
fn server_tls(
    tls: &crate::config::TlsSettings,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |path: &str, key: &str| {
        std::fs::read(path).with_context(|| format!("reading {path} (grpc.tls.{key})"))
    };
    let identity = Identity::from_pem(
        read(&tls.cert_path, "cert_path")?,
        read(&tls.key_path, "key_path")?,
    );
    // A client that never finishes its handshake is dropped rather than held open.
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(Duration::from_secs(10));
    if let Some(ca) = &tls.client_ca_path {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca, "client_ca_path")?))
            .client_auth_optional(!tls.client_cert_required);
    }
    Ok(config)
}

/// A built server, bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    http_listener: TcpListener,
    engine: Option<Arc<crate::workers::Engine>>,
    state: Arc<AppState>,
    settings: Settings,
    /// The gRPC listener's TLS, its files read at build so a bad one stops the start.
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Application {
    /// Applies pending migrations and builds the server on `listener`.
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, listener, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`], with the clock given (tests control time).
    pub async fn build_with_clock(
        settings: Settings,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let applied = restock_store::migrate::run(&settings.database.url)
            .await
            .context("applying migrations (is Postgres up? see DATABASE_URL)")?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrations applied");
        }
        let store = Store::connect(&settings.database.url, settings.database.pool_size)?;
        // The tenants' configured substitute groups, where the queries that decide texts read
        // them (with the groups set through the API).
        for (tenant_id, policy) in &settings.tenants {
            use restock_store::substitutes::Member;
            let groups: Vec<(String, Vec<Member>)> = policy
                .substitute_groups
                .iter()
                .map(|(name, g)| {
                    let members = g
                        .variants
                        .iter()
                        .cloned()
                        .map(Member::Variant)
                        .chain(g.products.iter().cloned().map(Member::Product))
                        .collect();
                    (name.clone(), members)
                })
                .collect();
            store
                .sync_configured_substitutes(tenant_id, &groups, clock.now())
                .await
                .with_context(|| format!("writing tenant {tenant_id}'s substitute_groups"))?;
        }
        let http_listener = TcpListener::bind(settings.http.addr())
            .await
            .with_context(|| {
                format!(
                    "binding the HTTP listener on {} (http.port)",
                    settings.http.addr()
                )
            })?;
        let public_base_url = match &settings.http.public_base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", http_listener.local_addr()?),
        };
        let erasure_key = match &settings.erasure_key {
            Some(k) => k.expose_secret().as_bytes().to_vec(),
            None => {
                tracing::warn!("erasure_key is not set: using a random key for this process");
                uuid::Uuid::new_v4().as_bytes().to_vec()
            }
        };
        let page_tokens = match &settings.server.page_token_key {
            Some(k) => PageTokens::new(k.expose_secret().as_bytes()),
            None => {
                tracing::warn!("server.page_token_key is not set: using a random key for this process (page tokens work only against it)");
                PageTokens::new(&rand::random::<[u8; 32]>())
            }
        };
        // A few workers batch Subscribe calls (each holds one pooled connection while it
        // works); fewer workers make bigger batches, which is the point.
        let subscriber = restock_store::subscribe_batch::Subscriber::start(
            store.clone(),
            (settings.database.pool_size / 8).clamp(1, 4),
        );
        let state = Arc::new(AppState {
            subscriber,
            store,
            tenants: settings.tenants.clone(),
            clock,
            erasure_key,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            dispatch_wake: Arc::new(tokio::sync::Notify::new()),
            public_base_url,
            link_limiter: Arc::new(crate::state::limiter(
                settings.http.link_rate_per_second,
                settings.http.link_burst,
            )),
            provider_auth_tokens: [
                &settings.sms.twilio_auth_token,
                &settings.sms.fallback_twilio_auth_token,
            ]
            .into_iter()
            .map(|t| t.expose_secret())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
            draining: CancellationToken::new(),
            page_tokens,
        });
        if crate::telemetry::otlp_enabled() {
            let store = state.store.clone();
            state
                .metrics
                .export_otlp(&opentelemetry::global::meter("restock"), move || {
                    store.pool_status()
                });
        }
        let engine = if settings.dispatch.enabled {
            Some(Arc::new(crate::workers::Engine {
                provider: provider(&settings)?,
                caps: restock_caps::Caps::connect(&settings.redis.url, &settings.redis.key_prefix)
                    .context("redis.url")?
                    .with_round_trip_observer({
                        let metrics = state.metrics.clone();
                        restock_caps::RoundTripObserver::new(move |took| {
                            metrics.redis_round_trip(took.as_secs_f64())
                        })
                    }),
                settings: settings.dispatch.clone(),
                owner: format!(
                    "{}:{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "restock".into()),
                    uuid::Uuid::new_v4().simple()
                ),
                work: tokio::sync::Notify::new(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(
                    settings.dispatch.concurrency as usize,
                )),
                // A fence holds a connection for a provider round trip, and its check needs
                // another: a quarter of the pool keeps Subscribe and the claims served.
                fences: Arc::new(tokio::sync::Semaphore::new(
                    (settings.database.pool_size / 4).max(1),
                )),
                express: crate::workers::Slots::express(),
                status_callback: (settings.sms.provider == ProviderKind::Twilio)
                    .then(|| format!("{}/webhooks/twilio/status", state.public_base_url)),
                state: state.clone(),
            }))
        } else {
            None
        };
        let tls = settings.grpc.tls.as_ref().map(server_tls).transpose()?;
        Ok(Self {
            listener,
            http_listener,
            engine,
            state,
            settings,
            tls,
        })
    }

    /// Where the gRPC server listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the HTTP listener (links, webhooks, metrics) listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then, at once, reports not serving, answers new calls
    /// UNAVAILABLE and ends open streams; waits for in-flight calls, texts being handed over and
    /// the HTTP listener together, at most the grace period in all; then closes the connections.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            http_listener,
            engine,
            state,
            settings,
            tls,
        } = self;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        health::set_all(&reporter, ServingStatus::NotServing).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        // Every background task's lifetime: cancelled (with `state.draining`, its parent) when
        // the drain starts, and awaited through the tracker.
        let stop = state.draining.child_token();
        let tasks = TaskTracker::new();
        let redis = redis::Client::open(settings.redis.url.as_str()).context("redis.url")?;
        // Awaited on its own: once it has stopped, nothing sets the health status but the drain.
        let watcher = tokio::spawn(health::watch_dependencies(
            reporter.clone(),
            state.store.clone(),
            RedisProbe::new(redis),
            Duration::from_millis(settings.server.health_check_interval_ms),
            state.metrics.clone(),
            stop.clone(),
        ));

        if settings.server.janitor_interval_seconds > 0 {
            tasks.spawn(crate::workers::janitor::run(
                state.store.clone(),
                state.clock.clone(),
                state.tenants.clone(),
                Duration::from_secs(settings.server.janitor_interval_seconds),
                stop.clone(),
            ));
        }

        tasks.spawn(crate::workers::janitor::apply_held_reports(
            state.store.clone(),
            state.clock.clone(),
            state.metrics.clone(),
            Duration::from_secs(1),
            stop.clone(),
        ));

        // The OTLP exporter reads the backlog gauges as last refreshed; /metrics refreshes
        // them per scrape, this for when nothing scrapes.
        if crate::telemetry::otlp_enabled() {
            tasks.spawn(crate::http::metrics::refresh_every(
                state.clone(),
                Duration::from_secs(10),
                stop.clone(),
            ));
        }

        // Without `dispatch.background` the workers run only when stepped (`workers::step`).
        if let Some(e) = engine.clone().filter(|e| e.settings.background) {
            crate::workers::start(e.clone(), &tasks, stop.clone());
            tasks.spawn(crate::workers::confirm::run(e, stop.clone()));
        }

        let http_router = crate::http::router(state.clone());
        tasks.spawn(
            axum::serve(
                http_listener,
                http_router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
        );
        tasks.close();

        let callers = Arc::new(
            crate::auth::Callers::from_settings(&settings.auth.credentials)
                .map_err(|e| anyhow::anyhow!("configuration: {e}"))?,
        );
        if callers.is_empty() {
            tracing::warn!("no credentials configured (auth.credentials): every call but health and reflection is UNAUTHENTICATED");
        }
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        // Turns new calls away once draining, and counts the calls the drain waits for.
        let drain = crate::shutdown::Drain::new(state.draining.clone());
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .context("grpc.tls: the certificate, key or client CA cannot be used")?;
        }
        let server = builder
            // hyper's h2 closes a connection (GOAWAY ENHANCE_YOUR_CALM, "too_many_data_frames")
            // once the small DATA frames it buffers cost more than half the connection window.
            // A small stream window bounds what one stream can buffer (a producer waits for
            // WINDOW_UPDATE instead); a large connection window raises the budget, so streams
            // of small inventory events are slowed down by flow control, never cut.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .layer(grpc::layers::observe::Observe::new(state.metrics.clone()))
            .layer(drain.clone())
            .layer(grpc::layers::auth::Authenticate::new(callers))
            .layer(grpc::layers::limit::Limit::new(
                settings.grpc.max_concurrent_calls,
                Duration::from_millis(settings.grpc.shed_retry_after_ms),
            ))
            .layer(grpc::layers::deadline::Deadline::new(
                Duration::from_millis(settings.grpc.max_call_ms),
                grpc::layers::deadline::streaming_paths(&[
                    crate::proto::FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                ]),
            ))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(WaitlistServiceServer::new(
                grpc::waitlist::WaitlistApi::new(state.clone()),
            ))
            .add_service(EligibilityServiceServer::new(
                grpc::eligibility::EligibilityApi::new(state.clone()),
            ))
            .add_service(DispatchServiceServer::new(
                grpc::dispatch::DispatchApi::new(state.clone()),
            ))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = drain_rx.await;
            });
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r.map_err(anyhow::Error::from),
            _ = shutdown => {
                // One deadline for every part of the drain, counted from the signal.
                let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
                let deadline = tokio::time::Instant::now() + grace;
                // Load balancers hear it first, before anything else happens; then new calls are
                // turned away (health still answers), open inventory and watch streams end, and
                // every background task is told to stop (workers stop claiming).
                health::set_all(&reporter, ServingStatus::NotServing).await;
                state.draining.cancel();
                let drained = tokio::time::timeout_at(deadline, async {
                    tokio::join!(
                        async {
                            // The watcher may have set a status just before it stopped.
                            let _ = watcher.await;
                            health::set_all(&reporter, ServingStatus::NotServing).await;
                        },
                        // Texts being handed over finish and are recorded; nothing new is
                        // claimed. The HTTP listener finishes its requests.
                        tasks.wait(),
                        drain.idle(),
                    )
                });
                // The server keeps accepting meanwhile, so a new connection is answered
                // (UNAVAILABLE, or NOT_SERVING from health), never left hanging.
                tokio::select! {
                    r = &mut server => return r.map_err(anyhow::Error::from),
                    d = drained => if d.is_err() {
                        tracing::warn!(?grace, "calls or texts still in flight at the end of the grace period; their leases will be reconciled");
                    },
                }
                // Close the connections (GOAWAY); nothing is left to wait for but the goodbyes.
                let _ = drain_tx.send(());
                match tokio::time::timeout_at(deadline, &mut server).await {
                    Ok(r) => r.map_err(anyhow::Error::from),
                    Err(_) => {
                        tracing::warn!(?grace, "connections still open at the end of the grace period");
                        Ok(())
                    }
                }
            }
        };
        tracing::info!("server stopped");
        result
    }

    /// The shared state (tests reach the store through it).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// The dispatch engine, when this process dispatches: what `workers::step` drives.
    pub fn engine(&self) -> Option<Arc<crate::workers::Engine>> {
        self.engine.clone()
    }
}
