//! Report inputs and the figures they feed: product views against signups, consent
//! confirmation, purchase channels (last-click against assisted revenue), carrier complaints and
//! opt-outs blamed on the latest text. Each figure checked against counts known by hand.

use crate::helpers::*;
use chrono::{DateTime, TimeZone, Utc};
use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;
use tonic::Code;

fn views(variant: &str, product: &str, day: &str, source: &str, n: u64) -> pb::ProductViewCount {
    pb::ProductViewCount {
        variant_id: variant.into(),
        product_id: product.into(),
        day: day.into(),
        source: source.into(),
        view_count: n,
    }
}

async fn record_views(app: &TestApp, counts: Vec<pb::ProductViewCount>) -> u32 {
    app.record_product_views(pb::RecordProductViewsRequest {
        tenant_id: "demo".into(),
        counts,
    })
    .await
    .unwrap()
    .recorded_count
}

async fn period(
    app: &TestApp,
    tenant: &str,
    from: DateTime<Utc>,
    before: DateTime<Utc>,
) -> pb::AttributionReport {
    app.get_period_report(pb::GetPeriodReportRequest {
        tenant_id: tenant.into(),
        start_time: Some(ts(from)),
        end_time: Some(ts(before)),
    })
    .await
    .unwrap()
    .report
    .unwrap()
}

async fn variant_report(
    app: &TestApp,
    variant_id: &str,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> pb::AttributionReport {
    app.get_variant_report(pb::GetVariantReportRequest {
        tenant_id: "demo".into(),
        variant_id: variant_id.into(),
        start_time: range.map(|r| ts(r.0)),
        end_time: range.map(|r| ts(r.1)),
    })
    .await
    .unwrap()
    .report
    .unwrap()
}

async fn subscribe_at(app: &TestApp, at: DateTime<Utc>, req: pb::SubscribeRequest) {
    app.clock.set(at);
    app.subscribe(req).await.unwrap();
}

#[tokio::test]
async fn signups_are_divided_by_the_views_of_the_same_tenant_days_and_a_recount_replaces() {
    let app = spawn_app_with(|s| {
        s.tenants.get_mut("demo").unwrap().time_zone = "America/New_York".into();
    })
    .await;
    // Day D in New York runs from D 05:00 UTC to D+1 05:00 UTC (EST, UTC-5, in November...
    // and any other month: the bounds below are read in the zone, not assumed).
    let d = texting_hours().date_naive();
    let ny = chrono_tz::America::New_York;
    let midnight = |day: chrono::NaiveDate| {
        ny.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let (day0, day1, day2) = (
        midnight(d),
        midnight(d.succ_opt().unwrap()),
        midnight(d + chrono::Days::new(2)),
    );
    let p = phones(5, 900);
    // Day D: two signups naming the variant, one naming only the product, and one late in the
    // evening (after midnight UTC, still day D in New York).
    subscribe_at(
        &app,
        day0 + chrono::Duration::hours(14),
        subscribe_request("sku-1", &p[0]),
    )
    .await;
    subscribe_at(
        &app,
        day0 + chrono::Duration::hours(15),
        subscribe_request("sku-1", &p[1]),
    )
    .await;
    let mut by_product = subscribe_request("", &p[2]);
    by_product.product_id = "prod-1".into();
    by_product.wanted_options.insert("size".into(), "M".into());
    subscribe_at(&app, day0 + chrono::Duration::hours(16), by_product).await;
    let late = day1 - chrono::Duration::hours(1);
    assert_eq!(
        late.date_naive(),
        d.succ_opt().unwrap(),
        "the next day in UTC"
    );
    subscribe_at(&app, late, subscribe_request("sku-1", &p[3])).await;
    // Day D+1: one more.
    subscribe_at(
        &app,
        day1 + chrono::Duration::hours(10),
        subscribe_request("sku-1", &p[4]),
    )
    .await;

    let day = |n: i64| (d + chrono::Duration::days(n)).to_string();
    assert_eq!(
        record_views(&app, vec![views("sku-1", "", &day(0), "web", 100)]).await,
        1
    );
    // The storefront recounts day D: the count replaces the first; another source adds.
    assert_eq!(
        record_views(
            &app,
            vec![
                views("sku-1", "", &day(0), "web", 40),
                views("sku-1", "", &day(0), "app", 10),
                views("", "prod-1", &day(0), "web", 30),
                views("sku-1", "", &day(-1), "web", 20),
            ]
        )
        .await,
        4
    );

    // Day by day, in the tenant's zone: the late signup is on day D.
    let answer = app
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: Some(ts(day0)),
            end_time: Some(ts(day2)),
        })
        .await
        .unwrap();
    assert_eq!(answer.time_zone, "America/New_York");
    let days: Vec<_> = answer
        .days
        .iter()
        .map(|x| {
            (
                x.day.clone(),
                x.signup_count,
                x.views_reported,
                x.product_view_count,
                ratio(&x.signup_rate),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            (day(0), 4, true, 80, Some((4, 80, Some(0.05)))),
            (day(1), 1, false, 0, None),
        ]
    );
    assert!(answer
        .days
        .iter()
        .all(|x| x.release_count == 0 && x.sent_count == 0));

    // Days D and D+1: 5 signups, 4 on the viewed day D, over 40 + 10 + 30 views.
    let r = period(&app, "demo", day0, day2).await;
    let s = r.signups.unwrap();
    assert_eq!(
        (s.first_day.as_str(), s.last_day.as_str()),
        (day(0).as_str(), day(1).as_str())
    );
    assert_eq!(s.signup_count, 5);
    assert!(s.views_reported);
    assert_eq!(s.product_view_count, 80);
    assert_eq!(ratio(&s.signup_rate), Some((4, 80, Some(0.05))));
    assert_eq!(ratio(&s.variant_specificity), Some((4, 5, Some(0.8))));
    // Nobody was asked to confirm.
    assert_eq!(ratio(&s.confirmation_rate), Some((0, 0, None)));
    assert_eq!(s.time_to_confirm_median, None);

    // The variant's days: its own signups and views only.
    let s = variant_report(&app, "sku-1", Some((day0, day2)))
        .await
        .signups
        .unwrap();
    assert_eq!((s.signup_count, s.product_view_count), (4, 50));
    assert_eq!(ratio(&s.signup_rate), Some((3, 50, Some(0.06))));
    assert_eq!(ratio(&s.variant_specificity), Some((4, 4, Some(1.0))));
    // Unbounded: day D-1's views count too.
    let s = variant_report(&app, "sku-1", None).await.signups.unwrap();
    assert_eq!((s.first_day.as_str(), s.last_day.as_str()), ("", ""));
    assert_eq!(ratio(&s.signup_rate), Some((3, 70, Some(3.0 / 70.0))));

    // Day D+1 has a signup but no views: not reported, rather than a rate over nothing.
    let s = period(&app, "demo", day1, day2).await.signups.unwrap();
    assert_eq!(s.signup_count, 1);
    assert!(!s.views_reported);
    assert_eq!(s.product_view_count, 0);
    assert_eq!(s.signup_rate, None);
    // Day D-1 has views but no signups: a rate of 0 over its views.
    let s = period(&app, "demo", midnight(d.pred_opt().unwrap()), day0)
        .await
        .signups
        .unwrap();
    assert_eq!(ratio(&s.signup_rate), Some((0, 20, Some(0.0))));
}

#[tokio::test]
async fn the_confirmation_rate_counts_double_opt_ins_confirmed_and_the_median_wait() {
    let app = spawn_app().await;
    let t0 = app.clock.now_dt();
    let p = phones(4, 920);
    let mut ids = Vec::new();
    for phone in &p[..3] {
        let mut req = subscribe_request("sku-1", phone);
        req.tenant_id = "demo-double-opt-in".into();
        let sub = app.subscribe(req).await.unwrap().subscription.unwrap();
        assert_eq!(sub.status(), pb::SubscriptionStatus::PendingConfirmation);
        ids.push(sub.subscription_id);
    }
    // A consent given by text confirms itself: never asked.
    let mut by_text = subscribe_request("sku-1", &p[3]);
    by_text.tenant_id = "demo-double-opt-in".into();
    by_text.consent.as_mut().unwrap().source = pb::ConsentSource::Sms as i32;
    app.subscribe(by_text).await.unwrap();
    for (minutes, id) in [(10, &ids[0]), (20, &ids[1])] {
        app.clock.advance(chrono::Duration::minutes(minutes));
        app.confirm_subscription(pb::ConfirmSubscriptionRequest {
            tenant_id: "demo-double-opt-in".into(),
            subscription_id: id.clone(),
            source: pb::ConsentSource::Sms as i32,
        })
        .await
        .unwrap();
    }
    let s = period(
        &app,
        "demo-double-opt-in",
        t0 - chrono::Duration::hours(1),
        t0 + chrono::Duration::hours(1),
    )
    .await
    .signups
    .unwrap();
    assert_eq!(s.signup_count, 4);
    assert_eq!(ratio(&s.confirmation_rate), Some((2, 3, Some(2.0 / 3.0))));
    // 10 and 30 minutes: the nearest-rank median is the lower.
    assert_eq!(s.time_to_confirm_median.unwrap().seconds, 600);
}

#[tokio::test]
async fn product_views_are_validated_count_by_count_and_nothing_is_written_when_one_is_bad() {
    let app = spawn_app().await;
    let today = app.clock.now_dt().date_naive();
    let day = |n: i64| (today + chrono::Duration::days(n)).to_string();
    let mut client = app.dispatch();
    let err = client
        .record_product_views(pb::RecordProductViewsRequest {
            tenant_id: "demo".into(),
            counts: vec![
                views("sku-1", "", &day(0), "web", 5),
                views("sku-1", "prod-1", &day(0), "web", 5),
                views("", "", &day(0), "web", 5),
                views("sku-1", "", "2026-13-01", "web", 5),
                views("sku-1", "", &day(0), "we b", 5),
                views("sku-1", "", &day(3), "web", 5),
                views("sku-1", "", &day(-401), "web", 5),
                views("sku-1", "", &day(0), "web", 7),
                views("sku-2", "", &day(0), "web", 2_000_000_000_000),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        [
            "counts[1].product_id",
            "counts[2].variant_id",
            "counts[3].day",
            "counts[4].source",
            "counts[5].day",
            "counts[6].day",
            "counts[7].day",
            "counts[8].view_count",
        ]
    );
    assert_eq!(app.count("product_views").await, 0);
    let err = client
        .record_product_views(pb::RecordProductViewsRequest {
            tenant_id: String::new(),
            counts: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["tenant_id", "counts"]);
    let err = client
        .record_product_views(pb::RecordProductViewsRequest {
            tenant_id: "nobody".into(),
            counts: vec![views("sku-1", "", &day(0), "web", 5)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Tomorrow is allowed (a storefront ahead of the tenant's zone).
    assert_eq!(
        record_views(&app, vec![views("sku-1", "", &day(1), "web", 5)]).await,
        1
    );
}

/// A server texting `phones` about sku-1 with no holdout; answers once every text is sent.
async fn texted_app(fake: &FakeTwilio, phones: &[String]) -> TestApp {
    let app = spawn_stepped_sender(fake, |s| {
        s.tenants.get_mut("demo").unwrap().holdout_share = 0.0;
    })
    .await;
    subscribe_all(&app, "sku-1", phones).await;
    set_stock(&app, "sku-1", "loc-1", 50, 1).await;
    let n = phones.len() as i64;
    app.until("every text sent", || async {
        statuses(&app).await.get("sent") == Some(&n)
    })
    .await;
    app
}

async fn release_report(app: &TestApp) -> pb::AttributionReport {
    let mut client = app.dispatch();
    let release_id = client
        .list_releases(pb::ListReleasesRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .releases[0]
        .release_id
        .clone();
    client
        .get_release_report(pb::GetReleaseReportRequest {
            tenant_id: "demo".into(),
            release_id,
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
}

#[tokio::test]
async fn last_click_revenue_is_the_part_of_assisted_revenue_bought_through_the_texts_link() {
    use pb::PurchaseChannel::{SmsLink, Unspecified, Web};
    let fake = FakeTwilio::start().await.unwrap();
    let p = phones(4, 940);
    let app = texted_app(&fake, &p).await;
    let mut client = app.dispatch();
    app.clock.advance(chrono::Duration::hours(1));
    let t1 = app.clock.now_dt();
    for o in [
        pb::RecordPurchaseRequest {
            channel: SmsLink as i32,
            ..purchase("o-link", &p[0], "sku-1", 1, (3_000, "USD"), t1)
        },
        pb::RecordPurchaseRequest {
            channel: Web as i32,
            ..purchase("o-web", &p[1], "sku-1", 1, (2_000, "USD"), t1)
        },
        pb::RecordPurchaseRequest {
            channel: SmsLink as i32,
            ..purchase("o-eur", &p[2], "sku-1", 1, (1_500, "EUR"), t1)
        },
        // Outside every window (30 h, no click): counts nowhere, link or not.
        pb::RecordPurchaseRequest {
            channel: SmsLink as i32,
            ..purchase(
                "o-late",
                &p[3],
                "sku-1",
                1,
                (999, "USD"),
                t1 + chrono::Duration::hours(29),
            )
        },
    ] {
        app.clock.set(
            o.purchase_time
                .as_ref()
                .map(|t| Utc.timestamp_opt(t.seconds, 0).unwrap())
                .unwrap(),
        );
        client.record_purchase(o).await.unwrap();
    }
    // The same order again is the same; with another channel it is another order.
    let again = client
        .record_purchase(pb::RecordPurchaseRequest {
            channel: SmsLink as i32,
            ..purchase("o-link", &p[0], "sku-1", 1, (3_000, "USD"), t1)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let err = client
        .record_purchase(pb::RecordPurchaseRequest {
            channel: Web as i32,
            ..purchase("o-link", &p[0], "sku-1", 1, (3_000, "USD"), t1)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // An unknown channel is a violation, and writes nothing.
    let mut bad = pb::RecordPurchaseRequest {
        channel: Unspecified as i32,
        ..purchase("o-bad", &p[0], "sku-1", 1, (1, "USD"), t1)
    };
    bad.channel = 99;
    assert_eq!(
        violated_fields(&client.record_purchase(bad).await.unwrap_err()),
        ["channel"]
    );

    let r = release_report(&app).await;
    let by: Vec<_> = r
        .revenue
        .iter()
        .map(|c| {
            (
                c.currency_code.as_str(),
                c.conversion_count,
                c.revenue.as_ref().unwrap().amount_minor,
                c.last_click_conversion_count,
                c.last_click_revenue
                    .as_ref()
                    .map(|m| (m.amount_minor, m.currency_code.as_str())),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            ("EUR", 1, 1_500, 1, Some((1_500, "EUR"))),
            ("USD", 2, 5_000, 1, Some((3_000, "USD"))),
        ]
    );
    assert_eq!(app.count("purchases WHERE channel = 'unknown'").await, 0);

    // The period day by day (UTC): the day before the restock is empty, the restock's day
    // holds every figure of the release.
    let restock_day = t1.date_naive();
    let start = Utc.from_utc_datetime(
        &(restock_day - chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    );
    let answer = app
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: Some(ts(start)),
            end_time: Some(ts(start + chrono::Duration::days(2))),
        })
        .await
        .unwrap();
    let [before, on] = &answer.days[..] else {
        panic!("two days, got {:?}", answer.days);
    };
    assert_eq!(
        (
            before.release_count,
            before.sent_count,
            before.conversion_count
        ),
        (0, 0, 0)
    );
    assert_eq!(ratio(&before.conversion_rate), Some((0, 0, None)));
    assert_eq!(on.day, restock_day.to_string());
    assert_eq!(
        (on.release_count, on.recipient_count, on.sent_count),
        (1, 4, 4)
    );
    assert_eq!(ratio(&on.conversion_rate), Some((3, 4, Some(0.75))));
    let revenue: Vec<_> = on
        .revenue
        .iter()
        .map(|x| {
            (
                x.currency_code.as_str(),
                x.conversion_count,
                x.revenue.as_ref().unwrap().amount_minor,
                x.last_click_revenue.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(
        revenue,
        [("EUR", 1, 1_500, 1_500), ("USD", 2, 5_000, 3_000)]
    );
    assert_eq!(on.signup_count, 4);
}

/// A refund of `order` (lines of `variant`): `minor` paid back at `at`, the unit returned
/// when `minor` is at least 1,500 (else a price adjustment, none returned).
fn refund(
    id: &str,
    order: &str,
    variant: &str,
    minor: i64,
    currency: &str,
    at: DateTime<Utc>,
) -> pb::RecordPurchaseRequest {
    pb::RecordPurchaseRequest {
        tenant_id: "demo".into(),
        order_id: id.into(),
        refunded_order_id: order.into(),
        lines: vec![pb::PurchaseLine {
            variant_id: variant.into(),
            quantity: u32::from(minor >= 1_500),
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

fn money_by_currency(r: &pb::AttributionReport) -> Vec<(String, u64, u64, i64, i64, u64, i64)> {
    r.revenue
        .iter()
        .map(|c| {
            (
                c.currency_code.clone(),
                c.conversion_count,
                c.units,
                c.revenue.as_ref().unwrap().amount_minor,
                c.last_click_revenue.as_ref().unwrap().amount_minor,
                c.refund_count,
                c.refunded.as_ref().unwrap().amount_minor,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_refund_is_negative_revenue_of_the_refunded_lines_text_even_after_every_window() {
    use pb::PurchaseChannel::{SmsLink, Web};
    let fake = FakeTwilio::start().await.unwrap();
    let p = phones(3, 960);
    let app = texted_app(&fake, &p).await;
    let mut client = app.dispatch();
    app.clock.advance(chrono::Duration::hours(1));
    let t1 = app.clock.now_dt();
    let mut first = Vec::new();
    for o in [
        pb::RecordPurchaseRequest {
            channel: SmsLink as i32,
            ..purchase("o-1", &p[0], "sku-1", 1, (3_000, "USD"), t1)
        },
        pb::RecordPurchaseRequest {
            channel: Web as i32,
            ..purchase("o-2", &p[1], "sku-1", 1, (2_000, "USD"), t1)
        },
        pb::RecordPurchaseRequest {
            channel: Web as i32,
            ..purchase("o-3", &p[2], "sku-1", 1, (1_500, "EUR"), t1)
        },
    ] {
        first.push(
            client
                .record_purchase(o)
                .await
                .unwrap()
                .into_inner()
                .attributions[0]
                .clone(),
        );
    }
    let before = release_report(&app).await;
    assert_eq!(
        money_by_currency(&before),
        [
            ("EUR".to_string(), 1, 1, 1_500, 0, 0, 0),
            ("USD".to_string(), 2, 2, 5_000, 3_000, 0, 0),
        ]
    );

    // 40 days on, past the 7-day click and 24-hour text windows: still the text's revenue.
    let late = t1 + chrono::Duration::days(40);
    app.clock.set(late);
    let r1 = client
        .record_purchase(refund("r-1", "o-1", "sku-1", 1_000, "USD", late))
        .await
        .unwrap()
        .into_inner();
    assert!(r1.created);
    assert_eq!(
        r1.attributions,
        first[..1],
        "credited as the refunded line was"
    );
    client
        .record_purchase(refund("r-2", "o-3", "sku-1", 1_500, "EUR", late))
        .await
        .unwrap();
    // Again is the same answer; other content under the same id is another refund.
    let again = client
        .record_purchase(refund("r-1", "o-1", "sku-1", 1_000, "USD", late))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.created, again.attributions),
        (false, r1.attributions.clone())
    );
    let err = client
        .record_purchase(refund("r-1", "o-1", "sku-1", 999, "USD", late))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // An order's id is not a refund's.
    let err = client
        .record_purchase(refund("o-2", "o-1", "sku-1", 1, "USD", late))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // Never more than the line cost, in all; only its own currency and variant; a known order.
    for (req, code) in [
        (
            refund("r-3", "o-1", "sku-1", 2_001, "USD", late),
            Code::FailedPrecondition,
        ),
        (
            refund("r-3", "o-2", "sku-1", 100, "EUR", late),
            Code::FailedPrecondition,
        ),
        (
            refund("r-3", "o-2", "sku-2", 100, "USD", late),
            Code::FailedPrecondition,
        ),
        (
            refund("r-3", "o-404", "sku-1", 100, "USD", late),
            Code::NotFound,
        ),
        (
            refund("r-3", "r-1", "sku-1", 100, "USD", late),
            Code::NotFound,
        ),
    ] {
        let err = client.record_purchase(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    // Nothing of the refused refunds was written, not even their id.
    assert_eq!(app.count("purchases WHERE order_id = 'r-3'").await, 0);
    for (minor, own_id, field) in [
        (0, "r-4", "lines[0].total_price.amount_minor"),
        (-5, "r-4", "lines[0].total_price.amount_minor"),
        (5, "o-1", "refunded_order_id"),
    ] {
        let err = client
            .record_purchase(refund(own_id, "o-1", "sku-1", minor, "USD", late))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), [field]);
    }
    // What is left of the line can be paid back.
    client
        .record_purchase(refund("r-3", "o-1", "sku-1", 2_000, "USD", late))
        .await
        .unwrap();

    // Net revenue; the orders, units and the lift are untouched: a refund is not an order.
    let after = release_report(&app).await;
    assert_eq!(
        money_by_currency(&after),
        [
            ("EUR".to_string(), 1, 1, 0, 0, 1, 1_500),
            ("USD".to_string(), 2, 2, 2_000, 0, 2, 3_000),
        ]
    );
    assert_eq!(
        ratio(&after.conversion_rate),
        ratio(&before.conversion_rate)
    );
    let lift = |r: &pb::AttributionReport| ratio(&r.lift.as_ref().unwrap().treatment_conversion);
    assert_eq!(lift(&after), lift(&before));
    assert_eq!(
        after.revenue[1]
            .revenue_per_text
            .as_ref()
            .unwrap()
            .amount_minor,
        667,
        "2,000 over 3 texts, rounded"
    );

    // The period's day of the release nets the refunds too.
    let day = t1.date_naive();
    let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap());
    let answer = app
        .get_period_report(pb::GetPeriodReportRequest {
            tenant_id: "demo".into(),
            start_time: Some(ts(start)),
            end_time: Some(ts(start + chrono::Duration::days(1))),
        })
        .await
        .unwrap();
    let revenue: Vec<_> = answer.days[0]
        .revenue
        .iter()
        .map(|x| {
            (
                x.currency_code.as_str(),
                x.conversion_count,
                x.revenue.as_ref().unwrap().amount_minor,
                x.last_click_revenue.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(revenue, [("EUR", 1, 0, 0), ("USD", 2, 2_000, 0)]);
    assert_eq!(
        money_by_currency(answer.report.as_ref().unwrap()),
        money_by_currency(&after)
    );
    // The export nets them per text too: the $30 order and the €15 one are wholly paid back.
    let exported: Vec<(String, Vec<(String, i64)>)> = export(
        &app,
        t1 - chrono::Duration::days(1),
        t1 + chrono::Duration::days(1),
    )
    .await
    .into_iter()
    .flat_map(|b| b.messages)
    .map(|e| {
        (
            e.message.unwrap().phone_number,
            e.attributed_revenue
                .into_iter()
                .map(|m| (m.currency_code, m.amount_minor))
                .collect(),
        )
    })
    .collect();
    let of = |phone: &str| exported.iter().find(|(p, _)| p == phone).unwrap().1.clone();
    assert_eq!(of(&p[0]), [("USD".to_string(), 0)]);
    assert_eq!(of(&p[1]), [("USD".to_string(), 2_000)]);
    assert_eq!(of(&p[2]), [("EUR".to_string(), 0)]);
}

/// Posts a signed delivery report with an error code for `sid`.
async fn delivery_report(app: &TestApp, sid: &str, status: &str, code: Option<&str>) {
    let answer = app.delivery_report(sid, status, code).await;
    assert_eq!(answer.status, 204, "{answer:?}");
}

#[tokio::test]
async fn carrier_filtering_and_blocking_count_as_complaints_per_thousand_texts() {
    let fake = FakeTwilio::start().await.unwrap();
    let p = phones(4, 960);
    let app = texted_app(&fake, &p).await;
    let sid = |phone: &str| {
        fake.messages()
            .into_iter()
            .find(|m| m.to == phone)
            .unwrap()
            .sid
    };
    delivery_report(&app, &sid(&p[0]), "undelivered", Some("30007")).await;
    delivery_report(&app, &sid(&p[1]), "undelivered", Some("30004")).await;
    // Unreachable handset: a failure, not a complaint.
    delivery_report(&app, &sid(&p[2]), "undelivered", Some("30003")).await;
    delivery_report(&app, &sid(&p[3]), "delivered", None).await;
    let r = release_report(&app).await;
    assert_eq!(
        (r.sent_count, r.delivered_count, r.undelivered_count),
        (4, 1, 3)
    );
    assert_eq!(ratio(&r.complaint_rate), Some((2, 4, Some(0.5))));
    assert_eq!(r.complaints_per_thousand_texts, Some(500.0));
    assert_eq!(r.opt_outs_per_thousand_texts, Some(0.0));
    let mut codes: Vec<_> = r
        .failures
        .iter()
        .map(|f| (f.error_code.as_str(), f.count))
        .collect();
    codes.sort();
    assert_eq!(codes, [("30003", 1), ("30004", 1), ("30007", 1)]);
}

#[tokio::test]
async fn an_opt_out_counts_against_the_latest_text_to_its_phone_only() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().holdout_share = 0.0;
    })
    .await;
    let p = phones(3, 980);
    // p0 waits for both variants, p1 and p2 for sku-1 only.
    subscribe_all(&app, "sku-1", &p).await;
    subscribe_all(&app, "sku-2", &p[..1]).await;
    set_stock(&app, "sku-1", "loc-1", 50, 1).await;
    app.until("sku-1 texted", || async {
        statuses(&app).await.get("sent") == Some(&3)
    })
    .await;
    app.clock.advance(chrono::Duration::hours(2));
    set_stock(&app, "sku-2", "loc-1", 50, 1).await;
    app.until("sku-2 texted", || async {
        statuses(&app).await.get("sent") == Some(&4)
    })
    .await;
    app.clock.advance(chrono::Duration::hours(1));
    let opt_out = |phone: &str| pb::OptOutRequest {
        tenant_id: "demo".into(),
        phone_number: phone.into(),
        source: pb::ConsentSource::Sms as i32,
        reason: "STOP".into(),
        ..Default::default()
    };
    // p0's STOP follows its sku-2 text: that text is blamed, not the sku-1 text of 3 h ago.
    app.opt_out(opt_out(&p[0])).await.unwrap();
    app.opt_out(opt_out(&p[1])).await.unwrap();
    // p2 opts out after the 72 h window: blamed on nothing.
    app.clock.advance(chrono::Duration::hours(72));
    app.opt_out(opt_out(&p[2])).await.unwrap();

    let sku1 = variant_report(&app, "sku-1", None).await;
    assert_eq!(ratio(&sku1.opt_out_rate), Some((1, 3, Some(1.0 / 3.0))));
    assert_eq!(sku1.opt_outs_per_thousand_texts, Some(1_000.0 / 3.0));
    let sku2 = variant_report(&app, "sku-2", None).await;
    assert_eq!(ratio(&sku2.opt_out_rate), Some((1, 1, Some(1.0))));
}

#[tokio::test]
async fn sell_through_counts_anyones_units_in_the_day_after_the_restock_and_segments_cost_the_set_price(
) {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.holdout_share = 0.0;
        t.segment_price_milli_minor = Some(790);
        t.segment_price_currency = "EUR".into();
    })
    .await;
    let p = phones(2, 990);
    subscribe_all(&app, "sku-1", &p).await;
    let t0 = app.clock.now_dt();
    set_stock(&app, "sku-1", "loc-1", 10, 1).await;
    app.until("every text sent", || async {
        statuses(&app).await.get("sent") == Some(&2)
    })
    .await;
    let mut client = app.dispatch();
    let line = |variant: &str, quantity: u32, location: &str| pb::PurchaseLine {
        variant_id: variant.into(),
        quantity,
        total_price: Some(pb::Money {
            amount_minor: 1_000 * i64::from(quantity),
            currency_code: "USD".into(),
        }),
        location_id: location.into(),
    };
    let buy = |id: &str, hours: i64, lines: Vec<pb::PurchaseLine>| pb::RecordPurchaseRequest {
        tenant_id: "demo".into(),
        order_id: id.into(),
        customer_id: format!("walk-in-{id}"),
        lines,
        purchase_time: Some(ts(t0 + chrono::Duration::hours(hours))),
        ..Default::default()
    };
    app.clock.advance(chrono::Duration::hours(30));
    for o in [
        // A texted shopper: 2 units at the restocked location.
        pb::RecordPurchaseRequest {
            customer_id: String::new(),
            phone_number: p[0].clone(),
            ..buy("o-1", 1, vec![line("sku-1", 2, "loc-1")])
        },
        // Strangers: 1 unit with no location and 3 at another location count (the variant's
        // first stock anywhere is a variant-level restock, serving every location); another
        // variant's units do not.
        buy(
            "o-2",
            2,
            vec![line("sku-1", 1, ""), line("sku-9", 5, "loc-1")],
        ),
        buy("o-3", 3, vec![line("sku-1", 3, "loc-2")]),
        // After the day: not counted.
        buy("o-4", 25, vec![line("sku-1", 4, "loc-1")]),
    ] {
        client.record_purchase(o).await.unwrap();
    }
    let r = release_report(&app).await;
    assert_eq!(ratio(&r.sell_through), Some((6, 10, Some(0.6))));
    assert_eq!(r.sell_through_window.unwrap().seconds, 24 * 3600);
    let segments: u64 = fake.messages().iter().map(|m| u64::from(m.segments)).sum();
    assert_eq!(r.segment_count, segments);
    // 0.79 euro cents a segment, rounded to the cent.
    let cost = r.segment_cost.unwrap();
    assert_eq!(cost.currency_code, "EUR");
    assert_eq!(cost.amount_minor, ((segments * 790 + 500) / 1_000) as i64);
}

#[tokio::test]
async fn a_report_without_a_segment_price_leaves_the_cost_out_and_nothing_restocked_has_no_sell_through(
) {
    let app = spawn_app().await;
    let now = app.clock.now_dt();
    let r = period(&app, "demo", now - chrono::Duration::days(1), now).await;
    assert_eq!(r.segment_cost, None);
    assert_eq!(ratio(&r.sell_through), Some((0, 0, None)));
    assert_eq!(r.complaints_per_thousand_texts, None);
    assert_eq!(r.opt_outs_per_thousand_texts, None);
}

async fn export(
    app: &TestApp,
    from: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Vec<pb::ExportMessagesResponse> {
    use futures::StreamExt;
    app.export_messages(pb::ExportMessagesRequest {
        tenant_id: "demo".into(),
        start_time: Some(ts(from)),
        end_time: Some(ts(before)),
    })
    .await
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
    .await
}

#[tokio::test]
async fn export_streams_every_message_once_in_order_with_its_outcomes_across_batches() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.holdout_share = 0.5;
        t.storefront_url = Some("https://shop.example/".into());
    })
    .await;
    let p = phones(510, 2_000);
    subscribe_all(&app, "sku-1", &p).await;
    let t0 = app.clock.now_dt();
    set_stock(&app, "sku-1", "loc-1", 1_000, 1).await;
    app.until("every message at an outcome", || async {
        let s = statuses(&app).await;
        s.get("held_out").copied().unwrap_or(0) + s.get("sent").copied().unwrap_or(0) == 510
    })
    .await;
    let first = fake.messages().into_iter().next().unwrap();
    let token = first
        .body
        .split("/r/")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        assert_eq!(app.click(&token, &[]).await.status, 302);
    }
    app.clock.advance(chrono::Duration::hours(1));
    app.record_purchase(pb::RecordPurchaseRequest {
        channel: pb::PurchaseChannel::SmsLink as i32,
        ..purchase(
            "o-1",
            &first.to,
            "sku-1",
            1,
            (2_500, "USD"),
            app.clock.now_dt(),
        )
    })
    .await
    .unwrap();

    let batches = export(
        &app,
        t0 - chrono::Duration::minutes(1),
        t0 + chrono::Duration::hours(2),
    )
    .await;
    assert_eq!(
        batches.iter().map(|b| b.messages.len()).collect::<Vec<_>>(),
        [500, 10]
    );
    let all: Vec<_> = batches.into_iter().flat_map(|b| b.messages).collect();
    let keys: Vec<(i64, i32, String)> = all
        .iter()
        .map(|e| {
            let m = e.message.as_ref().unwrap();
            let t = m.create_time.unwrap();
            (t.seconds, t.nanos, m.message_id.clone())
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "strictly in (create time, id) order"
    );
    let held = all
        .iter()
        .filter(|e| e.message.as_ref().unwrap().status() == pb::MessageStatus::HeldOut)
        .count();
    assert_eq!(held as i64, statuses(&app).await["held_out"]);
    let clicked: Vec<_> = all.iter().filter(|e| e.click_count > 0).collect();
    assert_eq!(clicked.len(), 1);
    let c = clicked[0];
    assert_eq!(c.message.as_ref().unwrap().phone_number, first.to);
    assert_eq!((c.click_count, c.attributed_order_count), (2, 1));
    assert_eq!(
        c.attributed_revenue,
        [pb::Money {
            amount_minor: 2_500,
            currency_code: "USD".into()
        }]
    );
    assert_eq!(
        all.iter().filter(|e| e.attributed_order_count > 0).count(),
        1
    );

    // A range holding no message: a stream with nothing in it.
    assert!(export(
        &app,
        t0 - chrono::Duration::days(2),
        t0 - chrono::Duration::days(1)
    )
    .await
    .is_empty());
    // A range from the middle: only the later messages.
    let (s, n, _) = &keys[300];
    let from = Utc.timestamp_opt(*s, *n as u32).unwrap();
    let later: usize = export(&app, from, t0 + chrono::Duration::hours(2))
        .await
        .iter()
        .map(|b| b.messages.len())
        .sum();
    assert_eq!(
        later,
        keys.iter().filter(|k| (k.0, k.1) >= (*s, *n)).count()
    );
}

#[tokio::test]
async fn export_requests_are_validated_before_the_stream_starts() {
    let app = spawn_app().await;
    let mut client = app.dispatch();
    let err = client
        .export_messages(pb::ExportMessagesRequest {
            tenant_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["tenant_id", "start_time", "end_time"]
    );
    let now = app.clock.now_dt();
    let err = client
        .export_messages(pb::ExportMessagesRequest {
            tenant_id: "demo".into(),
            start_time: Some(ts(now)),
            end_time: Some(ts(now - chrono::Duration::hours(1))),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["end_time"]);
    let err = client
        .export_messages(pb::ExportMessagesRequest {
            tenant_id: "nobody".into(),
            start_time: Some(ts(now - chrono::Duration::hours(1))),
            end_time: Some(ts(now)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn settle(app: &TestApp) -> usize {
    let policy = &app.state.tenants["demo"];
    restock::reporting::settle(&app.state.store, "demo", policy, app.clock.now_dt())
        .await
        .unwrap()
}

/// The report without the fields that say when it was computed.
fn figures(mut r: pb::AttributionReport) -> pb::AttributionReport {
    r.compute_time = None;
    r.windows_closed = false;
    r
}

#[tokio::test]
async fn a_settled_release_is_added_up_from_its_cached_figures_until_a_late_write_drops_them() {
    use pb::PurchaseChannel::{SmsLink, Web};
    let fake = FakeTwilio::start().await.unwrap();
    let p = phones(4, 1_100);
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.holdout_share = 0.0;
        t.storefront_url = Some("https://shop.example/".into());
    })
    .await;
    subscribe_all(&app, "sku-1", &p).await;
    set_stock(&app, "sku-1", "loc-1", 50, 1).await;
    app.until("the release to complete", || async {
        statuses(&app).await.get("sent") == Some(&4)
            && app
                .list_releases(pb::ListReleasesRequest {
                    tenant_id: "demo".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .releases[0]
                .state()
                == pb::ReleaseState::Completed
    })
    .await;
    let t0 = app.clock.now_dt();
    let mut client = app.dispatch();
    app.clock.advance(chrono::Duration::hours(1));
    client
        .record_purchase(pb::RecordPurchaseRequest {
            channel: SmsLink as i32,
            ..purchase("o-1", &p[0], "sku-1", 1, (3_000, "USD"), app.clock.now_dt())
        })
        .await
        .unwrap();
    // Not settled while its windows are open.
    assert_eq!(settle(&app).await, 0);
    let live = figures(release_report(&app).await);
    let days = |app: &TestApp| {
        let mut client = app.dispatch();
        async move {
            client
                .get_period_report(pb::GetPeriodReportRequest {
                    tenant_id: "demo".into(),
                    start_time: Some(ts(t0 - chrono::Duration::days(1))),
                    end_time: Some(ts(t0 + chrono::Duration::days(1))),
                })
                .await
                .unwrap()
                .into_inner()
                .days
        }
    };
    let live_days = days(&app).await;
    assert_eq!(live_days.iter().map(|d| d.sent_count).sum::<u64>(), 4);

    // Past the 7-day click window and a day's margin: settled, and added up from the cache.
    app.clock.advance(chrono::Duration::days(9));
    assert_eq!(settle(&app).await, 1);
    assert_eq!(app.count("release_figures").await, 1);
    assert_eq!(figures(release_report(&app).await), live);
    assert_eq!(
        days(&app).await,
        live_days,
        "the days add the cached release up alike"
    );
    assert_eq!(settle(&app).await, 0, "settled once");

    // A purchase recorded late, dated within the lift window: the cached row goes, the report
    // counts it at once.
    client
        .record_purchase(pb::RecordPurchaseRequest {
            channel: Web as i32,
            ..purchase(
                "o-2",
                &p[1],
                "sku-1",
                1,
                (2_000, "USD"),
                t0 + chrono::Duration::hours(2),
            )
        })
        .await
        .unwrap();
    assert_eq!(app.count("release_figures").await, 0);
    let r = release_report(&app).await;
    assert_eq!(ratio(&r.conversion_rate), Some((2, 4, Some(0.5))));
    assert_eq!(
        r.lift
            .as_ref()
            .unwrap()
            .treatment_conversion
            .as_ref()
            .unwrap()
            .numerator,
        2
    );
    assert_eq!(settle(&app).await, 1);
    assert_eq!(figures(release_report(&app).await), figures(r));

    // A late delivery report and a late click each drop it too.
    let sid = fake
        .messages()
        .into_iter()
        .find(|m| m.to == p[2])
        .unwrap()
        .sid;
    delivery_report(&app, &sid, "undelivered", Some("30007")).await;
    assert_eq!(app.count("release_figures").await, 0);
    let r = release_report(&app).await;
    assert_eq!(ratio(&r.complaint_rate), Some((1, 4, Some(0.25))));
    assert_eq!(settle(&app).await, 1);
    assert_eq!(figures(release_report(&app).await), figures(r));
    let body = fake
        .messages()
        .into_iter()
        .find(|m| m.to == p[3])
        .unwrap()
        .body;
    let token = body
        .split("/r/")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(app.click(&token, &[]).await.status, 302);
    assert_eq!(app.count("release_figures").await, 0);
    assert_eq!(release_report(&app).await.click_count, 1);

    // A period over a settled release and an open one adds the cached and the live figures.
    assert_eq!(settle(&app).await, 1);
    subscribe_all(&app, "sku-2", &p[..2]).await;
    set_stock(&app, "sku-2", "loc-1", 50, 1).await;
    app.until("sku-2 texted", || async {
        statuses(&app).await.get("sent").copied().unwrap_or(0) >= 5
    })
    .await;
    let period = period(
        &app,
        "demo",
        t0 - chrono::Duration::days(1),
        app.clock.now_dt() + chrono::Duration::days(1),
    )
    .await;
    assert_eq!(app.count("release_figures").await, 1);
    assert_eq!(period.release_count, 2);
    assert_eq!(period.recipient_count, 6);
    assert_eq!(period.click_count, 1);
    assert_eq!(ratio(&period.conversion_rate).unwrap().0, 2);
}
