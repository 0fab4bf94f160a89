//! Reports: a small release with hand-known outcomes (texts, a held-out group, a click, an
//! opt-out, purchases in two currencies, one outside every window), each figure checked.

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock_domain::report::{self, Ratio};
use restock_sms::fake::FakeTwilio;
use tonic::Code;

/// Phones of the newest release by status: (texted, held out), in phone order.
async fn groups(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let rows = app.db()
        .await
        .query(
            "SELECT c.phone_e164, m.status FROM messages m JOIN contacts c USING (tenant_id, contact_id) \
             ORDER BY c.phone_e164",
            &[],
        )
        .await
        .unwrap();
    let mut texted = Vec::new();
    let mut held = Vec::new();
    for r in rows {
        let (phone, status): (String, String) = (r.get(0), r.get(1));
        match status.as_str() {
            "held_out" => held.push(phone),
            "sent" => texted.push(phone),
            other => panic!("unexpected status {other}"),
        }
    }
    (texted, held)
}

#[tokio::test]
async fn a_release_report_counts_each_figure_of_a_hand_built_release() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.holdout_share = 0.5;
        t.storefront_url = Some("https://shop.example/".into());
    })
    .await;
    let t0 = app.clock.now_dt();
    subscribe_all(&app, "sku-1", &phones(40, 700)).await;
    set_stock(&app, "sku-1", "loc-1", 50, 1).await;
    app.until("the release to complete", || async {
        let s = statuses(&app).await;
        !s.contains_key("planned") && !s.contains_key("sending") && s.values().sum::<i64>() == 40
    })
    .await;
    let (texted, held) = groups(&app).await;
    let (s, h) = (texted.len() as u64, held.len() as u64);
    assert!(s >= 6 && h >= 1, "texted {s}, held out {h}");
    let mut client = app.dispatch();

    // t+1h: two texted phones buy, in two currencies; one held-out phone buys; one texted phone
    // opts out; one texted phone clicks its link.
    app.clock.advance(chrono::Duration::hours(1));
    let t1 = app.clock.now_dt();
    for o in [
        purchase("o-usd", &texted[0], "sku-1", 1, (4_999, "USD"), t1),
        purchase("o-eur", &texted[1], "sku-1", 2, (3_000, "EUR"), t1),
        purchase("o-held", &held[0], "sku-1", 1, (2_000, "USD"), t1),
    ] {
        client.record_purchase(o).await.unwrap();
    }
    app.opt_out(pb::OptOutRequest {
        tenant_id: "demo".into(),
        phone_number: texted[4].clone(),
        source: pb::ConsentSource::Sms as i32,
        reason: "STOP".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = fake
        .messages()
        .into_iter()
        .find(|m| m.to == texted[2])
        .unwrap()
        .body;
    let token = body.split("/r/").nth(1).unwrap().split(' ').next().unwrap();
    assert_eq!(app.click(token, &[]).await.status, 302);
    // t+3d: the clicker buys, credited through the click (past the 24 h text window).
    app.clock.advance(chrono::Duration::hours(71));
    let t3d = app.clock.now_dt();
    client
        .record_purchase(purchase(
            "o-click",
            &texted[2],
            "sku-1",
            1,
            (1_000, "USD"),
            t3d,
        ))
        .await
        .unwrap();
    // t+10d: a purchase outside every window counts nowhere.
    app.clock.advance(chrono::Duration::days(7));
    let late = client
        .record_purchase(purchase(
            "o-late",
            &texted[3],
            "sku-1",
            1,
            (9_999, "USD"),
            app.clock.now_dt(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.attributions[0].basis(), pb::AttributionBasis::None);

    let release_id = client
        .list_releases(pb::ListReleasesRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .releases[0]
        .release_id
        .clone();
    let r = client
        .get_release_report(pb::GetReleaseReportRequest {
            tenant_id: "demo".into(),
            release_id: release_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();

    assert!(r.windows_closed, "10 days after the texts");
    assert_eq!(r.release_count, 1);
    assert_eq!(
        (r.recipient_count, r.held_out_count, r.sent_count),
        (s, h, s)
    );
    assert!(r.segment_count >= s);
    assert_eq!(
        (r.delivered_count, r.undelivered_count, r.failed_count),
        (0, 0, 0)
    );
    assert_eq!(ratio(&r.delivery_rate).expect("a ratio"), (0, s, Some(0.0)));
    assert!(r.failures.is_empty());
    assert_eq!((r.click_count, r.unique_click_count), (1, 1));
    assert_eq!(
        ratio(&r.click_through_rate).expect("a ratio"),
        (1, s, Some(1.0 / s as f64))
    );
    assert_eq!(
        ratio(&r.opt_out_rate).expect("a ratio"),
        (1, s, Some(1.0 / s as f64))
    );
    assert_eq!(r.opt_out_window.unwrap().seconds, 72 * 3600);
    // o-usd, o-eur (text) and o-click (click); not o-held (holdout) nor o-late (none).
    assert_eq!(
        ratio(&r.conversion_rate).expect("a ratio"),
        (3, s, Some(3.0 / s as f64))
    );
    assert_eq!(
        ratio(&r.click_conversion_rate).expect("a ratio"),
        (1, 1, Some(1.0))
    );

    // Two currencies, never summed.
    let by: Vec<(&str, u64, u64, i64)> = r
        .revenue
        .iter()
        .map(|c| {
            (
                c.currency_code.as_str(),
                c.conversion_count,
                c.units,
                c.revenue.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(by, [("EUR", 1, 2, 3_000), ("USD", 2, 2, 5_999)]);
    let usd = &r.revenue[1];
    assert_eq!(usd.revenue.as_ref().unwrap().currency_code, "USD");
    assert_eq!(
        usd.revenue_per_text.as_ref().unwrap().amount_minor,
        (5_999.0 / s as f64).round() as i64
    );

    // Times to purchase: 1 h, 1 h, 72 h.
    assert_eq!(r.time_to_purchase_median.unwrap().seconds, 3_600);
    assert_eq!(r.time_to_purchase_p90.unwrap().seconds, 72 * 3_600);

    // Lift within 24 h of the restock: 2 of the texted (o-click came later), 1 of the held out.
    let lift = r.lift.unwrap();
    assert!(lift.available);
    assert_eq!(
        ratio(&lift.treatment_conversion).expect("a ratio"),
        (2, s, Some(2.0 / s as f64))
    );
    assert_eq!(
        ratio(&lift.holdout_conversion).expect("a ratio"),
        (1, h, Some(1.0 / h as f64))
    );
    assert_eq!(lift.window.unwrap().seconds, 24 * 3_600);
    let want = report::lift(Ratio::new(2, s), Ratio::new(1, h)).unwrap();
    assert!((lift.difference - (2.0 / s as f64 - 1.0 / h as f64)).abs() < 1e-12);
    let i = lift.difference_interval.unwrap();
    assert_eq!(
        (i.lower, i.upper),
        (want.interval.lower, want.interval.upper)
    );
    assert!(i.lower < lift.difference && lift.difference < i.upper);
    // 40 recipients split in two cannot give two groups of 30.
    assert!(!lift.significant);
    assert!((lift.incremental_conversions - lift.difference * s as f64).abs() < 1e-9);
    let usd_incr = usd.incremental_revenue.as_ref().unwrap();
    assert_eq!(
        usd_incr.estimate.as_ref().unwrap().amount_minor,
        (lift.incremental_conversions * 5_999.0 / 3.0).round() as i64
    );
    let eur_incr = r.revenue[0].incremental_revenue.as_ref().unwrap();
    assert_eq!(
        eur_incr.estimate.as_ref().unwrap().amount_minor,
        (lift.incremental_conversions * 1_000.0).round() as i64
    );

    // Signups behind the release: every day up to the restock's (no earlier release), no views.
    let signups = r.signups.as_ref().unwrap();
    assert_eq!(signups.first_day, "");
    assert_eq!(signups.last_day, t0.date_naive().to_string());
    assert_eq!(signups.signup_count, 40);
    assert!(!signups.views_reported && signups.signup_rate.is_none());

    // The variant's report over a range holding the restock is the same release's figures.
    let variant = client
        .get_variant_report(pb::GetVariantReportRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            start_time: Some(ts(t0 - chrono::Duration::hours(1))),
            end_time: Some(ts(t0 + chrono::Duration::hours(1))),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(variant.release_count, 1);
    assert_eq!(variant.revenue, r.revenue);
    assert_eq!(variant.lift.unwrap().difference, lift.difference);
    // A period before the restock covers no release: nothing to compute, and it says so.
    let empty = client
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: Some(ts(t0 - chrono::Duration::days(2))),
            end_time: Some(ts(t0 - chrono::Duration::days(1))),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!((empty.release_count, empty.sent_count), (0, 0));
    assert_eq!(
        ratio(&empty.conversion_rate).expect("a ratio"),
        (0, 0, None)
    );
    assert!(empty.revenue.is_empty() && empty.time_to_purchase_median.is_none());
    let empty_lift = empty.lift.unwrap();
    assert!(!empty_lift.available);
    assert_eq!(
        empty_lift.unavailable_reason(),
        pb::LiftUnavailableReason::NoTreatment
    );
    // The tenant's period holding the restock agrees with the release.
    let period = client
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: Some(ts(t0 - chrono::Duration::days(1))),
            end_time: Some(ts(t0 + chrono::Duration::days(1))),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(period.conversion_rate, r.conversion_rate);
    assert_eq!(period.revenue, r.revenue);
}

#[tokio::test]
async fn a_release_without_a_holdout_says_the_lift_is_unavailable_and_counts_failures_by_code() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().holdout_share = 0.0;
    })
    .await;
    let phones = phones(5, 760);
    subscribe_all(&app, "sku-1", &phones[..4]).await;
    // A signed-in shopper, who buys with their customer id and no phone.
    let mut with_customer = subscribe_request("sku-1", &phones[4]);
    with_customer.customer_id = "cust-9".into();
    app.subscribe(with_customer).await.unwrap();
    // An invalid number: a permanent failure with the provider's code.
    fake.reject_number(&phones[3], 21211);
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    app.until("the outcomes", || async {
        let s = statuses(&app).await;
        s.get("sent") == Some(&4) && s.get("failed") == Some(&1)
    })
    .await;
    let mut client = app.dispatch();
    app.clock.advance(chrono::Duration::hours(2));
    client
        .record_purchase(purchase(
            "o-1",
            &phones[0],
            "sku-1",
            1,
            (2_500, "USD"),
            app.clock.now_dt(),
        ))
        .await
        .unwrap();
    let mut by_customer = purchase("o-2", "", "sku-1", 1, (1_000, "USD"), app.clock.now_dt());
    by_customer.customer_id = "cust-9".into();
    client.record_purchase(by_customer).await.unwrap();
    let r = client
        .get_variant_report(pb::GetVariantReportRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert!(!r.windows_closed, "the click window is still open");
    // Intention to treat: the failed text's recipient is in the treatment group.
    assert_eq!(
        (r.recipient_count, r.sent_count, r.held_out_count),
        (5, 4, 0)
    );
    assert_eq!(r.failed_count, 1);
    assert_eq!(
        r.failures,
        [pb::FailureCount {
            error_code: "21211".into(),
            count: 1
        }]
    );
    assert_eq!(
        ratio(&r.conversion_rate).expect("a ratio"),
        (2, 4, Some(0.5))
    );
    let lift = r.lift.unwrap();
    assert!(!lift.available && !lift.significant);
    assert_eq!(
        lift.unavailable_reason(),
        pb::LiftUnavailableReason::NoHoldout
    );
    // The customer id finds the second buyer as well as the phone finds the first.
    assert_eq!(
        ratio(&lift.treatment_conversion).expect("a ratio"),
        (2, 5, Some(0.4))
    );
    assert_eq!(
        ratio(&lift.holdout_conversion).expect("a ratio"),
        (0, 0, None)
    );
    assert!(lift.difference_interval.is_none());
    let usd = &r.revenue[0];
    assert!(usd.incremental_revenue.is_none());
    // 3,500 over 4 texts and over 5 recipients.
    assert_eq!(usd.revenue.as_ref().unwrap().amount_minor, 3_500);
    assert_eq!(usd.revenue_per_text.as_ref().unwrap().amount_minor, 875);
    assert_eq!(
        usd.revenue_per_subscriber.as_ref().unwrap().amount_minor,
        700
    );
}

#[tokio::test]
async fn report_requests_are_validated_and_an_unknown_release_is_not_found() {
    let app = spawn_app().await;
    let mut client = app.dispatch();
    let err = client
        .get_release_report(pb::GetReleaseReportRequest {
            tenant_id: String::new(),
            release_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["tenant_id", "release_id"]);
    let err = client
        .get_release_report(pb::GetReleaseReportRequest {
            tenant_id: "demo".into(),
            release_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["start_time", "end_time"]);
    let at = |secs: i64| {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        })
    };
    let err = client
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: at(1_800_000_000),
            end_time: at(1_800_000_000),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["end_time"]);
    let err = client
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: at(1_700_000_000),
            end_time: at(1_700_000_000 + 401 * 86_400),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["end_time"]);
    let err = client
        .get_variant_report(pb::GetVariantReportRequest {
            tenant_id: "demo".into(),
            variant_id: String::new(),
            start_time: at(1_800_000_000),
            end_time: at(1_700_000_000),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["variant_id", "end_time"]);
    let err = client
        .get_variant_report(pb::GetVariantReportRequest {
            tenant_id: "nobody".into(),
            variant_id: "sku-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
