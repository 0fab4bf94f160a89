//! Erasure erases: after `ErasePhone` no row of the database links back to the person, in any
//! format the person's identifiers were given in, and their order cannot be matched again.

use std::path::PathBuf;

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;

const PHONE_E164: &str = "+14155550132";
const PHONE_NATIONAL: &str = "(415) 555-0132";
const PHONE_DIGITS: &str = "4155550132";
const CUSTOMER: &str = "cust-erase-4711";
const SESSION: &str = "sess-erase-4712";
const IP: &str = "198.51.100.23";
const USER_AGENT: &str = "EraseMeBrowser/7.1 (consent form)";
const CLICK_AGENT: &str = "EraseMeBrowser/7.1 (link click)";
const IDEMPOTENCY_KEY: &str = "idem-erase-4713";
const ORDER: &str = "order-erase-4714";
const NAME: &str = "Jane Erasable";

/// `pg_dump`: on PATH, else where `pg_config` says, else the Debian cluster's.
fn pg_dump() -> PathBuf {
    let on_path = std::process::Command::new("pg_dump")
        .arg("--version")
        .output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return "pg_dump".into();
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let bin = PathBuf::from(dir).join("pg_dump");
        if bin.exists() {
            return bin;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("pg_dump: not on PATH, no pg_config, no /usr/lib/postgresql")
        .filter_map(|e| Some(e.ok()?.path().join("bin/pg_dump")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().expect("pg_dump under /usr/lib/postgresql")
}

fn dump(db_url: &str) -> String {
    let out = std::process::Command::new(pg_dump())
        .args(["--no-owner", "--no-privileges", "--dbname", db_url])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a UTF-8 dump")
}

#[tokio::test]
async fn erasure_leaves_nothing_in_the_database_that_links_back_to_the_person() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().storefront_url = Some("https://shop.example/".into());
    })
    .await;

    // Everything a shopper leaves behind: a subscription with ids, consent evidence and an
    // idempotency key, a text, a click, an order, and an opt-out with free text.
    let mut req = subscribe_request("sku-1", PHONE_NATIONAL);
    req.customer_id = CUSTOMER.into();
    req.session_id = SESSION.into();
    req.idempotency_key = IDEMPOTENCY_KEY.into();
    let consent = req.consent.as_mut().unwrap();
    consent.consent_text =
        format!("I, {NAME}, want a text when it is back. Reply STOP to opt out.");
    consent.ip_address = IP.into();
    consent.user_agent = USER_AGENT.into();
    app.subscribe(req).await.unwrap();
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    assert_eq!(app.settle(10).await.claimed, 1);
    assert_eq!(statuses(&app).await.get("sent"), Some(&1));
    let body = fake.messages()[0].body.clone();
    let token = body.split("/r/").nth(1).unwrap().split(' ').next().unwrap();
    app.clock.advance(chrono::Duration::hours(1));
    let click = app.click(token, &[("User-Agent", CLICK_AGENT)]).await;
    assert_eq!(click.status, 302);
    app.clock.advance(chrono::Duration::hours(1));
    let bought_at = app.clock.now_dt();
    let first = app
        .record_purchase(pb::RecordPurchaseRequest {
            customer_id: CUSTOMER.into(),
            ..purchase(ORDER, PHONE_NATIONAL, "sku-1", 1, (4_999, "USD"), bought_at)
        })
        .await
        .unwrap();
    assert_eq!(first.attributions[0].basis(), pb::AttributionBasis::Click);
    app.opt_out(pb::OptOutRequest {
        tenant_id: "demo".into(),
        phone_number: PHONE_E164.into(),
        source: pb::ConsentSource::Support as i32,
        reason: format!("{NAME} called from {PHONE_NATIONAL} and asked to stop"),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = dump(&app.db_url);
    assert!(
        before.contains(PHONE_E164) && before.contains(CUSTOMER) && before.contains(CLICK_AGENT)
    );

    let erased = app
        .erase_phone(pb::ErasePhoneRequest {
            tenant_id: "demo".into(),
            phone_number: PHONE_NATIONAL.into(),
            default_region: "US".into(),
        })
        .await
        .unwrap();
    assert!(erased.erased);

    // The link still works (the shopper may tap it again), and keeps nothing of who tapped.
    let click = app.click(token, &[("User-Agent", CLICK_AGENT)]).await;
    assert_eq!(click.status, 302);

    let after = dump(&app.db_url);
    let left: Vec<&str> = [
        PHONE_E164,
        PHONE_NATIONAL,
        PHONE_DIGITS,
        "415-555-0132",
        CUSTOMER,
        SESSION,
        IP,
        USER_AGENT,
        CLICK_AGENT,
        "EraseMeBrowser",
        IDEMPOTENCY_KEY,
        ORDER,
        NAME,
    ]
    .into_iter()
    .filter(|secret| after.contains(secret))
    .collect();
    assert!(left.is_empty(), "left after erasure: {left:?}");
    // Rows stay for the counts and the revenue.
    assert_eq!(app.count("purchase_lines").await, 1);
    assert_eq!(app.count("clicks").await, 2);

    // The erased shopper's order sent again must not be matched to their text.
    match app
        .dispatch()
        .record_purchase(pb::RecordPurchaseRequest {
            customer_id: CUSTOMER.into(),
            ..purchase(ORDER, PHONE_NATIONAL, "sku-1", 1, (4_999, "USD"), bought_at)
        })
        .await
    {
        Ok(again) => {
            let again = again.into_inner();
            assert!(!again.created, "the order was recorded once already");
            for a in &again.attributions {
                assert_eq!(a.basis(), pb::AttributionBasis::None, "{again:?}");
                assert!(
                    a.message_id.is_empty() && a.subscription_id.is_empty(),
                    "{again:?}"
                );
            }
        }
        Err(e) => panic!("a replayed erased order: {e:?}"),
    }
    assert_eq!(app.count("purchase_lines").await, 1, "not recorded twice");
    // Nor a new order of the same customer.
    let mut other = pb::RecordPurchaseRequest {
        customer_id: CUSTOMER.into(),
        ..purchase(ORDER, PHONE_NATIONAL, "sku-1", 1, (4_999, "USD"), bought_at)
    };
    other.order_id = "order-erase-other".into();
    other.phone_number = String::new();
    let other = app.record_purchase(other).await.unwrap();
    assert_eq!(other.attributions[0].basis(), pb::AttributionBasis::None);
}
