//! Report arithmetic: ratios that keep their parts, the lift of the texted group over the
//! holdout with Newcombe's hybrid score interval, incremental conversions and revenue, and
//! percentiles of durations. Pure, so every figure a report shows can be checked by hand.

use std::time::Duration;

/// The normal quantile of a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Fewest members a group needs before a lift may be called significant. Below this the normal
/// approximations behind any interval are too rough to act on, whatever the interval says.
pub const MIN_GROUP_SIZE: u64 = 30;

/// Provider error codes on an undelivered text that mean the carrier or the recipient refused
/// it as unwanted: Twilio 30004 (message blocked) and 30007 (filtered by the carrier, as spam).
/// Counted as complaints against the text.
pub const COMPLAINT_ERROR_CODES: [&str; 2] = ["30004", "30007"];

/// Where an order was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PurchaseChannel {
    /// In a session a text's tracked link opened: the text had the last click.
    SmsLink,
    Web,
    Store,
    App,
    #[default]
    Unknown,
}

crate::consent::str_enum!(PurchaseChannel {
    SmsLink => "sms_link",
    Web => "web",
    Store => "store",
    App => "app",
    Unknown => "unknown",
});

/// `part / whole × 1,000`: a rate per thousand (texts); `None` over nothing.
pub fn per_thousand(r: Ratio) -> Option<f64> {
    r.value().map(|v| v * 1_000.0)
}

/// What `segments` cost at `price_milli_minor` thousandths of a minor unit each, in minor
/// units, rounded half away from zero. Saturates rather than wraps on absurd inputs.
pub fn segment_cost_minor(segments: u64, price_milli_minor: u64) -> i64 {
    let milli = u128::from(segments) * u128::from(price_milli_minor);
    i64::try_from((milli + 500) / 1_000).unwrap_or(i64::MAX)
}

/// A proportion with its parts, so a caller can add ratios up across reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub numerator: u64,
    pub denominator: u64,
}

impl Ratio {
    pub fn new(numerator: u64, denominator: u64) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    /// numerator / denominator; `None` when the denominator is 0 (not 0: nothing was measured).
    pub fn value(&self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64)
    }
}

/// A closed interval of real numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

impl Interval {
    /// Whether zero lies in the interval (bounds included).
    pub fn spans_zero(&self) -> bool {
        self.lower <= 0.0 && self.upper >= 0.0
    }

    fn scale(&self, k: f64) -> Interval {
        let (a, b) = (self.lower * k, self.upper * k);
        Interval {
            lower: a.min(b),
            upper: a.max(b),
        }
    }
}

/// Wilson's score interval (without continuity correction) of `successes / trials` at normal
/// quantile `z`; `None` for no trials.
pub fn wilson(successes: u64, trials: u64, z: f64) -> Option<Interval> {
    if trials == 0 || successes > trials {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        lower: (centre - half).max(0.0),
        upper: (centre + half).min(1.0),
    })
}

/// Why no lift can be estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLift {
    /// No recipient was assigned to be texted.
    NoTreatment,
    /// Nobody was held out: there is nothing to compare with.
    NoHoldout,
}

/// The texted group's conversion rate minus the holdout's, with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lift {
    pub treatment: Ratio,
    pub holdout: Ratio,
    /// treatment rate - holdout rate, in fraction points.
    pub difference: f64,
    /// Newcombe's hybrid score interval of `difference` (method 10 of Newcombe 1998).
    pub interval: Interval,
    /// True only when the interval excludes zero, both groups have at least
    /// [`MIN_GROUP_SIZE`] members and at least one of them converted.
    pub significant: bool,
    /// Conversions the texts added: difference × treatment size.
    pub incremental_conversions: f64,
    /// The interval of `incremental_conversions`: the difference's interval × treatment size.
    pub incremental_interval: Interval,
}

/// The lift of `treatment` over `holdout` (each conversions / members).
///
/// The interval is Newcombe's hybrid score interval (Newcombe, Statistics in Medicine 1998,
/// method 10): with Wilson intervals (l1, u1) and (l2, u2) of the two rates p1 and p2,
/// `[d - sqrt((p1-l1)² + (u2-p2)²), d + sqrt((u1-p1)² + (p2-l2)²)]` where d = p1 - p2. Unlike the
/// Wald interval it stays within [-1, 1] and behaves at rates near 0, which conversion rates are.
pub fn lift(treatment: Ratio, holdout: Ratio) -> Result<Lift, NoLift> {
    let Some(w1) = wilson(treatment.numerator, treatment.denominator, Z_95) else {
        return Err(NoLift::NoTreatment);
    };
    let Some(w2) = wilson(holdout.numerator, holdout.denominator, Z_95) else {
        return Err(NoLift::NoHoldout);
    };
    let p1 = treatment.value().expect("a non-empty group");
    let p2 = holdout.value().expect("a non-empty group");
    let difference = p1 - p2;
    let interval = Interval {
        lower: difference - ((p1 - w1.lower).powi(2) + (w2.upper - p2).powi(2)).sqrt(),
        upper: difference + ((w1.upper - p1).powi(2) + (p2 - w2.lower).powi(2)).sqrt(),
    };
    let big_enough =
        treatment.denominator >= MIN_GROUP_SIZE && holdout.denominator >= MIN_GROUP_SIZE;
    let any_conversion = treatment.numerator + holdout.numerator > 0;
    let size = treatment.denominator as f64;
    Ok(Lift {
        treatment,
        holdout,
        difference,
        interval,
        significant: big_enough && any_conversion && !interval.spans_zero(),
        incremental_conversions: difference * size,
        incremental_interval: interval.scale(size),
    })
}

/// Revenue the texts added, in minor units of one currency, with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrementalRevenue {
    pub estimate: i64,
    pub lower: i64,
    pub upper: i64,
}

/// Incremental revenue in one currency: the texted group's mean revenue per conversion in that
/// currency (`revenue_minor / conversions`, conversions in every currency) times the
/// incremental conversions, and likewise for the interval's bounds. It assumes an added
/// conversion is worth what an average attributed one was; the holdout's spend is not used,
/// since a small holdout rarely has enough purchases to estimate it. Rounded half away from
/// zero. `None` without conversions to take a mean from.
pub fn incremental_revenue(
    lift: &Lift,
    revenue_minor: i64,
    conversions: u64,
) -> Option<IncrementalRevenue> {
    if conversions == 0 {
        return None;
    }
    let mean = revenue_minor as f64 / conversions as f64;
    let at = |x: f64| (x * mean).round() as i64;
    let (a, b) = (
        at(lift.incremental_interval.lower),
        at(lift.incremental_interval.upper),
    );
    Some(IncrementalRevenue {
        estimate: at(lift.incremental_conversions),
        lower: a.min(b),
        upper: a.max(b),
    })
}

/// The `p`-th percentile (0 < p ≤ 100) of `durations` by the nearest-rank method: the smallest
/// value with at least p% of the values at or below it, so the answer is always an observed
/// duration. `None` for no durations.
pub fn percentile(durations: &[Duration], p: f64) -> Option<Duration> {
    if durations.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median (nearest rank, so the lower middle value of an even count).
pub fn median(durations: &[Duration]) -> Option<Duration> {
    percentile(durations, 50.0)
}

/// The 90th percentile (nearest rank).
pub fn p90(durations: &[Duration]) -> Option<Duration> {
    percentile(durations, 90.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-5
    }

    fn assert_interval(lift: &Lift, lower: f64, upper: f64) {
        assert!(
            close(lift.interval.lower, lower) && close(lift.interval.upper, upper),
            "got ({:.4}, {:.4}), want ({lower}, {upper})",
            lift.interval.lower,
            lift.interval.upper
        );
    }

    #[test]
    fn segment_cost_rounds_thousandths_of_a_minor_unit_half_up() {
        // 1,000 segments at 0.79 cents: 790 cents.
        assert_eq!(segment_cost_minor(1_000, 790), 790);
        // 3 segments at 0.79 cents: 2.37 cents, rounded to 2; 0.5 rounds up.
        assert_eq!(segment_cost_minor(3, 790), 2);
        assert_eq!(segment_cost_minor(1, 500), 1);
        assert_eq!(segment_cost_minor(1, 499), 0);
        assert_eq!(segment_cost_minor(0, 790), 0);
        assert_eq!(segment_cost_minor(u64::MAX, u64::MAX), i64::MAX);
    }

    #[test]
    fn per_thousand_scales_a_ratio_and_has_no_value_over_nothing() {
        assert_eq!(per_thousand(Ratio::new(2, 4)), Some(500.0));
        assert_eq!(per_thousand(Ratio::new(0, 0)), None);
    }

    #[test]
    fn ratio_keeps_its_parts_and_has_no_value_over_nothing() {
        let r = Ratio::new(3, 4);
        assert_eq!((r.numerator, r.denominator), (3, 4));
        assert_eq!(r.value(), Some(0.75));
        assert_eq!(Ratio::new(0, 0).value(), None);
    }

    #[test]
    fn wilson_matches_hand_computation() {
        // 56/70: p = 0.8, z² = 3.8415; centre = (0.8 + 3.8415/140) / (1 + 3.8415/70) = 0.78427,
        // half = 1.96/1.05488 · sqrt(0.16/70 + 3.8415/19600) = 0.09256 (Newcombe, table I).
        let w = wilson(56, 70, Z_95).unwrap();
        assert!(close(w.lower, 0.6918) && close(w.upper, 0.8770), "{w:?}");
        // 0/10 is [0, z²/(n+z²)] = [0, 0.2775].
        let w = wilson(0, 10, Z_95).unwrap();
        assert_eq!(w.lower, 0.0);
        assert!(close(w.upper, 0.2775));
        assert_eq!(wilson(0, 0, Z_95), None);
    }

    /// The worked examples of Newcombe (1998), table II, method 10. (56/70 vs 48/80 is a
    /// difference of 0.2, not 0.1333; its interval is 0.0524 to 0.3339.)
    #[test]
    fn lift_interval_matches_newcombes_examples() {
        let l = lift(Ratio::new(56, 70), Ratio::new(48, 80)).unwrap();
        assert!(close(l.difference, 0.2));
        assert_interval(&l, 0.0524, 0.3339);
        assert!(l.significant);

        let l = lift(Ratio::new(9, 10), Ratio::new(3, 10)).unwrap();
        assert_interval(&l, 0.1705, 0.8090);
        // Excludes zero, but groups of 10 are below the floor.
        assert!(!l.significant);

        assert_interval(
            &lift(Ratio::new(6, 7), Ratio::new(2, 7)).unwrap(),
            0.0582,
            0.8062,
        );
        assert_interval(
            &lift(Ratio::new(5, 56), Ratio::new(0, 29)).unwrap(),
            -0.0381,
            0.1926,
        );
        assert_interval(
            &lift(Ratio::new(0, 10), Ratio::new(0, 20)).unwrap(),
            -0.1611,
            0.2775,
        );
        assert_interval(
            &lift(Ratio::new(0, 10), Ratio::new(0, 10)).unwrap(),
            -0.2775,
            0.2775,
        );
    }

    #[test]
    fn incremental_conversions_scale_the_difference_by_the_texted_group() {
        let l = lift(Ratio::new(56, 70), Ratio::new(48, 80)).unwrap();
        assert!(close(l.incremental_conversions, 14.0));
        assert!((l.incremental_interval.lower - 0.0524 * 70.0).abs() < 0.01);
        assert!((l.incremental_interval.upper - 0.3339 * 70.0).abs() < 0.01);
    }

    #[test]
    fn incremental_revenue_is_mean_revenue_per_conversion_times_incremental_conversions() {
        let l = lift(Ratio::new(56, 70), Ratio::new(48, 80)).unwrap();
        // 56 conversions worth 112,000 minor units: 2,000 each; 14 incremental → 28,000.
        let r = incremental_revenue(&l, 112_000, 56).unwrap();
        assert_eq!(r.estimate, 28_000);
        assert_eq!(
            r.lower,
            (l.incremental_interval.lower * 2_000.0).round() as i64
        );
        assert_eq!(
            r.upper,
            (l.incremental_interval.upper * 2_000.0).round() as i64
        );
        assert!(r.lower < r.estimate && r.estimate < r.upper);
        assert_eq!(incremental_revenue(&l, 0, 0), None);
    }

    #[test]
    fn negative_lift_gives_negative_incremental_revenue_with_ordered_bounds() {
        let l = lift(Ratio::new(48, 80), Ratio::new(56, 70)).unwrap();
        assert!(close(l.difference, -0.2));
        assert_interval(&l, -0.3339, -0.0524);
        let r = incremental_revenue(&l, 48_000, 48).unwrap();
        assert_eq!(r.estimate, -16_000);
        assert!(r.lower < r.estimate && r.estimate < r.upper && r.upper < 0);
    }

    #[test]
    fn no_sends_and_no_holdout_are_not_estimable() {
        assert_eq!(
            lift(Ratio::new(0, 0), Ratio::new(1, 40)),
            Err(NoLift::NoTreatment)
        );
        // All held out: the treatment group is empty.
        assert_eq!(
            lift(Ratio::new(0, 0), Ratio::new(0, 0)),
            Err(NoLift::NoTreatment)
        );
        assert_eq!(
            lift(Ratio::new(3, 40), Ratio::new(0, 0)),
            Err(NoLift::NoHoldout)
        );
    }

    #[test]
    fn no_conversions_at_all_is_never_significant() {
        let l = lift(Ratio::new(0, 5_000), Ratio::new(0, 5_000)).unwrap();
        assert_eq!(l.difference, 0.0);
        assert!(l.interval.spans_zero());
        assert!(!l.significant);
    }

    #[test]
    fn a_small_holdout_is_never_significant() {
        // A huge difference, but a holdout of 29.
        let l = lift(Ratio::new(900, 1_000), Ratio::new(0, 29)).unwrap();
        assert!(!l.interval.spans_zero());
        assert!(!l.significant);
        let l = lift(Ratio::new(900, 1_000), Ratio::new(0, 30)).unwrap();
        assert!(l.significant);
    }

    #[test]
    fn percentiles_are_observed_values_by_nearest_rank() {
        let s = |n: u64| Duration::from_secs(n);
        let d: Vec<Duration> = [5, 1, 4, 2, 3].into_iter().map(s).collect();
        assert_eq!(median(&d), Some(s(3)));
        assert_eq!(p90(&d), Some(s(5)));
        let d: Vec<Duration> = (1..=10).map(s).collect();
        assert_eq!(median(&d), Some(s(5)));
        assert_eq!(p90(&d), Some(s(9)));
        assert_eq!(median(&[s(7)]), Some(s(7)));
        assert_eq!(p90(&[s(7)]), Some(s(7)));
        assert_eq!(median(&[]), None);
    }
}
