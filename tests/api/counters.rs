//! Counters kept as things move: a release's tallies always equal a count of its outbox, and a
//! new subscription's place in line equals a count of the line.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;

type Tallies = BTreeMap<(Option<i32>, String, Option<String>), (i64, i64)>;

/// The outbox counted the slow way.
async fn counted(app: &TestApp) -> Tallies {
    app.db()
        .await
        .query(
            "SELECT wave, status, reason, count(*), COALESCE(sum(segments), 0)::bigint \
             FROM messages GROUP BY wave, status, reason",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
        .collect()
}

/// Every release's tallies, as GetRelease reads them.
async fn kept(app: &TestApp) -> Tallies {
    let ids: Vec<uuid::Uuid> = app
        .db()
        .await
        .query("SELECT release_id FROM releases", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut all = Tallies::new();
    for id in ids {
        let release = app.state.store.get_release("demo", id).await.unwrap();
        for t in release.tallies {
            let e = all
                .entry((t.wave, t.status.as_str().to_string(), t.reason))
                .or_default();
            e.0 += t.messages;
            e.1 += t.segments;
        }
    }
    all
}

/// The tallies equal a count of the outbox. Read while the sender is still moving messages,
/// the two reads are two snapshots and may straddle a batch's outcomes, so they are compared
/// until they agree: a tally that is wrong stays wrong, and fails after the wait.
async fn tallies_match(app: &TestApp) {
    for _ in 0..100 {
        if counted(app).await == kept(app).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted(app).await, kept(app).await);
}

async fn fold(app: &TestApp) {
    app.db()
        .await
        .execute("SELECT release_tallies_fold()", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn release_tallies_equal_a_count_of_the_outbox_through_retries_deferrals_suppressions_and_a_crash(
) {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    let phones = phones(12, 700);
    // One subscriber sleeps in Tokyo (04:00 there): deferred to the morning.
    let mut night = subscribe_request("sku-1", &phones[0]);
    night.time_zone = "Asia/Tokyo".into();
    app.subscribe(night).await.unwrap();
    subscribe_all(&app, "sku-1", &phones[1..]).await;
    // The provider says one phone opted out (suppressed), another is invalid (failed), and
    // throttles two creates (retried).
    fake.reject_number(&phones[10], 21610);
    fake.reject_number(&phones[11], 21211);
    fake.throttle_next(2, Duration::from_secs(1));
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    let db = app.db().await;
    eventually(Duration::from_secs(10), "first outcomes", || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM messages WHERE variant_id = 'sku-1' AND status = 'sent'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n >= 5
    })
    .await;
    tallies_match(&app).await;

    // A replica claims the retries (due in a second) and dies: its lease runs out with no
    // hand-over begun, and the scheduler puts the texts back in line.
    let soon = app.clock.now_dt() + chrono::Duration::seconds(2);
    let claimed = app
        .state
        .store
        .claim_due("dead-replica", Duration::from_secs(1), 10, soon)
        .await
        .unwrap();
    assert!(
        !claimed.is_empty()
            && claimed
                .iter()
                .all(|c| c.previous_status == restock_domain::MessageStatus::Planned),
        "{claimed:?}"
    );
    tallies_match(&app).await;
    app.clock.advance(chrono::Duration::seconds(4));
    eventually(
        Duration::from_secs(20),
        "retries sent, the crash requeued",
        || async {
            app.clock.advance(chrono::Duration::seconds(2));
            let open: i64 = db
                .query_one(
                    "SELECT count(*) FROM messages WHERE status = 'sending' \
                   OR (status = 'planned' AND variant_id = 'sku-1')",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            open == 0
        },
    )
    .await;
    let texted = counted(&app).await;
    let sent: i64 = texted
        .iter()
        .filter(|((_, s, _), _)| s == "sent")
        .map(|(_, (n, _))| n)
        .sum();
    assert!(sent >= 9, "{texted:?}");
    assert!(
        texted.keys().any(|(_, s, _)| s == "suppressed"),
        "{texted:?}"
    );
    assert!(texted.keys().any(|(_, s, _)| s == "failed"), "{texted:?}");
    assert!(texted.keys().any(|(_, s, _)| s == "deferred"), "{texted:?}");
    assert_eq!(texted, kept(&app).await);
    fold(&app).await;
    assert_eq!(texted, kept(&app).await);
    let deltas: i64 = db
        .query_one("SELECT count(*) FROM release_tally_deltas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deltas, 0, "folded");
}

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
        app.subscribe(req).await.unwrap();
    }
    app.clock.advance(chrono::Duration::hours(2));
    // A tier-0 subscription joins behind the tier-1 one and the two unexpired tier-0 ones.
    let new = app
        .subscribe(subscribe_request("sku-line", "+14155550909"))
        .await
        .unwrap();
    assert_eq!(new.waitlist_position, 4);
    let counted = app
        .get_waitlist_position(pb::GetWaitlistPositionRequest {
            tenant_id: "demo".into(),
            subscription_id: new.subscription.unwrap().subscription_id,
        })
        .await
        .unwrap();
    assert_eq!((counted.position, counted.waiting_count), (4, 4));
    // A tier-1 subscription goes ahead of every tier 0.
    let mut req = subscribe_request("sku-line", "+14155550910");
    req.priority_tier = 1;
    let vip = app.subscribe(req).await.unwrap();
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
