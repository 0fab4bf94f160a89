//! Purchases in: idempotent on the order id, attributed to the latest text within the
//! tenant's windows, and suppressing texts to recent buyers; and the follow-up reminder.

use crate::helpers::*;

use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;
use tonic::Code;

/// One unit of `variant` for 49.99 USD.
fn order_of(
    id: &str,
    phone: &str,
    variant: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> pb::RecordPurchaseRequest {
    purchase(id, phone, variant, 1, (4_999, "USD"), at)
}

/// Steps the workers until `n` messages are recorded as sent.
async fn until_sent(app: &TestApp, n: i64) {
    app.until("texts recorded as sent", || async {
        statuses(app).await.get("sent") == Some(&n)
    })
    .await;
}

#[tokio::test]
async fn a_purchase_after_a_text_is_credited_to_it_once_and_converts_the_subscription() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let phone = "+14155551000";
    subscribe_all(&app, "sku-1", &[phone.to_string()]).await;
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    until_sent(&app, 1).await;
    app.clock.advance(chrono::Duration::hours(2));
    let at = app.clock.now_dt();
    // National format, as a storefront may send it.
    let first = app
        .record_purchase(order_of("o-1", "(415) 555-1000", "sku-1", at))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.attributions.len(), 1);
    let a = &first.attributions[0];
    assert_eq!(a.basis(), pb::AttributionBasis::Text);
    assert!(!a.message_id.is_empty() && !a.release_id.is_empty());
    let subs = app
        .list_subscriptions(pb::ListSubscriptionsRequest {
            tenant_id: "demo".into(),
            phone_number: phone.into(),
            default_region: "US".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .subscriptions;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].status(), pb::SubscriptionStatus::Converted);
    // Again: the first answer, nothing recorded twice.
    let again = app
        .record_purchase(order_of("o-1", "(415) 555-1000", "sku-1", at))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.attributions, first.attributions);
    // The same order id with other content is refused.
    let mut other = order_of("o-1", "(415) 555-1000", "sku-1", at);
    other.lines[0].quantity = 2;
    let err = app.record_purchase(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let lines: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM purchase_lines", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lines, 1);
}

#[tokio::test]
async fn a_click_extends_the_window_and_a_purchase_without_a_text_is_not_attributed() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().storefront_url = Some("https://shop.example/".into());
    })
    .await;
    let phone = "+14155551001";
    subscribe_all(&app, "sku-1", &[phone.to_string()]).await;
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    until_sent(&app, 1).await;
    let body = fake.messages()[0].body.clone();
    let token = body.split("/r/").nth(1).unwrap().split(' ').next().unwrap();
    app.clock.advance(chrono::Duration::days(2));
    let click = app.click(token, &[]).await;
    assert_eq!(click.status, 302);
    app.clock.advance(chrono::Duration::days(1));
    let at = app.clock.now_dt();
    let credited = app
        .record_purchase(order_of("o-2", phone, "sku-1", at))
        .await
        .unwrap();
    assert_eq!(
        credited.attributions[0].basis(),
        pb::AttributionBasis::Click
    );
    // Another variant, never texted about: recorded, not attributed.
    let other = app
        .record_purchase(order_of("o-3", phone, "sku-9", at))
        .await
        .unwrap();
    assert_eq!(other.attributions[0].basis(), pb::AttributionBasis::None);
    assert!(other.attributions[0].message_id.is_empty());
}

#[tokio::test]
async fn a_recent_buyer_is_not_texted_about_what_they_bought() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let buyers = phones(2, 1100);
    subscribe_all(&app, "sku-1", &buyers).await;
    let at = app.clock.now_dt();
    app.record_purchase(order_of("o-4", &buyers[0], "sku-1", at))
        .await
        .unwrap();
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    app.settle(10).await;
    let skipped = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            statuses: vec![pb::MessageStatus::Skipped as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].reason(), pb::ReasonCode::RecentlyPurchased);
    assert_eq!(fake.messages()[0].to, buyers[1]);
    assert_eq!(fake.message_count(), 1);
}

#[tokio::test]
async fn bad_purchases_name_every_bad_field_and_record_nothing() {
    let app = spawn_app().await;
    let now = app.clock.now_dt();
    let mut bad = order_of("", "", "", now + chrono::Duration::hours(1));
    bad.lines.push(pb::PurchaseLine {
        variant_id: "sku-2".into(),
        quantity: 0,
        total_price: Some(pb::Money {
            amount_minor: -1,
            currency_code: "usd".into(),
        }),
        location_id: String::new(),
    });
    let err = app.record_purchase(bad).await.unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "customer_id",
            "lines[0].variant_id",
            "lines[1].quantity",
            "lines[1].total_price.amount_minor",
            "lines[1].total_price.currency_code",
            "order_id",
            "purchase_time",
        ]
    );
    let mut twice = order_of("o-5", "+14155551200", "sku-1", now);
    twice.lines.push(twice.lines[0].clone());
    let err = app.record_purchase(twice).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["lines[1].variant_id"]);
    assert_eq!(app.count("purchases").await, 0);
}

#[tokio::test]
async fn one_reminder_follows_for_those_who_have_not_bought() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().reminder_after_minutes = Some(60);
    })
    .await;
    let shoppers = phones(3, 1300);
    subscribe_all(&app, "sku-1", &shoppers).await;
    set_stock(&app, "sku-1", "loc-1", 10, 1).await;
    until_sent(&app, 3).await;
    // One buys within the hour.
    app.clock.advance(chrono::Duration::minutes(30));
    app.record_purchase(order_of("o-6", &shoppers[0], "sku-1", app.clock.now_dt()))
        .await
        .unwrap();
    app.settle(10).await;
    assert_eq!(fake.message_count(), 3, "no reminder before the hour");
    app.clock.advance(chrono::Duration::minutes(31));
    app.settle(10).await;
    let got = fake.messages();
    assert_eq!(got.len(), 5, "two reminders, none to the buyer");
    assert!(got[3..].iter().all(|m| m.to != shoppers[0]));
    assert!(got[3].body.contains("still in stock"), "{}", got[3].body);
    // Exactly one reminder each, ever.
    app.clock.advance(chrono::Duration::hours(2));
    app.settle(10).await;
    assert_eq!(fake.message_count(), 5);
}

/// Orders are kept without expiry: one recorded before the canonical fingerprint holds the
/// legacy digest, and sending it again is still the same order (another one is still refused).
#[tokio::test]
async fn an_order_recorded_with_the_legacy_fingerprint_is_still_recognised() {
    let app = spawn_app().await;
    let at = app.clock.now_dt();
    let req = order_of("o-legacy", "+14155551001", "sku-1", at);
    let first = app.record_purchase(req.clone()).await.unwrap();
    assert!(first.created);
    let cmd = restock::app::purchases::RecordPurchase::parse(req.clone(), at).unwrap();
    let canonical = restock::app::purchases::fingerprint(&cmd).stored().to_vec();
    let legacy = restock::app::purchases::legacy_fingerprint(&cmd);
    let db = app.db().await;
    let stored: Vec<u8> = db
        .query_one(
            "SELECT request_hash FROM purchases WHERE order_id = 'o-legacy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, canonical, "new orders keep the canonical print");
    // As a row written before the canonical form (no API writes this form any more).
    db.execute(
        "UPDATE purchases SET request_hash = $1 WHERE order_id = 'o-legacy'",
        &[&legacy],
    )
    .await
    .unwrap();
    let again = app.record_purchase(req.clone()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.attributions, first.attributions);
    let mut other = req;
    other.lines[0].quantity = 2;
    let err = app.record_purchase(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}
