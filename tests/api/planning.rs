//! Planning in committed chunks: the texts of an IMMEDIATE release can be claimed from the first
//! chunk on, and a planning cut short resumes after its last chunk, with neither a duplicate
//! nor a gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;
use restock::workers::planner::PolicyPlanner;
use restock_store::dispatch::{PlanChoice, PlanContext, PlanRow, Planner, ReleaseSettings};

/// A planner that dies after `left` decisions, as a process killed mid-plan.
pub struct Crashing {
    pub inner: PolicyPlanner,
    pub left: usize,
}

impl Planner for Crashing {
    fn settings(&mut self, release: &PlanContext) -> Option<ReleaseSettings> {
        self.inner.settings(release)
    }

    fn decide(&mut self, release: &PlanContext, row: &PlanRow) -> PlanChoice {
        assert!(self.left > 0, "the planner crashes mid-plan");
        self.left -= 1;
        self.inner.decide(release, row)
    }
}

#[tokio::test]
async fn a_planning_cut_short_resumes_after_its_last_chunk_without_duplicates_or_gaps() {
    // The test plays the scheduler.
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    app.clock.set(texting_hours());
    let waiting = 600;
    subscribe_all(&app, "sku-1", &phones(waiting, 0)).await;
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

    // Dies in its second chunk: the first (250 texts) is committed with its checkpoint.
    let store = app.state.store.clone();
    let mut crashing = Crashing {
        inner: policy(),
        left: 400,
    };
    let crashed = tokio::spawn(async move { store.plan_next_release(&mut crashing, now).await })
        .await
        .unwrap_err();
    assert!(crashed.is_panic());
    let db = app.db().await;
    let (messages, state): (i64, String) = {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM messages), (SELECT state FROM releases)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((messages, state.as_str()), (250, "planning"));
    // Senders start on the committed chunk while the release is still being planned.
    let claimed = app
        .state
        .store
        .claim_due("sender", Duration::from_secs(30), 10, now)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);

    // Another planner takes the release over once the dead one's lock is gone.
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
    assert_eq!(planned.texts as usize, waiting);
    assert!(planned.opened);
    // Every subscriber once, positions 1..=600 in waitlist order, no checkpoint left.
    let r = db
        .query_one(
            "SELECT count(*), count(DISTINCT m.subscription_id), count(DISTINCT m.position), \
               min(m.position), max(m.position), \
               bool_and(m.position = o.place), (SELECT count(*) FROM release_plans), \
               (SELECT state FROM releases) \
             FROM messages m JOIN (SELECT subscription_id, \
               row_number() OVER (ORDER BY priority_tier DESC, seq)::int AS place FROM subscriptions) o \
             USING (subscription_id)",
            &[],
        )
        .await
        .unwrap();
    let n = waiting as i64;
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, i32>(3),
            r.get::<_, i32>(4),
            r.get::<_, bool>(5),
            r.get::<_, i64>(6),
            r.get::<_, String>(7),
        ),
        (n, n, n, 1, waiting as i32, true, 0, "sending".to_string())
    );
}
