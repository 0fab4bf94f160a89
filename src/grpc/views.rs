//! RecordProductViews: parsed by `requests::views` (bounded by the tenant's today), recorded
//! by `app::views`, viewed here.

use crate::app::views;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::state::AppState;

use super::requests::views::RecordProductViews;

pub async fn record(
    state: &AppState,
    caller: &crate::auth::Caller,
    req: pb::RecordProductViewsRequest,
) -> Result<pb::RecordProductViewsResponse, ApiError> {
    // The tenant's today bounds the days; an unknown tenant is NOT_FOUND once the input is
    // valid, so only a known tenant's zone is used here.
    let cmd = RecordProductViews::parse(req, |tenant_id| {
        let policy = state.tenant(caller, tenant_id).ok()?;
        views::today(state, policy)
    })?;
    state.tenant(caller, &cmd.tenant_id)?;
    let n = views::record(state, cmd).await?;
    Ok(pb::RecordProductViewsResponse {
        recorded_count: n as u32,
    })
}
