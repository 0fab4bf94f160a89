//! Logging, set up once per process. `RUST_LOG` filters (default `info`); `RESTOCK_LOG_FORMAT=json`
//! gives one JSON object per line for log shippers. Phone numbers never reach a log line whole:
//! code logs `Phone::redacted()`, and request bodies are never logged. Logs go to stderr; stdout
//! carries only what a script reads (the listening address).

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Tests call it too; only the first call counts, and their
/// output shows only with `TEST_LOG` set.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("RESTOCK_LOG_FORMAT").is_ok_and(|v| v == "json");
    let result = if cfg!(test) || std::env::var_os("RESTOCK_TEST").is_some() {
        if std::env::var_os("TEST_LOG").is_some() {
            fmt().with_env_filter(filter).with_test_writer().try_init()
        } else {
            Ok(())
        }
    } else if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
    } else {
        fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
    };
    let _ = result;
}
