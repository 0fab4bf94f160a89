//! RecordPurchase: orders in, idempotent on the order id, each line attributed to the latest
//! text about its variant within the tenant's windows; and refunds (`refunded_order_id`),
//! credited to what the refunded lines were credited to.

use std::collections::HashSet;

use chrono::Duration;
use restock_domain::erasure;
use restock_domain::report::PurchaseChannel;
use restock_store::purchases::{
    NewLine, NewPurchase, NewRefund, Recorded, RefundRecorded, Windows,
};
use sha2::{Digest, Sha256};

use super::validate::Violations;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::startup::AppState;

const MAX_LINES: usize = 500;
const MAX_QUANTITY: u32 = 10_000;

pub async fn record(
    state: &AppState,
    caller: &Caller,
    req: pb::RecordPurchaseRequest,
) -> Result<pb::RecordPurchaseResponse, ApiError> {
    let now = state.clock.now();
    let mut v = Violations::default();
    let tenant_id = v.id("tenant_id", &req.tenant_id, true);
    let order_id = v.text("order_id", &req.order_id, 128, true);
    let customer_id = v.text("customer_id", &req.customer_id, 128, false);
    let phone = if req.phone_number.trim().is_empty() {
        None
    } else {
        v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        )
    };
    let refunded_order_id = v.text("refunded_order_id", &req.refunded_order_id, 128, false);
    if refunded_order_id.is_some() && req.refunded_order_id == req.order_id {
        v.add("refunded_order_id", "must not be the refund's own order_id");
    }
    let refund = refunded_order_id.is_some();
    // A refund's buyer is the refunded order's.
    if !refund && req.customer_id.trim().is_empty() && req.phone_number.trim().is_empty() {
        v.add("customer_id", "customer_id or phone_number is required");
    }
    let purchased_at = v.past_time("purchase_time", req.purchase_time.as_ref(), now, true);
    let channel = match pb::PurchaseChannel::try_from(req.channel) {
        Ok(pb::PurchaseChannel::Unspecified | pb::PurchaseChannel::Unknown) => {
            PurchaseChannel::Unknown
        }
        Ok(pb::PurchaseChannel::SmsLink) => PurchaseChannel::SmsLink,
        Ok(pb::PurchaseChannel::Web) => PurchaseChannel::Web,
        Ok(pb::PurchaseChannel::Store) => PurchaseChannel::Store,
        Ok(pb::PurchaseChannel::App) => PurchaseChannel::App,
        Err(_) => {
            v.add("channel", "is not a known PurchaseChannel");
            PurchaseChannel::Unknown
        }
    };
    if req.lines.is_empty() || req.lines.len() > MAX_LINES {
        v.add("lines", format!("must hold 1 to {MAX_LINES} lines"));
    }
    let mut lines = Vec::with_capacity(req.lines.len());
    let mut seen = HashSet::new();
    let mut currency: Option<String> = None;
    for (i, line) in req.lines.iter().enumerate() {
        let f = |name: &str| format!("lines[{i}].{name}");
        let variant_id = v.id(&f("variant_id"), &line.variant_id, true);
        if let Some(id) = &variant_id {
            if !seen.insert(id.clone()) {
                v.add(f("variant_id"), "names a variant of an earlier line");
            }
        }
        // A refund may pay money back without a return.
        let least = if refund { 0 } else { 1 };
        if line.quantity < least || line.quantity > MAX_QUANTITY {
            v.add(f("quantity"), format!("must be {least} to {MAX_QUANTITY}"));
        }
        let location_id = v.id(&f("location_id"), &line.location_id, false);
        let price = match &line.total_price {
            None => {
                v.add(f("total_price"), "is required");
                None
            }
            Some(m) => {
                let code = m.currency_code.trim();
                let ok_code = code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase());
                if !ok_code {
                    v.add(
                        f("total_price.currency_code"),
                        "must be an ISO 4217 code in upper case, such as USD",
                    );
                } else if currency.as_deref().is_some_and(|c| c != code) {
                    v.add(
                        f("total_price.currency_code"),
                        "must be the currency of the order's first line",
                    );
                } else {
                    currency.get_or_insert_with(|| code.to_string());
                }
                if refund && m.amount_minor <= 0 {
                    v.add(
                        f("total_price.amount_minor"),
                        "must be positive: the amount paid back",
                    );
                } else if m.amount_minor < 0 {
                    v.add(f("total_price.amount_minor"), "must not be negative");
                }
                Some((m.amount_minor, code.to_string()))
            }
        };
        if let (Some(variant_id), Some((total_minor, currency))) = (variant_id, price) {
            lines.push(NewLine {
                variant_id,
                quantity: line.quantity.min(MAX_QUANTITY) as i32,
                total_minor,
                currency,
                location_id,
            });
        }
    }
    v.finish()?;
    let tenant_id = tenant_id.expect("validated");
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
    digest.update(
        purchased_at
            .expect("validated")
            .timestamp_micros()
            .to_be_bytes(),
    );
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
    let order_id = order_id.expect("validated");
    if let Some(refunded_order_id) = refunded_order_id {
        let refund = NewRefund {
            refund_id: order_id,
            order_id: refunded_order_id,
            lines,
            refunded_at: purchased_at.expect("validated"),
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
        purchased_at: purchased_at.expect("validated"),
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
