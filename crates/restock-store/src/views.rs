//! Product-page views per day, as the storefront counts them: aggregates keyed by (target, day,
//! source), a later count replacing an earlier one.

use chrono::{DateTime, NaiveDate, Utc};

use crate::cached::execute;
use crate::{Store, StoreError};

/// What was viewed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ViewTarget {
    /// A variant's page (the variant preselected).
    Variant(String),
    /// A product page with no variant chosen.
    Product(String),
}

impl ViewTarget {
    fn key(&self) -> String {
        match self {
            ViewTarget::Variant(v) => format!("v:{v}"),
            ViewTarget::Product(p) => format!("p:{p}"),
        }
    }
}

/// One day's views of one target from one source.
#[derive(Debug, Clone)]
pub struct ViewCount {
    pub target: ViewTarget,
    pub day: NaiveDate,
    pub source: String,
    pub views: i64,
}

impl Store {
    /// Writes `counts` in one statement, each replacing what its key held; answers the rows
    /// written. Keys must be distinct (a statement cannot update one row twice).
    pub async fn record_product_views(
        &self,
        tenant_id: &str,
        counts: &[ViewCount],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut keys = Vec::with_capacity(counts.len());
        let mut variants = Vec::with_capacity(counts.len());
        let mut products = Vec::with_capacity(counts.len());
        let mut days = Vec::with_capacity(counts.len());
        let mut sources = Vec::with_capacity(counts.len());
        let mut views = Vec::with_capacity(counts.len());
        for c in counts {
            keys.push(c.target.key());
            let (v, p) = match &c.target {
                ViewTarget::Variant(v) => (Some(v.as_str()), None),
                ViewTarget::Product(p) => (None, Some(p.as_str())),
            };
            variants.push(v);
            products.push(p);
            days.push(c.day);
            sources.push(c.source.as_str());
            views.push(c.views);
        }
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO product_views (tenant_id, target_key, variant_id, product_id, day, source, view_count, recorded_at) \
             SELECT $1, k, v, p, d, s, n, $8 \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::date[], $6::text[], $7::bigint[]) AS u(k, v, p, d, s, n) \
             ON CONFLICT (tenant_id, target_key, day, source) \
             DO UPDATE SET view_count = EXCLUDED.view_count, recorded_at = EXCLUDED.recorded_at",
            &[&tenant_id, &keys, &variants, &products, &days, &sources, &views, &now],
        )
        .await
    }
}
