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
use restock_caps::{Bucket, CapAnswer, CapRequest, Grant, Scope, MAX_WINDOW_CAPACITY};
use restock_domain::eligibility::{
    Decision, LiveExclusions, Outcome as Verdict, Reason, RestockContext,
};
use restock_domain::waves::backoff;
use restock_domain::{MessageStatus, Phone, TenantPolicy};
use restock_sms::provider::{OutboundSms, SendError};
use restock_store::dispatch::{Claimed, Lane, Outcome, OutcomeError};
use restock_store::handover::Handover;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::planner::{link_token, stock_for, Renderer};
use super::scheduler::sender_of;
use super::{evaluate, Engine, Known, EXPRESS_BATCH};

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

pub async fn run(engine: Arc<Engine>, index: u32, lane: Lane, stop: CancellationToken) {
    let express = matches!(lane, Lane::Express { .. });
    let batch_size = if express {
        engine.settings.batch_size.min(EXPRESS_BATCH)
    } else {
        engine.settings.batch_size
    };
    let mut failures = 0u32;
    loop {
        if stop.is_cancelled() {
            return;
        }
        // Registered before the claim, so a wave opened while claiming is not missed.
        let work = engine.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        let now = engine.state.clock.now();
        // Before the claim: the lease is judged from here on this process's own clock.
        let claimed_at = Instant::now();
        let claimed = engine
            .state
            .store
            .claim_due_in(
                &engine.owner,
                engine.lease(),
                i64::from(batch_size),
                now,
                lane,
            )
            .await;
        match claimed {
            Ok(batch) if !batch.is_empty() => {
                failures = 0;
                let span = batch_span(&batch, express);
                if let Err(e) = process(&engine, batch, claimed_at, express)
                    .instrument(span)
                    .await
                {
                    tracing::warn!(sender = index, error = %e, "recording a batch failed; its leases will be reconciled");
                }
                continue;
            }
            Ok(_) => {
                failures = 0;
                // Out of work: shared cap tokens the last batches took and could not use go
                // back now rather than with a next batch that may not come soon.
                if let Err(e) = engine.caps.settle().await {
                    tracing::debug!(sender = index, error = %e, "settling cap refunds failed");
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(sender = index, error = %e, failures, "claiming messages failed");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = &mut work => {}
            _ = tokio::time::sleep(engine.poll() * failures.clamp(1, 8)) => {}
        }
    }
}

/// Claims one batch of due messages and sends it, as the loop of [`run`] does (for callers
/// that step the workers); answers how many messages it claimed.
pub async fn send_once(engine: &Arc<Engine>) -> anyhow::Result<usize> {
    let claimed_at = Instant::now();
    let batch = engine
        .state
        .store
        .claim_due(
            &engine.owner,
            engine.lease(),
            i64::from(engine.settings.batch_size),
            engine.state.clock.now(),
        )
        .await?;
    let claimed = batch.len();
    if claimed > 0 {
        let span = batch_span(&batch, false);
        process(engine, batch, claimed_at, false)
            .instrument(span)
            .await?;
    } else {
        // Out of work, as the loop: owed cap refunds go back now.
        engine.caps.settle().await?;
    }
    Ok(claimed)
}

/// One claimed message on its way.
/// A variant's live stock per location and the exclusions in force, as a batch reads them.
type VariantNow = (Vec<(String, i64)>, LiveExclusions);

struct Item {
    claimed: Claimed,
    phone: String,
    stock: Vec<(String, i64)>,
    exclusions: LiveExclusions,
    request: CapRequest,
    /// What the caps check took from the phone's own caps, given back if the text is not
    /// handed to the provider after all.
    grant: Option<Grant>,
}

/// The span of one claimed batch, linked to the trace of each inventory event whose release
/// it sends (a batch may serve several releases, so links rather than a parent).
fn batch_span(batch: &[Claimed], express: bool) -> tracing::Span {
    let span = tracing::info_span!(
        "send_batch",
        otel.name = "send batch",
        messages = batch.len(),
        express
    );
    if crate::telemetry::otlp_enabled() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let mut seen = std::collections::HashSet::new();
        for tp in batch.iter().filter_map(|c| c.traceparent.as_deref()) {
            if seen.insert(tp) {
                if let Some(linked) = crate::telemetry::parse_traceparent(tp) {
                    span.add_link(linked);
                }
            }
        }
    }
    span
}

/// Sends one claimed batch; `express`: with the express lane's own provider slots and fence.
async fn process(
    engine: &Arc<Engine>,
    batch: Vec<Claimed>,
    claimed_at: Instant,
    express: bool,
) -> anyhow::Result<()> {
    let (fences, in_flight) = if express {
        (&engine.express.fences, &engine.express.in_flight)
    } else {
        (&engine.fences, &engine.in_flight)
    };
    let state = &engine.state;
    let now = state.clock.now();
    let mut outcomes = Vec::with_capacity(batch.len());
    // Per variant in the batch: its live stock and the exclusions in force, read now (an
    // exclusion made after planning stops the texts not yet sent).
    let mut keys: Vec<(String, String, Option<String>)> = batch
        .iter()
        .map(|c| {
            (
                c.tenant_id.clone(),
                c.variant_id.clone(),
                c.product_id.clone(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    let now_of = state.store.variants_now(&keys, now).await?;
    let levels: HashMap<(String, String), VariantNow> = keys
        .into_iter()
        .map(|(tenant, variant, _)| (tenant, variant))
        .zip(now_of)
        .collect();
    let mut pending = Vec::new();
    for c in batch {
        let Some(policy) = state.tenants.get(&c.tenant_id) else {
            outcomes.push(Outcome::status(
                &c,
                MessageStatus::Skipped,
                Some("tenant_unknown".into()),
                None,
            ));
            continue;
        };
        let Some(phone) = c.candidate.phone_e164.clone() else {
            outcomes.push(Outcome::status(
                &c,
                MessageStatus::Skipped,
                Some("phone_erased".into()),
                None,
            ));
            continue;
        };
        let key = (c.tenant_id.clone(), c.variant_id.clone());
        let (levels_now, exclusions) = &levels[&key];
        let stock = stock_for(c.location_id.as_deref(), levels_now);
        let decision = decide(policy, &c, &stock, *exclusions, now, None, None);
        match decision.outcome {
            Verdict::SendNow => pending.push(Item {
                request: text_caps(policy, &c.tenant_id, c.contact_id, &c.sender_id),
                claimed: c,
                phone,
                stock,
                exclusions: *exclusions,
                grant: None,
            }),
            _ => outcomes.push(not_now(engine, &c, &decision)),
        }
    }

    // No hand-over begins after this, whatever was granted: past it, another replica may be
    // about to reconcile the batch (a process that stalled wakes up here).
    let lease_end = claimed_at + engine.lease().saturating_sub(engine.margin());
    // Capacity, then the hand-over; texts the sender bucket refuses wait for their token, but
    // not so long that a text granted last could not be fenced and handed over before
    // `lease_end` (a granted text given back would have spent its phone's cap for nothing).
    let deadline = (Instant::now() + engine.lease() / 2).min(
        lease_end
            .checked_sub(engine.margin() / 2)
            .unwrap_or(lease_end),
    );
    let mut slots = JoinSet::new();
    while !pending.is_empty() {
        let requests: Vec<CapRequest> = pending.iter().map(|i| i.request.clone()).collect();
        let answers = match engine.caps.check_granting(&requests).await {
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
        let mut granted = Vec::new();
        let mut wake: Option<DateTime<Utc>> = None;
        for (mut item, (answer, grant)) in pending.into_iter().zip(answers) {
            match answer {
                CapAnswer::Granted => {
                    item.grant = grant;
                    granted.push(item);
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
                        item.exclusions,
                        now,
                        phone_free,
                        tenant_free,
                    );
                    outcomes.push(not_now(engine, &item.claimed, &d));
                }
            }
        }
        if !granted.is_empty() {
            let fence = fences.clone().acquire_owned().await?;
            let engine = engine.clone();
            let in_flight = in_flight.clone();
            slots.spawn(
                async move {
                    let done = hand_over(&engine, granted, lease_end, in_flight).await;
                    drop(fence);
                    done
                }
                .instrument(tracing::Span::current()),
            );
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
    while let Some(done) = slots.join_next().await {
        let (slot_outcomes, slot_reminders) = done?;
        outcomes.extend(slot_outcomes);
        reminders.extend(slot_reminders);
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

/// Hands one slot of granted texts to the provider, fenced against opt-outs and erasures of
/// their phones and against the loss of the lease (see `restock_store::handover`).
///
/// The fence is held until every request of the slot has been answered, so an opt-out that
/// answers OK has waited for any hand-over to its phone already begun, and no hand-over begins
/// after it: the last check reads the ledger after the fence is taken.
async fn hand_over(
    engine: &Arc<Engine>,
    mut items: Vec<Item>,
    lease_end: Instant,
    in_flight: Arc<tokio::sync::Semaphore>,
) -> (Vec<Outcome>, Vec<restock_store::dispatch::Reminder>) {
    let mut grants: HashMap<uuid::Uuid, Grant> = items
        .iter_mut()
        .filter_map(|i| Some((i.claimed.message_id, i.grant.take()?)))
        .collect();
    let (outcomes, reminders) = hand_over_granted(engine, items, lease_end, in_flight).await;
    // Every text the provider did not take (given back, suppressed, refused, retried later, or
    // another replica's by now) gives its phone's token back: a text never sent must not cost
    // the shopper one of the texts a day they may get.
    for o in &outcomes {
        if matches!(o.status, MessageStatus::Sent | MessageStatus::Sending) {
            grants.remove(&o.message_id);
        }
    }
    if !grants.is_empty() {
        let back = grants.len();
        match engine.caps.give_back(grants.into_values().collect()).await {
            Ok(()) => engine.state.metrics.caps_given_back(back as u64),
            Err(e) => {
                tracing::warn!(error = %e, "cap tokens of unsent texts not given back; they only delay")
            }
        }
    }
    (outcomes, reminders)
}

async fn hand_over_granted(
    engine: &Arc<Engine>,
    items: Vec<Item>,
    lease_end: Instant,
    in_flight: Arc<tokio::sync::Semaphore>,
) -> (Vec<Outcome>, Vec<restock_store::dispatch::Reminder>) {
    let state = &engine.state;
    let give_back = |items: &[Item]| -> Vec<Outcome> {
        let now = state.clock.now();
        items
            .iter()
            .map(|i| Outcome::given_back(&i.claimed, now))
            .collect()
    };
    let mut contacts: Vec<(String, uuid::Uuid)> = items
        .iter()
        .map(|i| (i.claimed.tenant_id.clone(), i.claimed.contact_id))
        .collect();
    contacts.sort();
    contacts.dedup();
    // Bounded by the lease: a stalled process cannot hold an opt-out back for longer.
    let hold = lease_end.saturating_duration_since(Instant::now()) + engine.margin();
    let fence = match state.store.fence_contacts(&contacts, hold).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot fence a hand-over; its texts go back in line");
            return (give_back(&items), Vec::new());
        }
    };
    let ids: Vec<(String, uuid::Uuid)> = items
        .iter()
        .map(|i| (i.claimed.tenant_id.clone(), i.claimed.message_id))
        .collect();
    let verdicts: HashMap<uuid::Uuid, Handover> = match state
        .store
        .mark_handed(&engine.owner, &ids, state.clock.now(), engine.margin())
        .await
    {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            fence.release().await;
            tracing::warn!(error = %e, "the last check before a hand-over failed; its texts go back in line");
            return (give_back(&items), Vec::new());
        }
    };
    let mut outcomes = Vec::with_capacity(items.len());
    let mut sends = JoinSet::new();
    // The provider calls are spans of the batch's, on whichever task they run.
    let batch = tracing::Span::current();
    for item in items {
        let c = &item.claimed;
        match verdicts
            .get(&c.message_id)
            .copied()
            .unwrap_or(Handover::LeaseLost)
        {
            Handover::Go => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    outcomes.push(Outcome::given_back(c, state.clock.now()));
                    continue;
                };
                let engine = engine.clone();
                sends.spawn(
                    async move {
                        // Judged on this process's own clock, right before the request: a sender
                        // that stalled past its lease never begins a hand-over.
                        if Instant::now() >= lease_end {
                            engine
                                .state
                                .metrics
                                .message_outcome(&item.claimed.tenant_id, "late");
                            return (
                                Outcome::given_back(&item.claimed, engine.state.clock.now()),
                                None,
                                None,
                            );
                        }
                        let (outcome, opted_out) = send(&engine, &item, lease_end).await;
                        drop(permit);
                        let reminder = reminder(&engine, &item, &outcome);
                        (outcome, reminder, opted_out)
                    }
                    .instrument(batch.clone()),
                );
            }
            Handover::OptedOut => {
                state
                    .metrics
                    .message_outcome(&c.tenant_id, MessageStatus::Suppressed.as_str());
                outcomes.push(Outcome::status(
                    c,
                    MessageStatus::Suppressed,
                    Some(Reason::ConsentOptedOut.as_str().into()),
                    None,
                ));
            }
            Handover::Erased => {
                outcomes.push(Outcome::status(
                    c,
                    MessageStatus::Skipped,
                    Some("phone_erased".into()),
                    None,
                ));
            }
            // Whoever holds the lease now decides and records.
            Handover::LeaseLost => {}
        }
    }
    let mut reminders = Vec::new();
    let mut provider_opt_outs = Vec::new();
    while let Some(done) = sends.join_next().await {
        match done {
            Ok((outcome, reminder, opted_out)) => {
                outcomes.push(outcome);
                reminders.extend(reminder);
                provider_opt_outs.extend(opted_out);
            }
            Err(e) => {
                tracing::error!(error = %e, "a hand-over task failed; its lease will be reconciled")
            }
        }
    }
    fence.release().await;
    // Recorded once the fence is gone: the opt-out locks the very contacts it held.
    for (tenant_id, phone) in provider_opt_outs {
        let recorded = crate::app::consent::opt_out(
            state,
            &tenant_id,
            &phone,
            crate::app::consent::OptOutBy::Provider,
        )
        .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording a provider opt-out failed");
        }
    }
    (outcomes, reminders)
}

fn decide(
    policy: &TenantPolicy,
    c: &Claimed,
    stock: &[(String, i64)],
    exclusions: LiveExclusions,
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
        exclusions,
        now,
    };
    evaluate(
        policy,
        &ctx,
        &c.candidate,
        Known {
            last_purchase_at: c.last_purchase_at,
            substitute_purchase: c.candidate.substitute_purchase.as_ref(),
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
        Verdict::Defer(until) => (MessageStatus::Deferred, Some(until)),
        Verdict::Skip if d.reason == Some(Reason::ConsentOptedOut) => {
            (MessageStatus::Suppressed, None)
        }
        Verdict::Skip if d.reason == Some(Reason::Holdout) => (MessageStatus::HeldOut, None),
        _ => (MessageStatus::Skipped, None),
    };
    engine
        .state
        .metrics
        .message_outcome(&c.tenant_id, status.as_str());
    Outcome::status(c, status, reason, due)
}

/// The caps one text must fit: the phone's (keyed by contact, so no phone number is written to
/// Redis), the sender's throughput, and the tenant's day when it has one. Restock and
/// confirmation texts alike.
pub fn text_caps(
    policy: &TenantPolicy,
    tenant_id: &str,
    contact_id: uuid::Uuid,
    sender_id: &str,
) -> CapRequest {
    let phone_window = Duration::from_secs(u64::from(policy.phone_cap_hours) * 3600);
    let mut request = CapRequest::new(Scope::phone(format!("{tenant_id}:{contact_id}")))
        .own(
            "texts",
            Bucket::window(policy.phone_cap_texts, phone_window),
        )
        // The sender the text actually goes from (a country's own, or the brand's).
        .shared(
            Scope::sender(sender_id.to_string()),
            "mps",
            sender_bucket(policy),
        );
    if let Some(day) = policy.tenant_cap_texts_per_day {
        request = request.shared(
            Scope::tenant(tenant_id.to_string()),
            "day",
            Bucket::rate(day, Duration::from_secs(86_400)),
        );
    }
    request
}

/// The sender's throughput bucket, shared by every text from it. An exact window keeps the
/// promise "never more than N in any second"; past what a window can hold, a token bucket of
/// the same rate. The window is a little longer than a second: tokens are granted here but
/// counted by the provider on arrival, and the guard absorbs the jitter between the two
/// (scheduling, a connection being opened).
fn sender_bucket(policy: &TenantPolicy) -> Bucket {
    if policy.sender_mps <= MAX_WINDOW_CAPACITY {
        Bucket::window(policy.sender_mps, Duration::from_secs(1) + SENDER_GUARD)
    } else {
        Bucket::rate(policy.sender_mps, Duration::from_secs(1))
    }
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
        .ok()
        // From the first text's sender: the one the phone's country allows.
        .map(|mut text| {
            text.sender_id = c.sender_id.clone();
            text
        })?;
    Some((
        c.tenant_id.clone(),
        c.message_id,
        text,
        sent_at + chrono::Duration::minutes(minutes.into()),
    ))
}

/// Hands one text over and says what became of it, and the phone to opt out when the
/// provider says it opted out (recorded by the caller once its fence is released).
async fn send(
    engine: &Engine,
    item: &Item,
    lease_end: Instant,
) -> (Outcome, Option<(String, Phone)>) {
    let c = &item.claimed;
    // The provider's HTTP call, a client span whose context goes with the request.
    let span = tracing::info_span!(
        "provider_send",
        otel.name = "provider send",
        otel.kind = "client",
        provider = engine.provider.name(),
        message_id = %c.message_id,
        tenant_id = %c.tenant_id,
    );
    let sms = OutboundSms {
        reference: c.message_id.to_string(),
        to: item.phone.clone(),
        from: sender_of(&c.sender_id),
        body: c.body.clone(),
        // The message's own id rides along, so a delivery report that beats the send's own
        // outcome to the database is still matched (held until the outcome lands).
        status_callback: engine.status_callback.as_ref().map(|base| {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("t", &c.tenant_id)
                .append_pair("m", &c.message_id.to_string())
                .finish();
            format!("{base}?{query}")
        }),
        validity: None,
        // Checked once more by the provider client right before the request's bytes go out.
        not_after: Some(lease_end),
        fallback_from: engine
            .state
            .tenants
            .get(&c.tenant_id)
            .and_then(|p| p.fallback_sender_id.as_deref())
            .map(sender_of),
        traceparent: crate::telemetry::traceparent(&span),
    };
    let started = Instant::now();
    let result = engine.provider.send(&sms).instrument(span).await;
    engine
        .state
        .metrics
        .send_seconds(started.elapsed().as_secs_f64());
    let now = engine.state.clock.now();
    let mut outcome = Outcome::status(c, MessageStatus::Sent, None, None);
    let mut opted_out = None;
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
            outcome.status = MessageStatus::Failed;
            outcome.error = Some(error(&e, true));
        }
        Err(ref e @ SendError::Transient { retry_after, .. }) => {
            let unit: f64 = rand::rng().random();
            let base = Duration::from_millis(engine.settings.retry_base_ms);
            let wait =
                backoff(attempts, base, MAX_BACKOFF, unit).max(retry_after.unwrap_or_default());
            outcome.status = MessageStatus::Planned;
            outcome.due_at = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
            outcome.error = Some(error(e, false));
        }
        Err(ref e @ SendError::Config { .. }) => {
            // Our credentials or sender are wrong: every text would fail the same way, so this
            // one is not charged an attempt; it waits while someone fixes the configuration.
            tracing::error!(error = %e, "the provider rejects our configuration");
            outcome.status = MessageStatus::Planned;
            outcome.attempted = 0;
            outcome.due_at = Some(now + chrono::Duration::seconds(30));
            outcome.error = Some(error(e, false));
        }
        Err(ref e @ SendError::Permanent { .. }) => {
            outcome.status = MessageStatus::Failed;
            outcome.error = Some(error(e, true));
        }
        Err(ref e @ SendError::OptedOut { .. }) => {
            outcome.status = MessageStatus::Suppressed;
            outcome.reason = Some(Reason::ConsentOptedOut.as_str().into());
            outcome.error = Some(error(e, true));
            opted_out = Phone::parse(&item.phone, "")
                .ok()
                .map(|phone| (c.tenant_id.clone(), phone));
        }
        Err(SendError::Late) => {
            // Frozen between the check before `send` and the request: nothing went out, and
            // the lease may be another's by now, so nothing is this sender's to record.
            engine.state.metrics.message_outcome(&c.tenant_id, "late");
            return (Outcome::given_back(c, now), None);
        }
        Err(ref e @ SendError::Unknown { .. }) => {
            // Maybe sent: never resent blindly. The scheduler asks the provider once its lease
            // (set here) runs out.
            outcome.status = MessageStatus::Sending;
            outcome.lease_until = Some(now + RECONCILE_AFTER);
            outcome.error = Some(error(e, false));
        }
    }
    engine
        .state
        .metrics
        .message_outcome(&c.tenant_id, outcome.status.as_str());
    (outcome, opted_out)
}

fn kind_of(e: &SendError) -> &'static str {
    match e {
        SendError::Transient { .. } => "transient",
        SendError::Permanent { .. } => "permanent",
        SendError::OptedOut { .. } => "opted_out",
        SendError::Config { .. } => "config",
        SendError::Unknown { .. } => "unknown",
        SendError::Late => "late",
    }
}
