//! Housekeeping that keeps tables from growing without bound: event ids are remembered for the
//! duplicate window the API promises (7 days), then forgotten.

use std::time::Duration;

use restock_domain::clock::Clock;
use restock_store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// How long an inventory event id is remembered (the API promises at least 7 days).
pub const EVENT_ID_RETENTION: chrono::Duration = chrono::Duration::days(8);

/// Prunes every `interval` until `stop` turns true.
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
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
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
