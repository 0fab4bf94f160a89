//! A waitlist's order: moving places between subscriptions, and propensity scores.

use super::*;
use crate::grpc::requests::waitlist::TransferWaitlist;

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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        if req.scores.is_empty() || req.scores.len() > MAX_SCORES {
            v.add("scores", format!("must hold 1 to {MAX_SCORES} scores"));
        }
        let mut scores = Vec::with_capacity(req.scores.len().min(MAX_SCORES));
        let mut seen = std::collections::HashSet::new();
        for (i, s) in req.scores.iter().enumerate().take(MAX_SCORES) {
            let id = v.uuid(
                &format!("scores[{i}].subscription_id"),
                &s.subscription_id,
                true,
            );
            if let Some(id) = id {
                if !seen.insert(id) {
                    v.add(
                        format!("scores[{i}].subscription_id"),
                        "names a subscription already scored in this request",
                    );
                }
                scores.push((id, s.score));
            }
            if !(s.score.is_finite() && (0.0..=1.0).contains(&s.score)) {
                v.add(
                    format!("scores[{i}].score"),
                    "must be a finite number from 0 to 1",
                );
            }
        }
        let tenant_id = v.into_result(tenant_id)?;
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
