//! Requests as typed commands: a command exists only if its request was valid, and parsing
//! one collects every field violation (see [`super::validate::Violations`]).

pub mod dispatch;
pub mod dry_run;
pub mod eligibility;
pub mod inventory;
pub mod purchases;
pub mod reports;
pub mod subscribe;
pub mod views;
pub mod waitlist;

use chrono::{DateTime, Utc};

use super::validate::Violations;

/// A required `[start_time, end_time)` of a request: both present, valid and in order, each
/// fault named by its field. `None` once any of them is at fault.
pub(crate) fn period(
    v: &mut Violations,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let mut time = |field: &str, ts: Option<&prost_types::Timestamp>| match ts {
        None => {
            v.add(field, "is required");
            None
        }
        Some(ts) => v.timestamp(field, ts),
    };
    // Both fields are checked, whatever the first says.
    let (from, before) = (time("start_time", start), time("end_time", end));
    let (from, before) = (from?, before?);
    if before <= from {
        v.add("end_time", "must be after start_time");
        return None;
    }
    Some((from, before))
}
