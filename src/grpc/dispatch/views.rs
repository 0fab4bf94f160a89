//! Dispatch's stored names as the API's enums, and releases, waves and messages as the API
//! shows them.

use super::*;

pub(super) fn release_state(s: ReleaseState) -> pb::ReleaseState {
    use pb::ReleaseState as P;
    match s {
        ReleaseState::Planning => P::Planning,
        ReleaseState::Sending => P::Sending,
        ReleaseState::Paused => P::Paused,
        ReleaseState::SoldOut => P::SoldOut,
        ReleaseState::Completed => P::Completed,
        ReleaseState::Cancelled => P::Cancelled,
    }
}

/// The stored state an API state names; `None` for UNSPECIFIED.
pub(crate) fn release_state_of(s: pb::ReleaseState) -> Option<ReleaseState> {
    use pb::ReleaseState as P;
    Some(match s {
        P::Unspecified => return None,
        P::Planning => ReleaseState::Planning,
        P::Sending => ReleaseState::Sending,
        P::Paused => ReleaseState::Paused,
        P::SoldOut => ReleaseState::SoldOut,
        P::Completed => ReleaseState::Completed,
        P::Cancelled => ReleaseState::Cancelled,
    })
}

pub(super) fn wave_state(s: WaveState) -> pb::WaveState {
    use pb::WaveState as P;
    match s {
        WaveState::Pending => P::Pending,
        WaveState::Waiting => P::Waiting,
        WaveState::Sending => P::Sending,
        WaveState::Done => P::Done,
        WaveState::Cancelled => P::Cancelled,
    }
}

pub(super) fn message_status(s: MessageStatus) -> pb::MessageStatus {
    use pb::MessageStatus as P;
    match s {
        MessageStatus::Planned => P::Planned,
        MessageStatus::HeldOut => P::HeldOut,
        MessageStatus::Deferred => P::Deferred,
        MessageStatus::Sending => P::Sending,
        MessageStatus::Sent => P::Sent,
        MessageStatus::Delivered => P::Delivered,
        MessageStatus::Undelivered => P::Undelivered,
        MessageStatus::Failed => P::Failed,
        MessageStatus::Suppressed => P::Suppressed,
        MessageStatus::Skipped => P::Skipped,
        MessageStatus::Unknown => P::Unknown,
    }
}

/// The stored status an API status names; `None` for UNSPECIFIED.
pub(crate) fn message_status_of(s: pb::MessageStatus) -> Option<MessageStatus> {
    MessageStatus::VARIANTS
        .iter()
        .copied()
        .find(|&m| message_status(m) == s)
}

/// A stored reason in API terms. The engine's own reasons without an API code (an unknown
/// tenant, a text too long for its segment budget) answer UNSPECIFIED.
pub(super) fn reason_code(stored: Option<&str>) -> pb::ReasonCode {
    match stored {
        None => pb::ReasonCode::Unspecified,
        Some("release_sold_out") => pb::ReasonCode::ReleaseSoldOut,
        Some("release_cancelled") => pb::ReasonCode::ReleaseCancelled,
        // Erasure cancels the phone's subscriptions, which is what the API code says.
        Some("phone_erased") => pb::ReasonCode::SubscriptionCancelled,
        Some(other) => decision::reason(Reason::parse(other)),
    }
}

pub(super) fn encoding(stored: Option<&str>) -> pb::MessageEncoding {
    let normalized = stored.map(|e| e.to_ascii_lowercase().replace(['-', '_'], ""));
    match normalized.as_deref() {
        Some("gsm7") => pb::MessageEncoding::Gsm7,
        Some("ucs2") => pb::MessageEncoding::Ucs2,
        _ => pb::MessageEncoding::Unspecified,
    }
}

pub(super) fn kind(stored: &str) -> pb::MessageKind {
    match stored {
        "first" => pb::MessageKind::First,
        "reminder" => pb::MessageKind::Reminder,
        _ => pb::MessageKind::Unspecified,
    }
}

pub(super) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Messages counted, from the tallies of one release (or one of its waves).
pub(super) fn counts<'a>(tallies: impl Iterator<Item = &'a Tally>) -> pb::MessageCounts {
    let mut c = pb::MessageCounts::default();
    let mut deferred: BTreeMap<i32, u64> = BTreeMap::new();
    let mut skipped: BTreeMap<i32, u64> = BTreeMap::new();
    for t in tallies {
        let n = t.messages.max(0) as u64;
        c.recipient_count += n;
        use MessageStatus as S;
        let by_reason = match t.status {
            S::Planned => {
                c.planned_count += n;
                None
            }
            S::HeldOut => {
                c.held_out_count += n;
                Some(&mut skipped)
            }
            S::Deferred => {
                c.deferred_count += n;
                Some(&mut deferred)
            }
            S::Sending => {
                c.sending_count += n;
                None
            }
            S::Sent | S::Delivered | S::Undelivered => {
                match t.status {
                    S::Delivered => c.delivered_count += n,
                    S::Undelivered => c.undelivered_count += n,
                    _ => c.sent_count += n,
                }
                c.texted_count += n;
                c.segment_count += t.segments.max(0) as u64;
                None
            }
            S::Failed => {
                c.failed_count += n;
                None
            }
            S::Suppressed => {
                c.suppressed_count += n;
                Some(&mut skipped)
            }
            S::Skipped => {
                c.skipped_count += n;
                Some(&mut skipped)
            }
            S::Unknown => {
                c.unknown_count += n;
                None
            }
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
pub(super) fn release(v: &ReleaseView, policy: Option<&TenantPolicy>) -> pb::Release {
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
            state: wave_state(w.state) as i32,
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
        state: release_state(v.state) as i32,
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

pub(super) fn message(m: MessageView) -> pb::Message {
    let status = message_status(m.status);
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
