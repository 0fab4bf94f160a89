//! Shutdown: the signal that starts it, and the gate that drains gRPC calls. The sequence itself
//! (one deadline for every part) lives in `startup.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

/// Starts listening for SIGTERM and Ctrl-C (SIGINT) now, so a signal that arrives while the
/// server is still starting (migrations) is not lost nor fatal; the future resolves on the
/// first one.
pub fn listen() -> std::io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, draining"),
                _ = int.recv() => tracing::info!("Ctrl-C received, draining"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received, draining");
        })
    }
}

/// Calls that need no draining: health must answer NOT_SERVING while the rest drains, and a
/// client's health watch or reflection stream must not hold the drain.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The gRPC calls in flight, and the switch that turns new ones away.
#[derive(Clone)]
pub struct Drain {
    draining: CancellationToken,
    in_flight: Arc<watch::Sender<usize>>,
}

impl Drain {
    /// A gate that closes when `draining` is cancelled.
    pub fn new(draining: CancellationToken) -> Self {
        Self {
            draining,
            in_flight: Arc::new(watch::channel(0).0),
        }
    }

    /// Resolves once no call admitted before the drain is still running (streams included).
    pub async fn idle(&self) {
        let mut calls = self.in_flight.subscribe();
        let _ = calls.wait_for(|n| *n == 0).await;
    }
}

/// Holds one call in the count until its response body is done or dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn enter(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its call counted as in flight.
struct Counted {
    inner: Body,
    _call: InFlight,
}

impl http_body::Body for Counted {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S> tower::Layer<S> for Drain {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService {
            inner,
            drain: self.clone(),
        }
    }
}

/// [`Drain`] around the server's routes.
#[derive(Clone)]
pub struct DrainService<S> {
    inner: S,
    drain: Drain,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for DrainService<S>
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
        if exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        if self.drain.draining.is_cancelled() {
            // Answered at once, so the caller retries elsewhere instead of waiting on us.
            let status = Status::unavailable("the server is shutting down; retry on another one");
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let call = InFlight::enter(&self.drain.in_flight);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| Body::new(Counted { inner, _call: call })))
        })
    }
}
