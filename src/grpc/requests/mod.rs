//! Requests as typed commands: a command exists only if its request was valid, and parsing
//! one collects every field violation (see [`super::validate::Violations`]).

pub mod dispatch;
pub mod dry_run;
pub mod eligibility;
pub mod inventory;
pub mod purchases;
pub mod reports;
pub mod subscribe;
pub mod waitlist;
