//! Provider webhooks acted on once: each inbound text (by its MessageSid) and each status
//! callback (by MessageSid and MessageStatus) is remembered in the transaction that acts on it,
//! so a replay, whether a provider retry or a captured request sent again, changes nothing.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use restock_domain::{ConsentSource, ConsentState, Phone};

use crate::cached::{execute, query_opt};
use crate::waitlist::{self, NewConsent};
use crate::{Store, StoreError};

/// A webhook request as the provider identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt<'a> {
    /// An inbound text.
    Inbound { message_sid: &'a str },
    /// A delivery-status callback: one per status the message reaches.
    Status {
        message_sid: &'a str,
        status: &'a str,
    },
}

/// Records a receipt unless it is recorded already; answers whether it is new. A concurrent
/// transaction recording the same receipt makes this one wait for its outcome, so of two
/// copies racing, exactly one is new.
pub(crate) async fn remember(
    tx: &impl GenericClient,
    receipt: &Receipt<'_>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let (kind, sid, status) = match *receipt {
        Receipt::Inbound { message_sid } => ("inbound", message_sid, ""),
        Receipt::Status {
            message_sid,
            status,
        } => ("status", message_sid, status),
    };
    let n = execute(
        tx,
        "INSERT INTO webhook_receipts (kind, message_sid, status, received_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&kind, &sid, &status, &now],
    )
    .await?;
    Ok(n == 1)
}

/// What an inbound keyword asks of every tenant on the sender it was texted to.
#[derive(Debug, Clone)]
pub enum InboundAction<'a> {
    /// Opt the phone out; `reason` is the keyword as said.
    OptOut { reason: &'a str },
    /// Confirm pending subscriptions, or else record a new opt-in with `consent`.
    OptIn { consent: &'a NewConsent },
    /// Nothing to record (HELP): only the receipt.
    Nothing,
}

/// One tenant concerned by an inbound text.
#[derive(Debug, Clone, Copy)]
pub struct InboundTenant<'a> {
    pub tenant_id: &'a str,
    pub double_opt_in: bool,
}

/// What an inbound keyword did in one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Opted out; this many live subscriptions were cancelled.
    OptedOut {
        cancelled: u32,
    },
    /// Opted in; `confirmed` when pending subscriptions were confirmed rather than a new
    /// opt-in recorded.
    OptedIn {
        confirmed: bool,
    },
    Nothing,
}

impl Store {
    /// Acts on an inbound keyword in every tenant, in one transaction with its receipt: all or
    /// nothing, and once. Answers `None` for a text already acted on (nothing written).
    pub async fn inbound_keyword(
        &self,
        message_sid: &str,
        phone: &Phone,
        tenants: &[InboundTenant<'_>],
        action: &InboundAction<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<InboundOutcome>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !remember(&tx, &Receipt::Inbound { message_sid }, now).await? {
            return Ok(None);
        }
        let mut outcomes = Vec::with_capacity(tenants.len());
        for t in tenants {
            let outcome = match action {
                InboundAction::OptOut { reason } => InboundOutcome::OptedOut {
                    cancelled: waitlist::opt_out_in(
                        &tx,
                        t.tenant_id,
                        phone,
                        ConsentSource::Sms,
                        Some(reason),
                        now,
                    )
                    .await?,
                },
                InboundAction::OptIn { consent } => InboundOutcome::OptedIn {
                    confirmed: sms_opt_in(&tx, t, phone, consent, now).await?,
                },
                InboundAction::Nothing => InboundOutcome::Nothing,
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(Some(outcomes))
    }

    /// Forgets receipts older than `before`; answers how many.
    pub async fn prune_webhook_receipts(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM webhook_receipts WHERE received_at < $1",
            &[&before],
        )
        .await
    }
}

/// An opt-in by text in one tenant. A phone with a subscription awaiting a double opt-in
/// confirmation confirms it (the text proves the phone's owner); otherwise it is a new opt-in,
/// which a text also confirms. Answers whether a pending subscription was confirmed.
async fn sms_opt_in(
    tx: &impl GenericClient,
    tenant: &InboundTenant<'_>,
    phone: &Phone,
    consent: &NewConsent,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let pending = query_opt(
        tx,
        "SELECT s.subscription_id FROM subscriptions s JOIN contacts c \
           ON c.tenant_id = s.tenant_id AND c.contact_id = s.contact_id \
         WHERE s.tenant_id = $1 AND c.phone_e164 = $2 AND s.status = 'pending_confirmation' \
           AND s.expires_at > $3 ORDER BY s.seq LIMIT 1",
        &[&tenant.tenant_id, &phone.e164(), &now],
    )
    .await?;
    if let Some(row) = pending {
        match waitlist::confirm_in(
            tx,
            tenant.tenant_id,
            row.get(0),
            ConsentSource::Sms,
            tenant.double_opt_in,
            now,
        )
        .await
        {
            Ok(_) => return Ok(true),
            // Opted out since: only a new opt-in helps. (Nothing was written.)
            Err(StoreError::OptedOut | StoreError::WrongState(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let _: ConsentState = waitlist::opt_in_in(
        tx,
        tenant.tenant_id,
        phone,
        consent,
        tenant.double_opt_in,
        now,
    )
    .await?;
    Ok(false)
}
