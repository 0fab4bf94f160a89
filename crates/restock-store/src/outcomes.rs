//! What comes back after a text left: clicks on its tracked link and the provider's delivery
//! reports. Both find their message by a key the outside world holds (the link token, the
//! provider's message id), not by tenant.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use restock_domain::{ConsentSource, MessageStatus};
use uuid::Uuid;

use crate::cached::{execute, query_opt};
use crate::waitlist::LIVE;
use crate::webhooks::Receipt;
use crate::{Store, StoreError};

/// Where a tracked link leads, and what its click is recorded against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    pub tenant_id: String,
    pub message_id: Uuid,
    pub release_id: Uuid,
    pub variant_id: String,
    /// `first` or `reminder`.
    pub kind: String,
    /// The variant's product page, if the storefront gave one.
    pub deep_link: Option<String>,
    /// Whether the variant is sold out now (its last known stock is zero).
    pub sold_out: bool,
}

/// What a click led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickOutcome {
    /// To the variant's page.
    Redirected,
    /// To the page, marked sold out: the variant sold out again before the click.
    SoldOut,
}

impl ClickOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ClickOutcome::Redirected => "redirected",
            ClickOutcome::SoldOut => "sold_out",
        }
    }
}

/// A delivery report as the provider sent it (Twilio's status callback).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryReport<'a> {
    pub provider_message_id: &'a str,
    /// The provider's status, as sent (`queued`, `sent`, `delivered`, `failed`, ...).
    pub status: &'a str,
    /// The provider's error code for failed and undelivered texts, kept raw.
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    /// restock's own (tenant, message id) when the callback URL carried them: finds a text
    /// whose send outcome (and so its provider id) is not recorded yet.
    pub message: Option<(&'a str, Uuid)>,
}

/// Twilio's "the recipient replied STOP": nothing gets through to the phone until it replies
/// START, so it counts as an opt-out.
pub const PROVIDER_OPTED_OUT_CODE: &str = "21610";

/// The ledger's reason for an opt-out the provider reported; the dispatcher records the same
/// when a send is refused for it, so audits find both the same way.
pub const PROVIDER_OPT_OUT_REASON: &str = "the provider reports the phone opted out";

/// What a delivery report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// This very report (message id and status) was acted on before: nothing written.
    Replayed,
    /// No message has that provider id (not ours, or not recorded yet): nothing written.
    UnknownMessage,
    /// The report names a message of ours whose send is still in flight (its provider id is
    /// not recorded yet): kept, and applied by [`Store::apply_held_reports`] once it is.
    Held { tenant_id: String, message_id: Uuid },
    /// The message is final already, or the report moves nothing: nothing written.
    Unchanged {
        tenant_id: String,
        message_id: Uuid,
        status: MessageStatus,
    },
    /// The report was recorded; `status` is the message's status after it (maybe the same,
    /// with only the provider's status recorded).
    Applied {
        tenant_id: String,
        message_id: Uuid,
        from: MessageStatus,
        status: MessageStatus,
        /// Whether an opt-out of the phone was recorded (provider code 21610).
        opted_out: bool,
    },
}

/// What a report does to a message in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The message moves to this status.
    To(MessageStatus),
    /// Only the provider's status is recorded.
    RecordOnly,
    /// Nothing changes: the message is final, or never left (a report about it is wrong).
    Nothing,
}

/// Reports only move a message forward. Final statuses stay whatever comes late or twice;
/// `sending` (the report raced the send's own record) and `unknown` (the send's outcome was
/// lost) learn from the report what happened. Progress reports (`queued`, `sending`,
/// `accepted`, ...) are only recorded.
/// How far along the provider's own life of a text a status is. Callbacks arrive out of order
/// (Twilio sends each from its own queue): a later one never takes the record back.
fn provider_rank(status: &str) -> u8 {
    match status {
        "accepted" | "scheduled" | "queued" => 0,
        "sending" => 1,
        "sent" => 2,
        "delivered" | "undelivered" | "failed" | "canceled" | "read" => 3,
        _ => 0,
    }
}

/// `reported` is the provider's own vocabulary (Twilio's `MessageStatus`), not ours: the
/// names that match ours are the outcomes a report can move a message to.
pub fn plan_move(current: MessageStatus, reported: &str) -> Move {
    use MessageStatus as S;
    match current {
        S::Sending | S::Sent | S::Unknown => {}
        S::Planned
        | S::HeldOut
        | S::Deferred
        | S::Delivered
        | S::Undelivered
        | S::Failed
        | S::Suppressed
        | S::Skipped => return Move::Nothing,
    }
    match (MessageStatus::parse(reported), current) {
        (Some(next @ (S::Delivered | S::Undelivered | S::Failed)), _) => Move::To(next),
        (Some(S::Sent), S::Sending | S::Unknown) => Move::To(S::Sent),
        _ => Move::RecordOnly,
    }
}

impl Store {
    /// The message a link token belongs to, with its variant's deep link; `None` for a token
    /// no message has.
    pub async fn link_target(&self, token: &str) -> Result<Option<LinkTarget>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT m.tenant_id, m.message_id, m.release_id, m.variant_id, m.kind, v.deep_link, \
               COALESCE(vs.available <= 0, false) \
             FROM messages m LEFT JOIN variants v \
               ON v.tenant_id = m.tenant_id AND v.variant_id = m.variant_id \
             LEFT JOIN variant_stock vs \
               ON vs.tenant_id = m.tenant_id AND vs.variant_id = m.variant_id \
             WHERE m.link_token = $1",
            &[&token],
        )
        .await?;
        Ok(row.map(|r| LinkTarget {
            tenant_id: r.get(0),
            message_id: r.get(1),
            release_id: r.get(2),
            variant_id: r.get(3),
            kind: r.get(4),
            deep_link: r.get(5),
            sold_out: r.get(6),
        }))
    }

    /// Records a click on a message's link, and the message's first click if it had none.
    /// One statement: the click and the first-click mark are written together or not at all.
    /// A click on a text to an erased phone keeps no user agent: it may be the person's.
    ///
    /// A click that found the variant sold out with `rewait` on also puts the text's
    /// subscription back to waiting (from NOTIFIED), with its place in line: the shopper is
    /// texted again at the next restock.
    pub async fn record_click(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        user_agent: Option<&str>,
        outcome: ClickOutcome,
        rewait: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let rewait = rewait && outcome == ClickOutcome::SoldOut;
        execute(
            &client,
            "WITH click AS ( \
                 INSERT INTO clicks (tenant_id, click_id, message_id, clicked_at, user_agent, outcome) \
                 VALUES ($1, $2, $3, $4, CASE WHEN EXISTS ( \
                   SELECT 1 FROM messages m JOIN contacts c \
                     ON c.tenant_id = m.tenant_id AND c.contact_id = m.contact_id \
                   WHERE m.tenant_id = $1 AND m.message_id = $3 AND c.phone_e164 IS NULL) \
                 THEN NULL ELSE $5::text END, $6)), \
             rewaited AS ( \
                 UPDATE subscriptions s SET status = 'active', updated_at = $4 \
                 FROM messages m \
                 WHERE $7 AND m.tenant_id = $1 AND m.message_id = $3 \
                   AND s.tenant_id = m.tenant_id AND s.subscription_id = m.subscription_id \
                   AND s.status = 'notified') \
             UPDATE messages SET first_click_at = $4, updated_at = $4 \
             WHERE tenant_id = $1 AND message_id = $3 AND first_click_at IS NULL",
            &[
                &tenant_id,
                &Uuid::now_v7(),
                &message_id,
                &now,
                &user_agent,
                &outcome.as_str(),
                &rewait,
            ],
        )
        .await?;
        Ok(())
    }

    /// Applies a delivery report to the message with its provider id, in one transaction; see
    /// [`plan_move`] for what moves. A report (message id and status) is acted on once: its
    /// receipt is recorded in the same transaction, and a replay answers
    /// [`ReportOutcome::Replayed`]. A report that the recipient opted out at the provider
    /// (21610: the phone replied STOP to the sender) also records an opt-out of the phone in the
    /// message's tenant, as [`Store::opt_out`] does, with the source `sms`.
    pub async fn apply_delivery_report(
        &self,
        report: &DeliveryReport<'_>,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // First, so a copy racing this one waits here for its outcome. Reports that change
        // nothing are rolled back with their receipt: acting on them again changes nothing
        // either, and one about a message not recorded yet may find it later.
        let receipt = Receipt::Status {
            message_sid: report.provider_message_id,
            status: report.status,
        };
        if !crate::webhooks::remember(&tx, &receipt, now).await? {
            return Ok(ReportOutcome::Replayed);
        }
        // Locks the message, so concurrent reports about it (Twilio sends several, in any
        // order) apply one after the other. Lock order: message, then contact.
        let found = match find_reported(&tx, report.provider_message_id).await? {
            Some(found) => found,
            None => match report.message {
                None => return Ok(ReportOutcome::UnknownMessage),
                Some((tenant_id, message_id)) => {
                    match by_own_id(&tx, report, tenant_id, message_id).await? {
                        Some(found) => found,
                        None => return Ok(ReportOutcome::UnknownMessage),
                    }
                }
            },
        };
        if let Found::InFlight = found {
            // Rolled back with its receipt: the held report is acted on once, when applied.
            tx.rollback().await?;
            let (tenant_id, message_id) = report.message.unwrap_or_default();
            execute(
                &client,
                "INSERT INTO held_delivery_reports (tenant_id, message_id, message_sid, status, \
                   error_code, error_message, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, message_id, message_sid, status) DO NOTHING",
                &[
                    &tenant_id,
                    &message_id,
                    &report.provider_message_id,
                    &report.status,
                    &report.error_code,
                    &report.error_message,
                    &now,
                ],
            )
            .await?;
            return Ok(ReportOutcome::Held {
                tenant_id: tenant_id.to_owned(),
                message_id,
            });
        }
        let outcome = apply_to(&tx, found, report, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Applies the delivery reports held for texts whose provider id is now recorded (or whose
    /// outcome was given up as unknown, which the report settles), oldest first, at most
    /// `limit` of them; answers what each did. Each report is applied and forgotten in one
    /// transaction, with its receipt, as if it had just arrived.
    pub async fn apply_held_reports(
        &self,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportOutcome>, StoreError> {
        let client = self.client().await?;
        let ready = crate::cached::query(
            &client,
            "SELECT h.tenant_id, h.message_id, h.message_sid, h.status, h.error_code, \
               h.error_message FROM held_delivery_reports h \
             JOIN messages m ON m.tenant_id = h.tenant_id AND m.message_id = h.message_id \
             WHERE m.provider_message_id IS NOT NULL \
                OR (m.status <> 'sending' AND m.status <> 'planned') \
             ORDER BY h.received_at LIMIT $1",
            &[&limit],
        )
        .await?;
        drop(client);
        let mut outcomes = Vec::with_capacity(ready.len());
        for row in ready {
            let tenant_id: String = row.get(0);
            let message_id: Uuid = row.get(1);
            let sid: String = row.get(2);
            let status: String = row.get(3);
            let error_code: Option<String> = row.get(4);
            let error_message: Option<String> = row.get(5);
            let report = DeliveryReport {
                provider_message_id: &sid,
                status: &status,
                error_code: error_code.as_deref(),
                error_message: error_message.as_deref(),
                message: Some((&tenant_id, message_id)),
            };
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let held = execute(
                &tx,
                "DELETE FROM held_delivery_reports WHERE tenant_id = $1 AND message_id = $2 \
                   AND message_sid = $3 AND status = $4",
                &[&tenant_id, &message_id, &sid, &status],
            )
            .await?;
            if held == 0 {
                // Another replica applied it.
                continue;
            }
            let receipt = Receipt::Status {
                message_sid: &sid,
                status: &status,
            };
            let outcome = if !crate::webhooks::remember(&tx, &receipt, now).await? {
                ReportOutcome::Replayed
            } else {
                match find_reported(&tx, &sid).await? {
                    Some(found) => apply_to(&tx, found, &report, now).await?,
                    None => match by_own_id(&tx, &report, &tenant_id, message_id).await? {
                        Some(found @ Found::Row { .. }) => {
                            apply_to(&tx, found, &report, now).await?
                        }
                        // Sent again under another id, or erased: nothing to apply it to.
                        _ => ReportOutcome::UnknownMessage,
                    },
                }
            };
            tx.commit().await?;
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Forgets held reports older than `before` whose text never got a provider id.
    pub async fn prune_held_reports(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM held_delivery_reports WHERE received_at < $1",
            &[&before],
        )
        .await
    }
}

/// A reported message, locked.
enum Found {
    Row {
        tenant_id: String,
        message_id: Uuid,
        status: MessageStatus,
        contact_id: Uuid,
        provider_status: Option<String>,
    },
    /// Ours, with its send still in flight: its provider id is not known yet.
    InFlight,
}

/// The message with this provider id, locked. Lock order: message, then contact.
async fn find_reported(tx: &impl GenericClient, sid: &str) -> Result<Option<Found>, StoreError> {
    Ok(query_opt(
        tx,
        "SELECT tenant_id, message_id, status, contact_id, provider_status FROM messages \
         WHERE provider_message_id = $1 LIMIT 1 FOR UPDATE",
        &[&sid],
    )
    .await?
    .map(|row| Found::Row {
        tenant_id: row.get(0),
        message_id: row.get(1),
        status: row.get(2),
        contact_id: row.get(3),
        provider_status: row.get(4),
    }))
}

/// The message the callback URL named, when no message has the report's provider id: in flight
/// (held), or given up as unknown (the report tells what became of it: the provider id is
/// adopted). A message with another provider id is not this report's.
async fn by_own_id(
    tx: &impl GenericClient,
    report: &DeliveryReport<'_>,
    tenant_id: &str,
    message_id: Uuid,
) -> Result<Option<Found>, StoreError> {
    let Some(row) = query_opt(
        tx,
        "SELECT status, provider_message_id IS NULL FROM messages \
         WHERE tenant_id = $1 AND message_id = $2 FOR UPDATE",
        &[&tenant_id, &message_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let status: MessageStatus = row.get(0);
    let no_id: bool = row.get(1);
    if !no_id {
        return Ok(None);
    }
    match status {
        MessageStatus::Sending => Ok(Some(Found::InFlight)),
        MessageStatus::Unknown => {
            execute(
                tx,
                "UPDATE messages SET provider_message_id = $3 \
                 WHERE tenant_id = $1 AND message_id = $2",
                &[&tenant_id, &message_id, &report.provider_message_id],
            )
            .await?;
            find_reported(tx, report.provider_message_id).await
        }
        _ => Ok(None),
    }
}

/// Applies a report to its locked message (see [`plan_move`]), in the caller's transaction.
async fn apply_to(
    tx: &impl GenericClient,
    found: Found,
    report: &DeliveryReport<'_>,
    now: DateTime<Utc>,
) -> Result<ReportOutcome, StoreError> {
    let Found::Row {
        tenant_id,
        message_id,
        status: current,
        contact_id,
        provider_status,
    } = found
    else {
        return Ok(ReportOutcome::UnknownMessage);
    };
    {
        let unchanged = |status: MessageStatus| ReportOutcome::Unchanged {
            tenant_id: tenant_id.clone(),
            message_id,
            status,
        };
        let mut opted_out = false;
        let status = match plan_move(current, report.status) {
            Move::Nothing => return Ok(unchanged(current)),
            Move::RecordOnly
                if provider_status
                    .as_deref()
                    .is_some_and(|p| provider_rank(p) >= provider_rank(report.status)) =>
            {
                return Ok(unchanged(current));
            }
            Move::RecordOnly => {
                execute(
                    tx,
                    "UPDATE messages SET provider_status = $3, updated_at = $4 \
                     WHERE tenant_id = $1 AND message_id = $2",
                    &[&tenant_id, &message_id, &report.status, &now],
                )
                .await?;
                current
            }
            Move::To(next) => {
                let failure = matches!(next, MessageStatus::Failed | MessageStatus::Undelivered);
                let description = report
                    .error_message
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the provider reported the text {next}"));
                // A text the carrier took (sent, delivered or not) counts as sent for the
                // re-notify window even if the send's own record never landed.
                execute(
                    tx,
                    "UPDATE messages SET status = $3, provider_status = $4, updated_at = $5, \
                       sent_at = CASE WHEN $3 <> 'failed' THEN COALESCE(sent_at, $5) ELSE sent_at END, \
                       report_at = CASE WHEN $3 IN ('delivered', 'undelivered') THEN $5 ELSE report_at END, \
                       lease_until = NULL, lease_owner = NULL, \
                       last_error_code = CASE WHEN $6 THEN $7 ELSE last_error_code END, \
                       last_error_description = CASE WHEN $6 THEN $8 ELSE last_error_description END, \
                       last_error_permanent = CASE WHEN $6 THEN true ELSE last_error_permanent END, \
                       last_error_at = CASE WHEN $6 THEN $5 ELSE last_error_at END \
                     WHERE tenant_id = $1 AND message_id = $2",
                    &[
                        &tenant_id,
                        &message_id,
                        &next,
                        &report.status,
                        &now,
                        &failure,
                        &report.error_code,
                        &description,
                    ],
                )
                .await?;
                if failure && report.error_code == Some(PROVIDER_OPTED_OUT_CODE) {
                    opted_out = opt_out_contact(
                        tx,
                        &tenant_id,
                        contact_id,
                        ConsentSource::Sms,
                        PROVIDER_OPT_OUT_REASON,
                        now,
                    )
                    .await?;
                }
                next
            }
        };
        Ok(ReportOutcome::Applied {
            tenant_id,
            message_id,
            from: current,
            status,
            opted_out,
        })
    }
}

/// Records an opt-out of a contact and cancels its live subscriptions, like [`Store::opt_out`]
/// but by contact (a delivery report knows the message's contact, not its phone) and inside the
/// caller's transaction. An erased contact has no phone left to protect: nothing is written.
/// Answers whether the opt-out was recorded.
async fn opt_out_contact(
    tx: &impl GenericClient,
    tenant_id: &str,
    contact_id: Uuid,
    source: ConsentSource,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let phone: Option<String> = match query_opt(
        tx,
        "SELECT phone_e164 FROM contacts WHERE tenant_id = $1 AND contact_id = $2 FOR UPDATE",
        &[&tenant_id, &contact_id],
    )
    .await?
    {
        Some(row) => row.get(0),
        None => None,
    };
    if phone.is_none() {
        return Ok(false);
    }
    execute(
        tx,
        "INSERT INTO consent_events (tenant_id, contact_id, event_id, kind, source, reason, \
         occurred_at, recorded_at) VALUES ($1, $2, $3, 'opt_out', $4, $5, $6, $6)",
        &[
            &tenant_id,
            &contact_id,
            &Uuid::now_v7(),
            &source.as_str(),
            &reason,
            &now,
        ],
    )
    .await?;
    execute(
        tx,
        &format!(
            "UPDATE subscriptions SET status = 'cancelled', cancel_reason = 'opted_out', \
             updated_at = $3 WHERE tenant_id = $1 AND contact_id = $2 AND status IN {LIVE}"
        ),
        &[&tenant_id, &contact_id, &now],
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    #[test]
    fn final_messages_never_move() {
        for current in [Delivered, Undelivered, Failed] {
            for reported in ["sent", "delivered", "undelivered", "failed", "queued"] {
                assert_eq!(plan_move(current, reported), Move::Nothing, "{current}");
            }
        }
    }

    #[test]
    fn messages_that_never_left_ignore_reports() {
        for current in [Planned, HeldOut, Deferred, Suppressed, Skipped] {
            assert_eq!(plan_move(current, "delivered"), Move::Nothing);
        }
    }

    #[test]
    fn reports_move_in_flight_messages_forward() {
        assert_eq!(plan_move(Sent, "delivered"), Move::To(Delivered));
        assert_eq!(plan_move(Sent, "undelivered"), Move::To(Undelivered));
        assert_eq!(plan_move(Sent, "failed"), Move::To(Failed));
        assert_eq!(plan_move(Sending, "sent"), Move::To(Sent));
        assert_eq!(plan_move(Sending, "delivered"), Move::To(Delivered));
        assert_eq!(plan_move(Unknown, "sent"), Move::To(Sent));
        assert_eq!(plan_move(Sent, "sent"), Move::RecordOnly);
        for progress in [
            "queued",
            "sending",
            "accepted",
            "scheduled",
            "read",
            "unknown",
        ] {
            assert_eq!(plan_move(Sent, progress), Move::RecordOnly);
            assert_eq!(plan_move(Sending, progress), Move::RecordOnly);
        }
    }
}
