//! DispatchService: releases (get, list, watch, pause, resume, cancel) and their messages (get,
//! list); purchases and attribution reports live in their own modules.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use restock_domain::eligibility::Reason;
use restock_domain::waves::Strategy;
use restock_domain::TenantPolicy;
use restock_store::dispatch::{Steer, SteerResult};
use restock_store::releases::{
    MessageCursor, MessageFilter, MessageView, ReleaseFilter, ReleaseView, Tally,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert::{decision, timestamp};
use super::paging::{parse_time_cursor, time_cursor, Scope};
use super::validate::{page_size, Violations};
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::proto::v1::dispatch_service_server::DispatchService;
use crate::startup::AppState;

/// Longest reason a caller may give for pausing or cancelling a release.
const MAX_REASON: usize = 500;
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(60);

/// The service.
pub struct DispatchApi {
    state: Arc<AppState>,
}

impl DispatchApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// A release as the API shows it.
    async fn release(&self, tenant_id: &str, release_id: Uuid) -> Result<pb::Release, ApiError> {
        load_release(&self.state, tenant_id, release_id).await
    }

    /// Pauses, resumes or cancels a release, then answers it as it stands.
    async fn steer(
        &self,
        tenant_id: &str,
        release_id: Uuid,
        steer: Steer,
        reason: &str,
    ) -> Result<pb::Release, ApiError> {
        let outcome = self
            .state
            .store
            .steer_release(tenant_id, release_id, steer, reason, self.state.clock.now())
            .await?;
        match outcome {
            SteerResult::Done => {
                tracing::info!(tenant_id, %release_id, ?steer, reason, "release steered");
                if steer == Steer::Resume {
                    // A due wave opens at once rather than at the scheduler's next poll.
                    self.state.dispatch_wake.notify_one();
                }
                self.release(tenant_id, release_id).await
            }
            SteerResult::Refused(state) => Err(ApiError::FailedPrecondition {
                kind: "STATE",
                subject: "release_id".into(),
                description: refusal(steer, &state),
            }),
        }
    }
}

async fn load_release(
    state: &AppState,
    tenant_id: &str,
    release_id: Uuid,
) -> Result<pb::Release, ApiError> {
    let view = state.store.get_release(tenant_id, release_id).await?;
    Ok(release(&view, state.tenants.get(tenant_id)))
}

fn refusal(steer: Steer, state: &str) -> String {
    let what = match steer {
        Steer::Pause => "only a planning or sending release can be paused",
        Steer::Resume => "only a paused release can be resumed",
        Steer::Cancel => "only a planning, sending or paused release can be cancelled",
    };
    format!("the release is {}: {what}", state.replace('_', " "))
}

// ---- Conversions between stored names and the API's enums.

fn release_state(s: &str) -> pb::ReleaseState {
    use pb::ReleaseState as P;
    match s {
        "planning" => P::Planning,
        "sending" => P::Sending,
        "paused" => P::Paused,
        "sold_out" => P::SoldOut,
        "completed" => P::Completed,
        "cancelled" => P::Cancelled,
        _ => P::Unspecified,
    }
}

fn release_state_name(s: pb::ReleaseState) -> Option<&'static str> {
    use pb::ReleaseState as P;
    Some(match s {
        P::Unspecified => return None,
        P::Planning => "planning",
        P::Sending => "sending",
        P::Paused => "paused",
        P::SoldOut => "sold_out",
        P::Completed => "completed",
        P::Cancelled => "cancelled",
    })
}

fn ended(s: pb::ReleaseState) -> bool {
    matches!(
        s,
        pb::ReleaseState::SoldOut | pb::ReleaseState::Completed | pb::ReleaseState::Cancelled
    )
}

fn wave_state(s: &str) -> pb::WaveState {
    use pb::WaveState as P;
    match s {
        "pending" => P::Pending,
        "waiting" => P::Waiting,
        "sending" => P::Sending,
        "done" => P::Done,
        "cancelled" => P::Cancelled,
        _ => P::Unspecified,
    }
}

const STATUSES: [(&str, pb::MessageStatus); 11] = [
    ("planned", pb::MessageStatus::Planned),
    ("held_out", pb::MessageStatus::HeldOut),
    ("deferred", pb::MessageStatus::Deferred),
    ("sending", pb::MessageStatus::Sending),
    ("sent", pb::MessageStatus::Sent),
    ("delivered", pb::MessageStatus::Delivered),
    ("undelivered", pb::MessageStatus::Undelivered),
    ("failed", pb::MessageStatus::Failed),
    ("suppressed", pb::MessageStatus::Suppressed),
    ("skipped", pb::MessageStatus::Skipped),
    ("unknown", pb::MessageStatus::Unknown),
];

fn message_status(s: &str) -> pb::MessageStatus {
    STATUSES
        .iter()
        .find(|(name, _)| *name == s)
        .map_or(pb::MessageStatus::Unspecified, |(_, p)| *p)
}

fn message_status_name(s: pb::MessageStatus) -> Option<&'static str> {
    STATUSES
        .iter()
        .find(|(_, p)| *p == s)
        .map(|(name, _)| *name)
}

/// A stored reason in API terms. The engine's own reasons without an API code (an unknown
/// tenant, a text too long for its segment budget) answer UNSPECIFIED.
fn reason_code(stored: Option<&str>) -> pb::ReasonCode {
    match stored {
        None => pb::ReasonCode::Unspecified,
        Some("release_sold_out") => pb::ReasonCode::ReleaseSoldOut,
        Some("release_cancelled") => pb::ReasonCode::ReleaseCancelled,
        // Erasure cancels the phone's subscriptions, which is what the API code says.
        Some("phone_erased") => pb::ReasonCode::SubscriptionCancelled,
        Some(other) => decision::reason(Reason::parse(other)),
    }
}

fn encoding(stored: Option<&str>) -> pb::MessageEncoding {
    let normalized = stored.map(|e| e.to_ascii_lowercase().replace(['-', '_'], ""));
    match normalized.as_deref() {
        Some("gsm7") => pb::MessageEncoding::Gsm7,
        Some("ucs2") => pb::MessageEncoding::Ucs2,
        _ => pb::MessageEncoding::Unspecified,
    }
}

fn kind(stored: &str) -> pb::MessageKind {
    match stored {
        "first" => pb::MessageKind::First,
        "reminder" => pb::MessageKind::Reminder,
        _ => pb::MessageKind::Unspecified,
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

// ---- Releases and messages as the API shows them.

/// Messages counted, from the tallies of one release (or one of its waves).
fn counts<'a>(tallies: impl Iterator<Item = &'a Tally>) -> pb::MessageCounts {
    let mut c = pb::MessageCounts::default();
    let mut deferred: BTreeMap<i32, u64> = BTreeMap::new();
    let mut skipped: BTreeMap<i32, u64> = BTreeMap::new();
    for t in tallies {
        let n = t.messages.max(0) as u64;
        c.recipient_count += n;
        let by_reason = match t.status.as_str() {
            "planned" => {
                c.planned_count += n;
                None
            }
            "held_out" => {
                c.held_out_count += n;
                Some(&mut skipped)
            }
            "deferred" => {
                c.deferred_count += n;
                Some(&mut deferred)
            }
            "sending" => {
                c.sending_count += n;
                None
            }
            "sent" | "delivered" | "undelivered" => {
                match t.status.as_str() {
                    "sent" => c.sent_count += n,
                    "delivered" => c.delivered_count += n,
                    _ => c.undelivered_count += n,
                }
                c.texted_count += n;
                c.segment_count += t.segments.max(0) as u64;
                None
            }
            "failed" => {
                c.failed_count += n;
                None
            }
            "suppressed" => {
                c.suppressed_count += n;
                Some(&mut skipped)
            }
            "skipped" => {
                c.skipped_count += n;
                Some(&mut skipped)
            }
            "unknown" => {
                c.unknown_count += n;
                None
            }
            _ => None,
        };
        let code = reason_code(t.reason.as_deref());
        // A reason without an API code is counted under its status only.
        if let (Some(map), false) = (by_reason, code == pb::ReasonCode::Unspecified) {
            *map.entry(code as i32).or_default() += n;
        }
    }
    let listed = |m: BTreeMap<i32, u64>| {
        let mut v: Vec<pb::ReasonCount> = m
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, count)| pb::ReasonCount { reason, count })
            .collect();
        // Most common first; ties in code order, so equal snapshots compare equal.
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        v
    };
    c.deferred_by_reason = listed(deferred);
    c.skipped_by_reason = listed(skipped);
    c
}

/// `policy` previews the strategy of a release not planned yet: it is planned with the
/// tenant's policy of that moment.
fn release(v: &ReleaseView, policy: Option<&TenantPolicy>) -> pb::Release {
    let planned = v.strategy.is_some();
    let strategy = v.strategy.clone().or_else(|| policy.map(Strategy::of));
    let holdout_bps = match (planned, policy) {
        (false, Some(p)) => (p.holdout_share * 10_000.0).round() as u32,
        _ => v.holdout_bps.max(0) as u32,
    };
    let (strategy_pb, parameters) = match strategy {
        None => (pb::ReleaseStrategy::Unspecified, None),
        Some(Strategy::Immediate) => (pb::ReleaseStrategy::Immediate, None),
        Some(Strategy::Staged {
            shares_bps,
            interval,
        }) => (
            pb::ReleaseStrategy::Staged,
            Some(pb::release::StrategyParameters::Staged(
                pb::StagedParameters {
                    stage_shares_bps: shares_bps,
                    interval: Some(duration(interval)),
                },
            )),
        ),
        Some(Strategy::Proportional { factor, interval }) => (
            pb::ReleaseStrategy::Proportional,
            Some(pb::release::StrategyParameters::Proportional(
                pb::ProportionalParameters {
                    oversubscription_factor: factor,
                    interval: Some(duration(interval)),
                },
            )),
        ),
        Some(Strategy::SellThrough {
            first_share_bps,
            absorbed_share_bps,
            factor,
            interval,
        }) => (
            pb::ReleaseStrategy::SellThrough,
            Some(pb::release::StrategyParameters::SellThrough(
                pb::SellThroughParameters {
                    first_wave_share_bps: first_share_bps,
                    absorbed_share_bps,
                    oversubscription_factor: factor,
                    interval: Some(duration(interval)),
                },
            )),
        ),
    };
    let waves = v
        .waves
        .iter()
        .map(|w| pb::Wave {
            number: w.number.max(0) as u32,
            state: wave_state(&w.state) as i32,
            share_bps: w.share_bps.max(0) as u32,
            scheduled_time: Some(timestamp(w.scheduled_at)),
            start_time: w.started_at.map(timestamp),
            end_time: w.ended_at.map(timestamp),
            available_before: w.available_before.unwrap_or_default(),
            opened_on_sell_through: w.opened_by.as_deref() == Some("sell_through"),
            counts: Some(counts(
                v.tallies.iter().filter(|t| t.wave == Some(w.number)),
            )),
        })
        .collect();
    pb::Release {
        release_id: v.release_id.to_string(),
        tenant_id: v.tenant_id.clone(),
        restock_id: v.restock_id.to_string(),
        variant_id: v.variant_id.clone(),
        product_id: v.product_id.clone().unwrap_or_default(),
        location_id: v.location_id.clone().unwrap_or_default(),
        strategy: strategy_pb as i32,
        strategy_parameters: parameters,
        holdout_bps,
        state: release_state(&v.state) as i32,
        state_reason: v.state_reason.clone(),
        available_at_restock: v.available_at_restock,
        waves,
        counts: Some(counts(v.tallies.iter())),
        create_time: Some(timestamp(v.created_at)),
        start_time: v.started_at.map(timestamp),
        end_time: v.ended_at.map(timestamp),
        update_time: Some(timestamp(v.last_change())),
        next_wave_time: v.next_wave_at.map(timestamp),
    }
}

fn message(m: MessageView) -> pb::Message {
    let status = message_status(&m.status);
    use pb::MessageStatus as S;
    let reason = match status {
        S::HeldOut | S::Deferred | S::Suppressed | S::Skipped => reason_code(m.reason.as_deref()),
        _ => pb::ReasonCode::Unspecified,
    };
    // An error before a later success is history, not the message's last error.
    let last_error = match (status, &m.last_error_code) {
        (S::Sent | S::Delivered, _) | (_, None) => None,
        (_, Some(code)) => Some(pb::MessageError {
            code: code.clone(),
            description: m.last_error_description.clone().unwrap_or_default(),
            permanent: m.last_error_permanent.unwrap_or(false),
            occur_time: m.last_error_at.map(timestamp),
        }),
    };
    // Personal data goes with the phone: an erased recipient's text is not shown either.
    let erased = m.phone_e164.is_none();
    pb::Message {
        message_id: m.message_id.to_string(),
        tenant_id: m.tenant_id,
        release_id: m.release_id.to_string(),
        subscription_id: m.subscription_id.to_string(),
        variant_id: m.variant_id,
        phone_number: m.phone_e164.unwrap_or_default(),
        wave: m.wave.unwrap_or(0).max(0) as u32,
        status: status as i32,
        reason: reason as i32,
        defer_until_time: (status == S::Deferred)
            .then_some(m.due_at)
            .flatten()
            .map(timestamp),
        kind: kind(&m.kind) as i32,
        body: if erased {
            String::new()
        } else {
            m.body.unwrap_or_default()
        },
        segment_count: m.segments.max(0) as u32,
        encoding: encoding(m.encoding.as_deref()) as i32,
        sender_id: m.sender_id.unwrap_or_default(),
        provider_message_id: m.provider_message_id.unwrap_or_default(),
        attempt_count: m.attempts.max(0) as u32,
        next_attempt_time: (status == S::Planned && last_error.is_some())
            .then_some(m.due_at)
            .flatten()
            .map(timestamp),
        last_error,
        lease_expire_time: (status == S::Sending)
            .then_some(m.lease_until)
            .flatten()
            .map(timestamp),
        create_time: Some(timestamp(m.created_at)),
        send_time: m.sent_at.map(timestamp),
        report_time: m.report_at.map(timestamp),
        first_click_time: m.first_click_at.map(timestamp),
        update_time: Some(timestamp(m.updated_at)),
    }
}

// ---- Page cursors (the tokens around them are `super::paging`'s).

fn message_cursor(c: MessageCursor) -> String {
    match c {
        MessageCursor::Newest(t, id) => format!("n:{}", time_cursor(t, id)),
        MessageCursor::Plan(p, id) => format!(
            "p:{}:{id}",
            p.map_or_else(|| "-".to_string(), |p| p.to_string())
        ),
    }
}

fn parse_message_cursor(s: &str, plan_order: bool) -> Option<MessageCursor> {
    let (kind, rest) = s.split_once(':')?;
    match (kind, plan_order) {
        ("n", false) => parse_time_cursor(rest).map(|(t, id)| MessageCursor::Newest(t, id)),
        ("p", true) => {
            let (p, id) = rest.split_once(':')?;
            let p = match p {
                "-" => None,
                p => Some(p.parse().ok()?),
            };
            Some(MessageCursor::Plan(p, Uuid::parse_str(id).ok()?))
        }
        _ => None,
    }
}

// ---- Validation shared by the RPCs.

fn page_size_rule(v: &mut Violations, raw: i32) {
    if raw < 0 {
        v.add("page_size", "must not be negative");
    }
}

fn min_interval(v: &mut Violations, raw: Option<&prost_types::Duration>) -> Duration {
    let Some(d) = raw else {
        return DEFAULT_WATCH_INTERVAL;
    };
    let valid = (0..1_000_000_000).contains(&d.nanos) && d.seconds >= 0;
    let interval = valid.then(|| Duration::new(d.seconds as u64, d.nanos as u32));
    match interval {
        Some(i) if (MIN_WATCH_INTERVAL..=MAX_WATCH_INTERVAL).contains(&i) => i,
        _ => {
            v.add(
                "min_interval",
                "must be at least 100 milliseconds and at most 60 seconds",
            );
            DEFAULT_WATCH_INTERVAL
        }
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchReleaseResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DispatchService for DispatchApi {
    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::GetReleaseResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .release(&tenant_id, release_id.expect("validated"))
            .await?;
        Ok(Response::new(pb::GetReleaseResponse {
            release: Some(release),
        }))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        page_size_rule(&mut v, req.page_size);
        let mut states: Vec<String> = req
            .states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                v.enumeration::<pb::ReleaseState>(&format!("states[{i}]"), *s, true)
                    .and_then(release_state_name)
                    .map(str::to_string)
            })
            .collect();
        states.sort();
        states.dedup();
        let mut time = |field: &str, ts: Option<&prost_types::Timestamp>| {
            ts.and_then(|ts| v.timestamp(field, ts))
        };
        let created_from = time("create_time_start", req.create_time_start.as_ref());
        let created_before = time("create_time_end", req.create_time_end.as_ref());
        if let (Some(from), Some(before)) = (created_from, created_before) {
            if before <= from {
                v.add("create_time_end", "must be after create_time_start");
            }
        }
        let filter = ReleaseFilter {
            variant_id: v.id("variant_id", &req.variant_id, false),
            product_id: v.id("product_id", &req.product_id, false),
            location_id: v.id("location_id", &req.location_id, false),
            restock_id: v.uuid("restock_id", &req.restock_id, false),
            states,
            created_from,
            created_before,
        };
        let scope = Scope::new("ListReleases", &req.tenant_id, &filter);
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, parse_time_cursor);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let size = page_size(req.page_size);
        let mut rows = self
            .state
            .store
            .list_releases(&tenant_id, &filter, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&scope, &time_cursor(last.created_at, last.release_id))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListReleasesResponse {
            releases: rows.iter().map(|r| release(r, Some(policy))).collect(),
            next_page_token,
        }))
    }

    async fn watch_release(
        &self,
        request: Request<pb::WatchReleaseRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        let interval = min_interval(&mut v, req.min_interval.as_ref());
        v.finish()?;
        let (tenant_id, release_id) = (
            tenant_id.expect("validated"),
            release_id.expect("validated"),
        );
        self.state.tenant(&caller, &tenant_id)?;
        // An unknown release is NOT_FOUND as the call's status, not as a stream's end.
        let first = self.release(&tenant_id, release_id).await?;
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut last = first;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut send = Some(last.clone());
            let mut draining = state.draining.subscribe();
            loop {
                if let Some(release) = send.take() {
                    let done = ended(release.state());
                    let snapshot = pb::WatchReleaseResponse {
                        release: Some(release),
                    };
                    if tx.send(Ok(snapshot)).await.is_err() || done {
                        return;
                    }
                }
                // One poll per interval; a client that hangs up stops the polling at once.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = async { drop(draining.wait_for(|d| *d).await) } => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the server is shutting down; call again to go on watching",
                            )))
                            .await;
                        return;
                    }
                    _ = ticker.tick() => {}
                }
                match load_release(&state, &tenant_id, release_id).await {
                    Ok(release) if release != last => {
                        last = release.clone();
                        send = Some(release);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn pause_release(
        &self,
        request: Request<pb::PauseReleaseRequest>,
    ) -> Result<Response<pb::PauseReleaseResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        let reason = v.text("reason", &req.reason, MAX_REASON, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .steer(
                &tenant_id,
                release_id.expect("validated"),
                Steer::Pause,
                &reason.expect("validated"),
            )
            .await?;
        Ok(Response::new(pb::PauseReleaseResponse {
            release: Some(release),
        }))
    }

    async fn resume_release(
        &self,
        request: Request<pb::ResumeReleaseRequest>,
    ) -> Result<Response<pb::ResumeReleaseResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .steer(
                &tenant_id,
                release_id.expect("validated"),
                Steer::Resume,
                "",
            )
            .await?;
        Ok(Response::new(pb::ResumeReleaseResponse {
            release: Some(release),
        }))
    }

    async fn cancel_release(
        &self,
        request: Request<pb::CancelReleaseRequest>,
    ) -> Result<Response<pb::CancelReleaseResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        let reason = v.text("reason", &req.reason, MAX_REASON, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .steer(
                &tenant_id,
                release_id.expect("validated"),
                Steer::Cancel,
                &reason.expect("validated"),
            )
            .await?;
        Ok(Response::new(pb::CancelReleaseResponse {
            release: Some(release),
        }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let message_id = v.uuid("message_id", &req.message_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let row = self
            .state
            .store
            .get_message(&tenant_id, message_id.expect("validated"))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetMessageResponse {
            message: Some(message(row)),
        }))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        page_size_rule(&mut v, req.page_size);
        let phone = (!req.phone_number.is_empty())
            .then(|| {
                v.phone(
                    "phone_number",
                    "default_region",
                    &req.phone_number,
                    &req.default_region,
                )
            })
            .flatten();
        let mut statuses: Vec<String> = req
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                v.enumeration::<pb::MessageStatus>(&format!("statuses[{i}]"), *s, true)
                    .and_then(message_status_name)
                    .map(str::to_string)
            })
            .collect();
        statuses.sort();
        statuses.dedup();
        let filter = MessageFilter {
            release_id: v.uuid("release_id", &req.release_id, false),
            phone_e164: phone.map(|p| p.e164().to_string()),
            subscription_id: v.uuid("subscription_id", &req.subscription_id, false),
            statuses,
        };
        let plan_order = filter.release_id.is_some();
        let scope = Scope::new("ListMessages", &req.tenant_id, &filter);
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, |c| {
            parse_message_cursor(c, plan_order)
        });
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.state.tenant(&caller, &tenant_id)?;
        let size = page_size(req.page_size);
        let mut rows = self
            .state
            .store
            .list_messages(&tenant_id, &filter, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            let cursor = if plan_order {
                MessageCursor::Plan(last.position, last.message_id)
            } else {
                MessageCursor::Newest(last.created_at, last.message_id)
            };
            tokens.issue(&scope, &message_cursor(cursor))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListMessagesResponse {
            messages: rows.into_iter().map(message).collect(),
            next_page_token,
        }))
    }

    async fn record_purchase(
        &self,
        request: Request<pb::RecordPurchaseRequest>,
    ) -> Result<Response<pb::RecordPurchaseResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::purchases::record(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn export_messages(
        &self,
        request: Request<pb::ExportMessagesRequest>,
    ) -> Result<Response<super::export::ExportStream>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::export::export(self.state.clone(), &caller, request.into_inner(), message)
                .await?,
        ))
    }

    async fn record_product_views(
        &self,
        request: Request<pb::RecordProductViewsRequest>,
    ) -> Result<Response<pb::RecordProductViewsResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::views::record(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_release_report(
        &self,
        request: Request<pb::GetReleaseReportRequest>,
    ) -> Result<Response<pb::GetReleaseReportResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::reports::release(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_variant_report(
        &self,
        request: Request<pb::GetVariantReportRequest>,
    ) -> Result<Response<pb::GetVariantReportResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::reports::variant(&self.state, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_period_report(
        &self,
        request: Request<pb::GetPeriodReportRequest>,
    ) -> Result<Response<pb::GetPeriodReportResponse>, Status> {
        let caller = super::caller(&request)?;
        Ok(Response::new(
            super::reports::period(&self.state, &caller, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn tally(wave: Option<i32>, status: &str, reason: Option<&str>, n: i64, seg: i64) -> Tally {
        Tally {
            wave,
            status: status.into(),
            reason: reason.map(str::to_string),
            messages: n,
            segments: seg,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn counts_partition_by_status_and_list_reasons() {
        let t = [
            tally(Some(1), "sent", None, 3, 6),
            tally(Some(1), "delivered", None, 2, 2),
            tally(Some(1), "failed", None, 1, 0),
            tally(None, "held_out", Some("holdout"), 4, 0),
            tally(Some(2), "deferred", Some("quiet_hours"), 5, 0),
            tally(None, "skipped", Some("release_cancelled"), 2, 0),
            tally(None, "skipped", Some("template_too_long"), 1, 0),
        ];
        let c = counts(t.iter());
        assert_eq!(c.recipient_count, 18);
        assert_eq!(c.texted_count, 5);
        assert_eq!(c.segment_count, 8);
        assert_eq!(c.skipped_count, 3);
        let reasons: Vec<(i32, u64)> = c
            .skipped_by_reason
            .iter()
            .map(|r| (r.reason, r.count))
            .collect();
        assert_eq!(
            reasons,
            [
                (pb::ReasonCode::Holdout as i32, 4),
                (pb::ReasonCode::ReleaseCancelled as i32, 2)
            ]
        );
        assert_eq!(
            c.deferred_by_reason,
            [pb::ReasonCount {
                reason: pb::ReasonCode::QuietHours as i32,
                count: 5
            }]
        );
    }

    #[test]
    fn message_cursors_round_trip_in_their_own_order_only() {
        let cursor = message_cursor(MessageCursor::Plan(None, Uuid::nil()));
        assert_eq!(
            parse_message_cursor(&cursor, true),
            Some(MessageCursor::Plan(None, Uuid::nil()))
        );
        assert_eq!(parse_message_cursor(&cursor, false), None);
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let cursor = message_cursor(MessageCursor::Newest(t, Uuid::nil()));
        assert_eq!(
            parse_message_cursor(&cursor, false),
            Some(MessageCursor::Newest(t, Uuid::nil()))
        );
    }

    #[test]
    fn stored_names_map_to_api_enums() {
        assert_eq!(encoding(Some("GSM-7")), pb::MessageEncoding::Gsm7);
        assert_eq!(encoding(Some("ucs2")), pb::MessageEncoding::Ucs2);
        assert_eq!(
            reason_code(Some("tenant_unknown")),
            pb::ReasonCode::Unspecified
        );
        assert_eq!(
            reason_code(Some("frequency_cap_phone")),
            pb::ReasonCode::FrequencyCapPhone
        );
        for (name, status) in STATUSES {
            assert_eq!(message_status(name), status);
            assert_eq!(message_status_name(status), Some(name));
        }
    }
}
