//! EligibilityService's requests as typed commands.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// A valid CreateExclusion: a product or a variant (exactly one is set), why, by whom, until.
#[derive(Debug)]
pub struct CreateExclusion {
    pub tenant_id: String,
    pub product_id: Option<String>,
    pub variant_id: Option<String>,
    pub reason: String,
    pub creator: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreateExclusion {
    /// `now` bounds the expiry time (it must be in the future).
    pub fn parse(req: pb::CreateExclusionRequest, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let (product_id, variant_id) = match &req.target {
            None => {
                v.add("product_id", "a product_id or a variant_id is required");
                (None, None)
            }
            Some(pb::create_exclusion_request::Target::ProductId(p)) => {
                (v.id("product_id", p, true), None)
            }
            Some(pb::create_exclusion_request::Target::VariantId(x)) => {
                (None, v.id("variant_id", x, true))
            }
        };
        let reason = v.text("reason", &req.reason, 500, true);
        let creator = v.id("creator", &req.creator, true);
        let expires_at = req.expire_time.as_ref().and_then(|ts| {
            let t = v.timestamp("expire_time", ts)?;
            if t <= now {
                v.add("expire_time", "must be in the future");
                return None;
            }
            Some(t)
        });
        let parts = match (tenant_id, reason, creator) {
            (Some(tenant_id), Some(reason), Some(creator)) => Some(CreateExclusion {
                tenant_id,
                product_id,
                variant_id,
                reason,
                creator,
                expires_at,
            }),
            _ => None,
        };
        v.into_result(parts)
    }
}

/// One exclusion of a tenant: DeleteExclusion.
#[derive(Debug)]
pub struct ExclusionRef {
    pub tenant_id: String,
    pub exclusion_id: Uuid,
}

impl TryFrom<pb::DeleteExclusionRequest> for ExclusionRef {
    type Error = ApiError;
    fn try_from(req: pb::DeleteExclusionRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let id = v.uuid("exclusion_id", &req.exclusion_id, true);
        let parts = tenant_id
            .zip(id)
            .map(|(tenant_id, exclusion_id)| ExclusionRef {
                tenant_id,
                exclusion_id,
            });
        v.into_result(parts)
    }
}

/// A valid Explain: a subscription, optionally against one restock or one variant.
#[derive(Debug)]
pub struct Explain {
    pub tenant_id: String,
    pub subscription_id: Uuid,
    pub restock_id: Option<Uuid>,
    pub variant_id: Option<String>,
}

impl TryFrom<pb::ExplainRequest> for Explain {
    type Error = ApiError;
    fn try_from(req: pb::ExplainRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let subscription_id = v.uuid("subscription_id", &req.subscription_id, true);
        let restock_id = v.uuid("restock_id", &req.restock_id, false);
        let variant_id = v.id("variant_id", &req.variant_id, false);
        let parts = tenant_id
            .zip(subscription_id)
            .map(|(tenant_id, subscription_id)| Explain {
                tenant_id,
                subscription_id,
                restock_id,
                variant_id,
            });
        v.into_result(parts)
    }
}
