//! Merchandising exclusions made through the API: create, delete, list.

use super::*;

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
        let req = request.into_inner();
        let now = self.state.clock.now();
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
        let (tenant_id, (reason, creator)) = v.into_result(tenant_id.zip(reason.zip(creator)))?;
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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let id = v.uuid("exclusion_id", &req.exclusion_id, true);
        let (tenant_id, id) = v.into_result(tenant_id.zip(id))?;
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
        let scope = Scope::new(
            "ListExclusions",
            &req.tenant_id,
            &(&product_id, &variant_id, req.show_inactive),
        );
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
