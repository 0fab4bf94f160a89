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
    /// The operation cannot be done in the current state of what it touches (a release in
    /// flight, a group owned by configuration): FAILED_PRECONDITION.
    #[error("{description}")]
    Refused {
        kind: &'static str,
        subject: &'static str,
        description: String,
    },
    #[error("configuration: {0}")]
    Config(String),
    /// The database cannot be reached now; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// Postgres refused a statement. Its own words (message, SQLSTATE, detail) are in the
    /// display, for the server's log; callers only ever see an opaque INTERNAL.
    #[error("database error: {}", describe(.0))]
    Db(tokio_postgres::Error),
}

/// What Postgres said, not tokio-postgres's bare "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; detail: {detail}"));
            }
            if let Some(c) = db.constraint() {
                s.push_str(&format!("; constraint: {c}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// SQLSTATEs that mean the server is going away or cannot take the statement now (shutting
/// down, starting up, out of connections, a broken connection): a retry later may work.
fn is_unavailable(code: &tokio_postgres::error::SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "53400")
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // No SQLSTATE means the error came from the connection, not from the statement.
        if e.is_closed() || e.code().is_none_or(is_unavailable) {
            StoreError::Unavailable(describe(&e))
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
