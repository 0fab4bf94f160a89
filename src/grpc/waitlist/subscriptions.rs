//! One shopper's subscriptions: unsubscribe, get, list, and the place in a waitlist.

use super::*;
use crate::grpc::requests::waitlist::SubscriptionRef;
use restock_domain::fingerprint::Canonical;

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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let filter = ListFilter {
            variant_id: v.id("variant_id", &req.variant_id, false),
            product_id: v.id("product_id", &req.product_id, false),
            phone: (!req.phone_number.is_empty())
                .then(|| {
                    v.phone(
                        "phone_number",
                        "default_region",
                        &req.phone_number,
                        &req.default_region,
                    )
                })
                .flatten(),
            customer_id: v.id("customer_id", &req.customer_id, false),
            status: v
                .enumeration::<pb::SubscriptionStatus>("status", req.status, false)
                .and_then(convert::status),
        };
        // The token is bound to the tenant and the filters it was issued for.
        let scope = Scope::new("ListSubscriptions", &req.tenant_id, &|c: Canonical| {
            c.field("variant_id", &filter.variant_id)
                .field("product_id", &filter.product_id)
                .field("phone", filter.phone.as_ref().map(Phone::e164))
                .field("customer_id", &filter.customer_id)
                .field("status", filter.status)
        });
        let tokens = &self.state.page_tokens;
        let after = tokens
            .open(&mut v, &req.page_token, &scope, |c| c.parse::<i64>().ok())
            .unwrap_or(0);
        let tenant_id = v.into_result(tenant_id)?;
        self.policy(&caller, &tenant_id)?;
        let size = crate::grpc::validate::page_size(req.page_size);
        let now = self.now();
        let mut rows = self
            .state
            .store
            .list_subscriptions(&tenant_id, &filter, after, size + 1, now)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            tokens.issue(&scope, &rows.last().expect("a full page").seq.to_string())
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
