//! Logging, traces and metrics, set up once per process. Traces and metrics go out over OTLP
//! when `telemetry.otlp_endpoint` is set (off by default, and then nothing of OpenTelemetry
//! runs; `/metrics` is there either way).
//! Logging: `RUST_LOG` filters (default `info`); `RESTOCK_LOG_FORMAT=json`
//! gives one JSON object per line for log shippers. Phone numbers never reach a log line whole:
//! code logs `Phone::redacted()`, and request bodies are never logged. Logs go to stderr; stdout
//! carries only what a script reads (the listening address).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Installs the global subscriber. Tests call it too; only the first call counts, and their
/// output shows only with `TEST_LOG` set.
pub fn init() {
    install(None);
}

/// Keeps the OpenTelemetry pipelines of [`init_with_otlp`] running; dropping it flushes the
/// spans and metrics not yet exported and stops them.
pub struct OtlpGuard(SdkTracerProvider, SdkMeterProvider);

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("restock: flushing traces: {e}");
        }
        if let Err(e) = self.1.shutdown() {
            eprintln!("restock: flushing metrics: {e}");
        }
    }
}

/// Whether spans go out over OTLP in this process: when not, nothing reads or writes trace
/// context (no `traceparent` is parsed nor sent), so tracing costs nothing.
pub fn otlp_enabled() -> bool {
    OTLP_ON.load(Ordering::Relaxed)
}

static OTLP_ON: AtomicBool = AtomicBool::new(false);

/// [`init`], with traces sent over OTLP/gRPC to `endpoint` (a collector, e.g.
/// `http://127.0.0.1:4317`) when one is given. Must run inside the Tokio runtime: the exporter
/// and its batch processor live on it.
pub fn init_with_otlp(endpoint: Option<&str>) -> anyhow::Result<Option<OtlpGuard>> {
    let Some(endpoint) = endpoint else {
        install(None);
        return Ok(None);
    };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint ({endpoint}): {e}"))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = || {
        opentelemetry_sdk::Resource::builder()
            .with_service_name("restock")
            .build()
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource())
        .build();
    // Metrics: the same instruments as /metrics (see `Metrics::export_otlp`), pushed every
    // minute (`OTEL_METRIC_EXPORT_INTERVAL`, in ms, changes it), cumulative like Prometheus.
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint ({endpoint}): {e}"))?;
    let reader =
        opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
            metric_exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let meters = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource())
        .build();
    opentelemetry::global::set_meter_provider(meters.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    install(Some(provider.tracer("restock")));
    OTLP_ON.store(true, Ordering::Relaxed);
    Ok(Some(OtlpGuard(provider, meters)))
}

/// What goes out over OTLP: restock's own spans (RPCs, inventory events, planning passes, send
/// batches, provider calls), not every library's.
fn otlp_filter() -> Targets {
    Targets::new()
        .with_target("restock", LevelFilter::INFO)
        .with_target("restock_store", LevelFilter::INFO)
        .with_target("restock_sms", LevelFilter::INFO)
}

fn install(tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = || log_filter(rust_log.as_deref());
    let json = std::env::var("RESTOCK_LOG_FORMAT").is_ok_and(|v| v == "json");
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(otlp_filter())
    });
    let registry = tracing_subscriber::registry().with(otel);
    let result = if cfg!(test) || std::env::var_os("RESTOCK_TEST").is_some() {
        if std::env::var_os("TEST_LOG").is_some() {
            registry
                .with(fmt::layer().with_test_writer().with_filter(filter()))
                .try_init()
        } else {
            Ok(())
        }
    } else if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .try_init()
    };
    let _ = result;
}

/// The trace context a call's metadata carries (W3C `traceparent`), if tracing is on.
pub fn remote_context(headers: &tonic::codegen::http::HeaderMap) -> Option<opentelemetry::Context> {
    if !otlp_enabled() {
        return None;
    }
    struct Headers<'a>(&'a tonic::codegen::http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    headers
        .contains_key("traceparent")
        .then(|| opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers))))
}

/// The W3C `traceparent` of `span`, for a request going out or a row that a later span links
/// to; none when tracing is off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !otlp_enabled() {
        return None;
    }
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a stored `traceparent` names, to link to.
pub fn parse_traceparent(value: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = value.split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Crates that log what they carry below `info`: tokio-postgres logs every statement's
/// parameters at debug (phone numbers among them), the HTTP and Redis clients their requests.
/// Their debug and trace lines are never shown, whatever `RUST_LOG` says.
const CLAMPED_TO_INFO: &[&str] = &[
    "tokio_postgres",
    "postgres_protocol",
    "deadpool_postgres",
    "refinery_core",
    "redis",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "tower_http",
];

/// What `RUST_LOG` lets through (`info` when unset or unreadable), with [`CLAMPED_TO_INFO`]
/// held at `info` at most. The clamp is a second filter both must pass, so no directive (not
/// even a more specific one such as `tokio_postgres::query=trace`) lifts it.
fn log_filter<S>(rust_log: Option<&str>) -> impl Filter<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let wanted = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let clamp = CLAMPED_TO_INFO.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, name| targets.with_target(*name, LevelFilter::INFO),
    );
    wanted.and(clamp)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything a subscriber writes, for reading back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_with(rust_log: &str) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(log_filter(Some(rust_log))),
        );
        tracing::subscriber::with_default(subscriber, || {
            // What tokio-postgres logs for every statement at debug level.
            tracing::debug!(
                target: "tokio_postgres::query",
                "executing statement s12 with parameters: [\"demo\", \"+14155550132\"]"
            );
            tracing::info!(target: "tokio_postgres::connection", "connection info kept");
            tracing::debug!(target: "restock::workers", "our own debug line");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn statement_parameters_never_reach_the_log_whatever_rust_log_says() {
        for rust_log in [
            "debug",
            "trace",
            "debug,tokio_postgres=debug",
            "tokio_postgres::query=trace,debug",
        ] {
            let out = logged_with(rust_log);
            assert!(!out.contains("+14155550132"), "RUST_LOG={rust_log}: {out}");
            assert!(
                out.contains("connection info kept"),
                "RUST_LOG={rust_log}: {out}"
            );
            assert!(
                out.contains("our own debug line"),
                "RUST_LOG={rust_log}: {out}"
            );
        }
    }
}
