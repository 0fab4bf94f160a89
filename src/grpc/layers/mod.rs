//! The tower stack in front of every gRPC service (outermost first): `observe` (request id,
//! the call's span, its log line and metrics), the shutdown drain, `auth` (who calls, with
//! which scope), `limit` (concurrency limit with load shedding) and `deadline`. Each is one
//! concern; handlers see only the caller and request id they leave in the request's extensions.

pub mod auth;
pub mod deadline;
pub mod limit;
pub mod observe;

use std::future::Future;
use std::pin::Pin;

/// What every layer's future is.
pub type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;
