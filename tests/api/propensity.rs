//! Propensity ordering: a model service scores subscriptions; a tenant with `release_order =
//! tier_score_arrival` texts a release by tier, then score, then arrival; Explain shows the
//! score used and the place that came of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use restock::workers::planner::PolicyPlanner;

use crate::helpers::*;
use crate::planning::Crashing;
use restock::proto::v1 as pb;
use restock_domain::tenant::{ReleaseOrder, ReleaseStrategy};
use restock_sms::fake::FakeTwilio;
use tonic::Code;

async fn score(app: &TestApp, scores: &[(&str, f32)]) -> Result<u64, tonic::Status> {
    app.set_propensity_scores(pb::SetPropensityScoresRequest {
        tenant_id: "demo".into(),
        scores: scores
            .iter()
            .map(|(id, s)| pb::PropensityScore {
                subscription_id: id.to_string(),
                score: *s,
            })
            .collect(),
    })
    .await
    .map(|r| r.updated_count)
}

/// Six shoppers in two tiers, some scored: the release plans tier 1 (scored, then unscored),
/// then tier 0 by score, then the unscored by arrival; its first wave (half the list) texts
/// exactly the first three of that order; Explain shows each score and place.
#[tokio::test]
async fn a_release_texts_by_tier_then_score_then_arrival() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.release_order = ReleaseOrder::TierScoreArrival;
        t.release_strategy = ReleaseStrategy::Staged;
        t.stage_shares_bps = vec![5000, 5000];
        t.wave_interval_seconds = 3600;
    })
    .await;
    let phone = |i: u32| format!("+1415555{:04}", 500 + i);
    let s1 = app.subscribed_in_tier("sku-1", &phone(1), 0).await;
    let s2 = app.subscribed_in_tier("sku-1", &phone(2), 0).await;
    let s3 = app.subscribed_in_tier("sku-1", &phone(3), 1).await;
    let s4 = app.subscribed_in_tier("sku-1", &phone(4), 0).await;
    let s5 = app.subscribed_in_tier("sku-1", &phone(5), 1).await;
    let s6 = app.subscribed_in_tier("sku-1", &phone(6), 0).await;
    // A first score replaced by a second one.
    assert_eq!(score(&app, &[(&s4, 0.1)]).await.unwrap(), 1);
    assert_eq!(
        score(&app, &[(&s2, 0.2), (&s4, 0.9), (&s5, 0.1)])
            .await
            .unwrap(),
        3
    );
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 6, 2).await;
    assert_eq!(app.settle(10).await.claimed, 3);
    assert_eq!(fake.message_count(), 3);
    // The first wave: the first half of the order (handed over side by side: in any order).
    let mut first: Vec<String> = fake.messages().into_iter().map(|m| m.to).collect();
    first.sort();
    assert_eq!(first, [phone(3), phone(4), phone(5)]);

    let expected = [
        (&s5, Some(0.1f32)),
        (&s3, None),
        (&s4, Some(0.9)),
        (&s2, Some(0.2)),
        (&s1, None),
        (&s6, None),
    ];
    for (place, (id, used)) in expected.iter().enumerate() {
        let why = app
            .explain(pb::ExplainRequest {
                tenant_id: "demo".into(),
                subscription_id: id.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(why.release_order, "tier_score_arrival");
        assert_eq!(why.propensity_score, *used, "{id}");
        assert_eq!(why.release_place, place as u32 + 1, "{id}");
    }
}

/// Under `arrival` (the default) scores are kept but the release goes by tier, then arrival.
#[tokio::test]
async fn scores_do_not_reorder_a_release_of_an_arrival_tenant() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let a = app.subscribed_in_tier("sku-1", "+14155550601", 0).await;
    let b = app.subscribed_in_tier("sku-1", "+14155550602", 0).await;
    score(&app, &[(&b, 1.0), (&a, 0.0)]).await.unwrap();
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 6, 2).await;
    assert_eq!(app.settle(10).await.claimed, 2);
    assert_eq!(fake.message_count(), 2);
    for (place, id) in [&a, &b].iter().enumerate() {
        let why = app
            .explain(pb::ExplainRequest {
                tenant_id: "demo".into(),
                subscription_id: id.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(why.release_order, "arrival");
        assert_eq!(why.release_place, place as u32 + 1);
    }
}

/// Bad scores and ids name their fields; an unknown subscription sets none of the batch.
#[tokio::test]
async fn propensity_scores_are_validated_and_set_all_or_nothing() {
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    let a = app.subscribed_in_tier("sku-1", "+14155550611", 0).await;
    let status = score(
        &app,
        &[(&a, f32::NAN), (&a, 1.5), ("not-a-uuid", -0.1), ("", 0.5)],
    )
    .await
    .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        [
            "scores[0].score",
            "scores[1].subscription_id",
            "scores[1].score",
            "scores[2].subscription_id",
            "scores[2].score",
            "scores[3].subscription_id",
        ]
    );
    let status = score(&app, &[]).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["scores"]);
    let many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let refs: Vec<(&str, f32)> = many.iter().map(|id| (id.as_str(), 0.5)).collect();
    let status = score(&app, &refs).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["scores"]);

    let unknown = uuid::Uuid::new_v4().to_string();
    let status = score(&app, &[(&a, 0.7), (&unknown, 0.3)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let db = app.db().await;
    let set: Option<f32> = db
        .query_one("SELECT propensity_score FROM subscriptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(set, None, "a refused batch set a score");
    // Scores of another tenant's subscriptions are unknown here.
    let mut req = subscribe_request("sku-1", "+14155550612");
    req.tenant_id = "demo-double-opt-in".into();
    let theirs = app
        .subscribe(req)
        .await
        .unwrap()
        .subscription
        .unwrap()
        .subscription_id;
    let status = score(&app, &[(&theirs, 0.3)]).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(score(&app, &[(&a, 0.0)]).await.unwrap(), 1);
}

/// Planning by score in committed chunks, cut short mid-plan and resumed by another planner:
/// 700 subscribers in two tiers, most scored (with ties), some not. Every one is planned once,
/// at the place tier, then score (highest first, unscored last), then arrival gives it.
#[tokio::test]
async fn a_planning_by_score_cut_short_resumes_without_duplicates_or_gaps() {
    let app = spawn_app_with(|s| {
        s.dispatch.enabled = false;
        s.tenants.get_mut("demo").unwrap().release_order = ReleaseOrder::TierScoreArrival;
    })
    .await;
    app.clock.set(texting_hours());
    subscribe_all(&app, "sku-1", &phones(600, 0)).await;
    for p in phones(100, 600) {
        app.subscribed_in_tier("sku-1", &p, 1).await;
    }
    let db = app.db().await;
    let ids: Vec<String> = db
        .query(
            "SELECT subscription_id::text FROM subscriptions ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Two in three scored, on 0.00..=1.00 with many ties.
    let scored: Vec<(&str, f32)> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(i, id)| (id.as_str(), ((i * 37) % 101) as f32 / 100.0))
        .collect();
    for batch in scored.chunks(1_000) {
        score(&app, batch).await.unwrap();
    }
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    let now = app.clock.now_dt();
    let tenants = Arc::new(app.state.tenants.clone());
    let policy = || PolicyPlanner {
        tenants: tenants.clone(),
        public_base_url: app.state.public_base_url.clone(),
        now,
        render_failures: HashMap::new(),
        on_claimable: None,
    };
    let store = app.state.store.clone();
    let mut crashing = Crashing {
        inner: policy(),
        left: 400,
    };
    let crashed = tokio::spawn(async move { store.plan_next_release(&mut crashing, now).await })
        .await
        .unwrap_err();
    assert!(crashed.is_panic());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let planned = loop {
        if let Some(p) = app
            .state
            .store
            .plan_next_release(&mut policy(), now)
            .await
            .unwrap()
        {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(planned.texts, 700);
    let r = db
        .query_one(
            "SELECT count(*), count(DISTINCT m.subscription_id), count(DISTINCT m.position), \
               bool_and(m.position = o.place), (SELECT count(*) FROM release_plans) \
             FROM messages m JOIN (SELECT subscription_id, row_number() OVER \
               (ORDER BY priority_tier DESC, propensity_score DESC NULLS LAST, seq)::int AS place \
               FROM subscriptions) o USING (subscription_id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, bool>(3),
            r.get::<_, i64>(4),
        ),
        (700, 700, 700, true, 0)
    );
}
