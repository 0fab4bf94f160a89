//! One shopper's subscriptions: unsubscribe, get, list, and the place in a waitlist.

use super::*;
use crate::grpc::requests::waitlist::{ListSubscriptions, SubscriptionRef};

impl WaitlistApi {
    pub(super) async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SubscriptionRef {
            tenant_id,
            subscription_id: id,
        } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let row = self
            .state
            .store
            .unsubscribe(&tenant_id, id, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::UnsubscribeResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }

    pub(super) async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SubscriptionRef {
            tenant_id,
            subscription_id: id,
        } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let (row, _) = self
            .state
            .store
            .get_subscription(&tenant_id, id, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }

    pub(super) async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let tokens = &self.state.page_tokens;
        let list = ListSubscriptions::parse(request.into_inner(), tokens)?;
        self.policy(&caller, &list.tenant_id)?;
        let size = list.page_size;
        let now = self.now();
        let mut rows = self
            .state
            .store
            .list_subscriptions(&list.tenant_id, &list.filter, list.after, size + 1, now)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            tokens.issue(
                &list.scope(),
                &rows.last().expect("a full page").seq.to_string(),
            )
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: rows
                .into_iter()
                .map(|r| convert::subscription(r, now))
                .collect(),
            next_page_token,
        }))
    }

    pub(super) async fn get_waitlist_position(
        &self,
        request: Request<pb::GetWaitlistPositionRequest>,
    ) -> Result<Response<pb::GetWaitlistPositionResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SubscriptionRef {
            tenant_id,
            subscription_id: id,
        } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let pos = self
            .state
            .store
            .waitlist_position(&tenant_id, id, self.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetWaitlistPositionResponse {
            position: pos.position,
            waiting_count: pos.waiting,
        }))
    }
}
