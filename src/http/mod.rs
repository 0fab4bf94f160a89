//! The HTTP listener: what phones and the SMS provider call into (tracked links, webhooks) and
//! what Prometheus scrapes (`/metrics`).

pub mod links;
pub(crate) mod metrics;
pub mod signature;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use restock_store::StoreError;

use crate::state::AppState;

/// Largest request body read. Twilio's callbacks are a few hundred bytes and an inbound text
/// at most 1,600 characters with its metadata; anything far larger is not the provider.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every HTTP route, sharing the application's state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/r/{token}", get(links::follow))
        .route("/webhooks/twilio/status", post(webhooks::status))
        .route("/webhooks/twilio/inbound", post(webhooks::inbound))
        .route("/metrics", get(metrics::render))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A failure answered over HTTP. The cause is logged here with its context and never shown:
/// the caller gets a status and a fixed word.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// A dependency is down; the caller may retry.
    Unavailable {
        context: &'static str,
        cause: String,
    },
    Internal {
        context: &'static str,
        cause: String,
    },
}

impl HttpError {
    /// A store error met while doing `context`.
    pub(crate) fn store(context: &'static str, e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => HttpError::Unavailable { context, cause },
            e => HttpError::Internal {
                context,
                cause: e.to_string(),
            },
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::Unavailable { context, cause } => {
                tracing::warn!(error = %cause, context, "dependency unavailable");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service unavailable, retry later\n",
                )
            }
            HttpError::Internal { context, cause } => {
                tracing::error!(error = %cause, context, "internal error");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        }
    }
}

/// A short plain-text answer.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
