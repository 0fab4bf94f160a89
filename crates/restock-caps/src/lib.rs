//! Frequency caps of restock: buckets in Redis (per phone, per sender, per tenant), checked and
//! debited for a whole batch of texts in a few pipelined round trips, never beyond a cap.
//!
//! Each [`CapRequest`] is one text: its recipient's own buckets (the phone's) and any shared
//! buckets (the sender's throughput, the tenant's budget). Every key carries its scope as hash
//! tag (`{phone:+1…}`), so all buckets of one scope share a Redis Cluster slot and one script
//! checks them all before debiting any. A sender's bucket cannot live in every phone's slot, and
//! no script may touch two slots, so a request with shared buckets is decided in phases, each one
//! pipeline of single-slot scripts grouped by slot:
//!
//! 1. Shared first, counted: one script per distinct set of shared buckets takes as many tokens
//!    as the batch has requests needing them (or as many as there are). The tokens go to the
//!    requests in batch order, a request getting one from each of its shared sets or none.
//!    Requests without shared buckets run their recipient script in this same round trip.
//! 2. The recipient script of each request that got its shared tokens: all of the phone's
//!    buckets are checked, then all debited or none. Unused shared tokens are refunded in the
//!    same round trip.
//! 3. Only if a phone said no in step 2: the shared tokens of those requests are refunded.
//!
//! The refunds of steps 2 and 3 go to the shared slots, which step 1 touched already; they are
//! not sent in a round trip of their own but owed, and sent in the first pipeline of the next
//! check (or `peek`, `give_back`, [`Caps::settle`]) ahead of its takes on the same slot. So a
//! batch costs one round trip per slot: step 1 on the shared slots, step 2 on the phones'. A
//! sender going idle settles what is owed; tokens owed meanwhile only delay.
//!
//! Shared first because the sender's throughput is what runs out in a big release: a batch of
//! 1,000 then costs two scripts on the sender and tenant plus one per text that can go, not a
//! debit and a refund per phone. And a token held for a moment only ever makes a concurrent
//! request on the same sender wait a fraction of a second, where a phone debited for a moment
//! would make another worker defer that phone by a day. A refund never gives back more than its
//! take took (see `script.rs`), and a failure between phases leaves tokens taken but unused, so
//! every error is towards fewer texts: Redis down fails closed ([`CapsError::Unavailable`]), the
//! caller waits and retries, and the [`ConnectionManager`] reconnects by itself.
//!
//! Which [`Shape`] where: a window for caps that are promises (a phone's 3 texts in any 24 h, a
//! provider's 30 in any second), a rate (GCRA) for large budgets such as a tenant's day. Time
//! is always Redis's (`TIME` inside the scripts). Needs Redis 5 or later (scripts replicated by
//! effects, so they may read the clock and then write).

mod bench;
mod bucket;
mod check;
mod error;
mod key;
#[cfg(test)]
mod lua_tests;
mod script;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use bench::{bench_checks, raw_phone_take};
pub use bucket::{Bucket, Shape, MAX_PERIOD, MAX_WINDOW_CAPACITY};
pub use check::{CapAnswer, CapRequest, Grant, Limit};
pub use error::CapsError;
pub use key::{key_slot, Scope, SLOTS};

/// Handle to the caps: cheap to clone, shared by every worker.
#[derive(Clone, Debug)]
pub struct Caps {
    conn: ConnectionManager,
    /// Put before every key, outside the hash tag: one per deployment, or per test.
    prefix: Arc<str>,
    /// Told how long each round trip to Redis took (the metrics' Redis latency).
    round_trips: Option<RoundTripObserver>,
    /// Refunds of shared tokens a batch took and could not use, sent ahead of the next round
    /// trip of any check (same slot, same pipeline, so before its takes): a batch touches each
    /// slot once. See `check.rs`.
    owed: check::Owed,
}

/// Called with the duration of every pipelined round trip of cap scripts (failed ones too:
/// a timeout is latency an operator wants to see).
#[derive(Clone)]
pub struct RoundTripObserver(Arc<dyn Fn(Duration) + Send + Sync>);

impl RoundTripObserver {
    pub fn new(f: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for RoundTripObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundTripObserver")
    }
}

impl Caps {
    /// Caps on an existing connection. `prefix` must not contain braces (it would become the
    /// hash tag of every key).
    pub fn new(conn: ConnectionManager, prefix: &str) -> Result<Self, CapsError> {
        key::validate_prefix(prefix).map_err(CapsError::Invalid)?;
        Ok(Self {
            conn,
            prefix: prefix.into(),
            round_trips: None,
            owed: check::Owed::default(),
        })
    }

    /// These caps, telling `observer` the duration of every round trip to Redis.
    pub fn with_round_trip_observer(mut self, observer: RoundTripObserver) -> Self {
        self.round_trips = Some(observer);
        self
    }

    /// Runs `call`, timed for the observer if there is one and the call goes to Redis
    /// (`sends`: a call with nothing to send answers at once, without a round trip).
    pub(crate) async fn timed<T>(
        &self,
        sends: bool,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(observer) = self.round_trips.as_ref().filter(|_| sends) else {
            return call.await;
        };
        let start = std::time::Instant::now();
        let out = call.await;
        (observer.0)(start.elapsed());
        out
    }

    /// Caps on `url` (`redis://host:port/db`) with [`Caps::connection_config`]. Connects on first
    /// use, so a Redis that is down at start makes checks fail with `Unavailable` until it is
    /// back, not the process. Must be called inside a Tokio runtime.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, CapsError> {
        let client =
            redis::Client::open(url).map_err(|e| CapsError::Invalid(format!("REDIS_URL: {e}")))?;
        let conn = ConnectionManager::new_lazy_with_config(client, Self::connection_config())
            .map_err(|e| CapsError::Invalid(format!("Redis connection: {e}")))?;
        Self::new(conn, prefix)
    }

    /// Timeouts for a caps connection: an outage surfaces as an error within about a second
    /// instead of a worker stuck on a dead socket; every later check tries to reconnect.
    pub fn connection_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of one limit's bucket, e.g. `prod:{phone:+14155550123}:texts:w`.
    pub fn key(&self, limit: &Limit) -> String {
        key::bucket_key(&self.prefix, &limit.scope, &limit.name, limit.bucket.shape)
    }
}
