//! `GET /metrics`: the process's metrics for Prometheus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::startup::AppState;

pub(super) async fn render(State(state): State<Arc<AppState>>) -> Response {
    // The backlog is read now, so it is as fresh as the scrape; a failed read leaves the last
    // values (and says so in the log) rather than failing the scrape of everything else.
    match state.store.outbox_backlog().await {
        Ok(b) => {
            let age = b.oldest_due.map_or(0.0, |due| {
                (state.clock.now() - due).num_milliseconds() as f64 / 1e3
            });
            state.metrics.outbox_backlog(&b.by_state, age);
        }
        Err(e) => tracing::warn!(error = %e, "reading the outbox backlog for /metrics"),
    }
    (
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.metrics.render(),
    )
        .into_response()
}
