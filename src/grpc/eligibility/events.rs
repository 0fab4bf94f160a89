//! Applying inventory events: ordering, idempotency, the restock they may start, and the
//! acknowledgement each one gets.

use super::*;

/// Validates one stock level; field paths start with `prefix`.
#[allow(clippy::too_many_arguments)]
pub(super) fn level(
    v: &mut Violations,
    prefix: &str,
    variant_id: &str,
    location_id: &str,
    available: i64,
    on_order: i64,
    order: Option<Order>,
    product_id: &str,
    details: Option<&pb::VariantDetails>,
) -> Option<Level> {
    let variant_id = v.id(&format!("{prefix}variant_id"), variant_id, true);
    let location_id = v.id(&format!("{prefix}location_id"), location_id, true);
    if available < 0 {
        v.add(
            format!("{prefix}available_to_sell"),
            "must not be negative: report an oversold level as 0",
        );
    } else if available > MAX_UNITS {
        v.add(
            format!("{prefix}available_to_sell"),
            format!("must be at most {MAX_UNITS}"),
        );
    }
    if on_order < 0 {
        v.add(format!("{prefix}on_order"), "must not be negative");
    } else if on_order > MAX_UNITS {
        v.add(
            format!("{prefix}on_order"),
            format!("must be at most {MAX_UNITS}"),
        );
    }
    let product_id = v.id(&format!("{prefix}product_id"), product_id, false);
    // The catalog's own links are not refused here (a stock level must not be lost over a
    // link); the tracked-link redirect never follows one off the brand's hosts.
    let details = details.map(|d| v.variant_details(&format!("{prefix}variant"), d, None));
    Some(Level {
        variant_id: variant_id?,
        location_id: location_id?,
        available,
        on_order,
        order: order?,
        product_id,
        details,
    })
}

pub(super) fn event_order(
    v: &mut Violations,
    prefix: &str,
    order: Option<&pb::inventory_event::Order>,
    now: DateTime<Utc>,
) -> Option<Order> {
    match order {
        None => {
            v.add(
                format!("{prefix}sequence_number"),
                "a sequence_number or an observe_time is required",
            );
            None
        }
        Some(pb::inventory_event::Order::SequenceNumber(n)) => match i64::try_from(*n) {
            Ok(n) => Some(Order::Sequence(n)),
            Err(_) => {
                v.add(
                    format!("{prefix}sequence_number"),
                    "must be at most 2^63 - 1",
                );
                None
            }
        },
        Some(pb::inventory_event::Order::ObserveTime(ts)) => v
            .past_time(&format!("{prefix}observe_time"), Some(ts), now, true)
            .map(Order::Observed),
    }
}

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

/// Validates and applies one event. A bad event is answered by a REJECTED ack; only a failing
/// dependency is an error (the caller resends what was not acknowledged).
/// An inventory event ready to apply, or the ack that rejects it.
pub(super) struct Prepared<'a> {
    event_id: String,
    level: Level,
    policy: &'a TenantPolicy,
}

pub(super) async fn process_event(
    state: &AppState,
    tenant_id: &str,
    event: Option<&pb::InventoryEvent>,
    prefix: &str,
) -> Result<pb::InventoryAck, ApiError> {
    let p = match prepare_event(state, tenant_id, event, prefix) {
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
    let prepared: Vec<Result<Prepared, pb::InventoryAck>> = batch
        .iter()
        .map(|m| prepare_event(state, &m.tenant_id, m.event.as_ref(), "event."))
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
    let now = state.clock.now();
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

/// Checks one event: the typed event, or the REJECTED ack naming its faults.
pub(super) fn prepare_event<'a>(
    state: &'a AppState,
    tenant_id: &str,
    event: Option<&pb::InventoryEvent>,
    prefix: &str,
) -> Result<Prepared<'a>, pb::InventoryAck> {
    let Some(event) = event else {
        return Err(rejected(
            "",
            vec![pb::FieldViolation {
                field: prefix.trim_end_matches('.').into(),
                description: "is required".into(),
            }],
            String::new(),
        ));
    };
    let now = state.clock.now();
    let mut v = Violations::default();
    let event_id = v.id(&format!("{prefix}event_id"), &event.event_id, true);
    let order = event_order(&mut v, prefix, event.order.as_ref(), now);
    let level = level(
        &mut v,
        prefix,
        &event.variant_id,
        &event.location_id,
        event.available_to_sell,
        event.on_order,
        order,
        &event.product_id,
        event.variant.as_ref(),
    );
    if tenant_id.is_empty() {
        v.add("tenant_id", "is required");
    }
    let (Some(event_id), Some(level), true) = (event_id, level, v.is_empty()) else {
        return Err(rejected(
            &event.event_id,
            v.into_field_violations(),
            String::new(),
        ));
    };
    let Some(policy) = state.tenants.get(tenant_id) else {
        return Err(rejected(
            &event.event_id,
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
