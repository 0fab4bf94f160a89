//! Releases: get, list, watch, and steer (pause, resume, cancel).

use super::*;
use crate::app::releases::{self as release_cases, ReleaseWatch};
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
        let page = release_cases::list(&self.state, &tenant_id, &filter, after, size)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = page
            .next_after()
            .map(|(created_at, release_id)| {
                tokens.issue(&scope, &time_cursor(created_at, release_id))
            })
            .unwrap_or_default();
        Ok(Response::new(pb::ListReleasesResponse {
            releases: page
                .releases
                .iter()
                .map(|r| release(r, Some(policy)))
                .collect(),
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
        let (mut watch, first) = ReleaseWatch::start(&self.state, tenant_id, release_id, interval)
            .await
            .map_err(ApiError::from)?;
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut over = ReleaseWatch::is_over(&first);
            let mut last = DispatchApi::view_of(&state, &first);
            let mut send = Some(last.clone());
            let draining = state.draining.clone();
            loop {
                if let Some(release) = send.take() {
                    let snapshot = pb::WatchReleaseResponse {
                        release: Some(release),
                    };
                    if tx.send(Ok(snapshot)).await.is_err() || over {
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
                    _ = watch.due() => {}
                }
                match watch.read(&state).await {
                    Ok(view) => {
                        let release = DispatchApi::view_of(&state, &view);
                        if release != last {
                            over = ReleaseWatch::is_over(&view);
                            last = release.clone();
                            send = Some(release);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
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
