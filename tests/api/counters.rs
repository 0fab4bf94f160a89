//! Counters kept as things move: a new subscription's place in line equals a count of the
//! line.

use restock::proto::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn a_new_subscriptions_place_counts_tiers_lapsed_and_batched_subscriptions() {
    let app = spawn_app().await;
    // Three waiting in tier 0, one of them lapsing, and one in tier 1.
    for (i, tier, hours) in [(0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 1, 0)] {
        let mut req = subscribe_request("sku-line", &format!("+1415555090{i}"));
        req.priority_tier = tier;
        if hours > 0 {
            req.expire_time = Some(prost_types::Timestamp {
                seconds: app.clock.now_ts() + hours * 3_600,
                nanos: 0,
            });
        }
        app.waitlist().subscribe(req).await.unwrap();
    }
    app.clock.advance(chrono::Duration::hours(2));
    // A tier-0 subscription joins behind the tier-1 one and the two unexpired tier-0 ones.
    let new = app
        .waitlist()
        .subscribe(subscribe_request("sku-line", "+14155550909"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.waitlist_position, 4);
    let counted = app
        .waitlist()
        .get_waitlist_position(pb::GetWaitlistPositionRequest {
            tenant_id: "demo".into(),
            subscription_id: new.subscription.unwrap().subscription_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counted.position, counted.waiting_count), (4, 4));
    // A tier-1 subscription goes ahead of every tier 0.
    let mut req = subscribe_request("sku-line", "+14155550910");
    req.priority_tier = 1;
    let vip = app.waitlist().subscribe(req).await.unwrap().into_inner();
    assert_eq!(vip.waitlist_position, 2);
    let stored: i64 = app
        .db()
        .await
        .query_one(
            "SELECT live FROM waitlist_counts WHERE target_key = 'v:sku-line' AND priority_tier = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, 4,
        "the lapsed one is still counted until a status says so"
    );
}

#[tokio::test]
async fn concurrent_subscribes_are_answered_every_place_in_line_once() {
    let app = spawn_app().await;
    let calls = (0..24).map(|i| {
        let mut client = app.waitlist();
        async move {
            client
                .subscribe(subscribe_request("sku-rush", &format!("+141555507{i:02}")))
                .await
                .unwrap()
                .into_inner()
                .waitlist_position
        }
    });
    let mut places = futures::future::join_all(calls).await;
    places.sort_unstable();
    assert_eq!(places, (1..=24).collect::<Vec<u64>>());
    assert!(app.state.subscriber.stats().batched > 0);
}
