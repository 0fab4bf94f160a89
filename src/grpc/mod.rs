//! gRPC endpoints: thin layers that validate, call the domain and the store, and map errors.

pub mod convert;
pub mod dispatch;
pub mod eligibility;
pub mod export;
pub mod layers;
pub mod paging;
pub mod purchases;
pub mod reports;
pub mod requests;
pub mod validate;
pub mod views;
pub mod waitlist;

/// The caller the auth layer put in the request's extensions. Missing only if the layer is not
/// in front of the service, which must fail closed.
pub fn caller<T>(
    request: &tonic::Request<T>,
) -> Result<std::sync::Arc<crate::auth::Caller>, tonic::Status> {
    request
        .extensions()
        .get::<std::sync::Arc<crate::auth::Caller>>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no caller: a bearer token is required"))
}
