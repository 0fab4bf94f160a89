//! Inventory events as the API answers them: parsed here, applied by `app::inventory`
//! (ordering, idempotency, the restock they may start), each acknowledged.

use super::*;
use crate::app::inventory::{self, EventError};
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

/// The answer to one event the use case took: its ack (a REJECTED one for an event of an
/// unknown tenant), or the error that ends the call or stream.
fn answer(
    event_id: &str,
    outcome: Result<EventOutcome, EventError>,
) -> Result<pb::InventoryAck, ApiError> {
    match outcome {
        Ok(outcome) => Ok(ack(event_id, outcome)),
        Err(e @ EventError::UnknownTenant(_)) => Ok(rejected(event_id, Vec::new(), e.to_string())),
        Err(EventError::Store(e)) => Err(e.into()),
    }
}

/// Applies one parsed event. A bad event is answered by a REJECTED ack; only a failing
/// dependency is an error (the caller resends what was not acknowledged).
pub(super) async fn process_event(
    state: &AppState,
    tenant_id: &str,
    event: Result<InventoryEvent, Rejection>,
) -> Result<pb::InventoryAck, ApiError> {
    match event {
        Ok(event) => answer(
            &event.event_id,
            inventory::apply_event(state, tenant_id, &event).await,
        ),
        Err(r) => Ok(rejected(&r.event_id, r.field_violations, String::new())),
    }
}

/// Events of one stream that arrived together, applied together by the use case, with one
/// ack each, in order; the answers end at the first failure.
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
async fn process_events_allowed(
    state: &AppState,
    batch: &[pb::StreamInventoryRequest],
) -> Vec<Result<pb::InventoryAck, ApiError>> {
    let now = state.clock.now();
    let parsed: Vec<Result<InventoryEvent, Rejection>> = batch
        .iter()
        .map(|m| InventoryEvent::streamed(m, now))
        .collect();
    let valid: Vec<(&str, &InventoryEvent)> = batch
        .iter()
        .zip(&parsed)
        .filter_map(|(m, p)| Some((m.tenant_id.as_str(), p.as_ref().ok()?)))
        .collect();
    let mut outcomes = inventory::apply_events(state, &valid).await.into_iter();
    let mut answers = Vec::with_capacity(batch.len());
    for event in parsed {
        let answer = match event {
            Err(r) => Ok(rejected(&r.event_id, r.field_violations, String::new())),
            Ok(event) => match outcomes.next() {
                Some(outcome) => answer(&event.event_id, outcome),
                // The use case stopped at an earlier failure, already answered.
                None => break,
            },
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
