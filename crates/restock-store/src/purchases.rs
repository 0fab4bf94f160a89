//! Purchases in: recorded once per order id, each line credited to the latest text (or holdout
//! record) about its variant to the buyer within the tenant's windows. Purchases also start the
//! purchase-suppression window the eligibility engine reads.

use chrono::{DateTime, Duration, Utc};
use restock_domain::fingerprint::Fingerprint;
use restock_domain::MessageStatus;
use uuid::Uuid;

use crate::cached::{execute, query, query_opt};
use crate::{Store, StoreError};

/// One line of an order.
#[derive(Debug, Clone)]
pub struct NewLine {
    pub variant_id: String,
    pub quantity: i32,
    pub total_minor: i64,
    pub currency: String,
    pub location_id: Option<String>,
}

/// An order to record.
#[derive(Debug, Clone)]
pub struct NewPurchase {
    pub order_id: String,
    pub customer_id: Option<String>,
    /// The buyer's phone in E.164.
    pub phone_e164: Option<String>,
    pub lines: Vec<NewLine>,
    pub purchased_at: DateTime<Utc>,
    /// Where the order was placed (a `PurchaseChannel`'s stored name).
    pub channel: &'static str,
    /// The fingerprint of the request's content, to tell a repeat from a different order.
    pub request_hash: Fingerprint,
    /// The order id as erasure leaves it (its keyed hash): how an order whose buyer was erased
    /// is found when it is sent again.
    pub erased_order_id: String,
}

/// What a line was credited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub variant_id: String,
    /// `none`, `text`, `click` or `holdout`.
    pub basis: String,
    pub message_id: Option<Uuid>,
    pub release_id: Option<Uuid>,
    pub subscription_id: Option<Uuid>,
}

/// The tenant's attribution windows.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub text: Duration,
    pub click: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Created(Vec<Attribution>),
    /// The same order was recorded before: its first answer.
    Repeated(Vec<Attribution>),
    /// The order id was recorded with other content.
    Conflict,
}

impl Store {
    /// Records an order once; see the module header.
    pub async fn record_purchase(
        &self,
        tenant_id: &str,
        p: &NewPurchase,
        windows: Windows,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let contact_id: Option<Uuid> = match &p.phone_e164 {
            Some(phone) => query_opt(
                &tx,
                "SELECT contact_id FROM contacts WHERE tenant_id = $1 AND phone_e164 = $2",
                &[&tenant_id, phone],
            )
            .await?
            .map(|r| r.get(0)),
            None => None,
        };
        // An order whose buyer was erased is not recorded again, nor matched to them: it is
        // answered as recorded, credited to nothing.
        let erased = query(
            &tx,
            "SELECT variant_id FROM purchase_lines WHERE tenant_id = $1 AND order_id = $2 \
             ORDER BY line_number",
            &[&tenant_id, &p.erased_order_id],
        )
        .await?;
        if !erased.is_empty() {
            return Ok(Recorded::Repeated(
                erased
                    .iter()
                    .map(|r| Attribution {
                        variant_id: r.get(0),
                        basis: "none".into(),
                        message_id: None,
                        release_id: None,
                        subscription_id: None,
                    })
                    .collect(),
            ));
        }
        // A concurrent insert of the same order waits here for the other to commit.
        let inserted = execute(
            &tx,
            "INSERT INTO purchases (tenant_id, order_id, request_hash, customer_id, contact_id, purchased_at, recorded_at, channel) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, order_id) DO NOTHING",
            &[&tenant_id, &p.order_id, &p.request_hash.stored(), &p.customer_id, &contact_id, &p.purchased_at, &now, &p.channel],
        )
        .await?;
        if inserted == 0 {
            let row = query_opt(
                &tx,
                "SELECT request_hash FROM purchases WHERE tenant_id = $1 AND order_id = $2",
                &[&tenant_id, &p.order_id],
            )
            .await?
            .ok_or(StoreError::NotFound("purchase"))?;
            if !p.request_hash.matches(&row.get::<_, Vec<u8>>(0)) {
                return Ok(Recorded::Conflict);
            }
            let lines = query(
                &tx,
                "SELECT variant_id, basis, message_id, release_id, subscription_id FROM purchase_lines \
                 WHERE tenant_id = $1 AND order_id = $2 ORDER BY line_number",
                &[&tenant_id, &p.order_id],
            )
            .await?;
            return Ok(Recorded::Repeated(
                lines
                    .iter()
                    .map(|r| Attribution {
                        variant_id: r.get(0),
                        basis: r.get(1),
                        message_id: r.get(2),
                        release_id: r.get(3),
                        subscription_id: r.get(4),
                    })
                    .collect(),
            ));
        }

        let mut attributions = Vec::with_capacity(p.lines.len());
        for (i, line) in p.lines.iter().enumerate() {
            let a = attribute(&tx, tenant_id, contact_id, p, &line.variant_id, windows).await?;
            execute(
                &tx,
                "INSERT INTO purchase_lines (tenant_id, order_id, line_number, variant_id, quantity, total_minor, \
                   currency, location_id, customer_id, contact_id, purchased_at, basis, message_id, release_id, subscription_id, channel) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                &[
                    &tenant_id, &p.order_id, &(i as i32 + 1), &line.variant_id, &line.quantity,
                    &line.total_minor, &line.currency, &line.location_id, &p.customer_id, &contact_id,
                    &p.purchased_at, &a.basis, &a.message_id, &a.release_id, &a.subscription_id,
                    &p.channel,
                ],
            )
            .await?;
            if let Some(subscription_id) = a.subscription_id {
                execute(
                    &tx,
                    "UPDATE subscriptions SET status = 'converted', updated_at = $3 \
                     WHERE tenant_id = $1 AND subscription_id = $2 \
                       AND status IN ('pending_confirmation', 'active', 'notified')",
                    &[&tenant_id, &subscription_id, &now],
                )
                .await?;
            }
            attributions.push(a);
        }
        tx.commit().await?;
        Ok(Recorded::Created(attributions))
    }
}

/// The latest text (or holdout record) about `variant_id` to the buyer that the purchase falls
/// within a window of: the click window after a click on its link, else the text window after
/// the text (for the holdout, after the time it would have been sent).
async fn attribute(
    tx: &impl deadpool_postgres::GenericClient,
    tenant_id: &str,
    contact_id: Option<Uuid>,
    p: &NewPurchase,
    variant_id: &str,
    windows: Windows,
) -> Result<Attribution, StoreError> {
    let earliest = p.purchased_at - windows.text.max(windows.click);
    let rows = query(
        tx,
        "SELECT m.message_id, m.release_id, m.subscription_id, m.status, \
           COALESCE(m.sent_at, m.created_at) AS at, \
           (SELECT max(k.clicked_at) FROM clicks k WHERE k.tenant_id = m.tenant_id \
              AND k.message_id = m.message_id AND k.clicked_at <= $5) \
         FROM messages m JOIN subscriptions s ON s.tenant_id = m.tenant_id AND s.subscription_id = m.subscription_id \
         WHERE m.tenant_id = $1 AND m.variant_id = $2 \
           AND (m.contact_id = $3 OR ($4::text IS NOT NULL AND s.customer_id = $4)) \
           AND m.status IN ('sent', 'delivered', 'undelivered', 'held_out') \
           AND COALESCE(m.sent_at, m.created_at) BETWEEN $6 AND $5 \
         ORDER BY COALESCE(m.sent_at, m.created_at) DESC LIMIT 20",
        &[&tenant_id, &variant_id, &contact_id, &p.customer_id, &p.purchased_at, &earliest],
    )
    .await?;
    for r in &rows {
        let status: MessageStatus = r.get(3);
        let at: DateTime<Utc> = r.get(4);
        let click: Option<DateTime<Utc>> = r.get(5);
        let basis = if status == MessageStatus::HeldOut {
            (p.purchased_at - at <= windows.text).then_some("holdout")
        } else if click.is_some_and(|c| p.purchased_at - c <= windows.click) {
            Some("click")
        } else {
            (p.purchased_at - at <= windows.text).then_some("text")
        };
        if let Some(basis) = basis {
            return Ok(Attribution {
                variant_id: variant_id.to_string(),
                basis: basis.into(),
                message_id: Some(r.get(0)),
                release_id: Some(r.get(1)),
                subscription_id: Some(r.get(2)),
            });
        }
    }
    Ok(Attribution {
        variant_id: variant_id.to_string(),
        basis: "none".into(),
        message_id: None,
        release_id: None,
        subscription_id: None,
    })
}

/// A refund to record: lines of an earlier order paid back.
#[derive(Debug, Clone)]
pub struct NewRefund {
    /// The refund's own id, idempotent like an order id.
    pub refund_id: String,
    /// The order refunded.
    pub order_id: String,
    /// Per line: the variant, the units returned and the amount paid back (positive).
    pub lines: Vec<NewLine>,
    pub refunded_at: DateTime<Utc>,
    /// The fingerprint of the refund's content.
    pub request_hash: Fingerprint,
}

/// What became of a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRecorded {
    /// Recorded; each line credited as the refunded line was.
    Created(Vec<Attribution>),
    /// The same refund was recorded before: its first answer.
    Repeated(Vec<Attribution>),
    /// The refund id was recorded with other content (or is an order's id).
    Conflict,
    /// The refunded order was never recorded.
    OrderNotFound,
    /// Line `index` cannot be refunded, for the reason given; nothing was recorded.
    Refused { index: usize, reason: String },
}

impl Store {
    /// Records a refund once: each line is checked against the refunded order's line of its
    /// variant (same currency, units and amount within what is left of it) and credited to
    /// what that line was credited to. The refunded lines are locked, so two refunds of one
    /// line cannot together pay back more than it cost.
    pub async fn record_refund(
        &self,
        tenant_id: &str,
        r: &NewRefund,
        now: DateTime<Utc>,
    ) -> Result<RefundRecorded, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = execute(
            &tx,
            "INSERT INTO purchases (tenant_id, order_id, request_hash, purchased_at, recorded_at, refunded_order_id) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, order_id) DO NOTHING",
            &[&tenant_id, &r.refund_id, &r.request_hash.stored(), &r.refunded_at, &now, &r.order_id],
        )
        .await?;
        if inserted == 0 {
            let row = query_opt(
                &tx,
                "SELECT request_hash, refunded_order_id FROM purchases WHERE tenant_id = $1 AND order_id = $2",
                &[&tenant_id, &r.refund_id],
            )
            .await?
            .ok_or(StoreError::NotFound("purchase"))?;
            if !r.request_hash.matches(&row.get::<_, Vec<u8>>(0))
                || row.get::<_, Option<String>>(1).is_none()
            {
                return Ok(RefundRecorded::Conflict);
            }
            let lines = query(
                &tx,
                "SELECT rl.variant_id, rl.basis, rl.message_id, rl.release_id, pl.subscription_id \
                 FROM refund_lines rl LEFT JOIN purchase_lines pl ON pl.tenant_id = rl.tenant_id \
                   AND pl.order_id = rl.order_id AND pl.line_number = rl.order_line_number \
                 WHERE rl.tenant_id = $1 AND rl.refund_id = $2 ORDER BY rl.line_number",
                &[&tenant_id, &r.refund_id],
            )
            .await?;
            return Ok(RefundRecorded::Repeated(
                lines
                    .iter()
                    .map(|x| Attribution {
                        variant_id: x.get(0),
                        basis: x.get(1),
                        message_id: x.get(2),
                        release_id: x.get(3),
                        subscription_id: x.get(4),
                    })
                    .collect(),
            ));
        }
        let order = query_opt(
            &tx,
            "SELECT refunded_order_id IS NULL FROM purchases WHERE tenant_id = $1 AND order_id = $2",
            &[&tenant_id, &r.order_id],
        )
        .await?;
        if order.is_none_or(|o| !o.get::<_, bool>(0)) {
            return Ok(RefundRecorded::OrderNotFound);
        }
        let mut out = Vec::with_capacity(r.lines.len());
        for (i, line) in r.lines.iter().enumerate() {
            let Some(o) = query_opt(
                &tx,
                "SELECT pl.line_number, pl.quantity, pl.total_minor, pl.currency, pl.basis, pl.message_id, \
                   pl.release_id, pl.subscription_id, pl.channel \
                 FROM purchase_lines pl WHERE pl.tenant_id = $1 AND pl.order_id = $2 AND pl.variant_id = $3 \
                 FOR UPDATE",
                &[&tenant_id, &r.order_id, &line.variant_id],
            )
            .await?
            else {
                return Ok(RefundRecorded::Refused {
                    index: i,
                    reason: "is not a line of the refunded order".into(),
                });
            };
            let (number, quantity, total, currency): (i32, i32, i64, String) =
                (o.get(0), o.get(1), o.get(2), o.get(3));
            if currency != line.currency {
                return Ok(RefundRecorded::Refused {
                    index: i,
                    reason: format!("is in {currency}, the refunded line's currency"),
                });
            }
            let before = query_opt(
                &tx,
                "SELECT COALESCE(sum(quantity), 0)::bigint, COALESCE(sum(amount_minor), 0)::bigint \
                 FROM refund_lines WHERE tenant_id = $1 AND order_id = $2 AND order_line_number = $3",
                &[&tenant_id, &r.order_id, &number],
            )
            .await?
            .map(|x| (x.get::<_, i64>(0), x.get::<_, i64>(1)))
            .unwrap_or((0, 0));
            if before.0 + i64::from(line.quantity) > i64::from(quantity)
                || before.1 + line.total_minor > total
            {
                return Ok(RefundRecorded::Refused {
                    index: i,
                    reason: format!(
                        "exceeds what is left to refund of the line: {} units, {} minor units",
                        i64::from(quantity) - before.0,
                        total - before.1
                    ),
                });
            }
            let a = Attribution {
                variant_id: line.variant_id.clone(),
                basis: o.get(4),
                message_id: o.get(5),
                release_id: o.get(6),
                subscription_id: o.get(7),
            };
            let channel: String = o.get(8);
            execute(
                &tx,
                "INSERT INTO refund_lines (tenant_id, refund_id, line_number, order_id, order_line_number, variant_id, \
                   quantity, amount_minor, currency, refunded_at, basis, message_id, release_id, channel, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &[
                    &tenant_id, &r.refund_id, &(i as i32 + 1), &r.order_id, &number, &line.variant_id,
                    &line.quantity, &line.total_minor, &line.currency, &r.refunded_at, &a.basis,
                    &a.message_id, &a.release_id, &channel, &now,
                ],
            )
            .await?;
            out.push(a);
        }
        tx.commit().await?;
        Ok(RefundRecorded::Created(out))
    }
}
