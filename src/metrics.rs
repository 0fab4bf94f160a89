//! Process metrics, exposed on the HTTP listener's `/metrics` in the OpenMetrics text format
//! that Prometheus scrapes, and pushed over OTLP too when `telemetry.otlp_endpoint` is set
//! (the same names; see [`Metrics::export_otlp`]). Every label value comes from a small fixed
//! set (outcomes, scopes, webhook kinds) or from the configured tenants, so the number of
//! series stays bounded.

use std::sync::{Arc, OnceLock};

use opentelemetry::KeyValue;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use restock_domain::MessageStatus;

/// What `/metrics` answers with: the format [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantOutcome {
    tenant: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    service: String,
    method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about 65 s: most calls take milliseconds, a deadline cuts them at 30 s by default.
fn rpc_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

fn rpc_histogram() -> Histogram {
    Histogram::new(rpc_buckets())
}

/// 2.5 ms to about 20 s: a provider call is tens of milliseconds when well, seconds when not.
fn send_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0025, 2.0, 14)
}

/// 5 ms to about 20 min: the budget is 100 ms at p99, but quiet hours and staged waves
/// legitimately push first texts far later.
fn first_text_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 18)
}

/// 0.1 ms to about 3 s: a round trip on a LAN is well under a millisecond; the caps'
/// connection gives up after 2 s.
fn redis_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

/// The process's counters and histograms. The handles below share their values with the ones
/// in `registry` (they are reference-counted), so recording never touches the registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: Family<TenantOutcome, Counter>,
    send_seconds: Histogram,
    restock_to_first_text_seconds: Histogram,
    cap_denials: Family<ScopeLabel, Counter>,
    caps_given_back: Counter,
    releases_planned: Family<TenantLabel, Counter>,
    planned_recipients: Family<TenantLabel, Counter>,
    link_requests: Family<OutcomeLabel, Counter>,
    clicks: Family<TenantLabel, Counter>,
    webhook_calls: Family<KindOutcome, Counter>,
    rpc_calls: Family<RpcCode, Counter>,
    rpc_seconds: HistogramFamily<Rpc>,
    outbox: Family<StateLabel, Gauge>,
    oldest_due_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pool_max: Gauge,
    pool_open: Gauge,
    pool_idle: Gauge,
    pool_waiting: Gauge,
    redis_seconds: Histogram,
    dependencies: Family<DependencyLabel, Gauge>,
    /// The same measurements as OTel instruments, once [`Metrics::export_otlp`] ran; unset
    /// (tracing off), recording costs one atomic load more.
    otel: OnceLock<Otel>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The states of the outbox's backlog: a message not yet handed over.
pub const BACKLOG_STATES: [MessageStatus; 3] = [
    MessageStatus::Planned,
    MessageStatus::Deferred,
    MessageStatus::Sending,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let messages = Family::<TenantOutcome, Counter>::default();
        registry.register(
            "restock_messages",
            "Messages that reached an outcome, by tenant: at sending (sent, failed, \
             suppressed, skipped, unknown, deferred, retried, held_out), then as the provider \
             reports them (delivered, undelivered, failed)",
            messages.clone(),
        );
        let send_seconds = Histogram::new(send_buckets());
        registry.register_with_unit(
            "restock_provider_send",
            "Time of one hand-over of a text to the SMS provider",
            Unit::Seconds,
            send_seconds.clone(),
        );
        let restock_to_first_text_seconds = Histogram::new(first_text_buckets());
        registry.register_with_unit(
            "restock_restock_to_first_text",
            "From a restock (its inventory event committed) to its release's first text handed \
             to the provider",
            Unit::Seconds,
            restock_to_first_text_seconds.clone(),
        );
        let cap_denials = Family::<ScopeLabel, Counter>::default();
        registry.register(
            "restock_cap_denials",
            "Texts a frequency cap held back, by scope (phone, sender, tenant)",
            cap_denials.clone(),
        );
        let caps_given_back = Counter::default();
        registry.register(
            "restock_caps_given_back",
            "Phone cap tokens given back because their text was not handed to the provider after all",
            caps_given_back.clone(),
        );
        let releases_planned = Family::<TenantLabel, Counter>::default();
        registry.register(
            "restock_releases_planned",
            "Releases planned, by tenant",
            releases_planned.clone(),
        );
        let planned_recipients = Family::<TenantLabel, Counter>::default();
        registry.register(
            "restock_release_recipients",
            "Recipients in the plans of releases, by tenant",
            planned_recipients.clone(),
        );
        let link_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "restock_link_requests",
            "Requests of tracked links, by outcome (redirected, not_found, no_destination, \
             error)",
            link_requests.clone(),
        );
        let clicks = Family::<TenantLabel, Counter>::default();
        registry.register(
            "restock_link_clicks",
            "Clicks recorded on tracked links, by tenant",
            clicks.clone(),
        );
        let webhook_calls = Family::<KindOutcome, Counter>::default();
        registry.register(
            "restock_webhook_calls",
            "Calls of the SMS provider's webhooks, by kind (status, inbound) and outcome",
            webhook_calls.clone(),
        );
        let rpc_calls = Family::<RpcCode, Counter>::default();
        registry.register(
            "restock_grpc_calls",
            "gRPC calls finished, by service, method and status code (OK, INVALID_ARGUMENT, \
             UNAUTHENTICATED, ...; CANCELLED when the client went away)",
            rpc_calls.clone(),
        );
        let rpc_seconds: HistogramFamily<Rpc> = Family::new_with_constructor(rpc_histogram);
        registry.register_with_unit(
            "restock_grpc_call_duration",
            "Time of a gRPC call from its request to the end of its response (streams \
             included), by service and method",
            Unit::Seconds,
            rpc_seconds.clone(),
        );
        let outbox = Family::<StateLabel, Gauge>::default();
        registry.register(
            "restock_outbox_messages",
            "Messages not yet handed to the provider, by state (planned, deferred, sending), \
             read at scrape time",
            outbox.clone(),
        );
        let oldest_due_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "restock_outbox_oldest_due_age",
            "How long the oldest message due to be sent (planned or deferred, in an open wave) \
             has waited past its due time; 0 when none is late. Read at scrape time",
            Unit::Seconds,
            oldest_due_seconds.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "restock_db_pool_max_connections",
            "The most connections the Postgres pool opens (database.pool_size)",
            pool_max.clone(),
        );
        let pool_open = Gauge::default();
        registry.register(
            "restock_db_pool_connections",
            "Postgres connections open (idle or lent out), read at scrape time",
            pool_open.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "restock_db_pool_idle_connections",
            "Postgres connections open and idle, ready to lend, read at scrape time",
            pool_idle.clone(),
        );
        let pool_waiting = Gauge::default();
        registry.register(
            "restock_db_pool_waiting_requests",
            "Requests waiting for a Postgres connection (none idle, the pool at its most), read \
             at scrape time",
            pool_waiting.clone(),
        );
        let redis_seconds = Histogram::new(redis_buckets());
        registry.register_with_unit(
            "restock_redis_round_trip",
            "Time of one round trip to Redis of the frequency caps (a pipeline of cap scripts \
             for a send batch), failed ones included",
            Unit::Seconds,
            redis_seconds.clone(),
        );
        let dependencies = Family::<DependencyLabel, Gauge>::default();
        registry.register(
            "restock_dependency_up",
            "Whether a dependency answered the health check's last probe (1) or not (0), by \
             dependency: postgres (every service NOT_SERVING without it), redis (sending stops)",
            dependencies.clone(),
        );
        Self {
            registry,
            dependencies,
            pool_max,
            pool_open,
            pool_idle,
            pool_waiting,
            redis_seconds,
            otel: OnceLock::new(),
            outbox,
            oldest_due_seconds,
            rpc_calls,
            rpc_seconds,
            messages,
            send_seconds,
            restock_to_first_text_seconds,
            cap_denials,
            caps_given_back,
            releases_planned,
            planned_recipients,
            link_requests,
            clicks,
            webhook_calls,
        }
    }

    /// A message reached `outcome` (sent, failed, suppressed, skipped, unknown, deferred,
    /// retried, held_out).
    pub fn message_outcome(&self, tenant: &str, outcome: &str) {
        if let Some(o) = self.otel.get() {
            o.messages.add(
                1,
                &[
                    KeyValue::new("tenant", tenant.to_owned()),
                    KeyValue::new("outcome", outcome.to_owned()),
                ],
            );
        }
        self.messages
            .get_or_create(&TenantOutcome {
                tenant: tenant.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One hand-over to the provider took `seconds`.
    pub fn send_seconds(&self, seconds: f64) {
        if let Some(o) = self.otel.get() {
            o.send_seconds.record(seconds, &[]);
        }
        self.send_seconds.observe(seconds);
    }

    /// A cap denied a text; `scope` is phone, sender or tenant.
    pub fn cap_denied(&self, scope: &str) {
        if let Some(o) = self.otel.get() {
            o.cap_denials
                .add(1, &[KeyValue::new("scope", scope.to_owned())]);
        }
        self.cap_denials
            .get_or_create(&ScopeLabel {
                scope: scope.to_owned(),
            })
            .inc();
    }

    /// Phone cap tokens given back for texts that were not handed over after all.
    pub fn caps_given_back(&self, n: u64) {
        self.caps_given_back.inc_by(n);
    }

    /// From the restock (inventory event committed) to the release's first text handed over.
    pub fn restock_to_first_text_seconds(&self, seconds: f64) {
        if let Some(o) = self.otel.get() {
            o.first_text_seconds.record(seconds, &[]);
        }
        self.restock_to_first_text_seconds.observe(seconds);
    }

    /// Releases planned, with their recipient count.
    pub fn release_planned(&self, tenant: &str, recipients: u64) {
        if let Some(o) = self.otel.get() {
            let attrs = [KeyValue::new("tenant", tenant.to_owned())];
            o.releases_planned.add(1, &attrs);
            o.release_recipients.add(recipients, &attrs);
        }
        let tenant = TenantLabel {
            tenant: tenant.to_owned(),
        };
        self.releases_planned.get_or_create(&tenant).inc();
        self.planned_recipients
            .get_or_create(&tenant)
            .inc_by(recipients);
    }

    /// A tracked link was requested; `outcome` is redirected, not_found, no_destination or
    /// error.
    pub fn link_request(&self, outcome: &str) {
        if let Some(o) = self.otel.get() {
            o.link_requests
                .add(1, &[KeyValue::new("outcome", outcome.to_owned())]);
        }
        self.link_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A click was recorded on a text of `tenant`.
    pub fn link_click(&self, tenant: &str) {
        if let Some(o) = self.otel.get() {
            o.link_clicks
                .add(1, &[KeyValue::new("tenant", tenant.to_owned())]);
        }
        self.clicks
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .inc();
    }

    /// A provider webhook was called; `kind` is status or inbound.
    pub fn webhook_call(&self, kind: &str, outcome: &str) {
        if let Some(o) = self.otel.get() {
            o.webhook_calls.add(
                1,
                &[
                    KeyValue::new("kind", kind.to_owned()),
                    KeyValue::new("outcome", outcome.to_owned()),
                ],
            );
        }
        self.webhook_calls
            .get_or_create(&KindOutcome {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A gRPC call ended with `code` after `seconds`.
    pub fn rpc_finished(&self, service: &str, method: &str, code: tonic::Code, seconds: f64) {
        if let Some(o) = self.otel.get() {
            let service = KeyValue::new("service", service.to_owned());
            let method = KeyValue::new("method", method.to_owned());
            o.rpc_seconds
                .record(seconds, &[service.clone(), method.clone()]);
            o.rpc_calls.add(
                1,
                &[service, method, KeyValue::new("code", code_name(code))],
            );
        }
        let rpc = Rpc {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        self.rpc_seconds.get_or_create(&rpc).observe(seconds);
        self.rpc_calls
            .get_or_create(&RpcCode {
                service: rpc.service,
                method: rpc.method,
                code: code_name(code).to_owned(),
            })
            .inc();
    }

    /// The outbox's backlog as last read: `by_state` counts (a state not listed has none) and
    /// the wait of the oldest due message.
    pub fn outbox_backlog(&self, by_state: &[(MessageStatus, i64)], oldest_due_age_seconds: f64) {
        for state in BACKLOG_STATES {
            let n = by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.outbox
                .get_or_create(&StateLabel {
                    state: state.as_str().to_owned(),
                })
                .set(n);
        }
        self.oldest_due_seconds.set(oldest_due_age_seconds.max(0.0));
    }

    /// The Postgres pool as it is now.
    pub fn pool(&self, status: restock_store::PoolStatus) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.pool_max.set(n(status.max_size));
        self.pool_open.set(n(status.size));
        self.pool_idle.set(n(status.available));
        self.pool_waiting.set(n(status.waiting));
    }

    /// Whether `dependency` (postgres, redis) answered the last health probe.
    pub fn dependency_up(&self, dependency: &str, up: bool) {
        self.dependencies
            .get_or_create(&DependencyLabel {
                dependency: dependency.to_owned(),
            })
            .set(i64::from(up));
    }

    /// One round trip to Redis (the caps) took `seconds`.
    pub fn redis_round_trip(&self, seconds: f64) {
        if let Some(o) = self.otel.get() {
            o.redis_seconds.record(seconds, &[]);
        }
        self.redis_seconds.observe(seconds);
    }

    /// From now on, every measurement also goes to OTel instruments of `meter` (whose
    /// provider exports them over OTLP), under the names `/metrics` shows without their
    /// `_total` / `_seconds` suffixes, which an OTLP-to-Prometheus conversion adds back from
    /// the kind and unit. The gauges are read when the exporter collects: the pool from
    /// `pool`, the outbox as last refreshed ([`Metrics::outbox_backlog`]). Called once, when
    /// tracing is on; later calls change nothing.
    pub fn export_otlp(
        &self,
        meter: &opentelemetry::metrics::Meter,
        pool: impl Fn() -> restock_store::PoolStatus + Send + Sync + 'static,
    ) {
        let _ = self.otel.set(Otel::new(meter, self, Arc::new(pool)));
    }

    /// The exposition text (OpenMetrics, see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; a metric that fails to encode itself is a bug
            // worth a log line, not a failed scrape of everything else.
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

/// The OTel twins of the instruments above (see [`Metrics::export_otlp`]).
struct Otel {
    messages: opentelemetry::metrics::Counter<u64>,
    send_seconds: opentelemetry::metrics::Histogram<f64>,
    first_text_seconds: opentelemetry::metrics::Histogram<f64>,
    cap_denials: opentelemetry::metrics::Counter<u64>,
    releases_planned: opentelemetry::metrics::Counter<u64>,
    release_recipients: opentelemetry::metrics::Counter<u64>,
    link_requests: opentelemetry::metrics::Counter<u64>,
    link_clicks: opentelemetry::metrics::Counter<u64>,
    webhook_calls: opentelemetry::metrics::Counter<u64>,
    rpc_calls: opentelemetry::metrics::Counter<u64>,
    rpc_seconds: opentelemetry::metrics::Histogram<f64>,
    redis_seconds: opentelemetry::metrics::Histogram<f64>,
    /// Kept for as long as the metrics: their callbacks are what the exporter reads.
    _gauges: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otel")
    }
}

impl Otel {
    fn new(
        meter: &opentelemetry::metrics::Meter,
        m: &Metrics,
        pool: Arc<dyn Fn() -> restock_store::PoolStatus + Send + Sync>,
    ) -> Self {
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let seconds = |name: &'static str, help: &'static str, buckets: Vec<f64>| {
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_unit("s")
                .with_boundaries(buckets)
                .build()
        };
        let mut gauges: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        let outbox = m.outbox.clone();
        gauges.push(Box::new(
            meter
                .i64_observable_gauge("restock_outbox_messages")
                .with_description("Messages not yet handed to the provider, by state")
                .with_callback(move |o| {
                    for state in BACKLOG_STATES {
                        let n = outbox
                            .get_or_create(&StateLabel {
                                state: state.as_str().to_owned(),
                            })
                            .get();
                        o.observe(n, &[KeyValue::new("state", state.as_str())]);
                    }
                })
                .build(),
        ));
        let oldest = m.oldest_due_seconds.clone();
        gauges.push(Box::new(
            meter
                .f64_observable_gauge("restock_outbox_oldest_due_age")
                .with_description("How long the oldest due message has waited past its due time")
                .with_unit("s")
                .with_callback(move |o| o.observe(oldest.get(), &[]))
                .build(),
        ));
        let dependencies = m.dependencies.clone();
        gauges.push(Box::new(
            meter
                .i64_observable_gauge("restock_dependency_up")
                .with_description("Whether a dependency answered the last health probe")
                .with_callback(move |o| {
                    for dependency in ["postgres", "redis"] {
                        let up = dependencies
                            .get_or_create(&DependencyLabel {
                                dependency: dependency.to_owned(),
                            })
                            .get();
                        o.observe(up, &[KeyValue::new("dependency", dependency)]);
                    }
                })
                .build(),
        ));
        type Field = fn(&restock_store::PoolStatus) -> usize;
        let fields: [(&'static str, &'static str, Field); 4] = [
            (
                "restock_db_pool_max_connections",
                "The most connections the Postgres pool opens",
                |s| s.max_size,
            ),
            (
                "restock_db_pool_connections",
                "Postgres connections open",
                |s| s.size,
            ),
            (
                "restock_db_pool_idle_connections",
                "Postgres connections open and idle",
                |s| s.available,
            ),
            (
                "restock_db_pool_waiting_requests",
                "Requests waiting for a Postgres connection",
                |s| s.waiting,
            ),
        ];
        for (name, help, field) in fields {
            let pool = pool.clone();
            gauges.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        o.observe(i64::try_from(field(&pool())).unwrap_or(i64::MAX), &[])
                    })
                    .build(),
            ));
        }
        Self {
            messages: counter("restock_messages", "Messages that reached an outcome"),
            send_seconds: seconds(
                "restock_provider_send",
                "Time of one hand-over of a text to the SMS provider",
                send_buckets().collect(),
            ),
            first_text_seconds: seconds(
                "restock_restock_to_first_text",
                "From a restock to its release's first text handed to the provider",
                first_text_buckets().collect(),
            ),
            cap_denials: counter("restock_cap_denials", "Texts a frequency cap held back"),
            releases_planned: counter("restock_releases_planned", "Releases planned"),
            release_recipients: counter(
                "restock_release_recipients",
                "Recipients in the plans of releases",
            ),
            link_requests: counter("restock_link_requests", "Requests of tracked links"),
            link_clicks: counter("restock_link_clicks", "Clicks recorded on tracked links"),
            webhook_calls: counter("restock_webhook_calls", "Calls of the provider's webhooks"),
            rpc_calls: counter("restock_grpc_calls", "gRPC calls finished, by status code"),
            rpc_seconds: seconds(
                "restock_grpc_call_duration",
                "Time of a gRPC call",
                rpc_buckets().collect(),
            ),
            redis_seconds: seconds(
                "restock_redis_round_trip",
                "Time of one round trip to Redis of the frequency caps",
                redis_buckets().collect(),
            ),
            _gauges: gauges,
        }
    }
}

/// A status code as gRPC's documents spell it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_show_in_the_exposition() {
        let m = Metrics::new();
        m.message_outcome("demo", "sent");
        m.message_outcome("demo", "sent");
        m.cap_denied("phone");
        m.send_seconds(0.01);
        m.release_planned("demo", 40);
        m.webhook_call("status", "applied");
        m.rpc_finished(
            "restock.v1.WaitlistService",
            "Subscribe",
            tonic::Code::PermissionDenied,
            0.002,
        );
        m.redis_round_trip(0.0004);
        m.pool(restock_store::PoolStatus {
            max_size: 8,
            size: 3,
            available: 1,
            waiting: 0,
        });
        let text = m.render();
        assert!(
            text.contains("restock_redis_round_trip_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("restock_db_pool_max_connections 8"), "{text}");
        assert!(text.contains("restock_db_pool_connections 3"), "{text}");
        assert!(
            text.contains("restock_db_pool_idle_connections 1"),
            "{text}"
        );
        assert!(
            text.contains("restock_db_pool_waiting_requests 0"),
            "{text}"
        );
        assert!(
            text.contains("restock_grpc_calls_total{service=\"restock.v1.WaitlistService\",method=\"Subscribe\",code=\"PERMISSION_DENIED\"} 1"),
            "{text}"
        );
        assert!(text.contains("restock_grpc_call_duration_seconds_count{service=\"restock.v1.WaitlistService\",method=\"Subscribe\"} 1"));
        assert!(
            text.contains("restock_messages_total{tenant=\"demo\",outcome=\"sent\"} 2"),
            "{text}"
        );
        assert!(text.contains("restock_cap_denials_total{scope=\"phone\"} 1"));
        assert!(text.contains("restock_provider_send_seconds_count 1"));
        assert!(text.contains("restock_release_recipients_total{tenant=\"demo\"} 40"));
        assert!(text.contains("restock_webhook_calls_total{kind=\"status\",outcome=\"applied\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// Metrics with a sample in every family: an empty family writes nothing, not even its
    /// `# TYPE` line.
    fn populated() -> Metrics {
        let m = Metrics::new();
        m.message_outcome("demo", "sent");
        m.send_seconds(0.01);
        m.cap_denied("phone");
        m.restock_to_first_text_seconds(0.05);
        m.release_planned("demo", 1);
        m.link_request("redirected");
        m.link_click("demo");
        m.webhook_call("status", "applied");
        m.rpc_finished(
            "restock.v1.WaitlistService",
            "Subscribe",
            tonic::Code::Ok,
            0.001,
        );
        m.outbox_backlog(&[], 0.0);
        m.redis_round_trip(0.0001);
        m.dependency_up("postgres", true);
        m.pool(restock_store::PoolStatus {
            max_size: 1,
            size: 0,
            available: 0,
            waiting: 0,
        });
        m
    }

    /// The series names an exposition of `m` can have: from each `# TYPE` line, the name with
    /// the suffixes its type gives its samples.
    fn exported_series(m: &Metrics) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for line in m.render().lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names
    }

    /// Every `restock_...` name in `text` (PromQL, JSON or YAML).
    fn restock_names(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("restock_") {
            let boundary = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if boundary {
                names.insert(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
        names
    }

    #[test]
    fn the_dashboard_parses_and_charts_only_series_the_server_exports() {
        let exported = exported_series(&populated());
        let text = include_str!("../ops/dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut exprs = Vec::new();
        for panel in panels {
            let targets = panel["targets"]
                .as_array()
                .expect("every panel has targets");
            assert!(!targets.is_empty(), "{panel}");
            for t in targets {
                exprs.push(t["expr"].as_str().expect("a PromQL expr").to_string());
            }
        }
        let mut charted = std::collections::BTreeSet::new();
        for expr in &exprs {
            let names = restock_names(expr);
            assert!(!names.is_empty(), "{expr} charts no restock metric");
            for name in names {
                assert!(exported.contains(&name), "{expr}: {name} is not exported");
                charted.insert(name);
            }
        }
        // What SREs asked to see is there.
        for wanted in [
            "restock_grpc_calls_total",
            "restock_grpc_call_duration_seconds_bucket",
            "restock_outbox_messages",
            "restock_outbox_oldest_due_age_seconds",
            "restock_db_pool_connections",
            "restock_db_pool_waiting_requests",
            "restock_redis_round_trip_seconds_bucket",
            "restock_messages_total",
        ] {
            assert!(charted.contains(wanted), "no panel charts {wanted}");
        }
        // And the checker checks: a name that is not exported is caught.
        assert!(!exported.contains("restock_grpc_calls"));
        assert!(restock_names("rate(restock_nope_total[5m])").contains("restock_nope_total"));
    }

    #[test]
    fn alert_rules_name_only_series_the_server_exports_and_link_their_runbook() {
        let exported = exported_series(&populated());
        let rules = include_str!("../ops/alerts.yml");
        let runbook = include_str!("../ops/RUNBOOK.md");
        for name in restock_names(rules) {
            assert!(
                exported.contains(&name),
                "ops/alerts.yml: {name} is not exported"
            );
        }
        let alerts: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: "))
            .collect();
        assert!(alerts.len() >= 10, "{alerts:?}");
        for alert in alerts {
            let url = format!("runbook_url: \"ops/RUNBOOK.md#{}\"", alert.to_lowercase());
            assert!(rules.contains(&url), "{alert} has no {url}");
            assert!(
                runbook.contains(&format!("\n## {alert}\n")),
                "ops/RUNBOOK.md has no section {alert}"
            );
        }
    }

    #[test]
    fn the_readme_lists_every_metric() {
        let readme = include_str!("../README.md");
        let text = populated().render();
        let mut seen = 0;
        for line in text.lines() {
            let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' '))
            else {
                continue;
            };
            let listed = if kind == "counter" {
                format!("`{name}_total")
            } else {
                format!("`{name}")
            };
            assert!(readme.contains(&listed), "README does not list {name}");
            seen += 1;
        }
        assert!(seen >= 19, "{text}");
    }
}
