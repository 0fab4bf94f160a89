//! Messages: get, list (in send or plan order, by an opaque cursor), export.

use super::*;
use crate::grpc::requests::dispatch::MessageRef;

pub(super) fn message_cursor(c: MessageCursor) -> String {
    match c {
        MessageCursor::Newest(t, id) => format!("n:{}", time_cursor(t, id)),
        MessageCursor::Plan(p, id) => format!(
            "p:{}:{id}",
            p.map_or_else(|| "-".to_string(), |p| p.to_string())
        ),
    }
}

pub(super) fn parse_message_cursor(s: &str, plan_order: bool) -> Option<MessageCursor> {
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
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        page_size_rule(&mut v, req.page_size);
        let phone = (!req.phone_number.is_empty())
            .then(|| {
                v.phone(
                    "phone_number",
                    "default_region",
                    &req.phone_number,
                    &req.default_region,
                )
            })
            .flatten();
        let mut statuses: Vec<MessageStatus> = req
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                v.enumeration::<pb::MessageStatus>(&format!("statuses[{i}]"), *s, true)
                    .and_then(message_status_of)
            })
            .collect();
        statuses.sort();
        statuses.dedup();
        let filter = MessageFilter {
            release_id: v.uuid("release_id", &req.release_id, false),
            phone_e164: phone.map(|p| p.e164().to_string()),
            subscription_id: v.uuid("subscription_id", &req.subscription_id, false),
            statuses,
        };
        let plan_order = filter.release_id.is_some();
        let scope = Scope::new("ListMessages", &req.tenant_id, &filter);
        let tokens = &self.state.page_tokens;
        let after = tokens.open(&mut v, &req.page_token, &scope, |c| {
            parse_message_cursor(c, plan_order)
        });
        let tenant_id = v.into_result(tenant_id)?;
        self.state.tenant(&caller, &tenant_id)?;
        let size = page_size(req.page_size);
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
