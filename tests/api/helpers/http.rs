//! The HTTP listener's client (links, the provider's webhooks, metrics), over `reqwest`: one
//! client per test app, redirects not followed (the tests read the `Location`).

use std::net::SocketAddr;

use restock::http::signature::twilio_signature;

use super::TestApp;

/// The provider's delivery-report webhook.
pub const STATUS_WEBHOOK: &str = "/webhooks/twilio/status";
/// The provider's inbound-text webhook.
pub const INBOUND_WEBHOOK: &str = "/webhooks/twilio/inbound";

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client that does not follow redirects.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (as the server's provider client is):
    // the process's default is ring, whoever installs it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One request to the HTTP listener at `addr`, its answer read to the end.
pub async fn request_with(
    client: &reqwest::Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client
        .request(method, format!("http://{addr}{path}"))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let answer = req.send().await.expect("an HTTP answer");
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = answer.text().await.expect("an HTTP body");
    Answer {
        status,
        headers,
        body,
    }
}

/// `params` as owned pairs.
pub fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Posts `params` as a form to the webhook at `path`, signed with `auth_token` as Twilio signs
/// (the URL the provider posted to, then each parameter's name and value in name order).
pub async fn post_signed(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    params: &[(String, String)],
    auth_token: &str,
) -> Answer {
    let url = format!("http://{addr}{path}");
    let signature = twilio_signature(auth_token, &url, params);
    let body = form_encode(params);
    request_with(
        client,
        addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", &signature),
        ],
        body.into_bytes(),
    )
    .await
}

/// `application/x-www-form-urlencoded`, as the provider encodes (spaces as `%20`).
pub fn form_encode(params: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl TestApp {
    /// Any request to this app's HTTP listener.
    pub async fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        request_with(&self.http, self.http_addr, method, path, headers, body).await
    }

    pub async fn http_get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.http_request("GET", path, headers, Vec::new()).await
    }

    /// Follows a text's tracked link `/r/{token}` (not its redirect).
    pub async fn click(&self, token: &str, headers: &[(&str, &str)]) -> Answer {
        self.http_get(&format!("/r/{token}"), headers).await
    }

    /// The Prometheus exposition; asserts it is served.
    pub async fn metrics(&self) -> Answer {
        let a = self.http_get("/metrics", &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        a
    }

    /// Posts `params` to the webhook at `path`, signed with the provider auth token the app
    /// was configured with.
    pub async fn webhook(&self, path: &str, params: &[(&str, &str)]) -> Answer {
        post_signed(
            &self.http,
            self.http_addr,
            path,
            &owned(params),
            &self.provider_token,
        )
        .await
    }

    /// Like [`TestApp::webhook`], signed with a token that is not the app's.
    pub async fn forged_webhook(&self, path: &str, params: &[(&str, &str)]) -> Answer {
        post_signed(
            &self.http,
            self.http_addr,
            path,
            &owned(params),
            "not-the-token",
        )
        .await
    }

    /// A signed delivery report for the provider message `sid` (`ErrorCode` when `code`).
    pub async fn delivery_report(&self, sid: &str, status: &str, code: Option<&str>) -> Answer {
        let mut params = vec![
            ("AccountSid", restock_sms::fake::ACCOUNT_SID),
            ("MessageSid", sid),
            ("MessageStatus", status),
        ];
        if let Some(code) = code {
            params.push(("ErrorCode", code));
        }
        self.webhook(STATUS_WEBHOOK, &params).await
    }
}
