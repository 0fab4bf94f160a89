//! Postgres store of restock: the connection pool, migrations, and one module per table group.
//! Plain SQL with bound parameters; one transaction per use case.

pub mod backlog;
pub mod confirmations;
pub mod dispatch;
pub mod eligibility;
mod error;
pub mod handover;
pub mod inventory;
pub mod migrate;
pub mod outcomes;
pub mod propensity;
pub mod purchases;
pub mod releases;
pub mod reports;
pub mod subscribe_batch;
pub mod substitutes;
pub mod transfer;
pub mod views;
pub mod waitlist;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use error::StoreError;
use tokio_postgres::NoTls;

/// Handle to the database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Builds a pool of at most `max_size` connections. Connects lazily: a database that is
    /// down at start makes requests fail with `Unavailable`, not the process.
    pub fn connect(url: &str, max_size: usize) -> Result<Self, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Config(format!("DATABASE_URL: {e}")))?;
        // Short statements only: compiling one with JIT costs more than running it.
        if pg.get_options().is_none() {
            pg.options("-c jit=off");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            // A request waits at most this long for a connection before answering UNAVAILABLE.
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The pool's connections now: for the metrics (no I/O, a few atomic reads).
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }
}

/// What the connection pool holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections it opens (`database.pool_size`).
    pub max_size: usize,
    /// Connections open, idle or lent out.
    pub size: usize,
    /// Idle connections, ready to lend.
    pub available: usize,
    /// Requests waiting for a connection (none idle and the pool at its size).
    pub waiting: usize,
}

/// Statements go through the connection's statement cache: one round trip per execution
/// instead of a prepare and an execute.
mod cached {
    use deadpool_postgres::GenericClient;
    use tokio_postgres::types::ToSql;
    use tokio_postgres::Row;

    use crate::StoreError;

    pub async fn query<C: GenericClient>(
        c: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let st = c.prepare_cached(sql).await?;
        Ok(c.query(&st, params).await?)
    }

    pub async fn query_one<C: GenericClient>(
        c: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let st = c.prepare_cached(sql).await?;
        Ok(c.query_one(&st, params).await?)
    }

    pub async fn query_opt<C: GenericClient>(
        c: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let st = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&st, params).await?)
    }

    /// `sql` in a transaction of its own whose plan looks rows up by index, never by a
    /// sequential scan, whatever the statistics say (a release's outbox grows from nothing
    /// faster than autovacuum analyzes it), pipelined: BEGIN, the statement and COMMIT in one
    /// round trip. A failed statement aborts the transaction; its COMMIT then rolls back.
    pub async fn query_indexed(
        c: &deadpool_postgres::ClientWrapper,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let st = c.prepare_cached(sql).await?;
        let (_, rows, _) = tokio::try_join!(
            c.batch_execute("BEGIN; SET LOCAL enable_seqscan = off"),
            c.query(&st, params),
            c.batch_execute("COMMIT"),
        )?;
        Ok(rows)
    }

    pub async fn execute<C: GenericClient>(
        c: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let st = c.prepare_cached(sql).await?;
        Ok(c.execute(&st, params).await?)
    }
}
