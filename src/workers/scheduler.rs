//! The scheduler: plans new releases (woken by restocks), opens due waves, completes finished
//! releases, and reconciles messages whose sender's lease ran out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use restock_domain::MessageStatus;
use restock_sms::provider::{OutboundSms, Sender};
use restock_store::dispatch::{Expired, Outcome, OutcomeError};
use tokio_util::sync::CancellationToken;

use super::planner::PolicyPlanner;
use super::Engine;

/// How many expired leases of handed-over texts one pass reconciles.
const RECONCILE_BATCH: i64 = 500;
/// How many expired leases of texts never handed over one pass puts back in line.
const REQUEUE_BATCH: i64 = 5_000;
/// Releases planned at once, each by a task holding one connection while it plans: more than
/// one keeps a small restock from waiting for a large one's plan, and more than two from
/// waiting for another small one's (restocks come in bursts).
const PLANNERS: usize = 4;
/// Provider look-ups in flight during reconciliation.
const LOOKUP_CONCURRENCY: usize = 16;

/// What one scheduler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Releases planned.
    pub planned: u32,
    /// Waves opened.
    pub opened: u64,
}

/// One scheduler pass for callers that step the workers: the releases waiting to be planned
/// are planned in the pass itself (the loop of [`run`] plans them beside it), then the pass.
pub async fn run_once(engine: &Arc<Engine>) -> anyhow::Result<Pass> {
    let tenants = Arc::new(engine.state.tenants.clone());
    let mut planner = planner(engine, &tenants);
    let stop = CancellationToken::new();
    let planned = plan_releases(engine, &mut planner, &stop).await?;
    let mut pass = tick(engine, &tenants).await?;
    pass.planned = planned;
    Ok(pass)
}

fn planner(
    engine: &Arc<Engine>,
    tenants: &Arc<BTreeMap<String, restock_domain::TenantPolicy>>,
) -> PolicyPlanner {
    PolicyPlanner {
        tenants: tenants.clone(),
        public_base_url: engine.state.public_base_url.clone(),
        now: engine.state.clock.now(),
        render_failures: HashMap::new(),
        on_claimable: Some(Box::new({
            let engine = engine.clone();
            move || engine.work.notify_waiters()
        })),
    }
}

pub async fn run(engine: Arc<Engine>, stop: CancellationToken) {
    let tenants = Arc::new(engine.state.tenants.clone());
    // Planning has a loop of its own: a restock is picked up at once, not after a pass of the
    // scheduler (which reconciles and opens waves, and takes a while on a busy database).
    let tick_wake = Arc::new(tokio::sync::Notify::new());
    let planning = tokio::spawn(plan_loop(
        engine.clone(),
        tenants.clone(),
        tick_wake.clone(),
        stop.clone(),
    ));
    let mut failures = 0u32;
    loop {
        match tick(&engine, &tenants).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                // Postgres down: back off, and say so once in a while rather than every tick.
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(error = %e, failures, "dispatch scheduler pass failed");
                }
            }
        }
        let wait = engine.poll() * failures.clamp(1, 8);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Err(e) = planning.await {
        tracing::error!(error = %e, "the planning loop failed");
    }
}

/// Keeps up to [`PLANNERS`] planner tasks going while releases wait to be planned, woken by
/// restocks (`dispatch_wake`); wakes the scheduler's pass when something was planned (its waves
/// may be due) and on every wake (a resumed release).
async fn plan_loop(
    engine: Arc<Engine>,
    tenants: Arc<BTreeMap<String, restock_domain::TenantPolicy>>,
    tick_wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut planners = tokio::task::JoinSet::new();
    // Whether to look for releases to plan: on a wake and every poll interval, not each time
    // a planner ends (one that found nothing would be started again at once).
    let mut look = true;
    loop {
        // Releases are planned up to PLANNERS at once: a small restock is planned (and
        // texted) while a large one's plan is still being written.
        // A wake while every planner is busy is kept until one ends: it may have looked
        // before the new release was there.
        if look && planners.len() < PLANNERS {
            planners.spawn(planner_task(engine.clone(), tenants.clone(), stop.clone()));
            look = false;
        }
        tokio::select! {
            _ = stop.cancelled() => {
                // A plan cut short resumes from its last committed chunk, as after a crash.
                planners.shutdown().await;
                return;
            }
            _ = engine.state.dispatch_wake.notified() => {
                look = true;
                tick_wake.notify_one();
            }
            Some(done) = planners.join_next() => {
                if matches!(done, Ok(n) if n > 0) {
                    tick_wake.notify_one();
                }
            }
            _ = tokio::time::sleep(engine.poll()) => look = true,
        }
    }
}

/// Plans releases until none is left that no other planner holds; answers how many.
async fn planner_task(
    engine: Arc<Engine>,
    tenants: Arc<BTreeMap<String, restock_domain::TenantPolicy>>,
    stop: CancellationToken,
) -> u32 {
    let mut planner = planner(&engine, &tenants);
    match plan_releases(&engine, &mut planner, &stop).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "planning releases failed");
            0
        }
    }
}

/// Plans releases until none is left to plan by this task; answers how many it planned.
async fn plan_releases(
    engine: &Arc<Engine>,
    planner: &mut PolicyPlanner,
    stop: &CancellationToken,
) -> anyhow::Result<u32> {
    let store = &engine.state.store;
    let clock = &engine.state.clock;
    let mut count = 0;
    while !stop.is_cancelled() {
        let now = clock.now();
        planner.now = now;
        let started = std::time::Instant::now();
        let Some(planned) = store.plan_next_release(planner, now).await? else {
            break;
        };
        // The pass's span, in the trace of the inventory event that started the release. It is
        // made once a release was found (most passes find none and make no span), so it holds
        // what follows the planning and carries the planning's own time as an attribute.
        let span = tracing::info_span!(
            "plan_release",
            otel.name = "plan release",
            tenant_id = %planned.tenant_id,
            release_id = %planned.release_id,
            texts = planned.texts,
            planning_ms = started.elapsed().as_secs_f64() * 1e3,
        );
        if let Some(event) = planned
            .traceparent
            .as_deref()
            .and_then(crate::telemetry::parse_traceparent)
        {
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(event));
        }
        let _planning = span.enter();
        tracing::info!(
            tenant_id = %planned.tenant_id,
            release_id = %planned.release_id,
            texts = planned.texts,
            held_out = planned.held_out,
            skipped = planned.skipped,
            "release planned"
        );
        engine.state.metrics.release_planned(
            &planned.tenant_id,
            u64::from(planned.texts + planned.held_out + planned.skipped),
        );
        if planned.opened {
            engine.work.notify_waiters();
        }
        count += 1;
    }
    Ok(count)
}

async fn tick(
    engine: &Arc<Engine>,
    tenants: &BTreeMap<String, restock_domain::TenantPolicy>,
) -> anyhow::Result<Pass> {
    let store = &engine.state.store;
    let clock = &engine.state.clock;
    let mut pass = Pass::default();
    let threshold = |tenant: &str| tenants.get(tenant).map_or(1, |p| p.restock_threshold);
    let opened = store.open_due_waves(&threshold, clock.now()).await?
        + store.open_absorbed_waves(&threshold, clock.now()).await?;
    pass.opened = u64::from(opened);
    if opened > 0 {
        engine.work.notify_waiters();
    }
    store.complete_finished(clock.now()).await?;
    reconcile(engine).await?;
    Ok(pass)
}

/// Decides the messages whose lease ran out mid-send. The provider is asked whether it has the
/// text (same recipient, sender and body, created since the attempt): if it has, the message
/// was sent; if it says it has not, nothing went out and the message goes back in line; if it
/// cannot be asked, the message is `unknown`, counted and never resent.
async fn reconcile(engine: &Arc<Engine>) -> anyhow::Result<()> {
    let store = &engine.state.store;
    let now = engine.state.clock.now();
    // No hand-over began: nothing to ask, back in line at once.
    let requeued = store.requeue_unhanded(REQUEUE_BATCH, now).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "texts of a lost lease never handed over; back in line"
        );
        engine.work.notify_waiters();
    }
    let expired = store
        .take_expired(&engine.owner, engine.lease(), RECONCILE_BATCH, now)
        .await?;
    if expired.is_empty() {
        return Ok(());
    }
    // The look-ups are independent: asked side by side, a crashed replica's texts are settled
    // in about one lease, not one provider round trip after another.
    let mut lookups = tokio::task::JoinSet::new();
    let mut outcomes = Vec::with_capacity(expired.len());
    for m in expired {
        if lookups.len() >= LOOKUP_CONCURRENCY {
            if let Some(done) = lookups.join_next().await {
                outcomes.push(done?);
            }
        }
        let engine = engine.clone();
        lookups.spawn(async move { reconcile_one(&engine, &m).await });
    }
    while let Some(done) = lookups.join_next().await {
        outcomes.push(done?);
    }
    let now = engine.state.clock.now();
    store.record_outcomes(&engine.owner, &outcomes, now).await?;
    Ok(())
}

async fn reconcile_one(engine: &Engine, m: &Expired) -> Outcome {
    let now = engine.state.clock.now();
    let mut outcome = Outcome {
        tenant_id: m.tenant_id.clone(),
        message_id: m.message_id,
        status: MessageStatus::Unknown,
        reason: None,
        due_at: None,
        provider_message_id: None,
        provider_status: None,
        segments: None,
        sent_at: None,
        attempted: 0,
        error: None,
        lease_until: None,
    };
    let (Some(phone), Some(body), Some(sender)) = (&m.phone_e164, &m.body, &m.sender_id) else {
        // Erased meanwhile, or never rendered: nothing can be looked up, nothing is resent.
        outcome.error = Some(OutcomeError {
            code: "unreconcilable".into(),
            description: "the lease ran out and the text cannot be looked up".into(),
            permanent: true,
        });
        return outcome;
    };
    let sms = OutboundSms {
        reference: m.message_id.to_string(),
        to: phone.clone(),
        from: sender_of(sender),
        body: body.clone(),
        status_callback: None,
        validity: None,
        not_after: None,
        // A text the fallback took is looked for there too.
        fallback_from: engine
            .state
            .tenants
            .get(&m.tenant_id)
            .and_then(|p| p.fallback_sender_id.as_deref())
            .map(sender_of),
        traceparent: None,
    };
    // The provider dates texts by the wall clock: the attempt's age on our clock (which tests
    // move) taken back from the wall clock, with a minute of slack for clocks that disagree.
    let age = now - m.attempted_at.unwrap_or(now);
    let since = chrono::Utc::now() - age - chrono::Duration::minutes(1);
    match engine.provider.lookup(&sms, since).await {
        Ok(Some(report)) => {
            tracing::info!(message_id = %m.message_id, "reconciled: the provider has the text");
            engine
                .state
                .metrics
                .message_outcome(&m.tenant_id, "reconciled_sent");
            outcome.status = MessageStatus::Sent;
            outcome.provider_message_id = Some(report.provider_message_id);
            outcome.provider_status = Some(report.status.as_str().to_string());
            outcome.segments = report.segments.map(|s| s as i32);
            outcome.sent_at = Some(report.created_at.unwrap_or(now));
        }
        Ok(None) if m.attempts < engine.settings.max_attempts as i32 => {
            tracing::info!(message_id = %m.message_id, "reconciled: never sent; back in line");
            engine
                .state
                .metrics
                .message_outcome(&m.tenant_id, "reconciled_resend");
            outcome.status = MessageStatus::Planned;
            outcome.due_at = Some(now);
        }
        Ok(None) => {
            outcome.status = MessageStatus::Failed;
            outcome.error = Some(OutcomeError {
                code: "attempts".into(),
                description: "never accepted by the provider after the last attempt".into(),
                permanent: true,
            });
        }
        Err(e) => {
            tracing::warn!(message_id = %m.message_id, error = %e, "cannot reconcile: marked unknown");
            engine
                .state
                .metrics
                .message_outcome(&m.tenant_id, MessageStatus::Unknown.as_str());
            outcome.error = Some(OutcomeError {
                code: "unknown".into(),
                description: format!("the outcome could not be learnt: {e}"),
                permanent: true,
            });
        }
    }
    outcome
}

/// A tenant's sender id as the provider wants it: a messaging service (`MG…`) or a number.
pub fn sender_of(sender_id: &str) -> Sender {
    if sender_id.starts_with("MG") {
        Sender::MessagingService(sender_id.to_string())
    } else {
        Sender::Number(sender_id.to_string())
    }
}
