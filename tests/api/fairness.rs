//! Releases take turns: a small restock is neither queued behind a large one's texts at claim
//! time nor behind its plan at planning time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use restock::workers::planner::PolicyPlanner;
use restock_sms::fake::FakeTwilio;
use restock_store::dispatch::Lane;

use crate::helpers::*;

/// Plans every release waiting, as the scheduler's planners would, at `now`.
async fn plan_all(app: &TestApp, now: chrono::DateTime<chrono::Utc>) {
    let mut planner = PolicyPlanner {
        tenants: Arc::new(app.state.tenants.clone()),
        public_base_url: app.state.public_base_url.clone(),
        now,
        render_failures: HashMap::new(),
        on_claimable: None,
    };
    while app
        .state
        .store
        .plan_next_release(&mut planner, now)
        .await
        .unwrap()
        .is_some()
    {}
}

#[tokio::test]
async fn a_small_release_is_claimed_in_the_next_batch_while_a_large_one_is_sending() {
    // The test plays the scheduler and the sender.
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    app.clock.set(texting_hours());
    subscribe_all(&app, "sku-big", &phones(300, 0)).await;
    subscribe_all(&app, "sku-small", &phones(3, 1000)).await;
    let plan_all = |now| plan_all(&app, now);
    set_stock(&app, "sku-big", "loc-1", 500, 1).await;
    plan_all(app.clock.now_dt()).await;
    // The large release is due first; the small restock comes a minute later.
    app.clock.advance(chrono::Duration::minutes(1));
    set_stock(&app, "sku-small", "loc-1", 5, 1).await;
    let now = app.clock.now_dt();
    plan_all(now).await;

    let claimed = app
        .state
        .store
        .claim_due("sender", Duration::from_secs(30), 10, now)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
    let small = claimed
        .iter()
        .filter(|c| c.variant_id == "sku-small")
        .count();
    assert_eq!(
        small, 3,
        "every text of the small release is in the first batch"
    );
    // Each release still goes in its own plan order: the large one's first seven.
    let ids: Vec<uuid::Uuid> = claimed.iter().map(|c| c.message_id).collect();
    let rows = app
        .db()
        .await
        .query(
            "SELECT variant_id, array_agg(position ORDER BY position) FROM messages \
             WHERE message_id = ANY($1) GROUP BY variant_id ORDER BY variant_id",
            &[&ids],
        )
        .await
        .unwrap();
    let positions: Vec<(String, Vec<i32>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        positions,
        [
            ("sku-big".to_string(), (1..=7).collect::<Vec<i32>>()),
            ("sku-small".to_string(), vec![1, 2, 3]),
        ]
    );
}

#[tokio::test]
async fn small_releases_have_an_express_lane_the_bulk_lane_leaves_them_to_at_first() {
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    app.clock.set(texting_hours());
    subscribe_all(&app, "sku-big", &phones(300, 0)).await;
    subscribe_all(&app, "sku-small", &phones(3, 1000)).await;
    subscribe_all(&app, "sku-later", &phones(2, 2000)).await;
    let plan_all = |now| plan_all(&app, now);
    set_stock(&app, "sku-big", "loc-1", 500, 1).await;
    set_stock(&app, "sku-small", "loc-1", 5, 1).await;
    let now = app.clock.now_dt();
    plan_all(now).await;
    // The planners' connections went back to the pool holding no planning lock (one held
    // would keep its release from ever being planned again after a crash of the plan).
    let locks: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);
    // Small: a plan of at most 100 texts.
    let (small_max, first_call) = (100, Duration::from_secs(1));
    let bulk = Lane::Bulk {
        small_max,
        first_call,
    };
    let express = Lane::Express { small_max };
    let claim = |lane, limit, at| {
        let store = app.state.store.clone();
        async move {
            let claimed = store
                .claim_due_in("sender", Duration::from_secs(30), limit, at, lane)
                .await
                .unwrap();
            let mut variants: Vec<String> = claimed.iter().map(|c| c.variant_id.clone()).collect();
            variants.sort();
            variants
        }
    };

    // The bulk lane leaves the small release's texts, due this moment, to the express lane.
    assert_eq!(claim(bulk, 20, now).await, vec!["sku-big"; 20]);
    // The express lane takes them, and nothing of the large release, due as it is.
    assert_eq!(claim(express, 20, now).await, vec!["sku-small"; 3]);
    assert!(claim(express, 20, now).await.is_empty());

    // Past its first call, the bulk lane helps with a small release's texts the express lane
    // has not taken (it is behind), in turns with the large one.
    set_stock(&app, "sku-later", "loc-1", 5, 1).await;
    plan_all(now).await;
    let later = now + chrono::Duration::milliseconds(999);
    assert_eq!(claim(bulk, 4, later).await, vec!["sku-big"; 4]);
    let helped = claim(bulk, 4, now + chrono::Duration::seconds(2)).await;
    assert_eq!(helped, ["sku-big", "sku-big", "sku-later", "sku-later"]);

    // Without an express lane (`Lane::Any`, as `claim_due`) every due text is claimed.
    assert_eq!(claim(Lane::Any, 1_000, now).await.len(), 300 - 20 - 4 - 2);
}

#[tokio::test]
async fn a_small_restock_is_planned_and_texted_while_a_large_plan_is_stuck() {
    // The large release is made by a replica that does not dispatch.
    let quiet = spawn_app_with(|s| s.dispatch.enabled = false).await;
    quiet.clock.set(texting_hours());
    subscribe_all(&quiet, "sku-big", &phones(50, 0)).await;
    subscribe_all(&quiet, "sku-small", &phones(2, 1000)).await;
    set_stock(&quiet, "sku-big", "loc-1", 500, 1).await;
    // Its planning will get stuck: an uncommitted text to one of its phones holds the key its
    // first chunk needs, so the planner's insert waits for this transaction.
    let mut blocker = quiet.db().await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id,            variant_id, kind, position, status, body, segments, encoding, sender_id, link_token,            created_at, updated_at)          SELECT r.tenant_id, gen_random_uuid(), r.release_id, s.subscription_id, s.contact_id,            r.variant_id, 'first', NULL, 'skipped', NULL, 0, 'gsm7', NULL, md5(random()::text), now(), now()          FROM releases r JOIN subscriptions s ON s.tenant_id = r.tenant_id AND s.variant_id = r.variant_id          WHERE r.variant_id = 'sku-big' ORDER BY s.seq LIMIT 1",
        &[],
    )
    .await
    .unwrap();

    // A dispatching replica starts: one planner takes the large release and waits.
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_app_on(quiet.db_url.clone(), |s| use_fake(s, &fake)).await;
    app.clock.set(texting_hours());
    let planning_big = || async {
        let waiting: i64 = app
            .db()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE '%INSERT INTO messages%' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waiting > 0
    };
    eventually(
        Duration::from_secs(20),
        "the planner stuck on the large release",
        planning_big,
    )
    .await;

    // The small restock is planned by another planner and texted meanwhile.
    set_stock(&app, "sku-small", "loc-1", 5, 1).await;
    eventually(
        Duration::from_secs(20),
        "the small restock's two texts",
        || async { fake.message_count() >= 2 },
    )
    .await;
    let to: Vec<String> = fake.messages().iter().map(|m| m.to.clone()).collect();
    assert!(to.iter().all(|p| phones(2, 1000).contains(p)), "{to:?}");
    assert!(
        planning_big().await,
        "the large release is still being planned"
    );

    // Unstuck, the large one is planned and sent too (but for the phone the test wrote).
    tx.rollback().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the large restock's texts",
        || async { fake.message_count() >= 52 },
    )
    .await;
}

#[tokio::test]
async fn small_and_large_restocks_are_each_texted_once_with_the_express_lane_on_or_off() {
    for express_max_texts in [0, 10] {
        let fake = FakeTwilio::start().await.unwrap();
        let app = spawn_app_with(|s| {
            use_fake(s, &fake);
            s.dispatch.express_max_texts = express_max_texts;
        })
        .await;
        app.clock.set(texting_hours());
        // 30 phones: bulk with a lane of 10; 5 phones: the express lane's (when there is one).
        subscribe_all(&app, "sku-large", &phones(30, 0)).await;
        subscribe_all(&app, "sku-small", &phones(5, 1000)).await;
        set_stock(&app, "sku-large", "loc-1", 500, 1).await;
        set_stock(&app, "sku-small", "loc-1", 5, 1).await;
        eventually(Duration::from_secs(20), "every phone's text", || async {
            fake.message_count() >= 35
        })
        .await;
        // Nothing more comes: no text twice, whichever lane took it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = per_phone(&fake);
        assert_eq!(sent.len(), 35, "lane of {express_max_texts}");
        assert!(
            sent.values().all(|&n| n == 1),
            "lane of {express_max_texts}: {sent:?}"
        );
    }
}
