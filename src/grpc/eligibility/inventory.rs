//! Inventory in (a stream, a batch, a snapshot) and stock out.

use super::*;
use crate::app::inventory::{self, StockError};
use crate::grpc::requests::eligibility::GetStock;
use crate::grpc::requests::inventory::{ReportInventory, SyncHeader, MAX_SYNC_LEVELS};

impl EligibilityApi {
    pub(super) async fn stream_inventory(
        &self,
        request: Request<Streaming<pb::StreamInventoryRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(ACK_BUFFER);
        let state = self.state.clone();
        let draining = state.draining.clone();
        // The events' spans are children of the call's.
        let call_span = tracing::Span::current();
        tokio::spawn(async move {
            // In order, an ack only once its event is durable; what has already arrived is
            // applied together (one transaction), so the HTTP/2 buffers drain as fast as a
            // producer fills them.
            let mut open = true;
            while open {
                // A drain ends the stream between batches, so it never holds the shutdown; the
                // sender resends what was not acknowledged to another replica.
                let mut next = tokio::select! {
                    biased;
                    _ = draining.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down; reconnect and resend the events not acknowledged"))).await;
                        return;
                    }
                    next = inbound.next() => next,
                };
                let mut batch = Vec::new();
                loop {
                    match next {
                        Some(Ok(msg)) => batch.push(msg),
                        Some(Err(status)) => {
                            tracing::debug!(%status, "inventory stream ended by the client");
                            open = false;
                            break;
                        }
                        None => {
                            open = false;
                            break;
                        }
                    }
                    if batch.len() >= STREAM_BATCH {
                        break;
                    }
                    // Only what is already here: a lone event is not held back for company.
                    match inbound.next().now_or_never() {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                for answer in process_events(&state, &caller, &batch).await {
                    let answer = answer
                        .map(|ack| pb::StreamInventoryResponse { ack: Some(ack) })
                        .map_err(Status::from);
                    let failed = answer.is_err();
                    if tx.send(answer).await.is_err() || failed {
                        return;
                    }
                }
            }
        }.instrument(call_span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    pub(super) async fn report_inventory(
        &self,
        request: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let ReportInventory { tenant_id, events } =
            ReportInventory::parse(request.into_inner(), self.state.clock.now())?;
        self.state.tenant(&caller, &tenant_id)?;
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            acks.push(process_event(&self.state, &tenant_id, event).await?);
        }
        Ok(Response::new(pb::ReportInventoryResponse { acks }))
    }

    pub(super) async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let GetStock {
            tenant_id,
            variant_id,
            location_ids,
        } = request.into_inner().try_into()?;
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let found = inventory::stock(&self.state, policy, &tenant_id, &variant_id, &location_ids)
            .await
            .map_err(|e| match e {
                StockError::Store(e) => ApiError::from(e),
                e @ StockError::Unknown(_) => ApiError::NotFound(e.to_string()),
            })?;
        let locations = found
            .stock
            .locations
            .iter()
            .map(|l| pb::LocationStock {
                in_stock: found.in_stock(l),
                location_id: l.location_id.clone(),
                available_to_sell: l.available,
                on_order: l.on_order,
                sequence_number: l.last_sequence.unwrap_or(0) as u64,
                observe_time: l.last_observed_at.map(timestamp),
                update_time: Some(timestamp(l.updated_at)),
                last_event_id: l.last_event_id.clone().unwrap_or_default(),
                last_restock_id: l.last_restock_id.map(|r| r.to_string()).unwrap_or_default(),
                last_restock_time: l.last_restock_at.map(timestamp),
            })
            .collect();
        let stock = found.stock;
        Ok(Response::new(pb::GetStockResponse {
            variant_id,
            product_id: stock.product_id.unwrap_or_default(),
            variant: Some(pb::VariantDetails {
                title: stock.details.title.unwrap_or_default(),
                options: stock.details.options,
                deep_link: stock.details.deep_link.unwrap_or_default(),
            }),
            locations,
            total_available_to_sell: found.total_available,
            restock_threshold: found.restock_threshold,
            rearm_level: found.rearm_level,
        }))
    }

    pub(super) async fn sync_inventory(
        &self,
        request: Request<Streaming<pb::SyncInventoryRequest>>,
    ) -> Result<Response<pb::SyncInventoryResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| ApiError::field("tenant_id", "the snapshot stream was empty"))?;
        let now = self.state.clock.now();
        let header = SyncHeader::parse(&first, now)?;
        let policy = self.state.tenant(&caller, &header.tenant_id)?;
        let mut sync =
            inventory::begin_sync(&self.state, policy, &header.tenant_id, header.snapshot_at)
                .await
                .map_err(ApiError::from)?;
        let (mut received, mut rejected_count) = (0u64, 0u64);
        let mut rejections = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            header.check_chunk(&msg)?;
            let mut chunk = Vec::with_capacity(msg.levels.len());
            for l in &msg.levels {
                let index = received;
                received += 1;
                if received > MAX_SYNC_LEVELS {
                    return Err(ApiError::field(
                        "levels",
                        format!("at most {MAX_SYNC_LEVELS} levels per sync"),
                    )
                    .into());
                }
                match header.level(l) {
                    Ok(level) => chunk.push(level),
                    Err(field_violations) => {
                        rejected_count += 1;
                        if rejections.len() < MAX_REJECTIONS {
                            rejections.push(pb::SyncRejection {
                                index,
                                variant_id: l.variant_id.clone(),
                                location_id: l.location_id.clone(),
                                field_violations,
                            });
                        }
                    }
                }
            }
            sync.apply(&chunk).await.map_err(ApiError::from)?;
            next = inbound.message().await?;
        }
        let counts = sync
            .commit(
                &self.state,
                header.zero_missing,
                &header.location_ids,
                received,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SyncInventoryResponse {
            received_count: received,
            changed_count: counts.changed,
            unchanged_count: counts.unchanged,
            stale_count: counts.stale,
            zeroed_count: counts.zeroed,
            rejected_count,
            rejections,
            restocks_started_count: counts.restocks_started,
        }))
    }
}
