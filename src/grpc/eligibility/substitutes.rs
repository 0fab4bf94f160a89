//! Substitute groups: variants that may stand in for one another in a restock text.

use super::*;
use crate::grpc::requests::eligibility::{
    ListSubstituteGroups, SetSubstituteGroup, SubstituteGroupRef,
};

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
        let SetSubstituteGroup {
            tenant_id,
            group_id,
            members,
        } = request.into_inner().try_into()?;
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
        let tokens = &self.state.page_tokens;
        let list = ListSubstituteGroups::parse(request.into_inner(), tokens)?;
        let tenant_id = &list.tenant_id;
        self.state.tenant(&caller, tenant_id)?;
        let size = list.page_size;
        let mut rows = self
            .state
            .store
            .list_substitute_groups(tenant_id, list.after.as_deref(), size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&list.scope(), &last.group_id)
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSubstituteGroupsResponse {
            groups: rows
                .into_iter()
                .map(|r| substitute_group(r, tenant_id))
                .collect(),
            next_page_token,
        }))
    }

    pub(super) async fn delete_substitute_group(
        &self,
        request: Request<pb::DeleteSubstituteGroupRequest>,
    ) -> Result<Response<pb::DeleteSubstituteGroupResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SubstituteGroupRef {
            tenant_id,
            group_id,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        self.state
            .store
            .delete_substitute_group(&tenant_id, &group_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteSubstituteGroupResponse {}))
    }
}
