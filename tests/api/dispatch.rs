//! Dispatch: restocks become texts, each phone texted once, at the pace and hours allowed,
//! through a loopback provider that speaks Twilio's API.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use restock::config::{ProviderKind, Settings};
use restock::proto::v1 as pb;
use restock::proto::v1::dispatch_service_client::DispatchServiceClient;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use restock_sms::fake::FakeTwilio;
use tonic::transport::Channel;

use crate::helpers::*;
use crate::inventory::event;

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
    settings.sms.twilio_auth_token = config.auth_token;
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

pub fn dispatch(app: &TestApp) -> DispatchServiceClient<Channel> {
    DispatchServiceClient::new(app.channel.clone())
}

/// `n` distinct US phones.
pub fn phones(n: usize, offset: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("+1415555{:04}", offset + i))
        .collect()
}

/// Subscribes every phone to `variant`, 16 at a time.
pub async fn subscribe_all(app: &TestApp, variant: &str, phones: &[String]) {
    use futures::StreamExt;
    futures::stream::iter(phones.iter().cloned())
        .map(|p| {
            let mut client = app.waitlist();
            let variant = variant.to_string();
            async move {
                client
                    .subscribe(subscribe_request(&variant, &p))
                    .await
                    .expect("subscribe");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Reports one stock level of `variant` at `location`.
pub async fn set_stock(app: &TestApp, variant: &str, location: &str, available: i64, seq: u64) {
    let ack = EligibilityServiceClient::new(app.channel.clone())
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
        .expect("report inventory")
        .into_inner();
    assert_eq!(ack.acks.len(), 1);
}

pub async fn db(app: &TestApp) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&app.db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Message statuses of the database, counted.
pub async fn statuses(app: &TestApp) -> HashMap<String, i64> {
    db(app)
        .await
        .query("SELECT status, count(*) FROM messages GROUP BY status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
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

fn per_phone(fake: &FakeTwilio) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for msg in fake.messages() {
        *m.entry(msg.to).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn a_restock_texts_every_waiting_phone_once() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    let phones = phones(40, 0);
    subscribe_all(&app, "sku-1", &phones).await;
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 12, 2).await;
    assert!(fake.wait_for_messages(40, Duration::from_secs(20)).await);
    let db = db(&app).await;
    eventually(
        Duration::from_secs(10),
        "the release to complete",
        || async {
            let r = db
                .query_one("SELECT state FROM releases", &[])
                .await
                .unwrap();
            r.get::<_, String>(0) == "completed"
        },
    )
    .await;
    let sent = per_phone(&fake);
    assert_eq!(sent.len(), 40);
    assert!(sent.values().all(|&n| n == 1), "{sent:?}");
    assert_eq!(statuses(&app).await.get("sent"), Some(&40));
    // Each text carries its own link, and the brand's opt-out language.
    let body = &fake.messages()[0].body;
    assert!(body.contains("/r/"), "{body}");
    assert!(body.ends_with("Reply STOP to opt out"), "{body}");
    let tokens: std::collections::HashSet<String> = fake
        .messages()
        .iter()
        .map(|m| {
            m.body
                .split("/r/")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 40);
}
