//! EligibilityService's requests as typed commands.

use chrono::{DateTime, Utc};
use restock_store::substitutes::Member;
use uuid::Uuid;

use restock_domain::fingerprint::Canonical;

use crate::error::ApiError;
use crate::grpc::paging::{parse_time_cursor, PageTokens, Scope};
use crate::grpc::validate::{page_size, Violations};
use crate::proto::v1 as pb;

/// Most units one level may hold (available to sell, on order, a dry run's assumption): far
/// above any real stock, and low enough that totals over locations never overflow an `i64`.
pub const MAX_UNITS: i64 = 1_000_000_000;

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

/// A valid SetSubstituteGroup: an API group id and 2 or more distinct members.
#[derive(Debug)]
pub struct SetSubstituteGroup {
    pub tenant_id: String,
    pub group_id: String,
    pub members: Vec<Member>,
}

impl TryFrom<pb::SetSubstituteGroupRequest> for SetSubstituteGroup {
    type Error = ApiError;
    fn try_from(req: pb::SetSubstituteGroupRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let group_id = group_id(&mut v, &req.group_id);
        let members = substitute_members(&mut v, &req.members);
        let parts = tenant_id
            .zip(group_id)
            .map(|(tenant_id, group_id)| SetSubstituteGroup {
                tenant_id,
                group_id,
                members,
            });
        v.into_result(parts)
    }
}

/// One substitute group of a tenant: DeleteSubstituteGroup.
#[derive(Debug)]
pub struct SubstituteGroupRef {
    pub tenant_id: String,
    pub group_id: String,
}

impl TryFrom<pb::DeleteSubstituteGroupRequest> for SubstituteGroupRef {
    type Error = ApiError;
    fn try_from(req: pb::DeleteSubstituteGroupRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        // Configured ids (with their '.') may be named, to be told why they cannot go.
        let group_id = v.id("group_id", &req.group_id, true);
        let parts = tenant_id
            .zip(group_id)
            .map(|(tenant_id, group_id)| SubstituteGroupRef {
                tenant_id,
                group_id,
            });
        v.into_result(parts)
    }
}

/// Most characters of a substitute group id.
const MAX_GROUP_ID: usize = 64;

/// An API group id: letters, digits, '-' and '_' (a '.' marks the configuration's groups).
fn group_id(v: &mut Violations, raw: &str) -> Option<String> {
    if raw.is_empty() {
        v.add("group_id", "is required");
        return None;
    }
    if raw.len() > MAX_GROUP_ID
        || !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.add(
            "group_id",
            format!("must be 1 to {MAX_GROUP_ID} letters, digits, '-' or '_'"),
        );
        return None;
    }
    Some(raw.to_string())
}

/// 2 to 100 distinct members, each a variant or a product.
fn substitute_members(v: &mut Violations, raw: &[pb::SubstituteMember]) -> Vec<Member> {
    use pb::substitute_member::Member as M;
    let max = restock_domain::tenant::MAX_SUBSTITUTE_MEMBERS;
    if raw.len() < 2 || raw.len() > max {
        v.add("members", format!("must hold 2 to {max} members"));
    }
    let mut members = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate().take(max) {
        let member = match &m.member {
            None => {
                v.add(
                    format!("members[{i}]"),
                    "a variant_id or a product_id is required",
                );
                None
            }
            Some(M::VariantId(x)) => v
                .id(&format!("members[{i}].variant_id"), x, true)
                .map(Member::Variant),
            Some(M::ProductId(x)) => v
                .id(&format!("members[{i}].product_id"), x, true)
                .map(Member::Product),
        };
        if let Some(member) = member {
            if members.contains(&member) {
                v.add(format!("members[{i}]"), "names a member already named");
            } else {
                members.push(member);
            }
        }
    }
    members
}

/// Most locations a GetStock may name.
pub const MAX_STOCK_LOCATIONS: usize = 100;

/// A valid GetStock: a variant, maybe at some locations only.
#[derive(Debug)]
pub struct GetStock {
    pub tenant_id: String,
    pub variant_id: String,
    /// Empty: every location with a stored level.
    pub location_ids: Vec<String>,
}

impl TryFrom<pb::GetStockRequest> for GetStock {
    type Error = ApiError;
    fn try_from(req: pb::GetStockRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let variant_id = v.id("variant_id", &req.variant_id, true);
        if req.location_ids.len() > MAX_STOCK_LOCATIONS {
            v.add(
                "location_ids",
                format!("at most {MAX_STOCK_LOCATIONS} locations"),
            );
        }
        for (i, l) in req.location_ids.iter().enumerate() {
            v.id(&format!("location_ids[{i}]"), l, true);
        }
        let parts = tenant_id
            .zip(variant_id)
            .map(|(tenant_id, variant_id)| GetStock {
                tenant_id,
                variant_id,
                location_ids: req.location_ids,
            });
        v.into_result(parts)
    }
}

#[cfg(test)]
mod stock_tests {
    use super::*;

    #[test]
    fn get_stock_names_every_bad_location() {
        let mut location_ids: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
        location_ids[3] = String::new();
        let req = pb::GetStockRequest {
            tenant_id: "demo".into(),
            variant_id: String::new(),
            location_ids,
        };
        let Err(ApiError::InvalidArgument(v)) = GetStock::try_from(req) else {
            panic!("not INVALID_ARGUMENT");
        };
        let fields: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["variant_id", "location_ids", "location_ids[3]"]);
    }
}

/// A page of a tenant's exclusions: ListExclusions.
#[derive(Debug)]
pub struct ListExclusions {
    pub tenant_id: String,
    pub product_id: Option<String>,
    pub variant_id: Option<String>,
    pub show_inactive: bool,
    /// At most `validate::MAX_PAGE`.
    pub page_size: i64,
    /// Where the page starts (none: the first page), opened against this very filter.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl ListExclusions {
    pub fn parse(req: pb::ListExclusionsRequest, tokens: &PageTokens) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let product_id = v.id("product_id", &req.product_id, false);
        let variant_id = v.id("variant_id", &req.variant_id, false);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let scope = Self::scope_of(&req.tenant_id, &product_id, &variant_id, req.show_inactive);
        let after = tokens.open(&mut v, &req.page_token, &scope, parse_time_cursor);
        let parts = tenant_id.map(|tenant_id| ListExclusions {
            tenant_id,
            product_id,
            variant_id,
            show_inactive: req.show_inactive,
            page_size: page_size(req.page_size),
            after,
        });
        v.into_result(parts)
    }

    /// What this list's page tokens are bound to.
    pub fn scope(&self) -> Scope<'_> {
        Self::scope_of(
            &self.tenant_id,
            &self.product_id,
            &self.variant_id,
            self.show_inactive,
        )
    }

    fn scope_of<'a>(
        tenant_id: &'a str,
        product_id: &Option<String>,
        variant_id: &Option<String>,
        show_inactive: bool,
    ) -> Scope<'a> {
        Scope::new("ListExclusions", tenant_id, &|c: Canonical| {
            c.field("product_id", product_id)
                .field("variant_id", variant_id)
                .field("show_inactive", show_inactive)
        })
    }
}

/// A page of a tenant's substitute groups: ListSubstituteGroups.
#[derive(Debug)]
pub struct ListSubstituteGroups {
    pub tenant_id: String,
    /// At most `validate::MAX_PAGE`.
    pub page_size: i64,
    /// The group id the page starts after (none: the first page).
    pub after: Option<String>,
}

impl ListSubstituteGroups {
    pub fn parse(
        req: pb::ListSubstituteGroupsRequest,
        tokens: &PageTokens,
    ) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let after = tokens.open(
            &mut v,
            &req.page_token,
            &Self::scope_of(&req.tenant_id),
            |c| Some(c.to_string()),
        );
        let parts = tenant_id.map(|tenant_id| ListSubstituteGroups {
            tenant_id,
            page_size: page_size(req.page_size),
            after,
        });
        v.into_result(parts)
    }

    /// What this list's page tokens are bound to.
    pub fn scope(&self) -> Scope<'_> {
        Self::scope_of(&self.tenant_id)
    }

    fn scope_of(tenant_id: &str) -> Scope<'_> {
        Scope::new("ListSubstituteGroups", tenant_id, &())
    }
}

#[cfg(test)]
mod tests;
