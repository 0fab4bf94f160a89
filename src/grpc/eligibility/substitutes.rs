//! Substitute groups: variants that may stand in for one another in a restock text.

use super::*;

/// Most characters of a substitute group id.
pub(super) const MAX_GROUP_ID: usize = 64;

/// An API group id: letters, digits, '-' and '_' (a '.' marks the configuration's groups).
pub(super) fn group_id(v: &mut Violations, raw: &str) -> Option<String> {
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
pub(super) fn substitute_members(v: &mut Violations, raw: &[pb::SubstituteMember]) -> Vec<Member> {
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

pub(super) fn substitute_group(row: GroupRow, tenant_id: &str) -> pb::SubstituteGroup {
    use pb::substitute_member::Member as M;
    pb::SubstituteGroup {
        group_id: row.group_id,
        tenant_id: tenant_id.to_string(),
        members: row
            .members
            .into_iter()
            .map(|m| pb::SubstituteMember {
                member: Some(match m {
                    Member::Variant(x) => M::VariantId(x),
                    Member::Product(x) => M::ProductId(x),
                }),
            })
            .collect(),
        configured: row.configured,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

impl EligibilityApi {
    pub(super) async fn set_substitute_group(
        &self,
        request: Request<pb::SetSubstituteGroupRequest>,
    ) -> Result<Response<pb::SetSubstituteGroupResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let group_id = group_id(&mut v, &req.group_id);
        let members = substitute_members(&mut v, &req.members);
        let (tenant_id, group_id) = v.into_result(tenant_id.zip(group_id))?;
        self.state.tenant(&caller, &tenant_id)?;
        let (row, created) = self
            .state
            .store
            .set_substitute_group(&tenant_id, &group_id, &members, self.state.clock.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SetSubstituteGroupResponse {
            group: Some(substitute_group(row, &tenant_id)),
            created,
        }))
    }

    pub(super) async fn list_substitute_groups(
        &self,
        request: Request<pb::ListSubstituteGroupsRequest>,
    ) -> Result<Response<pb::ListSubstituteGroupsResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let scope = Scope::new("ListSubstituteGroups", &req.tenant_id, &());
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, |c| Some(c.to_string()));
        let tenant_id = v.into_result(tenant_id)?;
        self.state.tenant(&caller, &tenant_id)?;
        let size = crate::grpc::validate::page_size(req.page_size);
        let mut rows = self
            .state
            .store
            .list_substitute_groups(&tenant_id, after.as_deref(), size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&scope, &last.group_id)
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSubstituteGroupsResponse {
            groups: rows
                .into_iter()
                .map(|r| substitute_group(r, &tenant_id))
                .collect(),
            next_page_token,
        }))
    }

    pub(super) async fn delete_substitute_group(
        &self,
        request: Request<pb::DeleteSubstituteGroupRequest>,
    ) -> Result<Response<pb::DeleteSubstituteGroupResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        // Configured ids (with their '.') may be named, to be told why they cannot go.
        let group_id = v.id("group_id", &req.group_id, true);
        let (tenant_id, group_id) = v.into_result(tenant_id.zip(group_id))?;
        self.state.tenant(&caller, &tenant_id)?;
        self.state
            .store
            .delete_substitute_group(&tenant_id, &group_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteSubstituteGroupResponse {}))
    }
}
