//! Mutual TLS: with `grpc.tls` and a client CA, a client certificate the CA signed is a
//! credential (its fingerprint names the caller, with tenants and scopes like a token); a
//! certificate of another CA is refused at the handshake; plain text is refused; a bearer
//! token still works over TLS. Every certificate is made here, with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use restock::auth::cert_fingerprint;
use restock::config::TlsSettings;
use restock::proto::v1 as pb;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

use crate::helpers::*;

/// A certificate authority of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key, PEM, and its DER (whose SHA-256 is the fingerprint).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost`, or a client certificate named `name`.
    fn issue(&self, name: &str, server: bool) -> Leaf {
        let sans = if server {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// The certificates of one test: the server's CA and client CA (one here), the server's own,
/// two known clients, one the CA signed but no credential names, and one of another CA.
struct Pki {
    ca: Ca,
    /// Holds the PEM files the server reads.
    dir: tempfile::TempDir,
    gateway: Leaf,
    reader: Leaf,
    unknown: Leaf,
    foreign: Leaf,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::new("restock test CA");
        let dir = tempfile::tempdir().unwrap();
        let server = ca.issue("restock", true);
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.path().join("clients-ca.pem"), ca.pem()).unwrap();
        Self {
            gateway: ca.issue("gateway", false),
            reader: ca.issue("reader", false),
            unknown: ca.issue("nobody configured me", false),
            foreign: Ca::new("someone else's CA").issue("gateway", false),
            ca,
            dir,
        }
    }

    fn tls(&self, client_cert_required: bool) -> TlsSettings {
        let path = |f: &str| self.dir.path().join(f).display().to_string();
        TlsSettings {
            cert_path: path("server.pem"),
            key_path: path("server.key"),
            client_ca_path: Some(path("clients-ca.pem")),
            client_cert_required,
        }
    }
}

/// A server with TLS and the client CA, where `gateway`'s certificate may do everything for
/// every tenant and `reader`'s may only read.
async fn spawn_tls(pki: &Pki, client_cert_required: bool) -> TestApp {
    spawn_app_with(|s| {
        s.grpc.tls = Some(pki.tls(client_cert_required));
        for (name, leaf, scopes) in [
            ("gateway", &pki.gateway, &["*"][..]),
            ("reader", &pki.reader, &["read"][..]),
        ] {
            let mut c = credential("unused", &["*"], scopes);
            c.token_sha256 = None;
            c.cert_sha256 = Some(cert_fingerprint(&leaf.der));
            s.auth.credentials.insert(name.into(), c);
        }
    })
    .await
}

/// A TLS channel to `app` trusting the test CA, presenting `client` if given.
async fn tls_channel(
    app: &TestApp,
    pki: &Pki,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca.pem()))
        .domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(leaf.identity());
    }
    Channel::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// Subscribe through `channel`, without a token.
async fn subscribe_over(channel: Channel, phone: &str) -> Result<(), tonic::Status> {
    WaitlistServiceClient::new(channel)
        .subscribe(subscribe_request("sku-mtls", phone))
        .await
        .map(|_| ())
}

/// A call that never reached the API: the connection failed, or the call on it did, with a
/// transport error rather than an answer of the server's.
async fn is_refused(channel: Result<Channel, tonic::transport::Error>, phone: &str) -> bool {
    match channel {
        Err(_) => true,
        Ok(channel) => match subscribe_over(channel, phone).await {
            Ok(()) => false,
            Err(status) => matches!(status.code(), Code::Unavailable | Code::Unknown),
        },
    }
}

#[tokio::test]
async fn a_client_certificate_of_a_known_caller_works_without_a_token() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let channel = tls_channel(&app, &pki, Some(&pki.gateway)).await.unwrap();
    subscribe_over(channel.clone(), "+14155550101")
        .await
        .unwrap();
    assert_eq!(app.count("subscriptions").await, 1);
    // The tenant check holds for certificate callers as for tokens.
    let mut other = subscribe_request("sku-mtls", "+14155550102");
    other.tenant_id = "no-such-tenant".into();
    let status = WaitlistServiceClient::new(channel)
        .subscribe(other)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_certificate_without_the_scope_is_permission_denied_and_writes_nothing() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let channel = tls_channel(&app, &pki, Some(&pki.reader)).await.unwrap();
    let status = subscribe_over(channel.clone(), "+14155550103")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("\"reader\""), "{status:?}");
    assert_eq!(app.count("subscriptions").await, 0);
    // What the scope allows goes through: a read answers (NOT_FOUND is the API's answer).
    let status = WaitlistServiceClient::new(channel)
        .get_subscription(pb::GetSubscriptionRequest {
            tenant_id: "demo".into(),
            subscription_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_at_the_handshake() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    // The foreign certificate carries the same name as a known caller's: names do not count.
    assert!(
        is_refused(
            tls_channel(&app, &pki, Some(&pki.foreign)).await,
            "+14155550104"
        )
        .await
    );
    assert_eq!(app.count("subscriptions").await, 0);
}

#[tokio::test]
async fn a_certificate_the_ca_signed_but_no_credential_names_is_unauthenticated() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let channel = tls_channel(&app, &pki, Some(&pki.unknown)).await.unwrap();
    let status = subscribe_over(channel, "+14155550105").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(app.count("subscriptions").await, 0);
}

#[tokio::test]
async fn a_token_over_tls_still_works_and_a_bad_token_is_not_rescued_by_a_certificate() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    // No certificate, the test token: a caller of tokens is unaffected by TLS.
    let plain = tls_channel(&app, &pki, None).await.unwrap();
    WaitlistServiceClient::new(with_token(plain, TEST_TOKEN))
        .subscribe(subscribe_request("sku-mtls", "+14155550106"))
        .await
        .unwrap();
    // A token, when given, is the credential: an unknown one fails even beside a good
    // certificate (a gateway forwarding its callers' tokens must not lend them its own rights).
    let gateway = tls_channel(&app, &pki, Some(&pki.gateway)).await.unwrap();
    let status = WaitlistServiceClient::new(with_token(gateway.clone(), "a-token-nobody-has"))
        .subscribe(subscribe_request("sku-mtls", "+14155550107"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // And a known token beside the reader's certificate acts as the token's caller.
    let reader = tls_channel(&app, &pki, Some(&pki.reader)).await.unwrap();
    WaitlistServiceClient::new(with_token(reader, TEST_TOKEN))
        .subscribe(subscribe_request("sku-mtls", "+14155550108"))
        .await
        .unwrap();
    assert_eq!(app.count("subscriptions").await, 2);
}

#[tokio::test]
async fn with_tls_on_plain_text_connections_fail() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await;
    assert!(is_refused(plain, "+14155550109").await);
    // Not even with a good token.
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    let status = WaitlistServiceClient::new(with_token(plain, TEST_TOKEN))
        .subscribe(subscribe_request("sku-mtls", "+14155550110"))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
    assert_eq!(app.count("subscriptions").await, 0);
}

#[tokio::test]
async fn when_client_certificates_are_required_a_client_without_one_is_refused() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true).await;
    assert!(is_refused(tls_channel(&app, &pki, None).await, "+14155550111").await);
    // Not even with a token: the handshake comes first.
    if let Ok(channel) = tls_channel(&app, &pki, None).await {
        let status = WaitlistServiceClient::new(with_token(channel, TEST_TOKEN))
            .subscribe(subscribe_request("sku-mtls", "+14155550112"))
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown),
            "{status:?}"
        );
    }
    let channel = tls_channel(&app, &pki, Some(&pki.gateway)).await.unwrap();
    subscribe_over(channel, "+14155550113").await.unwrap();
    assert_eq!(app.count("subscriptions").await, 1);
}
