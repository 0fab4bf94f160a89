//! RecordPurchase: orders in, idempotent on the order id, each line attributed to the latest
//! text about its variant within the tenant's windows; and refunds (`refunded_order_id`),
//! credited to what the refunded lines were credited to.

use chrono::Duration;
use restock_domain::erasure;
use restock_domain::report::PurchaseChannel;
use restock_store::purchases::{NewPurchase, NewRefund, Recorded, RefundRecorded, Windows};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::state::AppState;

pub async fn record(
    state: &AppState,
    caller: &Caller,
    req: pb::RecordPurchaseRequest,
) -> Result<pb::RecordPurchaseResponse, ApiError> {
    let now = state.clock.now();
    let super::requests::purchases::RecordPurchase {
        tenant_id,
        order_id,
        customer_id,
        phone,
        refunded_order_id,
        purchased_at,
        channel,
        lines,
    } = super::requests::purchases::RecordPurchase::parse(req, now)?;
    let policy = state.tenant(caller, &tenant_id)?;

    // The content as recorded: the same order sent again digests the same.
    let mut digest = Sha256::new();
    for part in [
        customer_id.as_deref().unwrap_or(""),
        phone.as_ref().map_or("", |p| p.e164()),
    ] {
        digest.update(part.as_bytes());
        digest.update([0x1f]);
    }
    digest.update(purchased_at.timestamp_micros().to_be_bytes());
    // Only a known channel is digested, so an order recorded before channels existed digests
    // as it did then; likewise the refunded order, after a separator no order id holds.
    if let Some(refunded) = &refunded_order_id {
        digest.update([0x1c]);
        digest.update(refunded.as_bytes());
    }
    if channel != PurchaseChannel::Unknown {
        digest.update(channel.as_str().as_bytes());
        digest.update([0x1d]);
    }
    for l in &lines {
        digest.update(
            format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1e}",
                l.variant_id,
                l.quantity,
                l.total_minor,
                l.currency,
                l.location_id.as_deref().unwrap_or("")
            )
            .as_bytes(),
        );
    }
    if let Some(refunded_order_id) = refunded_order_id {
        let refund = NewRefund {
            refund_id: order_id,
            order_id: refunded_order_id,
            lines,
            refunded_at: purchased_at,
            request_hash: digest.finalize().to_vec(),
        };
        let (created, attributions) =
            match state.store.record_refund(&tenant_id, &refund, now).await? {
                RefundRecorded::Created(a) => (true, a),
                RefundRecorded::Repeated(a) => (false, a),
                RefundRecorded::Conflict => {
                    return Err(ApiError::AlreadyExists(format!(
                        "order \"{}\" was recorded with other content",
                        refund.refund_id
                    )))
                }
                RefundRecorded::OrderNotFound => {
                    return Err(ApiError::NotFound(format!(
                        "order \"{}\" to refund not found",
                        refund.order_id
                    )))
                }
                RefundRecorded::Refused { index, reason } => {
                    return Err(ApiError::FailedPrecondition {
                        kind: "REFUND",
                        subject: format!("lines[{index}]"),
                        description: format!("lines[{index}] {reason}"),
                    })
                }
            };
        return Ok(response(created, attributions));
    }
    let purchase = NewPurchase {
        erased_order_id: erasure::erase(&state.erasure_key, &order_id),
        order_id,
        customer_id,
        phone_e164: phone.as_ref().map(|p| p.e164().to_string()),
        lines,
        purchased_at,
        channel: channel.as_str(),
        request_hash: digest.finalize().to_vec(),
    };
    let windows = Windows {
        text: Duration::hours(policy.text_attribution_hours.into()),
        click: Duration::days(policy.click_attribution_days.into()),
    };
    let (created, attributions) = match state
        .store
        .record_purchase(&tenant_id, &purchase, windows, now)
        .await?
    {
        Recorded::Created(a) => (true, a),
        Recorded::Repeated(a) => (false, a),
        Recorded::Conflict => {
            return Err(ApiError::AlreadyExists(format!(
                "order \"{}\" was recorded with other content",
                purchase.order_id
            )))
        }
    };
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
