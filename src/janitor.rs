//! Housekeeping that keeps tables from growing without bound: event ids are remembered for the
//! duplicate window the API promises (7 days), webhook receipts for longer than the provider
//! retries, then forgotten. It also caches the report figures of releases that have settled.

use std::collections::BTreeMap;
use std::time::Duration;

use restock_domain::TenantPolicy;

use restock_domain::clock::Clock;
use restock_store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// How long an inventory event id is remembered (the API promises at least 7 days).
pub const EVENT_ID_RETENTION: chrono::Duration = chrono::Duration::days(8);

/// How long a provider webhook is remembered as acted on: the provider retries for hours (a
/// status callback for up to a day), so a week leaves a wide margin. A replay captured and sent
/// later than that is refused by nothing but the signature, so keep it well past any retry.
pub const WEBHOOK_RECEIPT_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Prunes every `interval` until `stop` turns true.
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    tenants: BTreeMap<String, TenantPolicy>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        for (tenant_id, policy) in &tenants {
            match crate::reporting::settle(&store, tenant_id, policy, clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tenant_id, settled = n, "cached settled release figures"),
                Err(e) => {
                    tracing::warn!(tenant_id, error = %e, "settling release figures failed; retrying later")
                }
            }
        }
        match store
            .prune_inventory_events(clock.now() - EVENT_ID_RETENTION)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "forgot old inventory event ids"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning inventory event ids failed; retrying later")
            }
        }
        match store
            .prune_webhook_receipts(clock.now() - WEBHOOK_RECEIPT_RETENTION)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "forgot old webhook receipts"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning webhook receipts failed; retrying later")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
