//! Requests, phones and stock levels the tests share, and small readers of answers.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use restock::config::{ProviderKind, Settings};
use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;

use super::{spawn_app_with, TestApp};

/// A consent as a web form captures it.
pub fn web_consent() -> pb::Consent {
    pb::Consent {
        consent_text: "Text me when it's back. Msg & data rates may apply. Reply STOP to opt out."
            .into(),
        source: pb::ConsentSource::Web as i32,
        capture_time: Some(prost_types::Timestamp {
            seconds: Utc::now().timestamp() - 60,
            nanos: 0,
        }),
        ip_address: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (test)".into(),
    }
}

/// A valid Subscribe request for the `demo` tenant.
pub fn subscribe_request(variant: &str, phone: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        tenant_id: "demo".into(),
        variant_id: variant.into(),
        phone_number: phone.into(),
        default_region: "US".into(),
        consent: Some(web_consent()),
        ..Default::default()
    }
}

/// The fields named by an INVALID_ARGUMENT's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    bad.field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// Waits for a `restock serve` child's first line, `restock listening: grpc=ADDR http=ADDR`;
/// answers the two addresses.
pub async fn listening_addrs(child: &mut std::process::Child) -> (String, String) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let (grpc, http) = line
        .trim()
        .strip_prefix("restock listening: grpc=")
        .and_then(|rest| rest.split_once(" http="))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (grpc.to_string(), http.to_string())
}

/// 19:00 UTC of the next day: texting hours in every US zone (14:00 in New York, 09:00 in
/// Honolulu), and after the real now, so consents captured "now" are in the past.
pub fn texting_hours() -> DateTime<Utc> {
    let tomorrow = Utc::now().date_naive() + chrono::Days::new(1);
    Utc.from_utc_datetime(&tomorrow.and_hms_opt(19, 0, 0).unwrap())
}

/// Points the server at the fake provider.
pub fn use_fake(settings: &mut Settings, fake: &FakeTwilio) {
    let config = fake.config();
    settings.sms.provider = ProviderKind::Twilio;
    settings.sms.twilio_base_url = config.base_url;
    settings.sms.twilio_account_sid = config.account_sid;
    settings.sms.twilio_auth_token = config.auth_token.into();
    settings.dispatch.poll_interval_ms = 50;
    settings.dispatch.retry_base_ms = 200;
    // Plenty of throughput unless a test says otherwise.
    settings.tenants.get_mut("demo").unwrap().sender_mps = 1_000;
}

/// A server sending through `fake`, its clock in texting hours.
pub async fn spawn_sender(fake: &FakeTwilio, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(|s| {
        use_fake(s, fake);
        tweak(s);
    })
    .await;
    app.clock.set(texting_hours());
    app
}

/// A server sending through `fake`, its clock in texting hours, its workers stepped by the
/// test ([`TestApp::step`]) rather than running on their own.
pub async fn spawn_stepped_sender(fake: &FakeTwilio, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_sender(fake, |s| {
        s.dispatch.background = false;
        tweak(s);
    })
    .await
}

/// `n` distinct US phones.
pub fn phones(n: usize, offset: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("+1415555{:04}", offset + i))
        .collect()
}

/// Subscribes every phone to `variant`, 16 at a time.
pub async fn subscribe_all(app: &TestApp, variant: &str, phones: &[String]) {
    futures::stream::iter(phones.iter().cloned())
        .map(|p| async move {
            app.subscribe(subscribe_request(variant, &p))
                .await
                .expect("subscribe");
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Reports one stock level of `variant` at `location`.
pub async fn set_stock(app: &TestApp, variant: &str, location: &str, available: i64, seq: u64) {
    let ack = app
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![event(
                &format!("ev-{variant}-{location}-{seq}"),
                variant,
                location,
                available,
                seq,
            )],
        })
        .await
        .expect("report inventory");
    assert_eq!(ack.acks.len(), 1);
}

/// The `demo` tenant's messages counted by status (`sent`, `held_out`, ...), as ListMessages
/// answers them.
pub async fn statuses(app: &TestApp) -> HashMap<String, i64> {
    let mut counted = HashMap::new();
    for m in app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            page_size: 500,
            ..Default::default()
        })
        .await
    {
        let name = m.status().as_str_name();
        let name = name.strip_prefix("MESSAGE_STATUS_").unwrap_or(name);
        *counted.entry(name.to_ascii_lowercase()).or_insert(0) += 1;
    }
    counted
}

/// Polls until `check` holds, for at most `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An inventory event of the `demo` tenant ordered by sequence number.
pub fn event(
    id: &str,
    variant: &str,
    location: &str,
    available: i64,
    seq: u64,
) -> pb::InventoryEvent {
    pb::InventoryEvent {
        event_id: id.into(),
        variant_id: variant.into(),
        location_id: location.into(),
        available_to_sell: available,
        order: Some(pb::inventory_event::Order::SequenceNumber(seq)),
        ..Default::default()
    }
}

/// Streams `events` and answers their acks, in order.
pub async fn stream(
    app: &TestApp,
    events: Vec<pb::StreamInventoryRequest>,
) -> Vec<pb::InventoryAck> {
    let n = events.len();
    let mut acks = app
        .stream_inventory(tokio_stream::iter(events))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(ack) = acks.next().await {
        out.push(ack.unwrap().ack.unwrap());
    }
    assert_eq!(out.len(), n, "one ack per event");
    out
}

/// Texts the fake provider received, per phone.
pub fn per_phone(fake: &FakeTwilio) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for msg in fake.messages() {
        *m.entry(msg.to).or_insert(0) += 1;
    }
    m
}

/// `t` to the second, as a proto timestamp.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

impl TestApp {
    /// Subscribes with `req`, which must succeed; answers the subscription id.
    pub async fn subscribed(&self, req: pb::SubscribeRequest) -> String {
        self.subscribe(req)
            .await
            .expect("subscribe")
            .subscription
            .expect("a subscription")
            .subscription_id
    }

    /// Subscribes `phone` to `variant` in priority tier `tier`; answers the subscription id.
    pub async fn subscribed_in_tier(&self, variant: &str, phone: &str, tier: u32) -> String {
        let mut req = subscribe_request(variant, phone);
        req.priority_tier = tier;
        self.subscribed(req).await
    }

    /// A subscription as GetSubscription answers it.
    pub async fn subscription(&self, tenant: &str, id: impl std::fmt::Display) -> pb::Subscription {
        self.get_subscription(pb::GetSubscriptionRequest {
            tenant_id: tenant.into(),
            subscription_id: id.to_string(),
        })
        .await
        .expect("get subscription")
        .subscription
        .expect("a subscription")
    }

    /// A subscription's status and cancel reason, as GetSubscription answers them.
    pub async fn subscription_status(
        &self,
        tenant: &str,
        id: impl std::fmt::Display,
    ) -> (pb::SubscriptionStatus, pb::CancelReason) {
        let s = self.subscription(tenant, id).await;
        (s.status(), s.cancel_reason())
    }

    /// The newest release of the `demo` tenant's `variant`, once there is one (stepping a
    /// stepped app's workers, else polling).
    pub async fn release_of(&self, variant: &str) -> pb::Release {
        self.until("a release", || async {
            !self
                .list_releases(releases_of(variant))
                .await
                .expect("list releases")
                .releases
                .is_empty()
        })
        .await;
        self.list_releases(releases_of(variant))
            .await
            .expect("list releases")
            .releases
            .remove(0)
    }

    /// Every message ListMessages answers to `req`, page after page.
    pub async fn all_messages(&self, mut req: pb::ListMessagesRequest) -> Vec<pb::Message> {
        let mut all = Vec::new();
        loop {
            let page = self
                .list_messages(req.clone())
                .await
                .expect("list messages");
            if req.page_size > 0 {
                assert!(page.messages.len() <= req.page_size as usize);
            }
            all.extend(page.messages);
            if page.next_page_token.is_empty() {
                return all;
            }
            req.page_token = page.next_page_token;
        }
    }

    /// A release as GetRelease answers it.
    pub async fn release(&self, tenant: &str, id: impl std::fmt::Display) -> pb::Release {
        self.get_release(pb::GetReleaseRequest {
            tenant_id: tenant.into(),
            release_id: id.to_string(),
        })
        .await
        .expect("get release")
        .release
        .expect("a release")
    }
}

/// A one-line purchase for the `demo` tenant: `quantity` units of `variant`, `minor` units of
/// `currency` in all, bought at `at` (phone numbers read in the US).
pub fn purchase(
    order_id: &str,
    phone: &str,
    variant: &str,
    quantity: u32,
    (minor, currency): (i64, &str),
    at: DateTime<Utc>,
) -> pb::RecordPurchaseRequest {
    pb::RecordPurchaseRequest {
        tenant_id: "demo".into(),
        order_id: order_id.into(),
        phone_number: phone.into(),
        default_region: "US".into(),
        lines: vec![pb::PurchaseLine {
            variant_id: variant.into(),
            quantity,
            total_price: Some(pb::Money {
                amount_minor: minor,
                currency_code: currency.into(),
            }),
            location_id: String::new(),
        }],
        purchase_time: Some(ts(at)),
        ..Default::default()
    }
}

/// A report's ratio as (numerator, denominator, value), if the report has it.
pub fn ratio(r: &Option<pb::Ratio>) -> Option<(u64, u64, Option<f64>)> {
    r.as_ref().map(|r| (r.numerator, r.denominator, r.value))
}

/// ListReleases of the `demo` tenant's releases of `variant`.
pub fn releases_of(variant: &str) -> pb::ListReleasesRequest {
    pb::ListReleasesRequest {
        tenant_id: "demo".into(),
        variant_id: variant.into(),
        ..Default::default()
    }
}
