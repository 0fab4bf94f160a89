//! WaitlistService: validates each request whole, then calls the store. See the proto for the
//! semantics of every RPC.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use restock_domain::{erasure, TenantPolicy};
use tonic::{Request, Response, Status};

use super::convert;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::proto::v1::waitlist_service_server::WaitlistService;
use crate::state::AppState;

mod opt_outs;
mod ordering;
mod subscribe;
mod subscriptions;

/// The service.
pub struct WaitlistApi {
    state: Arc<AppState>,
}

impl WaitlistApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    fn policy(&self, caller: &Caller, tenant_id: &str) -> Result<&TenantPolicy, ApiError> {
        self.state.tenant(caller, tenant_id)
    }

    fn now(&self) -> DateTime<Utc> {
        self.state.clock.now()
    }
}

#[tonic::async_trait]
impl WaitlistService for WaitlistApi {
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        WaitlistApi::subscribe(self, request).await
    }

    async fn confirm_subscription(
        &self,
        request: Request<pb::ConfirmSubscriptionRequest>,
    ) -> Result<Response<pb::ConfirmSubscriptionResponse>, Status> {
        WaitlistApi::confirm_subscription(self, request).await
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        WaitlistApi::unsubscribe(self, request).await
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        WaitlistApi::get_subscription(self, request).await
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        WaitlistApi::list_subscriptions(self, request).await
    }

    async fn get_waitlist_position(
        &self,
        request: Request<pb::GetWaitlistPositionRequest>,
    ) -> Result<Response<pb::GetWaitlistPositionResponse>, Status> {
        WaitlistApi::get_waitlist_position(self, request).await
    }

    async fn opt_out(
        &self,
        request: Request<pb::OptOutRequest>,
    ) -> Result<Response<pb::OptOutResponse>, Status> {
        WaitlistApi::opt_out(self, request).await
    }

    async fn opt_in(
        &self,
        request: Request<pb::OptInRequest>,
    ) -> Result<Response<pb::OptInResponse>, Status> {
        WaitlistApi::opt_in(self, request).await
    }

    async fn get_consent_history(
        &self,
        request: Request<pb::GetConsentHistoryRequest>,
    ) -> Result<Response<pb::GetConsentHistoryResponse>, Status> {
        WaitlistApi::get_consent_history(self, request).await
    }

    async fn erase_phone(
        &self,
        request: Request<pb::ErasePhoneRequest>,
    ) -> Result<Response<pb::ErasePhoneResponse>, Status> {
        WaitlistApi::erase_phone(self, request).await
    }

    async fn transfer_waitlist(
        &self,
        request: Request<pb::TransferWaitlistRequest>,
    ) -> Result<Response<pb::TransferWaitlistResponse>, Status> {
        WaitlistApi::transfer_waitlist(self, request).await
    }

    async fn set_propensity_scores(
        &self,
        request: Request<pb::SetPropensityScoresRequest>,
    ) -> Result<Response<pb::SetPropensityScoresResponse>, Status> {
        WaitlistApi::set_propensity_scores(self, request).await
    }
}
