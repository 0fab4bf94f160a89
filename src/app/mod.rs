//! The application layer: the use cases the transports (`grpc`, `http`) and the background
//! `workers` call. Nothing here knows proto or HTTP types; each use case is traced.
//!
//! - [`consent`]: the one opt-out / opt-in path (API, SMS keyword, provider-reported opt-out);
//! - [`eligibility`]: the one evaluation of a stored subscription, `explain` and `dry_run`;
//! - [`inventory`]: inventory events and snapshots applied, the restocks they start, stock;
//! - [`purchases`]: orders and refunds recorded and attributed, with the one fingerprint of
//!   an order's content;
//! - [`releases`]: releases read, listed, watched and steered (pause, resume, cancel);
//! - [`reports`]: a release's, a variant's or a period's figures and what they come to;
//! - [`views`]: the storefront's product-page views per day, the signup rate's denominator;
//! - [`waitlist`]: Subscribe, idempotent on the canonical fingerprint of its command.
//!
//! Idempotency fingerprints (Subscribe's keys, orders, page-token scopes) are all
//! `restock_domain::fingerprint`'s canonical print over fields listed by name.

pub mod consent;
pub mod eligibility;
pub mod inventory;
pub mod purchases;
pub mod releases;
pub mod reports;
pub mod views;
pub mod waitlist;
