//! Subscribe: the happy paths, every refusal, and concurrency.

use restock::proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[tokio::test]
async fn subscribe_creates_an_active_subscription_first_in_line() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-123", "(415) 555-0132");
    req.variant = Some(pb::VariantDetails {
        title: "Trail Runner 2".into(),
        options: [("size".to_string(), "M".to_string())].into(),
        deep_link: "https://demo-outfitters.example/p/trail?v=sku-123".into(),
    });
    req.customer_id = "cust-1".into();
    req.location_ids = vec!["store-1".into(), "store-1".into(), "web".into()];
    let resp = app.subscribe(req).await.unwrap();
    let sub = resp.subscription.unwrap();
    assert!(resp.created);
    assert_eq!(resp.waitlist_position, 1);
    assert_eq!(sub.status, pb::SubscriptionStatus::Active as i32);
    assert_eq!(sub.phone_number, "+14155550132");
    assert_eq!(sub.variant_id, "sku-123");
    assert_eq!(sub.desired_quantity, 1);
    assert_eq!(sub.location_ids, ["store-1", "web"]);
    assert!(sub.expire_time.unwrap().seconds > sub.create_time.unwrap().seconds + 80 * 86_400);
    assert_eq!(app.count("consent_events").await, 1);
    let title: String = app
        .db()
        .await
        .query_one("SELECT title FROM variants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "Trail Runner 2");
}

#[tokio::test]
async fn subscribing_again_in_another_format_returns_the_live_subscription() {
    let app = spawn_app().await;
    let first = app
        .subscribe(subscribe_request("sku-1", "415-555-0132"))
        .await
        .unwrap();
    let mut again = subscribe_request("sku-1", "+1 (415) 555 0132");
    again.default_region = String::new();
    let second = app.subscribe(again).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(
        first.subscription.unwrap().subscription_id,
        second.subscription.unwrap().subscription_id
    );
    assert_eq!(app.count("subscriptions").await, 1);
    assert_eq!(app.count("contacts").await, 1);
}

#[tokio::test]
async fn fifty_concurrent_identical_subscribes_give_one_subscription() {
    let app = spawn_app().await;
    let calls = (0..50).map(|_| {
        let mut client = app.waitlist();
        async move {
            client
                .subscribe(subscribe_request("sku-hot", "+14155550100"))
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for r in results {
        let r = r.expect("every concurrent subscribe succeeds").into_inner();
        created += usize::from(r.created);
        ids.insert(r.subscription.unwrap().subscription_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    assert_eq!(app.count("subscriptions").await, 1);
    assert_eq!(app.count("contacts").await, 1);
}

#[tokio::test]
async fn a_retried_request_with_its_idempotency_key_gets_the_first_answer() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550101");
    req.idempotency_key = "req-42".into();
    let first = app.subscribe(req.clone()).await.unwrap();
    let retry = app.subscribe(req.clone()).await.unwrap();
    assert!(
        first.created && retry.created,
        "a retry answers the first answer"
    );
    assert_eq!(
        first.subscription.unwrap().subscription_id,
        retry.subscription.unwrap().subscription_id
    );

    let mut other = subscribe_request("sku-2", "+14155550101");
    other.idempotency_key = "req-42".into();
    let err = app.subscribe(other).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["idempotency_key"]);
    assert_eq!(app.count("subscriptions").await, 1);
}

/// Idempotency keys are kept without expiry: one stored before the canonical fingerprint holds
/// the SHA-256 of the request's proto bytes, and a retry under it still gets the first answer
/// (another request under it is still refused).
#[tokio::test]
async fn a_key_stored_with_the_legacy_fingerprint_still_answers_its_retry() {
    use prost::Message;
    use sha2::{Digest, Sha256};

    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550102");
    req.idempotency_key = "req-legacy".into();
    let first = app.subscribe(req.clone()).await.unwrap();
    let legacy = Sha256::digest(req.encode_to_vec()).to_vec();
    let db = app.db().await;
    let stored: Vec<u8> = db
        .query_one(
            "SELECT request_hash FROM idempotency_keys WHERE idempotency_key = 'req-legacy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(stored, legacy, "new keys keep the canonical print");
    // As a key written before the canonical form (no API writes this form any more).
    db.execute(
        "UPDATE idempotency_keys SET request_hash = $1 WHERE idempotency_key = 'req-legacy'",
        &[&legacy],
    )
    .await
    .unwrap();
    let retry = app.subscribe(req.clone()).await.unwrap();
    assert_eq!(
        first.subscription.unwrap().subscription_id,
        retry.subscription.unwrap().subscription_id
    );
    let mut other = req;
    other.desired_quantity = 3;
    let err = app.subscribe(other).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["idempotency_key"]);
    assert_eq!(app.count("subscriptions").await, 1);
}

#[tokio::test]
async fn a_product_level_alert_is_keyed_by_its_wanted_options() {
    let app = spawn_app().await;
    let mut req = subscribe_request("", "+14155550102");
    req.product_id = "prod-9".into();
    req.wanted_options = [("Size".to_string(), "M".to_string())].into();
    let a = app.subscribe(req.clone()).await.unwrap();
    let sub = a.subscription.unwrap();
    assert_eq!(sub.variant_id, "");
    assert_eq!(sub.product_id, "prod-9");
    assert_eq!(
        sub.wanted_options.get("Size").map(String::as_str),
        Some("M")
    );
    req.wanted_options = [("size".to_string(), "M".to_string())].into();
    assert!(!app.subscribe(req.clone()).await.unwrap().created);
    req.wanted_options = [("size".to_string(), "L".to_string())].into();
    assert!(app.subscribe(req).await.unwrap().created);
}

#[tokio::test]
async fn double_opt_in_tenants_wait_for_confirmation() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550103");
    req.tenant_id = "demo-double-opt-in".into();
    let sub = app
        .subscribe(req.clone())
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(
        sub.status,
        pb::SubscriptionStatus::PendingConfirmation as i32
    );
    req.variant_id = "sku-2".into();
    let other = app.subscribe(req).await.unwrap().subscription.unwrap();

    let confirmed = app
        .confirm_subscription(pb::ConfirmSubscriptionRequest {
            tenant_id: "demo-double-opt-in".into(),
            subscription_id: sub.subscription_id.clone(),
            source: pb::ConsentSource::Sms as i32,
        })
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(confirmed.status, pb::SubscriptionStatus::Active as i32);
    let other = app
        .get_subscription(pb::GetSubscriptionRequest {
            tenant_id: "demo-double-opt-in".into(),
            subscription_id: other.subscription_id,
        })
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(
        other.status,
        pb::SubscriptionStatus::Active as i32,
        "consent is the phone's"
    );

    let history = app
        .get_consent_history(pb::GetConsentHistoryRequest {
            tenant_id: "demo-double-opt-in".into(),
            phone_number: "+14155550103".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.consent_state, pb::ConsentState::OptedIn as i32);
    let kinds: Vec<i32> = history.events.iter().map(|e| e.kind).collect();
    use pb::ConsentEventKind::*;
    assert_eq!(kinds, [OptIn as i32, OptIn as i32, Confirm as i32]);
    assert_eq!(history.events[0].ip_address, "203.0.113.7");
}

#[tokio::test]
async fn an_opted_out_phone_is_refused_until_it_opts_in_again() {
    let app = spawn_app().await;
    let sub = app
        .subscribe(subscribe_request("sku-1", "+14155550104"))
        .await
        .unwrap();
    let out = app
        .opt_out(pb::OptOutRequest {
            tenant_id: "demo".into(),
            phone_number: "4155550104".into(),
            default_region: "US".into(),
            source: pb::ConsentSource::Sms as i32,
            reason: "STOP".into(),
        })
        .await
        .unwrap();
    assert_eq!(out.cancelled_subscriptions, 1);
    let cancelled = app
        .get_subscription(pb::GetSubscriptionRequest {
            tenant_id: "demo".into(),
            subscription_id: sub.subscription.unwrap().subscription_id,
        })
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(cancelled.status, pb::SubscriptionStatus::Cancelled as i32);
    assert_eq!(cancelled.cancel_reason, pb::CancelReason::OptedOut as i32);

    let before = app.count("consent_events").await;
    let err = app
        .subscribe(subscribe_request("sku-2", "+14155550104"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("opted out"), "{}", err.message());
    let failure = err
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("PreconditionFailure");
    assert_eq!(failure.violations[0].subject, "phone_number");
    assert_eq!(
        app.count("consent_events").await,
        before,
        "a refusal writes nothing"
    );
    assert_eq!(app.count("subscriptions").await, 1);

    let state = app
        .opt_in(pb::OptInRequest {
            tenant_id: "demo".into(),
            phone_number: "+14155550104".into(),
            default_region: String::new(),
            consent: Some(web_consent()),
        })
        .await
        .unwrap();
    assert_eq!(state.consent_state, pb::ConsentState::OptedIn as i32);
    assert!(
        app.subscribe(subscribe_request("sku-2", "+14155550104"))
            .await
            .unwrap()
            .created
    );
}

#[tokio::test]
async fn an_unknown_phone_that_opts_out_is_remembered() {
    let app = spawn_app().await;
    app.opt_out(pb::OptOutRequest {
        tenant_id: "demo".into(),
        phone_number: "+14155550105".into(),
        source: pb::ConsentSource::Support as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = app
        .subscribe(subscribe_request("sku-1", "+14155550105"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn an_unknown_tenant_is_not_found() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550106");
    req.tenant_id = "nobody".into();
    let err = app.subscribe(req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nobody"));
    let err = app
        .list_subscriptions(pb::ListSubscriptionsRequest {
            tenant_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.count("contacts").await, 0);
}

#[tokio::test]
async fn bad_input_names_every_bad_field_and_writes_nothing() {
    let app = spawn_app().await;
    let req = pb::SubscribeRequest {
        tenant_id: String::new(),
        variant_id: "sku-1".into(),
        wanted_options: [("size".to_string(), "M".to_string())].into(),
        variant: Some(pb::VariantDetails {
            title: "x".repeat(201),
            options: Default::default(),
            deep_link: "javascript:alert(1)".into(),
        }),
        phone_number: "not a phone".into(),
        default_region: "US".into(),
        consent: Some(pb::Consent {
            consent_text: String::new(),
            source: 99,
            capture_time: None,
            ip_address: "300.1.1.1".into(),
            user_agent: "u".repeat(513),
        }),
        customer_id: "c".repeat(129),
        location_ids: vec![String::new()],
        desired_quantity: 5_000,
        priority_tier: 101,
        expire_time: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        time_zone: "Mars/Olympus".into(),
        ..Default::default()
    };
    let err = app.subscribe(req).await.unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    let mut expected = vec![
        "tenant_id",
        "wanted_options",
        "variant.title",
        "variant.deep_link",
        "phone_number",
        "consent.consent_text",
        "consent.source",
        "consent.capture_time",
        "consent.ip_address",
        "consent.user_agent",
        "customer_id",
        "location_ids[0]",
        "desired_quantity",
        "priority_tier",
        "expire_time",
        "time_zone",
    ];
    expected.sort();
    assert_eq!(fields, expected);
    for table in [
        "contacts",
        "consent_events",
        "subscriptions",
        "variants",
        "idempotency_keys",
    ] {
        assert_eq!(app.count(table).await, 0, "{table} is untouched");
    }
}

#[tokio::test]
async fn missing_target_phone_and_consent_are_each_named() {
    let app = spawn_app().await;
    let err = app
        .subscribe(pb::SubscribeRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["consent", "phone_number", "variant_id"]);

    let mut national_without_region = subscribe_request("sku-1", "415 555 0132");
    national_without_region.default_region = String::new();
    let err = app.subscribe(national_without_region).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["phone_number"]);
    assert!(
        err.message().contains("default_region"),
        "{}",
        err.message()
    );

    let mut bad_region = subscribe_request("sku-1", "415 555 0132");
    bad_region.default_region = "USA".into();
    assert_eq!(
        violated_fields(&app.subscribe(bad_region).await.unwrap_err()),
        ["default_region"]
    );

    let mut future = subscribe_request("sku-1", "+14155550132");
    future.consent.as_mut().unwrap().capture_time = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 86_400,
        nanos: 0,
    });
    assert_eq!(
        violated_fields(&app.subscribe(future).await.unwrap_err()),
        ["consent.capture_time"]
    );
    assert_eq!(app.count("contacts").await, 0);
}

#[tokio::test]
async fn concurrent_shoppers_are_batched_and_queue_in_arrival_order() {
    let app = spawn_app().await;
    let calls = (0..40).map(|i| {
        let mut client = app.waitlist();
        async move {
            let mut req = subscribe_request("sku-queue", &format!("+1415555{:04}", 1000 + i));
            if i % 10 == 0 {
                req.priority_tier = 2;
            }
            if i == 7 {
                req.variant = Some(pb::VariantDetails {
                    title: "Queue Tee".into(),
                    ..Default::default()
                });
            }
            client
                .subscribe(req)
                .await
                .unwrap()
                .into_inner()
                .subscription
                .unwrap()
        }
    });
    let subs = futures::future::join_all(calls).await;
    let stats = app.state.subscriber.stats();
    assert!(stats.batched > 0, "{stats:?}");
    assert_eq!(stats.failed_batches, 0);
    // Positions now: a permutation of 1..=40, the priority tier first, then arrival (seq).
    let mut positions = Vec::new();
    for s in &subs {
        let p = app
            .get_waitlist_position(pb::GetWaitlistPositionRequest {
                tenant_id: "demo".into(),
                subscription_id: s.subscription_id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(p.waiting_count, 40);
        positions.push((p.position, s.priority_tier));
    }
    positions.sort();
    assert_eq!(
        positions.iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<u64>>()
    );
    assert!(
        positions[..4].iter().all(|p| p.1 == 2),
        "tier 2 first: {positions:?}"
    );
    assert_eq!(app.count("consent_events").await, 40);
    let title: String = app
        .db()
        .await
        .query_one(
            "SELECT title FROM variants WHERE variant_id = 'sku-queue'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "Queue Tee");
}
