//! Explain and DryRun: the eligibility engine's answers, read from real data.

use chrono::TimeZone;
use restock::proto::v1 as pb;

use crate::helpers::*;

/// These tests read the rules before anything is sent: a server that sends no texts, so a
/// restock they make does not put its subscribers in the re-notify window.
async fn quiet_app() -> TestApp {
    spawn_app_with(|s| s.dispatch.enabled = false).await
}

/// 15:00 in New York, 10:00 in Honolulu, 20:00 in London: inside every texting window.
fn afternoon_in_the_us() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 20, 0, 0)
        .unwrap()
}

async fn explain(app: &TestApp, subscription_id: &str, variant_id: &str) -> pb::ExplainResponse {
    app.explain(pb::ExplainRequest {
        tenant_id: "demo".into(),
        subscription_id: subscription_id.into(),
        variant_id: variant_id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn verdicts(r: &pb::ExplainResponse) -> Vec<(pb::EligibilityRule, pb::RuleVerdict)> {
    r.rules
        .iter()
        .map(|x| {
            (
                pb::EligibilityRule::try_from(x.rule).unwrap(),
                pb::RuleVerdict::try_from(x.verdict).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn explain_reads_out_every_rule_and_defers_through_the_night() {
    let app = quiet_app().await;
    let id = app
        .subscribed(subscribe_request("sku-1", "+14155550123"))
        .await;
    let acks = stream(
        &app,
        vec![pb::StreamInventoryRequest {
            tenant_id: "demo".into(),
            event: Some(event("e1", "sku-1", "web", 5, 1)),
        }],
    )
    .await;
    app.clock.set(afternoon_in_the_us());
    let day = explain(&app, &id, "").await;
    assert_eq!(
        day.decision,
        pb::EligibilityDecision::SendNow as i32,
        "{}",
        day.summary
    );
    assert_eq!(
        day.restock_id, acks[0].restock_id,
        "the latest restock of the variant"
    );
    use pb::EligibilityRule as R;
    use pb::RuleVerdict as V;
    let v = verdicts(&day);
    assert_eq!(v.len(), 11);
    assert_eq!(v[0], (R::Consent, V::Pass));
    assert_eq!(v[4], (R::SubstitutePurchase, V::Pass));
    assert_eq!(v[10], (R::Sender, V::Pass));
    assert_eq!(v[2], (R::Stock, V::Pass));
    assert!(
        v.contains(&(R::Holdout, V::NotApplicable)),
        "the demo tenant holds nobody out"
    );
    assert!(day.rules.iter().all(|r| !r.explanation.is_empty()));
    assert!(
        !day.summary.contains("4155550123"),
        "no phone in what support reads out"
    );

    // Midnight in New York: the text waits for 08:00 in Honolulu, the last US zone to wake.
    app.clock
        .set(chrono::Utc.with_ymd_and_hms(2026, 11, 28, 5, 0, 0).unwrap());
    let night = explain(&app, &id, "").await;
    assert_eq!(night.decision, pb::EligibilityDecision::Defer as i32);
    assert_eq!(night.reason, pb::ReasonCode::QuietHours as i32);
    assert_eq!(
        night.defer_until_time.unwrap().seconds,
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 18, 0, 0)
            .unwrap()
            .timestamp()
    );
}

#[tokio::test]
async fn explain_says_an_opted_out_shopper_is_never_texted() {
    let app = quiet_app().await;
    let id = app
        .subscribed(subscribe_request("sku-1", "+14155550124"))
        .await;
    app.opt_out(pb::OptOutRequest {
        tenant_id: "demo".into(),
        phone_number: "+14155550124".into(),
        source: pb::ConsentSource::Sms as i32,
        reason: "STOP".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    stream(
        &app,
        vec![pb::StreamInventoryRequest {
            tenant_id: "demo".into(),
            event: Some(event("e1", "sku-1", "web", 5, 1)),
        }],
    )
    .await;
    app.clock.set(afternoon_in_the_us());
    let r = explain(&app, &id, "").await;
    assert_eq!(r.decision, pb::EligibilityDecision::Skip as i32);
    assert_eq!(
        r.reason,
        pb::ReasonCode::ConsentOptedOut as i32,
        "consent is the first rule: {}",
        r.summary
    );
}

#[tokio::test]
async fn explain_finds_the_matching_variant_of_a_product_level_alert() {
    let app = quiet_app().await;
    let mut req = subscribe_request("", "+14155550125");
    req.product_id = "prod-1".into();
    req.wanted_options = [("size".to_string(), "M".to_string())].into();
    let id = app.subscribed(req).await;
    let with = |id: &str, variant: &str, size: &str| {
        let mut e = event(id, variant, "web", 4, 1);
        e.product_id = "prod-1".into();
        e.variant = Some(pb::VariantDetails {
            title: "Tee".into(),
            options: [("Size".to_string(), size.to_string())].into(),
            deep_link: String::new(),
        });
        pb::StreamInventoryRequest {
            tenant_id: "demo".into(),
            event: Some(e),
        }
    };
    stream(&app, vec![with("m", "tee-m", "m"), with("l", "tee-l", "L")]).await;
    app.clock.set(afternoon_in_the_us());
    let m = explain(&app, &id, "").await;
    assert_eq!(m.variant_id, "tee-m");
    assert_eq!(
        m.decision,
        pb::EligibilityDecision::SendNow as i32,
        "{}",
        m.summary
    );
    let l = explain(&app, &id, "tee-l").await;
    assert_eq!(l.decision, pb::EligibilityDecision::Skip as i32);
    assert_eq!(l.reason, pb::ReasonCode::OptionsNotMatched as i32);
}

#[tokio::test]
async fn dry_run_counts_every_waiting_shopper_by_reason_and_changes_nothing() {
    let app = quiet_app().await;
    let us1 = app
        .subscribed(subscribe_request("sku-1", "+14155550131"))
        .await;
    let mut vip = subscribe_request("sku-1", "+14155550132");
    vip.priority_tier = 5;
    let vip = app.subscribed(vip).await;
    let mut gb = subscribe_request("sku-1", "07400 123456");
    gb.default_region = "GB".into();
    app.subscribed(gb).await;
    let mut elsewhere = subscribe_request("sku-1", "+14155550133");
    elsewhere.location_ids = vec!["store-2".into()];
    app.subscribed(elsewhere).await;
    let mut many = subscribe_request("sku-1", "+14155550134");
    many.desired_quantity = 10;
    app.subscribed(many).await;
    app.subscribed(subscribe_request("sku-other", "+14155550135"))
        .await;
    // 21:30 in London (quiet), 16:30 in New York and 11:30 in Honolulu (not quiet).
    app.clock.set(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 21, 30, 0)
            .unwrap(),
    );
    let before = (
        app.count("subscriptions").await,
        app.count("restocks").await,
        app.count("consent_events").await,
    );

    let run = |page_token: String, page_size: i32, example_decision: pb::EligibilityDecision| {
        let mut c = app.eligibility();
        async move {
            c.dry_run(pb::DryRunRequest {
                tenant_id: "demo".into(),
                variant_id: "sku-1".into(),
                location_id: "web".into(),
                assume_available: 5,
                page_size,
                page_token,
                example_decision: example_decision as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let first = run(String::new(), 2, pb::EligibilityDecision::Unspecified).await;
    assert_eq!(first.evaluated_count, 5);
    assert_eq!(
        (first.send_now_count, first.defer_count, first.skip_count),
        (2, 1, 2)
    );
    let reasons = |v: &[pb::ReasonCount]| v.iter().map(|r| (r.reason, r.count)).collect::<Vec<_>>();
    assert_eq!(
        reasons(&first.deferred_by_reason),
        [(pb::ReasonCode::QuietHours as i32, 1)]
    );
    assert_eq!(
        reasons(&first.skipped_by_reason),
        [
            (pb::ReasonCode::NotInStock as i32, 1),
            (pb::ReasonCode::BelowDesiredQuantity as i32, 1)
        ]
    );
    let ids: Vec<&str> = first
        .examples
        .iter()
        .map(|e| e.subscription_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [vip.as_str(), us1.as_str()],
        "examples in the order a release texts: tier, then arrival"
    );
    let second = run(
        first.next_page_token.clone(),
        2,
        pb::EligibilityDecision::Unspecified,
    )
    .await;
    let third = run(
        second.next_page_token.clone(),
        2,
        pb::EligibilityDecision::Unspecified,
    )
    .await;
    assert_eq!((second.examples.len(), third.examples.len()), (2, 1));
    assert!(third.next_page_token.is_empty());
    let skips = run(String::new(), 10, pb::EligibilityDecision::Skip).await;
    assert_eq!(skips.examples.len(), 2);
    assert_eq!(
        skips.skip_count, 2,
        "filters change the examples, not the counts"
    );
    let after = (
        app.count("subscriptions").await,
        app.count("restocks").await,
        app.count("consent_events").await,
    );
    assert_eq!(before, after, "a dry run writes nothing");
}

#[tokio::test]
async fn explain_and_dry_run_name_their_bad_fields() {
    let app = quiet_app().await;
    let err = app
        .explain(pb::ExplainRequest {
            tenant_id: "demo".into(),
            subscription_id: "nope".into(),
            restock_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["restock_id", "subscription_id"]);
    let err = app
        .dry_run(pb::DryRunRequest {
            tenant_id: "demo".into(),
            assume_available: -1,
            example_reason: 999,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["assume_available", "example_reason", "variant_id"]);
    let err = app
        .explain(pb::ExplainRequest {
            tenant_id: "demo".into(),
            subscription_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
