//! Configuration: built-in defaults, then an optional file, then `RESTOCK__*` environment
//! variables (and `DATABASE_URL` / `REDIS_URL` as they are). A bad value fails at start with a
//! message naming its key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use restock_domain::TenantPolicy;
use secrecy::{ExposeSecret, SecretString};
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
    pub http: HttpSettings,
    pub sms: SmsSettings,
    pub dispatch: DispatchSettings,
    /// Who may call the gRPC API.
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// Key of the hash that replaces erased personal data. Unset: a random key per process,
    /// fine for development, but hashes then differ between runs.
    #[serde(default)]
    pub erasure_key: Option<SecretString>,
    /// Brands by tenant id.
    pub tenants: BTreeMap<String, TenantPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    pub host: IpAddr,
    pub port: u16,
    /// The longest a unary call may run, whatever `grpc-timeout` the caller asked (a shorter
    /// one is honoured); past it, DEADLINE_EXCEEDED and nothing written. Streaming RPCs are
    /// bounded by the caller's deadline alone.
    #[serde(default = "default_max_call_ms")]
    pub max_call_ms: u64,
    /// Calls worked on at once (health and reflection aside); past it, RESOURCE_EXHAUSTED
    /// with a RetryInfo of `shed_retry_after_ms` instead of a queue.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    #[serde(default = "default_shed_retry_after_ms")]
    pub shed_retry_after_ms: u64,
    /// TLS, and with a client CA mutual TLS. Unset: plain text (HTTP/2 without TLS).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// The gRPC listener's TLS (`grpc.tls`). The files are read at start; a missing or bad one
/// stops the server with a message naming its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM (leaf first).
    pub cert_path: String,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
    /// CA certificates (PEM) that vouch for client certificates. Set: a client may present a
    /// certificate, one this CA did not sign fails the handshake, and a signed one is a
    /// credential when its fingerprint is some `auth.credentials.<name>.cert_sha256`. Unset:
    /// no client certificates (bearer tokens only).
    #[serde(default)]
    pub client_ca_path: Option<String>,
    /// With a client CA: refuse at the handshake a client that presents no certificate (then
    /// bearer tokens alone no longer get in). Default false: a certificate or a token.
    #[serde(default)]
    pub client_cert_required: bool,
}

fn default_max_call_ms() -> u64 {
    30_000
}

fn default_max_concurrent_calls() -> usize {
    512
}

fn default_shed_retry_after_ms() -> u64 {
    200
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
    /// Prefix of every key restock writes (caps), so several deployments or test runs can
    /// share one Redis.
    pub key_prefix: String,
}

fn default_janitor_interval() -> u64 {
    3_600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub shutdown_grace_seconds: u64,
    pub health_check_interval_ms: u64,
    /// How often the janitor settles finished releases' figures and forgets expired event ids,
    /// webhook receipts and held reports (a pass at start, then every interval). 0: never, for
    /// a process whose caller runs those passes itself (the tests).
    #[serde(default = "default_janitor_interval")]
    pub janitor_interval_seconds: u64,
    /// Key of the MAC that signs page tokens (a secret: from the environment,
    /// `RESTOCK__SERVER__PAGE_TOKEN_KEY`). Unset: a random key per process, so a token works
    /// only against the process that issued it; set the same key on every replica.
    #[serde(default)]
    pub page_token_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub host: IpAddr,
    /// 0 picks a free port (printed at start).
    pub port: u16,
    /// The base of the links in texts and of the provider's callbacks: what phones and the
    /// provider reach. Unset: this listener's own address (fine for development only).
    #[serde(default)]
    pub public_base_url: Option<String>,
    /// Tracked-link requests per second per client address, and the burst above it: a
    /// scanner or a script walking tokens is answered 429 instead of costing a query each.
    #[serde(default = "default_link_rate")]
    pub link_rate_per_second: u32,
    #[serde(default = "default_link_burst")]
    pub link_burst: u32,
}

fn default_link_rate() -> u32 {
    5
}

fn default_link_burst() -> u32 {
    20
}

impl HttpSettings {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// Credentials of the gRPC API, by caller name (what logs show).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub credentials: BTreeMap<String, crate::auth::CredentialSettings>,
}

/// Traces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// An OTLP/gRPC collector (`http://collector:4317`) the server sends its traces to.
    /// Unset: no traces, and nothing of OpenTelemetry runs.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

/// Which SMS provider sends the texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Each text as a JSON line in `log_path`; nothing leaves the machine.
    Log,
    /// A Twilio-compatible Messages API at `twilio_base_url`.
    Twilio,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    pub provider: ProviderKind,
    pub log_path: String,
    pub twilio_base_url: String,
    #[serde(default)]
    pub twilio_account_sid: String,
    /// Also the key of the webhook signatures. Set it through the environment
    /// (`RESTOCK__SMS__TWILIO_AUTH_TOKEN`), never in a file in the repository.
    #[serde(default)]
    pub twilio_auth_token: SecretString,
    /// A second Twilio account that takes texts over when the first rejects our account or
    /// sender, or cannot be reached (tenants name its sender in `fallback_sender_id`). Unset:
    /// a tenant's fallback sender is tried on the first account.
    #[serde(default)]
    pub fallback_twilio_account_sid: String,
    /// Through the environment only (`RESTOCK__SMS__FALLBACK_TWILIO_AUTH_TOKEN`); also checks
    /// the signatures of that account's webhooks.
    #[serde(default)]
    pub fallback_twilio_auth_token: SecretString,
    /// The fallback account's API; empty means `twilio_base_url`.
    #[serde(default)]
    pub fallback_twilio_base_url: String,
    /// How long the first sender rests after it failed, before texts try it again.
    #[serde(default = "default_fallback_cool_down_seconds")]
    pub fallback_cool_down_seconds: u64,
}

fn default_fallback_cool_down_seconds() -> u64 {
    30
}

fn default_express_max_texts() -> u32 {
    1_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    /// Whether this process plans releases and sends texts (a read-only replica may not).
    pub enabled: bool,
    /// Messages claimed per batch.
    pub batch_size: u32,
    /// Texts in flight to the provider at once, per process.
    pub concurrency: u32,
    /// Releases of at most this many texts are small: an express sender of their own texts
    /// them at once, however full the bulk batches are (0: no express lane).
    #[serde(default = "default_express_max_texts")]
    pub express_max_texts: u32,
    /// How long a claimed message is this process's; past it, another process reconciles it.
    pub lease_seconds: u32,
    /// Attempts at a text before a transient failure becomes final.
    pub max_attempts: u32,
    /// The first retry's delay; doubled per attempt, with full jitter, at most 5 minutes.
    pub retry_base_ms: u64,
    /// How often an idle scheduler looks for work (it is also woken by restocks).
    pub poll_interval_ms: u64,
    /// Whether the planner, scheduler, senders and confirmation loop run in the background.
    /// Off, nothing is planned or sent until a caller steps the workers itself
    /// (`crate::workers::step`): tests do, to drive a release one pass at a time.
    pub background: bool,
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
        if self.grpc.max_call_ms == 0 {
            return bad("grpc.max_call_ms", "must be at least 1");
        }
        if self.grpc.max_concurrent_calls == 0 {
            return bad("grpc.max_concurrent_calls", "must be at least 1");
        }
        if self.http.link_rate_per_second == 0 {
            return bad("http.link_rate_per_second", "must be at least 1");
        }
        if self.http.link_burst == 0 {
            return bad("http.link_burst", "must be at least 1");
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
            for (key, template) in [
                ("message_template", &policy.message_template),
                ("reminder_template", &policy.reminder_template),
            ] {
                if let Err(why) = restock_sms::template::validate(template) {
                    return bad(&format!("tenants.{id}.{key}"), &why.to_string());
                }
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
        self.validate_auth()?;
        if let Some(e) = &self.telemetry.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return bad(
                    "telemetry.otlp_endpoint",
                    "must be an http:// or https:// URL",
                );
            }
        }
        if self.sms.provider == ProviderKind::Twilio
            && (self.sms.twilio_account_sid.is_empty()
                || self.sms.twilio_auth_token.expose_secret().is_empty())
        {
            return bad(
                "sms.twilio_auth_token",
                "the twilio provider needs sms.twilio_account_sid and sms.twilio_auth_token",
            );
        }
        // The development webhook key is public: only webhooks nobody else can reach may trust it.
        for (key, token) in [
            ("sms.twilio_auth_token", &self.sms.twilio_auth_token),
            (
                "sms.fallback_twilio_auth_token",
                &self.sms.fallback_twilio_auth_token,
            ),
        ] {
            if token.expose_secret() == crate::auth::DEV_WEBHOOK_TOKEN
                && !self.http.host.is_loopback()
            {
                return bad(
                    key,
                    "the development webhook token is published in config/dev.toml and is \
                     refused while http.host is not a loopback address",
                );
            }
        }
        let d = &self.dispatch;
        for (key, value) in [
            ("dispatch.batch_size", d.batch_size),
            ("dispatch.concurrency", d.concurrency),
            ("dispatch.lease_seconds", d.lease_seconds),
            ("dispatch.max_attempts", d.max_attempts),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if d.poll_interval_ms == 0 {
            return bad("dispatch.poll_interval_ms", "must be at least 1");
        }
        if self
            .erasure_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 16)
        {
            return bad("erasure_key", "must be at least 16 characters");
        }
        if self
            .server
            .page_token_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 16)
        {
            return bad("server.page_token_key", "must be at least 16 characters");
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let callers =
            crate::auth::Callers::from_settings(&self.auth.credentials).map_err(ConfigError)?;
        let client_ca = self
            .grpc
            .tls
            .as_ref()
            .and_then(|t| t.client_ca_path.as_ref());
        if callers.has_certs() && client_ca.is_none() {
            let name = self
                .auth
                .credentials
                .iter()
                .find(|(_, c)| c.cert_sha256.is_some())
                .map_or("", |(n, _)| n.as_str());
            return Err(ConfigError(format!(
                "auth.credentials.{name}.cert_sha256: client certificates need TLS with a \
                 client CA (grpc.tls.cert_path, grpc.tls.key_path, grpc.tls.client_ca_path)"
            )));
        }
        if let Some(tls) = &self.grpc.tls {
            if tls.client_cert_required && tls.client_ca_path.is_none() {
                return Err(ConfigError(
                    "grpc.tls.client_cert_required: needs grpc.tls.client_ca_path".into(),
                ));
            }
        }
        let dev_hash = crate::auth::token_hash(crate::auth::DEV_TOKEN);
        for (name, c) in &self.auth.credentials {
            let key = format!("auth.credentials.{name}");
            for t in c.tenants.0.iter().filter(|t| *t != "*") {
                if !self.tenants.contains_key(t) {
                    return Err(ConfigError(format!(
                        "{key}.tenants: \"{t}\" is not a configured tenant"
                    )));
                }
            }
            if c.tenants.0.is_empty() || c.scopes.0.is_empty() {
                return Err(ConfigError(format!(
                    "{key}: tenants and scopes must each name at least one (or *)"
                )));
            }
            // The development token is public (README): only a server nobody else can reach
            // may accept it.
            if c.token_sha256
                .as_deref()
                .is_some_and(|h| h.trim().eq_ignore_ascii_case(&dev_hash))
                && !self.grpc.host.is_loopback()
            {
                return Err(ConfigError(format!(
                    "{key}.token_sha256: the development token is published in the README and \
                     is refused while grpc.host ({}) is not a loopback address; configure a \
                     credential of your own",
                    self.grpc.host
                )));
            }
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
    fn secrets_never_show_in_debug_output() {
        let secrets = [
            (
                "RESTOCK__SMS__TWILIO_AUTH_TOKEN",
                "primary-provider-token-1f2e",
            ),
            (
                "RESTOCK__SMS__FALLBACK_TWILIO_AUTH_TOKEN",
                "fallback-provider-token-9a8b",
            ),
            ("RESTOCK__ERASURE_KEY", "erasure-key-0123456789abcdef"),
            (
                "RESTOCK__SERVER__PAGE_TOKEN_KEY",
                "page-token-key-0123456789abcdef",
            ),
        ];
        let s = Settings::load_from(None, env(&secrets)).unwrap();
        assert_eq!(
            s.sms.twilio_auth_token.expose_secret(),
            "primary-provider-token-1f2e"
        );
        let printed = format!("{s:?} {s:#?}");
        for (var, value) in secrets {
            assert!(!printed.contains(value), "{var} printed: {printed}");
        }
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

    #[test]
    fn a_bad_quiet_hours_window_fails_loading_and_names_its_key() {
        for (var, value, key) in [
            (
                "RESTOCK__TENANTS__DEMO__QUIET_HOURS_START",
                "8am",
                "quiet_hours_start",
            ),
            (
                "RESTOCK__TENANTS__DEMO__QUIET_HOURS_END",
                "25:00",
                "quiet_hours_end",
            ),
        ] {
            let e = Settings::load_from(None, env(&[(var, value)])).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(&format!("tenants.demo.{key}")), "{e}");
            assert!(e.contains("HH:MM"), "{e}");
        }
        let s = Settings::load_from(
            None,
            env(&[
                ("RESTOCK__TENANTS__DEMO__QUIET_HOURS_START", "22:00"),
                ("RESTOCK__TENANTS__DEMO__QUIET_HOURS_END", "06:30"),
            ]),
        )
        .unwrap();
        let (start, end) = s.tenants["demo"].quiet_window();
        assert_eq!(
            (start.to_string(), end.to_string()),
            ("22:00:00".into(), "06:30:00".into())
        );
    }

    fn credential(name: &str, hash: &str, tenants: &str, scopes: &str) -> Vec<(String, String)> {
        let key = format!("RESTOCK__AUTH__CREDENTIALS__{name}");
        env(&[
            (&format!("{key}__TOKEN_SHA256"), hash),
            (&format!("{key}__TENANTS"), tenants),
            (&format!("{key}__SCOPES"), scopes),
        ])
    }

    #[test]
    fn credentials_come_from_the_environment_and_bad_ones_name_their_key() {
        let hash = crate::auth::token_hash("t0ken");
        let s = Settings::load_from(
            None,
            credential("SHOP", &hash, "demo", "read,waitlist.write"),
        )
        .unwrap();
        let c = &s.auth.credentials["shop"];
        assert_eq!(c.scopes.0, ["read", "waitlist.write"]);
        let e = Settings::load_from(None, credential("SHOP", &hash, "nope", "read")).unwrap_err();
        assert!(
            e.to_string().contains("auth.credentials.shop.tenants"),
            "{e}"
        );
        let e = Settings::load_from(None, credential("SHOP", &hash, "*", "write")).unwrap_err();
        assert!(
            e.to_string().contains("auth.credentials.shop.scopes"),
            "{e}"
        );
        let e = Settings::load_from(None, credential("SHOP", "abc", "*", "*")).unwrap_err();
        assert!(
            e.to_string().contains("auth.credentials.shop.token_sha256"),
            "{e}"
        );
    }

    #[test]
    fn the_development_webhook_token_is_refused_beyond_loopback_and_its_tenants_text_all_day() {
        let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev.toml");
        let s = Settings::load_from(Some(Path::new(dev)), env(&[])).unwrap();
        assert_eq!(
            s.sms.twilio_auth_token.expose_secret(),
            crate::auth::DEV_WEBHOOK_TOKEN
        );
        for t in ["sim-immediate", "sim-staged", "sim-proportional"] {
            let p = &s.tenants[t];
            assert_eq!(p.quiet_hours_start, p.quiet_hours_end, "{t} texts all day");
        }
        let e = Settings::load_from(
            Some(Path::new(dev)),
            env(&[("RESTOCK__HTTP__HOST", "0.0.0.0")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("sms.twilio_auth_token"), "{e}");
    }

    #[test]
    fn the_development_credential_is_refused_beyond_loopback() {
        let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev.toml");
        let s = Settings::load_from(Some(Path::new(dev)), env(&[])).unwrap();
        let c = &s.auth.credentials["dev"];
        assert_eq!(
            c.token_sha256.as_deref(),
            Some(crate::auth::token_hash(crate::auth::DEV_TOKEN).as_str())
        );
        for host in ["0.0.0.0", "10.1.2.3", "::"] {
            let e =
                Settings::load_from(Some(Path::new(dev)), env(&[("RESTOCK__GRPC__HOST", host)]))
                    .unwrap_err();
            assert!(
                e.to_string().contains("auth.credentials.dev.token_sha256"),
                "{e}"
            );
        }
        // The same hash under another name is the same public token.
        let hash = crate::auth::token_hash(crate::auth::DEV_TOKEN);
        let mut vars = credential("OPS", &hash, "*", "*");
        vars.push(("RESTOCK__GRPC__HOST".into(), "0.0.0.0".into()));
        let e = Settings::load_from(None, vars).unwrap_err();
        assert!(
            e.to_string().contains("auth.credentials.ops.token_sha256"),
            "{e}"
        );
    }

    #[test]
    fn certificate_credentials_need_tls_with_a_client_ca() {
        let fingerprint = crate::auth::cert_fingerprint(b"a certificate");
        let cert = |extra: &[(&str, &str)]| {
            let mut vars = env(&[
                (
                    "RESTOCK__AUTH__CREDENTIALS__GATEWAY__CERT_SHA256",
                    &fingerprint,
                ),
                ("RESTOCK__AUTH__CREDENTIALS__GATEWAY__TENANTS", "*"),
                ("RESTOCK__AUTH__CREDENTIALS__GATEWAY__SCOPES", "read"),
            ]);
            vars.extend(env(extra));
            Settings::load_from(None, vars)
        };
        let e = cert(&[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("auth.credentials.gateway.cert_sha256"),
            "{e}"
        );
        let e = cert(&[
            ("RESTOCK__GRPC__TLS__CERT_PATH", "server.pem"),
            ("RESTOCK__GRPC__TLS__KEY_PATH", "server.key"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("grpc.tls.client_ca_path"), "{e}");
        let s = cert(&[
            ("RESTOCK__GRPC__TLS__CERT_PATH", "server.pem"),
            ("RESTOCK__GRPC__TLS__KEY_PATH", "server.key"),
            ("RESTOCK__GRPC__TLS__CLIENT_CA_PATH", "clients-ca.pem"),
        ])
        .unwrap();
        let tls = s.grpc.tls.unwrap();
        assert_eq!(tls.client_ca_path.as_deref(), Some("clients-ca.pem"));
        assert!(!tls.client_cert_required);
        let e = Settings::load_from(
            None,
            env(&[
                ("RESTOCK__GRPC__TLS__CERT_PATH", "server.pem"),
                ("RESTOCK__GRPC__TLS__KEY_PATH", "server.key"),
                ("RESTOCK__GRPC__TLS__CLIENT_CERT_REQUIRED", "true"),
            ]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("grpc.tls.client_cert_required"),
            "{e}"
        );
    }
}
