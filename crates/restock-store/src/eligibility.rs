//! What the eligibility engine reads: waiting subscriptions with their consent ledger, and
//! restocks. Candidates of a variant are streamed, never loaded whole, so a dry run over a
//! waitlist of any length keeps memory flat.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use restock_domain::eligibility::{LiveExclusions, SubstitutePurchase};
use restock_domain::{ConsentEventKind, SubscriptionStatus};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::cached::query_opt;
use crate::{Store, StoreError};

/// One subscription as the engine sees it.
#[derive(Debug, Clone)]
pub struct CandidateRow {
    pub subscription_id: Uuid,
    pub variant_id: Option<String>,
    pub product_id: Option<String>,
    pub status: SubscriptionStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The contact's consent ledger, oldest first.
    pub ledger: Vec<ConsentEventKind>,
    pub phone_e164: Option<String>,
    pub desired_quantity: i64,
    pub priority_tier: i32,
    pub location_ids: Vec<String>,
    pub wanted_options: BTreeMap<String, String>,
    pub time_zone: Option<String>,
    /// The latest text about the variant asked for to this phone, where the query read it.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// The latest purchase of the variant asked for by this phone or customer, where read.
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase of a close substitute of the variant asked for by this phone or
    /// customer, where read.
    pub substitute_purchase: Option<SubstitutePurchase>,
}

/// A restock as recorded.
#[derive(Debug, Clone)]
pub struct RestockRow {
    pub restock_id: Uuid,
    pub variant_id: String,
    pub product_id: Option<String>,
    pub location_id: Option<String>,
    pub excluded: bool,
    pub started_at: DateTime<Utc>,
}

pub(crate) const CANDIDATE_COLUMNS: &str = "s.subscription_id, s.variant_id, s.product_id, s.status, s.created_at, \
     s.expires_at, c.phone_e164, s.desired_quantity, s.location_ids, s.wanted_options, s.time_zone, \
     s.priority_tier, ARRAY(SELECT e.kind FROM consent_events e WHERE e.tenant_id = s.tenant_id AND e.contact_id = s.contact_id ORDER BY e.seq) AS ledger";

pub(crate) fn candidate(r: &Row) -> Result<CandidateRow, StoreError> {
    let status: String = r.get(3);
    let options: serde_json::Value = r.get(9);
    let ledger: Vec<String> = r.get(12);
    Ok(CandidateRow {
        subscription_id: r.get(0),
        variant_id: r.get(1),
        product_id: r.get(2),
        status: SubscriptionStatus::parse(&status)
            .ok_or_else(|| StoreError::Migration(format!("unknown status {status}")))?,
        created_at: r.get(4),
        expires_at: r.get(5),
        phone_e164: r.get(6),
        desired_quantity: i64::from(r.get::<_, i32>(7)),
        location_ids: r.get(8),
        wanted_options: serde_json::from_value(options).unwrap_or_default(),
        time_zone: r.get(10),
        last_notified_at: None,
        last_purchase_at: None,
        substitute_purchase: None,
        priority_tier: r.get(11),
        ledger: ledger
            .iter()
            .filter_map(|k| ConsentEventKind::parse(k))
            .collect(),
    })
}

/// The phone's latest text about, and latest purchase of, the variant in parameter `$n`.
fn history_columns(n: u8) -> String {
    format!(
        "(SELECT max(m.sent_at) FROM messages m WHERE m.tenant_id = s.tenant_id \
           AND m.contact_id = s.contact_id AND m.variant_id = ${n} AND m.sent_at IS NOT NULL \
           AND NOT EXISTS ({sold_out_click})), \
         (SELECT max(p.purchased_at) FROM purchase_lines p WHERE p.tenant_id = s.tenant_id \
           AND p.variant_id = ${n} AND (p.contact_id = s.contact_id \
           OR (s.customer_id IS NOT NULL AND p.customer_id = s.customer_id)))",
        sold_out_click = crate::dispatch::SOLD_OUT_CLICK
    )
}

fn with_history(r: &Row) -> Result<CandidateRow, StoreError> {
    let mut c = candidate(r)?;
    c.last_notified_at = r.get(13);
    c.last_purchase_at = r.get(14);
    c.substitute_purchase = substitute_purchase(r, 15);
    Ok(c)
}

/// Joins `sp`: the latest purchase by the phone or customer of subscription `s` of one of the
/// variants `substitutes` (an SQL `text[]` expression; see `substitute_variants` in V13), as
/// `sp.order_id, sp.variant_id, sp.purchased_at` (all NULL when none). The purchase indexes
/// serve it; an empty array (no substitutes, the common case) finds nothing at once.
pub(crate) fn substitute_join(tenant: &str, substitutes: &str) -> String {
    format!(
        "LEFT JOIN LATERAL (SELECT p.order_id, p.variant_id, p.purchased_at FROM purchase_lines p \
           WHERE p.tenant_id = {tenant} AND p.variant_id = ANY(({substitutes})::text[]) \
             AND (p.contact_id = s.contact_id \
               OR (s.customer_id IS NOT NULL AND p.customer_id = s.customer_id)) \
           ORDER BY p.purchased_at DESC LIMIT 1) sp ON true"
    )
}

/// The columns of [`substitute_join`].
pub(crate) const SUBSTITUTE_COLUMNS: &str = "sp.order_id, sp.variant_id, sp.purchased_at";

/// Reads [`SUBSTITUTE_COLUMNS`] from column `at` on.
pub(crate) fn substitute_purchase(r: &Row, at: usize) -> Option<SubstitutePurchase> {
    let order_id: Option<String> = r.get(at);
    Some(SubstitutePurchase {
        order_id: order_id?,
        variant_id: r.get(at + 1),
        purchased_at: r.get(at + 2),
    })
}

fn restock(r: &Row) -> RestockRow {
    RestockRow {
        restock_id: r.get(0),
        variant_id: r.get(1),
        product_id: r.get(2),
        location_id: r.get(3),
        excluded: r.get(4),
        started_at: r.get(5),
    }
}

const RESTOCK_COLUMNS: &str =
    "restock_id, variant_id, product_id, location_id, excluded, started_at";

impl Store {
    /// One subscription as a candidate.
    pub async fn candidate(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
    ) -> Result<CandidateRow, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!(
                "SELECT {CANDIDATE_COLUMNS} FROM subscriptions s JOIN contacts c \
                 ON c.tenant_id = s.tenant_id AND c.contact_id = s.contact_id \
                 WHERE s.tenant_id = $1 AND s.subscription_id = $2"
            ),
            &[&tenant_id, &subscription_id],
        )
        .await?
        .ok_or(StoreError::NotFound("subscription"))?;
        candidate(&row)
    }

    /// The subscription's phone's latest text about `variant_id` and its latest purchase of
    /// it: (last notified, last purchase).
    pub async fn history(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        variant_id: &str,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!(
                "SELECT {} FROM subscriptions s WHERE s.tenant_id = $1 AND s.subscription_id = $2",
                history_columns(3)
            ),
            &[&tenant_id, &subscription_id, &variant_id],
        )
        .await?
        .ok_or(StoreError::NotFound("subscription"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// The latest purchase of a close substitute of `variant_id` by the subscription's phone
    /// or customer, if any.
    pub async fn substitute_purchase(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        variant_id: &str,
    ) -> Result<Option<SubstitutePurchase>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!(
                "SELECT {SUBSTITUTE_COLUMNS} FROM subscriptions s {} \
                 WHERE s.tenant_id = $1 AND s.subscription_id = $2",
                substitute_join("s.tenant_id", "(SELECT substitute_variants($1, $3))")
            ),
            &[&tenant_id, &subscription_id, &variant_id],
        )
        .await?
        .ok_or(StoreError::NotFound("subscription"))?;
        Ok(substitute_purchase(&row, 0))
    }

    /// The live subscriptions a restock of `variant_id` (of `product_id`) may serve: those of
    /// the variant, and the product-level ones of its product, in waitlist order (tier, then
    /// arrival). Streamed from the database.
    pub async fn candidates(
        &self,
        tenant_id: &str,
        variant_id: &str,
        product_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<CandidateRow, StoreError>> + Send + 'static, StoreError>
    {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {CANDIDATE_COLUMNS}, {}, {SUBSTITUTE_COLUMNS} FROM subscriptions s JOIN contacts c \
             ON c.tenant_id = s.tenant_id AND c.contact_id = s.contact_id {} \
             WHERE s.tenant_id = $1 AND s.status IN ('pending_confirmation', 'active', 'notified') \
               AND (s.target_key = $2 OR ($3::text IS NOT NULL AND s.variant_id IS NULL AND s.product_id = $3)) \
             ORDER BY s.priority_tier DESC, s.seq",
            history_columns(4),
            substitute_join("s.tenant_id", "(SELECT substitute_variants($1, $4))")
        );
        let target_key = format!("v:{variant_id}");
        let statement = client.prepare_cached(&sql).await?;
        let product_id = product_id.map(str::to_string);
        let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = vec![
            Box::new(tenant_id.to_string()),
            Box::new(target_key),
            Box::new(product_id),
            Box::new(variant_id.to_string()),
        ];
        let rows = client
            .query_raw(
                &statement,
                params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)),
            )
            .await?;
        // The pooled connection lives as long as the stream does.
        Ok(rows.map_err(StoreError::from).and_then(move |r| {
            let _keep = &client;
            futures_util::future::ready(with_history(&r))
        }))
    }

    /// A restock by id.
    pub async fn restock(
        &self,
        tenant_id: &str,
        restock_id: Uuid,
    ) -> Result<RestockRow, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!(
                "SELECT {RESTOCK_COLUMNS} FROM restocks WHERE tenant_id = $1 AND restock_id = $2"
            ),
            &[&tenant_id, &restock_id],
        )
        .await?
        .ok_or(StoreError::NotFound("restock"))?;
        Ok(restock(&row))
    }

    /// The latest restock of a variant, if any.
    pub async fn latest_restock(
        &self,
        tenant_id: &str,
        variant_id: &str,
    ) -> Result<Option<RestockRow>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!(
                "SELECT {RESTOCK_COLUMNS} FROM restocks WHERE tenant_id = $1 AND variant_id = $2 \
                 ORDER BY started_at DESC, location_id NULLS FIRST LIMIT 1"
            ),
            &[&tenant_id, &variant_id],
        )
        .await?;
        Ok(row.as_ref().map(restock))
    }
}

impl Store {
    /// The variants of a product with their options and total available-to-sell, most stock
    /// first.
    pub async fn product_variants(
        &self,
        tenant_id: &str,
        product_id: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = crate::cached::query(
            &client,
            "SELECT v.variant_id, v.options, COALESCE(s.available, 0) FROM variants v \
             LEFT JOIN variant_stock s ON s.tenant_id = v.tenant_id AND s.variant_id = v.variant_id \
             WHERE v.tenant_id = $1 AND v.product_id = $2 ORDER BY 3 DESC, 1",
            &[&tenant_id, &product_id],
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let options: serde_json::Value = r.get(1);
                (
                    r.get(0),
                    serde_json::from_value(options).unwrap_or_default(),
                    r.get(2),
                )
            })
            .collect())
    }

    /// Which API exclusions are in force at `now` for the variant and its product.
    pub async fn live_exclusions(
        &self,
        tenant_id: &str,
        variant_id: &str,
        product_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<LiveExclusions, StoreError> {
        live_exclusions(
            &self.client().await?,
            tenant_id,
            variant_id,
            product_id,
            now,
        )
        .await
    }
}

/// Which API exclusions are in force at `now` for the variant and its product: the one query
/// behind Explain, DryRun, the planner and the sender.
pub(crate) async fn live_exclusions(
    c: &impl deadpool_postgres::GenericClient,
    tenant_id: &str,
    variant_id: &str,
    product_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<LiveExclusions, StoreError> {
    let row = crate::cached::query_one(
        c,
        "SELECT COALESCE(bool_or(product_id IS NOT NULL), false), COALESCE(bool_or(variant_id IS NOT NULL), false) \
         FROM exclusions WHERE tenant_id = $1 AND deleted_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $4) AND (variant_id = $2 OR product_id = $3)",
        &[&tenant_id, &variant_id, &product_id, &now],
    )
    .await?;
    Ok(LiveExclusions {
        product: row.get(0),
        variant: row.get(1),
    })
}
