//! DispatchService's requests as typed commands.

use uuid::Uuid;

use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// Longest reason a release is paused or cancelled for.
pub const MAX_REASON: usize = 500;

/// One release of a tenant: GetRelease, ResumeRelease.
#[derive(Debug)]
pub struct ReleaseRef {
    pub tenant_id: String,
    pub release_id: Uuid,
}

impl ReleaseRef {
    fn parse(v: &mut Violations, tenant_id: &str, release_id: &str) -> Option<Self> {
        let tenant_id = v.id("tenant_id", tenant_id, true);
        let release_id = v.uuid("release_id", release_id, true);
        let (tenant_id, release_id) = tenant_id.zip(release_id)?;
        Some(ReleaseRef {
            tenant_id,
            release_id,
        })
    }
}

impl TryFrom<pb::GetReleaseRequest> for ReleaseRef {
    type Error = ApiError;
    fn try_from(req: pb::GetReleaseRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let parts = Self::parse(&mut v, &req.tenant_id, &req.release_id);
        v.into_result(parts)
    }
}

impl TryFrom<pb::ResumeReleaseRequest> for ReleaseRef {
    type Error = ApiError;
    fn try_from(req: pb::ResumeReleaseRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let parts = Self::parse(&mut v, &req.tenant_id, &req.release_id);
        v.into_result(parts)
    }
}

/// A release to pause or cancel, and why.
#[derive(Debug)]
pub struct SteerRelease {
    pub release: ReleaseRef,
    pub reason: String,
}

impl SteerRelease {
    fn parse(tenant_id: &str, release_id: &str, reason: &str) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let release = ReleaseRef::parse(&mut v, tenant_id, release_id);
        let reason = v.text("reason", reason, MAX_REASON, true);
        let parts = release
            .zip(reason)
            .map(|(release, reason)| SteerRelease { release, reason });
        v.into_result(parts)
    }
}

impl TryFrom<pb::PauseReleaseRequest> for SteerRelease {
    type Error = ApiError;
    fn try_from(req: pb::PauseReleaseRequest) -> Result<Self, ApiError> {
        Self::parse(&req.tenant_id, &req.release_id, &req.reason)
    }
}

impl TryFrom<pb::CancelReleaseRequest> for SteerRelease {
    type Error = ApiError;
    fn try_from(req: pb::CancelReleaseRequest) -> Result<Self, ApiError> {
        Self::parse(&req.tenant_id, &req.release_id, &req.reason)
    }
}

/// One message of a tenant: GetMessage.
#[derive(Debug)]
pub struct MessageRef {
    pub tenant_id: String,
    pub message_id: Uuid,
}

impl TryFrom<pb::GetMessageRequest> for MessageRef {
    type Error = ApiError;
    fn try_from(req: pb::GetMessageRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let message_id = v.uuid("message_id", &req.message_id, true);
        let parts = tenant_id
            .zip(message_id)
            .map(|(tenant_id, message_id)| MessageRef {
                tenant_id,
                message_id,
            });
        v.into_result(parts)
    }
}
