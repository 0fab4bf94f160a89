//! Buckets: how much one scope may take, and the arithmetic the Lua scripts and the answers share.
//!
//! All times are integer microseconds of Redis's clock (`TIME`), never the client's. Two shapes:
//!
//! **Window**: at most `capacity` grants in any `period` (a sliding window, exact). The key is a
//! list of the last `capacity` grant times, newest first. At `now` the entries later than
//! `now − period` are live; a take of `k` is granted when `live + k ≤ capacity` and pushes `k`
//! copies of `now`. The `j`-th token still missing frees when the `j`-th oldest live entry turns
//! `period` old. The key expires `period` after its newest entry, when the window is empty again.
//! 3 per 24 h: grants at t, t, t; the fourth may go at t + 24 h. Memory is one timestamp per
//! grant still remembered, so the capacity is at most [`MAX_WINDOW_CAPACITY`]. It is the shape
//! for caps that are promises: a phone's "3 texts per 24 h", a provider's "30 per second".
//!
//! **Rate**: GCRA, the virtual-scheduling form of a token bucket of `capacity` tokens refilled
//! at `capacity / period`. With the emission interval `T = period / capacity`, the state is one
//! number, the theoretical arrival time `TAT`. At `now`, with `base = max(TAT, now)`, the bucket
//! holds `floor((now + period − base) / T)` tokens; taking `k` sets `TAT = base + k·T` (rounded
//! up to the microsecond, so rounding only ever delays). The `j`-th missing token is due at
//! `base − period + j·T`. `TAT ≤ now` means full, so the key expires at `TAT`. 3 per 24 h:
//! grants at t, t, t leave `TAT = t + 24 h`; the fourth is due at t + 8 h. A burst of `capacity`
//! then `capacity` per `period` on average, so a window of one `period` may hold up to
//! `2·capacity − 1` grants: use it for large budgets (a tenant's day), where a log would be too big.
//! The script checks `k·period ≤ (now + period − base)·capacity` on integers, which is exact
//! while `(capacity + 1) · period` stays below 2^53 (Lua's numbers are doubles): the validation
//! below.

use std::time::Duration;

/// Largest capacity of a [`Shape::Window`] bucket: the log holds one timestamp per token.
pub const MAX_WINDOW_CAPACITY: u32 = 10_000;
/// Longest period of any bucket: caps are about days and seconds, not years.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);
/// Largest `(capacity + 1) × period` (in µs) of a [`Shape::Rate`] bucket: 2^53, the largest
/// integer Lua's doubles hold exactly (the `+ 1` leaves room for the script's rounding check).
const MAX_RATE_PRODUCT: u128 = 1 << 53;

/// How a bucket counts; see the module header for the math of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// At most `capacity` in any `period`: exact sliding window.
    Window,
    /// GCRA token bucket: bursts of `capacity`, refilled at `capacity / period`.
    Rate,
}

/// A cap: `capacity` grants per `period`, counted as its [`Shape`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub capacity: u32,
    pub period: Duration,
    pub shape: Shape,
}

impl Bucket {
    /// At most `capacity` grants in any `period` (e.g. 3 texts per 24 h to one phone).
    pub const fn window(capacity: u32, period: Duration) -> Self {
        Self {
            capacity,
            period,
            shape: Shape::Window,
        }
    }

    /// A token bucket (GCRA) of `capacity`, refilled at `capacity / period` (e.g. a tenant's
    /// 100,000 texts per day).
    pub const fn rate(capacity: u32, period: Duration) -> Self {
        Self {
            capacity,
            period,
            shape: Shape::Rate,
        }
    }

    pub(crate) fn period_us(&self) -> i64 {
        // Bounded by MAX_PERIOD once validated.
        self.period.as_micros() as i64
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.capacity == 0 {
            return Err(format!("{self:?}: capacity must be at least 1"));
        }
        if self.period < Duration::from_millis(1) || self.period > MAX_PERIOD {
            return Err(format!(
                "{self:?}: period must be between 1 ms and 366 days"
            ));
        }
        match self.shape {
            Shape::Window if self.capacity > MAX_WINDOW_CAPACITY => Err(format!(
                "{self:?}: a window holds at most {MAX_WINDOW_CAPACITY}; use Bucket::rate"
            )),
            Shape::Rate
                if (u128::from(self.capacity) + 1) * self.period.as_micros() > MAX_RATE_PRODUCT =>
            {
                Err(format!(
                    "{self:?}: (capacity + 1) × period in µs must stay below 2^53 \
                     (about 104,000 per day); use a shorter period"
                ))
            }
            _ => Ok(()),
        }
    }

    /// When the `j`-th token (1-based) after the ones a take left is due, in µs of Redis's
    /// clock; at most `now` when it is there already. `seen` is what the take script reported
    /// for this bucket and `taken` how many it took.
    pub(crate) fn due(&self, seen: &Seen, taken: u64, j: u64, now: i64) -> i64 {
        let period = i128::from(self.period_us());
        let capacity = i128::from(self.capacity);
        let j = i128::from(j.max(1));
        let due = match self.shape {
            Shape::Rate => i128::from(seen.stamp) - period + ceil_div(j * period, capacity),
            Shape::Window => {
                // The `capacity` slots in the order they free: the free ones (free since at
                // least `at − period`), the live entries oldest first, then this take's.
                let live = seen.live.len() as i128;
                let free = (capacity - live - i128::from(taken)).max(0);
                let slot = (j - 1) % capacity;
                let round = (j - 1) / capacity;
                let at = i128::from(seen.stamp);
                let since = if slot < free {
                    at - period
                } else if slot < free + live {
                    let oldest_first = (slot - free) as usize;
                    i128::from(seen.live[seen.live.len() - 1 - oldest_first])
                } else {
                    at
                };
                since + period * (round + 1)
            }
        };
        (due.max(i128::from(now))).min(i128::from(i64::MAX)) as i64
    }
}

/// One bucket as a take script saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Tokens there before the take.
    pub avail: u64,
    /// Rate: `TAT` after the take (`base` when nothing was taken). Window: the time the take
    /// stamped (Redis's `now`, or the newest entry if the clock stepped back).
    pub stamp: i64,
    /// Window, on a partial take or a peek: the live entries before the take, newest first.
    pub live: Vec<i64>,
}

fn ceil_div(a: i128, b: i128) -> i128 {
    (a + b - 1).div_euclid(b)
}

/// `ceil(n·period / capacity)` in µs: the time `n` tokens of a rate bucket stand for, rounded
/// the way a take rounds.
pub(crate) fn rate_span_ceil(bucket: &Bucket, n: u64) -> i64 {
    ceil_div(
        i128::from(n) * i128::from(bucket.period_us()),
        i128::from(bucket.capacity),
    ) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000_000;
    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// Tokens a rate bucket whose TAT is `tat` has handed out or holds by `t`, if every one is
    /// taken as soon as it is there: the supply `due` inverts.
    fn supply(bucket: &Bucket, tat: i64, t: i64) -> u64 {
        let p = i128::from(bucket.period_us());
        let room = i128::from(t) + p - i128::from(tat);
        (room.max(0) * i128::from(bucket.capacity) / p) as u64
    }

    #[test]
    fn three_per_day_rate_frees_a_token_every_eight_hours() {
        let b = Bucket::rate(3, DAY);
        let now = 1_000 * HOUR;
        // Three taken from a full bucket: TAT = now + 24 h.
        let seen = Seen {
            avail: 3,
            stamp: now + 24 * HOUR,
            live: vec![],
        };
        assert_eq!(b.due(&seen, 3, 1, now), now + 8 * HOUR);
        assert_eq!(b.due(&seen, 3, 2, now), now + 16 * HOUR);
        assert_eq!(b.due(&seen, 3, 4, now), now + 32 * HOUR);
    }

    #[test]
    fn three_per_day_window_frees_a_slot_a_day_after_each_grant() {
        let b = Bucket::window(3, DAY);
        let now = 1_000 * HOUR;
        // Grants at now−5h and now−1h are live; this take added one at `now`.
        let seen = Seen {
            avail: 1,
            stamp: now,
            live: vec![now - HOUR, now - 5 * HOUR],
        };
        assert_eq!(b.due(&seen, 1, 1, now), now - 5 * HOUR + 24 * HOUR);
        assert_eq!(b.due(&seen, 1, 2, now), now - HOUR + 24 * HOUR);
        assert_eq!(b.due(&seen, 1, 3, now), now + 24 * HOUR);
        assert_eq!(b.due(&seen, 1, 4, now), now - 5 * HOUR + 48 * HOUR);
        // Nothing taken and one slot free: the first token is there now.
        let seen = Seen {
            avail: 1,
            stamp: now,
            live: vec![now - HOUR, now - 5 * HOUR],
        };
        assert_eq!(b.due(&seen, 0, 1, now), now);
        assert_eq!(b.due(&seen, 0, 2, now), now + 19 * HOUR);
    }

    #[test]
    fn validation_refuses_buckets_the_script_cannot_count_exactly() {
        assert!(Bucket::window(0, DAY).validate().is_err());
        assert!(Bucket::window(3, Duration::ZERO).validate().is_err());
        assert!(Bucket::window(MAX_WINDOW_CAPACITY + 1, DAY)
            .validate()
            .is_err());
        assert!(Bucket::rate(104_248, DAY).validate().is_ok());
        assert!(Bucket::rate(104_249, DAY).validate().is_err());
        assert!(Bucket::rate(u32::MAX - 1, Duration::from_secs(1))
            .validate()
            .is_ok());
        assert!(Bucket::window(3, MAX_PERIOD + Duration::from_secs(1))
            .validate()
            .is_err());
    }

    proptest! {
        /// `due(j)` is the first microsecond by which the rate bucket has supplied `j` tokens.
        #[test]
        fn rate_due_is_the_first_instant_with_enough_tokens(
            capacity in 1u32..1_000,
            period_ms in 1u64..100_000_000,
            ahead in 0i64..2_000_000,
            taken in 0u64..50,
            j in 1u64..5_000,
        ) {
            let b = Bucket::rate(capacity, Duration::from_millis(period_ms));
            prop_assume!(b.validate().is_ok());
            let now = 1_700_000_000_000_000i64;
            let tat = now + ahead.min(b.period_us());
            let seen = Seen { avail: supply(&b, tat, now), stamp: tat, live: vec![] };
            let due = b.due(&seen, taken, j, now);
            if due > now {
                prop_assert!(supply(&b, tat, due) >= j);
                prop_assert!(supply(&b, tat, due - 1) < j);
            } else {
                prop_assert!(supply(&b, tat, now) >= j);
            }
        }

        /// On a full window the dues never go back in time and the first `capacity` are each a
        /// period after the grant whose slot they take.
        #[test]
        fn window_dues_follow_the_oldest_grants(
            capacity in 1u32..50,
            mut live in proptest::collection::vec(0i64..86_400_000_000, 0..50),
            j in 1u64..200,
        ) {
            let b = Bucket::window(capacity, DAY);
            let now = 86_400_000_000i64 * 10;
            live.truncate(capacity as usize);
            let mut live: Vec<i64> = live.into_iter().map(|x| now - x).collect();
            live.sort_unstable_by(|a, b| b.cmp(a));
            let taken = u64::from(capacity) - live.len() as u64;
            let seen = Seen { avail: taken, stamp: now, live: live.clone() };
            let a = b.due(&seen, taken, j, now);
            let c = b.due(&seen, taken, j + 1, now);
            prop_assert!(a <= c);
            prop_assert!(a > now);
            let oldest_first: Vec<i64> = live.iter().rev().copied()
                .chain(std::iter::repeat_n(now, taken as usize)).collect();
            if j <= u64::from(capacity) {
                prop_assert_eq!(a, oldest_first[j as usize - 1] + b.period_us());
            }
        }
    }
}
