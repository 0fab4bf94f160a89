//! `Caps` against the real Redis (`REDIS_URL`), each test under its own key prefix.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use redis::AsyncCommands;
use restock_caps::{key_slot, Bucket, CapAnswer, CapRequest, Caps, CapsError, Scope};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

fn redis_url() -> String {
    std::env::var("REDIS_URL").expect(
        "REDIS_URL is unset: these tests need the real Redis \
         (`source target/services/env`, or run them with `just test`)",
    )
}

fn prefix() -> String {
    format!("caps-test-{}", uuid::Uuid::new_v4().simple())
}

fn caps() -> Caps {
    Caps::connect(&redis_url(), &prefix()).expect("caps on REDIS_URL")
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis answers")
}

async fn keys_of(caps: &Caps) -> Vec<String> {
    let mut conn = raw().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", caps.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Deletes a test's keys, so day-long buckets do not pile up in the shared Redis.
async fn cleanup(caps: &Caps) {
    let keys = keys_of(caps).await;
    if !keys.is_empty() {
        let _: () = raw().await.del(keys).await.unwrap();
    }
}

/// How many grants a window bucket remembers (its log is decimal µs separated by spaces).
async fn grants_logged(key: &str) -> usize {
    let log: Option<String> = raw().await.get(key).await.unwrap();
    log.map_or(0, |l| l.split_whitespace().count())
}

fn phone(n: u32) -> Scope {
    Scope::phone(format!("+1415555{n:04}"))
}

fn texts(p: Scope, bucket: Bucket) -> CapRequest {
    CapRequest::new(p).own("texts", bucket)
}

fn retry_in(answer: &CapAnswer) -> Duration {
    match answer {
        CapAnswer::Denied { retry_at, .. } => (*retry_at - Utc::now()).to_std().unwrap_or_default(),
        CapAnswer::Granted => panic!("expected a deny, got a grant"),
    }
}

fn assert_close(actual: Duration, expected: Duration) {
    let diff = actual.abs_diff(expected);
    assert!(
        diff < Duration::from_secs(5),
        "expected about {expected:?}, got {actual:?}"
    );
}

async fn one(caps: &Caps, request: &CapRequest) -> CapAnswer {
    caps.check(std::slice::from_ref(request)).await.unwrap()[0]
}

#[tokio::test]
async fn three_per_day_window_grants_three_then_waits_a_day() {
    let caps = caps();
    let req = texts(phone(1), Bucket::window(3, DAY));
    for _ in 0..3 {
        assert_eq!(one(&caps, &req).await, CapAnswer::Granted);
    }
    let denied = one(&caps, &req).await;
    assert!(matches!(denied, CapAnswer::Denied { limit: 0, .. }));
    assert_close(retry_in(&denied), DAY);
    cleanup(&caps).await;
}

#[tokio::test]
async fn three_per_day_rate_grants_three_then_waits_eight_hours() {
    let caps = caps();
    let req = texts(phone(1), Bucket::rate(3, DAY));
    for _ in 0..3 {
        assert_eq!(one(&caps, &req).await, CapAnswer::Granted);
    }
    let denied = one(&caps, &req).await;
    assert_close(retry_in(&denied), 8 * HOUR);
    cleanup(&caps).await;
}

#[tokio::test]
async fn a_denied_request_takes_nothing_from_its_other_limits() {
    let caps = caps();
    let p = phone(2);
    let both = CapRequest::new(p.clone())
        .own("day", Bucket::window(5, DAY))
        .own("hour", Bucket::window(1, HOUR));
    assert_eq!(one(&caps, &both).await, CapAnswer::Granted);
    let denied = one(&caps, &both).await;
    assert!(
        matches!(denied, CapAnswer::Denied { limit: 1, .. }),
        "{denied:?}"
    );
    assert_close(retry_in(&denied), HOUR);

    // The day bucket gave one token, to the grant: four are left.
    let day_only = CapRequest::new(p).own("day", Bucket::window(5, DAY));
    let key = caps.key(&day_only.limits[0]);
    let len = grants_logged(&key).await;
    assert_eq!(len, 1);
    for _ in 0..4 {
        assert_eq!(one(&caps, &day_only).await, CapAnswer::Granted);
    }
    assert!(!one(&caps, &day_only).await.is_granted());
    cleanup(&caps).await;
}

#[tokio::test]
async fn a_phone_that_says_no_gives_the_shared_tokens_back() {
    let caps = caps();
    let sender = Scope::sender("MG-1");
    let tenant = Scope::tenant("acme");
    let with_shared = |p: Scope| {
        texts(p, Bucket::window(1, DAY))
            .shared(sender.clone(), "mps", Bucket::window(1, HOUR))
            .shared(tenant.clone(), "day", Bucket::rate(1, DAY))
    };
    // Phone 3 is capped already (by a text without shared limits).
    assert!(one(&caps, &texts(phone(3), Bucket::window(1, DAY)))
        .await
        .is_granted());

    let denied = one(&caps, &with_shared(phone(3))).await;
    assert!(
        matches!(denied, CapAnswer::Denied { limit: 0, .. }),
        "{denied:?}"
    );
    // The one token of the sender and of the tenant went back: phone 4 gets them.
    assert_eq!(one(&caps, &with_shared(phone(4))).await, CapAnswer::Granted);
    let denied = one(&caps, &with_shared(phone(5))).await;
    assert!(matches!(denied, CapAnswer::Denied { .. }), "{denied:?}");
    cleanup(&caps).await;
}

#[tokio::test]
async fn shared_tokens_go_in_batch_order_and_the_rest_queue_behind_them() {
    let caps = caps();
    let sender = Scope::sender("MG-2");
    let tenant = Scope::tenant("t2");
    let batch: Vec<CapRequest> = (0..5)
        .map(|i| {
            texts(phone(10 + i), Bucket::window(3, DAY))
                .shared(sender.clone(), "per-hour", Bucket::rate(2, HOUR))
                .shared(tenant.clone(), "day", Bucket::rate(100, DAY))
        })
        .collect();
    let answers = caps.check(&batch).await.unwrap();
    assert!(answers[0].is_granted() && answers[1].is_granted());
    // Two per hour: the third waits half an hour, the fourth an hour, the fifth 1.5 h.
    for (i, expect) in [(2, HOUR / 2), (3, HOUR), (4, HOUR * 3 / 2)] {
        assert!(matches!(answers[i], CapAnswer::Denied { limit: 1, .. }));
        assert_close(retry_in(&answers[i]), expect);
    }
    // The phones of the denied requests were not touched.
    let peeks = caps.peek(&batch).await.unwrap();
    let phone_only: Vec<CapRequest> = batch
        .iter()
        .map(|r| CapRequest::new(r.recipient.clone()).own("texts", Bucket::window(3, DAY)))
        .collect();
    assert!(peeks.iter().all(|a| !a.is_granted()));
    let mut conn = raw().await;
    for (i, r) in phone_only.iter().enumerate() {
        let len = grants_logged(&caps.key(&r.limits[0])).await;
        assert_eq!(len, usize::from(i < 2), "phone {i}");
    }
    // The tenant gave 5 tokens to the batch's counted take; the 3 it could not use went back.
    let tat: i64 = conn.get(caps.key(&batch[0].limits[2])).await.unwrap();
    let spent = (tat - Utc::now().timestamp_micros()) as f64 / 864_000_000.0;
    assert_eq!(
        spent.round() as u32,
        2,
        "{spent} tokens of the tenant spent"
    );
    cleanup(&caps).await;
}

#[tokio::test]
async fn peek_says_when_a_cap_frees_and_takes_nothing() {
    let caps = caps();
    let req = texts(phone(20), Bucket::window(2, DAY));
    assert_eq!(
        caps.peek(std::slice::from_ref(&req)).await.unwrap()[0],
        CapAnswer::Granted
    );
    assert!(one(&caps, &req).await.is_granted());
    assert!(one(&caps, &req).await.is_granted());
    for _ in 0..3 {
        let peek = caps.peek(std::slice::from_ref(&req)).await.unwrap()[0];
        assert_close(retry_in(&peek), DAY);
    }
    let len = grants_logged(&caps.key(&req.limits[0])).await;
    assert_eq!(len, 2);
    cleanup(&caps).await;
}

#[tokio::test]
async fn a_batch_of_a_thousand_is_checked_in_one_call() {
    let caps = caps();
    let sender = Scope::sender("MG-3");
    let tenant = Scope::tenant("big");
    let batch: Vec<CapRequest> = (0..1_000)
        .map(|i| {
            texts(phone(i), Bucket::window(1, HOUR))
                .shared(
                    sender.clone(),
                    "mps",
                    Bucket::rate(100_000, Duration::from_secs(1)),
                )
                .shared(tenant.clone(), "day", Bucket::rate(10_000, DAY))
        })
        .collect();
    let answers = caps.check(&batch).await.unwrap();
    assert_eq!(answers.len(), 1_000);
    assert!(answers.iter().all(CapAnswer::is_granted));

    // Every phone is capped now; the tenant's budget lost nothing to the denied batch.
    let again = caps.check(&batch).await.unwrap();
    assert!(again
        .iter()
        .all(|a| matches!(a, CapAnswer::Denied { limit: 0, .. })));
    // The shared tokens the denied batch took are owed back until the next round trip.
    caps.settle().await.unwrap();
    let tenant_day = CapRequest::new(tenant.clone()).own("day", Bucket::rate(10_000, DAY));
    let available: u64 = {
        // 10,000 per day, one token per 8.64 s: the TAT is 1,000 tokens ahead of now after the
        // first batch, and the second batch's tokens all went back.
        let tat: i64 = raw()
            .await
            .get(caps.key(&tenant_day.limits[0]))
            .await
            .unwrap();
        let now = Utc::now().timestamp_micros();
        let spent_us = tat - now;
        (spent_us as f64 / 8_640_000.0).round() as u64
    };
    assert_eq!(available, 1_000);
    cleanup(&caps).await;
}

#[tokio::test]
async fn keys_carry_the_hash_tag_and_expire_within_their_period() {
    let caps = caps();
    let p = phone(30);
    let req = CapRequest::new(p.clone())
        .own("texts", Bucket::window(3, DAY))
        .own("burst", Bucket::rate(2, HOUR))
        .shared(
            Scope::sender("MG-4"),
            "mps",
            Bucket::window(30, Duration::from_secs(1)),
        )
        .shared(Scope::tenant("t4"), "day", Bucket::rate(1_000, DAY));
    assert!(one(&caps, &req).await.is_granted());

    let keys = keys_of(&caps).await;
    assert_eq!(keys.len(), 4, "{keys:?}");
    let mut conn = raw().await;
    for limit in &req.limits {
        let key = caps.key(limit);
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
        let tag = limit.scope.hash_tag();
        assert!(
            key.starts_with(&format!("{}:{tag}:", caps.prefix())),
            "{key}"
        );
        assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        let period = limit.bucket.period.as_millis() as i64;
        assert!(
            ttl > 0 && ttl <= period,
            "{key}: PTTL {ttl} ms, period {period} ms"
        );
    }
    // The phone's two buckets share a slot, so one script can take from both.
    assert_eq!(
        key_slot(caps.key(&req.limits[0]).as_bytes()),
        key_slot(caps.key(&req.limits[1]).as_bytes())
    );
    // A rate bucket expires when full again: one of 2 per hour taken, full in 30 min.
    let ttl: i64 = conn.pttl(caps.key(&req.limits[1])).await.unwrap();
    assert!(ttl <= 30 * 60 * 1000 && ttl > 29 * 60 * 1000, "{ttl}");
    cleanup(&caps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_on_one_phone_get_exactly_three_grants() {
    for bucket in [Bucket::window(3, DAY), Bucket::rate(3, DAY)] {
        let caps = caps();
        let req = texts(phone(40), bucket).shared(
            Scope::sender("MG-5"),
            "mps",
            Bucket::window(1_000, Duration::from_secs(1)),
        );
        let mut tasks = JoinSet::new();
        for _ in 0..20 {
            let (caps, req) = (caps.clone(), req.clone());
            tasks.spawn(async move { one(&caps, &req).await });
        }
        let mut granted = 0;
        while let Some(answer) = tasks.join_next().await {
            granted += usize::from(answer.unwrap().is_granted());
        }
        assert_eq!(granted, 3, "{bucket:?}");
        cleanup(&caps).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_never_grants_more_than_its_capacity_in_any_period() {
    const CAPACITY: usize = 5;
    const PERIOD: Duration = Duration::from_millis(500);
    const RUN: Duration = Duration::from_millis(2_200);
    let caps = caps();
    let sender = Scope::sender("MG-6");
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..4u32 {
        let (caps, sender) = (caps.clone(), sender.clone());
        tasks.spawn(async move {
            // (sent, answered) of every grant: Redis took the token in between.
            let mut grants = Vec::new();
            let mut n = 0;
            while start.elapsed() < RUN {
                let batch: Vec<CapRequest> = (0..8)
                    .map(|i| {
                        n += 1;
                        let p = Scope::phone(format!("+1{task}{n:08}{i}"));
                        texts(p, Bucket::window(1_000, DAY)).shared(
                            sender.clone(),
                            "mps",
                            Bucket::window(CAPACITY as u32, PERIOD),
                        )
                    })
                    .collect();
                let sent = Instant::now();
                let answers = caps.check(&batch).await.unwrap();
                let answered = Instant::now();
                grants.extend(
                    answers
                        .iter()
                        .filter(|a| a.is_granted())
                        .map(|_| (sent, answered)),
                );
            }
            grants
        });
    }
    let mut grants = Vec::new();
    while let Some(g) = tasks.join_next().await {
        grants.extend(g.unwrap());
    }
    grants.sort();
    let elapsed = start.elapsed();

    // Any CAPACITY + 1 grants must span a full period of Redis's time. Their Redis times lie
    // between the earliest send and the latest answer, so that interval must be a period at
    // least (less a little for the two clocks).
    for run in grants.windows(CAPACITY + 1) {
        let first_sent = run[0].0;
        let last_answered = run.iter().map(|g| g.1).max().unwrap();
        assert!(
            last_answered - first_sent >= PERIOD - Duration::from_millis(2),
            "{} grants within {:?}",
            CAPACITY + 1,
            last_answered - first_sent
        );
    }
    // And the sender was used, not merely refused: close to CAPACITY per PERIOD.
    let periods = (elapsed.as_millis() / PERIOD.as_millis()) as usize;
    assert!(
        grants.len() >= CAPACITY * periods.saturating_sub(1),
        "{} grants in {elapsed:?}",
        grants.len()
    );
    assert!(grants.len() <= CAPACITY * (periods + 1));
    cleanup(&caps).await;
}

#[tokio::test]
async fn invalid_requests_are_refused_before_redis_is_asked() {
    let caps = caps();
    let dup = texts(phone(50), Bucket::window(1, DAY)).own("texts", Bucket::window(1, DAY));
    assert!(matches!(
        caps.check(&[dup]).await,
        Err(CapsError::Invalid(_))
    ));
    let brace = texts(Scope::phone("+1{415}"), Bucket::window(1, DAY));
    assert!(matches!(
        caps.check(&[brace]).await,
        Err(CapsError::Invalid(_))
    ));
    let zero = texts(phone(51), Bucket::window(0, DAY));
    assert!(matches!(
        caps.peek(&[zero]).await,
        Err(CapsError::Invalid(_))
    ));
    assert!(Caps::connect(&redis_url(), "bad{prefix}").is_err());
    assert!(keys_of(&caps).await.is_empty());
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_and_closed() {
    let caps = Caps::connect("redis://127.0.0.1:1/0", &prefix()).expect("connects lazily");
    let req = texts(phone(60), Bucket::window(3, DAY));
    for _ in 0..2 {
        let start = Instant::now();
        let answer = caps.check(std::slice::from_ref(&req)).await;
        assert!(
            matches!(&answer, Err(e @ CapsError::Unavailable(_)) if e.is_transient()),
            "{answer:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}

/// A TCP proxy to Redis that can be cut and restored, on the same port.
struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            target,
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            // Dropping the set when this task is aborted closes every proxied connection.
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Redis "goes down": open connections drop, new ones are refused.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn checks_resume_by_themselves_after_an_outage() {
    let url = redis_url();
    let (host, db) = url
        .trim_start_matches("redis://")
        .split_once('/')
        .expect("REDIS_URL is redis://host:port/db");
    let target: SocketAddr = tokio::net::lookup_host(host).await.unwrap().next().unwrap();
    let mut proxy = Proxy::start(target).await;
    let caps = Caps::connect(&format!("redis://{}/{db}", proxy.addr), &prefix()).unwrap();
    let req = texts(phone(70), Bucket::window(1_000, HOUR));
    assert!(one(&caps, &req).await.is_granted());

    proxy.cut().await;
    let start = Instant::now();
    let answer = caps.check(std::slice::from_ref(&req)).await;
    assert!(
        matches!(answer, Err(CapsError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match caps.check(std::slice::from_ref(&req)).await {
            Ok(answers) => {
                assert!(answers[0].is_granted());
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    cleanup(&caps).await;
}

#[tokio::test]
async fn bench_checks_reports_a_rate() {
    let caps = caps();
    let rate = restock_caps::bench_checks(&caps, 2, 100).await.unwrap();
    assert!(rate > 0.0);
    cleanup(&caps).await;
}

/// Grants of `request` checked `n` times side by side on one `caps`, with their grants.
async fn race(
    caps: &Caps,
    request: &CapRequest,
    n: usize,
) -> Vec<(CapAnswer, Option<restock_caps::Grant>)> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (caps, request) = (caps.clone(), request.clone());
        set.spawn(async move {
            caps.check_granting(std::slice::from_ref(&request))
                .await
                .unwrap()
                .remove(0)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.push(r.unwrap());
    }
    all
}

#[tokio::test]
async fn a_grant_given_back_frees_its_own_token_and_no_other() {
    let caps = caps();
    let p = phone(70);
    // The phone's 3 a day, and a sender's pace it shares with others.
    let req = texts(p.clone(), Bucket::window(3, DAY)).shared(
        Scope::sender("+15005550006"),
        "mps",
        Bucket::window(100, Duration::from_secs(1)),
    );
    let mut grants = Vec::new();
    for _ in 0..3 {
        let (answer, grant) = caps
            .check_granting(std::slice::from_ref(&req))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(answer, CapAnswer::Granted);
        grants.push(grant.expect("a grant of the phone's own limit"));
    }
    let (denied, none) = caps
        .check_granting(std::slice::from_ref(&req))
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(denied, CapAnswer::Denied { limit: 0, .. }));
    assert!(none.is_none(), "a denied request has nothing to give back");
    let phone_key = keys_of(&caps)
        .await
        .into_iter()
        .find(|k| k.contains("texts"))
        .unwrap();
    assert_eq!(grants_logged(&phone_key).await, 3);

    // The middle text was never sent: its token comes back, exactly one.
    let middle = grants.remove(1);
    caps.give_back(vec![middle]).await.unwrap();
    assert_eq!(grants_logged(&phone_key).await, 2);
    assert_eq!(one(&caps, &req).await, CapAnswer::Granted);
    assert!(matches!(one(&caps, &req).await, CapAnswer::Denied { .. }));
    cleanup(&caps).await;
}

#[tokio::test]
async fn grants_raced_and_given_back_leave_the_cap_exactly_as_it_was() {
    let caps = caps();
    let req = texts(phone(71), Bucket::window(3, DAY));
    // Twenty checks at once: three win.
    let answers = race(&caps, &req, 20).await;
    let grants: Vec<_> = answers.into_iter().filter_map(|(_, g)| g).collect();
    assert_eq!(grants.len(), 3);
    // None of the three was sent: all come back, side by side.
    let mut set = JoinSet::new();
    for g in grants {
        let caps = caps.clone();
        set.spawn(async move { caps.give_back(vec![g]).await.unwrap() });
    }
    while set.join_next().await.is_some() {}
    // The cap is whole again: three more, and not a fourth, even raced.
    let again = race(&caps, &req, 20).await;
    assert_eq!(again.iter().filter(|(a, _)| a.is_granted()).count(), 3);
    cleanup(&caps).await;
}

#[tokio::test]
async fn a_rate_shaped_limit_gives_back_what_its_grant_took() {
    let caps = caps();
    let req = texts(phone(72), Bucket::rate(2, DAY));
    let (_, first) = caps
        .check_granting(std::slice::from_ref(&req))
        .await
        .unwrap()
        .remove(0);
    let (_, second) = caps
        .check_granting(std::slice::from_ref(&req))
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(one(&caps, &req).await, CapAnswer::Denied { .. }));
    caps.give_back(vec![second.unwrap()]).await.unwrap();
    assert_eq!(one(&caps, &req).await, CapAnswer::Granted);
    assert!(matches!(one(&caps, &req).await, CapAnswer::Denied { .. }));
    caps.give_back(vec![first.unwrap()]).await.unwrap();
    assert_eq!(one(&caps, &req).await, CapAnswer::Granted);
    assert!(matches!(one(&caps, &req).await, CapAnswer::Denied { .. }));
    cleanup(&caps).await;
}

#[tokio::test]
async fn the_observer_hears_one_round_trip_per_batch_and_a_failed_one_too() {
    use std::sync::{Arc, Mutex};
    let heard = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let observer = {
        let heard = heard.clone();
        restock_caps::RoundTripObserver::new(move |took| heard.lock().unwrap().push(took))
    };
    let caps = caps().with_round_trip_observer(observer.clone());
    // A batch of many phones is still one round trip.
    let batch: Vec<CapRequest> = (0..50)
        .map(|n| texts(phone(100 + n), Bucket::window(3, DAY)))
        .collect();
    let answers = caps.check(&batch).await.unwrap();
    assert!(answers.iter().all(CapAnswer::is_granted));
    assert_eq!(heard.lock().unwrap().len(), 1);
    // Caps with nothing to ask Redis make no round trip.
    caps.check(&[]).await.unwrap();
    assert_eq!(heard.lock().unwrap().len(), 1);
    cleanup(&caps).await;

    // A Redis that is not there: the failed attempt is timed as well (an outage is latency).
    let down = Caps::connect("redis://127.0.0.1:1/0", &prefix())
        .unwrap()
        .with_round_trip_observer(observer);
    assert!(down.check(&batch[..1]).await.is_err());
    assert_eq!(heard.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_batch_touches_each_slot_once_and_its_unused_shared_tokens_go_back_with_the_next() {
    use std::sync::{Arc, Mutex};
    let heard = Arc::new(Mutex::new(0usize));
    let observer = {
        let heard = heard.clone();
        restock_caps::RoundTripObserver::new(move |_| *heard.lock().unwrap() += 1)
    };
    let caps = caps().with_round_trip_observer(observer);
    let trips = || *heard.lock().unwrap();
    let sender = Scope::sender("MG-once");
    let paced = |n: u32| {
        texts(phone(n), Bucket::window(1, DAY)).shared(
            sender.clone(),
            "mps",
            Bucket::window(10, HOUR),
        )
    };
    // Two phones have had their text of the day already.
    for n in [200, 201] {
        assert!(one(&caps, &texts(phone(n), Bucket::window(1, DAY)))
            .await
            .is_granted());
    }
    let before = trips();

    // Ten texts on a sender with room for ten: its slot, then the phones', once each.
    let answers = caps
        .check(&(200..210).map(paced).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(answers.iter().filter(|a| a.is_granted()).count(), 8);
    assert!(matches!(answers[0], CapAnswer::Denied { limit: 0, .. }));
    assert_eq!(
        trips() - before,
        2,
        "one round trip for the sender's slot, one for the phones'"
    );

    // The two tokens the capped phones could not use go back ahead of the next batch's take,
    // in its first round trip: two more texts fit, and a third does not.
    let answers = caps
        .check(&(300..303).map(paced).collect::<Vec<_>>())
        .await
        .unwrap();
    let granted: Vec<bool> = answers.iter().map(CapAnswer::is_granted).collect();
    assert_eq!(granted, [true, true, false]);
    assert!(matches!(answers[2], CapAnswer::Denied { limit: 1, .. }));
    assert_eq!(trips() - before, 4);

    // The third was refused by the sender in the first round trip: nothing is owed now.
    caps.settle().await.unwrap();
    assert_eq!(trips() - before, 4, "nothing owed, no round trip");

    // A sender going idle settles: what a capped phone could not use goes back in one round
    // trip of its own, once.
    let single = |n: u32| {
        texts(phone(n), Bucket::window(1, DAY)).shared(
            Scope::sender("MG-once-2"),
            "mps",
            Bucket::window(1, HOUR),
        )
    };
    let answers = caps.check(&[single(201)]).await.unwrap();
    assert!(matches!(answers[0], CapAnswer::Denied { limit: 0, .. }));
    let key = caps.key(&single(201).limits[1]);
    assert_eq!(grants_logged(&key).await, 1, "owed, not given back yet");
    caps.settle().await.unwrap();
    assert_eq!(trips() - before, 7);
    assert_eq!(grants_logged(&key).await, 0, "given back");
    caps.settle().await.unwrap();
    assert_eq!(trips() - before, 7);
    cleanup(&caps).await;
}
