//! The one integration-test binary: real servers on free ports against the real Postgres and
//! Redis that `just test` brings up, driven through the generated client.

mod auth;
mod bounds;
mod counters;
mod demo;
mod dispatch;
mod eligibility;
mod erasure;
mod errors;
mod fairness;
mod fences;
mod helpers;
mod http;
mod inventory;
mod journey;
mod lifecycle;
mod link_hosts;
mod mtls;
mod paging;
mod planning;
mod polyglot;
mod propensity;
mod purchases;
mod releases;
mod replicas;
mod report_inputs;
mod reports;
mod sell_through;
mod shutdown;
mod stack;
mod states;
mod subscribe;
mod substitutes;
mod traces;
mod transfer;
mod waitlist;
