//! RecordPurchase: parsed here, recorded by `app::purchases` (orders idempotent on the order
//! id, attributed to texts; refunds by `refunded_order_id`), viewed here.

use crate::app::purchases::{self, PurchaseError};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::state::AppState;

pub async fn record(
    state: &AppState,
    caller: &Caller,
    req: pb::RecordPurchaseRequest,
) -> Result<pb::RecordPurchaseResponse, ApiError> {
    let cmd = super::requests::purchases::RecordPurchase::parse(req, state.clock.now())?;
    let policy = state.tenant(caller, &cmd.tenant_id)?;
    let (created, attributions) =
        purchases::record(state, policy, cmd)
            .await
            .map_err(|e| match e {
                PurchaseError::Store(e) => ApiError::from(e),
                e @ PurchaseError::Conflict(_) => ApiError::AlreadyExists(e.to_string()),
                e @ PurchaseError::OrderNotFound(_) => ApiError::NotFound(e.to_string()),
                PurchaseError::Refused { index, reason } => ApiError::FailedPrecondition {
                    kind: "REFUND",
                    subject: format!("lines[{index}]"),
                    description: format!("lines[{index}] {reason}"),
                },
            })?;
    Ok(response(created, attributions))
}

fn response(
    created: bool,
    attributions: Vec<restock_store::purchases::Attribution>,
) -> pb::RecordPurchaseResponse {
    pb::RecordPurchaseResponse {
        created,
        attributions: attributions
            .into_iter()
            .map(|a| pb::PurchaseLineAttribution {
                variant_id: a.variant_id,
                basis: match a.basis.as_str() {
                    "text" => pb::AttributionBasis::Text,
                    "click" => pb::AttributionBasis::Click,
                    "holdout" => pb::AttributionBasis::Holdout,
                    _ => pb::AttributionBasis::None,
                } as i32,
                message_id: a.message_id.map(|m| m.to_string()).unwrap_or_default(),
                release_id: a.release_id.map(|m| m.to_string()).unwrap_or_default(),
                subscription_id: a.subscription_id.map(|m| m.to_string()).unwrap_or_default(),
            })
            .collect(),
    }
}
