//! `GET /metrics`: the process's metrics for Prometheus.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub(super) async fn render(State(state): State<Arc<AppState>>) -> Response {
    refresh(&state).await;
    (
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.metrics.render(),
    )
        .into_response()
}

/// Reads what the metrics show as it is now: the outbox's backlog (a query) and the pool.
/// A failed read leaves the last values (and says so in the log) rather than failing the
/// scrape of everything else.
pub(crate) async fn refresh(state: &AppState) {
    state.metrics.pool(state.store.pool_status());
    match state.store.outbox_backlog().await {
        Ok(b) => {
            let age = b.oldest_due.map_or(0.0, |due| {
                (state.clock.now() - due).num_milliseconds() as f64 / 1e3
            });
            state.metrics.outbox_backlog(&b.by_state, age);
        }
        Err(e) => tracing::warn!(error = %e, "reading the outbox backlog for the metrics"),
    }
}

/// Keeps the read-at-scrape values fresh for the OTLP exporter, which has no scrape to hang
/// them on: a refresh every `period` until `stop` is cancelled.
pub(crate) async fn refresh_every(
    state: Arc<AppState>,
    period: std::time::Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => refresh(&state).await,
            _ = stop.cancelled() => return,
        }
    }
}
