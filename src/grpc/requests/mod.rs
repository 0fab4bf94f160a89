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

/// What the commands' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::error::ApiError;
    use crate::grpc::paging::PageTokens;

    /// A page-token key for tests.
    pub fn tokens() -> PageTokens {
        PageTokens::new(b"test key")
    }

    /// The fields an INVALID_ARGUMENT names, in order; panics on any other error.
    pub fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::InvalidArgument(v) => v.into_iter().map(|(field, _)| field).collect(),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }
}
