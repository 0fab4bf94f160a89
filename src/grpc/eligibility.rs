//! EligibilityService: inventory in (stream, batch, snapshot), stock out, merchandising
//! exclusions, and the eligibility engine's answers (`Explain`, `DryRun`).

use std::pin::Pin;
use std::sync::Arc;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use restock_domain::eligibility::{Decision, Outcome, RestockContext};
use restock_domain::restock::Hysteresis;
use restock_domain::TenantPolicy;
use restock_store::eligibility::CandidateRow;
use restock_store::inventory::{EventOutcome, Level, Order, RestockPolicy};
use restock_store::substitutes::{GroupRow, Member};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::convert::{decision, timestamp};
use super::paging::{parse_time_cursor, time_cursor, Scope};
use super::validate::Violations;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::proto::v1::eligibility_service_server::EligibilityService;
use crate::startup::AppState;

/// Acknowledgements buffered per stream. A client that stops reading them stops being read
/// from: the server's memory per stream is this many acks, whatever the client sends.
const ACK_BUFFER: usize = 64;
/// Events of one stream applied in one transaction, at most.
const STREAM_BATCH: usize = 256;
const MAX_BATCH: usize = 1_000;
const MAX_SYNC_CHUNK: usize = 1_000;
const MAX_SYNC_LEVELS: u64 = 1_000_000;
const MAX_REJECTIONS: usize = 100;
/// Most units one level may hold (available to sell, on order, a dry run's assumption): far
/// above any real stock, and low enough that totals over locations never overflow an `i64`.
const MAX_UNITS: i64 = 1_000_000_000;

/// The service.
pub struct EligibilityApi {
    state: Arc<AppState>,
}

impl EligibilityApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
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

/// Validates one stock level; field paths start with `prefix`.
#[allow(clippy::too_many_arguments)]
fn level(
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

fn event_order(
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

fn ack(event_id: &str, outcome: EventOutcome) -> pb::InventoryAck {
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

fn rejected(
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
struct Prepared<'a> {
    event_id: String,
    level: Level,
    policy: &'a TenantPolicy,
}

async fn process_event(
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
fn event_span(tenant_id: &str, p: &Prepared<'_>) -> tracing::Span {
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
async fn apply_one(
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
async fn process_events(
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
fn applied(
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
fn prepare_event<'a>(
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

fn exclusion(row: restock_store::inventory::ExclusionRow, tenant_id: &str) -> pb::Exclusion {
    pb::Exclusion {
        exclusion_id: row.exclusion_id.to_string(),
        tenant_id: tenant_id.to_string(),
        target: match (row.product_id, row.variant_id) {
            (Some(p), _) => Some(pb::exclusion::Target::ProductId(p)),
            (None, Some(v)) => Some(pb::exclusion::Target::VariantId(v)),
            (None, None) => None,
        },
        reason: row.reason,
        creator: row.creator.unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        expire_time: row.expires_at.map(timestamp),
        delete_time: row.deleted_at.map(timestamp),
    }
}

/// Most characters of a substitute group id.
const MAX_GROUP_ID: usize = 64;

/// An API group id: letters, digits, '-' and '_' (a '.' marks the configuration's groups).
fn group_id(v: &mut Violations, raw: &str) -> Option<String> {
    if raw.is_empty() {
        v.add("group_id", "is required");
        return None;
    }
    if raw.len() > MAX_GROUP_ID
        || !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.add(
            "group_id",
            format!("must be 1 to {MAX_GROUP_ID} letters, digits, '-' or '_'"),
        );
        return None;
    }
    Some(raw.to_string())
}

/// 2 to 100 distinct members, each a variant or a product.
fn substitute_members(v: &mut Violations, raw: &[pb::SubstituteMember]) -> Vec<Member> {
    use pb::substitute_member::Member as M;
    let max = restock_domain::tenant::MAX_SUBSTITUTE_MEMBERS;
    if raw.len() < 2 || raw.len() > max {
        v.add("members", format!("must hold 2 to {max} members"));
    }
    let mut members = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate().take(max) {
        let member = match &m.member {
            None => {
                v.add(
                    format!("members[{i}]"),
                    "a variant_id or a product_id is required",
                );
                None
            }
            Some(M::VariantId(x)) => v
                .id(&format!("members[{i}].variant_id"), x, true)
                .map(Member::Variant),
            Some(M::ProductId(x)) => v
                .id(&format!("members[{i}].product_id"), x, true)
                .map(Member::Product),
        };
        if let Some(member) = member {
            if members.contains(&member) {
                v.add(format!("members[{i}]"), "names a member already named");
            } else {
                members.push(member);
            }
        }
    }
    members
}

fn substitute_group(row: GroupRow, tenant_id: &str) -> pb::SubstituteGroup {
    use pb::substitute_member::Member as M;
    pb::SubstituteGroup {
        group_id: row.group_id,
        tenant_id: tenant_id.to_string(),
        members: row
            .members
            .into_iter()
            .map(|m| pb::SubstituteMember {
                member: Some(match m {
                    Member::Variant(x) => M::VariantId(x),
                    Member::Product(x) => M::ProductId(x),
                }),
            })
            .collect(),
        configured: row.configured,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

/// Runs the engine for one stored subscription, with the texts and purchases its query read.
/// Cap state lives in Redis and is consulted when sending; here caps are taken as free.
fn evaluate_row(policy: &TenantPolicy, ctx: &RestockContext, row: &CandidateRow) -> Decision {
    crate::dispatch::evaluate(
        policy,
        ctx,
        row,
        crate::dispatch::Known {
            last_purchase_at: row.last_purchase_at,
            substitute_purchase: row.substitute_purchase.as_ref(),
            last_notified_at: row.last_notified_at,
            ..Default::default()
        },
    )
}

/// A stable stand-in restock id for a dry run, so its holdout draw is the same on every page.
fn dry_run_restock_id(tenant_id: &str, variant_id: &str, location_id: &str) -> Uuid {
    let digest = Sha256::digest(
        format!("dry-run\u{1f}{tenant_id}\u{1f}{variant_id}\u{1f}{location_id}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn options_match(wanted: &BTreeMap<String, String>, options: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| {
        options
            .iter()
            .any(|(ok, ov)| ok.eq_ignore_ascii_case(k) && ov.eq_ignore_ascii_case(v))
    })
}

/// A variant's available-to-sell over its locations. Saturating: levels stored before
/// [`MAX_UNITS`] was enforced may be larger.
fn total_available(locations: &[restock_store::inventory::StockRow]) -> i64 {
    locations
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(l.available.max(0)))
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::StreamInventoryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EligibilityService for EligibilityApi {
    async fn stream_inventory(
        &self,
        request: Request<Streaming<pb::StreamInventoryRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        let caller = super::caller(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(ACK_BUFFER);
        let state = self.state.clone();
        let mut draining = state.draining.subscribe();
        // The events' spans are children of the call's.
        let call_span = tracing::Span::current();
        tokio::spawn(async move {
            // In order, an ack only once its event is durable; what has already arrived is
            // applied together (one transaction), so the HTTP/2 buffers drain as fast as a
            // producer fills them.
            let mut open = true;
            while open {
                // A drain ends the stream between batches, so it never holds the shutdown; the
                // sender resends what was not acknowledged to another replica.
                let mut next = tokio::select! {
                    biased;
                    _ = async { drop(draining.wait_for(|d| *d).await) } => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down; reconnect and resend the events not acknowledged"))).await;
                        return;
                    }
                    next = inbound.next() => next,
                };
                let mut batch = Vec::new();
                loop {
                    match next {
                        Some(Ok(msg)) => batch.push(msg),
                        Some(Err(status)) => {
                            tracing::debug!(%status, "inventory stream ended by the client");
                            open = false;
                            break;
                        }
                        None => {
                            open = false;
                            break;
                        }
                    }
                    if batch.len() >= STREAM_BATCH {
                        break;
                    }
                    // Only what is already here: a lone event is not held back for company.
                    match inbound.next().now_or_never() {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                for answer in process_events(&state, &caller, &batch).await {
                    let answer = answer
                        .map(|ack| pb::StreamInventoryResponse { ack: Some(ack) })
                        .map_err(Status::from);
                    let failed = answer.is_err();
                    if tx.send(answer).await.is_err() || failed {
                        return;
                    }
                }
            }
        }.instrument(call_span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_inventory(
        &self,
        request: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.events.is_empty() {
            v.add("events", "at least one event is required");
        } else if req.events.len() > MAX_BATCH {
            v.add("events", format!("at most {MAX_BATCH} events per call"));
        }
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let mut acks = Vec::with_capacity(req.events.len());
        for (i, event) in req.events.iter().enumerate() {
            acks.push(
                process_event(
                    &self.state,
                    &tenant_id,
                    Some(event),
                    &format!("events[{i}]."),
                )
                .await?,
            );
        }
        Ok(Response::new(pb::ReportInventoryResponse { acks }))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let variant_id = v.id("variant_id", &req.variant_id, true);
        if req.location_ids.len() > 100 {
            v.add("location_ids", "at most 100 locations");
        }
        for (i, l) in req.location_ids.iter().enumerate() {
            v.id(&format!("location_ids[{i}]"), l, true);
        }
        v.finish()?;
        let (tenant_id, variant_id) = (
            tenant_id.expect("validated"),
            variant_id.expect("validated"),
        );
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let stock = self
            .state
            .store
            .stock(&tenant_id, &variant_id, &req.location_ids)
            .await
            .map_err(ApiError::from)?;
        if stock.locations.is_empty() && stock.product_id.is_none() && stock.details.title.is_none()
        {
            return Err(ApiError::NotFound(format!(
                "no stock or details of variant \"{variant_id}\""
            ))
            .into());
        }
        let total = total_available(&stock.locations);
        Ok(Response::new(pb::GetStockResponse {
            variant_id,
            product_id: stock.product_id.unwrap_or_default(),
            variant: Some(pb::VariantDetails {
                title: stock.details.title.unwrap_or_default(),
                options: stock.details.options,
                deep_link: stock.details.deep_link.unwrap_or_default(),
            }),
            locations: stock
                .locations
                .into_iter()
                .map(|l| pb::LocationStock {
                    in_stock: l.available >= policy.restock_threshold,
                    location_id: l.location_id,
                    available_to_sell: l.available,
                    on_order: l.on_order,
                    sequence_number: l.last_sequence.unwrap_or(0) as u64,
                    observe_time: l.last_observed_at.map(timestamp),
                    update_time: Some(timestamp(l.updated_at)),
                    last_event_id: l.last_event_id.unwrap_or_default(),
                    last_restock_id: l.last_restock_id.map(|r| r.to_string()).unwrap_or_default(),
                    last_restock_time: l.last_restock_at.map(timestamp),
                })
                .collect(),
            total_available_to_sell: total,
            restock_threshold: policy.restock_threshold,
            rearm_level: policy.rearm_level,
        }))
    }

    async fn sync_inventory(
        &self,
        request: Request<Streaming<pb::SyncInventoryRequest>>,
    ) -> Result<Response<pb::SyncInventoryResponse>, Status> {
        let caller = super::caller(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| ApiError::field("tenant_id", "the snapshot stream was empty"))?;
        let now = self.state.clock.now();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &first.tenant_id, true);
        let snapshot_at = v.past_time("snapshot_time", first.snapshot_time.as_ref(), now, true);
        for (i, l) in first.location_ids.iter().enumerate() {
            v.id(&format!("location_ids[{i}]"), l, true);
        }
        v.finish()?;
        let (tenant_id, snapshot_at) = (
            tenant_id.expect("validated"),
            snapshot_at.expect("validated"),
        );
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let detection = restock_policy(policy);
        let (zero_missing, locations) = (first.zero_missing, first.location_ids.clone());
        let mut session = self
            .state
            .store
            .begin_sync(&tenant_id, snapshot_at)
            .await
            .map_err(ApiError::from)?;
        let (mut received, mut rejected_count) = (0u64, 0u64);
        let mut rejections = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            if msg.tenant_id != tenant_id {
                return Err(ApiError::field(
                    "tenant_id",
                    "must be the same on every message of a sync",
                )
                .into());
            }
            if msg.levels.len() > MAX_SYNC_CHUNK {
                return Err(ApiError::field(
                    "levels",
                    format!("at most {MAX_SYNC_CHUNK} levels per message"),
                )
                .into());
            }
            let mut chunk = Vec::with_capacity(msg.levels.len());
            for l in &msg.levels {
                let index = received;
                received += 1;
                if received > MAX_SYNC_LEVELS {
                    return Err(ApiError::field(
                        "levels",
                        format!("at most {MAX_SYNC_LEVELS} levels per sync"),
                    )
                    .into());
                }
                let mut lv = Violations::default();
                let order = match l.sequence_number {
                    0 => Order::Observed(snapshot_at),
                    n => match i64::try_from(n) {
                        Ok(n) => Order::Sequence(n),
                        Err(_) => {
                            lv.add("sequence_number", "must be at most 2^63 - 1");
                            Order::Observed(snapshot_at)
                        }
                    },
                };
                let parsed = level(
                    &mut lv,
                    "",
                    &l.variant_id,
                    &l.location_id,
                    l.available_to_sell,
                    l.on_order,
                    Some(order),
                    &l.product_id,
                    l.variant.as_ref(),
                );
                match parsed {
                    Some(level) if lv.is_empty() => chunk.push(level),
                    _ => {
                        rejected_count += 1;
                        if rejections.len() < MAX_REJECTIONS {
                            rejections.push(pb::SyncRejection {
                                index,
                                variant_id: l.variant_id.clone(),
                                location_id: l.location_id.clone(),
                                field_violations: lv.into_field_violations(),
                            });
                        }
                    }
                }
            }
            session
                .apply(&chunk, &detection, now)
                .await
                .map_err(ApiError::from)?;
            next = inbound.message().await?;
        }
        let counts = session
            .commit(zero_missing, &locations, &detection, now)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            tenant_id,
            received,
            changed = counts.changed,
            zeroed = counts.zeroed,
            restocks = counts.restocks_started,
            "inventory synced"
        );
        if counts.restocks_started > 0 {
            self.state.dispatch_wake.notify_one();
        }
        Ok(Response::new(pb::SyncInventoryResponse {
            received_count: received,
            changed_count: counts.changed,
            unchanged_count: counts.unchanged,
            stale_count: counts.stale,
            zeroed_count: counts.zeroed,
            rejected_count,
            rejections,
            restocks_started_count: counts.restocks_started,
        }))
    }

    async fn create_exclusion(
        &self,
        request: Request<pb::CreateExclusionRequest>,
    ) -> Result<Response<pb::CreateExclusionResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let now = self.state.clock.now();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let (product_id, variant_id) = match &req.target {
            None => {
                v.add("product_id", "a product_id or a variant_id is required");
                (None, None)
            }
            Some(pb::create_exclusion_request::Target::ProductId(p)) => {
                (v.id("product_id", p, true), None)
            }
            Some(pb::create_exclusion_request::Target::VariantId(x)) => {
                (None, v.id("variant_id", x, true))
            }
        };
        let reason = v.text("reason", &req.reason, 500, true);
        let creator = v.id("creator", &req.creator, true);
        let expires_at = req.expire_time.as_ref().and_then(|ts| {
            let t = v.timestamp("expire_time", ts)?;
            if t <= now {
                v.add("expire_time", "must be in the future");
                return None;
            }
            Some(t)
        });
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let (row, created) = self
            .state
            .store
            .create_exclusion(
                &tenant_id,
                product_id.as_deref(),
                variant_id.as_deref(),
                &reason.expect("validated"),
                &creator.expect("validated"),
                expires_at,
                now,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateExclusionResponse {
            exclusion: Some(exclusion(row, &tenant_id)),
            created,
        }))
    }

    async fn delete_exclusion(
        &self,
        request: Request<pb::DeleteExclusionRequest>,
    ) -> Result<Response<pb::DeleteExclusionResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let id = v.uuid("exclusion_id", &req.exclusion_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        self.state
            .store
            .delete_exclusion(&tenant_id, id.expect("validated"), self.state.clock.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteExclusionResponse {}))
    }

    async fn list_exclusions(
        &self,
        request: Request<pb::ListExclusionsRequest>,
    ) -> Result<Response<pb::ListExclusionsResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let product_id = v.id("product_id", &req.product_id, false);
        let variant_id = v.id("variant_id", &req.variant_id, false);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let scope = Scope::new(
            "ListExclusions",
            &req.tenant_id,
            &(&product_id, &variant_id, req.show_inactive),
        );
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, parse_time_cursor);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let size = super::validate::page_size(req.page_size);
        let mut rows = self
            .state
            .store
            .list_exclusions(
                &tenant_id,
                product_id.as_deref(),
                variant_id.as_deref(),
                req.show_inactive,
                after,
                size + 1,
                self.state.clock.now(),
            )
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&scope, &time_cursor(last.created_at, last.exclusion_id))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListExclusionsResponse {
            exclusions: rows.into_iter().map(|r| exclusion(r, &tenant_id)).collect(),
            next_page_token,
        }))
    }

    async fn set_substitute_group(
        &self,
        request: Request<pb::SetSubstituteGroupRequest>,
    ) -> Result<Response<pb::SetSubstituteGroupResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let group_id = group_id(&mut v, &req.group_id);
        let members = substitute_members(&mut v, &req.members);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let (row, created) = self
            .state
            .store
            .set_substitute_group(
                &tenant_id,
                &group_id.expect("validated"),
                &members,
                self.state.clock.now(),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SetSubstituteGroupResponse {
            group: Some(substitute_group(row, &tenant_id)),
            created,
        }))
    }

    async fn list_substitute_groups(
        &self,
        request: Request<pb::ListSubstituteGroupsRequest>,
    ) -> Result<Response<pb::ListSubstituteGroupsResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let scope = Scope::new("ListSubstituteGroups", &req.tenant_id, &());
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, |c| Some(c.to_string()));
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let size = super::validate::page_size(req.page_size);
        let mut rows = self
            .state
            .store
            .list_substitute_groups(&tenant_id, after.as_deref(), size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&scope, &last.group_id)
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSubstituteGroupsResponse {
            groups: rows
                .into_iter()
                .map(|r| substitute_group(r, &tenant_id))
                .collect(),
            next_page_token,
        }))
    }

    async fn delete_substitute_group(
        &self,
        request: Request<pb::DeleteSubstituteGroupRequest>,
    ) -> Result<Response<pb::DeleteSubstituteGroupResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        // Configured ids (with their '.') may be named, to be told why they cannot go.
        let group_id = v.id("group_id", &req.group_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        self.state
            .store
            .delete_substitute_group(&tenant_id, &group_id.expect("validated"))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteSubstituteGroupResponse {}))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let subscription_id = v.uuid("subscription_id", &req.subscription_id, true);
        let restock_id = v.uuid("restock_id", &req.restock_id, false);
        let asked_variant = v.id("variant_id", &req.variant_id, false);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let now = self.state.clock.now();
        let store = &self.state.store;
        let row = store
            .candidate(&tenant_id, subscription_id.expect("validated"))
            .await
            .map_err(ApiError::from)?;
        let restock = match restock_id {
            Some(id) => Some(
                store
                    .restock(&tenant_id, id)
                    .await
                    .map_err(ApiError::from)?,
            ),
            None => None,
        };
        // The variant: the subscription's own, else the restock's, else the one asked for, else
        // the product's matching variant with the most stock.
        let variant_id = match (&row.variant_id, &restock, asked_variant) {
            (Some(v), _, _) => v.clone(),
            (None, Some(r), _) => r.variant_id.clone(),
            (None, None, Some(v)) => v,
            (None, None, None) => {
                let product = row.product_id.clone().unwrap_or_default();
                store
                    .product_variants(&tenant_id, &product)
                    .await
                    .map_err(ApiError::from)?
                    .into_iter()
                    .find(|(_, options, _)| options_match(&row.wanted_options, options))
                    .map(|(v, _, _)| v)
                    .ok_or_else(|| ApiError::FailedPrecondition {
                        kind: "STOCK",
                        subject: "variant_id".into(),
                        description: "no known variant of the product matches the subscription's wanted options; name one in variant_id".into(),
                    })?
            }
        };
        if let Some(r) = &restock {
            if r.variant_id != variant_id {
                return Err(
                    ApiError::field("restock_id", "is a restock of another variant").into(),
                );
            }
        }
        let restock = match restock {
            Some(r) => Some(r),
            None => store
                .latest_restock(&tenant_id, &variant_id)
                .await
                .map_err(ApiError::from)?,
        };
        let stock = store
            .stock(&tenant_id, &variant_id, &[])
            .await
            .map_err(ApiError::from)?;
        let product_id = stock.product_id.clone().or(row.product_id.clone());
        let exclusions = store
            .live_exclusions(&tenant_id, &variant_id, product_id.as_deref(), now)
            .await
            .map_err(ApiError::from)?;
        let mut policy = policy.clone();
        if restock.is_none() {
            // The holdout is drawn per restock: with none yet, there is nothing to draw.
            policy.holdout_share = 0.0;
        }
        let levels: Vec<(String, i64)> = stock
            .locations
            .iter()
            .map(|l| (l.location_id.clone(), l.available))
            .collect();
        let ctx = RestockContext {
            restock_id: restock.as_ref().map_or(Uuid::nil(), |r| r.restock_id),
            variant_id: &variant_id,
            product_id: product_id.as_deref(),
            variant_options: &stock.details.options,
            stock: &levels,
            exclusions,
            now,
        };
        let mut row = row;
        (row.last_notified_at, row.last_purchase_at) = store
            .history(&tenant_id, row.subscription_id, &variant_id)
            .await
            .map_err(ApiError::from)?;
        row.substitute_purchase = store
            .substitute_purchase(&tenant_id, row.subscription_id, &variant_id)
            .await
            .map_err(ApiError::from)?;
        let d = evaluate_row(&policy, &ctx, &row);
        let (kind, until) = decision::outcome(d.outcome);
        let message = match &restock {
            Some(r) => store
                .message_for(&tenant_id, row.subscription_id, r.restock_id)
                .await
                .map_err(ApiError::from)?,
            None => None,
        };
        let propensity_score = store
            .propensity_score(&tenant_id, row.subscription_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ExplainResponse {
            subscription_id: row.subscription_id.to_string(),
            variant_id,
            restock_id: restock
                .map(|r| r.restock_id.to_string())
                .unwrap_or_default(),
            evaluate_time: Some(timestamp(now)),
            decision: kind as i32,
            defer_until_time: until,
            reason: decision::reason(d.reason) as i32,
            summary: d.summary.clone(),
            rules: decision::rules(&d),
            message_id: message.map(|(m, _)| m.to_string()).unwrap_or_default(),
            propensity_score,
            release_order: policy.release_order.as_str().to_string(),
            release_place: message
                .and_then(|(_, place)| place)
                .map_or(0, |p| p.max(0) as u32),
        }))
    }

    async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let variant_id = v.id("variant_id", &req.variant_id, true);
        let location_id = v.id("location_id", &req.location_id, false);
        if req.assume_available < 0 {
            v.add("assume_available", "must not be negative");
        } else if req.assume_available > MAX_UNITS {
            v.add("assume_available", format!("must be at most {MAX_UNITS}"));
        }
        let example_decision = v.enumeration::<pb::EligibilityDecision>(
            "example_decision",
            req.example_decision,
            false,
        );
        let example_reason =
            v.enumeration::<pb::ReasonCode>("example_reason", req.example_reason, false);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        // A page of examples is bound to the whole request but its page size and token.
        let scope = Scope::new(
            "DryRun",
            &req.tenant_id,
            &(
                &variant_id,
                &location_id,
                req.assume_available,
                req.example_decision,
                req.example_reason,
            ),
        );
        let tokens = &self.state.page_tokens;
        let skip_examples: u64 = tokens
            .open(&mut v, &req.page_token, &scope, |c| c.parse().ok())
            .unwrap_or(0);
        v.finish()?;
        let (tenant_id, variant_id) = (
            tenant_id.expect("validated"),
            variant_id.expect("validated"),
        );
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let now = self.state.clock.now();
        let store = &self.state.store;
        let stock = store
            .stock(&tenant_id, &variant_id, &[])
            .await
            .map_err(ApiError::from)?;
        let product_id = stock.product_id.clone();
        let exclusions = self
            .state
            .store
            .live_exclusions(&tenant_id, &variant_id, product_id.as_deref(), now)
            .await
            .map_err(ApiError::from)?;
        let current = |loc: &str| {
            stock
                .locations
                .iter()
                .find(|l| l.location_id == loc)
                .map_or(0, |l| l.available)
        };
        let assume = |level: i64| {
            if req.assume_available > 0 {
                req.assume_available
            } else {
                level.max(policy.restock_threshold)
            }
        };
        let assumed_available = match &location_id {
            Some(l) => assume(current(l)),
            None => assume(total_available(&stock.locations)),
        };
        let restock_id = dry_run_restock_id(
            &tenant_id,
            &variant_id,
            location_id.as_deref().unwrap_or(""),
        );
        let page = match req.page_size {
            0 => 20,
            n => n.min(200) as usize,
        };

        let mut candidates = Box::pin(
            store
                .candidates(&tenant_id, &variant_id, product_id.as_deref())
                .await
                .map_err(ApiError::from)?,
        );
        let mut counts: [u64; 3] = [0; 3];
        let mut deferred: BTreeMap<i32, u64> = BTreeMap::new();
        let mut skipped: BTreeMap<i32, u64> = BTreeMap::new();
        let (mut examples, mut matching, mut more) = (Vec::new(), 0u64, false);
        let mut evaluated = 0u64;
        while let Some(row) = candidates.next().await {
            let row = row.map_err(ApiError::from)?;
            evaluated += 1;
            // The stock the restock would show this subscriber: the restocked location, or, for
            // a restock everywhere, each of the subscriber's serving locations.
            let levels: Vec<(String, i64)> = match &location_id {
                Some(l) => vec![(l.clone(), assumed_available)],
                None if row.location_ids.is_empty() => vec![("*".to_string(), assumed_available)],
                None => row
                    .location_ids
                    .iter()
                    .map(|l| (l.clone(), assume(current(l))))
                    .collect(),
            };
            let ctx = RestockContext {
                restock_id,
                variant_id: &variant_id,
                product_id: product_id.as_deref(),
                variant_options: &stock.details.options,
                stock: &levels,
                exclusions,
                now,
            };
            let d = evaluate_row(policy, &ctx, &row);
            let (kind, until) = decision::outcome(d.outcome);
            let reason = decision::reason(d.reason);
            match d.outcome {
                Outcome::SendNow => counts[0] += 1,
                Outcome::Defer(_) => {
                    counts[1] += 1;
                    *deferred.entry(reason as i32).or_default() += 1;
                }
                Outcome::Skip => {
                    counts[2] += 1;
                    *skipped.entry(reason as i32).or_default() += 1;
                }
            }
            let wanted = example_decision.is_none_or(|e| e == kind)
                && example_reason.is_none_or(|r| r == reason);
            if wanted {
                matching += 1;
                if matching > skip_examples {
                    if examples.len() < page {
                        examples.push(pb::DryRunExample {
                            subscription_id: row.subscription_id.to_string(),
                            priority_tier: row.priority_tier as u32,
                            create_time: Some(timestamp(row.created_at)),
                            decision: kind as i32,
                            reason: reason as i32,
                            defer_until_time: until,
                        });
                    } else {
                        more = true;
                    }
                }
            }
        }
        let by_reason = |m: BTreeMap<i32, u64>| {
            m.into_iter()
                .map(|(reason, count)| pb::ReasonCount { reason, count })
                .collect::<Vec<_>>()
        };
        Ok(Response::new(pb::DryRunResponse {
            evaluate_time: Some(timestamp(now)),
            assumed_available,
            evaluated_count: evaluated,
            send_now_count: counts[0],
            defer_count: counts[1],
            skip_count: counts[2],
            deferred_by_reason: by_reason(deferred),
            skipped_by_reason: by_reason(skipped),
            next_page_token: if more {
                tokens.issue(&scope, &(skip_examples + examples.len() as u64).to_string())
            } else {
                String::new()
            },
            examples,
        }))
    }
}
