//! Consent: the one path by which a phone opts out of texts or back in, however it said so:
//! through the API (`OptOut`, `OptIn`), by texting a keyword back (STOP, START; the inbound
//! webhook), or as the SMS provider reports it when a text is refused (the sender). Every way
//! records the same ledger event and cancels the same subscriptions.

use chrono::{DateTime, Utc};
use restock_domain::{ConsentSource, ConsentState, Phone, TenantPolicy};
use restock_store::waitlist::NewConsent;
use restock_store::webhooks::{InboundAction, InboundOutcome, InboundTenant};
use restock_store::StoreError;

use crate::state::AppState;

/// Who says the phone opted out.
#[derive(Debug, Clone, Copy)]
pub enum OptOutBy<'a> {
    /// A caller of the API, on the shopper's behalf.
    Api {
        source: ConsentSource,
        reason: Option<&'a str>,
    },
    /// The SMS provider, refusing a text because the phone opted out with it.
    Provider,
}

impl OptOutBy<'_> {
    fn recorded(self) -> (ConsentSource, Option<&'static str>, Option<String>) {
        match self {
            OptOutBy::Api { source, reason } => (source, None, reason.map(str::to_string)),
            OptOutBy::Provider => (
                ConsentSource::Sms,
                Some("the provider reports the phone opted out"),
                None,
            ),
        }
    }
}

/// Opts `phone` out of `tenant_id`'s texts; the subscriptions it cancelled.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, phone = %phone.redacted()))]
pub async fn opt_out(
    state: &AppState,
    tenant_id: &str,
    phone: &Phone,
    by: OptOutBy<'_>,
) -> Result<u32, StoreError> {
    let (source, fixed, given) = by.recorded();
    let reason = fixed.or(given.as_deref());
    let cancelled = state
        .store
        .opt_out(tenant_id, phone, source, reason, state.clock.now())
        .await?;
    tracing::info!(phone = %phone.redacted(), cancelled, ?source, "opt-out");
    Ok(cancelled)
}

/// Opts `phone` back in to `tenant_id`'s texts with `consent`; the phone's consent after it
/// (pending confirmation under double opt-in).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, phone = %phone.redacted()))]
pub async fn opt_in(
    state: &AppState,
    tenant_id: &str,
    policy: &TenantPolicy,
    phone: &Phone,
    consent: &NewConsent,
    now: DateTime<Utc>,
) -> Result<ConsentState, StoreError> {
    let consent_state = state
        .store
        .opt_in(tenant_id, phone, consent, policy.double_opt_in, now)
        .await?;
    tracing::info!(phone = %phone.redacted(), ?consent_state, "opt-in");
    Ok(consent_state)
}

/// What a keyword texted back asks for.
#[derive(Debug, Clone, Copy)]
pub enum Keyword<'a> {
    /// STOP and its synonyms, as said (recorded as the opt-out's reason).
    OptOut(&'a str),
    /// START, UNSTOP, YES: confirms pending subscriptions, or else opts back in.
    OptIn(&'a str),
    /// HELP: nothing to record but the receipt.
    Help,
}

/// Acts on a keyword `phone` texted to `to`, for every tenant that uses that sender, once per
/// provider message id: `None` when that message was acted on already (a retry or a replay,
/// which must not undo what the phone said since).
#[tracing::instrument(skip_all, fields(phone = %phone.redacted(), to, message_sid))]
pub async fn keyword(
    state: &AppState,
    message_sid: &str,
    phone: &Phone,
    to: &str,
    tenants: &[(&str, &TenantPolicy)],
    keyword: Keyword<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Vec<InboundOutcome>>, StoreError> {
    let consent;
    let action = match keyword {
        Keyword::OptOut(word) => InboundAction::OptOut { reason: word },
        Keyword::OptIn(word) => {
            consent = NewConsent {
                source: ConsentSource::Sms,
                text: format!("Replied {word} to {to}"),
                ip_address: None,
                user_agent: None,
                captured_at: now,
            };
            InboundAction::OptIn { consent: &consent }
        }
        Keyword::Help => InboundAction::Nothing,
    };
    let concerned: Vec<InboundTenant> = tenants
        .iter()
        .map(|(tenant_id, policy)| InboundTenant {
            tenant_id,
            double_opt_in: policy.double_opt_in,
        })
        .collect();
    let outcomes = state
        .store
        .inbound_keyword(message_sid, phone, &concerned, &action, now)
        .await?;
    for ((tenant_id, _), outcome) in tenants.iter().zip(outcomes.iter().flatten()) {
        match outcome {
            InboundOutcome::OptedOut { cancelled } => tracing::info!(
                tenant_id,
                phone = %phone.redacted(),
                cancelled,
                "opt-out by text"
            ),
            InboundOutcome::OptedIn { confirmed } => tracing::info!(
                tenant_id,
                phone = %phone.redacted(),
                confirmed,
                "opt-in by text"
            ),
            InboundOutcome::Nothing => {}
        }
    }
    Ok(outcomes)
}
