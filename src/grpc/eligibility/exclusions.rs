//! Merchandising exclusions made through the API: create, delete, list.

use super::*;
use crate::grpc::requests::eligibility::{CreateExclusion, ExclusionRef, ListExclusions};

pub(super) fn exclusion(
    row: restock_store::inventory::ExclusionRow,
    tenant_id: &str,
) -> pb::Exclusion {
    pb::Exclusion {
        exclusion_id: row.exclusion_id.to_string(),
        tenant_id: tenant_id.to_string(),
        target: match (row.product_id, row.variant_id) {
            (Some(p), _) => Some(pb::exclusion::Target::ProductId(p)),
            (None, Some(v)) => Some(pb::exclusion::Target::VariantId(v)),
            (None, None) => None,
        },
        reason: row.reason,
        creator: row.creator.unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        expire_time: row.expires_at.map(timestamp),
        delete_time: row.deleted_at.map(timestamp),
    }
}

impl EligibilityApi {
    pub(super) async fn create_exclusion(
        &self,
        request: Request<pb::CreateExclusionRequest>,
    ) -> Result<Response<pb::CreateExclusionResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let now = self.state.clock.now();
        let CreateExclusion {
            tenant_id,
            product_id,
            variant_id,
            reason,
            creator,
            expires_at,
        } = CreateExclusion::parse(request.into_inner(), now)?;
        self.state.tenant(&caller, &tenant_id)?;
        let (row, created) = self
            .state
            .store
            .create_exclusion(
                &tenant_id,
                product_id.as_deref(),
                variant_id.as_deref(),
                &reason,
                &creator,
                expires_at,
                now,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateExclusionResponse {
            exclusion: Some(exclusion(row, &tenant_id)),
            created,
        }))
    }

    pub(super) async fn delete_exclusion(
        &self,
        request: Request<pb::DeleteExclusionRequest>,
    ) -> Result<Response<pb::DeleteExclusionResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let ExclusionRef {
            tenant_id,
            exclusion_id: id,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        self.state
            .store
            .delete_exclusion(&tenant_id, id, self.state.clock.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteExclusionResponse {}))
    }

    pub(super) async fn list_exclusions(
        &self,
        request: Request<pb::ListExclusionsRequest>,
    ) -> Result<Response<pb::ListExclusionsResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let tokens = &self.state.page_tokens;
        let list = ListExclusions::parse(request.into_inner(), tokens)?;
        let tenant_id = &list.tenant_id;
        self.state.tenant(&caller, tenant_id)?;
        let size = list.page_size;
        let mut rows = self
            .state
            .store
            .list_exclusions(
                tenant_id,
                list.product_id.as_deref(),
                list.variant_id.as_deref(),
                list.show_inactive,
                list.after,
                size + 1,
                self.state.clock.now(),
            )
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(
                &list.scope(),
                &time_cursor(last.created_at, last.exclusion_id),
            )
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListExclusionsResponse {
            exclusions: rows.into_iter().map(|r| exclusion(r, tenant_id)).collect(),
            next_page_token,
        }))
    }
}
