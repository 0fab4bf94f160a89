//! A client for Twilio's Messages resource (API 2010-04-01): create a message, fetch one, and
//! list a recipient's recent messages to reconcile a send whose outcome is unknown.
//!
//! Every answer is classified into a [`SendError`] the dispatch engine acts on, in one table
//! (`classify_status`). The base URL is configurable so tests talk to the loopback fake;
//! nothing here logs a phone number, a body (it carries a link token) or the auth token.

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::provider::{
    MessageReport, MessageStatus, OutboundSms, Provider, SendError, SendReceipt, Sender,
};

/// Twilio's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio error codes restock acts on; any other code is kept raw in the error.
pub mod codes {
    /// Authentication failed (wrong account sid or auth token).
    pub const AUTHENTICATE: i64 = 20003;
    /// The account is suspended or closed.
    pub const ACCOUNT_NOT_ACTIVE: i64 = 20005;
    /// The requested resource was not found.
    pub const NOT_FOUND: i64 = 20404;
    /// Too many requests.
    pub const TOO_MANY_REQUESTS: i64 = 20429;
    /// The `To` number is not a valid phone number.
    pub const INVALID_TO: i64 = 21211;
    /// The `From` number is invalid.
    pub const INVALID_FROM: i64 = 21212;
    /// The `From` number is not a message-capable number of this account.
    pub const FROM_NOT_CAPABLE: i64 = 21606;
    /// The recipient replied STOP: blocked until it replies START.
    pub const UNSUBSCRIBED: i64 = 21610;
    /// The sender's queue holds more than 10 hours of messages.
    pub const SENDER_QUEUE_FULL: i64 = 21611;
}

/// How to reach Twilio.
#[derive(Clone)]
pub struct TwilioConfig {
    /// Scheme and host, e.g. [`DEFAULT_BASE_URL`] or the fake's URL in tests.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Whole-request deadline. Past it a send's outcome is unknown (the message may exist), so
    /// it is generous against Twilio's usual sub-second answers but short enough that a stuck
    /// request does not hold a worker's lease.
    pub timeout: Duration,
    /// Deadline to open a connection: a send that cannot connect was never made, so this one
    /// fails fast and is safe to retry.
    pub connect_timeout: Duration,
}

impl TwilioConfig {
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The Twilio provider. Cheap to share: one connection pool for all sends.
pub struct TwilioClient {
    http: reqwest::Client,
    account_sid: String,
    auth_token: String,
    /// `{base}/2010-04-01/Accounts/{AccountSid}`, for logs and the fetch path.
    account_url: String,
    /// `{account_url}/Messages.json`, parsed once: create and list.
    messages_url: reqwest::Url,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("account_url", &self.account_url)
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    /// Builds the client; fails with [`SendError::Config`] on a malformed URL or account sid.
    pub fn new(config: TwilioConfig) -> Result<Self, SendError> {
        let config_error = |reason: String| SendError::Config { code: None, reason };
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| config_error(format!("base URL {:?}: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "base URL {:?}: not http(s)",
                config.base_url
            )));
        }
        if config.account_sid.is_empty() || !is_sid(&config.account_sid) {
            return Err(config_error(
                "account sid: expected letters and digits".into(),
            ));
        }
        // reqwest is built without a TLS crypto provider, to stay off aws-lc (a long C build);
        // ring is installed as the process default unless something installed one first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A redirected POST would be replayed as a GET, or worse, sent twice.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent(concat!("restock/", env!("CARGO_PKG_VERSION")));
        if base.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }) {
            // A loopback fake must never be reached through an HTTP(S)_PROXY of the environment.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| config_error(format!("HTTP client: {}", describe(e))))?;
        let account_url = format!(
            "{}/2010-04-01/Accounts/{}",
            config.base_url.trim_end_matches('/'),
            config.account_sid
        );
        let messages_url = reqwest::Url::parse(&format!("{account_url}/Messages.json"))
            .map_err(|e| config_error(format!("base URL {:?}: {e}", config.base_url)))?;
        Ok(Self {
            http,
            account_sid: config.account_sid,
            auth_token: config.auth_token,
            account_url,
            messages_url,
        })
    }

    fn get(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.http
            .get(url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
    }
}

#[async_trait]
impl Provider for TwilioClient {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, sms: &OutboundSms) -> Result<SendReceipt, SendError> {
        let started = Instant::now();
        let mut form: Vec<(&str, Cow<'_, str>)> = vec![
            ("To", Cow::Borrowed(&sms.to)),
            ("Body", Cow::Borrowed(&sms.body)),
        ];
        match &sms.from {
            Sender::Number(n) => form.push(("From", Cow::Borrowed(n))),
            Sender::MessagingService(s) => form.push(("MessagingServiceSid", Cow::Borrowed(s))),
        }
        if let Some(url) = &sms.status_callback {
            form.push(("StatusCallback", Cow::Borrowed(url)));
        }
        if let Some(validity) = sms.validity {
            // Twilio accepts 1 to 36,000 seconds.
            let secs = validity.as_secs().clamp(1, 36_000);
            form.push(("ValidityPeriod", Cow::Owned(secs.to_string())));
        }

        let mut request = self
            .http
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form);
        if let Some(traceparent) = &sms.traceparent {
            request = request.header("traceparent", traceparent);
        }
        let mut request = request
            .build()
            .map_err(|e| transport_error(e, Op::Create))?;
        let refused = Arc::new(AtomicBool::new(false));
        if let Some(not_after) = sms.not_after {
            let form = request
                .body()
                .and_then(reqwest::Body::as_bytes)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            *request.body_mut() = Some(reqwest::Body::wrap(DeadlineBody {
                data: Some(form),
                not_after,
                refused: refused.clone(),
            }));
        }
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            // The body refused to be written: no byte of it left, so the provider has nothing
            // it could create a message from (a head without its body is an incomplete request).
            Err(_) if refused.load(Ordering::SeqCst) => return Err(SendError::Late),
            Err(e) => return Err(transport_error(e, Op::Create)),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await;

        let result = if status.is_success() {
            // From here on Twilio has created the message: failing to read which one it is
            // leaves the outcome unknown, never failed.
            match body {
                Err(e) => Err(SendError::Unknown {
                    reason: format!("reading the answer to a {status}: {}", describe(e)),
                }),
                Ok(body) => match serde_json::from_slice::<ApiMessage>(&body) {
                    Ok(ApiMessage {
                        sid: Some(sid),
                        status,
                        num_segments,
                        ..
                    }) => Ok(SendReceipt {
                        provider_message_id: sid,
                        status: MessageStatus::parse(status.as_deref().unwrap_or("queued")),
                        segments: num_segments.and_then(|n| n.0),
                    }),
                    Ok(_) => Err(SendError::Unknown {
                        reason: format!("a {status} answer without a sid"),
                    }),
                    Err(e) => Err(SendError::Unknown {
                        reason: format!("unreadable {status} answer: {e}"),
                    }),
                },
            }
        } else {
            let api_error = body
                .ok()
                .and_then(|b| serde_json::from_slice::<ApiError>(&b).ok());
            Err(classify_status(status, api_error, retry_after, Op::Create))
        };

        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(receipt) => tracing::debug!(
                provider = "twilio",
                reference = %sms.reference,
                sid = %receipt.provider_message_id,
                status = %receipt.status,
                segments = ?receipt.segments,
                elapsed_ms,
                "message created"
            ),
            Err(error) => tracing::debug!(
                provider = "twilio",
                reference = %sms.reference,
                %error,
                elapsed_ms,
                "message not created"
            ),
        }
        result
    }

    async fn fetch(&self, provider_message_id: &str) -> Result<Option<MessageReport>, SendError> {
        if !is_sid(provider_message_id) {
            // Not an id Twilio could have given; also keeps the path free of injected segments.
            return Ok(None);
        }
        let url = format!("{}/Messages/{provider_message_id}.json", self.account_url);
        let response = self
            .get(&url)
            .send()
            .await
            .map_err(|e| transport_error(e, Op::Read))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let message: ApiMessage = read_json(response, Op::Read).await?;
        Ok(message.into_report())
    }

    async fn lookup(
        &self,
        sms: &OutboundSms,
        since: DateTime<Utc>,
    ) -> Result<Option<MessageReport>, SendError> {
        // Newest first; a phone gets a handful of texts a day from one sender, so the first
        // page holds any text of the last attempt.
        let mut query: Vec<(&str, &str)> = vec![("To", &sms.to), ("PageSize", "50")];
        if let Sender::Number(from) = &sms.from {
            query.push(("From", from));
        }
        let response = self
            .get(self.messages_url.clone())
            .query(&query)
            .send()
            .await
            .map_err(|e| transport_error(e, Op::Read))?;
        let page: ApiMessagePage = read_json(response, Op::Read).await?;
        // Twilio stamps whole seconds with its own clock: allow for both.
        let earliest = since - chrono::Duration::seconds(LOOKUP_CLOCK_SLACK_SECS);
        Ok(page
            .messages
            .into_iter()
            .filter(|m| m.body.as_deref() == Some(sms.body.as_str()))
            .filter(|m| m.created_at().is_none_or(|at| at >= earliest))
            .find_map(ApiMessage::into_report))
    }
}

/// A create request's form, handed to the connection only while its deadline has not passed.
///
/// hyper reads the body in the same poll that writes the request head into its buffer and
/// flushes both together, so the check here is the last thing before the bytes go out: a
/// process frozen anywhere before it (building the request, waiting for a connection) wakes
/// up to a refusal. Only a freeze in the few instructions between this read and the socket
/// write can still let a late request through; the provider offers no key to fence it.
struct DeadlineBody {
    data: Option<Bytes>,
    not_after: Instant,
    refused: Arc<AtomicBool>,
}

/// The refusal of a [`DeadlineBody`] whose deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the send's deadline passed before its request was written")]
struct PastDeadline;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = PastDeadline;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, PastDeadline>>> {
        let this = self.get_mut();
        let Some(data) = this.data.take() else {
            return Poll::Ready(None);
        };
        if Instant::now() >= this.not_after {
            this.refused.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(PastDeadline)));
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Exact, so the request carries a Content-Length and a refused body leaves the
        // provider an incomplete request rather than an empty one.
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// How far before the attempt a listed message may be stamped and still match it.
const LOOKUP_CLOCK_SLACK_SECS: i64 = 120;

/// Whether the request could have created a message: decides what a transport failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Read,
}

/// A failure before any answer arrived.
fn transport_error(e: reqwest::Error, op: Op) -> SendError {
    let (builder, connect) = (e.is_builder(), e.is_connect());
    let reason = describe(e);
    if builder {
        SendError::Config { code: None, reason }
    } else if connect || op == Op::Read {
        // No connection means no request; a read can simply be made again.
        SendError::Transient {
            retry_after: None,
            reason,
            outage: connect,
        }
    } else {
        // The request went out (at least partly) and no answer came back.
        SendError::Unknown { reason }
    }
}

/// The one table from a non-2xx answer to what the caller does.
///
/// SMS.md: only a 429 is guaranteed never processed. A 5xx to a create means the request
/// reached Twilio, which may have created the message before failing, so it is `Unknown`
/// (reconcile, then resend) rather than `Transient`; to a read it is just transient.
fn classify_status(
    status: StatusCode,
    api_error: Option<ApiError>,
    retry_after: Option<Duration>,
    op: Op,
) -> SendError {
    let code = api_error.as_ref().and_then(|e| e.code);
    let reason = match api_error.and_then(|e| e.message) {
        Some(message) => format!("HTTP {}: {}", status.as_u16(), redact_numbers(&message)),
        None => format!("HTTP {status}"),
    };
    match (status.as_u16(), code) {
        (429, _) | (_, Some(codes::TOO_MANY_REQUESTS)) => SendError::Transient {
            retry_after,
            reason,
            outage: false,
        },
        (_, Some(codes::UNSUBSCRIBED)) => SendError::OptedOut {
            code: codes::UNSUBSCRIBED,
        },
        // Twilio refused to queue more for this sender: nothing was created, so it is a
        // throttle, to be retried once the sender's queue drains.
        (_, Some(codes::SENDER_QUEUE_FULL)) => SendError::Transient {
            retry_after,
            reason,
            outage: true,
        },
        (401 | 403, _)
        | (
            _,
            Some(
                codes::AUTHENTICATE
                | codes::ACCOUNT_NOT_ACTIVE
                | codes::INVALID_FROM
                | codes::FROM_NOT_CAPABLE,
            ),
        ) => SendError::Config { code, reason },
        // On a create the only resource in the path is the account: a 404 means a wrong sid.
        (404, _) if op == Op::Create => SendError::Config { code, reason },
        (500..=599, _) => match op {
            Op::Create => SendError::Unknown { reason },
            Op::Read => SendError::Transient {
                retry_after,
                reason,
                outage: true,
            },
        },
        (400..=499, _) => SendError::Permanent { code, reason },
        // A redirect or an informational answer: the base URL points somewhere else.
        _ => SendError::Config { code, reason },
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    op: Op,
) -> Result<T, SendError> {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.map_err(|e| transport_error(e, op))?;
    if !status.is_success() {
        let api_error = serde_json::from_slice::<ApiError>(&body).ok();
        return Err(classify_status(status, api_error, retry_after, op));
    }
    serde_json::from_slice(&body).map_err(|e| SendError::Transient {
        retry_after: None,
        reason: format!("unreadable {status} answer: {e}"),
        outage: false,
    })
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// An error and its causes on one line, without the URL (a lookup's URL holds the phone).
fn describe(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    // A cause may still quote the URL.
    redact_numbers(&text)
}

/// Replaces runs of six or more digits (phone numbers in provider messages, e.g. "The 'To'
/// number +15005550001 is not valid") so an error can be logged; error codes stay.
pub fn redact_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().filter(char::is_ascii_digit).count() >= 6 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn is_sid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A Message resource as Twilio answers it (the fields restock reads).
#[derive(Debug, Deserialize)]
struct ApiMessage {
    sid: Option<String>,
    status: Option<String>,
    /// A string in the API ("1"); a number is accepted too.
    num_segments: Option<Lenient>,
    error_code: Option<i64>,
    error_message: Option<String>,
    /// RFC 2822.
    date_created: Option<String>,
    body: Option<String>,
}

impl ApiMessage {
    fn created_at(&self) -> Option<DateTime<Utc>> {
        let raw = self.date_created.as_deref()?;
        DateTime::parse_from_rfc2822(raw)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    fn into_report(self) -> Option<MessageReport> {
        let created_at = self.created_at();
        Some(MessageReport {
            provider_message_id: self.sid?,
            status: MessageStatus::parse(self.status.as_deref().unwrap_or("queued")),
            segments: self.num_segments.and_then(|n| n.0),
            error_code: self.error_code,
            error_message: self.error_message.as_deref().map(redact_numbers),
            created_at,
        })
    }
}

#[derive(Debug, Deserialize)]
struct ApiMessagePage {
    #[serde(default)]
    messages: Vec<ApiMessage>,
}

/// Twilio's error document: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Debug, Clone, Default, Deserialize)]
struct ApiError {
    code: Option<i64>,
    message: Option<String>,
}

/// A count sent as a string or a number.
#[derive(Debug)]
struct Lenient(Option<u32>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Lenient(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().ok(),
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64) -> Option<ApiError> {
        Some(ApiError {
            code: Some(code),
            message: Some("The 'To' number +15005550001 is not a valid phone number.".into()),
        })
    }

    #[test]
    fn the_classification_table() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        let ra = Some(Duration::from_secs(3));
        assert!(matches!(
            classify_status(s(429), api(20429), ra, Op::Create),
            SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert_eq!(
            classify_status(s(400), api(21610), None, Op::Create),
            SendError::OptedOut { code: 21610 }
        );
        assert!(matches!(
            classify_status(s(400), api(21211), None, Op::Create),
            SendError::Permanent {
                code: Some(21211),
                ..
            }
        ));
        assert!(matches!(
            classify_status(s(401), api(20003), None, Op::Create),
            SendError::Config {
                code: Some(20003),
                ..
            }
        ));
        assert!(matches!(
            classify_status(s(400), api(21606), None, Op::Create),
            SendError::Config { .. }
        ));
        assert!(matches!(
            classify_status(s(404), None, None, Op::Create),
            SendError::Config { .. }
        ));
        assert!(matches!(
            classify_status(s(500), None, None, Op::Create),
            SendError::Unknown { .. }
        ));
        assert!(matches!(
            classify_status(s(503), None, None, Op::Read),
            SendError::Transient { .. }
        ));
        assert!(matches!(
            classify_status(s(400), api(21611), None, Op::Create),
            SendError::Transient { .. }
        ));
        assert!(matches!(
            classify_status(s(302), None, None, Op::Create),
            SendError::Config { .. }
        ));
    }

    #[test]
    fn provider_messages_lose_their_phone_numbers() {
        let e = classify_status(StatusCode::BAD_REQUEST, api(21211), None, Op::Create);
        let text = e.to_string();
        assert!(!text.contains("5005550001"), "{text}");
        assert!(
            text.contains("[redacted]") && text.contains("21211"),
            "{text}"
        );
        assert_eq!(
            redact_numbers("code 21211 for +1 415"),
            "code 21211 for +1 415"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn the_config_debug_hides_the_token() {
        let c = TwilioConfig::new("AC123", "s3cr3t-token");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
