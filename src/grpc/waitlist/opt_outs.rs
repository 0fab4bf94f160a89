//! A phone's consent: opt out, opt in, its history, and erasure of the phone altogether.

use super::*;
use crate::app::consent;
use crate::grpc::requests::waitlist::{OptIn, OptOut, PhoneRef};

impl WaitlistApi {
    pub(super) async fn opt_out(
        &self,
        request: Request<pb::OptOutRequest>,
    ) -> Result<Response<pb::OptOutResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let OptOut {
            tenant_id,
            phone,
            source,
            reason,
        } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let by = consent::OptOutBy::Api {
            source,
            reason: reason.as_deref(),
        };
        let cancelled = consent::opt_out(&self.state, &tenant_id, &phone, by)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::OptOutResponse {
            consent_state: pb::ConsentState::OptedOut as i32,
            cancelled_subscriptions: cancelled,
        }))
    }

    pub(super) async fn opt_in(
        &self,
        request: Request<pb::OptInRequest>,
    ) -> Result<Response<pb::OptInResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let now = self.now();
        let OptIn {
            tenant_id,
            phone,
            consent,
        } = OptIn::parse(request.into_inner(), now)?;
        let policy = self.policy(&caller, &tenant_id)?;
        let state = consent::opt_in(&self.state, &tenant_id, policy, &phone, &consent, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::OptInResponse {
            consent_state: convert::consent_state(state) as i32,
        }))
    }

    pub(super) async fn get_consent_history(
        &self,
        request: Request<pb::GetConsentHistoryRequest>,
    ) -> Result<Response<pb::GetConsentHistoryResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let PhoneRef { tenant_id, phone } = request.into_inner().try_into()?;
        let policy = self.policy(&caller, &tenant_id)?;
        let history = self
            .state
            .store
            .consent_history(&tenant_id, &phone, policy.double_opt_in)
            .await
            .map_err(ApiError::from)?;
        let (state, events) = history.unwrap_or((restock_domain::ConsentState::None, Vec::new()));
        Ok(Response::new(pb::GetConsentHistoryResponse {
            consent_state: convert::consent_state(state) as i32,
            events: events.into_iter().map(convert::consent_event).collect(),
        }))
    }

    pub(super) async fn erase_phone(
        &self,
        request: Request<pb::ErasePhoneRequest>,
    ) -> Result<Response<pb::ErasePhoneResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let PhoneRef { tenant_id, phone } = request.into_inner().try_into()?;
        self.policy(&caller, &tenant_id)?;
        let key = self.state.erasure_key.clone();
        let outcome = self
            .state
            .store
            .erase_phone(
                &tenant_id,
                &phone,
                |value| erasure::erase(&key, value),
                self.now(),
            )
            .await
            .map_err(ApiError::from)?;
        tracing::info!(phone = %phone.redacted(), erased = outcome.erased, "erasure");
        Ok(Response::new(pb::ErasePhoneResponse {
            erased: outcome.erased,
            subscriptions_erased: outcome.subscriptions,
            consent_events_erased: outcome.consent_events,
        }))
    }
}
