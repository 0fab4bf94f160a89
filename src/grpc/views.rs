//! RecordProductViews: the storefront's product-page views per day, aggregate only, each
//! (target, day, source) replacing its earlier count.

use std::collections::HashSet;

use chrono::{Duration, NaiveDate};
use restock_store::views::{ViewCount, ViewTarget};

use super::validate::Violations;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::state::AppState;

const MAX_COUNTS: usize = 1_000;
const MAX_SOURCE: usize = 64;
const MAX_VIEWS: u64 = 1_000_000_000_000;
/// How far back a day may be corrected: as far as a period report reaches.
const MAX_AGE_DAYS: i64 = 400;

pub async fn record(
    state: &AppState,
    caller: &crate::auth::Caller,
    req: pb::RecordProductViewsRequest,
) -> Result<pb::RecordProductViewsResponse, ApiError> {
    let mut v = Violations::default();
    let tenant_id = v.id("tenant_id", &req.tenant_id, true);
    // The tenant's today bounds the days; an unknown tenant is NOT_FOUND once the input is
    // valid, so only a known tenant's zone is used here.
    let today = tenant_id
        .as_deref()
        .and_then(|t| state.tenant(caller, t).ok())
        .and_then(|p| p.zone().ok())
        .map(|tz| state.clock.now().with_timezone(&tz).date_naive());
    if req.counts.is_empty() || req.counts.len() > MAX_COUNTS {
        v.add("counts", format!("must hold 1 to {MAX_COUNTS} counts"));
    }
    let mut counts = Vec::with_capacity(req.counts.len());
    let mut seen = HashSet::new();
    for (i, c) in req.counts.iter().enumerate() {
        let f = |name: &str| format!("counts[{i}].{name}");
        let target = match (c.variant_id.is_empty(), c.product_id.is_empty()) {
            (false, true) => v
                .id(&f("variant_id"), &c.variant_id, true)
                .map(ViewTarget::Variant),
            (true, false) => v
                .id(&f("product_id"), &c.product_id, true)
                .map(ViewTarget::Product),
            (true, true) => {
                v.add(f("variant_id"), "variant_id or product_id is required");
                None
            }
            (false, false) => {
                v.add(f("product_id"), "must be empty when variant_id is given");
                None
            }
        };
        let day = match NaiveDate::parse_from_str(&c.day, "%Y-%m-%d") {
            Err(_) if c.day.is_empty() => {
                v.add(f("day"), "is required");
                None
            }
            Err(_) => {
                v.add(f("day"), "must be an ISO 8601 date such as 2026-11-28");
                None
            }
            Ok(day) => match today {
                Some(today) if day > today + Duration::days(1) => {
                    v.add(f("day"), "must not be after tomorrow");
                    None
                }
                Some(today) if day < today - Duration::days(MAX_AGE_DAYS) => {
                    v.add(f("day"), format!("must be at most {MAX_AGE_DAYS} days ago"));
                    None
                }
                _ => Some(day),
            },
        };
        let source = if c.source.is_empty() {
            v.add(f("source"), "is required");
            None
        } else if c.source.len() > MAX_SOURCE
            || !c
                .source
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            v.add(
                f("source"),
                format!(
                    "must be at most {MAX_SOURCE} letters, digits, '-', '_' or '.' (for example \"web\")"
                ),
            );
            None
        } else {
            Some(c.source.clone())
        };
        if c.view_count > MAX_VIEWS {
            v.add(f("view_count"), format!("must be at most {MAX_VIEWS}"));
        }
        if let (Some(target), Some(day), Some(source)) = (target, day, source) {
            if !seen.insert((target.clone(), day, source.clone())) {
                v.add(
                    f("day"),
                    "repeats the variant or product, day and source of an earlier count",
                );
            }
            counts.push(ViewCount {
                target,
                day,
                source,
                views: c.view_count.min(MAX_VIEWS) as i64,
            });
        }
    }
    v.finish()?;
    let Some(tenant_id) = tenant_id else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    state.tenant(caller, &tenant_id)?;
    let n = state
        .store
        .record_product_views(&tenant_id, &counts, state.clock.now())
        .await?;
    Ok(pb::RecordProductViewsResponse {
        recorded_count: n as u32,
    })
}
