//! Releases: get, list, watch, and steer (pause, resume, cancel).

use super::*;
use crate::grpc::requests::dispatch::{ReleaseRef, SteerRelease};

pub(super) fn page_size_rule(v: &mut Violations, raw: i32) {
    if raw < 0 {
        v.add("page_size", "must not be negative");
    }
}

pub(super) fn min_interval(v: &mut Violations, raw: Option<&prost_types::Duration>) -> Duration {
    let Some(d) = raw else {
        return DEFAULT_WATCH_INTERVAL;
    };
    let valid = (0..1_000_000_000).contains(&d.nanos) && d.seconds >= 0;
    let interval = valid.then(|| Duration::new(d.seconds as u64, d.nanos as u32));
    match interval {
        Some(i) if (MIN_WATCH_INTERVAL..=MAX_WATCH_INTERVAL).contains(&i) => i,
        _ => {
            v.add(
                "min_interval",
                "must be at least 100 milliseconds and at most 60 seconds",
            );
            DEFAULT_WATCH_INTERVAL
        }
    }
}

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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        page_size_rule(&mut v, req.page_size);
        let mut states: Vec<String> = req
            .states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                v.enumeration::<pb::ReleaseState>(&format!("states[{i}]"), *s, true)
                    .and_then(release_state_name)
                    .map(str::to_string)
            })
            .collect();
        states.sort();
        states.dedup();
        let mut time = |field: &str, ts: Option<&prost_types::Timestamp>| {
            ts.and_then(|ts| v.timestamp(field, ts))
        };
        let created_from = time("create_time_start", req.create_time_start.as_ref());
        let created_before = time("create_time_end", req.create_time_end.as_ref());
        if let (Some(from), Some(before)) = (created_from, created_before) {
            if before <= from {
                v.add("create_time_end", "must be after create_time_start");
            }
        }
        let filter = ReleaseFilter {
            variant_id: v.id("variant_id", &req.variant_id, false),
            product_id: v.id("product_id", &req.product_id, false),
            location_id: v.id("location_id", &req.location_id, false),
            restock_id: v.uuid("restock_id", &req.restock_id, false),
            states,
            created_from,
            created_before,
        };
        let scope = Scope::new("ListReleases", &req.tenant_id, &filter);
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, parse_time_cursor);
        let tenant_id = v.into_result(tenant_id)?;
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let size = page_size(req.page_size);
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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let release_id = v.uuid("release_id", &req.release_id, true);
        let interval = min_interval(&mut v, req.min_interval.as_ref());
        let (tenant_id, release_id) = v.into_result(tenant_id.zip(release_id))?;
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
                    let done = ended(release.state());
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
