//! Purchases: orders in, idempotent on the order id, each line attributed to the latest text
//! about its variant within the tenant's windows; and refunds, credited to what the refunded
//! lines were credited to.

use chrono::{DateTime, Duration, Utc};
use restock_domain::fingerprint::{Canonical, Fingerprint};
use restock_domain::report::PurchaseChannel;
use restock_domain::{erasure, Phone, TenantPolicy};
use restock_store::purchases::{
    Attribution, NewLine, NewPurchase, NewRefund, Recorded, RefundRecorded, Windows,
};
use restock_store::StoreError;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// A valid order (or refund) to record.
#[derive(Debug)]
pub struct RecordPurchase {
    pub tenant_id: String,
    pub order_id: String,
    pub customer_id: Option<String>,
    pub phone: Option<Phone>,
    /// Set for a refund: the order it pays back.
    pub refunded_order_id: Option<String>,
    pub purchased_at: DateTime<Utc>,
    pub channel: PurchaseChannel,
    pub lines: Vec<NewLine>,
}

/// Why an order was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The order id was recorded with other content.
    #[error("order \"{0}\" was recorded with other content")]
    Conflict(String),
    /// The refunded order is not known.
    #[error("order \"{0}\" to refund not found")]
    OrderNotFound(String),
    /// A refund line pays back what the order does not hold.
    #[error("lines[{index}] {reason}")]
    Refused { index: usize, reason: String },
}

/// Records an order or a refund; whether it was new (`false`: the same order again), and how
/// its lines were attributed.
#[tracing::instrument(skip_all, fields(tenant_id = %cmd.tenant_id, refund = cmd.refunded_order_id.is_some()))]
pub async fn record(
    state: &AppState,
    policy: &TenantPolicy,
    cmd: RecordPurchase,
) -> Result<(bool, Vec<Attribution>), PurchaseError> {
    let now = state.clock.now();
    let request_hash = fingerprint(&cmd);
    let RecordPurchase {
        tenant_id,
        order_id,
        customer_id,
        phone,
        refunded_order_id,
        purchased_at,
        channel,
        lines,
    } = cmd;
    if let Some(refunded_order_id) = refunded_order_id {
        let refund = NewRefund {
            refund_id: order_id,
            order_id: refunded_order_id,
            lines,
            refunded_at: purchased_at,
            request_hash,
        };
        return match state.store.record_refund(&tenant_id, &refund, now).await? {
            RefundRecorded::Created(a) => Ok((true, a)),
            RefundRecorded::Repeated(a) => Ok((false, a)),
            RefundRecorded::Conflict => Err(PurchaseError::Conflict(refund.refund_id)),
            RefundRecorded::OrderNotFound => Err(PurchaseError::OrderNotFound(refund.order_id)),
            RefundRecorded::Refused { index, reason } => {
                Err(PurchaseError::Refused { index, reason })
            }
        };
    }
    let purchase = NewPurchase {
        erased_order_id: erasure::erase(&state.erasure_key, &order_id),
        order_id,
        customer_id,
        phone_e164: phone.as_ref().map(|p| p.e164().to_string()),
        lines,
        purchased_at,
        channel: channel.as_str(),
        request_hash,
    };
    let windows = Windows {
        text: Duration::hours(policy.text_attribution_hours.into()),
        click: Duration::days(policy.click_attribution_days.into()),
    };
    match state
        .store
        .record_purchase(&tenant_id, &purchase, windows, now)
        .await?
    {
        Recorded::Created(a) => Ok((true, a)),
        Recorded::Repeated(a) => Ok((false, a)),
        Recorded::Conflict => Err(PurchaseError::Conflict(purchase.order_id)),
    }
}

/// The fingerprint an order (or refund) is recorded with, so the same order sent again is told
/// from another one under the same id: the canonical print of its content (not the order id,
/// which is the key, nor the tenant, which scopes the key). Orders recorded before the
/// canonical form hold [`legacy_fingerprint`]'s, and are matched by it still.
pub fn fingerprint(cmd: &RecordPurchase) -> Fingerprint {
    Fingerprint::new(canonical(cmd).finish(), Some(legacy_fingerprint(cmd)))
}

/// The canonical encoding of an order's content, every field listed.
fn canonical(cmd: &RecordPurchase) -> Canonical {
    let mut c = Canonical::new("RecordPurchase")
        .field("customer_id", &cmd.customer_id)
        .field("phone", cmd.phone.as_ref().map(Phone::e164))
        .field("refunded_order_id", &cmd.refunded_order_id)
        .field("purchased_at", cmd.purchased_at)
        .field("channel", cmd.channel.as_str())
        .field("lines", cmd.lines.len() as u32);
    for l in &cmd.lines {
        c = c
            .field("line.variant_id", &l.variant_id)
            .field("line.quantity", l.quantity)
            .field("line.total_minor", l.total_minor)
            .field("line.currency", &l.currency)
            .field("line.location_id", &l.location_id);
    }
    c
}

/// The hand digest orders were recorded with before the canonical form: SHA-256 over the
/// content. Only compared with rows stored then (orders are kept without expiry), so this form
/// is frozen: orders recorded before channels or refunds existed must digest as they did then.
pub fn legacy_fingerprint(cmd: &RecordPurchase) -> Vec<u8> {
    let mut digest = Sha256::new();
    for part in [
        cmd.customer_id.as_deref().unwrap_or(""),
        cmd.phone.as_ref().map_or("", |p| p.e164()),
    ] {
        digest.update(part.as_bytes());
        digest.update([0x1f]);
    }
    digest.update(cmd.purchased_at.timestamp_micros().to_be_bytes());
    // Only a known channel is digested, so an order recorded before channels existed digests
    // as it did then; likewise the refunded order, after a separator no order id holds.
    if let Some(refunded) = &cmd.refunded_order_id {
        digest.update([0x1c]);
        digest.update(refunded.as_bytes());
    }
    if cmd.channel != PurchaseChannel::Unknown {
        digest.update(cmd.channel.as_str().as_bytes());
        digest.update([0x1d]);
    }
    for l in &cmd.lines {
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
    digest.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn order() -> RecordPurchase {
        RecordPurchase {
            tenant_id: "t".into(),
            order_id: "order-2".into(),
            customer_id: Some("c-1".into()),
            phone: Some(Phone::parse("+14155550100", "").unwrap()),
            refunded_order_id: None,
            purchased_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            channel: PurchaseChannel::Web,
            lines: vec![NewLine {
                variant_id: "sku-1".into(),
                quantity: 2,
                total_minor: 4998,
                currency: "USD".into(),
                location_id: Some("store-9".into()),
            }],
        }
    }

    /// The stored fingerprints of orders and refunds are compared on every replay, for as long
    /// as the order is kept: the legacy form must not drift. The expected digests were computed
    /// independently of this code (Python's hashlib over the documented bytes).
    #[test]
    fn the_legacy_fingerprint_form_is_frozen() {
        assert_eq!(
            hex::encode(legacy_fingerprint(&order())),
            "e1172085ab9b249e94e90f24e7aa863862b76b59515fb6bbda57ccf7364c87d2"
        );
        let refund = RecordPurchase {
            customer_id: None,
            phone: None,
            refunded_order_id: Some("order-1".into()),
            channel: PurchaseChannel::Unknown,
            lines: vec![NewLine {
                variant_id: "sku-1".into(),
                quantity: 1,
                total_minor: 2499,
                currency: "USD".into(),
                location_id: None,
            }],
            ..order()
        };
        assert_eq!(
            hex::encode(legacy_fingerprint(&refund)),
            "dcd23ed1b4797819a02fb5a6034ec6db9dc7d435cb25368d7c82f5e54a650bce"
        );
    }

    /// Orders are now stored with the canonical print: it must not drift either. The expected
    /// digest was computed independently of this code (Python's hashlib over the bytes the
    /// grammar of `restock_domain::fingerprint` gives for these fields).
    #[test]
    fn the_canonical_form_is_frozen() {
        assert_eq!(
            hex::encode(fingerprint(&order()).stored()),
            "de4fcdc6df9042728777fafe16a112922dfa20984cc9b6665fa71523c4fd9e25"
        );
    }

    /// An order recorded before the canonical form is recognised by its legacy print.
    #[test]
    fn a_print_stored_in_either_form_matches() {
        let f = fingerprint(&order());
        assert!(f.matches(f.stored()));
        assert!(f.matches(&legacy_fingerprint(&order())));
        let other = RecordPurchase {
            channel: PurchaseChannel::Store,
            ..order()
        };
        assert!(!f.matches(&legacy_fingerprint(&other)));
        assert!(!f.matches(fingerprint(&other).stored()));
    }

    #[test]
    fn the_order_id_is_the_key_not_the_content() {
        let other_id = RecordPurchase {
            order_id: "order-3".into(),
            ..order()
        };
        assert_eq!(fingerprint(&order()), fingerprint(&other_id));
        let print = |c: &RecordPurchase| fingerprint(c).stored().to_vec();
        let other_quantity = RecordPurchase {
            lines: vec![NewLine {
                quantity: 3,
                ..order().lines.remove(0)
            }],
            ..order()
        };
        assert_ne!(print(&order()), print(&other_quantity));
    }
}
