//! ExportMessages: a tenant's messages with their outcomes, streamed in keyset batches so the
//! server holds one batch (and one in flight) whatever the export's size.

use std::pin::Pin;

use restock_store::releases::{MessageOutcome, MessageView};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

use super::requests::dispatch::ExportMessages;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::state::AppState;

/// Messages per response (and per statement).
pub const BATCH: i64 = 500;

pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportMessagesResponse, Status>> + Send + 'static>>;

/// Validates the request, then streams the batches from a task that reads the next batch only
/// once the client has room for it (a channel of one).
pub async fn export(
    state: std::sync::Arc<AppState>,
    caller: &crate::auth::Caller,
    req: pb::ExportMessagesRequest,
    to_message: fn(MessageView) -> pb::Message,
) -> Result<ExportStream, ApiError> {
    let ExportMessages {
        tenant_id,
        from,
        before,
    } = req.try_into()?;
    state.tenant(caller, &tenant_id)?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut after = None;
        loop {
            let batch = tokio::select! {
                _ = tx.closed() => return,
                b = state.store.export_messages(&tenant_id, from, before, after, BATCH) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                    return;
                }
            };
            let last = batch.len() < BATCH as usize;
            after = batch.last().map(|(m, _)| (m.created_at, m.message_id));
            if batch.is_empty() {
                return;
            }
            let messages = batch
                .into_iter()
                .map(|(m, o)| exported(to_message(m), o))
                .collect();
            if tx
                .send(Ok(pb::ExportMessagesResponse { messages }))
                .await
                .is_err()
                || last
            {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn exported(message: pb::Message, o: MessageOutcome) -> pb::ExportedMessage {
    pb::ExportedMessage {
        message: Some(message),
        click_count: o.click_count,
        attributed_order_count: o.orders,
        attributed_revenue: o
            .revenue
            .into_iter()
            .map(|(currency_code, amount_minor)| pb::Money {
                amount_minor,
                currency_code,
            })
            .collect(),
    }
}
