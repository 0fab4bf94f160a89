//! A waitlist's order: moving places between subscriptions, and propensity scores.

use super::*;
use crate::grpc::requests::waitlist::{SetPropensityScores, TransferWaitlist};

impl WaitlistApi {
    pub(super) async fn transfer_waitlist(
        &self,
        request: Request<pb::TransferWaitlistRequest>,
    ) -> Result<Response<pb::TransferWaitlistResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let TransferWaitlist {
            tenant_id,
            from_variant_id: from,
            to_variant_id: to,
        } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let done = self
            .state
            .store
            .transfer_waitlist(&tenant_id, &from, &to, self.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            tenant_id,
            from,
            to,
            moved = done.moved,
            merged = done.merged,
            "waitlist transferred"
        );
        Ok(Response::new(pb::TransferWaitlistResponse {
            moved_count: done.moved,
            merged_count: done.merged,
        }))
    }

    pub(super) async fn set_propensity_scores(
        &self,
        request: Request<pb::SetPropensityScoresRequest>,
    ) -> Result<Response<pb::SetPropensityScoresResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SetPropensityScores { tenant_id, scores } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let updated = self
            .state
            .store
            .set_propensity_scores(&tenant_id, &scores, self.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SetPropensityScoresResponse {
            updated_count: updated,
        }))
    }
}
