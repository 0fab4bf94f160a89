//! Who is calling: credentials (bearer tokens, stored only as SHA-256 hashes, and client
//! certificates under mTLS, known by their SHA-256 fingerprints) mapped to a caller name, the
//! tenants it may act for and its scopes; and which scope every RPC needs.
//! The gRPC layer that applies it is `grpc::layers::auth`; the tenant check is
//! [`Caller::may_act_for`], called where a request's tenant is resolved (`AppState::tenant`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a credential may do. Flat: no scope implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Subscribe, confirm, unsubscribe, opt out / in, record purchases.
    WaitlistWrite,
    /// Inventory events and snapshots in.
    InventoryWrite,
    /// Pause, resume, cancel releases; merchandising exclusions.
    DispatchAdmin,
    /// Attribution reports.
    ReportsRead,
    /// Erase a phone's personal data.
    PrivacyErase,
    /// Every other read: subscriptions, stock, explain, dry run, releases, messages.
    Read,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::WaitlistWrite,
        Scope::InventoryWrite,
        Scope::DispatchAdmin,
        Scope::ReportsRead,
        Scope::PrivacyErase,
        Scope::Read,
    ];

    /// Its name in configuration and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WaitlistWrite => "waitlist.write",
            Scope::InventoryWrite => "inventory.write",
            Scope::DispatchAdmin => "dispatch.admin",
            Scope::ReportsRead => "reports.read",
            Scope::PrivacyErase => "privacy.erase",
            Scope::Read => "read",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scope each RPC of `restock.v1` needs, by gRPC path. One table, so a new RPC without a
/// line here is caught by a test (`every_rpc_of_the_proto_has_a_scope`) before it ships.
pub fn scope_of(path: &str) -> Option<Scope> {
    let (service, method) = path.strip_prefix("/restock.v1.")?.split_once('/')?;
    use Scope::*;
    Some(match (service, method) {
        ("WaitlistService", "Subscribe")
        | ("WaitlistService", "ConfirmSubscription")
        | ("WaitlistService", "Unsubscribe")
        | ("WaitlistService", "OptOut")
        | ("WaitlistService", "OptIn") => WaitlistWrite,
        ("WaitlistService", "GetSubscription")
        | ("WaitlistService", "ListSubscriptions")
        | ("WaitlistService", "GetWaitlistPosition")
        | ("WaitlistService", "GetConsentHistory") => Read,
        ("WaitlistService", "ErasePhone") => PrivacyErase,
        // Moving a whole waitlist is merchandising's call, like exclusions.
        ("WaitlistService", "TransferWaitlist") => DispatchAdmin,
        // A model service's scores change who is texted first: the waitlists' writers.
        ("WaitlistService", "SetPropensityScores") => WaitlistWrite,
        ("EligibilityService", "StreamInventory")
        | ("EligibilityService", "ReportInventory")
        | ("EligibilityService", "SyncInventory") => InventoryWrite,
        ("EligibilityService", "GetStock")
        | ("EligibilityService", "Explain")
        | ("EligibilityService", "DryRun")
        | ("EligibilityService", "ListExclusions") => Read,
        ("EligibilityService", "CreateExclusion")
        | ("EligibilityService", "DeleteExclusion")
        | ("EligibilityService", "SetSubstituteGroup")
        | ("EligibilityService", "DeleteSubstituteGroup") => DispatchAdmin,
        ("EligibilityService", "ListSubstituteGroups") => Read,
        ("DispatchService", "GetRelease")
        | ("DispatchService", "ListReleases")
        | ("DispatchService", "WatchRelease")
        | ("DispatchService", "GetMessage")
        | ("DispatchService", "ListMessages") => Read,
        ("DispatchService", "PauseRelease")
        | ("DispatchService", "ResumeRelease")
        | ("DispatchService", "CancelRelease") => DispatchAdmin,
        // An order service's purchases suppress and convert waitlist entries: the same
        // writers (storefront, checkout) as Subscribe.
        ("DispatchService", "RecordPurchase") => WaitlistWrite,
        // The storefront's aggregate page views: a feed, like inventory.
        ("DispatchService", "RecordProductViews") => InventoryWrite,
        ("DispatchService", "GetReleaseReport")
        | ("DispatchService", "GetVariantReport")
        | ("DispatchService", "GetPeriodReport")
        | ("DispatchService", "ExportMessages") => ReportsRead,
        _ => return None,
    })
}

/// Calls anyone may make: load balancers and SREs' tools must reach health and reflection
/// without a credential.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The tenants a caller may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    All,
    Only(BTreeSet<String>),
}

/// An authenticated caller, in the request's extensions for the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The credential's name in the configuration: what logs and traces show.
    pub name: String,
    pub tenants: Tenants,
    pub scopes: BTreeSet<Scope>,
}

impl Caller {
    pub fn may_act_for(&self, tenant_id: &str) -> bool {
        match &self.tenants {
            Tenants::All => true,
            Tenants::Only(set) => set.contains(tenant_id),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The SHA-256 of a token, as configuration holds it (lower-case hex).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The development token the README publishes (for `just run` and the demo tenants). Its hash
/// is refused whenever gRPC listens beyond loopback, whatever credential name carries it.
pub const DEV_TOKEN: &str = "restock-dev-token-do-not-use-in-production";

/// The webhook signing key `config/dev.toml` publishes so `just demo` can post delivery reports
/// and replies to a server on the log provider. Refused whenever HTTP listens beyond loopback.
pub const DEV_WEBHOOK_TOKEN: &str = "restock-dev-webhook-token-do-not-use-in-production";

/// A list in configuration: a TOML array, or one string with the names separated by commas or
/// spaces (what an environment variable can carry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            One(String),
        }
        Ok(Names(match Raw::deserialize(d)? {
            Raw::List(v) => v,
            Raw::One(s) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }))
    }
}

/// One credential as configured (`auth.credentials.<caller name>`): a bearer token, a client
/// certificate, or both (a caller moving from one to the other), at least one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// SHA-256 of the bearer token, hex: the token itself is never configured nor logged.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// SHA-256 fingerprint of the caller's client certificate (its DER bytes, hex; colons
    /// allowed, as `openssl x509 -noout -fingerprint -sha256` prints it). Counts only when
    /// gRPC serves TLS with a client CA (`grpc.tls.client_ca_path`), which vouches for the
    /// certificate at the handshake; the fingerprint then says which caller it is. A
    /// fingerprint rather than a subject name: a name can be issued again by the CA to
    /// someone else, a fingerprint names one certificate (rotating it means configuring the
    /// new one, both for the overlap).
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// Tenant ids, or `*` for every tenant.
    pub tenants: Names,
    /// Scope names, or `*` for every scope.
    pub scopes: Names,
}

/// Callers by the hash of their token and by the fingerprint of their certificate.
#[derive(Debug, Default)]
pub struct Callers {
    by_hash: HashMap<[u8; 32], Arc<Caller>>,
    by_cert: HashMap<[u8; 32], Arc<Caller>>,
}

/// A SHA-256 in hex (any case, colons between bytes allowed) as its 32 bytes.
fn parse_sha256(hex_digits: &str) -> Option<[u8; 32]> {
    let digits: String = hex_digits
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// The SHA-256 fingerprint of a certificate (its DER bytes), lower-case hex, as
/// `auth.credentials.<name>.cert_sha256` holds it.
pub fn cert_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl Callers {
    /// Builds the table from checked settings (see `Settings::validate`, which names a bad key).
    pub fn from_settings<'a>(
        credentials: impl IntoIterator<Item = (&'a String, &'a CredentialSettings)>,
    ) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        let mut by_cert = HashMap::new();
        for (name, c) in credentials {
            let key = format!("auth.credentials.{name}");
            let hash = c
                .token_sha256
                .as_deref()
                .map(|h| {
                    parse_sha256(h).ok_or_else(|| {
                        format!("{key}.token_sha256: must be 64 hex digits (SHA-256)")
                    })
                })
                .transpose()?;
            let cert = c
                .cert_sha256
                .as_deref()
                .map(|h| {
                    parse_sha256(h).ok_or_else(|| {
                        format!(
                            "{key}.cert_sha256: must be 64 hex digits (SHA-256), colons allowed"
                        )
                    })
                })
                .transpose()?;
            if hash.is_none() && cert.is_none() {
                return Err(format!(
                    "{key}: needs token_sha256 (a bearer token) or cert_sha256 (a client certificate)"
                ));
            }
            let tenants = if c.tenants.0.iter().any(|t| t == "*") {
                Tenants::All
            } else {
                Tenants::Only(c.tenants.0.iter().cloned().collect())
            };
            let scopes = if c.scopes.0.iter().any(|s| s == "*") {
                Scope::ALL.into_iter().collect()
            } else {
                c.scopes
                    .0
                    .iter()
                    .map(|s| {
                        Scope::parse(s).ok_or_else(|| {
                            format!(
                                "{key}.scopes: unknown scope \"{s}\" (known: {}, or *)",
                                Scope::ALL.map(Scope::as_str).join(", ")
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            let caller = Arc::new(Caller {
                name: name.clone(),
                tenants,
                scopes,
            });
            if let Some(hash) = hash {
                if by_hash.insert(hash, caller.clone()).is_some() {
                    return Err(format!(
                        "{key}.token_sha256: the same token as another credential"
                    ));
                }
            }
            if let Some(cert) = cert {
                if by_cert.insert(cert, caller).is_some() {
                    return Err(format!(
                        "{key}.cert_sha256: the same certificate as another credential"
                    ));
                }
            }
        }
        Ok(Self { by_hash, by_cert })
    }

    /// The caller a client certificate (DER, already verified against the client CA by the
    /// TLS handshake) belongs to.
    pub fn authenticate_cert(&self, der: &[u8]) -> Option<Arc<Caller>> {
        let fingerprint: [u8; 32] = Sha256::digest(der).into();
        self.by_cert.get(&fingerprint).cloned()
    }

    /// The caller a presented token belongs to. Hashing first makes the lookup's timing
    /// independent of how close a guess is.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Caller>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty() && self.by_cert.is_empty()
    }

    /// Whether any credential is a client certificate (they need TLS with a client CA).
    pub fn has_certs(&self) -> bool {
        !self.by_cert.is_empty()
    }
}

/// A client-side interceptor adding `authorization: Bearer <token>` to every call: for tests,
/// the bench and internal Rust clients.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(
            format!("Bearer {token}")
                .parse()
                .expect("a token is printable ASCII"),
        )
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer([redacted])")
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_rpc_of_the_proto_has_a_scope() {
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in set.file.iter().filter(|f| f.package() == "restock.v1") {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/restock.v1.{}/{}", service.name(), method.name());
                    assert!(scope_of(&path).is_some(), "{path} has no scope");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 30, "only {seen} RPCs found");
        assert_eq!(scope_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(scope_of("/restock.v1.WaitlistService/Nope"), None);
    }

    #[test]
    fn names_come_as_a_list_or_a_separated_string() {
        let n: Names = serde_json::from_str(r#""read, waitlist.write reports.read""#).unwrap();
        assert_eq!(n.0, ["read", "waitlist.write", "reports.read"]);
        let n: Names = serde_json::from_str(r#"["*"]"#).unwrap();
        assert_eq!(n.0, ["*"]);
    }

    #[test]
    fn a_token_authenticates_by_its_hash_only() {
        let creds = [(
            "shop".to_string(),
            CredentialSettings {
                token_sha256: Some(token_hash("s3cret")),
                cert_sha256: None,
                tenants: Names(vec!["demo".into()]),
                scopes: Names(vec!["read".into()]),
            },
        )];
        let callers = Callers::from_settings(creds.iter().map(|(k, v)| (k, v))).unwrap();
        let caller = callers.authenticate("s3cret").unwrap();
        assert_eq!(caller.name, "shop");
        assert!(caller.may_act_for("demo") && !caller.may_act_for("other"));
        assert!(caller.has(Scope::Read) && !caller.has(Scope::WaitlistWrite));
        assert!(callers.authenticate("s3cret ").is_none());
        assert!(callers.authenticate(&token_hash("s3cret")).is_none());
    }

    #[test]
    fn a_certificate_authenticates_by_its_fingerprint_only() {
        let der = b"not really DER, but hashed all the same";
        let colons = cert_fingerprint(der)
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let creds = [(
            "gateway".to_string(),
            CredentialSettings {
                token_sha256: None,
                cert_sha256: Some(colons),
                tenants: Names(vec!["*".into()]),
                scopes: Names(vec!["read".into()]),
            },
        )];
        let callers = Callers::from_settings(creds.iter().map(|(k, v)| (k, v))).unwrap();
        assert!(callers.has_certs());
        assert_eq!(callers.authenticate_cert(der).unwrap().name, "gateway");
        assert!(callers.authenticate_cert(b"another certificate").is_none());
        // A fingerprint is not a token, nor the other way round.
        assert!(callers.authenticate(&cert_fingerprint(der)).is_none());
    }

    #[test]
    fn a_credential_names_a_token_or_a_certificate() {
        let none = [("empty".to_string(), CredentialSettings::default())];
        let e = Callers::from_settings(none.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert!(e.contains("auth.credentials.empty"), "{e}");
        let bad = [(
            "bad".to_string(),
            CredentialSettings {
                cert_sha256: Some("abc".into()),
                ..Default::default()
            },
        )];
        let e = Callers::from_settings(bad.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert!(e.contains("auth.credentials.bad.cert_sha256"), "{e}");
        let twice = [
            (
                "a".to_string(),
                CredentialSettings {
                    cert_sha256: Some(cert_fingerprint(b"x")),
                    ..Default::default()
                },
            ),
            (
                "b".to_string(),
                CredentialSettings {
                    cert_sha256: Some(cert_fingerprint(b"x")),
                    ..Default::default()
                },
            ),
        ];
        let e = Callers::from_settings(twice.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert!(e.contains("the same certificate"), "{e}");
    }
}
