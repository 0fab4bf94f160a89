//! The HTTP listener: tracked links, the provider's webhooks (signed as Twilio signs them) and
//! `/metrics`, driven over real HTTP/1.1 against the running server.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use restock::http::signature::twilio_signature;
use restock::proto::v1 as pb;
use restock_domain::clock::Clock;
use uuid::Uuid;

use crate::helpers::*;

const TOKEN: &str = "test-token";
const SENDER: &str = "+15005550006";

/// Posts `params` to a webhook, signed as the provider signs when `signed`, else forged.
async fn post_webhook(app: &TestApp, path: &str, params: &[(&str, &str)], signed: bool) -> Answer {
    if signed {
        app.webhook(path, params).await
    } else {
        app.forged_webhook(path, params).await
    }
}

async fn spawn() -> TestApp {
    spawn_app_with(|s| {
        s.sms.twilio_auth_token = TOKEN.into();
        let demo = s.tenants.get_mut("demo").unwrap();
        demo.storefront_url = Some("https://demo.example/".into());
        demo.allowed_link_hosts = vec!["demo.example".into(), "shop.example".into()];
        // Its own number, so a keyword to the demo sender concerns one brand only.
        s.tenants.get_mut("demo-double-opt-in").unwrap().sender_id = "+15005550009".into();
    })
    .await
}

/// A text restock sent: its contact and subscription come from a real Subscribe, the release
/// and message rows are written as the dispatcher writes them.
struct Sent {
    tenant: &'static str,
    subscription_id: Uuid,
    message_id: Uuid,
    release_id: Uuid,
    token: String,
    sid: String,
}

async fn subscribe_in(app: &TestApp, tenant: &str, variant: &str, phone: &str) -> Uuid {
    let mut req = subscribe_request(variant, phone);
    req.tenant_id = tenant.into();
    app.subscribed(req).await.parse().unwrap()
}

async fn sent_text(
    app: &TestApp,
    variant: &str,
    phone: &str,
    deep_link: Option<&str>,
    status: &str,
) -> Sent {
    let tenant = "demo";
    let subscription_id = subscribe_in(app, tenant, variant, phone).await;
    let db = app.db().await;
    let now: DateTime<Utc> = Utc::now();
    db.execute(
        "INSERT INTO variants (tenant_id, variant_id, deep_link, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, variant_id) DO UPDATE SET deep_link = EXCLUDED.deep_link",
        &[&tenant, &variant, &deep_link, &now],
    )
    .await
    .unwrap();
    let contact_id: Uuid = db
        .query_one(
            "SELECT contact_id FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2",
            &[&tenant, &subscription_id],
        )
        .await
        .unwrap()
        .get(0);
    let release_id = Uuid::now_v7();
    db.execute(
        "INSERT INTO releases (tenant_id, release_id, restock_id, variant_id, state, \
         available_at_restock, available_now, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'sending', 5, 5, $5, $5)",
        &[&tenant, &release_id, &Uuid::now_v7(), &variant, &now],
    )
    .await
    .unwrap();
    let message_id = Uuid::now_v7();
    // 22 base64url characters, as the dispatcher makes them.
    let token = Uuid::new_v4().simple().to_string()[..22].replace('a', "_");
    let sid = format!("SM{}", Uuid::new_v4().simple());
    db.execute(
        "INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, \
         variant_id, kind, position, wave, status, link_token, provider_message_id, \
         provider_status, sender_id, created_at, sent_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'first', 1, 1, $7, $8, $9, 'queued', $10, $11, $11, $11)",
        &[
            &tenant,
            &message_id,
            &release_id,
            &subscription_id,
            &contact_id,
            &variant,
            &status,
            &token,
            &sid,
            &SENDER,
            &now,
        ],
    )
    .await
    .unwrap();
    Sent {
        tenant,
        subscription_id,
        message_id,
        release_id,
        token,
        sid,
    }
}

/// (status, provider_status, report_at, last_error_code, first_click_at) of a message.
async fn message(
    app: &TestApp,
    sent: &Sent,
) -> (
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
) {
    let row = app
        .db()
        .await
        .query_one(
            "SELECT status, provider_status, report_at, last_error_code, first_click_at \
             FROM messages WHERE tenant_id = $1 AND message_id = $2",
            &[&sent.tenant, &sent.message_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

/// The phone's consent ledger in a tenant: (kind, source, reason), oldest first.
async fn ledger(app: &TestApp, tenant: &str, phone: &str) -> Vec<(String, String, Option<String>)> {
    app.db()
        .await
        .query(
            "SELECT e.kind, e.source, e.reason FROM consent_events e JOIN contacts c \
               ON c.tenant_id = e.tenant_id AND c.contact_id = e.contact_id \
             WHERE e.tenant_id = $1 AND c.phone_e164 = $2 ORDER BY e.seq",
            &[&tenant, &phone],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn consent_state(app: &TestApp, tenant: &str, phone: &str) -> pb::ConsentState {
    let r = app
        .get_consent_history(pb::GetConsentHistoryRequest {
            tenant_id: tenant.into(),
            phone_number: phone.into(),
            default_region: "US".into(),
        })
        .await
        .unwrap();
    r.consent_state()
}

// ---- tracked links ----

#[tokio::test]
async fn tracked_link_redirects_with_utm_and_records_every_click() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-red",
        "+14155550101",
        Some("https://shop.example/p/tee?color=red&utm_source=old#size"),
        "delivered",
    )
    .await;
    let long_agent = "Mozilla/5.0 ".repeat(40);
    let first = app.click(&sent.token, &[("User-Agent", &long_agent)]).await;
    assert_eq!(first.status, 302, "{first:?}");
    assert_eq!(
        first.header("location").unwrap(),
        format!(
            "https://shop.example/p/tee?color=red&variant=sku-red&utm_source=restock&utm_medium=sms\
             &utm_campaign=restock-{}&utm_content=first#size",
            sent.release_id
        )
    );
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert_eq!(first.header("referrer-policy"), Some("no-referrer"));

    let clicked_at = app.clock.now();
    let (.., first_click) = message(&app, &sent).await;
    assert_eq!(
        first_click.map(|t| t.timestamp_micros()),
        Some(clicked_at.timestamp_micros())
    );
    let agent: String = app
        .db()
        .await
        .query_one("SELECT user_agent FROM clicks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(agent.chars().count(), 300);

    // A second click is recorded too; the first click's time stays.
    app.clock.advance(chrono::Duration::hours(2));
    let again = app.click(&sent.token, &[]).await;
    assert_eq!(again.status, 302);
    assert_eq!(app.count("clicks").await, 2);
    let (.., first_click) = message(&app, &sent).await;
    assert_eq!(
        first_click.map(|t| t.timestamp_micros()),
        Some(clicked_at.timestamp_micros())
    );
    // A HEAD (link previews, scanners) is redirected but is no click.
    let head = app
        .http_request("HEAD", &format!("/r/{}", sent.token), &[], Vec::new())
        .await;
    assert_eq!(head.status, 302);
    assert_eq!(app.count("clicks").await, 2);
}

#[tokio::test]
async fn tracked_link_without_deep_link_goes_to_the_storefront() {
    let app = spawn().await;
    let sent = sent_text(&app, "sku-plain", "+14155550102", None, "sent").await;
    let a = app.click(&sent.token, &[]).await;
    assert_eq!(a.status, 302);
    let location = a.header("location").unwrap();
    assert!(
        location.starts_with("https://demo.example/?variant=sku-plain&utm_source=restock"),
        "{location}"
    );
    assert_eq!(app.count("clicks").await, 1);
}

#[tokio::test]
async fn tracked_link_with_nowhere_to_go_is_not_found() {
    let app = spawn_app_with(|s| {
        s.sms.twilio_auth_token = TOKEN.into();
        s.tenants.get_mut("demo").unwrap().storefront_url = None;
    })
    .await;
    let sent = sent_text(&app, "sku-nolink", "+14155550103", None, "sent").await;
    let a = app.click(&sent.token, &[]).await;
    assert_eq!(a.status, 404);
    assert_eq!(app.count("clicks").await, 0);
}

#[tokio::test]
async fn malformed_and_unknown_tokens_get_the_same_not_found() {
    let app = spawn().await;
    sent_text(
        &app,
        "sku-1",
        "+14155550104",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    let unknown = app.http_get("/r/AAAAAAAAAAAAAAAAAAAAAA", &[]).await;
    let short = app.http_get("/r/abc", &[]).await;
    let bad_chars = app.http_get("/r/AAAAAAAAAAAAAAAAAAAA%2B%2F", &[]).await;
    let long = app.http_get(&format!("/r/{}", "A".repeat(500)), &[]).await;
    for a in [&unknown, &short, &bad_chars, &long] {
        assert_eq!(a.status, 404, "{a:?}");
        assert_eq!(a.body, unknown.body);
        assert_eq!(a.header("content-type"), unknown.header("content-type"));
        assert_eq!(a.header("location"), None);
    }
    assert_eq!(app.count("clicks").await, 0);
}

#[tokio::test]
async fn clicks_still_work_after_erasure() {
    let app = spawn().await;
    let phone = "+14155550105";
    let sent = sent_text(&app, "sku-1", phone, Some("https://shop.example/p"), "sent").await;
    app.erase_phone(pb::ErasePhoneRequest {
        tenant_id: "demo".into(),
        phone_number: phone.into(),
        default_region: "US".into(),
    })
    .await
    .unwrap();
    let a = app.click(&sent.token, &[]).await;
    assert_eq!(a.status, 302);
    assert_eq!(app.count("clicks").await, 1);
}

async fn set_variant_stock(app: &TestApp, variant: &str, available: i64) {
    app.db()
        .await
        .execute(
            "INSERT INTO variant_stock (tenant_id, variant_id, available, armed, updated_at) \
             VALUES ('demo', $1, $2, false, now()) ON CONFLICT (tenant_id, variant_id) \
             DO UPDATE SET available = EXCLUDED.available",
            &[&variant, &available],
        )
        .await
        .unwrap();
}

async fn api_status(app: &TestApp, sent: &Sent) -> pb::SubscriptionStatus {
    app.subscription_status(sent.tenant, sent.subscription_id)
        .await
        .0
}

async fn click_outcomes(app: &TestApp) -> Vec<String> {
    app.db()
        .await
        .query(
            "SELECT outcome FROM clicks ORDER BY clicked_at, click_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// "I clicked but it's out again": the shopper lands on the page marked sold out, the click is
/// recorded as such, and the subscription waits for the next restock with its place.
#[tokio::test]
async fn a_click_after_the_variant_sold_out_again_lands_marked_and_waits_again() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550121",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    app.db()
        .await
        .execute(
            "UPDATE subscriptions SET status = 'notified' WHERE subscription_id = $1",
            &[&sent.subscription_id],
        )
        .await
        .unwrap();
    // In stock: an ordinary click; the subscription stays notified.
    set_variant_stock(&app, "sku-1", 3).await;
    let a = app.click(&sent.token, &[]).await;
    assert_eq!(a.status, 302);
    let location = a.header("location").unwrap().to_string();
    assert!(!location.contains("restock="), "{location}");
    assert_eq!(
        api_status(&app, &sent).await,
        pb::SubscriptionStatus::Notified
    );
    // Sold out again.
    set_variant_stock(&app, "sku-1", 0).await;
    let a = app.click(&sent.token, &[]).await;
    assert_eq!(a.status, 302);
    let location = a.header("location").unwrap();
    assert!(
        location.starts_with("https://shop.example/p?"),
        "{location}"
    );
    assert!(location.contains("&restock=sold_out"), "{location}");
    assert!(location.contains("variant=sku-1"), "{location}");
    assert_eq!(click_outcomes(&app).await, ["redirected", "sold_out"]);
    assert_eq!(
        api_status(&app, &sent).await,
        pb::SubscriptionStatus::Active
    );
    // A link preview (HEAD) is neither a click nor a reason to move the subscription.
    let head = app
        .http_request("HEAD", &format!("/r/{}", sent.token), &[], Vec::new())
        .await;
    assert_eq!(head.status, 302);
    assert_eq!(click_outcomes(&app).await.len(), 2);
}

#[tokio::test]
async fn a_brand_can_keep_sold_out_clickers_notified() {
    let app = spawn_app_with(|s| {
        s.sms.twilio_auth_token = TOKEN.into();
        let demo = s.tenants.get_mut("demo").unwrap();
        demo.storefront_url = Some("https://demo.example/".into());
        demo.allowed_link_hosts = vec!["shop.example".into()];
        demo.sold_out_click_rewaits = false;
    })
    .await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550122",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    app.db()
        .await
        .execute(
            "UPDATE subscriptions SET status = 'notified' WHERE subscription_id = $1",
            &[&sent.subscription_id],
        )
        .await
        .unwrap();
    set_variant_stock(&app, "sku-1", 0).await;
    let a = app.click(&sent.token, &[]).await;
    assert!(a.header("location").unwrap().contains("restock=sold_out"));
    assert_eq!(click_outcomes(&app).await, ["sold_out"]);
    assert_eq!(
        api_status(&app, &sent).await,
        pb::SubscriptionStatus::Notified
    );
}

#[tokio::test]
async fn tracked_link_never_leaves_the_brands_hosts() {
    let app = spawn().await;
    // Stored before hosts were checked (or written around the API): the redirect still refuses
    // it and sends the shopper to the storefront.
    for (variant, link) in [
        ("sku-evil", "https://evil.example/phish"),
        ("sku-userinfo", "https://demo.example@evil.example/p"),
    ] {
        let sent = sent_text(&app, variant, "+14155550120", Some(link), "sent").await;
        let a = app.click(&sent.token, &[]).await;
        assert_eq!(a.status, 302, "{a:?}");
        let location = a.header("location").unwrap();
        assert!(
            location.starts_with(&format!(
                "https://demo.example/?variant={variant}&utm_source=restock"
            )),
            "{link} led to {location}"
        );
    }
}

// ---- delivery-status callbacks ----

const STATUS: &str = "/webhooks/twilio/status";

fn delivery_params<'a>(sid: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("ApiVersion", "2010-04-01"),
        ("From", SENDER),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("To", "+14155550106"),
    ]
}

#[tokio::test]
async fn status_callback_moves_sent_to_delivered_and_late_reports_change_nothing() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550106",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    let a = post_webhook(&app, STATUS, &delivery_params(&sent.sid, "delivered"), true).await;
    assert_eq!(a.status, 204, "{a:?}");
    assert!(a.body.is_empty());
    let (status, provider_status, report_at, ..) = message(&app, &sent).await;
    assert_eq!(status, "delivered");
    assert_eq!(provider_status.as_deref(), Some("delivered"));
    assert_eq!(
        report_at.map(|t| t.timestamp_micros()),
        Some(app.clock.now().timestamp_micros())
    );

    // A late "sent" and a duplicate "delivered" leave the message as it is.
    app.clock.advance(chrono::Duration::minutes(5));
    for late in ["sent", "delivered", "failed"] {
        let a = post_webhook(&app, STATUS, &delivery_params(&sent.sid, late), true).await;
        assert_eq!(a.status, 204, "{a:?}");
    }
    let (status, provider_status, later_report_at, error, _) = message(&app, &sent).await;
    assert_eq!(status, "delivered");
    assert_eq!(provider_status.as_deref(), Some("delivered"));
    assert_eq!(later_report_at, report_at);
    assert_eq!(error, None);
}

#[tokio::test]
async fn status_callback_records_progress_and_moves_a_racing_send() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550107",
        Some("https://shop.example/p"),
        "sending",
    )
    .await;
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "sending"), true).await;
    let (status, provider_status, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("sending", Some("sending"))
    );
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "sent"), true).await;
    let (status, provider_status, report_at, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("sent", Some("sent"))
    );
    assert_eq!(report_at, None);
}

#[tokio::test]
async fn status_callback_with_a_bad_signature_is_refused_and_changes_nothing() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550108",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    let forged = post_webhook(
        &app,
        STATUS,
        &delivery_params(&sent.sid, "delivered"),
        false,
    )
    .await;
    assert_eq!(forged.status, 403);
    let unsigned = app
        .http_request(
            "POST",
            STATUS,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form_encode(&owned(&delivery_params(&sent.sid, "delivered"))).into_bytes(),
        )
        .await;
    assert_eq!(unsigned.status, 403);
    // Signed for other parameters than the ones sent.
    let url = format!("http://{}{STATUS}", app.http_addr);
    let signature = twilio_signature(TOKEN, &url, &owned(&delivery_params(&sent.sid, "sent")));
    let swapped = app
        .http_request(
            "POST",
            STATUS,
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Twilio-Signature", &signature),
            ],
            form_encode(&owned(&delivery_params(&sent.sid, "delivered"))).into_bytes(),
        )
        .await;
    assert_eq!(swapped.status, 403);
    let (status, provider_status, report_at, ..) = message(&app, &sent).await;
    assert_eq!(status, "sent");
    assert_eq!(provider_status.as_deref(), Some("queued"));
    assert_eq!(report_at, None);
}

#[tokio::test]
async fn status_callback_signed_with_the_query_string_is_accepted() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550109",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    let path = format!("{STATUS}?m={}", sent.message_id);
    let a = post_webhook(
        &app,
        &path,
        &delivery_params(&sent.sid, "undelivered"),
        true,
    )
    .await;
    assert_eq!(a.status, 204, "{a:?}");
    let (status, _, report_at, ..) = message(&app, &sent).await;
    assert_eq!(status, "undelivered");
    assert!(report_at.is_some());
}

#[tokio::test]
async fn status_callback_for_an_unknown_message_is_acknowledged() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550110",
        Some("https://shop.example/p"),
        "sent",
    )
    .await;
    let a = post_webhook(
        &app,
        STATUS,
        &delivery_params("SMdoesnotexist", "delivered"),
        true,
    )
    .await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(message(&app, &sent).await.0, "sent");
}

/// The text's send is still in flight (its outcome, with the provider id, is not recorded):
/// Twilio can report on it first. The callback URL names the message, so the report is held
/// and applied once the outcome lands, not dropped.
#[tokio::test]
async fn a_report_that_beats_the_sends_outcome_is_held_then_applied_once() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550112",
        Some("https://shop.example/p"),
        "sending",
    )
    .await;
    let db = app.db().await;
    db.execute(
        "UPDATE messages SET provider_message_id = NULL, provider_status = NULL \
         WHERE tenant_id = $1 AND message_id = $2",
        &[&sent.tenant, &sent.message_id],
    )
    .await
    .unwrap();
    let held = || async {
        app.db()
            .await
            .query_one("SELECT count(*) FROM held_delivery_reports", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let own = format!("{STATUS}?t={}&m={}", sent.tenant, sent.message_id);
    // Another tenant's name on the URL finds nothing to hold.
    let foreign = format!("{STATUS}?t=other&m={}", sent.message_id);
    let a = post_webhook(
        &app,
        &foreign,
        &delivery_params(&sent.sid, "delivered"),
        true,
    )
    .await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(held().await, 0);
    // Held, twice over (a provider retry), without touching the message.
    for _ in 0..2 {
        let a = post_webhook(&app, &own, &delivery_params(&sent.sid, "delivered"), true).await;
        assert_eq!(a.status, 204, "{a:?}");
    }
    assert_eq!(held().await, 1);
    let (status, provider_status, report_at, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status, report_at),
        ("sending", None, None)
    );
    // The send's outcome lands as the sender records it; the held report follows.
    db.execute(
        "UPDATE messages SET status = 'sent', provider_message_id = $3, provider_status = 'queued' \
         WHERE tenant_id = $1 AND message_id = $2",
        &[&sent.tenant, &sent.message_id, &sent.sid],
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(20),
        "the held report applied",
        || async { message(&app, &sent).await.0 == "delivered" },
    )
    .await;
    assert_eq!(held().await, 0);
    let (_, provider_status, report_at, ..) = message(&app, &sent).await;
    assert_eq!(provider_status.as_deref(), Some("delivered"));
    assert!(report_at.is_some());
    // Acted on once: the same report again is a replay.
    let a = post_webhook(&app, &own, &delivery_params(&sent.sid, "delivered"), true).await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(held().await, 0);
    assert_eq!(message(&app, &sent).await.2, report_at);
}

/// A text given up as unknown (its lease ran out and the provider could not be asked) is
/// settled by a report that names it: the provider id is adopted and the status applied.
#[tokio::test]
async fn a_report_naming_a_text_of_unknown_outcome_settles_it() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550113",
        Some("https://shop.example/p"),
        "unknown",
    )
    .await;
    app.db()
        .await
        .execute(
            "UPDATE messages SET provider_message_id = NULL WHERE tenant_id = $1 AND message_id = $2",
            &[&sent.tenant, &sent.message_id],
        )
        .await
        .unwrap();
    let own = format!("{STATUS}?t={}&m={}", sent.tenant, sent.message_id);
    post_webhook(&app, &own, &delivery_params(&sent.sid, "delivered"), true).await;
    let (status, provider_status, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("delivered", Some("delivered"))
    );
    let sid: Option<String> = app
        .db()
        .await
        .query_one(
            "SELECT provider_message_id FROM messages WHERE tenant_id = $1 AND message_id = $2",
            &[&sent.tenant, &sent.message_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sid, Some(sent.sid.clone()));
}

#[tokio::test]
async fn recipient_unsubscribed_at_the_provider_records_an_opt_out() {
    let app = spawn().await;
    let phone = "+14155550111";
    let sent = sent_text(&app, "sku-1", phone, Some("https://shop.example/p"), "sent").await;
    let other = subscribe_in(&app, "demo", "sku-2", phone).await;
    let mut params = delivery_params(&sent.sid, "failed");
    params.push(("ErrorCode", "21610"));
    let a = post_webhook(&app, STATUS, &params, true).await;
    assert_eq!(a.status, 204, "{a:?}");
    let (status, _, _, error, _) = message(&app, &sent).await;
    assert_eq!(status, "failed");
    assert_eq!(error.as_deref(), Some("21610"));
    let permanent: Option<bool> = app
        .db()
        .await
        .query_one("SELECT last_error_permanent FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(permanent, Some(true));
    let events = ledger(&app, "demo", phone).await;
    assert_eq!(events.last().unwrap().0, "opt_out");
    assert_eq!(events.last().unwrap().1, "sms");
    assert_eq!(
        events.last().unwrap().2.as_deref(),
        Some("the provider reports the phone opted out")
    );
    for sub in [sent.subscription_id, other] {
        assert_eq!(
            app.subscription_status("demo", sub).await,
            (
                pb::SubscriptionStatus::Cancelled,
                pb::CancelReason::OptedOut
            )
        );
    }
    assert_eq!(
        consent_state(&app, "demo", phone).await,
        pb::ConsentState::OptedOut
    );
    // The same report again records no second opt-out.
    post_webhook(&app, STATUS, &params, true).await;
    assert_eq!(ledger(&app, "demo", phone).await.len(), events.len());
}

// ---- inbound texts ----

const INBOUND: &str = "/webhooks/twilio/inbound";

/// An inbound text as the provider posts it, with a MessageSid of its own (as every text has).
fn inbound<'a>(from: &'a str, to: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    let sid: &'static str = Box::leak(format!("SM{}", Uuid::new_v4().simple()).into_boxed_str());
    vec![
        ("AccountSid", "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("Body", body),
        ("From", from),
        ("MessageSid", sid),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("To", to),
    ]
}

fn assert_twiml(a: &Answer) {
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.header("content-type").unwrap().starts_with("text/xml"),
        "{a:?}"
    );
}

#[tokio::test]
async fn stop_reply_opts_out_all_subscriptions() {
    let app = spawn().await;
    let phone = "+14155550112";
    let subs = [
        subscribe_in(&app, "demo", "sku-1", phone).await,
        subscribe_in(&app, "demo", "sku-2", phone).await,
    ];
    let a = post_webhook(&app, INBOUND, &inbound(phone, SENDER, " Stop "), true).await;
    assert_twiml(&a);
    assert!(
        a.body.contains(
            "<Response><Message>You are unsubscribed from Demo Outfitters alerts. No more \
             messages will be sent. Reply START to resubscribe.</Message></Response>"
        ),
        "{}",
        a.body
    );
    for sub in subs {
        assert_eq!(
            app.subscription_status("demo", sub).await,
            (
                pb::SubscriptionStatus::Cancelled,
                pb::CancelReason::OptedOut
            )
        );
    }
    let events = ledger(&app, "demo", phone).await;
    assert_eq!(
        events.last().unwrap(),
        &("opt_out".into(), "sms".into(), Some("STOP".into()))
    );
    assert_eq!(
        consent_state(&app, "demo", phone).await,
        pb::ConsentState::OptedOut
    );
    // The other brand has its own number: nothing recorded there.
    assert!(ledger(&app, "demo-double-opt-in", phone).await.is_empty());
}

#[tokio::test]
async fn stop_reply_opts_out_of_every_brand_on_the_sender() {
    let app = spawn_app_with(|s| s.sms.twilio_auth_token = TOKEN.into()).await;
    let phone = "+14155550113";
    subscribe_in(&app, "demo", "sku-1", phone).await;
    let a = post_webhook(&app, INBOUND, &inbound(phone, SENDER, "opt out"), true).await;
    assert_twiml(&a);
    assert!(
        a.body
            .contains("unsubscribed from Demo Outfitters and Demo Double Opt-In alerts"),
        "{}",
        a.body
    );
    for tenant in ["demo", "demo-double-opt-in"] {
        assert_eq!(
            consent_state(&app, tenant, phone).await,
            pb::ConsentState::OptedOut
        );
    }
}

#[tokio::test]
async fn start_reply_opts_back_in() {
    let app = spawn().await;
    let phone = "+14155550114";
    subscribe_in(&app, "demo", "sku-1", phone).await;
    post_webhook(&app, INBOUND, &inbound(phone, SENDER, "STOP"), true).await;
    assert_eq!(
        consent_state(&app, "demo", phone).await,
        pb::ConsentState::OptedOut
    );
    let a = post_webhook(&app, INBOUND, &inbound(phone, SENDER, "start"), true).await;
    assert_twiml(&a);
    assert!(
        a.body
            .contains("<Message>You are subscribed to Demo Outfitters"),
        "{}",
        a.body
    );
    assert_eq!(
        consent_state(&app, "demo", phone).await,
        pb::ConsentState::OptedIn
    );
    let events = ledger(&app, "demo", phone).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds[kinds.len() - 3..], ["opt_out", "opt_in", "confirm"]);
    assert!(events[events.len() - 2..].iter().all(|e| e.1 == "sms"));
}

#[tokio::test]
async fn yes_reply_confirms_a_pending_double_opt_in() {
    let app = spawn().await;
    let phone = "+14155550115";
    let tenant = "demo-double-opt-in";
    let sub = subscribe_in(&app, tenant, "sku-1", phone).await;
    assert_eq!(
        app.subscription_status(tenant, sub).await.0,
        pb::SubscriptionStatus::PendingConfirmation
    );
    let a = post_webhook(&app, INBOUND, &inbound(phone, "+15005550009", "YES"), true).await;
    assert_twiml(&a);
    assert!(
        a.body
            .contains("Demo Double Opt-In: your back-in-stock alerts are confirmed"),
        "{}",
        a.body
    );
    assert_eq!(
        app.subscription_status(tenant, sub).await.0,
        pb::SubscriptionStatus::Active
    );
    assert_eq!(
        consent_state(&app, tenant, phone).await,
        pb::ConsentState::OptedIn
    );
}

#[tokio::test]
async fn help_reply_answers_the_help_text() {
    let app = spawn().await;
    let a = post_webhook(
        &app,
        INBOUND,
        &inbound("+14155550116", SENDER, "help"),
        true,
    )
    .await;
    assert_twiml(&a);
    // The default help text, XML-escaped ("Msg&data").
    assert!(
        a.body.contains(
            "<Message>Back-in-stock alerts. Reply STOP to opt out. Msg&amp;data rates may \
             apply.</Message>"
        ),
        "{}",
        a.body
    );
    assert_eq!(app.count("consent_events").await, 0);
}

#[tokio::test]
async fn other_texts_get_an_empty_answer() {
    let app = spawn().await;
    for (from, body) in [
        ("+14155550117", "when is the blue one back?"),
        ("+14155550117", "stop it"),
        ("ACME", "STOP"),
    ] {
        let a = post_webhook(&app, INBOUND, &inbound(from, SENDER, body), true).await;
        assert_twiml(&a);
        assert!(a.body.ends_with("<Response/>"), "{}", a.body);
    }
    // A keyword to a number no brand uses.
    let a = post_webhook(
        &app,
        INBOUND,
        &inbound("+14155550117", "+15005550001", "STOP"),
        true,
    )
    .await;
    assert!(a.body.ends_with("<Response/>"), "{}", a.body);
    assert_eq!(app.count("consent_events").await, 0);
}

#[tokio::test]
async fn a_replayed_start_does_not_undo_a_later_stop() {
    let app = spawn().await;
    let phone = "+14155550121";
    subscribe_in(&app, "demo", "sku-1", phone).await;
    let start = inbound(phone, SENDER, "START");
    let a = post_webhook(&app, INBOUND, &start, true).await;
    assert_twiml(&a);
    assert!(a.body.contains("<Message>"), "{}", a.body);
    post_webhook(&app, INBOUND, &inbound(phone, SENDER, "STOP"), true).await;
    assert_eq!(
        consent_state(&app, "demo", phone).await,
        pb::ConsentState::OptedOut
    );
    let before = ledger(&app, "demo", phone).await;

    // The exact first request again, signature and all: answered, acted on no more.
    let replay = post_webhook(&app, INBOUND, &start, true).await;
    assert_twiml(&replay);
    assert!(!replay.body.contains("<Message>"), "{}", replay.body);
    assert_eq!(
        consent_state(&app, "demo", phone).await,
        pb::ConsentState::OptedOut
    );
    assert_eq!(ledger(&app, "demo", phone).await, before);
    assert_eq!(app.count("webhook_receipts").await, 2);
}

#[tokio::test]
async fn a_replayed_status_callback_does_not_move_a_message_back() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550122",
        Some("https://shop.example/p"),
        "sending",
    )
    .await;
    let sending = delivery_params(&sent.sid, "sending");
    post_webhook(&app, STATUS, &sending, true).await;
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "sent"), true).await;
    let (status, provider_status, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("sent", Some("sent"))
    );

    let a = post_webhook(&app, STATUS, &sending, true).await;
    assert_eq!(a.status, 204, "{a:?}");
    let (status, provider_status, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("sent", Some("sent"))
    );
}

/// Not a replay: a callback of an earlier state arriving late (Twilio sends callbacks from
/// queues of their own) never takes the provider's status back either.
#[tokio::test]
async fn a_late_earlier_status_callback_does_not_move_the_provider_status_back() {
    let app = spawn().await;
    let sent = sent_text(
        &app,
        "sku-1",
        "+14155550124",
        Some("https://shop.example/p"),
        "sending",
    )
    .await;
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "sent"), true).await;
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "sending"), true).await;
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "queued"), true).await;
    let (status, provider_status, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("sent", Some("sent"))
    );
    post_webhook(&app, STATUS, &delivery_params(&sent.sid, "delivered"), true).await;
    let (status, provider_status, ..) = message(&app, &sent).await;
    assert_eq!(
        (status.as_str(), provider_status.as_deref()),
        ("delivered", Some("delivered"))
    );
}

#[tokio::test]
async fn webhook_receipts_are_kept_a_week_then_pruned() {
    let app = spawn().await;
    let phone = "+14155550123";
    post_webhook(&app, INBOUND, &inbound(phone, SENDER, "HELP"), true).await;
    app.clock.advance(chrono::Duration::days(6));
    let recent = app.clock.now();
    post_webhook(&app, INBOUND, &inbound(phone, SENDER, "HELP"), true).await;
    assert_eq!(app.count("webhook_receipts").await, 2);
    app.clock.advance(chrono::Duration::days(2));
    let cutoff = app.clock.now() - restock::workers::janitor::WEBHOOK_RECEIPT_RETENTION;
    let pruned = app
        .state
        .store
        .prune_webhook_receipts(cutoff)
        .await
        .unwrap();
    assert_eq!(pruned, 1, "only the receipt older than a week goes");
    let kept: Vec<DateTime<Utc>> = app
        .db()
        .await
        .query("SELECT received_at FROM webhook_receipts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Postgres keeps microseconds.
    assert_eq!(
        kept,
        vec![recent.trunc_subsecs(6)],
        "the receipt from 2 days ago stays"
    );
    let again = app
        .state
        .store
        .prune_webhook_receipts(cutoff)
        .await
        .unwrap();
    assert_eq!(again, 0);
}

#[tokio::test]
async fn the_janitor_left_running_forgets_old_receipts_by_itself() {
    let app = spawn_app_with(|s| {
        s.sms.twilio_auth_token = TOKEN.into();
        s.server.janitor_interval_seconds = 1;
    })
    .await;
    let phone = "+14155550123";
    let first = post_webhook(&app, INBOUND, &inbound(phone, SENDER, "HELP"), true).await;
    assert_eq!(first.status, 200);
    assert_eq!(app.count("webhook_receipts").await, 1);
    app.clock.advance(chrono::Duration::days(8));
    post_webhook(&app, INBOUND, &inbound(phone, SENDER, "HELP"), true).await;
    let mut kept = app.count("webhook_receipts").await;
    for _ in 0..100 {
        if kept == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        kept = app.count("webhook_receipts").await;
    }
    assert_eq!(
        kept, 1,
        "a pass a second forgot the week-old receipt and only it"
    );
}

#[tokio::test]
async fn inbound_with_a_bad_signature_is_refused() {
    let app = spawn().await;
    let phone = "+14155550118";
    let sub = subscribe_in(&app, "demo", "sku-1", phone).await;
    let before = app.count("consent_events").await;
    let a = post_webhook(&app, INBOUND, &inbound(phone, SENDER, "STOP"), false).await;
    assert_eq!(a.status, 403);
    assert_eq!(app.count("consent_events").await, before);
    assert_eq!(
        app.subscription_status("demo", sub).await.0,
        pb::SubscriptionStatus::Active
    );
}

#[tokio::test]
async fn webhooks_are_refused_without_an_auth_token() {
    // The log provider has no secret: nothing can be verified, so nothing is accepted.
    let app = spawn_app().await;
    let a = post_webhook(
        &app,
        INBOUND,
        &inbound("+14155550119", SENDER, "STOP"),
        true,
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(app.count("consent_events").await, 0);
}

#[tokio::test]
async fn wrong_methods_and_oversized_bodies_are_refused() {
    let app = spawn().await;
    assert_eq!(app.http_get(STATUS, &[]).await.status, 405);
    let big = vec![b'a'; 100 * 1024];
    let a = app
        .http_request(
            "POST",
            INBOUND,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            big,
        )
        .await;
    assert_eq!(a.status, 413, "{a:?}");
}

// ---- metrics ----

#[tokio::test]
async fn metrics_are_exposed_for_prometheus() {
    // A real text through the sender and a real link request: the counters move because the
    // server did the work, not because the test touched them.
    let fake = restock_sms::fake::FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    subscribe_in(&app, "demo", "sku-m", "+14155550188").await;
    set_stock(&app, "sku-m", "web", 0, 1).await;
    set_stock(&app, "sku-m", "web", 5, 2).await;
    assert!(fake.wait_for_messages(1, Duration::from_secs(20)).await);
    app.http_get("/r/AAAAAAAAAAAAAAAAAAAAAA", &[]).await;
    let mut a = app.http_get("/metrics", &[]).await;
    // The outcome is counted as the sender records it, just after the provider answered.
    for _ in 0..200 {
        if a.body.contains("outcome=\"sent\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        a = app.http_get("/metrics", &[]).await;
    }
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").unwrap().contains("text"), "{a:?}");
    assert!(
        a.body
            .contains("restock_link_requests_total{outcome=\"not_found\"} 1"),
        "{}",
        a.body
    );
    assert!(a
        .body
        .contains("restock_messages_total{tenant=\"demo\",outcome=\"sent\"} 1"));
    assert_eq!(
        sample(&a.body, "restock_provider_send_seconds_count"),
        Some(1.0),
        "{}",
        a.body
    );
}

/// The value of the sample `name` (with its labels) in an exposition.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_outbox_backlog_and_its_oldest_due_wait_are_on_metrics() {
    let fake = restock_sms::fake::FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    // 23:00 in New York: the texts wait for 08:00.
    let night = texting_hours() - chrono::Duration::hours(15);
    app.clock.set(night);
    for p in phones(5, 300) {
        let mut req = subscribe_request("sku-1", &p);
        req.time_zone = "America/New_York".into();
        app.subscribe(req).await.unwrap();
    }
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 9, 2).await;
    let db = app.db().await;
    eventually(
        std::time::Duration::from_secs(10),
        "the texts to be deferred",
        || async {
            db.query_one(
                "SELECT count(*) FROM messages WHERE status = 'deferred'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                == 5
        },
    )
    .await;
    let metrics = app.metrics().await.body;
    assert_eq!(
        sample(&metrics, "restock_outbox_messages{state=\"deferred\"}"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "restock_outbox_messages{state=\"planned\"}"),
        Some(0.0)
    );
    // None is due yet.
    assert_eq!(
        sample(&metrics, "restock_outbox_oldest_due_age_seconds"),
        Some(0.0)
    );
    // A replica that sends nothing, its clock two hours past 08:00, sees them late by that.
    let replica = spawn_app_on(app.db_url.clone(), |s| s.dispatch.enabled = false).await;
    replica
        .clock
        .set(night + chrono::Duration::hours(9) + chrono::Duration::hours(2));
    let metrics = replica.metrics().await.body;
    assert_eq!(
        sample(&metrics, "restock_outbox_oldest_due_age_seconds"),
        Some(7200.0),
        "{metrics}"
    );
    // And every RPC so far is counted by method and code.
    assert_eq!(
        sample(&metrics, "restock_grpc_calls_total{service=\"restock.v1.WaitlistService\",method=\"Subscribe\",code=\"OK\"}"),
        None,
        "the replica served no Subscribe"
    );
    let metrics = app.metrics().await.body;
    assert_eq!(
        sample(&metrics, "restock_grpc_calls_total{service=\"restock.v1.WaitlistService\",method=\"Subscribe\",code=\"OK\"}"),
        Some(5.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_pool_and_the_redis_round_trips_of_sending_are_on_metrics() {
    let fake = restock_sms::fake::FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    let metrics = app.metrics().await.body;
    // Nothing sent yet: no cap checked, so no round trip to Redis measured.
    assert_eq!(
        sample(&metrics, "restock_redis_round_trip_seconds_count"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "restock_db_pool_max_connections"),
        Some(8.0),
        "{metrics}"
    );
    subscribe_all(&app, "sku-1", &phones(3, 400)).await;
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 9, 2).await;
    assert!(
        fake.wait_for_messages(3, std::time::Duration::from_secs(20))
            .await
    );
    // The sender checked the caps (one round trip per batch at least) before handing over.
    eventually(
        std::time::Duration::from_secs(10),
        "the caps' round trips on /metrics",
        || async {
            let metrics = app.metrics().await.body;
            sample(&metrics, "restock_redis_round_trip_seconds_count").unwrap_or(0.0) >= 1.0
        },
    )
    .await;
    let metrics = app.metrics().await.body;
    let sum = sample(&metrics, "restock_redis_round_trip_seconds_sum").unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{metrics}");
    // Read at the scrape: the calls above opened connections, none of them is waited for now.
    let open = sample(&metrics, "restock_db_pool_connections").unwrap();
    let idle = sample(&metrics, "restock_db_pool_idle_connections").unwrap();
    assert!((1.0..=8.0).contains(&open), "{metrics}");
    assert!(idle <= open, "{metrics}");
    assert_eq!(
        sample(&metrics, "restock_db_pool_waiting_requests"),
        Some(0.0),
        "{metrics}"
    );
    // The health probe's view of the dependencies, what the NOT_SERVING alerts read.
    for dependency in ["postgres", "redis"] {
        assert_eq!(
            sample(
                &metrics,
                &format!("restock_dependency_up{{dependency=\"{dependency}\"}}")
            ),
            Some(1.0),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn tracked_links_are_rate_limited_per_client_address() {
    let app = spawn_app_with(|s| {
        s.http.link_rate_per_second = 1;
        s.http.link_burst = 5;
    })
    .await;
    let mut answers = Vec::new();
    for i in 0..20 {
        let path = format!("/r/AAAAAAAAAAAAAAAAAAAA{i:02}");
        answers.push(app.http_get(&path, &[]).await);
    }
    // The burst is answered (unknown tokens: 404), the rest is refused with a time to retry,
    // before any look-up.
    assert!(answers[..5].iter().all(|a| a.status == 404), "{answers:?}");
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(limited.len() >= 10, "{answers:?}");
    assert!(limited.iter().all(|a| a
        .header("retry-after")
        .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1))));
}
