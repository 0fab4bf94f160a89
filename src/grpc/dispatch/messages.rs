//! Messages: get, list (in send or plan order, by an opaque cursor), export.

use super::*;
use crate::grpc::requests::dispatch::{ListMessages, MessageRef};

pub(super) fn message_cursor(c: MessageCursor) -> String {
    match c {
        MessageCursor::Newest(t, id) => format!("n:{}", time_cursor(t, id)),
        MessageCursor::Plan(p, id) => format!(
            "p:{}:{id}",
            p.map_or_else(|| "-".to_string(), |p| p.to_string())
        ),
    }
}

pub(crate) fn parse_message_cursor(s: &str, plan_order: bool) -> Option<MessageCursor> {
    let (kind, rest) = s.split_once(':')?;
    match (kind, plan_order) {
        ("n", false) => parse_time_cursor(rest).map(|(t, id)| MessageCursor::Newest(t, id)),
        ("p", true) => {
            let (p, id) = rest.split_once(':')?;
            let p = match p {
                "-" => None,
                p => Some(p.parse().ok()?),
            };
            Some(MessageCursor::Plan(p, Uuid::parse_str(id).ok()?))
        }
        _ => None,
    }
}

impl DispatchApi {
    pub(super) async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let MessageRef {
            tenant_id,
            message_id,
        } = request.into_inner().try_into()?;
        self.state.tenant(&caller, &tenant_id)?;
        let row = self
            .state
            .store
            .get_message(&tenant_id, message_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetMessageResponse {
            message: Some(message(row)),
        }))
    }

    pub(super) async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let tokens = &self.state.page_tokens;
        let ListMessages {
            tenant_id,
            filter,
            page_size: size,
            after,
        } = ListMessages::parse(request.into_inner(), tokens)?;
        let plan_order = filter.release_id.is_some();
        let scope = Scope::new("ListMessages", &tenant_id, &filter);
        self.state.tenant(&caller, &tenant_id)?;
        let mut rows = self
            .state
            .store
            .list_messages(&tenant_id, &filter, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page");
            let cursor = if plan_order {
                MessageCursor::Plan(last.position, last.message_id)
            } else {
                MessageCursor::Newest(last.created_at, last.message_id)
            };
            tokens.issue(&scope, &message_cursor(cursor))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListMessagesResponse {
            messages: rows.into_iter().map(message).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn export_messages(
        &self,
        request: Request<pb::ExportMessagesRequest>,
    ) -> Result<Response<crate::grpc::export::ExportStream>, Status> {
        let caller = crate::grpc::caller(&request)?;
        Ok(Response::new(
            crate::grpc::export::export(self.state.clone(), &caller, request.into_inner(), message)
                .await?,
        ))
    }
}
