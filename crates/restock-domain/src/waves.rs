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
        }
    }

    /// Time between the start of one wave and the next.
    pub fn interval(&self) -> Duration {
        match self {
            Self::Immediate => Duration::ZERO,
            Self::Staged { interval, .. } | Self::Proportional { interval, .. } => *interval,
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
        Strategy::Proportional { factor, .. } => {
            let size = ((available as f64) * factor)
                .floor()
                .clamp(1.0, f64::from(u32::MAX)) as u32;
            next.saturating_add(size - 1).min(plan_size)
        }
    };
    Step::Open(Span { first: next, last })
}

/// Whether the stock sells faster than the plan expects, so the next wave should wait an
/// interval more: more than half of what was there when the previous wave opened is gone.
/// Those already texted get their chance at what is left before more people are told.
pub fn selling_fast(available_before_previous: Option<i64>, available_now: i64) -> bool {
    available_before_previous.is_some_and(|before| available_now * 2 < before)
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

    #[test]
    fn fast_sales_hold_the_next_wave() {
        assert!(selling_fast(Some(10), 4));
        assert!(!selling_fast(Some(10), 5));
        assert!(!selling_fast(None, 0));
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
