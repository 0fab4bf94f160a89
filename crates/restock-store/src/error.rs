//! Errors of the store, in the terms callers act on.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The phone opted out of the tenant; only a new opt-in lifts that.
    #[error("the phone opted out of this tenant")]
    OptedOut,
    #[error("the idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// The subscription is in a state the operation cannot start from.
    #[error("the subscription is {0}")]
    WrongState(&'static str),
    /// A sync named the same (variant, location) twice.
    #[error("the snapshot names variant {0} at location {1} twice")]
    DuplicateLevel(String, String),
    #[error("configuration: {0}")]
    Config(String),
    /// The database cannot be reached now; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // No SQLSTATE means the error came from the connection, not from the statement.
        if e.is_closed() || e.code().is_none() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Db(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
