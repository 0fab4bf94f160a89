//! Subscribe (idempotent, with the consent it records) and its double opt-in confirmation.

use super::*;
use crate::grpc::requests::subscribe::Subscribe;
use crate::grpc::requests::waitlist::{ConfirmSubscription, SubscriptionRef};

/// Fingerprint of a request, so a reused idempotency key with another request is caught.
pub(super) fn fingerprint(req: &pb::SubscribeRequest) -> Vec<u8> {
    Sha256::digest(req.encode_to_vec()).to_vec()
}

impl WaitlistApi {
    pub(super) async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let req = request.into_inner();
        let now = self.now();
        let fingerprint = fingerprint(&req);
        let Subscribe {
            tenant_id,
            phone,
            target,
            product_id,
            variant,
            consent,
            customer_id,
            session_id,
            location_ids,
            desired_quantity,
            priority_tier,
            expires_at,
            time_zone,
            idempotency_key,
        } = Subscribe::parse(req, now, |t| {
            self.state.tenants.get(t).map(TenantPolicy::link_hosts)
        })?;
        let policy = self.policy(&caller, &tenant_id)?;
        let new = NewSubscription {
            tenant_id,
            phone,
            target,
            product_id,
            variant,
            consent,
            customer_id,
            session_id,
            location_ids,
            desired_quantity,
            priority_tier,
            expires_at: expires_at
                .unwrap_or_else(|| now + Duration::days(i64::from(policy.subscription_ttl_days))),
            time_zone,
            idempotency: idempotency_key.map(|k| (k, fingerprint)),
            double_opt_in: policy.double_opt_in,
        };
        let phone = new.phone.clone();
        let outcome = self
            .state
            .subscriber
            .subscribe(new, now)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            phone = %phone.redacted(),
            subscription_id = %outcome.subscription.subscription_id,
            created = outcome.created,
            "subscribe"
        );
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
