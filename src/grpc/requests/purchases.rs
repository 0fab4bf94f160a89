//! RecordPurchase's request as a typed command: an order or a refund whose every field was
//! checked, every bad one reported at once.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use restock_domain::report::PurchaseChannel;
use restock_store::purchases::NewLine;

use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

const MAX_LINES: usize = 500;
const MAX_QUANTITY: u32 = 10_000;

/// A valid RecordPurchase: the use case's command, built from the request here.
pub use crate::app::purchases::RecordPurchase;

impl RecordPurchase {
    /// `now` bounds the purchase time (no purchases from the future, beyond clock skew).
    pub fn parse(req: pb::RecordPurchaseRequest, now: DateTime<Utc>) -> Result<Self, ApiError> {
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
        let parts = match (tenant_id, order_id, purchased_at) {
            (Some(tenant_id), Some(order_id), Some(purchased_at)) => Some(RecordPurchase {
                tenant_id,
                order_id,
                customer_id,
                phone,
                refunded_order_id,
                purchased_at,
                channel,
                lines,
            }),
            _ => None,
        };
        v.into_result(parts)
    }
}
