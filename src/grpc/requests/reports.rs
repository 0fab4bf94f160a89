//! The report RPCs' requests (served by DispatchService) as typed commands.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// The longest period a report may cover.
const MAX_PERIOD_DAYS: i64 = 400;

/// A valid GetReleaseReport.
#[derive(Debug)]
pub struct ReleaseReport {
    pub tenant_id: String,
    pub release_id: Uuid,
}

impl TryFrom<pb::GetReleaseReportRequest> for ReleaseReport {
    type Error = ApiError;
    fn try_from(req: pb::GetReleaseReportRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        let parts = tenant_id
            .zip(release_id)
            .map(|(tenant_id, release_id)| ReleaseReport {
                tenant_id,
                release_id,
            });
        v.into_result(parts)
    }
}

/// A valid GetVariantReport: a variant, over an optional window.
#[derive(Debug)]
pub struct VariantReport {
    pub tenant_id: String,
    pub variant_id: String,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

impl TryFrom<pb::GetVariantReportRequest> for VariantReport {
    type Error = ApiError;
    fn try_from(req: pb::GetVariantReportRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let variant_id = v.id("variant_id", &req.variant_id, true);
        let from = req
            .start_time
            .as_ref()
            .and_then(|t| v.timestamp("start_time", t));
        let before = req
            .end_time
            .as_ref()
            .and_then(|t| v.timestamp("end_time", t));
        if let (Some(from), Some(before)) = (from, before) {
            if before <= from {
                v.add("end_time", "must be after start_time");
            }
        }
        let parts = tenant_id
            .zip(variant_id)
            .map(|(tenant_id, variant_id)| VariantReport {
                tenant_id,
                variant_id,
                from,
                before,
            });
        v.into_result(parts)
    }
}

/// A valid GetPeriodReport: a window of at most [`MAX_PERIOD_DAYS`] days.
#[derive(Debug)]
pub struct PeriodReport {
    pub tenant_id: String,
    pub from: DateTime<Utc>,
    pub before: DateTime<Utc>,
}

impl TryFrom<pb::GetPeriodReportRequest> for PeriodReport {
    type Error = ApiError;
    fn try_from(req: pb::GetPeriodReportRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let period = super::period(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
        if let Some((from, before)) = period {
            if before - from > chrono::Duration::days(MAX_PERIOD_DAYS) {
                v.add(
                    "end_time",
                    format!("must be at most {MAX_PERIOD_DAYS} days after start_time"),
                );
            }
        }
        let parts = tenant_id
            .zip(period)
            .map(|(tenant_id, (from, before))| PeriodReport {
                tenant_id,
                from,
                before,
            });
        v.into_result(parts)
    }
}
