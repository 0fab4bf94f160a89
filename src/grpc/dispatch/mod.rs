//! DispatchService: releases (get, list, watch, pause, resume, cancel) and their messages (get,
//! list); purchases and attribution reports live in their own modules.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use restock_domain::eligibility::Reason;
use restock_domain::waves::Strategy;
use restock_domain::{MessageStatus, ReleaseState, TenantPolicy, WaveState};
use restock_store::dispatch::Steer;
use restock_store::releases::{MessageCursor, MessageView, ReleaseView, Tally};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert::{decision, timestamp};
use super::paging::{parse_time_cursor, time_cursor, Scope};
use crate::app::releases::{self as release_cases, SteerError};
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::proto::v1::dispatch_service_server::DispatchService;
use crate::state::AppState;

mod messages;
mod releases;
mod views;

pub(crate) use messages::parse_message_cursor;
use views::*;
pub(crate) use views::{message_status_of, release_state_of};

/// The service.
pub struct DispatchApi {
    state: Arc<AppState>,
}

impl DispatchApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// A release as the API shows it.
    async fn release(&self, tenant_id: &str, release_id: Uuid) -> Result<pb::Release, ApiError> {
        let view = release_cases::get(&self.state, tenant_id, release_id).await?;
        Ok(self.view(&view))
    }

    /// A release as read, as the API shows it (under its tenant's policy).
    fn view(&self, v: &ReleaseView) -> pb::Release {
        Self::view_of(&self.state, v)
    }

    fn view_of(state: &AppState, v: &ReleaseView) -> pb::Release {
        release(v, state.tenants.get(&v.tenant_id))
    }

    /// Pauses, resumes or cancels a release, then answers it as it stands.
    async fn steer(
        &self,
        tenant_id: &str,
        release_id: Uuid,
        steer: Steer,
        reason: &str,
    ) -> Result<pb::Release, ApiError> {
        let view = release_cases::steer(&self.state, tenant_id, release_id, steer, reason)
            .await
            .map_err(|e| match e {
                SteerError::Store(e) => ApiError::from(e),
                e @ SteerError::Refused { .. } => ApiError::FailedPrecondition {
                    kind: "STATE",
                    subject: "release_id".into(),
                    description: e.to_string(),
                },
            })?;
        Ok(self.view(&view))
    }
}

// ---- Conversions between stored names and the API's enums.

// ---- Releases and messages as the API shows them.

// ---- Page cursors (the tokens around them are `super::paging`'s).

// ---- Validation shared by the RPCs.

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchReleaseResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DispatchService for DispatchApi {
    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::GetReleaseResponse>, Status> {
        DispatchApi::get_release(self, request).await
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        DispatchApi::list_releases(self, request).await
    }

    async fn watch_release(
        &self,
        request: Request<pb::WatchReleaseRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        DispatchApi::watch_release(self, request).await
    }

    async fn pause_release(
        &self,
        request: Request<pb::PauseReleaseRequest>,
    ) -> Result<Response<pb::PauseReleaseResponse>, Status> {
        DispatchApi::pause_release(self, request).await
    }

    async fn resume_release(
        &self,
        request: Request<pb::ResumeReleaseRequest>,
    ) -> Result<Response<pb::ResumeReleaseResponse>, Status> {
        DispatchApi::resume_release(self, request).await
    }

    async fn cancel_release(
        &self,
        request: Request<pb::CancelReleaseRequest>,
    ) -> Result<Response<pb::CancelReleaseResponse>, Status> {
        DispatchApi::cancel_release(self, request).await
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        DispatchApi::get_message(self, request).await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        DispatchApi::list_messages(self, request).await
    }

    async fn record_purchase(
        &self,
        request: Request<pb::RecordPurchaseRequest>,
    ) -> Result<Response<pb::RecordPurchaseResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::purchases::record(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn export_messages(
        &self,
        request: Request<pb::ExportMessagesRequest>,
    ) -> Result<Response<super::export::ExportStream>, Status> {
        DispatchApi::export_messages(self, request).await
    }

    async fn record_product_views(
        &self,
        request: Request<pb::RecordProductViewsRequest>,
    ) -> Result<Response<pb::RecordProductViewsResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::views::record(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_release_report(
        &self,
        request: Request<pb::GetReleaseReportRequest>,
    ) -> Result<Response<pb::GetReleaseReportResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::reports::release(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_variant_report(
        &self,
        request: Request<pb::GetVariantReportRequest>,
    ) -> Result<Response<pb::GetVariantReportResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::reports::variant(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_period_report(
        &self,
        request: Request<pb::GetPeriodReportRequest>,
    ) -> Result<Response<pb::GetPeriodReportResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::reports::period(&self.state, &caller, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::messages::{message_cursor, parse_message_cursor};
    use super::*;
    use chrono::{DateTime, Utc};

    fn tally(wave: Option<i32>, status: &str, reason: Option<&str>, n: i64, seg: i64) -> Tally {
        Tally {
            wave,
            status: MessageStatus::parse(status).expect("a stored status"),
            reason: reason.map(str::to_string),
            messages: n,
            segments: seg,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn counts_partition_by_status_and_list_reasons() {
        let t = [
            tally(Some(1), "sent", None, 3, 6),
            tally(Some(1), "delivered", None, 2, 2),
            tally(Some(1), "failed", None, 1, 0),
            tally(None, "held_out", Some("holdout"), 4, 0),
            tally(Some(2), "deferred", Some("quiet_hours"), 5, 0),
            tally(None, "skipped", Some("release_cancelled"), 2, 0),
            tally(None, "skipped", Some("template_too_long"), 1, 0),
        ];
        let c = counts(t.iter());
        assert_eq!(c.recipient_count, 18);
        assert_eq!(c.texted_count, 5);
        assert_eq!(c.segment_count, 8);
        assert_eq!(c.skipped_count, 3);
        let reasons: Vec<(i32, u64)> = c
            .skipped_by_reason
            .iter()
            .map(|r| (r.reason, r.count))
            .collect();
        assert_eq!(
            reasons,
            [
                (pb::ReasonCode::Holdout as i32, 4),
                (pb::ReasonCode::ReleaseCancelled as i32, 2)
            ]
        );
        assert_eq!(
            c.deferred_by_reason,
            [pb::ReasonCount {
                reason: pb::ReasonCode::QuietHours as i32,
                count: 5
            }]
        );
    }

    #[test]
    fn message_cursors_round_trip_in_their_own_order_only() {
        let cursor = message_cursor(MessageCursor::Plan(None, Uuid::nil()));
        assert_eq!(
            parse_message_cursor(&cursor, true),
            Some(MessageCursor::Plan(None, Uuid::nil()))
        );
        assert_eq!(parse_message_cursor(&cursor, false), None);
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let cursor = message_cursor(MessageCursor::Newest(t, Uuid::nil()));
        assert_eq!(
            parse_message_cursor(&cursor, false),
            Some(MessageCursor::Newest(t, Uuid::nil()))
        );
    }

    #[test]
    fn stored_names_map_to_api_enums() {
        assert_eq!(encoding(Some("GSM-7")), pb::MessageEncoding::Gsm7);
        assert_eq!(encoding(Some("ucs2")), pb::MessageEncoding::Ucs2);
        assert_eq!(
            reason_code(Some("tenant_unknown")),
            pb::ReasonCode::Unspecified
        );
        assert_eq!(
            reason_code(Some("frequency_cap_phone")),
            pb::ReasonCode::FrequencyCapPhone
        );
        for &status in MessageStatus::VARIANTS {
            assert_eq!(message_status_of(message_status(status)), Some(status));
        }
        assert_eq!(message_status_of(pb::MessageStatus::Unspecified), None);
        for &state in ReleaseState::VARIANTS {
            assert_eq!(release_state_of(release_state(state)), Some(state));
        }
        assert_eq!(release_state_of(pb::ReleaseState::Unspecified), None);
    }
}
