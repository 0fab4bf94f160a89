//! Moving a variant's waitlist to another variant (a SKU replaced by a new one), every shopper
//! keeping their place and consent. The waitlist counters follow by their triggers (V8): a
//! transfer is an UPDATE of `target_key`, which they count as leaving one waitlist and joining
//! the other.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cached::{execute, query, query_opt};
use crate::{Store, StoreError};

/// What a transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transferred {
    /// Subscriptions now waiting for the target variant that waited for the source.
    pub moved: u64,
    /// Shoppers waiting for both: the later of their two subscriptions ended
    /// (`merged_by_transfer`), the earlier place kept.
    pub merged: u64,
}

impl Store {
    /// Moves every live subscription of `from` to `to` in one transaction. A subscription keeps
    /// its id, tier, insertion order (`seq`, its place), consent and status; only what it waits
    /// for changes. A shopper live on both keeps the earlier of the two places. Refused while a
    /// release of `from` is planning, sending or paused (its messages name the source's
    /// subscriptions). A second call finds nothing left to move: harmless.
    pub async fn transfer_waitlist(
        &self,
        tenant_id: &str,
        from: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<Transferred, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The source's stock row serialises this with restock detection of the source (see
        // V2): no release of it can start between the check below and the commit. Taken as
        // restock detection takes it, creating it as never stocked if no event came yet, so a
        // first event racing the transfer waits too.
        execute(
            &tx,
            "INSERT INTO variant_stock (tenant_id, variant_id, available, armed, updated_at) \
             VALUES ($1, $2, 0, true, $3) \
             ON CONFLICT (tenant_id, variant_id) DO UPDATE SET updated_at = variant_stock.updated_at",
            &[&tenant_id, &from, &now],
        )
        .await?;
        if let Some(r) = query_opt(
            &tx,
            "SELECT release_id, state FROM releases WHERE tenant_id = $1 AND variant_id = $2 \
             AND state IN ('planning', 'sending', 'paused') LIMIT 1",
            &[&tenant_id, &from],
        )
        .await?
        {
            let (release_id, state): (Uuid, String) = (r.get(0), r.get(1));
            return Err(StoreError::Refused {
                kind: "RELEASE_IN_FLIGHT",
                subject: "from_variant_id",
                description: format!(
                    "release {release_id} of variant {from} is {state}; transfer its waitlist once it has ended"
                ),
            });
        }
        let (from_key, to_key) = (format!("v:{from}"), format!("v:{to}"));
        // The live subscriptions of both, locked in one order (by id) so two transfers between
        // the same variants, either way round, cannot deadlock.
        let live = "s.status IN ('pending_confirmation', 'active', 'notified')";
        let rows = query(
            &tx,
            &format!(
                "SELECT s.subscription_id, s.contact_id, s.target_key, s.seq FROM subscriptions s \
                 WHERE s.tenant_id = $1 AND s.target_key IN ($2, $3) AND {live} \
                 ORDER BY s.subscription_id FOR UPDATE"
            ),
            &[&tenant_id, &from_key, &to_key],
        )
        .await?;
        // For a shopper on both: the later place ends.
        let mut waiting: std::collections::HashSet<Uuid> = Default::default();
        let mut ended: Vec<Uuid> = Vec::new();
        let mut by_arrival: Vec<(i64, Uuid, Uuid)> = rows
            .iter()
            .map(|r| (r.get(3), r.get(0), r.get(1)))
            .collect();
        by_arrival.sort();
        for (_, id, contact) in by_arrival {
            if !waiting.insert(contact) {
                ended.push(id);
            }
        }
        let from_count = rows
            .iter()
            .filter(|r| r.get::<_, String>(2) == from_key)
            .count() as u64;
        let merged = ended.len() as u64;
        execute(
            &tx,
            "UPDATE subscriptions SET status = 'cancelled', cancel_reason = 'merged_by_transfer', \
               updated_at = $3 \
             WHERE tenant_id = $1 AND subscription_id = ANY($2)",
            &[&tenant_id, &ended, &now],
        )
        .await?;
        let product: Option<String> = query_opt(
            &tx,
            "SELECT product_id FROM variants WHERE tenant_id = $1 AND variant_id = $2",
            &[&tenant_id, &to],
        )
        .await?
        .and_then(|r| r.get(0));
        let moved = execute(
            &tx,
            &format!(
                "UPDATE subscriptions s SET target_key = $3, variant_id = $4, \
                   product_id = $5, updated_at = $6 \
                 WHERE s.tenant_id = $1 AND s.target_key = $2 AND {live}"
            ),
            &[&tenant_id, &from_key, &to_key, &to, &product, &now],
        )
        .await?;
        debug_assert!(moved <= from_count);
        tx.commit().await?;
        Ok(Transferred { moved, merged })
    }
}
