//! TransferWaitlist: a replaced SKU's waitlist moves to the new one, every shopper keeping
//! their place and consent; the counters stay equal to a recount; a retry is harmless; a
//! release in flight holds it off.

use crate::helpers::*;
use restock::proto::v1 as pb;
use tonic::Code;

async fn transfer(
    app: &TestApp,
    from: &str,
    to: &str,
) -> Result<pb::TransferWaitlistResponse, tonic::Status> {
    app.waitlist()
        .transfer_waitlist(pb::TransferWaitlistRequest {
            tenant_id: "demo".into(),
            from_variant_id: from.into(),
            to_variant_id: to.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn position(app: &TestApp, id: &str) -> (u64, u64) {
    let r = app
        .get_waitlist_position(pb::GetWaitlistPositionRequest {
            tenant_id: "demo".into(),
            subscription_id: id.into(),
        })
        .await
        .unwrap();
    (r.position, r.waiting_count)
}

async fn subscription(app: &TestApp, id: &str) -> pb::Subscription {
    app.get_subscription(pb::GetSubscriptionRequest {
        tenant_id: "demo".into(),
        subscription_id: id.into(),
    })
    .await
    .unwrap()
    .subscription
    .unwrap()
}

/// The waitlist counters (V8) against a recount of the live subscriptions, per (waitlist,
/// tier); answers the counters.
async fn counters_equal_a_recount(app: &TestApp) -> Vec<(String, i32, i64)> {
    let db = app.db().await;
    let rows = |sql: &'static str| {
        let db = &db;
        async move {
            db.query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, i32>(1),
                        r.get::<_, i64>(2),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let counters = rows(
        "SELECT target_key, priority_tier, live FROM waitlist_counts WHERE live <> 0 ORDER BY 1, 2",
    )
    .await;
    let recount = rows(
        "SELECT target_key, priority_tier, count(*) FROM subscriptions \
         WHERE status IN ('pending_confirmation', 'active', 'notified') GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await;
    assert_eq!(
        counters, recount,
        "the counters drifted from the subscriptions"
    );
    counters
}

/// Old and new waitlists interleaved, a tier above the rest, and two shoppers on both (one
/// arrived first on the old, one first on the new): after the transfer the new waitlist is
/// every shopper once, in tier then arrival order, the earlier place kept; the later duplicate
/// is cancelled as merged; statuses and consent are untouched; a second call moves nothing.
#[tokio::test]
async fn a_transferred_waitlist_keeps_every_place_and_the_counters_equal_a_recount() {
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    let p = |i: u32| format!("+1415555{:04}", 300 + i);
    let o1 = app.subscribed_in_tier("sku-old", &p(1), 0).await;
    let n2 = app.subscribed_in_tier("sku-new", &p(2), 0).await;
    let both_old_first = app.subscribed_in_tier("sku-old", &p(3), 0).await;
    let n4 = app.subscribed_in_tier("sku-new", &p(4), 0).await;
    let both_new_first = app.subscribed_in_tier("sku-new", &p(5), 0).await;
    let later_new = app.subscribed_in_tier("sku-new", &p(3), 0).await;
    let later_old = app.subscribed_in_tier("sku-old", &p(5), 0).await;
    let vip = app.subscribed_in_tier("sku-old", &p(6), 2).await;
    let o7 = app.subscribed_in_tier("sku-old", &p(7), 0).await;
    // Another waitlist, untouched.
    let other = app.subscribed_in_tier("sku-other", &p(1), 0).await;
    counters_equal_a_recount(&app).await;

    let done = transfer(&app, "sku-old", "sku-new").await.unwrap();
    assert_eq!((done.moved_count, done.merged_count), (4, 2));

    // Tier 2 first, then arrival order across both former waitlists.
    let expected = [&vip, &o1, &n2, &both_old_first, &n4, &both_new_first, &o7];
    for (i, id) in expected.iter().enumerate() {
        assert_eq!(position(&app, id).await, (i as u64 + 1, 7), "place of {id}");
        let s = subscription(&app, id).await;
        assert_eq!(s.variant_id, "sku-new");
        assert_eq!(s.status(), pb::SubscriptionStatus::Active);
    }
    for id in [&later_new, &later_old] {
        let s = subscription(&app, id).await;
        assert_eq!(s.status(), pb::SubscriptionStatus::Cancelled, "{id}");
        assert_eq!(
            s.cancel_reason(),
            pb::CancelReason::MergedByTransfer,
            "{id}"
        );
        assert_eq!(position(&app, id).await.0, 0);
    }
    assert_eq!(position(&app, &other).await, (1, 1));
    let counters = counters_equal_a_recount(&app).await;
    assert!(
        !counters.iter().any(|(key, _, _)| key == "v:sku-old"),
        "{counters:?}"
    );

    // A retry finds nothing to move and changes nothing.
    let again = transfer(&app, "sku-old", "sku-new").await.unwrap();
    assert_eq!((again.moved_count, again.merged_count), (0, 0));
    assert_eq!(counters_equal_a_recount(&app).await, counters);
    assert_eq!(position(&app, &o7).await, (7, 7));
    // A shopper who comes back to the old SKU joins its (now empty) line anew.
    let back = app.subscribed_in_tier("sku-old", &p(8), 0).await;
    assert_eq!(position(&app, &back).await, (1, 1));
    counters_equal_a_recount(&app).await;
}

/// A release of the source is running: the transfer is refused and nothing moves; once the
/// release is cancelled, the transfer goes through.
#[tokio::test]
async fn a_transfer_waits_until_no_release_of_the_source_is_in_flight() {
    // No dispatch: the release stays in planning, as one being planned would.
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    let a = app.subscribed_in_tier("sku-old", "+14155550401", 0).await;
    set_stock(&app, "sku-old", "web", 5, 1).await;
    let refused = transfer(&app, "sku-old", "sku-new").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("planning"), "{refused:?}");
    assert_eq!(subscription(&app, &a).await.variant_id, "sku-old");
    counters_equal_a_recount(&app).await;
    // A release of the target is no obstacle; the source's is.
    let releases = app
        .list_releases(pb::ListReleasesRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .releases;
    assert_eq!(releases.len(), 1);
    app.cancel_release(pb::CancelReleaseRequest {
        tenant_id: "demo".into(),
        release_id: releases[0].release_id.clone(),
        reason: "moving the waitlist".into(),
    })
    .await
    .unwrap();
    let done = transfer(&app, "sku-old", "sku-new").await.unwrap();
    assert_eq!(done.moved_count, 1);
    assert_eq!(subscription(&app, &a).await.variant_id, "sku-new");
    counters_equal_a_recount(&app).await;
}

#[tokio::test]
async fn a_transfer_names_its_bad_fields() {
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "",
            "",
            "",
            &["tenant_id", "from_variant_id", "to_variant_id"],
        ),
        ("demo", "sku-1", "sku-1", &["to_variant_id"]),
        ("demo", &"x".repeat(200), "sku-2", &["from_variant_id"]),
    ];
    for (tenant, from, to, fields) in cases {
        let status = app
            .transfer_waitlist(pb::TransferWaitlistRequest {
                tenant_id: tenant.to_string(),
                from_variant_id: from.to_string(),
                to_variant_id: to.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), *fields);
    }
}

/// The same transfer sent twice at once (a client retrying a slow call), and the reverse
/// transfer racing them: no deadlock, no error but the refusal of nothing, every shopper once,
/// the counters equal to a recount.
#[tokio::test]
async fn racing_transfers_leave_every_shopper_once_and_the_counters_right() {
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    for i in 0..30u32 {
        let variant = if i % 2 == 0 { "sku-a" } else { "sku-b" };
        app.subscribed_in_tier(variant, &format!("+1415555{:04}", 700 + i), i % 3)
            .await;
    }
    // Five shoppers on both.
    for i in 0..5u32 {
        app.subscribed_in_tier("sku-b", &format!("+1415555{:04}", 700 + 2 * i), 0)
            .await;
    }
    let (one, two, back) = tokio::join!(
        transfer(&app, "sku-a", "sku-b"),
        transfer(&app, "sku-a", "sku-b"),
        transfer(&app, "sku-b", "sku-a"),
    );
    for r in [&one, &two, &back] {
        assert!(r.is_ok(), "{r:?}");
    }
    counters_equal_a_recount(&app).await;
    let db = app.db().await;
    let r = db
        .query_one(
            "SELECT count(*), count(DISTINCT contact_id) FROM subscriptions \
             WHERE status IN ('pending_confirmation', 'active', 'notified')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (30, 30));
    let merged: i64 = db
        .query_one(
            "SELECT count(*) FROM subscriptions WHERE cancel_reason = 'merged_by_transfer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(merged, 5);
}
