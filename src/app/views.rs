//! Product views: the storefront's product-page views per day, aggregate only (no shopper is
//! named), each (target, day, source) replacing its earlier count; the denominator of the
//! reports' signup rate.

use chrono::NaiveDate;
use restock_domain::TenantPolicy;
use restock_store::views::ViewCount;
use restock_store::StoreError;

use crate::state::AppState;

/// Valid view counts of a tenant to record: 1 to a thousand, no (target, day, source) twice,
/// no day after the tenant's tomorrow nor older than a period report reaches.
#[derive(Debug)]
pub struct RecordProductViews {
    pub tenant_id: String,
    pub counts: Vec<ViewCount>,
}

/// The tenant's today, in its time zone: what bounds the days of view counts.
pub fn today(state: &AppState, policy: &TenantPolicy) -> Option<NaiveDate> {
    let zone = policy.zone().ok()?;
    Some(state.clock.now().with_timezone(&zone).date_naive())
}

/// Records the counts; how many rows were written.
#[tracing::instrument(skip_all, fields(tenant_id = %cmd.tenant_id, counts = cmd.counts.len()))]
pub async fn record(state: &AppState, cmd: RecordProductViews) -> Result<u64, StoreError> {
    state
        .store
        .record_product_views(&cmd.tenant_id, &cmd.counts, state.clock.now())
        .await
}
