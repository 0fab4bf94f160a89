//! Logging, set up once per process. `RUST_LOG` filters (default `info`); `RESTOCK_LOG_FORMAT=json`
//! gives one JSON object per line for log shippers. Phone numbers never reach a log line whole:
//! code logs `Phone::redacted()`, and request bodies are never logged. Logs go to stderr; stdout
//! carries only what a script reads (the listening address).

use tracing::Subscriber;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Installs the global subscriber. Tests call it too; only the first call counts, and their
/// output shows only with `TEST_LOG` set.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = || log_filter(rust_log.as_deref());
    let json = std::env::var("RESTOCK_LOG_FORMAT").is_ok_and(|v| v == "json");
    let registry = tracing_subscriber::registry();
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
            tracing::debug!(target: "restock::dispatch", "our own debug line");
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
