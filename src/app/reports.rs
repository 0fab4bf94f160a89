//! Reports: a release's, a variant's or a period's figures read from the store and computed
//! into what the texts did (whether the attribution windows have closed, the lift over the
//! holdout and its interval, revenue per text and per subscriber, incremental revenue, time to
//! purchase, the texts' cost), under the tenant's windows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use restock_domain::report::{self, IncrementalRevenue, Lift, NoLift, Ratio};
use restock_domain::TenantPolicy;
use restock_store::reports::{CurrencyFigures, DayFigures, Figures, Scope};
use restock_store::StoreError;
use uuid::Uuid;

use crate::reporting;
use crate::state::AppState;

/// The figures of a scope and what they come to.
#[derive(Debug, Clone)]
pub struct Report {
    pub figures: Figures,
    pub computed_at: DateTime<Utc>,
    pub text_window: Duration,
    pub click_window: Duration,
    /// Whether the last text's attribution windows have all closed: the figures are final.
    pub windows_closed: bool,
    /// The texted group's conversion rate against the holdout's.
    pub lift: Result<Lift, NoLift>,
    /// Per currency of the figures, in their order.
    pub revenue: Vec<CurrencyReport>,
    pub time_to_purchase_median: Option<Duration>,
    pub time_to_purchase_p90: Option<Duration>,
    pub complaints_per_thousand_texts: Option<f64>,
    pub opt_outs_per_thousand_texts: Option<f64>,
    /// What the texts' segments cost (minor units, currency), if the tenant priced them.
    pub segment_cost: Option<(i64, String)>,
}

/// What the revenue in one currency comes to.
#[derive(Debug, Clone)]
pub struct CurrencyReport {
    pub figures: CurrencyFigures,
    /// Revenue per text sent, per recipient (minor units); none over none.
    pub per_text_minor: Option<i64>,
    pub per_subscriber_minor: Option<i64>,
    /// Revenue the texts added, with a lift to estimate it from.
    pub incremental: Option<IncrementalRevenue>,
}

/// What figures come to at `now`: pure, so the computations are unit-tested apart.
pub fn compute(
    f: &Figures,
    now: DateTime<Utc>,
    text_window: Duration,
    click_window: Duration,
) -> Report {
    let last_window = text_window.max(click_window);
    let windows_closed = f
        .last_sent_at
        .is_some_and(|t| chrono::Duration::from_std(last_window).is_ok_and(|w| t + w <= now));
    let lift = report::lift(
        Ratio::new(f.treatment_conversions, f.recipient_count),
        Ratio::new(f.holdout_conversions, f.held_out_count),
    );
    let revenue = f
        .currencies
        .iter()
        .map(|c| {
            let per = |n: u64| (n > 0).then(|| (c.revenue_minor as f64 / n as f64).round() as i64);
            CurrencyReport {
                figures: c.clone(),
                per_text_minor: per(f.sent_count),
                per_subscriber_minor: per(f.recipient_count),
                incremental: lift.as_ref().ok().and_then(|l| {
                    report::incremental_revenue(l, c.revenue_minor, f.conversion_count)
                }),
            }
        })
        .collect();
    Report {
        figures: f.clone(),
        computed_at: now,
        text_window,
        click_window,
        windows_closed,
        lift,
        revenue,
        time_to_purchase_median: report::median(&f.times_to_purchase),
        time_to_purchase_p90: report::p90(&f.times_to_purchase),
        complaints_per_thousand_texts: report::per_thousand(Ratio::new(
            f.complaint_count,
            f.sent_count,
        )),
        opt_outs_per_thousand_texts: report::per_thousand(Ratio::new(
            f.opt_out_count,
            f.sent_count,
        )),
        segment_cost: None,
    }
}

/// Why a report cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("release \"{0}\" not found")]
    ReleaseNotFound(Uuid),
}

/// The report of one release.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, release_id = %release_id))]
pub async fn release(
    state: &AppState,
    policy: &TenantPolicy,
    tenant_id: &str,
    release_id: Uuid,
) -> Result<Report, ReportError> {
    if !state.store.release_exists(tenant_id, release_id).await? {
        return Err(ReportError::ReleaseNotFound(release_id));
    }
    Ok(build(state, policy, tenant_id, &Scope::Release(release_id)).await?)
}

/// The report of a variant's releases created in `[from, before)` (either bound open).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, variant_id = %variant_id))]
pub async fn variant(
    state: &AppState,
    policy: &TenantPolicy,
    tenant_id: &str,
    variant_id: String,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
) -> Result<Report, StoreError> {
    let scope = Scope::Variant {
        variant_id,
        from,
        before,
    };
    build(state, policy, tenant_id, &scope).await
}

/// The report of a tenant's releases created in `[from, before)`, with its figures per day
/// (days of the tenant's time zone).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
pub async fn period(
    state: &AppState,
    policy: &TenantPolicy,
    tenant_id: &str,
    from: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<(Report, Vec<DayFigures>), StoreError> {
    let report = build(state, policy, tenant_id, &Scope::Period { from, before }).await?;
    let days = state
        .store
        .daily_figures(tenant_id, from, before, &policy.time_zone)
        .await?;
    Ok((report, days))
}

/// Reads the figures of `scope` and computes them under the tenant's windows and prices.
async fn build(
    state: &AppState,
    policy: &TenantPolicy,
    tenant_id: &str,
    scope: &Scope,
) -> Result<Report, StoreError> {
    let (text_window, click_window) = reporting::attribution_windows(policy);
    let windows = reporting::windows(policy);
    let figures = state
        .store
        .report_figures(tenant_id, scope, windows)
        .await?;
    let mut report = compute(&figures, state.clock.now(), text_window, click_window);
    report.segment_cost = policy.segment_price_milli_minor.map(|price| {
        (
            report::segment_cost_minor(figures.segment_count, price),
            policy.segment_price_currency.clone(),
        )
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    fn usd(orders: u64, revenue_minor: i64) -> CurrencyFigures {
        CurrencyFigures {
            currency: "USD".into(),
            orders,
            units: orders,
            revenue_minor,
            last_click_orders: 0,
            last_click_revenue_minor: 0,
            refund_count: 0,
            refunded_minor: 0,
        }
    }

    #[test]
    fn windows_close_only_once_the_longest_has_passed_since_the_last_text() {
        let now = Utc::now();
        let sent = |ago: i64| Figures {
            last_sent_at: Some(now - chrono::Duration::hours(ago)),
            ..Figures::default()
        };
        // The click window (a week) is the longer one.
        assert!(!compute(&sent(48), now, hours(24), hours(168)).windows_closed);
        assert!(!compute(&sent(167), now, hours(24), hours(168)).windows_closed);
        assert!(compute(&sent(168), now, hours(24), hours(168)).windows_closed);
        assert!(!compute(&Figures::default(), now, hours(24), hours(168)).windows_closed);
    }

    #[test]
    fn revenue_is_shared_per_text_and_per_subscriber_rounded() {
        let f = Figures {
            recipient_count: 3,
            sent_count: 4,
            currencies: vec![usd(1, 1_000)],
            ..Figures::default()
        };
        let r = compute(&f, Utc::now(), hours(24), hours(168));
        assert_eq!(r.revenue[0].per_text_minor, Some(250));
        assert_eq!(r.revenue[0].per_subscriber_minor, Some(333));
        let none = compute(
            &Figures {
                currencies: vec![usd(1, 1_000)],
                ..Figures::default()
            },
            Utc::now(),
            hours(24),
            hours(168),
        );
        assert_eq!(none.revenue[0].per_text_minor, None);
        assert_eq!(none.revenue[0].per_subscriber_minor, None);
    }

    #[test]
    fn a_lift_over_a_holdout_estimates_incremental_revenue() {
        let f = Figures {
            recipient_count: 1_000,
            sent_count: 1_000,
            held_out_count: 1_000,
            conversion_count: 100,
            treatment_conversions: 100,
            holdout_conversions: 50,
            currencies: vec![usd(100, 100_000)],
            ..Figures::default()
        };
        let r = compute(&f, Utc::now(), hours(24), hours(168));
        let lift = r.lift.as_ref().expect("a lift over a holdout");
        assert!(lift.significant);
        let added = r.revenue[0].incremental.expect("incremental revenue");
        // 50 added conversions worth 1,000 each on average.
        assert_eq!(added.estimate, 50_000);
        assert!(added.lower <= added.estimate && added.estimate <= added.upper);
    }

    #[test]
    fn no_holdout_means_no_lift_and_no_incremental_revenue() {
        let f = Figures {
            recipient_count: 10,
            sent_count: 10,
            conversion_count: 2,
            treatment_conversions: 2,
            currencies: vec![usd(2, 5_000)],
            ..Figures::default()
        };
        let r = compute(&f, Utc::now(), hours(24), hours(168));
        assert!(matches!(r.lift, Err(NoLift::NoHoldout)));
        assert_eq!(r.revenue[0].incremental, None);
        assert_eq!(r.revenue[0].per_text_minor, Some(500));
    }
}
