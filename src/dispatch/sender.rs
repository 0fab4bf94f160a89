//! A sender: claims due messages in batches, checks each one's eligibility again (consent may
//! have been withdrawn, quiet hours may have begun), takes capacity from the caps, hands the
//! texts to the provider with bounded concurrency, and records every outcome.
//!
//! The sender's throughput is paced here, in memory: a text the sender bucket refuses waits in
//! the batch for the token the caps name, so texts released together (a wave, the morning after
//! quiet hours) go out at the sender's pace in plan order, never as one burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use restock_caps::{Bucket, CapAnswer, CapRequest, Scope, MAX_WINDOW_CAPACITY};
use restock_domain::eligibility::{Decision, Outcome as Verdict, Reason, RestockContext};
use restock_domain::waves::backoff;
use restock_domain::{ConsentSource, Phone, TenantPolicy};
use restock_sms::provider::{OutboundSms, SendError};
use restock_store::dispatch::{Claimed, Outcome, OutcomeError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::planner::{link_token, stock_for, Renderer};
use super::scheduler::sender_of;
use super::{evaluate, Engine, Known};

/// The order of the limits in every cap request; a denial names one by index.
const PHONE: usize = 0;
const SENDER: usize = 1;

/// Added to the sender's one-second window; see `cap_request`.
const SENDER_GUARD: Duration = Duration::from_millis(250);

/// Longest wait between two retries of a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long after an unknown outcome the provider is asked about it (it lists new messages
/// with some delay).
const RECONCILE_AFTER: chrono::Duration = chrono::Duration::seconds(10);

pub async fn run(engine: Arc<Engine>, index: u32, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        // Registered before the claim, so a wave opened while claiming is not missed.
        let work = engine.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        let now = engine.state.clock.now();
        let claimed = engine
            .state
            .store
            .claim_due(
                &engine.owner,
                engine.lease(),
                i64::from(engine.settings.batch_size),
                now,
            )
            .await;
        match claimed {
            Ok(batch) if !batch.is_empty() => {
                failures = 0;
                if let Err(e) = process(&engine, batch).await {
                    tracing::warn!(sender = index, error = %e, "recording a batch failed; its leases will be reconciled");
                }
                continue;
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(sender = index, error = %e, failures, "claiming messages failed");
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = &mut work => {}
            _ = tokio::time::sleep(engine.poll() * failures.clamp(1, 8)) => {}
        }
    }
}

/// One claimed message on its way.
struct Item {
    claimed: Claimed,
    phone: String,
    stock: Vec<(String, i64)>,
    request: CapRequest,
}

async fn process(engine: &Arc<Engine>, batch: Vec<Claimed>) -> anyhow::Result<()> {
    let state = &engine.state;
    let now = state.clock.now();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut levels: HashMap<(String, String), Vec<(String, i64)>> = HashMap::new();
    let mut pending = Vec::new();
    for c in batch {
        let Some(policy) = state.tenants.get(&c.tenant_id) else {
            outcomes.push(Outcome::status(
                &c,
                "skipped",
                Some("tenant_unknown".into()),
                None,
            ));
            continue;
        };
        let Some(phone) = c.candidate.phone_e164.clone() else {
            outcomes.push(Outcome::status(
                &c,
                "skipped",
                Some("phone_erased".into()),
                None,
            ));
            continue;
        };
        let key = (c.tenant_id.clone(), c.variant_id.clone());
        if !levels.contains_key(&key) {
            let l = state.store.stock_levels(&key.0, &key.1).await?;
            levels.insert(key.clone(), l);
        }
        let stock = stock_for(c.location_id.as_deref(), &levels[&key]);
        let decision = decide(policy, &c, &stock, now, None, None);
        match decision.outcome {
            Verdict::SendNow => pending.push(Item {
                request: cap_request(policy, &c),
                claimed: c,
                phone,
                stock,
            }),
            _ => outcomes.push(not_now(engine, &c, &decision)),
        }
    }

    // Capacity, then the hand-over; texts the sender bucket refuses wait for their token.
    let deadline = Instant::now() + engine.lease() / 2;
    let mut sends = JoinSet::new();
    while !pending.is_empty() {
        let requests: Vec<CapRequest> = pending.iter().map(|i| i.request.clone()).collect();
        let answers = match engine.caps.check(&requests).await {
            Ok(a) => a,
            Err(e) => {
                // Fail closed: nothing goes out without its caps; the batch goes back in line.
                tracing::warn!(error = %e, "caps unavailable; the batch waits");
                let back: Vec<&Claimed> = pending.iter().map(|i| &i.claimed).collect();
                state
                    .store
                    .unclaim(&engine.owner, &back, state.clock.now())
                    .await?;
                pending.clear();
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
        };
        let mut again = Vec::new();
        let mut wake: Option<DateTime<Utc>> = None;
        for (item, answer) in pending.into_iter().zip(answers) {
            match answer {
                CapAnswer::Granted => {
                    let permit = engine.in_flight.clone().acquire_owned().await?;
                    let engine = engine.clone();
                    sends.spawn(async move {
                        let outcome = send(&engine, &item).await;
                        drop(permit);
                        let reminder = reminder(&engine, &item, &outcome);
                        (outcome, reminder)
                    });
                }
                CapAnswer::Denied { retry_at, limit } if limit == SENDER => {
                    wake = Some(wake.map_or(retry_at, |w| w.min(retry_at)));
                    again.push(item);
                }
                CapAnswer::Denied { retry_at, limit } => {
                    let scope = if limit == PHONE { "phone" } else { "tenant" };
                    state.metrics.cap_denied(scope);
                    let free_at = Some(on_clock(engine, retry_at));
                    let (phone_free, tenant_free) = if limit == PHONE {
                        (free_at, None)
                    } else {
                        (None, free_at)
                    };
                    let policy = &state.tenants[&item.claimed.tenant_id];
                    let now = state.clock.now();
                    let d = decide(
                        policy,
                        &item.claimed,
                        &item.stock,
                        now,
                        phone_free,
                        tenant_free,
                    );
                    outcomes.push(not_now(engine, &item.claimed, &d));
                }
            }
        }
        pending = again;
        if let Some(wake) = wake {
            state.metrics.cap_denied("sender");
            let wait = (wake - Utc::now()).to_std().unwrap_or_default();
            if Instant::now() + wait > deadline {
                let back: Vec<&Claimed> = pending.iter().map(|i| &i.claimed).collect();
                state
                    .store
                    .unclaim(&engine.owner, &back, state.clock.now())
                    .await?;
                pending.clear();
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }
    let mut reminders = Vec::new();
    while let Some(done) = sends.join_next().await {
        let (outcome, reminder) = done?;
        outcomes.push(outcome);
        reminders.extend(reminder);
    }
    // A reminder is added with its first text's outcome: it exists only for a text recorded
    // as sent, and the release cannot complete in between.
    let (_, first) = state
        .store
        .record_outcomes_with(&engine.owner, &outcomes, &reminders, state.clock.now())
        .await?;
    let now = state.clock.now();
    for f in first {
        let seconds = (now - f.restock_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        state
            .metrics
            .restock_to_first_text_seconds(seconds.max(0.0));
    }
    Ok(())
}

fn decide(
    policy: &TenantPolicy,
    c: &Claimed,
    stock: &[(String, i64)],
    now: DateTime<Utc>,
    phone_cap_free_at: Option<DateTime<Utc>>,
    tenant_cap_free_at: Option<DateTime<Utc>>,
) -> Decision {
    let ctx = RestockContext {
        restock_id: c.restock_id,
        variant_id: &c.variant_id,
        product_id: c.product_id.as_deref(),
        variant_options: &c.variant_options,
        stock,
        now,
    };
    evaluate(
        policy,
        &ctx,
        &c.candidate,
        Known {
            last_purchase_at: c.last_purchase_at,
            last_notified_at: c.last_notified_at,
            phone_cap_free_at,
            tenant_cap_free_at,
        },
    )
}

/// A message that is not sent now: deferred, suppressed (opted out), held out or skipped.
fn not_now(engine: &Engine, c: &Claimed, d: &Decision) -> Outcome {
    let reason = d.reason.map(|r| r.as_str().to_string());
    let (status, due) = match d.outcome {
        Verdict::Defer(until) => ("deferred", Some(until)),
        Verdict::Skip if d.reason == Some(Reason::ConsentOptedOut) => ("suppressed", None),
        Verdict::Skip if d.reason == Some(Reason::Holdout) => ("held_out", None),
        _ => ("skipped", None),
    };
    engine.state.metrics.message_outcome(&c.tenant_id, status);
    Outcome::status(c, status, reason, due)
}

/// The caps one text must fit: the phone's (keyed by contact, so no phone number is written to
/// Redis), the sender's throughput, and the tenant's day when it has one.
fn cap_request(policy: &TenantPolicy, c: &Claimed) -> CapRequest {
    let phone_window = Duration::from_secs(u64::from(policy.phone_cap_hours) * 3600);
    // An exact window keeps the promise "never more than N in any second"; past what a window
    // can hold, a token bucket of the same rate. The window is a little longer than a second:
    // tokens are granted here but counted by the provider on arrival, and the guard absorbs the
    // jitter between the two (scheduling, a connection being opened).
    let sender = if policy.sender_mps <= MAX_WINDOW_CAPACITY {
        Bucket::window(policy.sender_mps, Duration::from_secs(1) + SENDER_GUARD)
    } else {
        Bucket::rate(policy.sender_mps, Duration::from_secs(1))
    };
    let mut request = CapRequest::new(Scope::phone(format!("{}:{}", c.tenant_id, c.contact_id)))
        .own(
            "texts",
            Bucket::window(policy.phone_cap_texts, phone_window),
        )
        .shared(Scope::sender(policy.sender_id.clone()), "mps", sender);
    if let Some(day) = policy.tenant_cap_texts_per_day {
        request = request.shared(
            Scope::tenant(c.tenant_id.clone()),
            "day",
            Bucket::rate(day, Duration::from_secs(86_400)),
        );
    }
    request
}

/// A moment of Redis's (wall) clock on the application's clock, which tests control.
fn on_clock(engine: &Engine, at: DateTime<Utc>) -> DateTime<Utc> {
    engine.state.clock.now() + (at - Utc::now())
}

/// The reminder a first text just sent calls for, when its tenant sends reminders.
fn reminder(
    engine: &Engine,
    item: &Item,
    outcome: &Outcome,
) -> Option<restock_store::dispatch::Reminder> {
    let c = &item.claimed;
    let sent_at = outcome.sent_at?;
    if c.kind != "first" {
        return None;
    }
    let policy = engine.state.tenants.get(&c.tenant_id)?;
    let minutes = policy.reminder_after_minutes?;
    let renderer = Renderer {
        policy,
        public_base_url: &engine.state.public_base_url,
    };
    let text = renderer
        .render(
            c.title.as_deref(),
            &c.variant_options,
            c.location_id.as_deref(),
            true,
            &link_token(),
        )
        .map_err(|why| tracing::warn!(%why, "the reminder cannot be rendered; none is sent"))
        .ok()?;
    Some((
        c.tenant_id.clone(),
        c.message_id,
        text,
        sent_at + chrono::Duration::minutes(minutes.into()),
    ))
}

/// Hands one text over and says what became of it.
async fn send(engine: &Engine, item: &Item) -> Outcome {
    let c = &item.claimed;
    let sms = OutboundSms {
        reference: c.message_id.to_string(),
        to: item.phone.clone(),
        from: sender_of(&c.sender_id),
        body: c.body.clone(),
        status_callback: engine.status_callback.clone(),
        validity: None,
    };
    let started = Instant::now();
    let result = engine.provider.send(&sms).await;
    engine
        .state
        .metrics
        .send_seconds(started.elapsed().as_secs_f64());
    let now = engine.state.clock.now();
    let mut outcome = Outcome::status(c, "sent", None, None);
    outcome.attempted = 1;
    let attempts = c.attempts as u32 + 1;
    let error = |e: &SendError, permanent: bool| OutcomeError {
        code: e
            .code()
            .map_or_else(|| kind_of(e).to_string(), |c| c.to_string()),
        description: e.to_string(),
        permanent,
    };
    match result {
        Ok(receipt) => {
            outcome.provider_message_id = Some(receipt.provider_message_id);
            outcome.provider_status = Some(receipt.status.as_str().to_string());
            outcome.segments = receipt.segments.map(|s| s as i32);
            outcome.sent_at = Some(now);
        }
        Err(e @ SendError::Transient { .. }) if attempts >= engine.settings.max_attempts => {
            outcome.status = "failed";
            outcome.error = Some(error(&e, true));
        }
        Err(ref e @ SendError::Transient { retry_after, .. }) => {
            let unit: f64 = rand::rng().random();
            let base = Duration::from_millis(engine.settings.retry_base_ms);
            let wait =
                backoff(attempts, base, MAX_BACKOFF, unit).max(retry_after.unwrap_or_default());
            outcome.status = "planned";
            outcome.due_at = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
            outcome.error = Some(error(e, false));
        }
        Err(ref e @ SendError::Config { .. }) => {
            // Our credentials or sender are wrong: every text would fail the same way, so this
            // one is not charged an attempt; it waits while someone fixes the configuration.
            tracing::error!(error = %e, "the provider rejects our configuration");
            outcome.status = "planned";
            outcome.attempted = 0;
            outcome.due_at = Some(now + chrono::Duration::seconds(30));
            outcome.error = Some(error(e, false));
        }
        Err(ref e @ SendError::Permanent { .. }) => {
            outcome.status = "failed";
            outcome.error = Some(error(e, true));
        }
        Err(ref e @ SendError::OptedOut { .. }) => {
            outcome.status = "suppressed";
            outcome.reason = Some(Reason::ConsentOptedOut.as_str().into());
            outcome.error = Some(error(e, true));
            if let Ok(phone) = Phone::parse(&item.phone, "") {
                let recorded = engine
                    .state
                    .store
                    .opt_out(
                        &c.tenant_id,
                        &phone,
                        ConsentSource::Sms,
                        Some("the provider reports the phone opted out"),
                        now,
                    )
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, message_id = %c.message_id, "recording a provider opt-out failed");
                }
            }
        }
        Err(ref e @ SendError::Unknown { .. }) => {
            // Maybe sent: never resent blindly. The scheduler asks the provider once its lease
            // (set here) runs out.
            outcome.status = "sending";
            outcome.lease_until = Some(now + RECONCILE_AFTER);
            outcome.error = Some(error(e, false));
        }
    }
    engine
        .state
        .metrics
        .message_outcome(&c.tenant_id, outcome.status);
    outcome
}

fn kind_of(e: &SendError) -> &'static str {
    match e {
        SendError::Transient { .. } => "transient",
        SendError::Permanent { .. } => "permanent",
        SendError::OptedOut { .. } => "opted_out",
        SendError::Config { .. } => "config",
        SendError::Unknown { .. } => "unknown",
    }
}
