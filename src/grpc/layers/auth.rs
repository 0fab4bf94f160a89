//! Authentication and scopes: the bearer token of the `authorization` metadata, or else the
//! client certificate of the TLS connection (verified against the client CA at the handshake),
//! names a caller (see `crate::auth`), which must hold the scope of the RPC. A token, when
//! there is one, is the credential, whatever certificate the connection has (a gateway with a
//! certificate may forward its callers' tokens). No credential or an unknown one is
//! UNAUTHENTICATED; a missing scope PERMISSION_DENIED; both are answered before any handler
//! runs. Health and reflection stay open. The tenant check needs the request's message, so it
//! happens where the handlers resolve their tenant (`AppState::tenant`).

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use super::BoxFuture;
use crate::auth::{is_open, scope_of, Caller, Callers};

/// The layer, sharing one table of callers.
#[derive(Clone)]
pub struct Authenticate {
    callers: Arc<Callers>,
}

impl Authenticate {
    pub fn new(callers: Arc<Callers>) -> Self {
        Self { callers }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            callers: self.callers.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    callers: Arc<Callers>,
}

/// The token of `authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller of a request: by its bearer token when it has one, else by the leaf certificate
/// its TLS connection presented.
fn caller_of(callers: &Callers, req: &http::Request<Body>) -> Option<Arc<Caller>> {
    if let Some(token) = bearer(req.headers()) {
        return callers.authenticate(token);
    }
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    callers.authenticate_cert(certs.first()?)
}

fn reject(status: Status) -> http::Response<Body> {
    status.into_http()
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
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
        let path = req.uri().path();
        if is_open(path) {
            return Box::pin(self.inner.call(req));
        }
        let Some(caller) = caller_of(&self.callers, &req) else {
            tracing::Span::current().record("caller", "-");
            let status = Status::unauthenticated(
                "a valid bearer token in the authorization metadata, or a known client \
                 certificate, is required",
            );
            return Box::pin(std::future::ready(Ok(reject(status))));
        };
        tracing::Span::current().record("caller", caller.name.as_str());
        if let Some(scope) = scope_of(path) {
            if !caller.has(scope) {
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    "MISSING_SCOPE",
                    "restock.v1",
                    [("scope".to_string(), scope.to_string())],
                );
                let status = Status::with_error_details(
                    tonic::Code::PermissionDenied,
                    format!("caller \"{}\" lacks the scope {scope}", caller.name),
                    details,
                );
                return Box::pin(std::future::ready(Ok(reject(status))));
            }
        }
        // The token goes no further than this layer: nothing downstream can log it.
        req.headers_mut().remove(http::header::AUTHORIZATION);
        req.extensions_mut().insert(caller);
        Box::pin(self.inner.call(req))
    }
}
