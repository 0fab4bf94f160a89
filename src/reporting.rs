//! What the report figures are measured with, per tenant, and the settling of finished
//! releases' figures into their cache (see `restock_store::reports`), shared by the report
//! RPCs and the janitor.

use std::time::Duration;

use chrono::{DateTime, Utc};
use restock_domain::report;
use restock_domain::TenantPolicy;
use restock_store::reports::ReportWindows;
use restock_store::{Store, StoreError};

/// An opt-out of a texted phone within this long after the text counts against the text: long
/// enough for a reply to be read late, short enough not to blame a text for a later change of
/// mind.
pub const OPT_OUT_WINDOW: Duration = Duration::from_secs(72 * 3600);

/// Sell-through counts the units bought within this long after a restock: the day in which
/// a restock's stock is announced and mostly sold.
pub const SELL_THROUGH_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Past the longest window, a day more before a release's figures are cached: late delivery
/// reports and purchases recorded a little late land before, and anything later drops the
/// cached row anyway.
const SETTLE_MARGIN: chrono::Duration = chrono::Duration::days(1);

/// Releases settled per tenant per janitor round, so a backlog is worked off in slices.
const SETTLE_BATCH: i64 = 100;

/// The tenant's text and click attribution windows.
pub fn attribution_windows(policy: &TenantPolicy) -> (Duration, Duration) {
    (
        Duration::from_secs(u64::from(policy.text_attribution_hours) * 3600),
        Duration::from_secs(u64::from(policy.click_attribution_days) * 86_400),
    )
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).expect("a window of days fits")
}

/// The windows and codes a tenant's figures are measured with.
pub fn windows(policy: &TenantPolicy) -> ReportWindows {
    let (text, _) = attribution_windows(policy);
    ReportWindows {
        opt_out: chrono(OPT_OUT_WINDOW),
        lift: chrono(text),
        complaint_codes: report::COMPLAINT_ERROR_CODES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        time_zone: policy.time_zone.clone(),
        sell_through: chrono(SELL_THROUGH_WINDOW),
    }
}

/// How long after its last text a release's figures may still change through its own
/// windows: the longest of them, plus a margin.
pub fn settle_horizon(policy: &TenantPolicy) -> chrono::Duration {
    let (text, click) = attribution_windows(policy);
    chrono(text.max(click).max(OPT_OUT_WINDOW).max(SELL_THROUGH_WINDOW)) + SETTLE_MARGIN
}

/// Caches the figures of the tenant's settled releases, a slice at a time; answers how many.
pub async fn settle(
    store: &Store,
    tenant_id: &str,
    policy: &TenantPolicy,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = store
            .settle_release_figures(
                tenant_id,
                &windows(policy),
                settle_horizon(policy),
                now,
                SETTLE_BATCH,
            )
            .await?;
        total += n;
        if n < SETTLE_BATCH as usize {
            return Ok(total);
        }
    }
}
