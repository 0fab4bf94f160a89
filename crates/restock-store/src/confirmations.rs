//! Double opt-in confirmation texts: which phones need one, claiming the due ones under a lease,
//! the last check before a hand-over, and lapsing subscriptions never confirmed.
//!
//! A phone's pending batch is its subscriptions awaiting confirmation created since its last
//! confirmation text; one text covers the batch. A text is due no sooner than a day after the
//! phone's previous one. Once `handed_at` is set the text may have reached the provider, so a
//! lost lease never sends it again (it ends as `unknown`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use restock_domain::ConfirmationStatus;
use uuid::Uuid;

use crate::cached::{execute, query};
use crate::{Store, StoreError};

/// At most one confirmation text a day to a phone.
pub const CONFIRMATION_SPACING: chrono::Duration = chrono::Duration::hours(24);

/// A confirmation text claimed for sending.
#[derive(Debug, Clone)]
pub struct ConfirmationJob {
    pub tenant_id: String,
    pub confirmation_id: Uuid,
    pub contact_id: Uuid,
    pub phone_e164: Option<String>,
    /// The shopper's time zone, from their newest pending subscription.
    pub time_zone: Option<String>,
    /// The newest pending subscription's item, for the text.
    pub title: Option<String>,
    pub attempts: i32,
    /// Whether the phone still has a subscription awaiting confirmation (at claim time).
    pub pending: bool,
}

/// What became of a claimed confirmation.
#[derive(Debug, Clone)]
pub enum ConfirmationOutcome {
    Sent {
        sender_id: String,
        provider_message_id: String,
        sent_at: DateTime<Utc>,
    },
    /// Not now: quiet hours, a cap, or a transient failure.
    Later {
        due_at: DateTime<Utc>,
        error: Option<String>,
        /// Whether the attempt counts (a send was tried).
        attempted: bool,
    },
    /// Refused for good by the provider.
    Failed { error: String },
    /// No longer needed: confirmed, opted out or erased meanwhile.
    Cancelled,
    /// The request may have reached the provider: never sent again.
    Unknown { error: String },
}

/// The columns an outcome sets.
struct Recorded<'a> {
    status: ConfirmationStatus,
    due: Option<DateTime<Utc>>,
    sender: Option<&'a str>,
    sid: Option<&'a str>,
    sent_at: Option<DateTime<Utc>>,
    error: Option<&'a str>,
    /// The claim's attempt is given back (nothing was tried).
    uncount: bool,
}

impl Store {
    /// Plans a confirmation text for every phone of `tenant_id` with subscriptions awaiting
    /// confirmation since its last one (at most `limit` phones). Answers how many were planned.
    pub async fn schedule_confirmations(
        &self,
        tenant_id: &str,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let spacing = chrono::Duration::to_std(&CONFIRMATION_SPACING).unwrap_or_default();
        let spacing = spacing.as_secs_f64();
        execute(
            &client,
            "INSERT INTO confirmation_texts (tenant_id, confirmation_id, contact_id, status, \
               due_at, created_at, updated_at) \
             SELECT p.tenant_id, gen_random_uuid(), p.contact_id, 'planned', \
               GREATEST($2, COALESCE(l.last_sent + make_interval(secs => $4), $2)), $2, $2 \
             FROM (SELECT s.tenant_id, s.contact_id, max(s.created_at) AS newest \
                   FROM subscriptions s \
                   WHERE s.tenant_id = $1 AND s.status = 'pending_confirmation' \
                     AND s.expires_at > $2 \
                   GROUP BY s.tenant_id, s.contact_id) p \
             JOIN contacts c ON c.tenant_id = p.tenant_id AND c.contact_id = p.contact_id \
             LEFT JOIN LATERAL ( \
               SELECT max(t.created_at) AS last_created, max(t.sent_at) AS last_sent \
               FROM confirmation_texts t \
               WHERE t.tenant_id = p.tenant_id AND t.contact_id = p.contact_id) l ON true \
             WHERE c.phone_e164 IS NOT NULL \
               AND (l.last_created IS NULL OR p.newest > l.last_created) \
             LIMIT $3 \
             ON CONFLICT (tenant_id, contact_id) WHERE status IN ('planned', 'sending') \
               DO NOTHING",
            &[&tenant_id, &now, &limit, &spacing],
        )
        .await
    }

    /// Claims up to `limit` due confirmation texts for `owner` for `lease`.
    pub async fn claim_confirmations(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConfirmationJob>, StoreError> {
        let client = self.client().await?;
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let rows = query(
            &client,
            "WITH due AS ( \
               SELECT tenant_id, confirmation_id FROM confirmation_texts \
               WHERE status = 'planned' AND due_at <= $3 \
               ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
               UPDATE confirmation_texts t SET status = 'sending', lease_owner = $1, \
                 lease_until = $2, attempts = t.attempts + 1, updated_at = $3 \
               FROM due WHERE t.tenant_id = due.tenant_id \
                 AND t.confirmation_id = due.confirmation_id \
               RETURNING t.tenant_id, t.confirmation_id, t.contact_id, t.attempts) \
             SELECT cl.tenant_id, cl.confirmation_id, cl.contact_id, c.phone_e164, \
               s.time_zone, v.title, cl.attempts, s.found \
             FROM claimed cl \
             JOIN contacts c ON c.tenant_id = cl.tenant_id AND c.contact_id = cl.contact_id \
             LEFT JOIN LATERAL ( \
               SELECT s.time_zone, s.variant_id, true AS found FROM subscriptions s \
               WHERE s.tenant_id = cl.tenant_id AND s.contact_id = cl.contact_id \
                 AND s.status = 'pending_confirmation' \
               ORDER BY s.created_at DESC LIMIT 1) s ON true \
             LEFT JOIN variants v ON v.tenant_id = cl.tenant_id AND v.variant_id = s.variant_id",
            &[&owner, &until, &now, &limit],
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| ConfirmationJob {
                tenant_id: r.get(0),
                confirmation_id: r.get(1),
                contact_id: r.get(2),
                phone_e164: r.get(3),
                time_zone: r.get(4),
                title: r.get(5),
                attempts: r.get(6),
                pending: r.get::<_, Option<bool>>(7).unwrap_or(false),
            })
            .collect())
    }

    /// The last check before a confirmation's hand-over, under a [`crate::handover::Fence`] on
    /// its contact: the claim is still `owner`'s (a lease that ran out was given back, and the
    /// sender judges its lease on its own monotonic clock before the request), the phone still
    /// has a subscription awaiting confirmation, is neither opted out nor erased. Marks it
    /// handed when it may go; answers whether it may.
    pub async fn mark_confirmation_handed(
        &self,
        owner: &str,
        job: &ConfirmationJob,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "UPDATE confirmation_texts t SET handed_at = $4, updated_at = $4 \
             WHERE t.tenant_id = $1 AND t.confirmation_id = $2 AND t.status = 'sending' \
               AND t.lease_owner = $3 \
               AND EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = t.tenant_id \
                 AND c.contact_id = t.contact_id AND c.phone_e164 IS NOT NULL \
                 AND c.erased_at IS NULL) \
               AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.tenant_id = t.tenant_id \
                 AND s.contact_id = t.contact_id AND s.status = 'pending_confirmation' \
                 AND s.expires_at > $4) \
               AND COALESCE((SELECT e.kind FROM consent_events e \
                 WHERE e.tenant_id = t.tenant_id AND e.contact_id = t.contact_id \
                   AND e.kind IN ('opt_in', 'opt_out') ORDER BY e.seq DESC LIMIT 1), '') \
                 <> 'opt_out'",
            &[&job.tenant_id, &job.confirmation_id, &owner, &now],
        )
        .await?;
        Ok(n == 1)
    }

    /// Records what became of a claimed confirmation, if its lease is still `owner`'s.
    pub async fn record_confirmation(
        &self,
        owner: &str,
        tenant_id: &str,
        confirmation_id: Uuid,
        outcome: &ConfirmationOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let none = |status| Recorded {
            status,
            due: None,
            sender: None,
            sid: None,
            sent_at: None,
            error: None,
            uncount: false,
        };
        let r = match outcome {
            ConfirmationOutcome::Sent {
                sender_id,
                provider_message_id,
                sent_at,
            } => Recorded {
                sender: Some(sender_id),
                sid: Some(provider_message_id),
                sent_at: Some(*sent_at),
                ..none(ConfirmationStatus::Sent)
            },
            ConfirmationOutcome::Later {
                due_at,
                error,
                attempted,
            } => Recorded {
                due: Some(*due_at),
                error: error.as_deref(),
                uncount: !attempted,
                ..none(ConfirmationStatus::Planned)
            },
            ConfirmationOutcome::Failed { error } => Recorded {
                error: Some(error),
                ..none(ConfirmationStatus::Failed)
            },
            ConfirmationOutcome::Cancelled => Recorded {
                uncount: true,
                ..none(ConfirmationStatus::Cancelled)
            },
            ConfirmationOutcome::Unknown { error } => Recorded {
                error: Some(error),
                ..none(ConfirmationStatus::Unknown)
            },
        };
        let n = execute(
            &client,
            "UPDATE confirmation_texts SET status = $4, due_at = COALESCE($5, due_at), \
               sender_id = COALESCE($6, sender_id), provider_message_id = $7, sent_at = $8, \
               last_error = COALESCE($9, last_error), \
               attempts = attempts - CASE WHEN $10 THEN 1 ELSE 0 END, \
               lease_owner = NULL, lease_until = NULL, \
               handed_at = CASE WHEN $4 = 'planned' THEN NULL ELSE handed_at END, \
               updated_at = $11 \
             WHERE tenant_id = $1 AND confirmation_id = $2 AND status = 'sending' \
               AND lease_owner = $3",
            &[
                &tenant_id,
                &confirmation_id,
                &owner,
                &r.status,
                &r.due,
                &r.sender,
                &r.sid,
                &r.sent_at,
                &r.error,
                &r.uncount,
                &now,
            ],
        )
        .await?;
        Ok(n == 1)
    }

    /// Settles confirmations whose lease ran out: back in line if no hand-over began, else
    /// `unknown` (never sent twice). Answers (requeued, unknown).
    pub async fn expire_confirmation_leases(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let requeued = execute(
            &client,
            "UPDATE confirmation_texts SET status = 'planned', lease_owner = NULL, \
               lease_until = NULL, updated_at = $1 \
             WHERE status = 'sending' AND lease_until <= $1 AND handed_at IS NULL",
            &[&now],
        )
        .await?;
        let unknown = execute(
            &client,
            "UPDATE confirmation_texts SET status = 'unknown', lease_owner = NULL, \
               lease_until = NULL, updated_at = $1, \
               last_error = 'the lease ran out after the hand-over began' \
             WHERE status = 'sending' AND lease_until <= $1 AND handed_at IS NOT NULL",
            &[&now],
        )
        .await?;
        Ok((requeued, unknown))
    }

    /// Lapses `tenant_id`'s subscriptions awaiting confirmation since before `before`, and
    /// cancels the planned confirmations of phones left with nothing to confirm. Answers how
    /// many subscriptions lapsed.
    pub async fn lapse_unconfirmed(
        &self,
        tenant_id: &str,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let lapsed = execute(
            &client,
            "UPDATE subscriptions SET status = 'lapsed', updated_at = $3 \
             WHERE tenant_id = $1 AND status = 'pending_confirmation' AND created_at < $2",
            &[&tenant_id, &before, &now],
        )
        .await?;
        if lapsed > 0 {
            execute(
                &client,
                "UPDATE confirmation_texts t SET status = 'cancelled', updated_at = $2 \
                 WHERE t.tenant_id = $1 AND t.status = 'planned' \
                   AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.tenant_id = t.tenant_id \
                     AND s.contact_id = t.contact_id AND s.status = 'pending_confirmation')",
                &[&tenant_id, &now],
            )
            .await?;
        }
        Ok(lapsed)
    }
}
