//! Inventory: events applied in order and exactly once (one by one, or a stream's batch in
//! one transaction), snapshots synced, the restocks they start (the dispatcher woken at once),
//! and a variant's stock read back.

use chrono::{DateTime, Utc};
use restock_domain::restock::Hysteresis;
use restock_domain::TenantPolicy;
use restock_store::inventory::{
    EventOutcome, Level, RestockPolicy, Stock, StockRow, SyncCounts, SyncSession,
};
use restock_store::StoreError;

use crate::state::AppState;

pub use super::eligibility::total_available;

/// A valid inventory event: its id and the level it reports.
#[derive(Debug)]
pub struct InventoryEvent {
    pub event_id: String,
    pub level: Level,
}

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The event's fault: answered by its own rejection, the events after it go on.
    #[error("unknown tenant \"{0}\"")]
    UnknownTenant(String),
    /// A dependency failed: nothing from this event on is applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The parts of a tenant's policy that restock detection reads.
pub fn restock_policy(policy: &TenantPolicy) -> RestockPolicy<'_> {
    RestockPolicy {
        hysteresis: Hysteresis {
            threshold: policy.restock_threshold,
            rearm_level: policy.rearm_level,
        },
        excluded_products: &policy.excluded_products,
        excluded_variants: &policy.excluded_variants,
    }
}

/// Applies one event of `tenant_id` in a transaction of its own. Its span is the event's, a
/// child of the caller's; its context is stored with a release the event starts, for the
/// release's send batches to link to.
#[tracing::instrument(
    name = "inventory_event",
    skip_all,
    fields(
        otel.name = "inventory event",
        tenant_id = %tenant_id,
        event_id = %event.event_id,
        variant_id = %event.level.variant_id,
        location_id = %event.level.location_id,
    )
)]
pub async fn apply_event(
    state: &AppState,
    tenant_id: &str,
    event: &InventoryEvent,
) -> Result<EventOutcome, EventError> {
    let policy = policy_of(state, tenant_id)?;
    let traceparent = crate::telemetry::traceparent(&tracing::Span::current());
    apply_alone(state, tenant_id, event, policy, traceparent.as_deref()).await
}

/// Events (each with its tenant) that arrived together on a stream, applied in one
/// transaction; an outcome each, in order. A batch the store cannot apply as a whole (a
/// deadlock with another stream, a bad row) is applied event by event, so one event's failure
/// is that event's alone. The answers end at the first failing dependency: nothing after it
/// is applied.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn apply_events(
    state: &AppState,
    events: &[(&str, &InventoryEvent)],
) -> Vec<Result<EventOutcome, EventError>> {
    let now = state.clock.now();
    let policies: Vec<Option<&TenantPolicy>> = events
        .iter()
        .map(|(tenant_id, _)| state.tenants.get(*tenant_id))
        .collect();
    let detections: Vec<Option<RestockPolicy>> =
        policies.iter().map(|p| p.map(restock_policy)).collect();
    let spans: Vec<tracing::Span> = events
        .iter()
        .zip(&policies)
        .map(|((tenant_id, event), policy)| match policy {
            Some(_) => event_span(tenant_id, event),
            None => tracing::Span::none(),
        })
        .collect();
    let traceparents: Vec<Option<String>> =
        spans.iter().map(crate::telemetry::traceparent).collect();
    let work: Vec<(&str, &str, Option<&str>, &Level, &RestockPolicy)> = events
        .iter()
        .zip(&detections)
        .zip(&traceparents)
        .filter_map(|(((tenant_id, event), detection), traceparent)| {
            Some((
                *tenant_id,
                event.event_id.as_str(),
                traceparent.as_deref(),
                &event.level,
                detection.as_ref()?,
            ))
        })
        .collect();
    let together = if work.len() > 1 {
        state.store.apply_inventory_events(&work, now).await.ok()
    } else {
        None
    };
    let mut outcomes = together.map(Vec::into_iter);
    let mut answers = Vec::with_capacity(events.len());
    for ((((tenant_id, event), policy), span), traceparent) in
        events.iter().zip(&policies).zip(spans).zip(&traceparents)
    {
        let Some(policy) = policy else {
            answers.push(Err(EventError::UnknownTenant(tenant_id.to_string())));
            continue;
        };
        let answer = match outcomes.as_mut().and_then(Iterator::next) {
            Some(outcome) => Ok(applied(state, tenant_id, event, outcome)),
            None => {
                use tracing::Instrument;
                apply_alone(state, tenant_id, event, policy, traceparent.as_deref())
                    .instrument(span)
                    .await
            }
        };
        let failed = answer.is_err();
        answers.push(answer);
        if failed {
            break;
        }
    }
    answers
}

/// The span of one event of a batch, as [`apply_event`]'s.
fn event_span(tenant_id: &str, event: &InventoryEvent) -> tracing::Span {
    tracing::info_span!(
        "inventory_event",
        otel.name = "inventory event",
        tenant_id,
        event_id = %event.event_id,
        variant_id = %event.level.variant_id,
        location_id = %event.level.location_id,
    )
}

fn policy_of<'a>(state: &'a AppState, tenant_id: &str) -> Result<&'a TenantPolicy, EventError> {
    state
        .tenants
        .get(tenant_id)
        .ok_or_else(|| EventError::UnknownTenant(tenant_id.to_string()))
}

/// Applies one event in a transaction of its own.
async fn apply_alone(
    state: &AppState,
    tenant_id: &str,
    event: &InventoryEvent,
    policy: &TenantPolicy,
    traceparent: Option<&str>,
) -> Result<EventOutcome, EventError> {
    let outcome = state
        .store
        .apply_inventory_event(
            tenant_id,
            &event.event_id,
            traceparent,
            &event.level,
            &restock_policy(policy),
            state.clock.now(),
        )
        .await?;
    Ok(applied(state, tenant_id, event, outcome))
}

/// An applied (or duplicate, or stale) event's outcome; wakes the dispatcher on a restock.
fn applied(
    state: &AppState,
    tenant_id: &str,
    event: &InventoryEvent,
    outcome: EventOutcome,
) -> EventOutcome {
    if let EventOutcome::Applied {
        restock: Some(restock),
    } = &outcome
    {
        tracing::info!(tenant_id, variant_id = %event.level.variant_id, location_id = %event.level.location_id, %restock, "restock started");
        state.dispatch_wake.notify_one();
    }
    outcome
}

/// A snapshot of a tenant's levels being synced: its chunks applied as they come, then
/// committed (levels missing from it zeroed if asked).
pub struct InventorySync<'a> {
    session: SyncSession,
    detection: RestockPolicy<'a>,
    tenant_id: String,
    now: DateTime<Utc>,
}

/// Opens the sync of a snapshot of `tenant_id`'s levels taken at `snapshot_at`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
pub async fn begin_sync<'a>(
    state: &AppState,
    policy: &'a TenantPolicy,
    tenant_id: &str,
    snapshot_at: DateTime<Utc>,
) -> Result<InventorySync<'a>, StoreError> {
    let now = state.clock.now();
    let session = state.store.begin_sync(tenant_id, snapshot_at).await?;
    Ok(InventorySync {
        session,
        detection: restock_policy(policy),
        tenant_id: tenant_id.to_string(),
        now,
    })
}

impl InventorySync<'_> {
    /// Applies one chunk of the snapshot's valid levels.
    pub async fn apply(&mut self, levels: &[Level]) -> Result<(), StoreError> {
        self.session.apply(levels, &self.detection, self.now).await
    }

    /// Commits the snapshot; `received` counts the levels sent, valid or not. With
    /// `zero_missing`, levels of `location_ids` (empty: every location) missing from the
    /// snapshot are zeroed. Wakes the dispatcher if a restock started.
    #[tracing::instrument(skip_all, fields(tenant_id = %self.tenant_id, received = received))]
    pub async fn commit(
        self,
        state: &AppState,
        zero_missing: bool,
        location_ids: &[String],
        received: u64,
    ) -> Result<SyncCounts, StoreError> {
        let InventorySync {
            session,
            detection,
            tenant_id,
            now,
        } = self;
        let counts = session
            .commit(zero_missing, location_ids, &detection, now)
            .await?;
        tracing::info!(
            tenant_id,
            received,
            changed = counts.changed,
            zeroed = counts.zeroed,
            restocks = counts.restocks_started,
            "inventory synced"
        );
        if counts.restocks_started > 0 {
            state.dispatch_wake.notify_one();
        }
        Ok(counts)
    }
}

/// Why a variant's stock cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Neither levels nor details of the variant are known.
    #[error("no stock or details of variant \"{0}\"")]
    Unknown(String),
}

/// A variant's stock, judged by its tenant's restock policy.
#[derive(Debug)]
pub struct VariantStock {
    pub stock: Stock,
    /// Available-to-sell over the locations read.
    pub total_available: i64,
    pub restock_threshold: i64,
    pub rearm_level: i64,
}

impl VariantStock {
    /// Whether a location's level counts as in stock.
    pub fn in_stock(&self, level: &StockRow) -> bool {
        level.available >= self.restock_threshold
    }
}

/// A variant's stock at `location_ids` (empty: every location).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, variant_id = %variant_id))]
pub async fn stock(
    state: &AppState,
    policy: &TenantPolicy,
    tenant_id: &str,
    variant_id: &str,
    location_ids: &[String],
) -> Result<VariantStock, StockError> {
    let stock = state
        .store
        .stock(tenant_id, variant_id, location_ids)
        .await?;
    if stock.locations.is_empty() && stock.product_id.is_none() && stock.details.title.is_none() {
        return Err(StockError::Unknown(variant_id.to_string()));
    }
    Ok(VariantStock {
        total_available: total_available(&stock.locations),
        stock,
        restock_threshold: policy.restock_threshold,
        rearm_level: policy.rearm_level,
    })
}
