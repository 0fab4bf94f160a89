//! Merchandising exclusions made through the API: create, delete, list.

use super::*;
use crate::grpc::requests::eligibility::{CreateExclusion, ExclusionRef};
use restock_domain::fingerprint::Canonical;

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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let product_id = v.id("product_id", &req.product_id, false);
        let variant_id = v.id("variant_id", &req.variant_id, false);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let scope = Scope::new("ListExclusions", &req.tenant_id, &|c: Canonical| {
            c.field("product_id", &product_id)
                .field("variant_id", &variant_id)
                .field("show_inactive", req.show_inactive)
        });
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, parse_time_cursor);
        let tenant_id = v.into_result(tenant_id)?;
        self.state.tenant(&caller, &tenant_id)?;
        let size = crate::grpc::validate::page_size(req.page_size);
        let mut rows = self
            .state
            .store
            .list_exclusions(
                &tenant_id,
                product_id.as_deref(),
                variant_id.as_deref(),
                req.show_inactive,
                after,
                size + 1,
                self.state.clock.now(),
            )
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&scope, &time_cursor(last.created_at, last.exclusion_id))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListExclusionsResponse {
            exclusions: rows.into_iter().map(|r| exclusion(r, &tenant_id)).collect(),
            next_page_token,
        }))
    }
}
