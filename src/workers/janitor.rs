//! Housekeeping that keeps tables from growing without bound: event ids are remembered for the
//! duplicate window the API promises (7 days), webhook receipts for longer than the provider
//! retries, then forgotten. It also caches the report figures of releases that have settled.

use std::collections::BTreeMap;
use std::time::Duration;

use restock_domain::TenantPolicy;

use restock_domain::clock::Clock;
use restock_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long an inventory event id is remembered (the API promises at least 7 days).
pub const EVENT_ID_RETENTION: chrono::Duration = chrono::Duration::days(8);

/// How long a provider webhook is remembered as acted on: the provider retries for hours (a
/// status callback for up to a day), so a week leaves a wide margin. A replay captured and sent
/// later than that is refused by nothing but the signature, so keep it well past any retry.
pub const WEBHOOK_RECEIPT_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Prunes every `interval` until `stop` is cancelled.
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    tenants: BTreeMap<String, TenantPolicy>,
    interval: Duration,
    stop: CancellationToken,
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
        match store
            .prune_held_reports(clock.now() - WEBHOOK_RECEIPT_RETENTION)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                pruned = n,
                "forgot delivery reports held for texts that never got a provider id"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "pruning held delivery reports failed; retrying later")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// How many held delivery reports one pass applies.
const HELD_BATCH: i64 = 500;

/// Applies delivery reports that arrived before their text's send outcome, every `interval`
/// (and at once again while a pass finds a full batch), until `stop` is cancelled.
pub async fn apply_held_reports(
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<crate::metrics::Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let full = match store.apply_held_reports(HELD_BATCH, clock.now()).await {
            Ok(done) => {
                for outcome in &done {
                    if let restock_store::outcomes::ReportOutcome::Applied {
                        tenant_id,
                        message_id,
                        from,
                        status,
                        ..
                    } = outcome
                    {
                        tracing::info!(%tenant_id, %message_id, from = from.as_str(), to = status.as_str(), "held delivery report applied");
                        if from != status {
                            metrics.message_outcome(tenant_id, status.as_str());
                        }
                    }
                    metrics.webhook_call("status", "held_applied");
                }
                done.len() as i64 >= HELD_BATCH
            }
            Err(e) => {
                tracing::warn!(error = %e, "applying held delivery reports failed; retrying later");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
