//! Applying inventory events: ordering, idempotency, the restock they may start, and the
//! acknowledgement each one gets.

use super::*;
use crate::grpc::requests::inventory::{InventoryEvent, Rejection};

pub(super) fn ack(event_id: &str, outcome: EventOutcome) -> pb::InventoryAck {
    let (kind, restock) = match outcome {
        EventOutcome::Applied { restock } => (pb::InventoryOutcome::Applied, restock),
        EventOutcome::Duplicate { restock } => (pb::InventoryOutcome::Duplicate, restock),
        EventOutcome::Stale => (pb::InventoryOutcome::Stale, None),
    };
    pb::InventoryAck {
        event_id: event_id.to_string(),
        outcome: kind as i32,
        restock_started: restock.is_some(),
        restock_id: restock.map(|r| r.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

pub(super) fn rejected(
    event_id: &str,
    field_violations: Vec<pb::FieldViolation>,
    message: String,
) -> pb::InventoryAck {
    pb::InventoryAck {
        event_id: event_id.to_string(),
        outcome: pb::InventoryOutcome::Rejected as i32,
        field_violations,
        message,
        ..Default::default()
    }
}

/// An inventory event ready to apply.
pub(super) struct Prepared<'a> {
    event_id: String,
    level: Level,
    policy: &'a TenantPolicy,
}

/// Applies one parsed event. A bad event is answered by a REJECTED ack; only a failing
/// dependency is an error (the caller resends what was not acknowledged).
pub(super) async fn process_event(
    state: &AppState,
    tenant_id: &str,
    event: Result<InventoryEvent, Rejection>,
) -> Result<pb::InventoryAck, ApiError> {
    let p = match prepare_event(state, tenant_id, event) {
        Ok(p) => p,
        Err(rejected) => return Ok(rejected),
    };
    let span = event_span(tenant_id, &p);
    let traceparent = crate::telemetry::traceparent(&span);
    apply_one(state, tenant_id, &p, traceparent.as_deref())
        .instrument(span)
        .await
}

/// The span of one inventory event, a child of its call's; its context is stored with a
/// release the event starts, for the release's send batches to link to.
pub(super) fn event_span(tenant_id: &str, p: &Prepared<'_>) -> tracing::Span {
    tracing::info_span!(
        "inventory_event",
        otel.name = "inventory event",
        tenant_id,
        event_id = %p.event_id,
        variant_id = %p.level.variant_id,
        location_id = %p.level.location_id,
    )
}

/// Applies one checked event in a transaction of its own; its ack.
pub(super) async fn apply_one(
    state: &AppState,
    tenant_id: &str,
    p: &Prepared<'_>,
    traceparent: Option<&str>,
) -> Result<pb::InventoryAck, ApiError> {
    let outcome = state
        .store
        .apply_inventory_event(
            tenant_id,
            &p.event_id,
            traceparent,
            &p.level,
            &restock_policy(p.policy),
            state.clock.now(),
        )
        .await?;
    Ok(applied(state, tenant_id, p, outcome))
}

/// Events of one stream that arrived together, applied in one transaction with one ack each,
/// in order. A batch the store cannot apply as a whole (a deadlock with another stream, a bad
/// row) is applied event by event, so one event's failure is that event's alone.
///
/// An event for a tenant the caller may not act for ends the stream with PERMISSION_DENIED;
/// the events before it are applied and acked, nothing from it on is written.
pub(super) async fn process_events(
    state: &AppState,
    caller: &Caller,
    batch: &[pb::StreamInventoryRequest],
) -> Vec<Result<pb::InventoryAck, ApiError>> {
    // An empty tenant is the event's own fault: answered by its REJECTED ack.
    let forbidden = batch
        .iter()
        .position(|m| !m.tenant_id.is_empty() && !caller.may_act_for(&m.tenant_id));
    if let Some(at) = forbidden {
        let mut answers = Box::pin(process_events_allowed(state, &batch[..at])).await;
        if answers.iter().all(Result::is_ok) {
            answers.push(Err(ApiError::tenant_denied(caller, &batch[at].tenant_id)));
        }
        return answers;
    }
    process_events_allowed(state, batch).await
}

/// [`process_events`] of events whose tenants the caller may act for.
pub(super) async fn process_events_allowed(
    state: &AppState,
    batch: &[pb::StreamInventoryRequest],
) -> Vec<Result<pb::InventoryAck, ApiError>> {
    let now = state.clock.now();
    let prepared: Vec<Result<Prepared, pb::InventoryAck>> = batch
        .iter()
        .map(|m| prepare_event(state, &m.tenant_id, InventoryEvent::streamed(m, now)))
        .collect();
    let policies: Vec<Option<RestockPolicy>> = prepared
        .iter()
        .map(|p| p.as_ref().ok().map(|p| restock_policy(p.policy)))
        .collect();
    let spans: Vec<tracing::Span> = batch
        .iter()
        .zip(&prepared)
        .map(|(m, p)| match p {
            Ok(p) => event_span(&m.tenant_id, p),
            Err(_) => tracing::Span::none(),
        })
        .collect();
    let traceparents: Vec<Option<String>> =
        spans.iter().map(crate::telemetry::traceparent).collect();
    let work: Vec<(&str, &str, Option<&str>, &Level, &RestockPolicy)> = batch
        .iter()
        .zip(&prepared)
        .zip(&policies)
        .zip(&traceparents)
        .filter_map(|(((m, p), policy), traceparent)| {
            let p = p.as_ref().ok()?;
            Some((
                m.tenant_id.as_str(),
                p.event_id.as_str(),
                traceparent.as_deref(),
                &p.level,
                policy.as_ref()?,
            ))
        })
        .collect();
    let together = if work.len() > 1 {
        state.store.apply_inventory_events(&work, now).await.ok()
    } else {
        None
    };
    let mut outcomes = together.map(Vec::into_iter);
    let mut answers = Vec::with_capacity(batch.len());
    for (((m, p), span), traceparent) in batch.iter().zip(prepared).zip(spans).zip(&traceparents) {
        let p = match p {
            Ok(p) => p,
            Err(rejected) => {
                answers.push(Ok(rejected));
                continue;
            }
        };
        let answer = match outcomes.as_mut().and_then(Iterator::next) {
            Some(o) => Ok(applied(state, &m.tenant_id, &p, o)),
            None => {
                apply_one(state, &m.tenant_id, &p, traceparent.as_deref())
                    .instrument(span)
                    .await
            }
        };
        let failed = answer.is_err();
        answers.push(answer);
        if failed {
            // The stream ends at the first failure; nothing after it is applied or acked.
            break;
        }
    }
    answers
}

/// The ack of an applied (or duplicate, or stale) event; wakes the dispatcher on a restock.
pub(super) fn applied(
    state: &AppState,
    tenant_id: &str,
    p: &Prepared,
    outcome: EventOutcome,
) -> pb::InventoryAck {
    if let EventOutcome::Applied {
        restock: Some(restock),
    } = outcome
    {
        tracing::info!(tenant_id, variant_id = %p.level.variant_id, location_id = %p.level.location_id, %restock, "restock started");
        state.dispatch_wake.notify_one();
    }
    ack(&p.event_id, outcome)
}

/// A parsed event with its tenant's policy: ready to apply, or the ack that rejects it.
pub(super) fn prepare_event<'a>(
    state: &'a AppState,
    tenant_id: &str,
    event: Result<InventoryEvent, Rejection>,
) -> Result<Prepared<'a>, pb::InventoryAck> {
    let InventoryEvent { event_id, level } =
        event.map_err(|r| rejected(&r.event_id, r.field_violations, String::new()))?;
    let Some(policy) = state.tenants.get(tenant_id) else {
        return Err(rejected(
            &event_id,
            Vec::new(),
            format!("unknown tenant \"{tenant_id}\""),
        ));
    };
    Ok(Prepared {
        event_id,
        level,
        policy,
    })
}
