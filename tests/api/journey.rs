//! Steps of the shopper's journey end to end through the public API: what happens to a text
//! between its plan and its send, and to the subscription behind it.

use std::time::Duration;

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;

/// The count a `SELECT count(*) ...` answers.
async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Texts deferred past quiet hours whose variant sells out before the morning are not sent:
/// they are skipped as not in stock, the shoppers stay in line (never marked notified), and
/// the next restock texts them.
#[tokio::test]
async fn a_deferred_text_whose_variant_sold_out_by_send_time_is_not_sent() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    // 23:00 in New York.
    let night = texting_hours() - chrono::Duration::hours(15);
    app.clock.set(night);
    let phones = phones(5, 300);
    let mut ids = Vec::new();
    for p in &phones {
        let mut req = subscribe_request("sku-1", p);
        req.time_zone = "America/New_York".into();
        let r = app.subscribe(req).await.unwrap();
        ids.push(r.subscription.unwrap().subscription_id);
    }
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 9, 2).await;
    app.settle(10).await;
    assert_eq!(statuses(&app).await.get("deferred"), Some(&5));
    // Sold out overnight.
    app.clock.set(night + chrono::Duration::hours(4));
    set_stock(&app, "sku-1", "loc-1", 0, 3).await;
    // Eight in the morning: the texts come due and find no stock.
    app.clock.set(night + chrono::Duration::hours(9));
    assert_eq!(
        app.settle(10).await.claimed,
        5,
        "the deferred texts decided"
    );
    let skipped = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            statuses: vec![pb::MessageStatus::Skipped as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert!(skipped
        .iter()
        .all(|m| m.reason() == pb::ReasonCode::NotInStock));
    assert_eq!(
        fake.message_count(),
        0,
        "a text went out for a sold-out variant"
    );
    for id in &ids {
        assert_eq!(
            app.subscription_status("demo", &id).await.0,
            pb::SubscriptionStatus::Active,
            "{id}"
        );
    }
    // Back in stock at noon: the same shoppers are texted, once each.
    app.clock.set(night + chrono::Duration::hours(13));
    set_stock(&app, "sku-1", "loc-1", 7, 4).await;
    assert_eq!(app.settle(10).await.claimed, 5);
    let sent = per_phone(&fake);
    assert_eq!(sent.len(), 5);
    assert!(sent.values().all(|&n| n == 1), "{sent:?}");
}

/// The brand's sender is refused by the provider account (a configuration error that would
/// fail every text): the fallback account and sender take the release over, and every phone
/// is texted once.
#[tokio::test]
async fn a_refused_sender_hands_the_release_to_the_fallback_account() {
    let first = FakeTwilio::start().await.unwrap();
    let second = FakeTwilio::start().await.unwrap();
    const FALLBACK: &str = "MGfedcba9876543210fedcba9876543210";
    let app = spawn_sender(&first, |s| {
        // The first account's token is wrong: 401 to every create.
        s.sms.twilio_auth_token = "not-the-token".into();
        let fallback = second.config();
        s.sms.fallback_twilio_account_sid = fallback.account_sid;
        s.sms.fallback_twilio_auth_token = fallback.auth_token.into();
        s.sms.fallback_twilio_base_url = fallback.base_url;
        s.tenants.get_mut("demo").unwrap().fallback_sender_id = Some(FALLBACK.into());
    })
    .await;
    let phones = phones(20, 400);
    subscribe_all(&app, "sku-1", &phones).await;
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 8, 2).await;
    assert!(second.wait_for_messages(20, Duration::from_secs(30)).await);
    let db = app.db().await;
    eventually(
        Duration::from_secs(10),
        "every text recorded sent",
        || async { count(&db, "SELECT count(*) FROM messages WHERE status = 'sent'").await == 20 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(first.message_count(), 0);
    let sent = per_phone(&second);
    assert_eq!(sent.len(), 20);
    assert!(sent.values().all(|&n| n == 1), "{sent:?}");
    assert!(second
        .messages()
        .iter()
        .all(|m| m.messaging_service_sid.as_deref() == Some(FALLBACK)));
}

/// A US long code cannot text a UK phone: with a UK sender named for GB, the UK phone is texted
/// from it; a French phone, with no sender for FR, is skipped with its own reason.
#[tokio::test]
async fn each_phone_is_texted_from_a_sender_its_country_allows() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        s.tenants
            .get_mut("demo")
            .unwrap()
            .country_senders
            .insert("GB".into(), "+447400000009".into());
    })
    .await;
    let phones = ["+14155550150", "+447400123456", "+33612345678"];
    subscribe_all(
        &app,
        "sku-1",
        &phones.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    )
    .await;
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 8, 2).await;
    assert!(fake.wait_for_messages(2, Duration::from_secs(20)).await);
    let db = app.db().await;
    eventually(
        Duration::from_secs(10),
        "the French phone skipped",
        || async {
            count(
                &db,
                "SELECT count(*) FROM messages WHERE status = 'skipped' \
             AND reason = 'no_sender_for_country'",
            )
            .await
                == 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut from: Vec<(String, Option<String>)> = fake
        .messages()
        .into_iter()
        .map(|m| (m.to, m.from))
        .collect();
    from.sort();
    assert_eq!(
        from,
        [
            ("+14155550150".to_string(), Some("+15005550006".to_string())),
            (
                "+447400123456".to_string(),
                Some("+447400000009".to_string())
            ),
        ]
    );
}

async fn subscribe_to(
    app: &TestApp,
    tenant: &str,
    variant: &str,
    phone: &str,
    zone: &str,
) -> String {
    let mut req = subscribe_request(variant, phone);
    req.tenant_id = tenant.into();
    req.time_zone = zone.into();
    let r = app.subscribe(req).await.unwrap();
    r.subscription.unwrap().subscription_id
}

/// A double opt-in brand: restock sends the confirmation text itself, one per phone per batch
/// of pending subscriptions, never two in a day, never in quiet hours; YES makes the batch
/// active; what is never confirmed lapses after the brand's window.
#[tokio::test]
async fn a_double_opt_in_shopper_is_asked_once_and_what_is_never_confirmed_lapses() {
    const TENANT: &str = "demo-double-opt-in";
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    let afternoon = texting_hours();
    let (ann, bob) = ("+14155550161", "+14155550162");
    let ann_1 = subscribe_to(&app, TENANT, "sku-1", ann, "America/New_York").await;
    let ann_2 = subscribe_to(&app, TENANT, "sku-2", ann, "America/New_York").await;
    // Two pending subscriptions, one text.
    assert!(fake.wait_for_messages(1, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = fake.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].to, ann);
    assert!(
        got[0]
            .body
            .starts_with("Demo Double Opt-In: reply YES to get a text when")
            && got[0].body.ends_with("Reply STOP to opt out"),
        "{}",
        got[0].body
    );
    // Bob signs up at 23:00 his time: his text waits for the morning.
    app.clock.set(afternoon + chrono::Duration::hours(8));
    let bob_1 = subscribe_to(&app, TENANT, "sku-1", bob, "America/New_York").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fake.message_count(), 1, "a confirmation in quiet hours");
    // Ann signs up again within the day: a new batch, but no second text the same day.
    let ann_3 = subscribe_to(&app, TENANT, "sku-3", ann, "America/New_York").await;
    app.clock.set(afternoon + chrono::Duration::hours(18)); // 08:00 in New York
    assert!(fake.wait_for_messages(2, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let to: Vec<String> = fake.messages().iter().map(|m| m.to.clone()).collect();
    assert_eq!(to, [ann, bob]);
    // A day after Ann's first text, her second batch is asked about.
    app.clock
        .set(afternoon + chrono::Duration::hours(24) + chrono::Duration::minutes(1));
    assert!(fake.wait_for_messages(3, Duration::from_secs(20)).await);
    assert_eq!(fake.messages()[2].to, ann);
    // Ann confirms (as a YES reply does): her whole batch is active.
    app.confirm_subscription(pb::ConfirmSubscriptionRequest {
        tenant_id: TENANT.into(),
        subscription_id: ann_1.clone(),
        source: pb::ConsentSource::Sms as i32,
    })
    .await
    .unwrap();
    for id in [&ann_1, &ann_2, &ann_3] {
        assert_eq!(
            app.subscription_status(TENANT, &id).await.0,
            pb::SubscriptionStatus::Active
        );
    }
    // Bob never answers: two days on, his subscription has lapsed, and Ann's are untouched.
    app.clock.set(afternoon + chrono::Duration::hours(8 + 49));
    eventually(
        Duration::from_secs(20),
        "Bob's subscription lapsed",
        || async {
            app.subscription_status(TENANT, &bob_1).await.0 == pb::SubscriptionStatus::Lapsed
        },
    )
    .await;
    assert_eq!(
        app.subscription_status(TENANT, &ann_1).await.0,
        pb::SubscriptionStatus::Active
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.message_count(), 3);
    let db = app.db().await;
    let statuses: Vec<String> = db
        .query(
            "SELECT status FROM confirmation_texts ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["sent", "sent", "sent"]);

    // The confirmation rate: four asked, Ann's three confirmed, Bob's lapsed one asked and
    // never confirmed; the median wait is the middle of Ann's three.
    let confirmed_at = afternoon + chrono::Duration::hours(24) + chrono::Duration::minutes(1);
    let mut waits = Vec::new();
    for id in [&ann_1, &ann_2, &ann_3] {
        let created = app
            .get_subscription(pb::GetSubscriptionRequest {
                tenant_id: TENANT.into(),
                subscription_id: id.clone(),
            })
            .await
            .unwrap()
            .subscription
            .unwrap()
            .create_time
            .unwrap();
        waits.push(confirmed_at.timestamp() - created.seconds);
    }
    waits.sort_unstable();
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    let s = app
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: TENANT.into(),
            start_time: Some(ts(afternoon - chrono::Duration::days(2))),
            end_time: Some(ts(afternoon + chrono::Duration::days(3))),
        })
        .await
        .unwrap()
        .report
        .unwrap()
        .signups
        .unwrap();
    let rate = s.confirmation_rate.unwrap();
    assert_eq!((rate.numerator, rate.denominator), (3, 4));
    assert_eq!(s.time_to_confirm_median.unwrap().seconds, waits[1]);
    // Where those signups stand: Ann's three waiting, Bob's lapsed.
    let counts: Vec<_> = s
        .status_counts
        .iter()
        .map(|c| (c.status(), c.count))
        .collect();
    assert_eq!(
        counts,
        [
            (pb::SubscriptionStatus::Active, 3),
            (pb::SubscriptionStatus::Lapsed, 1)
        ]
    );
}

/// A shopper who opts out while their confirmation waits for the morning is never asked.
#[tokio::test]
async fn an_opt_out_before_the_confirmation_goes_out_cancels_it() {
    const TENANT: &str = "demo-double-opt-in";
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    let night = texting_hours() + chrono::Duration::hours(8); // 23:00 in New York
    app.clock.set(night);
    let phone = "+14155550171";
    subscribe_to(&app, TENANT, "sku-1", phone, "America/New_York").await;
    let db = app.db().await;
    eventually(
        Duration::from_secs(10),
        "a confirmation planned",
        || async { count(&db, "SELECT count(*) FROM confirmation_texts").await == 1 },
    )
    .await;
    app.opt_out(pb::OptOutRequest {
        tenant_id: TENANT.into(),
        phone_number: phone.into(),
        source: pb::ConsentSource::Sms as i32,
        reason: "STOP".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    app.clock.set(night + chrono::Duration::hours(10));
    eventually(
        Duration::from_secs(20),
        "the confirmation cancelled",
        || async {
            db.query_one("SELECT status FROM confirmation_texts", &[])
                .await
                .unwrap()
                .get::<_, String>(0)
                == "cancelled"
        },
    )
    .await;
    assert_eq!(fake.message_count(), 0);
}

/// A variant-level restock promises what the shopper's own nearest stocked location promises;
/// a shopper who named no location gets no promise rather than a wrong one.
#[tokio::test]
async fn a_variant_level_text_carries_the_promise_of_the_shoppers_stocked_location() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        let demo = s.tenants.get_mut("demo").unwrap();
        demo.delivery_promises
            .insert("store-1".into(), "Pick it up today at Store 1.".into());
        demo.delivery_promises
            .insert("store-2".into(), "Pick it up today at Store 2.".into());
    })
    .await;
    let (near_2, anywhere) = ("+14155550181", "+14155550182");
    let mut req = subscribe_request("sku-1", near_2);
    // Store 1 first, but it gets no stock: Store 2 is the nearest that has it.
    req.location_ids = vec!["store-1".into(), "store-2".into()];
    app.subscribe(req).await.unwrap();
    app.subscribe(subscribe_request("sku-1", anywhere))
        .await
        .unwrap();
    set_stock(&app, "sku-1", "store-2", 0, 1).await;
    set_stock(&app, "sku-1", "store-2", 6, 2).await;
    assert!(fake.wait_for_messages(2, Duration::from_secs(20)).await);
    let db = app.db().await;
    let location: Option<String> = db
        .query_one("SELECT location_id FROM releases", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(location, None, "a variant-level release");
    let body = |to: &str| {
        fake.messages()
            .into_iter()
            .find(|m| m.to == to)
            .map(|m| m.body)
            .unwrap()
    };
    assert!(
        body(near_2).contains("Pick it up today at Store 2."),
        "{}",
        body(near_2)
    );
    assert!(!body(anywhere).contains("Pick it up"), "{}", body(anywhere));
}

/// "I clicked but it's out again": the shopper whose click found the variant sold out is back in
/// line, and the next restock a day later texts them, though the re-notify window (72 h) keeps
/// the one who never clicked from a second text; who clicked and could buy is not texted again
/// either.
#[tokio::test]
async fn a_shopper_whose_click_found_it_sold_out_is_texted_at_the_next_restock() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        let demo = s.tenants.get_mut("demo").unwrap();
        demo.storefront_url = Some("https://demo.example/".into());
    })
    .await;
    let line = phones(3, 400);
    let (sold_out_clicker, in_stock_clicker, silent) = (&line[0], &line[1], &line[2]);
    for p in &line {
        app.subscribe(subscribe_request("sku-1", p)).await.unwrap();
    }
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 2, 2).await;
    assert!(fake.wait_for_messages(3, Duration::from_secs(20)).await);
    let db = app.db().await;
    eventually(Duration::from_secs(10), "three texts recorded", || async {
        count(&db, "SELECT count(*) FROM messages WHERE status = 'sent'").await == 3
    })
    .await;
    let token = |phone: String| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT m.link_token FROM messages m JOIN contacts c USING (tenant_id, contact_id) \
                 WHERE c.phone_e164 = $1",
                &[&phone],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    // One clicks while it is there; then it sells out, and the other clicks.
    let a = app
        .http_get(
            &format!("/r/{}", token(in_stock_clicker.clone()).await),
            &[],
        )
        .await;
    assert!(!a.header("location").unwrap().contains("restock="));
    app.clock.advance(chrono::Duration::hours(1));
    set_stock(&app, "sku-1", "web", 0, 3).await;
    let a = app
        .http_get(
            &format!("/r/{}", token(sold_out_clicker.clone()).await),
            &[],
        )
        .await;
    assert!(a.header("location").unwrap().contains("restock=sold_out"));

    // Back a day later, well inside the 72 h re-notify window.
    app.clock.advance(chrono::Duration::hours(24));
    set_stock(&app, "sku-1", "web", 5, 4).await;
    assert!(fake.wait_for_messages(4, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = per_phone(&fake);
    assert_eq!(sent.get(sold_out_clicker), Some(&2), "{sent:?}");
    assert_eq!(sent.get(in_stock_clicker), Some(&1), "{sent:?}");
    assert_eq!(sent.get(silent), Some(&1), "{sent:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM messages WHERE status = 'skipped' AND reason = 'recently_notified'"
        )
        .await,
        2
    );
}

/// A text the provider throttled was never sent, so it must not spend one of the phone's texts
/// of the day: with a cap of one a day, the retry still goes out (before, the retry found the
/// cap spent by the refused attempt and waited a day).
#[tokio::test]
async fn a_text_the_provider_throttled_does_not_spend_the_phones_cap() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        let demo = s.tenants.get_mut("demo").unwrap();
        demo.phone_cap_texts = 1;
        demo.phone_cap_hours = 24;
    })
    .await;
    fake.throttle_next(2, Duration::from_millis(50));
    app.subscribe(subscribe_request("sku-1", "+14155550450"))
        .await
        .unwrap();
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 3, 2).await;
    let db = app.db().await;
    // The retries are due a moment later on the test's clock: move it along.
    for _ in 0..100 {
        if fake.message_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.clock.advance(chrono::Duration::seconds(2));
    }
    if !fake.wait_for_messages(1, Duration::from_secs(1)).await {
        let rows = db
            .query(
                "SELECT status, reason, attempts, due_at::text, last_error_code FROM messages",
                &[],
            )
            .await
            .unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} {} {:?} {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, Option<String>>(1),
                    r.get::<_, i32>(2),
                    r.get::<_, Option<String>>(3),
                    r.get::<_, Option<String>>(4)
                )
            })
            .collect();
        panic!(
            "the retry never went out ({} requests): {rows:?}",
            fake.create_requests()
        );
    }
    eventually(
        Duration::from_secs(10),
        "the text recorded as sent",
        || async {
            count(
                &db,
                "SELECT count(*) FROM messages WHERE status = 'sent' AND attempts = 3",
            )
            .await
                == 1
        },
    )
    .await;
    assert_eq!(fake.create_requests(), 3);
    assert_eq!(fake.message_count(), 1);
}

/// One double-opt-in shopper's whole walk, as the API shows it: signed up and asked to
/// confirm, YES by text, texted at the restock, a click, a purchase credited to the text, and
/// the subscription CONVERTED. The statuses are printed for the closing note.
#[tokio::test]
async fn a_double_opt_in_shopper_walks_from_signup_to_a_converted_purchase() {
    const TENANT: &str = "demo-double-opt-in";
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo-double-opt-in").unwrap();
        t.storefront_url = Some("https://demo.example/".into());
        t.sender_id = "+15005550019".into();
    })
    .await;
    let phone = "+14155550470";
    let mut walk = Vec::new();
    let id = subscribe_to(&app, TENANT, "sku-1", phone, "America/New_York").await;
    walk.push(format!(
        "Subscribe -> {:?}",
        app.subscription_status(TENANT, &id).await.0
    ));
    assert_eq!(
        app.subscription_status(TENANT, &id).await.0,
        pb::SubscriptionStatus::PendingConfirmation
    );
    assert!(fake.wait_for_messages(1, Duration::from_secs(20)).await);
    let ask = fake.messages()[0].clone();
    assert!(ask.body.contains("reply YES"), "{}", ask.body);
    walk.push(format!("confirmation text: {:?}", ask.body));

    // The shopper answers YES, through the provider's signed webhook.
    let a = app
        .webhook(
            INBOUND_WEBHOOK,
            &[
                ("AccountSid", "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                ("Body", "YES"),
                ("From", phone),
                ("MessageSid", "SM0000000000000000000000000000yes1"),
                ("NumMedia", "0"),
                ("NumSegments", "1"),
                ("To", "+15005550019"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        app.subscription_status(TENANT, &id).await.0,
        pb::SubscriptionStatus::Active
    );
    walk.push(format!("YES -> {:?}", pb::SubscriptionStatus::Active));

    // The restock: one text.
    let mut inventory = app.eligibility();
    for (event_id, available, seq) in [("walk-1", 0, 1), ("walk-2", 4, 2)] {
        inventory
            .report_inventory(pb::ReportInventoryRequest {
                tenant_id: TENANT.into(),
                events: vec![event(event_id, "sku-1", "web", available, seq)],
            })
            .await
            .unwrap();
    }
    assert!(fake.wait_for_messages(2, Duration::from_secs(20)).await);
    let text = fake.messages()[1].clone();
    assert_eq!(text.to, phone);
    eventually(Duration::from_secs(10), "NOTIFIED", || async {
        app.subscription_status(TENANT, &id).await.0 == pb::SubscriptionStatus::Notified
    })
    .await;
    walk.push(format!("restock text: {:?} -> NOTIFIED", text.body));

    // The click, then the purchase an hour later.
    let token = text.body.split("/r/").nth(1).expect("a tracked link")[..22].to_string();
    let a = app.click(&token, &[]).await;
    assert_eq!(a.status, 302);
    walk.push(format!("click -> 302 {}", a.header("location").unwrap()));
    app.clock.advance(chrono::Duration::hours(1));
    let bought = app
        .record_purchase(pb::RecordPurchaseRequest {
            tenant_id: TENANT.into(),
            order_id: "walk-1".into(),
            phone_number: phone.into(),
            lines: vec![pb::PurchaseLine {
                variant_id: "sku-1".into(),
                quantity: 1,
                total_price: Some(pb::Money {
                    amount_minor: 5_900,
                    currency_code: "USD".into(),
                }),
                location_id: String::new(),
            }],
            purchase_time: Some(ts(app.clock.now_dt())),
            ..Default::default()
        })
        .await
        .unwrap();
    walk.push(format!("RecordPurchase -> {:?}", bought.attributions));
    assert_eq!(
        app.subscription_status(TENANT, &id).await.0,
        pb::SubscriptionStatus::Converted
    );
    walk.push("GetSubscription -> CONVERTED".into());
    // The release's report counts the signup where its journey ended.
    let release_id = bought.attributions[0].release_id.clone();
    let report = app
        .get_release_report(pb::GetReleaseReportRequest {
            tenant_id: TENANT.into(),
            release_id,
        })
        .await
        .unwrap()
        .report
        .unwrap();
    let signups = report.signups.unwrap();
    let statuses: Vec<_> = signups
        .status_counts
        .iter()
        .map(|c| (c.status(), c.count))
        .collect();
    assert_eq!(statuses, [(pb::SubscriptionStatus::Converted, 1)]);
    walk.push(format!(
        "GetReleaseReport signups.status_counts -> {statuses:?}"
    ));
    for step in &walk {
        eprintln!("WALK {step}");
    }
}
