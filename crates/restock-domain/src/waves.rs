//! Waves: how a release spreads its texts. The plan numbers the texts 1..n in send order
//! (priority tier, then waitlist order); each wave opens the next range of them. Pure, so the
//! arithmetic of shares, stock and pacing can be read and tested on its own.

use std::time::Duration;

use crate::tenant::ReleaseStrategy;

/// A release's strategy with its parameters, as fixed when it was planned.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Immediate,
    Staged {
        shares_bps: Vec<u32>,
        interval: Duration,
    },
    Proportional {
        factor: f64,
        interval: Duration,
    },
    /// The seed's waves: a first share of the list, then each next wave sized from the live
    /// stock, opening as soon as the previous one's demand is absorbed (see [`absorbed`]) or
    /// its interval passes, whichever is first.
    SellThrough {
        first_share_bps: u32,
        absorbed_share_bps: u32,
        factor: f64,
        interval: Duration,
    },
}

impl Strategy {
    /// The strategy a tenant's policy asks for.
    pub fn of(policy: &crate::TenantPolicy) -> Self {
        let interval = Duration::from_secs(policy.wave_interval_seconds.into());
        match policy.release_strategy {
            ReleaseStrategy::Immediate => Self::Immediate,
            ReleaseStrategy::Staged => Self::Staged {
                shares_bps: policy.stage_shares_bps.clone(),
                interval,
            },
            ReleaseStrategy::Proportional => Self::Proportional {
                factor: policy.oversubscription_factor,
                interval,
            },
            ReleaseStrategy::SellThrough => Self::SellThrough {
                first_share_bps: policy.first_wave_share_bps,
                absorbed_share_bps: policy.sell_through_share_bps,
                factor: policy.oversubscription_factor,
                interval,
            },
        }
    }

    /// Time between the start of one wave and the next.
    pub fn interval(&self) -> Duration {
        match self {
            Self::Immediate => Duration::ZERO,
            Self::Staged { interval, .. }
            | Self::Proportional { interval, .. }
            | Self::SellThrough { interval, .. } => *interval,
        }
    }
}

/// The texts one wave opens: positions `first..=last` of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u32,
    pub last: u32,
}

/// What to do when wave `number` (1-based) is due, with `next` the first position not yet
/// opened, `plan_size` the texts in the plan, and `available` the live stock just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open this range.
    Open(Span),
    /// Stock fell below the threshold: end the release as sold out.
    SoldOut,
    /// Every text is in an open wave: nothing left to open.
    Done,
}

/// Decides the next wave.
///
/// STAGED shares are of the whole plan, rounded so the waves add up exactly (the last wave
/// takes what rounding left). PROPORTIONAL opens at most `available × factor` texts (at least
/// one), so a release of 3 units to 1,000 subscribers texts 4 or 5 people per wave, not 1,000.
pub fn next_step(
    strategy: &Strategy,
    number: u32,
    next: u32,
    plan_size: u32,
    available: i64,
    threshold: i64,
) -> Step {
    if next > plan_size {
        return Step::Done;
    }
    if available < threshold.max(1) {
        return Step::SoldOut;
    }
    let last = match strategy {
        Strategy::Immediate => plan_size,
        Strategy::Staged { shares_bps, .. } => {
            let waves = shares_bps.len() as u32;
            if number >= waves {
                plan_size
            } else {
                let through: u64 = shares_bps[..number as usize]
                    .iter()
                    .map(|&s| u64::from(s))
                    .sum();
                let end = (u64::from(plan_size) * through / 10_000) as u32;
                // A tiny plan can round a share to nothing; such a wave opens nothing new but
                // still counts, so the schedule stays the one announced.
                end.max(next.saturating_sub(1))
            }
        }
        Strategy::Proportional { factor, .. } => next
            .saturating_add(stock_sized(available, *factor) - 1)
            .min(plan_size),
        Strategy::SellThrough {
            first_share_bps,
            factor,
            ..
        } => {
            let size = if number == 1 {
                // A share of the list (rounded up, so a small list still gets its first text),
                // but never more than the stock can answer.
                let share = (u64::from(plan_size) * u64::from(*first_share_bps)).div_ceil(10_000);
                (share.max(1) as u32).min(stock_sized(available, *factor))
            } else {
                stock_sized(available, *factor)
            };
            next.saturating_add(size - 1).min(plan_size)
        }
    };
    Step::Open(Span { first: next, last })
}

/// Recipients a wave sized from the stock holds: `available × factor`, at least one.
fn stock_sized(available: i64, factor: f64) -> u32 {
    ((available as f64) * factor)
        .floor()
        .clamp(1.0, f64::from(u32::MAX)) as u32
}

/// How the previous wave is doing, as a sell-through release reads it before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveProgress {
    /// Texts the wave opened.
    pub texts: u32,
    /// Units its recipients bought since it opened (purchases attributed to its texts).
    pub bought: i64,
    /// Units available when it opened.
    pub available_before: i64,
    /// Units available now.
    pub available_now: i64,
}

impl WaveProgress {
    /// Units that went since the wave opened, to anyone.
    pub fn sold(&self) -> i64 {
        (self.available_before - self.available_now).max(0)
    }
}

/// Whether a sell-through release's previous wave has absorbed its demand, so the next may
/// open before its interval: its recipients bought, or the stock fell by, at least the tenant's
/// share of the wave's texts (rounded up, at least one unit). Other strategies open on their
/// schedule only.
pub fn absorbed(strategy: &Strategy, p: &WaveProgress) -> bool {
    let Strategy::SellThrough {
        absorbed_share_bps, ..
    } = strategy
    else {
        return false;
    };
    let need = (u64::from(p.texts) * u64::from(*absorbed_share_bps))
        .div_ceil(10_000)
        .max(1) as i64;
    p.bought >= need || p.sold() >= need
}

/// Whether the next wave should wait an interval more because stock falls faster than the plan
/// expects: more than half of what was there when the previous wave opened is gone, so those
/// already texted get their chance at what is left before more people are told. A sell-through
/// release expects its own recipients to buy: it waits only when most of what went, went to
/// others (its recipients bought less than half of it).
pub fn hold(strategy: &Strategy, previous: Option<WaveProgress>) -> bool {
    let Some(p) = previous else {
        return false;
    };
    let fast = p.available_now * 2 < p.available_before;
    match strategy {
        Strategy::SellThrough { .. } => fast && p.bought * 2 < p.sold(),
        _ => fast,
    }
}

/// The delay before retry `attempt` (1 = the first retry): exponential from `base`, at most
/// `max`, with full jitter (`unit` in [0, 1) from the caller's randomness), so a provider outage
/// does not end in every worker retrying in step.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    // At least a tenth of the step, so a retry never comes back at once.
    cap.mul_f64(0.1 + 0.9 * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(shares: &[u32]) -> Strategy {
        Strategy::Staged {
            shares_bps: shares.to_vec(),
            interval: Duration::from_secs(60),
        }
    }

    fn open(step: Step) -> (u32, u32) {
        match step {
            Step::Open(s) => (s.first, s.last),
            other => panic!("expected a wave, got {other:?}"),
        }
    }

    #[test]
    fn immediate_opens_everyone_at_once() {
        assert_eq!(
            open(next_step(&Strategy::Immediate, 1, 1, 2000, 5, 1)),
            (1, 2000)
        );
        assert_eq!(
            next_step(&Strategy::Immediate, 2, 2001, 2000, 5, 1),
            Step::Done
        );
    }

    #[test]
    fn staged_shares_add_up_exactly() {
        let s = staged(&[3000, 3000, 4000]);
        assert_eq!(open(next_step(&s, 1, 1, 1001, 10, 1)), (1, 300));
        assert_eq!(open(next_step(&s, 2, 301, 1001, 10, 1)), (301, 600));
        assert_eq!(open(next_step(&s, 3, 601, 1001, 10, 1)), (601, 1001));
        assert_eq!(next_step(&s, 4, 1002, 1001, 10, 1), Step::Done);
    }

    #[test]
    fn staged_shares_cover_every_position_once_for_any_size() {
        let s = staged(&[1000, 2500, 2500, 4000]);
        for n in 0..300u32 {
            let (mut next, mut wave, mut seen) = (1, 1, 0);
            loop {
                match next_step(&s, wave, next, n, 5, 1) {
                    Step::Open(span) => {
                        seen += span.last + 1 - span.first;
                        next = span.last + 1;
                        wave += 1;
                    }
                    Step::Done => break,
                    Step::SoldOut => unreachable!(),
                }
                assert!(wave <= 5, "{n}: too many waves");
            }
            assert_eq!(seen, n);
        }
    }

    #[test]
    fn proportional_follows_the_stock() {
        let p = Strategy::Proportional {
            factor: 1.5,
            interval: Duration::from_secs(60),
        };
        assert_eq!(open(next_step(&p, 1, 1, 1000, 3, 1)), (1, 4));
        assert_eq!(open(next_step(&p, 2, 5, 1000, 1, 1)), (5, 5));
        assert_eq!(open(next_step(&p, 3, 999, 1000, 100, 1)), (999, 1000));
    }

    #[test]
    fn below_the_threshold_is_sold_out() {
        assert_eq!(
            next_step(&Strategy::Immediate, 1, 1, 10, 0, 1),
            Step::SoldOut
        );
        assert_eq!(
            next_step(&staged(&[5000, 5000]), 2, 6, 10, 2, 3),
            Step::SoldOut
        );
    }

    fn progress(texts: u32, bought: i64, before: i64, now: i64) -> Option<WaveProgress> {
        Some(WaveProgress {
            texts,
            bought,
            available_before: before,
            available_now: now,
        })
    }

    fn sell_through() -> Strategy {
        Strategy::SellThrough {
            first_share_bps: 3000,
            absorbed_share_bps: 2000,
            factor: 2.0,
            interval: Duration::from_secs(600),
        }
    }

    #[test]
    fn fast_sales_hold_the_next_wave() {
        let s = staged(&[5000, 5000]);
        assert!(hold(&s, progress(5, 0, 10, 4)));
        assert!(!hold(&s, progress(5, 0, 10, 5)));
        assert!(!hold(&s, None));
    }

    #[test]
    fn sell_through_opens_with_a_share_of_the_list_bounded_by_the_stock() {
        let s = sell_through();
        // 30% of 100 is 30, and 20 units × 2 allow 40.
        assert_eq!(open(next_step(&s, 1, 1, 100, 20, 1)), (1, 30));
        // 3 units × 2: six texts, not thirty.
        assert_eq!(open(next_step(&s, 1, 1, 100, 3, 1)), (1, 6));
        // 30% of 1 rounds up to the one subscriber.
        assert_eq!(open(next_step(&s, 1, 1, 1, 3, 1)), (1, 1));
        // Later waves follow the live stock.
        assert_eq!(open(next_step(&s, 2, 31, 100, 4, 1)), (31, 38));
        assert_eq!(open(next_step(&s, 3, 99, 100, 50, 1)), (99, 100));
        assert_eq!(next_step(&s, 2, 31, 100, 0, 1), Step::SoldOut);
    }

    #[test]
    fn sell_through_opens_early_once_the_wave_s_demand_is_absorbed() {
        let s = sell_through();
        // 30 texts at 20%: six units.
        assert!(!absorbed(&s, &progress(30, 5, 100, 100).unwrap()));
        assert!(absorbed(&s, &progress(30, 6, 100, 100).unwrap()));
        // Or the stock fell by six, whoever bought.
        assert!(absorbed(&s, &progress(30, 0, 100, 94).unwrap()));
        assert!(!absorbed(&s, &progress(30, 0, 100, 95).unwrap()));
        // A wave of one needs one unit.
        assert!(absorbed(&s, &progress(1, 1, 5, 5).unwrap()));
        // Only sell-through opens early.
        assert!(!absorbed(
            &staged(&[5000, 5000]),
            &progress(30, 30, 100, 0).unwrap()
        ));
    }

    #[test]
    fn sell_through_waits_when_the_stock_goes_to_others_faster_than_its_texts_explain() {
        let s = sell_through();
        // Nine of ten units gone, the wave's recipients bought one: others are buying it away.
        assert!(hold(&s, progress(20, 1, 10, 1)));
        // The recipients bought most of it: that is the demand the wave was for.
        assert!(!hold(&s, progress(20, 6, 10, 1)));
        // Half gone or less: no hold.
        assert!(!hold(&s, progress(20, 0, 10, 5)));
    }

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, 1.0), max);
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_millis(100));
    }
}
