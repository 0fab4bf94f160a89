//! Subscribe (idempotent, with the consent it records) and its double opt-in confirmation.

use super::*;
use crate::app;
use crate::grpc::requests::subscribe::Subscribe;
use crate::grpc::requests::waitlist::{ConfirmSubscription, SubscriptionRef};

impl WaitlistApi {
    pub(super) async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let now = self.now();
        let cmd = Subscribe::parse(request.into_inner(), now, |t| {
            self.state.tenants.get(t).map(TenantPolicy::link_hosts)
        })?;
        let policy = self.policy(&caller, &cmd.tenant_id)?;
        let outcome = app::waitlist::subscribe(&self.state, policy, cmd)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SubscribeResponse {
            subscription: Some(convert::subscription(outcome.subscription, now)),
            created: outcome.created,
            waitlist_position: outcome.position.position,
        }))
    }

    pub(super) async fn confirm_subscription(
        &self,
        request: Request<pb::ConfirmSubscriptionRequest>,
    ) -> Result<Response<pb::ConfirmSubscriptionResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let ConfirmSubscription {
            subscription:
                SubscriptionRef {
                    tenant_id,
                    subscription_id: id,
                },
            source,
        } = request.into_inner().try_into()?;
        let policy = self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let row = self
            .state
            .store
            .confirm(&tenant_id, id, source, policy.double_opt_in, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ConfirmSubscriptionResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }
}
