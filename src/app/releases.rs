//! Releases: read one, list them, watch one until it ends, and steer one (pause, resume,
//! cancel) through the transitions its state allows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use restock_domain::ReleaseState;
use restock_store::dispatch::{Steer, SteerResult};
use restock_store::releases::{ReleaseFilter, ReleaseView};
use restock_store::StoreError;
use tokio::time::{Interval, MissedTickBehavior};
use uuid::Uuid;

use crate::state::AppState;

/// A release as it stands.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, release_id = %release_id))]
pub async fn get(
    state: &AppState,
    tenant_id: &str,
    release_id: Uuid,
) -> Result<ReleaseView, StoreError> {
    state.store.get_release(tenant_id, release_id).await
}

/// One page of releases.
#[derive(Debug)]
pub struct ReleasePage {
    /// Newest first, at most the page size.
    pub releases: Vec<ReleaseView>,
    /// Whether releases follow the last one.
    pub more: bool,
}

impl ReleasePage {
    /// Where the next page starts: the last release's creation time and id.
    pub fn next_after(&self) -> Option<(DateTime<Utc>, Uuid)> {
        let last = self.releases.last().filter(|_| self.more)?;
        Some((last.created_at, last.release_id))
    }
}

/// Up to `page_size` of a tenant's releases matching `filter`, after `after` (none: from the
/// newest).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, page_size = page_size))]
pub async fn list(
    state: &AppState,
    tenant_id: &str,
    filter: &ReleaseFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    page_size: i64,
) -> Result<ReleasePage, StoreError> {
    let mut releases = state
        .store
        .list_releases(tenant_id, filter, after, page_size + 1)
        .await?;
    let more = releases.len() > page_size as usize;
    releases.truncate(page_size as usize);
    Ok(ReleasePage { releases, more })
}

/// A release read again every interval while it is watched.
pub struct ReleaseWatch {
    tenant_id: String,
    release_id: Uuid,
    ticker: Interval,
}

impl ReleaseWatch {
    /// Starts watching a release: its first reading (an unknown release is an error here,
    /// before anything is watched), then one reading per `interval`.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, release_id = %release_id))]
    pub async fn start(
        state: &AppState,
        tenant_id: String,
        release_id: Uuid,
        interval: Duration,
    ) -> Result<(Self, ReleaseView), StoreError> {
        let first = state.store.get_release(&tenant_id, release_id).await?;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        let watch = ReleaseWatch {
            tenant_id,
            release_id,
            ticker,
        };
        Ok((watch, first))
    }

    /// Waits for the next reading to be due.
    pub async fn due(&mut self) {
        self.ticker.tick().await;
    }

    /// Reads the release again.
    pub async fn read(&self, state: &AppState) -> Result<ReleaseView, StoreError> {
        state
            .store
            .get_release(&self.tenant_id, self.release_id)
            .await
    }

    /// Whether watching `release` is over: it has ended, nothing about it changes any more.
    pub fn is_over(release: &ReleaseView) -> bool {
        release.state.has_ended()
    }
}

/// Why a release was not steered.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The release's state forbids the move.
    #[error("the release is {}: {}", .state.as_str().replace('_', " "), allowed(*.steer))]
    Refused { steer: Steer, state: ReleaseState },
}

/// The states a move may start from, in words.
fn allowed(steer: Steer) -> &'static str {
    match steer {
        Steer::Pause => "only a planning or sending release can be paused",
        Steer::Resume => "only a paused release can be resumed",
        Steer::Cancel => "only a planning, sending or paused release can be cancelled",
    }
}

/// Pauses, resumes or cancels a release (`reason` is recorded with a pause or a cancel), then
/// reads it as it stands. A resumed release's due wave opens at once rather than at the
/// scheduler's next poll.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, release_id = %release_id, steer = ?steer))]
pub async fn steer(
    state: &AppState,
    tenant_id: &str,
    release_id: Uuid,
    steer: Steer,
    reason: &str,
) -> Result<ReleaseView, SteerError> {
    let outcome = state
        .store
        .steer_release(tenant_id, release_id, steer, reason, state.clock.now())
        .await?;
    match outcome {
        SteerResult::Done => {
            tracing::info!(tenant_id, %release_id, ?steer, reason, "release steered");
            if steer == Steer::Resume {
                state.dispatch_wake.notify_one();
            }
            Ok(state.store.get_release(tenant_id, release_id).await?)
        }
        SteerResult::Refused(current) => Err(SteerError::Refused {
            steer,
            state: current,
        }),
    }
}
