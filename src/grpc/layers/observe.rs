//! The outermost layer: gives every call a request id (the caller's `x-request-id` when it is a
//! sane one, else a new UUIDv7), echoed in the response metadata; runs the call in a span named
//! after the RPC (OpenTelemetry's RPC conventions); and when the call ends (its response
//! body done or dropped), logs one line with its caller, code and duration and counts it in
//! the RPC metrics. Every other layer runs inside the span, so their log lines carry the id.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::codegen::http;
use tracing::field::Empty;
use tracing::Instrument;

use super::BoxFuture;
use crate::metrics::Metrics;

/// The metadata key of the request id, in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// A call's request id, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The caller's id if it is one a log line can carry as it is: 1-128 of `A-Za-z0-9-_.:`.
fn accepted(headers: &http::HeaderMap) -> Option<String> {
    let id = headers.get(REQUEST_ID)?.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| id.to_string())
}

/// `(service, method)` of a gRPC path, as labels: only the RPCs this server has (or health and
/// reflection), so a client sending made-up paths cannot grow the series without bound.
pub fn rpc_labels(path: &str) -> (&str, &str) {
    let known = crate::auth::scope_of(path).is_some() || crate::auth::is_open(path);
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if known => (service, method),
        _ => ("unknown", "unknown"),
    }
}

#[derive(Clone)]
pub struct Observe {
    metrics: Arc<Metrics>,
}

impl Observe {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for Observe {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// What the end of a call reports.
struct Call {
    span: tracing::Span,
    started: Instant,
    service: String,
    method: String,
    metrics: Arc<Metrics>,
    /// Set from the response headers (a trailers-only answer) or the trailers.
    code: Option<tonic::Code>,
}

impl Call {
    fn observe_headers(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers.get("grpc-status") {
            self.code = Some(tonic::Code::from_bytes(code.as_bytes()));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // No status at all: the client went away (or the connection broke) mid-call.
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        let elapsed = self.started.elapsed();
        self.span.record("rpc.grpc.status_code", code as i32);
        if code != tonic::Code::Ok {
            self.span.record("otel.status_code", "ERROR");
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        self.span.in_scope(|| {
            // Load balancers ask health every few seconds: their lines would drown the rest.
            if self.service.starts_with("grpc.health.") {
                tracing::debug!(code = ?code, elapsed_ms, "rpc finished");
            } else {
                tracing::info!(code = ?code, elapsed_ms, "rpc finished");
            }
        });
        self.metrics
            .rpc_finished(&self.service, &self.method, code, elapsed.as_secs_f64());
    }
}

/// A response body that ends its call when it ends (streams included).
struct Observed {
    inner: Body,
    call: Call,
}

impl http_body::Body for Observed {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(trailers) = f.trailers_ref() {
                this.call.observe_headers(trailers);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S> tower::Service<http::Request<Body>> for ObserveService<S>
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

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let id = accepted(req.headers()).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (service, method) = rpc_labels(req.uri().path());
        let (service, method) = (service.to_string(), method.to_string());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            request_id = %id,
            caller = Empty,
        );
        if let Some(parent) = crate::telemetry::remote_context(req.headers()) {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            // A malformed traceparent leaves the span a root of its own.
            let _ = span.set_parent(parent);
        }
        let header = http::HeaderValue::from_str(&id).expect("a checked or generated id");
        req.extensions_mut().insert(RequestId(id));
        let mut call = Call {
            span: span.clone(),
            started: Instant::now(),
            service,
            method,
            metrics: self.metrics.clone(),
            code: None,
        };
        // The inner layers' synchronous parts (auth records the caller) run in the span too.
        let response = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let mut response = response.await?;
                call.observe_headers(response.headers());
                response.headers_mut().insert(REQUEST_ID, header);
                Ok(response.map(|inner| Body::new(Observed { inner, call })))
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_taken_as_they_are() {
        let id = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(REQUEST_ID, http::HeaderValue::from_str(v).unwrap());
            accepted(&h)
        };
        assert_eq!(id("req-42.a:b_c").as_deref(), Some("req-42.a:b_c"));
        assert_eq!(id("two words"), None);
        assert_eq!(id(&"x".repeat(129)), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn made_up_paths_share_one_label() {
        assert_eq!(
            rpc_labels("/restock.v1.WaitlistService/Subscribe"),
            ("restock.v1.WaitlistService", "Subscribe")
        );
        assert_eq!(
            rpc_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(rpc_labels("/x.Y/Z"), ("unknown", "unknown"));
    }
}
