//! Times 100,000 evaluations of the eligibility engine as the planner and sender call it (no
//! `Explain` prose): `cargo run --release -p restock-domain --example eval_bench`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use restock_domain::eligibility::{evaluate, Candidate, LiveExclusions, RestockContext};
use restock_domain::{ConsentState, SubscriptionStatus, TenantPolicy};
use uuid::Uuid;

const EVALUATIONS: u32 = 100_000;

fn main() {
    let policy = TenantPolicy {
        holdout_share: 0.05,
        ..Default::default()
    };
    let now: DateTime<Utc> = "2026-07-01T16:00:00Z".parse().unwrap();
    let variant_options: BTreeMap<String, String> = [("Size".to_string(), "M".to_string())]
        .into_iter()
        .collect();
    let stock = vec![("store-1".to_string(), 5), ("store-2".to_string(), 0)];
    let no_options = BTreeMap::new();
    let ctx = RestockContext {
        restock_id: Uuid::from_u128(42),
        variant_id: "v-1",
        product_id: Some("p-1"),
        variant_options: &variant_options,
        stock: &stock,
        exclusions: LiveExclusions::default(),
        now,
    };
    let base = Candidate {
        subscription_id: Uuid::nil(),
        status: SubscriptionStatus::Active,
        expires_at: now + Duration::days(30),
        consent: ConsentState::OptedIn,
        desired_quantity: 1,
        location_ids: &[],
        wanted_options: &no_options,
        time_zone: None,
        phone_region: Some("US"),
        last_purchase_at: None,
        substitute_purchase: None,
        last_notified_at: None,
        phone_cap_free_at: None,
        tenant_cap_free_at: None,
    };
    // A mix like a release's: half with a known zone, some waiting for a cap, some opted out or
    // having bought it; phones of the US wait for Hawaii's morning at 16:00 UTC.
    let mix = |i: u32| {
        let mut c = base;
        c.subscription_id = Uuid::from_u128(u128::from(i));
        match i % 10 {
            // A shopper whose store told us their zone (the rest: only the phone's country).
            0..=4 => c.time_zone = Some(chrono_tz::America::New_York),
            7 => c.phone_cap_free_at = Some(now + Duration::hours(2)),
            8 => c.consent = ConsentState::OptedOut,
            9 => c.last_purchase_at = Some(now - Duration::days(3)),
            _ => {}
        }
        c
    };
    for round in 0..3 {
        let started = Instant::now();
        let mut sent = 0u32;
        for i in 0..EVALUATIONS {
            let d = evaluate(&policy, &ctx, black_box(&mix(i)));
            sent += u32::from(d.reason.is_none());
            black_box(&d);
        }
        let took = started.elapsed();
        println!(
            "round {round}: {EVALUATIONS} evaluations in {:.1} ms ({:.2} µs each), {sent} sent now",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / f64::from(EVALUATIONS)
        );
    }
}
