//! The dispatch engine: plans releases into waves and sends their texts, exactly once, at the
//! pace the caps allow. Every replica runs it; Postgres row locks and leases coordinate them.
//!
//! - the scheduler ([`scheduler`]) plans new releases, opens due waves (reading the stock
//!   again each time), completes finished releases and reconciles expired leases;
//! - senders ([`sender`]) claim due messages in batches, check eligibility again, take capacity
//!   from the Redis caps, hand the texts to the provider with bounded concurrency, and record
//!   the outcomes.

pub mod confirm;
pub mod health;
pub mod janitor;
pub mod planner;
pub mod scheduler;
pub mod sender;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use restock_caps::Caps;
use restock_domain::consent::derive_state;
use restock_domain::eligibility::{
    evaluate as engine, Candidate, Decision, RestockContext, SubstitutePurchase,
};
use restock_domain::{Phone, TenantPolicy};
use restock_sms::provider::Provider;
use restock_store::eligibility::CandidateRow;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DispatchSettings;
use crate::state::AppState;

/// What is known about a subscriber beyond their subscription: their purchases, texts and
/// caps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase of a close substitute of the variant by this phone or customer.
    pub substitute_purchase: Option<&'a SubstitutePurchase>,
    pub last_notified_at: Option<DateTime<Utc>>,
    pub phone_cap_free_at: Option<DateTime<Utc>>,
    pub tenant_cap_free_at: Option<DateTime<Utc>>,
}

/// Runs the engine for one stored subscription, with what is known about the phone.
pub fn evaluate(
    policy: &TenantPolicy,
    ctx: &RestockContext,
    row: &CandidateRow,
    known: Known<'_>,
) -> Decision {
    let consent = derive_state(policy.double_opt_in, row.ledger.iter().copied());
    let region = row.phone_e164.as_deref().and_then(region_of);
    let time_zone = row.time_zone.as_deref().and_then(|t| t.parse::<Tz>().ok());
    let candidate = Candidate {
        subscription_id: row.subscription_id,
        status: row.status,
        expires_at: row.expires_at,
        consent,
        desired_quantity: row.desired_quantity,
        location_ids: &row.location_ids,
        wanted_options: &row.wanted_options,
        time_zone,
        phone_region: region.as_deref(),
        last_purchase_at: known.last_purchase_at,
        substitute_purchase: known.substitute_purchase,
        last_notified_at: known.last_notified_at,
        phone_cap_free_at: known.phone_cap_free_at,
        tenant_cap_free_at: known.tenant_cap_free_at,
    };
    engine(policy, ctx, &candidate)
}

/// The country (ISO 3166-1) of an E.164 number, for quiet hours.
///
/// Parsing a number costs about 75 µs (phonenumber's metadata is regex-driven), more than the
/// rest of the eligibility engine together, and a release evaluates every subscriber twice. The
/// country is a function of the number's first digits (country code, then area code: a North
/// American area code names its country), so answers are cached by the first six digits.
pub fn region_of(e164: &str) -> Option<String> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<String>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    /// Distinct prefixes kept; far more than the countries and area codes in use.
    const MAX_PREFIXES: usize = 50_000;
    let key: String = e164.chars().take(7).collect();
    if let Some(hit) = CACHE.lock().expect("region cache").get(&key) {
        return hit.clone();
    }
    let region = Phone::parse(e164, "")
        .ok()
        .and_then(|p| p.region().map(str::to_string));
    let mut cache = CACHE.lock().expect("region cache");
    if cache.len() >= MAX_PREFIXES {
        cache.clear();
    }
    cache.insert(key, region.clone());
    region
}

/// What the engine's tasks share.
pub struct Engine {
    pub state: Arc<AppState>,
    pub provider: Arc<dyn Provider>,
    pub caps: Caps,
    pub settings: DispatchSettings,
    /// This process's name on the leases it holds.
    pub owner: String,
    /// Woken when a wave opens, so idle senders claim at once.
    pub work: Notify,
    /// Texts in flight to the provider, at most `settings.concurrency`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Hand-over fences open at once (each holds a database connection; see `sender`).
    pub fences: Arc<tokio::sync::Semaphore>,
    /// Where the provider posts delivery reports (`None` for providers that have none).
    pub status_callback: Option<String>,
}

impl Engine {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.lease_seconds.into())
    }

    /// How long before its lease runs out a sender stops beginning hand-overs: the lease is
    /// judged on this process's monotonic clock from before the claim, and the margin absorbs
    /// the time between that check and the request, and clocks of replicas that disagree.
    pub fn margin(&self) -> Duration {
        (self.lease() / 5)
            .max(Duration::from_secs(1))
            .min(self.lease() / 2)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms)
    }
}

/// Starts the scheduler and the senders on `tasks`; they stop when `stop` is cancelled.
pub fn start(engine: Arc<Engine>, tasks: &TaskTracker, stop: CancellationToken) {
    tasks.spawn(scheduler::run(engine.clone(), stop.clone()));
    // A few senders, so one batch's database work overlaps another's hand-overs.
    let senders = engine.settings.concurrency.div_ceil(32).clamp(2, 8);
    for i in 0..senders {
        tasks.spawn(sender::run(engine.clone(), i, stop.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn regions_come_from_the_first_digits_and_are_cached_exactly() {
        for _ in 0..2 {
            assert_eq!(region_of("+14155550100").as_deref(), Some("US"));
            assert_eq!(region_of("+16135550100").as_deref(), Some("CA"));
            assert_eq!(region_of("+442071838750").as_deref(), Some("GB"));
            assert_eq!(region_of("+33142685300").as_deref(), Some("FR"));
        }
    }
}
