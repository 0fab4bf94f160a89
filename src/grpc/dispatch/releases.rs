//! Releases: get, list, watch, and steer (pause, resume, cancel).

use super::*;
use crate::grpc::requests::dispatch::{ListReleases, ReleaseRef, SteerRelease, WatchRelease};

impl DispatchApi {
    pub(super) async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::GetReleaseResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let ReleaseRef {
            tenant_id,
            release_id,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        let release = self.release(&tenant_id, release_id).await?;
        Ok(Response::new(pb::GetReleaseResponse {
            release: Some(release),
        }))
    }

    pub(super) async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let tokens = &self.state.page_tokens;
        let ListReleases {
            tenant_id,
            filter,
            page_size: size,
            after,
        } = ListReleases::parse(request.into_inner(), tokens)?;
        let scope = Scope::new("ListReleases", &tenant_id, &filter);
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let mut rows = self
            .state
            .store
            .list_releases(&tenant_id, &filter, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            tokens.issue(&scope, &time_cursor(last.created_at, last.release_id))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListReleasesResponse {
            releases: rows.iter().map(|r| release(r, Some(policy))).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn watch_release(
        &self,
        request: Request<pb::WatchReleaseRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let WatchRelease {
            release:
                ReleaseRef {
                    tenant_id,
                    release_id,
                },
            interval,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        // An unknown release is NOT_FOUND as the call's status, not as a stream's end.
        let first = self.release(&tenant_id, release_id).await?;
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut last = first;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut send = Some(last.clone());
            let draining = state.draining.clone();
            loop {
                if let Some(release) = send.take() {
                    let done =
                        release_state_of(release.state()).is_some_and(ReleaseState::has_ended);
                    let snapshot = pb::WatchReleaseResponse {
                        release: Some(release),
                    };
                    if tx.send(Ok(snapshot)).await.is_err() || done {
                        return;
                    }
                }
                // One poll per interval; a client that hangs up stops the polling at once.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = draining.cancelled() => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the server is shutting down; call again to go on watching",
                            )))
                            .await;
                        return;
                    }
                    _ = ticker.tick() => {}
                }
                match load_release(&state, &tenant_id, release_id).await {
                    Ok(release) if release != last => {
                        last = release.clone();
                        send = Some(release);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    pub(super) async fn pause_release(
        &self,
        request: Request<pb::PauseReleaseRequest>,
    ) -> Result<Response<pb::PauseReleaseResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SteerRelease {
            release:
                ReleaseRef {
                    tenant_id,
                    release_id,
                },
            reason,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .steer(&tenant_id, release_id, Steer::Pause, &reason)
            .await?;
        Ok(Response::new(pb::PauseReleaseResponse {
            release: Some(release),
        }))
    }

    pub(super) async fn resume_release(
        &self,
        request: Request<pb::ResumeReleaseRequest>,
    ) -> Result<Response<pb::ResumeReleaseResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let ReleaseRef {
            tenant_id,
            release_id,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .steer(&tenant_id, release_id, Steer::Resume, "")
            .await?;
        Ok(Response::new(pb::ResumeReleaseResponse {
            release: Some(release),
        }))
    }

    pub(super) async fn cancel_release(
        &self,
        request: Request<pb::CancelReleaseRequest>,
    ) -> Result<Response<pb::CancelReleaseResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let SteerRelease {
            release:
                ReleaseRef {
                    tenant_id,
                    release_id,
                },
            reason,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        let release = self
            .steer(&tenant_id, release_id, Steer::Cancel, &reason)
            .await?;
        Ok(Response::new(pb::CancelReleaseResponse {
            release: Some(release),
        }))
    }
}
