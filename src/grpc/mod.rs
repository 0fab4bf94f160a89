//! gRPC endpoints: thin layers that validate, call the domain and the store, and map errors.

pub mod convert;
pub mod dispatch;
pub mod eligibility;
pub mod export;
pub mod paging;
pub mod purchases;
pub mod reports;
pub mod validate;
pub mod views;
pub mod waitlist;
