//! Double opt-in: restock sends the confirmation text itself, and lapses what is never
//! confirmed.
//!
//! For each double opt-in tenant, every `poll`: subscriptions awaiting confirmation longer than
//! the tenant's window lapse; each phone with a new pending batch gets one confirmation text
//! planned (no sooner than a day after its previous one); due texts are claimed under a lease,
//! wait for the phone's texting hours and its caps (the same Redis buckets as restock texts),
//! pass the same opt-out fence as restock texts, and go out. A shopper who replies YES confirms
//! every pending subscription of the phone (the inbound webhook).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use restock_caps::CapAnswer;
use restock_domain::quiet_hours;
use restock_domain::TenantPolicy;
use restock_sms::provider::{OutboundSms, SendError};
use restock_store::confirmations::{ConfirmationJob, ConfirmationOutcome};
use tokio_util::sync::CancellationToken;

use crate::workers::scheduler::sender_of;
use crate::workers::sender::text_caps;
use crate::workers::Engine;

/// Confirmations claimed per pass.
const BATCH: i64 = 100;
/// How long a transient failure waits before the next attempt.
const RETRY_AFTER: chrono::Duration = chrono::Duration::minutes(1);

/// Runs until `stop` is cancelled.
pub async fn run(engine: Arc<Engine>, stop: CancellationToken) {
    loop {
        if let Err(e) = pass(&engine).await {
            tracing::warn!(error = %e, "a confirmation pass failed; retrying later");
        }
        tokio::select! {
            _ = tokio::time::sleep(engine.poll().max(Duration::from_millis(200))) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass of the loop of [`run`] (for callers that step the workers).
pub async fn run_once(engine: &Arc<Engine>) -> Result<(), restock_store::StoreError> {
    pass(engine).await
}

async fn pass(engine: &Arc<Engine>) -> Result<(), restock_store::StoreError> {
    let state = &engine.state;
    let store = &state.store;
    let now = state.clock.now();
    for (tenant_id, policy) in state.tenants.iter().filter(|(_, p)| p.double_opt_in) {
        let window = chrono::Duration::hours(policy.confirmation_window_hours.into());
        let lapsed = store
            .lapse_unconfirmed(tenant_id, now - window, now)
            .await?;
        if lapsed > 0 {
            tracing::info!(%tenant_id, lapsed, "subscriptions never confirmed lapsed");
        }
        store.schedule_confirmations(tenant_id, 1_000, now).await?;
    }
    let (requeued, unknown) = store.expire_confirmation_leases(now).await?;
    if requeued + unknown > 0 {
        tracing::info!(
            requeued,
            unknown,
            "confirmation leases ran out: back in line, or unknown once handed over"
        );
    }
    let claimed_at = Instant::now();
    let jobs = store
        .claim_confirmations(&engine.owner, engine.lease(), BATCH, now)
        .await?;
    let lease_end = claimed_at + engine.lease().saturating_sub(engine.margin());
    for job in jobs {
        let outcome = confirm(engine, &job, lease_end).await;
        store
            .record_confirmation(
                &engine.owner,
                &job.tenant_id,
                job.confirmation_id,
                &outcome,
                state.clock.now(),
            )
            .await?;
    }
    Ok(())
}

/// Decides and, when it may, sends one confirmation text.
async fn confirm(
    engine: &Arc<Engine>,
    job: &ConfirmationJob,
    lease_end: Instant,
) -> ConfirmationOutcome {
    let state = &engine.state;
    let Some(policy) = state.tenants.get(&job.tenant_id) else {
        return ConfirmationOutcome::Cancelled;
    };
    let Some(phone) = job.phone_e164.as_deref().filter(|_| job.pending) else {
        // Confirmed, cancelled, opted out or erased meanwhile: nothing left to ask.
        tracing::info!(tenant_id = %job.tenant_id, confirmation_id = %job.confirmation_id, pending = job.pending, "confirmation no longer needed");
        return ConfirmationOutcome::Cancelled;
    };
    let now = state.clock.now();
    let region = crate::workers::region_of(phone);
    // Texting hours: the shopper's zone, else every zone of the phone's country.
    if let Some(at) = texting_hours(policy, job.time_zone.as_deref(), region.as_deref(), now) {
        if at > now {
            return later(at, None, false);
        }
    }
    let Some(sender) = policy.sender_for(region.as_deref()).map(str::to_string) else {
        return ConfirmationOutcome::Failed {
            error: "no_sender_for_country".into(),
        };
    };
    // The phone's and the sender's caps, as for restock texts: a confirmation is a text too.
    let request = text_caps(policy, &job.tenant_id, job.contact_id, &sender);
    match engine.caps.check(&[request]).await {
        Ok(answers) => {
            if let Some(CapAnswer::Denied { retry_at, .. }) = answers.first() {
                let at = now + (*retry_at - Utc::now());
                return later(at.max(now + chrono::Duration::seconds(1)), None, false);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "caps unavailable; the confirmation waits");
            return later(now + chrono::Duration::seconds(5), None, false);
        }
    }
    if Instant::now() >= lease_end {
        return later(now, None, false);
    }
    // The same fence as restock texts: an opt-out that answered is never followed by a text.
    let hold = lease_end.saturating_duration_since(Instant::now()) + engine.margin();
    let fence = match state
        .store
        .fence_contacts(&[(job.tenant_id.clone(), job.contact_id)], hold)
        .await
    {
        Ok(f) => f,
        Err(e) => return later(now, Some(format!("fence: {e}")), false),
    };
    let go = state
        .store
        .mark_confirmation_handed(&engine.owner, job, state.clock.now())
        .await;
    let outcome = match go {
        Err(e) => later(now, Some(format!("last check: {e}")), false),
        Ok(false) => {
            tracing::info!(tenant_id = %job.tenant_id, confirmation_id = %job.confirmation_id, "confirmation no longer needed (or its lease lost) at the last check");
            ConfirmationOutcome::Cancelled
        }
        Ok(true) => send(engine, policy, job, phone, &sender, lease_end).await,
    };
    fence.release().await;
    outcome
}

async fn send(
    engine: &Engine,
    policy: &TenantPolicy,
    job: &ConfirmationJob,
    phone: &str,
    sender: &str,
    lease_end: Instant,
) -> ConfirmationOutcome {
    let now = engine.state.clock.now();
    if Instant::now() >= lease_end {
        return later(now, None, false);
    }
    let sms = OutboundSms {
        reference: job.confirmation_id.to_string(),
        to: phone.to_string(),
        from: sender_of(sender),
        body: body(policy, job.title.as_deref()),
        status_callback: None,
        validity: Some(Duration::from_secs(4 * 3600)),
        not_after: Some(lease_end),
        fallback_from: policy.fallback_sender_id.as_deref().map(sender_of),
        traceparent: None,
    };
    match engine.provider.send(&sms).await {
        Ok(receipt) => {
            engine
                .state
                .metrics
                .message_outcome(&job.tenant_id, "confirmation_sent");
            ConfirmationOutcome::Sent {
                sender_id: sender.to_string(),
                provider_message_id: receipt.provider_message_id,
                sent_at: now,
            }
        }
        Err(SendError::Late) => later(now, None, false),
        Err(e @ (SendError::Transient { .. } | SendError::Config { .. }))
            if job.attempts < engine.settings.max_attempts as i32 =>
        {
            later(now + RETRY_AFTER, Some(e.to_string()), true)
        }
        Err(SendError::Unknown { reason }) => ConfirmationOutcome::Unknown { error: reason },
        Err(e) => ConfirmationOutcome::Failed {
            error: e.to_string(),
        },
    }
}

fn later(due_at: DateTime<Utc>, error: Option<String>, attempted: bool) -> ConfirmationOutcome {
    ConfirmationOutcome::Later {
        due_at,
        error,
        attempted,
    }
}

/// The tenant's confirmation text, with the opt-out language.
pub fn body(policy: &TenantPolicy, title: Option<&str>) -> String {
    let brand = if policy.display_name.is_empty() {
        "restock"
    } else {
        &policy.display_name
    };
    let text = policy
        .confirmation_template
        .replace("{brand}", brand)
        .replace(
            "{title}",
            title.filter(|t| !t.is_empty()).unwrap_or("your item"),
        );
    if policy.opt_out_text.is_empty() {
        text
    } else {
        format!("{text} {}", policy.opt_out_text)
    }
}

/// The first moment at or after `now` in the recipient's texting hours.
fn texting_hours(
    policy: &TenantPolicy,
    time_zone: Option<&str>,
    region: Option<&str>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let (start, end) = policy.quiet_window();
    let zones: Vec<Tz> = match time_zone.and_then(|t| t.parse::<Tz>().ok()) {
        Some(tz) => vec![tz],
        None => match region {
            Some(r) => quiet_hours::zones_for_region(r),
            None => vec![chrono_tz::UTC],
        },
    };
    quiet_hours::next_allowed(&zones, start, end, now)
}
