//! Configuration: built-in defaults, then an optional file, then `RESTOCK__*` environment
//! variables (and `DATABASE_URL` / `REDIS_URL` as they are). A bad value fails at start with a
//! message naming its key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use restock_domain::TenantPolicy;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Every setting of the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub grpc: GrpcSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub server: ServerSettings,
    /// Key of the hash that replaces erased personal data. Unset: a random key per process,
    /// fine for development, but hashes then differ between runs.
    #[serde(default)]
    pub erasure_key: Option<String>,
    /// Brands by tenant id.
    pub tenants: BTreeMap<String, TenantPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    pub host: IpAddr,
    pub port: u16,
}

impl GrpcSettings {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub shutdown_grace_seconds: u64,
    pub health_check_interval_ms: u64,
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Reads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(File::from(file).required(true));
        }
        let restock_env: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("RESTOCK__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("RESTOCK")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(restock_env)),
        );
        for (var, key) in [("DATABASE_URL", "database.url"), ("REDIS_URL", "redis.url")] {
            if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
                builder = builder
                    .set_override(key, v.clone())
                    .map_err(|e| ConfigError(format!("{var}: {e}")))?;
            }
        }
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return bad("database.url", "must be a postgres:// URL");
        }
        if let Err(e) = redis::Client::open(self.redis.url.as_str()) {
            return bad("redis.url", &e.to_string());
        }
        if self.tenants.is_empty() {
            return bad("tenants", "at least one tenant is required");
        }
        for (id, policy) in &self.tenants {
            if let Err(why) = policy.validate() {
                // `why` starts with the policy's own key: "tenants.demo.holdout_share: ...".
                return Err(ConfigError(format!("tenants.{id}.{why}")));
            }
        }
        for id in self.tenants.keys() {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok {
                return bad(
                    &format!("tenants.{id}"),
                    "a tenant id is 1-64 of a-z, 0-9, '-', '_'",
                );
            }
        }
        if self.erasure_key.as_deref().is_some_and(|k| k.len() < 16) {
            return bad("erasure_key", "must be at least 16 characters");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_usable() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.grpc.addr().to_string(), "127.0.0.1:50051");
        assert!(s.tenants.contains_key("demo"));
    }

    #[test]
    fn environment_overrides_and_urls_are_read_as_they_are() {
        let s = Settings::load_from(
            None,
            env(&[
                ("RESTOCK__GRPC__PORT", "6000"),
                ("RESTOCK__TENANTS__DEMO__DOUBLE_OPT_IN", "true"),
                ("DATABASE_URL", "postgres://u@h:1/db"),
            ]),
        )
        .unwrap();
        assert_eq!(s.grpc.port, 6000);
        assert!(s.tenants["demo"].double_opt_in);
        assert_eq!(s.database.url, "postgres://u@h:1/db");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = Settings::load_from(None, env(&[("RESTOCK__GRPC__PORT", "lots")])).unwrap_err();
        assert!(e.to_string().contains("grpc.port"), "{e}");
        let e =
            Settings::load_from(None, env(&[("RESTOCK__DATABASE__POOL_SIZE", "0")])).unwrap_err();
        assert!(e.to_string().contains("database.pool_size"), "{e}");
        let e = Settings::load_from(
            None,
            env(&[("RESTOCK__TENANTS__DEMO__HOLDOUT_SHARE", "0.9")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tenants.demo.holdout_share"), "{e}");
        let e = Settings::load_from(None, env(&[("REDIS_URL", "nope://x")])).unwrap_err();
        assert!(e.to_string().contains("redis.url"), "{e}");
    }
}
