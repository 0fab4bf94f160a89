//! Concurrency limit with load shedding: at most `grpc.max_concurrent_calls` calls are being
//! worked on at once; past that, a call is answered at once RESOURCE_EXHAUSTED with a
//! `RetryInfo` detail instead of queueing without bound (a queue would only turn overload into
//! timeouts for everyone). A call holds its slot until its response starts, which for a unary
//! call is all of its work; a stream's long life is not counted, so open inventory or watch
//! streams cannot starve unary calls. Health and reflection are never shed: a load balancer
//! must still hear from an overloaded server.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use super::BoxFuture;

#[derive(Clone)]
pub struct Limit {
    slots: Arc<Semaphore>,
    retry_after: Duration,
}

impl Limit {
    pub fn new(max_concurrent: usize, retry_after: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            retry_after,
        }
    }
}

impl<S> tower::Layer<S> for Limit {
    type Service = LimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitService<S> {
    inner: S,
    layer: Limit,
}

impl<S> tower::Service<http::Request<Body>> for LimitService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if crate::auth::is_open(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let Ok(slot) = self.layer.slots.clone().try_acquire_owned() else {
            tracing::warn!("overloaded: call shed");
            let mut details = ErrorDetails::new();
            details.set_retry_info(Some(self.layer.retry_after));
            let status = Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "the server is at its limit of concurrent calls; retry after the RetryInfo delay",
                details,
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            drop(slot);
            response
        })
    }
}
