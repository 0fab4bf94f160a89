//! A loopback Twilio for tests (feature `fake`): it speaks the Messages resource (create,
//! fetch, list), checks Basic auth, records every message with the instant it arrived (to
//! measure messages per second), and misbehaves on demand: 500s, 429s with `Retry-After`,
//! answers slower than the client's timeout, permanent errors for chosen numbers.
//!
//! Bound to a `TcpListener` the test gives or `127.0.0.1:0`: no port races, no sleeps. The
//! server stops when the [`FakeTwilio`] is dropped.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::encoding::analyze;
use crate::twilio::{codes, TwilioConfig};

/// The account the fake serves unless told otherwise (the spec's example sid).
pub const ACCOUNT_SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const AUTH_TOKEN: &str = "fake-twilio-auth-token";

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub status_callback: Option<String>,
    pub validity_period: Option<u32>,
    /// The `traceparent` header of the request, if it had one.
    pub traceparent: Option<String>,
    /// When the request arrived, for rates: messages per second over a window.
    pub received_at: Instant,
    /// `date_created` of the resource.
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub error_code: Option<i64>,
    pub segments: u32,
}

/// What the next create request suffers.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// 500 before creating anything.
    Fail,
    /// 500 after the message was created: the ambiguous case a client must reconcile.
    FailAfterCreate,
    /// 429 with `Retry-After` (whole seconds, rounded up).
    Throttle(Duration),
    /// Create the message, then answer only after this long.
    Stall(Duration),
}

#[derive(Default)]
struct Inner {
    messages: Vec<ReceivedMessage>,
    by_sid: HashMap<String, usize>,
    faults: VecDeque<Fault>,
    rejected: HashMap<String, i64>,
    /// Create requests that passed authentication, whatever their outcome.
    create_requests: u64,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    /// The one `Authorization` value accepted, compared as bytes: no decoding per request.
    authorization: HeaderValue,
    /// Sids are this fake's random half and a counter: unique, and no `getrandom` per send.
    sid_prefix: u64,
    next_sid: AtomicU64,
    inner: Mutex<Inner>,
    /// Wakes `wait_for_messages` on every new message.
    recorded: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has failed already; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to a running fake. Configure it between requests; read what it received.
pub struct FakeTwilio {
    url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeTwilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTwilio")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTwilio {
    /// Serves [`ACCOUNT_SID`] / [`AUTH_TOKEN`] on a fresh port of 127.0.0.1.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, ACCOUNT_SID, AUTH_TOKEN)
    }

    /// Serves the given account on a listener the caller bound. Spawns the server on the
    /// current Tokio runtime.
    pub fn serve(listener: TcpListener, account_sid: &str, auth_token: &str) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{account_sid}:{auth_token}"));
        let authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            authorization,
            sid_prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            next_sid: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
            recorded: Notify::new(),
        });
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                get(list_messages).post(create_message),
            )
            .route(
                "/2010-04-01/Accounts/{account}/Messages/{file}",
                get(fetch_message),
            )
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake Twilio stopped");
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            addr,
            shared,
            server,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client configuration for this fake, with its credentials and a 2 s timeout.
    pub fn config(&self) -> TwilioConfig {
        let mut config = TwilioConfig::new(&self.shared.account_sid, &self.shared.auth_token);
        config.base_url = self.url.clone();
        config.timeout = Duration::from_secs(2);
        config.connect_timeout = Duration::from_secs(1);
        config
    }

    /// The next `n` creates answer 500 without creating anything.
    pub fn fail_next(&self, n: usize) {
        self.push(n, Fault::Fail);
    }

    /// The next `n` creates create the message, then answer 500.
    pub fn fail_after_create_next(&self, n: usize) {
        self.push(n, Fault::FailAfterCreate);
    }

    /// The next `n` creates answer 429 with `Retry-After`.
    pub fn throttle_next(&self, n: usize, retry_after: Duration) {
        self.push(n, Fault::Throttle(retry_after));
    }

    /// The next `n` creates create the message and answer only after `delay`.
    pub fn stall_next(&self, n: usize, delay: Duration) {
        self.push(n, Fault::Stall(delay));
    }

    fn push(&self, n: usize, fault: Fault) {
        self.shared
            .lock()
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Creates to `phone` fail with `code` (e.g. 21211 invalid number, 21610 unsubscribed).
    pub fn reject_number(&self, phone: &str, code: i64) {
        self.shared.lock().rejected.insert(phone.to_owned(), code);
    }

    /// Moves a message to `status` (as a carrier report would); false if the sid is unknown.
    pub fn set_status(&self, sid: &str, status: &str, error_code: Option<i64>) -> bool {
        let mut inner = self.shared.lock();
        let Some(&i) = inner.by_sid.get(sid) else {
            return false;
        };
        let m = &mut inner.messages[i];
        m.status = status.to_owned();
        m.error_code = error_code;
        true
    }

    /// Every message created so far, in arrival order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.lock().messages.clone()
    }

    pub fn message_count(&self) -> usize {
        self.shared.lock().messages.len()
    }

    /// Authenticated create requests, including those that failed or were throttled.
    pub fn create_requests(&self) -> u64 {
        self.shared.lock().create_requests
    }

    /// Waits until at least `n` messages were created; false if `timeout` passed first.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.recorded.notified();
                if self.message_count() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Twilio's error document.
fn error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        codes::AUTHENTICATE,
        "Authenticate",
    )
}

/// A request whose Basic credentials are the fake's (the path's account is checked by each
/// handler). An extractor reading the header in place: cloning the header map per request
/// showed in profiles.
struct Authenticated;

impl FromRequestParts<Arc<Shared>> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        match parts.headers.get(header::AUTHORIZATION) {
            Some(given) if given == shared.authorization => Ok(Authenticated),
            _ => Err(unauthorized()),
        }
    }
}

/// The create parameters restock sends; others are accepted and ignored, as Twilio would not.
#[derive(Deserialize)]
struct CreateForm {
    #[serde(rename = "To")]
    to: Option<String>,
    #[serde(rename = "From")]
    from: Option<String>,
    #[serde(rename = "MessagingServiceSid")]
    messaging_service_sid: Option<String>,
    #[serde(rename = "Body")]
    body: Option<String>,
    #[serde(rename = "StatusCallback")]
    status_callback: Option<String>,
    #[serde(rename = "ValidityPeriod")]
    validity_period: Option<String>,
}

/// The Message resource as the API answers it. A struct, not `json!`: the fake answers
/// thousands of sends a second in benches, and a map per answer shows up in profiles.
#[derive(Serialize)]
struct Resource<'a> {
    account_sid: &'a str,
    api_version: &'static str,
    body: &'a str,
    date_created: String,
    date_sent: Option<String>,
    date_updated: String,
    direction: &'static str,
    error_code: Option<i64>,
    error_message: Option<String>,
    from: Option<&'a str>,
    messaging_service_sid: Option<&'a str>,
    num_media: &'static str,
    num_segments: String,
    price: Option<String>,
    price_unit: Option<String>,
    sid: &'a str,
    status: &'a str,
    subresource_uris: SubresourceUris,
    to: &'a str,
    uri: String,
}

#[derive(Serialize)]
struct SubresourceUris {
    media: String,
}

fn resource<'a>(account_sid: &'a str, m: &'a ReceivedMessage) -> Resource<'a> {
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{}", m.sid);
    let date = m.created_at.to_rfc2822();
    Resource {
        account_sid,
        api_version: "2010-04-01",
        body: &m.body,
        date_created: date.clone(),
        date_sent: None,
        date_updated: date,
        direction: "outbound-api",
        error_code: m.error_code,
        error_message: m.error_code.map(|c| format!("error {c}")),
        from: m.from.as_deref(),
        messaging_service_sid: m.messaging_service_sid.as_deref(),
        num_media: "0",
        num_segments: m.segments.to_string(),
        price: None,
        price_unit: None,
        sid: &m.sid,
        status: &m.status,
        subresource_uris: SubresourceUris {
            media: format!("{uri}/Media.json"),
        },
        to: &m.to,
        uri: format!("{uri}.json"),
    }
}

fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    _: Authenticated,
    Path(account): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<CreateForm>,
) -> Response {
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let received_at = Instant::now();
    if account != shared.account_sid {
        return unauthorized();
    }
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (to, from, messaging_service_sid, body, status_callback, validity_period) = (
        present(form.to),
        present(form.from),
        present(form.messaging_service_sid),
        present(form.body),
        present(form.status_callback),
        present(form.validity_period),
    );
    let (fault, rejected) = {
        let mut inner = shared.lock();
        inner.create_requests += 1;
        let fault = inner.faults.pop_front();
        let rejected = to.as_ref().and_then(|to| inner.rejected.get(to).copied());
        (fault, rejected)
    };
    match fault {
        Some(Fault::Fail) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "Internal Server Error",
            )
        }
        Some(Fault::Throttle(after)) => {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_REQUESTS,
                "Too Many Requests",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
            return response;
        }
        _ => {}
    }

    let Some(to) = to else {
        return error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    if from.is_none() && messaging_service_sid.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
        );
    }
    let Some(body) = body else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if !is_e164(&to) {
        return error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_TO,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    if body.chars().count() > 1600 {
        return error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if let Some(code) = rejected {
        let message = match code {
            codes::UNSUBSCRIBED => "Attempt to send to unsubscribed recipient".to_owned(),
            codes::INVALID_TO => format!("The 'To' number {to} is not a valid phone number."),
            _ => format!("Rejected with error {code}"),
        };
        return error(StatusCode::BAD_REQUEST, code, &message);
    }
    let validity_period = match validity_period.map(|v| v.parse::<u32>()) {
        None => None,
        Some(Ok(v)) if (1..=36_000).contains(&v) => Some(v),
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, 21623, "Invalid ValidityPeriod");
        }
    };

    let message = ReceivedMessage {
        sid: format!(
            "SM{:016x}{:016x}",
            shared.sid_prefix,
            shared.next_sid.fetch_add(1, Ordering::Relaxed)
        ),
        segments: analyze(&body).segments,
        to,
        from,
        messaging_service_sid,
        body,
        status_callback,
        validity_period,
        traceparent,
        received_at,
        created_at: Utc::now(),
        status: "queued".to_owned(),
        error_code: None,
    };
    let answer = serde_json::to_vec(&resource(&shared.account_sid, &message))
        .expect("a resource always serializes");
    {
        let mut inner = shared.lock();
        let index = inner.messages.len();
        inner.by_sid.insert(message.sid.clone(), index);
        inner.messages.push(message);
    }
    shared.recorded.notify_waiters();

    match fault {
        Some(Fault::FailAfterCreate) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        ),
        Some(Fault::Stall(delay)) => {
            tokio::time::sleep(delay).await;
            created(answer)
        }
        _ => created(answer),
    }
}

fn created(json: Vec<u8>) -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response()
}

async fn fetch_message(
    State(shared): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    _: Authenticated,
) -> Response {
    if account != shared.account_sid {
        return unauthorized();
    }
    let sid = file.strip_suffix(".json").unwrap_or(&file);
    let inner = shared.lock();
    match inner.by_sid.get(sid) {
        Some(&i) => Json(resource(&shared.account_sid, &inner.messages[i])).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            &format!("The requested resource /2010-04-01/Accounts/{account}/Messages/{file} was not found"),
        ),
    }
}

async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    _: Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if account != shared.account_sid {
        return unauthorized();
    }
    let page_size = query
        .get("PageSize")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let inner = shared.lock();
    // Newest first, as Twilio lists.
    let messages: Vec<Resource<'_>> = inner
        .messages
        .iter()
        .rev()
        .filter(|m| query.get("To").is_none_or(|to| &m.to == to))
        .filter(|m| {
            query
                .get("From")
                .is_none_or(|from| m.from.as_ref() == Some(from))
        })
        .take(page_size)
        .map(|m| resource(&shared.account_sid, m))
        .collect();
    Json(json!({
        "messages": messages,
        "page": 0,
        "page_size": page_size,
        "start": 0,
        "end": messages.len().saturating_sub(1),
        "uri": format!("/2010-04-01/Accounts/{account}/Messages.json"),
        "first_page_uri": format!("/2010-04-01/Accounts/{account}/Messages.json?PageSize={page_size}&Page=0"),
        "next_page_uri": null,
        "previous_page_uri": null,
    }))
    .into_response()
}
