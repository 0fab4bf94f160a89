//! EligibilityService: inventory in (stream, batch, snapshot), stock out, merchandising
//! exclusions, and the eligibility engine's answers (`Explain`, `DryRun`).

use std::pin::Pin;
use std::sync::Arc;

use std::collections::BTreeMap;

use futures_util::FutureExt;
use restock_domain::eligibility::Outcome;
use restock_store::inventory::EventOutcome;
use restock_store::substitutes::{GroupRow, Member};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::convert::{decision, timestamp};
use super::paging::time_cursor;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::proto::v1::eligibility_service_server::EligibilityService;
use crate::state::AppState;

mod events;
mod exclusions;
mod explain;
mod inventory;
mod substitutes;

use events::*;

/// Acknowledgements buffered per stream. A client that stops reading them stops being read
/// from: the server's memory per stream is this many acks, whatever the client sends.
const ACK_BUFFER: usize = 64;
/// Events of one stream applied in one transaction, at most.
const STREAM_BATCH: usize = 256;
/// Most rejections a SyncInventoryResponse lists (it counts them all).
const MAX_REJECTIONS: usize = 100;

/// The service.
pub struct EligibilityApi {
    state: Arc<AppState>,
}

impl EligibilityApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::StreamInventoryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EligibilityService for EligibilityApi {
    async fn stream_inventory(
        &self,
        request: Request<Streaming<pb::StreamInventoryRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        EligibilityApi::stream_inventory(self, request).await
    }

    async fn report_inventory(
        &self,
        request: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        EligibilityApi::report_inventory(self, request).await
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        EligibilityApi::get_stock(self, request).await
    }

    async fn sync_inventory(
        &self,
        request: Request<Streaming<pb::SyncInventoryRequest>>,
    ) -> Result<Response<pb::SyncInventoryResponse>, Status> {
        EligibilityApi::sync_inventory(self, request).await
    }

    async fn create_exclusion(
        &self,
        request: Request<pb::CreateExclusionRequest>,
    ) -> Result<Response<pb::CreateExclusionResponse>, Status> {
        EligibilityApi::create_exclusion(self, request).await
    }

    async fn delete_exclusion(
        &self,
        request: Request<pb::DeleteExclusionRequest>,
    ) -> Result<Response<pb::DeleteExclusionResponse>, Status> {
        EligibilityApi::delete_exclusion(self, request).await
    }

    async fn list_exclusions(
        &self,
        request: Request<pb::ListExclusionsRequest>,
    ) -> Result<Response<pb::ListExclusionsResponse>, Status> {
        EligibilityApi::list_exclusions(self, request).await
    }

    async fn set_substitute_group(
        &self,
        request: Request<pb::SetSubstituteGroupRequest>,
    ) -> Result<Response<pb::SetSubstituteGroupResponse>, Status> {
        EligibilityApi::set_substitute_group(self, request).await
    }

    async fn list_substitute_groups(
        &self,
        request: Request<pb::ListSubstituteGroupsRequest>,
    ) -> Result<Response<pb::ListSubstituteGroupsResponse>, Status> {
        EligibilityApi::list_substitute_groups(self, request).await
    }

    async fn delete_substitute_group(
        &self,
        request: Request<pb::DeleteSubstituteGroupRequest>,
    ) -> Result<Response<pb::DeleteSubstituteGroupResponse>, Status> {
        EligibilityApi::delete_substitute_group(self, request).await
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        EligibilityApi::explain(self, request).await
    }

    async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        EligibilityApi::dry_run(self, request).await
    }
}
