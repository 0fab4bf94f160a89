//! Deadlines: a call gets the caller's `grpc-timeout`, capped by the server's maximum
//! (`grpc.max_call_ms`); past it the call is answered DEADLINE_EXCEEDED and its handler's
//! future is dropped, which drops any open transaction (deadpool hands the connection back
//! and Postgres rolls it back): a call past its deadline writes nothing.
//!
//! The deadline covers the call up to its response headers, which for a unary call is all of
//! it. Streaming RPCs (any stream in the request or response: the inventory stream, snapshot
//! sync, WatchRelease, health's Watch, reflection) are meant to outlive any server maximum, so
//! only the caller's own `grpc-timeout` bounds them, and the response stream is never cut
//! here: a client that set a deadline cancels the stream itself when it passes.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

use super::BoxFuture;

/// The gRPC paths whose request or response is a stream, from the descriptors this server
/// registers for reflection (so a new streaming RPC is known without a list to keep).
pub fn streaming_paths(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    let mut paths = HashSet::new();
    for bytes in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*bytes) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for m in &service.method {
                    if m.client_streaming() || m.server_streaming() {
                        paths.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            m.name()
                        ));
                    }
                }
            }
        }
    }
    paths
}

/// `grpc-timeout` as the gRPC over HTTP/2 spec writes it: at most 8 digits and a unit.
/// Unreadable: none (the server's maximum applies).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let raw = headers.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (value, unit) = raw.split_at(raw.len() - 1);
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[derive(Clone)]
pub struct Deadline {
    max: Duration,
    streaming: Arc<HashSet<String>>,
}

impl Deadline {
    pub fn new(max: Duration, streaming: HashSet<String>) -> Self {
        Self {
            max,
            streaming: Arc::new(streaming),
        }
    }
}

impl<S> tower::Layer<S> for Deadline {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    layer: Deadline,
}

impl<S> tower::Service<http::Request<Body>> for DeadlineService<S>
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
        let asked = grpc_timeout(req.headers());
        let limit = if self.layer.streaming.contains(req.uri().path()) {
            asked
        } else {
            Some(asked.map_or(self.layer.max, |a| a.min(self.layer.max)))
        };
        let response = self.inner.call(req);
        let Some(limit) = limit else {
            return Box::pin(response);
        };
        Box::pin(async move {
            match tokio::time::timeout(limit, response).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(?limit, "deadline exceeded; the call is abandoned");
                    Ok(Status::deadline_exceeded(format!(
                        "the call's deadline ({} ms) passed before it finished; nothing was written",
                        limit.as_millis()
                    ))
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_the_rest() {
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("4S"), Some(Duration::from_secs(4)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(t("123456789S"), None);
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
    }

    #[test]
    fn streaming_rpcs_are_found_in_the_descriptors() {
        let paths = streaming_paths(&[crate::proto::FILE_DESCRIPTOR_SET]);
        for p in [
            "/restock.v1.EligibilityService/StreamInventory",
            "/restock.v1.EligibilityService/SyncInventory",
            "/restock.v1.DispatchService/WatchRelease",
        ] {
            assert!(paths.contains(p), "{p}: {paths:?}");
        }
        assert!(!paths.contains("/restock.v1.WaitlistService/Subscribe"));
    }
}
