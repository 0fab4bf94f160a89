//! DispatchService's requests as typed commands.

use std::time::Duration;

use chrono::{DateTime, Utc};
use restock_domain::{MessageStatus, ReleaseState};
use restock_store::releases::{MessageCursor, MessageFilter, ReleaseFilter};
use uuid::Uuid;

use crate::error::ApiError;
use crate::grpc::dispatch::{message_status_of, parse_message_cursor, release_state_of};
use crate::grpc::paging::{parse_time_cursor, PageTokens, Scope};
use crate::grpc::validate::{page_size, Violations};
use crate::proto::v1 as pb;

/// Longest reason a release is paused or cancelled for.
pub const MAX_REASON: usize = 500;

/// One release of a tenant: GetRelease, ResumeRelease.
#[derive(Debug)]
pub struct ReleaseRef {
    pub tenant_id: String,
    pub release_id: Uuid,
}

impl ReleaseRef {
    fn parse(v: &mut Violations, tenant_id: &str, release_id: &str) -> Option<Self> {
        let tenant_id = v.id("tenant_id", tenant_id, true);
        let release_id = v.uuid("release_id", release_id, true);
        let (tenant_id, release_id) = tenant_id.zip(release_id)?;
        Some(ReleaseRef {
            tenant_id,
            release_id,
        })
    }
}

impl TryFrom<pb::GetReleaseRequest> for ReleaseRef {
    type Error = ApiError;
    fn try_from(req: pb::GetReleaseRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let parts = Self::parse(&mut v, &req.tenant_id, &req.release_id);
        v.into_result(parts)
    }
}

impl TryFrom<pb::ResumeReleaseRequest> for ReleaseRef {
    type Error = ApiError;
    fn try_from(req: pb::ResumeReleaseRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let parts = Self::parse(&mut v, &req.tenant_id, &req.release_id);
        v.into_result(parts)
    }
}

/// A release to pause or cancel, and why.
#[derive(Debug)]
pub struct SteerRelease {
    pub release: ReleaseRef,
    pub reason: String,
}

impl SteerRelease {
    fn parse(tenant_id: &str, release_id: &str, reason: &str) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let release = ReleaseRef::parse(&mut v, tenant_id, release_id);
        let reason = v.text("reason", reason, MAX_REASON, true);
        let parts = release
            .zip(reason)
            .map(|(release, reason)| SteerRelease { release, reason });
        v.into_result(parts)
    }
}

impl TryFrom<pb::PauseReleaseRequest> for SteerRelease {
    type Error = ApiError;
    fn try_from(req: pb::PauseReleaseRequest) -> Result<Self, ApiError> {
        Self::parse(&req.tenant_id, &req.release_id, &req.reason)
    }
}

impl TryFrom<pb::CancelReleaseRequest> for SteerRelease {
    type Error = ApiError;
    fn try_from(req: pb::CancelReleaseRequest) -> Result<Self, ApiError> {
        Self::parse(&req.tenant_id, &req.release_id, &req.reason)
    }
}

/// One message of a tenant: GetMessage.
#[derive(Debug)]
pub struct MessageRef {
    pub tenant_id: String,
    pub message_id: Uuid,
}

impl TryFrom<pb::GetMessageRequest> for MessageRef {
    type Error = ApiError;
    fn try_from(req: pb::GetMessageRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let message_id = v.uuid("message_id", &req.message_id, true);
        let parts = tenant_id
            .zip(message_id)
            .map(|(tenant_id, message_id)| MessageRef {
                tenant_id,
                message_id,
            });
        v.into_result(parts)
    }
}

/// Releases to watch for: between 100 ms and 60 s between two snapshots.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(60);
/// The interval when a WatchRelease names none.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A page size: 0 is the default, a negative one is refused (see `validate::page_size`).
fn page_size_rule(v: &mut Violations, raw: i32) -> i64 {
    if raw < 0 {
        v.add("page_size", "must not be negative");
    }
    page_size(raw)
}

/// A page of a tenant's releases: ListReleases.
#[derive(Debug)]
pub struct ListReleases {
    pub tenant_id: String,
    pub filter: ReleaseFilter,
    /// At most `validate::MAX_PAGE`.
    pub page_size: i64,
    /// Where the page starts (none: the first page): the page token, opened against this very
    /// filter (a token of other filters is a violation of `page_token`).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl ListReleases {
    pub fn parse(req: pb::ListReleasesRequest, tokens: &PageTokens) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let page_size = page_size_rule(&mut v, req.page_size);
        let mut states: Vec<ReleaseState> = req
            .states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                v.enumeration::<pb::ReleaseState>(&format!("states[{i}]"), *s, true)
                    .and_then(release_state_of)
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
        let after = tokens.open(&mut v, &req.page_token, &scope, parse_time_cursor);
        let parts = tenant_id.map(|tenant_id| ListReleases {
            tenant_id,
            filter,
            page_size,
            after,
        });
        v.into_result(parts)
    }
}

/// A page of a tenant's messages: ListMessages.
#[derive(Debug)]
pub struct ListMessages {
    pub tenant_id: String,
    pub filter: MessageFilter,
    /// At most `validate::MAX_PAGE`.
    pub page_size: i64,
    /// Where the page starts (none: the first page), opened against this very filter; in plan
    /// order when the filter names a release, else newest first.
    pub after: Option<MessageCursor>,
}

impl ListMessages {
    pub fn parse(req: pb::ListMessagesRequest, tokens: &PageTokens) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let page_size = page_size_rule(&mut v, req.page_size);
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
        let mut statuses: Vec<MessageStatus> = req
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                v.enumeration::<pb::MessageStatus>(&format!("statuses[{i}]"), *s, true)
                    .and_then(message_status_of)
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
        let after = tokens.open(&mut v, &req.page_token, &scope, |c| {
            parse_message_cursor(c, plan_order)
        });
        let parts = tenant_id.map(|tenant_id| ListMessages {
            tenant_id,
            filter,
            page_size,
            after,
        });
        v.into_result(parts)
    }
}

/// A release to stream snapshots of: WatchRelease.
#[derive(Debug)]
pub struct WatchRelease {
    pub release: ReleaseRef,
    /// Between [`MIN_WATCH_INTERVAL`] and [`MAX_WATCH_INTERVAL`].
    pub interval: Duration,
}

impl TryFrom<pb::WatchReleaseRequest> for WatchRelease {
    type Error = ApiError;
    fn try_from(req: pb::WatchReleaseRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let release = ReleaseRef::parse(&mut v, &req.tenant_id, &req.release_id);
        let interval = min_interval(&mut v, req.min_interval.as_ref());
        let parts = release
            .zip(interval)
            .map(|(release, interval)| WatchRelease { release, interval });
        v.into_result(parts)
    }
}

fn min_interval(v: &mut Violations, raw: Option<&prost_types::Duration>) -> Option<Duration> {
    let Some(d) = raw else {
        return Some(DEFAULT_WATCH_INTERVAL);
    };
    let valid = (0..1_000_000_000).contains(&d.nanos) && d.seconds >= 0;
    let interval = valid.then(|| Duration::new(d.seconds as u64, d.nanos as u32));
    match interval {
        Some(i) if (MIN_WATCH_INTERVAL..=MAX_WATCH_INTERVAL).contains(&i) => Some(i),
        _ => {
            v.add(
                "min_interval",
                "must be at least 100 milliseconds and at most 60 seconds",
            );
            None
        }
    }
}

/// A valid ExportMessages: a tenant's messages created in `[from, before)`.
#[derive(Debug)]
pub struct ExportMessages {
    pub tenant_id: String,
    pub from: DateTime<Utc>,
    pub before: DateTime<Utc>,
}

impl TryFrom<pb::ExportMessagesRequest> for ExportMessages {
    type Error = ApiError;
    fn try_from(req: pb::ExportMessagesRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let period = super::period(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
        let parts = tenant_id
            .zip(period)
            .map(|(tenant_id, (from, before))| ExportMessages {
                tenant_id,
                from,
                before,
            });
        v.into_result(parts)
    }
}

#[cfg(test)]
mod tests;
