//! Errors of the caps, in the terms callers act on: wait and retry, or fix the call.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// What went wrong while checking caps. Whatever the variant, nothing may be sent on an error:
/// caps fail closed.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Redis cannot be reached or answered too late; retrying later may work. Some capacity may
    /// have been taken for a batch that then failed: that only ever delays texts, never adds one.
    #[error("caps unavailable: {0}")]
    Unavailable(String),
    /// A request or the key prefix breaks a rule of the caps (bad bucket, character that would
    /// break the hash tag); retrying the same call fails the same way.
    #[error("invalid caps request: {0}")]
    Invalid(String),
    /// Redis answered something the scripts never return: a bug or a key of the wrong type
    /// under our prefix.
    #[error("unexpected answer from Redis: {0}")]
    Reply(String),
}

impl CapsError {
    /// Whether waiting and retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CapsError::Unavailable(_))
    }
}

impl From<RedisError> for CapsError {
    fn from(e: RedisError) -> Self {
        // Only an answer that a retry would repeat is a `Reply`; anything about the connection,
        // a timeout, a failover, a loading or busy server (BUSY, OOM: codes redis-rs does not
        // know) is an outage to wait out.
        match e.kind() {
            ErrorKind::Server(ServerErrorKind::ResponseError)
            | ErrorKind::Server(ServerErrorKind::CrossSlot)
            | ErrorKind::Server(ServerErrorKind::NoPerm)
            | ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType => CapsError::Reply(e.to_string()),
            _ => CapsError::Unavailable(e.to_string()),
        }
    }
}
