//! The HTTP listener: what phones and the SMS provider call into (tracked links, webhooks) and
//! what Prometheus scrapes (`/metrics`).

use std::sync::Arc;

use axum::Router;

use crate::startup::AppState;

/// Every HTTP route, sharing the application's state.
pub fn router(_state: Arc<AppState>) -> Router {
    Router::new()
}
