//! `bench_checks`: the throughput of [`Caps::check`] on realistic batches, for `just bench` to
//! set against `redis-benchmark`'s EVALSHA rate on the same Redis.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::{Bucket, CapRequest, Caps, CapsError, Scope};

/// Batches in flight at once, as a few dispatch workers would have: while Redis runs one
/// batch's scripts, the client builds and reads the others (`redis-benchmark` runs 50 clients).
const WORKERS: usize = 4;

/// Checks `batches` batches of `batch_size` requests, four batches at a time, and returns
/// the requests checked per second. Each request is a text to a fresh phone (3 per minute,
/// window: the same script as 3 per 24 h, but its keys are gone a minute later) from one sender
/// and one tenant (rate buckets too large to deny), so every batch takes the full path: a
/// counted take per shared bucket, then one script per phone. Building the requests is not
/// timed.
pub async fn bench_checks(
    caps: &Caps,
    batches: usize,
    batch_size: usize,
) -> Result<f64, CapsError> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let minute = Duration::from_secs(60);
    let second = Duration::from_secs(1);
    let sender = Scope::sender(format!("bench-{run}"));
    let tenant = Scope::tenant(format!("bench-{run}"));
    let all: Vec<Vec<CapRequest>> = (0..batches)
        .map(|b| {
            (0..batch_size)
                .map(|i| {
                    CapRequest::new(Scope::phone(format!("+1{run}{b:06}{i:06}")))
                        .own("texts", Bucket::window(3, minute))
                        .shared(sender.clone(), "mps", Bucket::rate(1_000_000_000, second))
                        .shared(tenant.clone(), "mps", Bucket::rate(1_000_000_000, second))
                })
                .collect()
        })
        .collect();

    let start = Instant::now();
    let mut pending = all.into_iter();
    let mut running = JoinSet::new();
    let mut spawn = |running: &mut JoinSet<_>| {
        pending.next().map(|batch: Vec<CapRequest>| {
            let caps = caps.clone();
            running.spawn(async move { caps.check(&batch).await.map(|a| a.len()) });
        })
    };
    for _ in 0..WORKERS {
        spawn(&mut running);
    }
    let mut checked = 0;
    while let Some(done) = running.join_next().await {
        checked += done.map_err(|e| CapsError::Reply(format!("bench task: {e}")))??;
        spawn(&mut running);
    }
    Ok(checked as f64 / start.elapsed().as_secs_f64().max(f64::EPSILON))
}

/// The raw limit `bench_checks` is set against: the crate's own TAKE script on one phone's
/// bucket, keyed as `bench_checks` keys them, for `redis-benchmark` to run pipelined
/// (`__rand_int__` stands for the phone). Answers the script and the EVALSHA arguments after
/// the SHA (the key count, the key, the script's arguments).
pub fn raw_phone_take(prefix: &str) -> (&'static str, Vec<String>) {
    let key = crate::key::bucket_key(
        prefix,
        &Scope::phone("+1__rand_int__"),
        "texts",
        crate::Shape::Window,
    );
    let minute_us = Duration::from_secs(60).as_micros().to_string();
    // n = 1, quiet (never refunded), one window bucket of 3 per minute.
    let args = ["1", &key, "1", "1", "w", "3", &minute_us];
    (
        crate::script::TAKE,
        args.iter().map(|a| a.to_string()).collect(),
    )
}
