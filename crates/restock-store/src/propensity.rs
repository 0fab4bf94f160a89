//! Propensity scores: a caller's (a model service's) estimate per subscription that the
//! shopper buys when texted, which orders releases of tenants with `release_order =
//! tier_score_arrival` (see planning in `dispatch`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cached::{execute, query_opt};
use crate::{Store, StoreError};

impl Store {
    /// Sets the propensity scores of a batch of the tenant's subscriptions, all or none: an
    /// unknown subscription sets nothing and answers `NotFound`.
    pub async fn set_propensity_scores(
        &self,
        tenant_id: &str,
        scores: &[(Uuid, f32)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids: Vec<Uuid> = scores.iter().map(|(id, _)| *id).collect();
        let values: Vec<f32> = scores.iter().map(|(_, s)| *s).collect();
        let updated = execute(
            &tx,
            "UPDATE subscriptions s SET propensity_score = u.score, updated_at = $4 \
             FROM UNNEST($2::uuid[], $3::real[]) AS u(id, score) \
             WHERE s.tenant_id = $1 AND s.subscription_id = u.id",
            &[&tenant_id, &ids, &values, &now],
        )
        .await?;
        if updated != scores.len() as u64 {
            return Err(StoreError::NotFound("subscription"));
        }
        tx.commit().await?;
        Ok(updated)
    }
}

impl Store {
    /// The subscription's propensity score, if one was set.
    pub async fn propensity_score(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
    ) -> Result<Option<f32>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT propensity_score FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2",
            &[&tenant_id, &subscription_id],
        )
        .await?
        .ok_or(StoreError::NotFound("subscription"))?;
        Ok(row.get(0))
    }
}
