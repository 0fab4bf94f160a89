//! One method per RPC of the public API on [`TestApp`], each over the test caller's channel
//! (its bearer token applied) and answering the response message or the call's status, so no
//! test builds a client by hand. A test that needs the raw client (response metadata, a
//! client kept across calls) still has `app.waitlist()`, `app.eligibility()`, `app.dispatch()`.

use restock::proto::v1 as pb;
use tonic::{IntoRequest, IntoStreamingRequest, Status, Streaming};

use super::TestApp;

/// Unary RPCs: `name(Request) -> Response` on the named client.
macro_rules! unary {
    ($($client:ident . $name:ident ($req:ident) -> $resp:ident;)*) => {
        impl TestApp {
            $(
                pub async fn $name(&self, req: impl IntoRequest<pb::$req>) -> Result<pb::$resp, Status> {
                    self.$client().$name(req).await.map(tonic::Response::into_inner)
                }
            )*
        }
    };
}

unary! {
    waitlist.subscribe(SubscribeRequest) -> SubscribeResponse;
    waitlist.confirm_subscription(ConfirmSubscriptionRequest) -> ConfirmSubscriptionResponse;
    waitlist.unsubscribe(UnsubscribeRequest) -> UnsubscribeResponse;
    waitlist.get_subscription(GetSubscriptionRequest) -> GetSubscriptionResponse;
    waitlist.list_subscriptions(ListSubscriptionsRequest) -> ListSubscriptionsResponse;
    waitlist.get_waitlist_position(GetWaitlistPositionRequest) -> GetWaitlistPositionResponse;
    waitlist.opt_out(OptOutRequest) -> OptOutResponse;
    waitlist.opt_in(OptInRequest) -> OptInResponse;
    waitlist.get_consent_history(GetConsentHistoryRequest) -> GetConsentHistoryResponse;
    waitlist.erase_phone(ErasePhoneRequest) -> ErasePhoneResponse;
    waitlist.transfer_waitlist(TransferWaitlistRequest) -> TransferWaitlistResponse;
    waitlist.set_propensity_scores(SetPropensityScoresRequest) -> SetPropensityScoresResponse;

    eligibility.report_inventory(ReportInventoryRequest) -> ReportInventoryResponse;
    eligibility.get_stock(GetStockRequest) -> GetStockResponse;
    eligibility.explain(ExplainRequest) -> ExplainResponse;
    eligibility.dry_run(DryRunRequest) -> DryRunResponse;
    eligibility.create_exclusion(CreateExclusionRequest) -> CreateExclusionResponse;
    eligibility.delete_exclusion(DeleteExclusionRequest) -> DeleteExclusionResponse;
    eligibility.list_exclusions(ListExclusionsRequest) -> ListExclusionsResponse;
    eligibility.set_substitute_group(SetSubstituteGroupRequest) -> SetSubstituteGroupResponse;
    eligibility.list_substitute_groups(ListSubstituteGroupsRequest) -> ListSubstituteGroupsResponse;
    eligibility.delete_substitute_group(DeleteSubstituteGroupRequest) -> DeleteSubstituteGroupResponse;

    dispatch.get_release(GetReleaseRequest) -> GetReleaseResponse;
    dispatch.list_releases(ListReleasesRequest) -> ListReleasesResponse;
    dispatch.pause_release(PauseReleaseRequest) -> PauseReleaseResponse;
    dispatch.resume_release(ResumeReleaseRequest) -> ResumeReleaseResponse;
    dispatch.cancel_release(CancelReleaseRequest) -> CancelReleaseResponse;
    dispatch.get_message(GetMessageRequest) -> GetMessageResponse;
    dispatch.list_messages(ListMessagesRequest) -> ListMessagesResponse;
    dispatch.record_purchase(RecordPurchaseRequest) -> RecordPurchaseResponse;
    dispatch.record_product_views(RecordProductViewsRequest) -> RecordProductViewsResponse;
    dispatch.get_release_report(GetReleaseReportRequest) -> GetReleaseReportResponse;
    dispatch.get_variant_report(GetVariantReportRequest) -> GetVariantReportResponse;
    dispatch.get_period_report(GetPeriodReportRequest) -> GetPeriodReportResponse;
}

/// The streaming RPCs.
impl TestApp {
    pub async fn stream_inventory(
        &self,
        requests: impl IntoStreamingRequest<Message = pb::StreamInventoryRequest>,
    ) -> Result<Streaming<pb::StreamInventoryResponse>, Status> {
        self.eligibility()
            .stream_inventory(requests)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn sync_inventory(
        &self,
        requests: impl IntoStreamingRequest<Message = pb::SyncInventoryRequest>,
    ) -> Result<pb::SyncInventoryResponse, Status> {
        self.eligibility()
            .sync_inventory(requests)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn watch_release(
        &self,
        req: impl IntoRequest<pb::WatchReleaseRequest>,
    ) -> Result<Streaming<pb::WatchReleaseResponse>, Status> {
        self.dispatch()
            .watch_release(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn export_messages(
        &self,
        req: impl IntoRequest<pb::ExportMessagesRequest>,
    ) -> Result<Streaming<pb::ExportMessagesResponse>, Status> {
        self.dispatch()
            .export_messages(req)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Every RPC the proto declares, as `Service.Method`.
fn declared_rpcs() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(restock::proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "restock.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|s| {
            s.method
                .iter()
                .map(move |m| format!("{}.{}", s.name(), m.name()))
        })
        .collect()
}

/// Fails when an RPC is added to the proto without its method here: the harness names every
/// one (the list below is this file's, checked against the compiled descriptor set).
#[test]
fn the_harness_has_a_method_for_every_rpc() {
    let here = include_str!("rpc.rs");
    let mut missing = Vec::new();
    for rpc in declared_rpcs() {
        let (_, method) = rpc.split_once('.').unwrap();
        let mut snake = String::new();
        for (i, c) in method.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        let unary = format!(".{snake}(");
        let streaming = format!("pub async fn {snake}(");
        if !here.contains(&unary) && !here.contains(&streaming) {
            missing.push(rpc);
        }
    }
    assert!(declared_rpcs().len() >= 38, "{:?}", declared_rpcs());
    assert!(
        missing.is_empty(),
        "RPCs without a TestApp method: {missing:?}"
    );
}
