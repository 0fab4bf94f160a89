//! The rest of WaitlistService: positions, unsubscribe, lists, consent ledger and erasure.

use restock::proto::v1 as pb;
use tonic::Code;

use crate::helpers::*;

fn get(id: &str) -> pb::GetSubscriptionRequest {
    pb::GetSubscriptionRequest {
        tenant_id: "demo".into(),
        subscription_id: id.into(),
    }
}

#[tokio::test]
async fn waitlist_position_follows_tier_then_arrival() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (i, tier) in [0u32, 0, 5, 0].into_iter().enumerate() {
        let mut req = subscribe_request("sku-1", &format!("+1415555020{i}"));
        req.priority_tier = tier;
        let r = app.subscribe(req).await.unwrap();
        ids.push((r.subscription.unwrap().subscription_id, r.waitlist_position));
    }
    // At subscribe time: 1, 2, then the tier-5 shopper jumps to 1, then the last is 4th.
    assert_eq!(
        ids.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        [1, 2, 1, 4]
    );
    let mut now = Vec::new();
    for (id, _) in &ids {
        let p = app
            .get_waitlist_position(pb::GetWaitlistPositionRequest {
                tenant_id: "demo".into(),
                subscription_id: id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(p.waiting_count, 4);
        now.push(p.position);
    }
    assert_eq!(now, [2, 3, 1, 4]);

    app.unsubscribe(pb::UnsubscribeRequest {
        tenant_id: "demo".into(),
        subscription_id: ids[0].0.clone(),
    })
    .await
    .unwrap();
    let p = app
        .get_waitlist_position(pb::GetWaitlistPositionRequest {
            tenant_id: "demo".into(),
            subscription_id: ids[1].0.clone(),
        })
        .await
        .unwrap();
    assert_eq!((p.position, p.waiting_count), (2, 3));
    let gone = app
        .get_waitlist_position(pb::GetWaitlistPositionRequest {
            tenant_id: "demo".into(),
            subscription_id: ids[0].0.clone(),
        })
        .await
        .unwrap();
    assert_eq!(gone.position, 0);
}

#[tokio::test]
async fn unsubscribe_cancels_once_and_a_new_subscribe_starts_over() {
    let app = spawn_app().await;
    let sub = app
        .subscribe(subscribe_request("sku-1", "+14155550300"))
        .await
        .unwrap();
    let id = sub.subscription.unwrap().subscription_id;
    let req = pb::UnsubscribeRequest {
        tenant_id: "demo".into(),
        subscription_id: id.clone(),
    };
    let a = app
        .unsubscribe(req.clone())
        .await
        .unwrap()
        .subscription
        .unwrap();
    let b = app.unsubscribe(req).await.unwrap().subscription.unwrap();
    assert_eq!(a.status, pb::SubscriptionStatus::Cancelled as i32);
    assert_eq!(a.cancel_reason, pb::CancelReason::Unsubscribed as i32);
    assert_eq!(
        a.update_time, b.update_time,
        "the second call changes nothing"
    );
    let again = app
        .subscribe(subscribe_request("sku-1", "+14155550300"))
        .await
        .unwrap();
    assert!(again.created);
    assert_ne!(again.subscription.unwrap().subscription_id, id);
}

#[tokio::test]
async fn unknown_and_malformed_subscription_ids_are_told_apart() {
    let app = spawn_app().await;
    let err = app
        .get_subscription(get(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app.get_subscription(get("42")).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["subscription_id"]);
    let err = app
        .confirm_subscription(pb::ConfirmSubscriptionRequest {
            tenant_id: "demo".into(),
            subscription_id: "x".into(),
            source: 77,
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["source", "subscription_id"]);
}

#[tokio::test]
async fn confirming_a_cancelled_subscription_is_a_failed_precondition() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550301");
    req.tenant_id = "demo-double-opt-in".into();
    let id = app
        .subscribe(req)
        .await
        .unwrap()
        .subscription
        .unwrap()
        .subscription_id;
    app.unsubscribe(pb::UnsubscribeRequest {
        tenant_id: "demo-double-opt-in".into(),
        subscription_id: id.clone(),
    })
    .await
    .unwrap();
    let err = app
        .confirm_subscription(pb::ConfirmSubscriptionRequest {
            tenant_id: "demo-double-opt-in".into(),
            subscription_id: id,
            source: pb::ConsentSource::Sms as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn pages_neither_repeat_nor_skip_while_subscriptions_arrive() {
    let app = spawn_app().await;
    for i in 0..25 {
        app.subscribe(subscribe_request("sku-1", &format!("+141555504{i:02}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut arrivals = 0;
    loop {
        let page = app
            .list_subscriptions(pb::ListSubscriptionsRequest {
                tenant_id: "demo".into(),
                page_size: 7,
                page_token: token.clone(),
                variant_id: "sku-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.subscriptions.len() <= 7);
        seen.extend(page.subscriptions.into_iter().map(|s| s.phone_number));
        // New shoppers arrive between pages, for this variant and another.
        for v in ["sku-1", "sku-2"] {
            app.subscribe(subscribe_request(v, &format!("+141555505{arrivals:02}")))
                .await
                .unwrap();
            arrivals += 1;
        }
        if page.next_page_token.is_empty() || arrivals > 40 {
            break;
        }
        token = page.next_page_token;
    }
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no subscription twice");
    for i in 0..25 {
        assert!(
            seen.contains(&format!("+141555504{i:02}")),
            "the first 25 are all listed"
        );
    }
    assert!(
        seen.windows(2)
            .all(|w| w[0] < w[1] || w[0].starts_with("+141555504")),
        "oldest first"
    );
}

#[tokio::test]
async fn list_filters_combine_and_tokens_are_bound_to_them() {
    let app = spawn_app().await;
    let mut a = subscribe_request("sku-1", "+14155550600");
    a.customer_id = "cust-a".into();
    app.subscribe(a).await.unwrap();
    app.subscribe(subscribe_request("sku-2", "+14155550600"))
        .await
        .unwrap();
    let c = app
        .subscribe(subscribe_request("sku-1", "+14155550601"))
        .await
        .unwrap();
    app.unsubscribe(pb::UnsubscribeRequest {
        tenant_id: "demo".into(),
        subscription_id: c.subscription.unwrap().subscription_id,
    })
    .await
    .unwrap();
    let list = |req: pb::ListSubscriptionsRequest| {
        let mut client = app.waitlist();
        async move { client.list_subscriptions(req).await.unwrap().into_inner() }
    };
    let base = pb::ListSubscriptionsRequest {
        tenant_id: "demo".into(),
        ..Default::default()
    };
    assert_eq!(list(base.clone()).await.subscriptions.len(), 3);
    let by_phone = list(pb::ListSubscriptionsRequest {
        phone_number: "415.555.0600".into(),
        default_region: "US".into(),
        ..base.clone()
    })
    .await;
    assert_eq!(by_phone.subscriptions.len(), 2);
    let by_customer = list(pb::ListSubscriptionsRequest {
        customer_id: "cust-a".into(),
        ..base.clone()
    })
    .await;
    assert_eq!(by_customer.subscriptions.len(), 1);
    let active_sku1 = list(pb::ListSubscriptionsRequest {
        variant_id: "sku-1".into(),
        status: pb::SubscriptionStatus::Active as i32,
        ..base.clone()
    })
    .await;
    assert_eq!(active_sku1.subscriptions.len(), 1);
    let cancelled = list(pb::ListSubscriptionsRequest {
        status: pb::SubscriptionStatus::Cancelled as i32,
        ..base.clone()
    })
    .await;
    assert_eq!(cancelled.subscriptions[0].phone_number, "+14155550601");

    let first = list(pb::ListSubscriptionsRequest {
        page_size: 1,
        ..base.clone()
    })
    .await;
    assert!(!first.next_page_token.is_empty());
    let err = app
        .list_subscriptions(pb::ListSubscriptionsRequest {
            page_token: first.next_page_token.clone(),
            variant_id: "sku-2".into(),
            ..base.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
    let err = app
        .list_subscriptions(pb::ListSubscriptionsRequest {
            page_token: "bogus".into(),
            page_size: -1,
            status: 42,
            ..base
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["page_size", "page_token", "status"]);
}

#[tokio::test]
async fn erasure_replaces_personal_data_and_keeps_the_counts() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550700");
    req.customer_id = "cust-7".into();
    req.session_id = "sess-7".into();
    let sub = app.subscribe(req).await.unwrap().subscription.unwrap();
    app.subscribe(subscribe_request("sku-2", "+14155550700"))
        .await
        .unwrap();
    app.subscribe(subscribe_request("sku-1", "+14155550701"))
        .await
        .unwrap();
    let erase = pb::ErasePhoneRequest {
        tenant_id: "demo".into(),
        phone_number: "+1 415 555 0700".into(),
        default_region: String::new(),
    };
    let out = app.erase_phone(erase.clone()).await.unwrap();
    assert!(out.erased);
    assert_eq!(out.subscriptions_erased, 2);
    assert_eq!(out.consent_events_erased, 2);

    let db = app.db().await;
    let dump: String = db
        .query_one(
            "SELECT (SELECT string_agg(t::text, ' ') FROM contacts t) || (SELECT string_agg(t::text, ' ') FROM subscriptions t) \
             || (SELECT string_agg(t::text, ' ') FROM consent_events t)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for secret in ["4155550700", "cust-7", "sess-7", "203.0.113.7"] {
        let leftover = dump.matches(secret).count();
        let expected = if secret == "203.0.113.7" { 1 } else { 0 }; // the other phone's consent keeps its IP
        assert_eq!(leftover, expected, "{secret} left after erasure");
    }
    assert_eq!(
        app.count("subscriptions").await,
        3,
        "rows are kept for counts"
    );
    assert_eq!(app.count("consent_events").await, 3);

    let after = app
        .get_subscription(get(&sub.subscription_id))
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(after.phone_number, "");
    assert_eq!(after.customer_id, "");
    assert_eq!(after.status, pb::SubscriptionStatus::Cancelled as i32);
    assert_eq!(after.cancel_reason, pb::CancelReason::Erased as i32);
    let history = app
        .get_consent_history(pb::GetConsentHistoryRequest {
            tenant_id: "demo".into(),
            phone_number: "+14155550700".into(),
            default_region: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(history.consent_state, pb::ConsentState::None as i32);
    assert!(history.events.is_empty());
    let again = app.erase_phone(erase).await.unwrap();
    assert!(!again.erased, "erasing twice changes nothing");
}

#[tokio::test]
async fn the_consent_ledger_refuses_edits_outside_erasure() {
    let app = spawn_app().await;
    app.subscribe(subscribe_request("sku-1", "+14155550800"))
        .await
        .unwrap();
    let db = app.db().await;
    let err = db
        .execute("UPDATE consent_events SET consent_text = 'forged'", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
        "{err:?}"
    );
    assert!(db.execute("DELETE FROM consent_events", &[]).await.is_err());
    assert_eq!(app.count("consent_events").await, 1);
}

#[tokio::test]
async fn a_lapsed_subscription_reads_expired_and_a_new_subscribe_replaces_it() {
    let app = spawn_app().await;
    let mut req = subscribe_request("sku-1", "+14155550850");
    req.expire_time = Some(prost_types::Timestamp {
        seconds: app.clock.now_ts() + 3_600,
        nanos: 0,
    });
    let first = app
        .subscribe(req.clone())
        .await
        .unwrap()
        .subscription
        .unwrap();
    app.clock.advance(chrono::Duration::hours(2));
    let lapsed = app
        .get_subscription(get(&first.subscription_id))
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(lapsed.status, pb::SubscriptionStatus::Expired as i32);
    req.expire_time = None;
    let second = app.subscribe(req).await.unwrap();
    assert!(second.created);
    assert_eq!(second.waitlist_position, 1);
    let db = app.db().await;
    let stored: String = db
        .query_one(
            "SELECT status FROM subscriptions WHERE subscription_id = $1",
            &[&uuid::Uuid::parse_str(&first.subscription_id).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "expired");
}
