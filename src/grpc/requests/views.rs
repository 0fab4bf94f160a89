//! RecordProductViews's request as a typed command: every count checked (its target, day,
//! source and number), every bad field reported at once.

use std::collections::HashSet;

use chrono::{Duration, NaiveDate};
use restock_store::views::{ViewCount, ViewTarget};

use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// A valid RecordProductViews: the use case's command, built from the request here.
pub use crate::app::views::RecordProductViews;

pub const MAX_COUNTS: usize = 1_000;
pub const MAX_SOURCE: usize = 64;
pub const MAX_VIEWS: u64 = 1_000_000_000_000;
/// How far back a day may be corrected: as far as a period report reaches.
pub const MAX_AGE_DAYS: i64 = 400;

impl RecordProductViews {
    /// `today` answers a (well-formed) tenant's today, which bounds the days; `None` (a tenant
    /// not known to the caller, answered after parsing) leaves them unbounded.
    pub fn parse(
        req: pb::RecordProductViewsRequest,
        today: impl FnOnce(&str) -> Option<NaiveDate>,
    ) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let today = tenant_id.as_deref().and_then(today);
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
        let parts = tenant_id.map(|tenant_id| RecordProductViews { tenant_id, counts });
        v.into_result(parts)
    }
}

#[cfg(test)]
mod tests;
