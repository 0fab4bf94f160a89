//! The one integration-test binary: real servers on free ports against the real Postgres and
//! Redis that `just test` brings up, driven through the generated client.

mod bounds;
mod dispatch;
mod eligibility;
mod erasure;
mod errors;
mod fences;
mod helpers;
mod http;
mod inventory;
mod lifecycle;
mod link_hosts;
mod paging;
mod polyglot;
mod purchases;
mod releases;
mod replicas;
mod report_inputs;
mod reports;
mod shutdown;
mod subscribe;
mod waitlist;
