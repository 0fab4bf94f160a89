//! The Lua scripts on the real Redis, with the clock in the tests' hands: the same source with
//! `TIME` replaced by an argument, driven through random sequences of instants and checked
//! against the math of `bucket.rs` written out plainly.

use std::sync::LazyLock;
use std::time::Duration;

use proptest::prelude::*;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::bucket::{Bucket, Shape};
use crate::check::{refund_call, take_call};
use crate::script::{parse_take, run, Arg, Lua, Taken, REFUND_LUA, TAKE_LUA};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
});
static TAKE_AT: LazyLock<Lua> = LazyLock::new(|| TAKE_LUA.with_test_clock());
static REFUND_AT: LazyLock<Lua> = LazyLock::new(|| REFUND_LUA.with_test_clock());

fn redis_url() -> String {
    std::env::var("REDIS_URL").expect(
        "REDIS_URL is unset: these tests need the real Redis \
         (`source target/services/env`, or run them with `just test`)",
    )
}

async fn conn() -> ConnectionManager {
    let client = redis::Client::open(redis_url()).expect("REDIS_URL parses");
    ConnectionManager::new(client)
        .await
        .expect("the test Redis answers")
}

fn key(name: &str) -> String {
    format!(
        "lua-test-{}:{{k:{}}}:{name}",
        uuid::Uuid::new_v4().simple(),
        1
    )
}

/// TAKE at a given instant.
async fn take_at(c: &ConnectionManager, keys: &[String], b: &[Bucket], n: u64, now: i64) -> Taken {
    let mut call = take_call(keys.to_vec(), b, n, false);
    call.lua = &TAKE_AT;
    call.args.push(Arg::Int(now));
    let replies = run(c, &[call]).await.expect("take runs");
    parse_take(&replies[0], keys.len()).expect("take answers")
}

async fn refund_at(
    c: &ConnectionManager,
    keys: &[String],
    b: &[Bucket],
    t: &Taken,
    m: u64,
    now: i64,
) {
    let mut call = refund_call(keys.to_vec(), b, t, m, 0);
    call.lua = &REFUND_AT;
    call.args.push(Arg::Int(now));
    run(c, &[call]).await.expect("refund runs");
}

const T0: i64 = 1_800_000_000_000_000;

fn period_us(b: &Bucket) -> i64 {
    b.period.as_micros() as i64
}

/// One step of a random history: wait `permille` thousandths of a period, then take `n`. The
/// edges of a period come up often: that is where an off-by-one would hide.
fn steps() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let wait = prop_oneof![
        Just(0u64),
        Just(999),
        Just(1_000),
        Just(1_001),
        Just(333),
        0u64..1_500
    ];
    proptest::collection::vec((wait, 0u64..5), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// A window grants exactly what keeps every period at `capacity` or fewer grants, and its
    /// answers say when the next slot frees.
    #[test]
    fn window_grants_exactly_what_fits_in_every_period(
        capacity in 1u32..6, period_ms in 1u64..5_000, steps in steps(),
    ) {
        RT.block_on(async {
            let c = conn().await;
            let b = Bucket::window(capacity, Duration::from_millis(period_ms));
            let p = period_us(&b);
            let k = vec![key("w")];
            let mut now = T0;
            let mut grants: Vec<i64> = Vec::new();
            for (permille, n) in steps {
                now += p * permille as i64 / 1000;
                let live = grants.iter().filter(|&&g| g > now - p).count() as u64;
                let room = u64::from(capacity) - live;
                let t = take_at(&c, &k, &[b], n, now).await;
                assert_eq!(t.seen[0].avail, room);
                assert_eq!(t.taken, n.min(room));
                grants.extend(std::iter::repeat_n(now, t.taken as usize));
                if t.taken < n || n == 0 {
                    let mut live: Vec<i64> = grants.iter().copied().filter(|&g| g > now - p).collect();
                    live.sort_unstable();
                    let expect = if (live.len() as u64) < u64::from(capacity) { now } else { live[0] + p };
                    assert_eq!(b.due(&t.seen[0], t.taken, 1, now), expect);
                }
                // Never more than `capacity` in any period ending at a grant.
                for &g in &grants {
                    let within = grants.iter().filter(|&&h| h > g - p && h <= g).count();
                    assert!(within <= capacity as usize);
                }
            }
            let _: () = c.clone().del(&k[0]).await.unwrap();
        });
    }

    /// A rate bucket is GCRA: exactly the model's grants, and from full never more than
    /// `capacity` plus what refilled.
    #[test]
    fn rate_grants_what_gcra_allows(
        capacity in 1u32..50, period_ms in 1u64..100_000, steps in steps(),
    ) {
        RT.block_on(async {
            let c = conn().await;
            let b = Bucket::rate(capacity, Duration::from_millis(period_ms));
            let (p, cap) = (i128::from(period_us(&b)), i128::from(capacity));
            let k = vec![key("r")];
            let mut now = T0;
            let mut tat: i128 = 0;
            let mut total: i128 = 0;
            for (permille, n) in steps {
                now += period_us(&b) * permille as i64 / 1000;
                let base = tat.max(i128::from(now));
                let room = (i128::from(now) + p - base).max(0) * cap / p;
                let t = take_at(&c, &k, &[b], n, now).await;
                assert_eq!(i128::from(t.seen[0].avail), room);
                let taken = i128::from(n).min(room);
                assert_eq!(i128::from(t.taken), taken);
                if taken > 0 {
                    tat = base + (taken * p + cap - 1) / cap;
                }
                total += taken;
                assert!(total <= cap + (i128::from(now - T0)) * cap / p);
                if taken < i128::from(n) && n > 0 {
                    let due = b.due(&t.seen[0], t.taken, 1, now);
                    assert!(i128::from(due) > i128::from(now));
                    assert_eq!(i128::from(due), tat.max(i128::from(now)) - p + (p + cap - 1) / cap);
                }
            }
            let _: () = c.clone().del(&k[0]).await.unwrap();
        });
    }

    /// A refund never leaves more room than if the refunded tokens had never been taken, and
    /// never less than before it; a window's refund is exact.
    #[test]
    fn a_refund_gives_back_at_most_what_was_taken(
        shape in prop_oneof![Just(Shape::Window), Just(Shape::Rate)],
        capacity in 1u32..20, period_ms in 1u64..10_000,
        first in 0u64..20, k in 1u64..20, m_seed in 0u64..20, later_permille in 0u64..1_200,
    ) {
        RT.block_on(async {
            let c = conn().await;
            let b = Bucket { capacity, period: Duration::from_millis(period_ms), shape };
            let p = period_us(&b);
            let (with, without) = (key("with"), key("without"));
            // The same history on two keys; one takes k and refunds m, the other takes k − m.
            let (kw, ko) = (vec![with.clone()], vec![without.clone()]);
            take_at(&c, &kw, &[b], first, T0).await;
            take_at(&c, &ko, &[b], first, T0).await;
            let now = T0 + p / 3;
            let t = take_at(&c, &kw, &[b], k, now).await;
            let m = if t.taken == 0 { 0 } else { m_seed % t.taken + 1 };
            take_at(&c, &ko, &[b], t.taken - m, now).await;
            let later = now + p * later_permille as i64 / 1000;
            let before = take_at(&c, &kw, &[b], 0, later).await.seen[0].avail;
            if m > 0 {
                refund_at(&c, &kw, &[b], &t, m, later).await;
            }
            let refunded = take_at(&c, &kw, &[b], 0, later).await.seen[0].avail;
            let never_taken = take_at(&c, &ko, &[b], 0, later).await.seen[0].avail;
            assert!(refunded <= never_taken, "refund gave back more: {refunded} > {never_taken}");
            assert!(refunded >= before, "a refund took: {refunded} < {before}");
            if shape == Shape::Window {
                assert_eq!(refunded, never_taken);
            }
            let mut c = c;
            let _: () = c.del(&[&with, &without]).await.unwrap();
        });
    }

    /// Takes and a refund in any order never add up to more than the bucket allows: the grants
    /// that stand (the refunded take counting what it kept) conform to the bucket from the
    /// start. Naive GCRA refunds (`TAT − m·T`) fail this when the bucket refilled in between.
    #[test]
    fn takes_and_refunds_never_add_up_beyond_the_cap(
        shape in prop_oneof![Just(Shape::Window), Just(Shape::Rate)],
        capacity in 1u32..8, period_ms in 1u64..10_000,
        before in steps(), k in 1u64..8, mid in steps(), m_seed in 0u64..8, after in steps(),
    ) {
        RT.block_on(async {
            let c = conn().await;
            let b = Bucket { capacity, period: Duration::from_millis(period_ms), shape };
            let p = period_us(&b);
            let keys = vec![key("c")];
            let mut now = T0;
            let mut grants: Vec<(i64, u64)> = Vec::new();
            for (permille, n) in before {
                now += p * permille as i64 / 1000;
                grants.push((now, take_at(&c, &keys, &[b], n, now).await.taken));
            }
            let ours = take_at(&c, &keys, &[b], k, now).await;
            let at = now;
            let mut tail = Vec::new();
            for (permille, n) in mid {
                now += p * permille as i64 / 1000;
                tail.push((now, take_at(&c, &keys, &[b], n, now).await.taken));
            }
            let m = if ours.taken == 0 { 0 } else { m_seed % ours.taken + 1 };
            if m > 0 {
                refund_at(&c, &keys, &[b], &ours, m, now).await;
            }
            grants.push((at, ours.taken - m));
            grants.extend(tail);
            for (permille, n) in after {
                now += p * permille as i64 / 1000;
                grants.push((now, take_at(&c, &keys, &[b], n, now).await.taken));
            }
            conforms(&b, &grants);
            let mut c = c;
            let _: () = c.del(&keys).await.unwrap();
        });
    }
}

/// Panics unless `grants` ((time, count), in time order) is a history the bucket allows from
/// empty: at most `capacity` in any period (window), or an exact GCRA that never runs dry (rate,
/// in units of µs × capacity so that the emission interval is an integer).
fn conforms(b: &Bucket, grants: &[(i64, u64)]) {
    let (p, cap) = (i128::from(period_us(b)), i128::from(b.capacity));
    match b.shape {
        Shape::Window => {
            for &(t, _) in grants {
                let within: u64 = grants
                    .iter()
                    .filter(|&&(u, _)| u > t - p as i64 && u <= t)
                    .map(|&(_, g)| g)
                    .sum();
                assert!(
                    within <= u64::from(b.capacity),
                    "{within} grants in a period: {grants:?}"
                );
            }
        }
        Shape::Rate => {
            let mut tat: i128 = 0;
            for &(t, g) in grants {
                let now = i128::from(t) * cap;
                let base = tat.max(now);
                let after = base + i128::from(g) * p;
                assert!(after <= now + p * cap, "{g} at {t} overdraws: {grants:?}");
                if g > 0 {
                    tat = after;
                }
            }
        }
    }
}

#[test]
fn every_key_of_a_take_must_have_room_or_none_is_taken() {
    RT.block_on(async {
        let c = conn().await;
        let day = Duration::from_secs(86_400);
        let (a, r) = (Bucket::window(2, day), Bucket::rate(5, day));
        let keys = vec![key("a"), key("b")];
        let t = take_at(&c, &keys, &[a, r], 4, T0).await;
        assert_eq!(t.taken, 2, "the window's 2 bound the take");
        assert_eq!((t.seen[0].avail, t.seen[1].avail), (2, 5));
        let t = take_at(&c, &keys, &[a, r], 1, T0 + 1).await;
        assert_eq!(t.taken, 0);
        // The rate bucket kept its 3 tokens: nothing is written on a deny.
        let t = take_at(&c, &keys[1..], &[r], 0, T0 + 1).await;
        assert_eq!(t.seen[0].avail, 3);
        let mut c = c;
        let _: () = c.del(&keys).await.unwrap();
    });
}

#[test]
fn a_quiet_take_answers_a_full_grant_with_its_count_alone() {
    RT.block_on(async {
        let c = conn().await;
        let b = [Bucket::window(2, Duration::from_secs(60))];
        let keys = vec![key("q")];
        let quiet = |n: u64, now: i64| {
            let mut call = take_call(keys.clone(), &b, n, true);
            call.lua = &TAKE_AT;
            call.args.push(Arg::Int(now));
            call
        };
        let replies = run(&c, &[quiet(1, T0)]).await.unwrap();
        assert_eq!(replies[0], redis::Value::Int(1));
        let t = parse_take(&replies[0], 1).unwrap();
        assert_eq!((t.taken, t.seen.len()), (1, 0));
        // Short of what it asked: the full answer, with the live entries for the dues.
        let replies = run(&c, &[quiet(2, T0 + 1)]).await.unwrap();
        let t = parse_take(&replies[0], 1).unwrap();
        assert_eq!(t.taken, 1);
        assert_eq!(t.seen[0].live, vec![T0]);
        let mut c = c;
        let _: () = c.del(&keys).await.unwrap();
    });
}

#[test]
fn a_script_redis_does_not_know_is_loaded_and_sent_again() {
    RT.block_on(async {
        let c = conn().await;
        // Sources no one loaded: the EVALSHAs answer NOSCRIPT, one SCRIPT LOAD each fixes that.
        let fresh = |answer: i64| -> &'static Lua {
            Box::leak(Box::new(Lua::new(&format!(
                "-- {}\nreturn {answer}",
                uuid::Uuid::new_v4()
            ))))
        };
        let (one, two) = (fresh(1), fresh(2));
        let call = |lua: &'static Lua, key: &str| crate::script::Call {
            lua,
            keys: vec![key.to_owned()],
            args: vec![],
        };
        let replies = run(
            &c,
            &[call(one, "{a}x"), call(two, "{b}y"), call(one, "{c}z")],
        )
        .await
        .expect("loaded and run");
        use redis::Value::Int;
        assert_eq!(replies, vec![Int(1), Int(2), Int(1)]);
        let mut raw = c.clone();
        let known: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(one.script.get_hash())
            .arg(two.script.get_hash())
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(known, vec![true, true]);
        run(&c, &[call(two, "{a}x")]).await.expect("EVALSHA now");
    });
}
