//! The application layer: the use cases the transports (`grpc`, `http`) and the background
//! `workers` call. Nothing here knows proto or HTTP types; each use case is traced.
//!
//! - [`consent`]: the one opt-out / opt-in path (API, SMS keyword, provider-reported opt-out);
//! - [`eligibility`]: the one evaluation of a stored subscription, `explain` and `dry_run`;
//! - [`purchases`]: orders and refunds recorded and attributed, with the one fingerprint of
//!   an order's content;
//! - [`waitlist`]: Subscribe, idempotent on the canonical fingerprint of its command.
//!
//! Idempotency fingerprints (Subscribe's keys, orders, page-token scopes) are all
//! `restock_domain::fingerprint`'s canonical print over fields listed by name.

pub mod consent;
pub mod eligibility;
pub mod purchases;
pub mod waitlist;
