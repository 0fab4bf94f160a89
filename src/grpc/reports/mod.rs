//! The report RPCs of DispatchService: parse the request into a scope, read the raw figures
//! from the store, and let the domain turn them into ratios, the lift and its intervals.

use std::time::Duration;

use chrono::{DateTime, Utc};
use restock_domain::report::{self, NoLift, Ratio};
use restock_domain::TenantPolicy;
use restock_store::reports::{DayFigures, Figures, Scope, SignupFigures};

use super::convert::timestamp;
use super::requests::reports::{PeriodReport, ReleaseReport, VariantReport};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::reporting::{self, OPT_OUT_WINDOW, SELL_THROUGH_WINDOW};
use crate::state::AppState;

pub async fn release(
    state: &AppState,
    caller: &Caller,
    req: pb::GetReleaseReportRequest,
) -> Result<pb::GetReleaseReportResponse, ApiError> {
    let ReleaseReport {
        tenant_id,
        release_id,
    } = req.try_into()?;
    let policy = state.tenant(caller, &tenant_id)?;
    if !state.store.release_exists(&tenant_id, release_id).await? {
        return Err(ApiError::NotFound(format!(
            "release \"{release_id}\" not found"
        )));
    }
    let report = build(state, policy, &tenant_id, &Scope::Release(release_id)).await?;
    Ok(pb::GetReleaseReportResponse {
        report: Some(report),
    })
}

pub async fn variant(
    state: &AppState,
    caller: &Caller,
    req: pb::GetVariantReportRequest,
) -> Result<pb::GetVariantReportResponse, ApiError> {
    let VariantReport {
        tenant_id,
        variant_id,
        from,
        before,
    } = req.try_into()?;
    let policy = state.tenant(caller, &tenant_id)?;
    let scope = Scope::Variant {
        variant_id,
        from,
        before,
    };
    Ok(pb::GetVariantReportResponse {
        report: Some(build(state, policy, &tenant_id, &scope).await?),
    })
}

pub async fn period(
    state: &AppState,
    caller: &Caller,
    req: pb::GetPeriodReportRequest,
) -> Result<pb::GetPeriodReportResponse, ApiError> {
    let PeriodReport {
        tenant_id,
        from,
        before,
    } = req.try_into()?;
    let policy = state.tenant(caller, &tenant_id)?;
    let report = build(state, policy, &tenant_id, &Scope::Period { from, before }).await?;
    let days = state
        .store
        .daily_figures(&tenant_id, from, before, &policy.time_zone)
        .await?;
    Ok(pb::GetPeriodReportResponse {
        report: Some(report),
        days: days.iter().map(day).collect(),
        time_zone: policy.time_zone.clone(),
    })
}

/// Reads the figures of `scope` and shapes them into a report.
async fn build(
    state: &AppState,
    policy: &TenantPolicy,
    tenant_id: &str,
    scope: &Scope,
) -> Result<pb::AttributionReport, ApiError> {
    let (text_window, click_window) = reporting::attribution_windows(policy);
    let windows = reporting::windows(policy);
    let figures = state
        .store
        .report_figures(tenant_id, scope, windows)
        .await?;
    let now = state.clock.now();
    let mut report = shape(&figures, now, text_window, click_window);
    report.segment_cost = policy.segment_price_milli_minor.map(|price| pb::Money {
        amount_minor: report::segment_cost_minor(figures.segment_count, price),
        currency_code: policy.segment_price_currency.clone(),
    });
    Ok(report)
}

/// The report of `f` as the API shows it; pure, so the shaping is unit-tested apart.
fn shape(
    f: &Figures,
    now: DateTime<Utc>,
    text_window: Duration,
    click_window: Duration,
) -> pb::AttributionReport {
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
            let money = |minor: i64| pb::Money {
                amount_minor: minor,
                currency_code: c.currency.clone(),
            };
            let per =
                |n: u64| (n > 0).then(|| money((c.revenue_minor as f64 / n as f64).round() as i64));
            pb::CurrencyRevenue {
                currency_code: c.currency.clone(),
                conversion_count: c.orders,
                units: c.units,
                revenue: Some(money(c.revenue_minor)),
                last_click_conversion_count: c.last_click_orders,
                last_click_revenue: Some(money(c.last_click_revenue_minor)),
                refund_count: c.refund_count,
                refunded: Some(money(c.refunded_minor)),
                revenue_per_text: per(f.sent_count),
                revenue_per_subscriber: per(f.recipient_count),
                incremental_revenue: lift.as_ref().ok().and_then(|l| {
                    report::incremental_revenue(l, c.revenue_minor, f.conversion_count).map(|r| {
                        pb::IncrementalRevenue {
                            estimate: Some(money(r.estimate)),
                            lower: Some(money(r.lower)),
                            upper: Some(money(r.upper)),
                        }
                    })
                }),
            }
        })
        .collect();
    pb::AttributionReport {
        compute_time: Some(timestamp(now)),
        windows_closed,
        text_window: Some(duration(text_window)),
        click_window: Some(duration(click_window)),
        release_count: f.release_count,
        recipient_count: f.recipient_count,
        held_out_count: f.held_out_count,
        sent_count: f.sent_count,
        segment_count: f.segment_count,
        delivered_count: f.delivered_count,
        undelivered_count: f.undelivered_count,
        failed_count: f.failed_count,
        delivery_rate: Some(ratio(f.delivered_count, f.sent_count)),
        failures: f
            .failures
            .iter()
            .map(|x| pb::FailureCount {
                error_code: x.code.clone(),
                count: x.count,
            })
            .collect(),
        click_count: f.click_count,
        unique_click_count: f.clicked_count,
        click_through_rate: Some(ratio(f.clicked_count, f.sent_count)),
        opt_out_window: Some(duration(OPT_OUT_WINDOW)),
        opt_out_rate: Some(ratio(f.opt_out_count, f.sent_count)),
        conversion_rate: Some(ratio(f.conversion_count, f.sent_count)),
        click_conversion_rate: Some(ratio(f.click_conversion_count, f.clicked_count)),
        revenue,
        time_to_purchase_median: report::median(&f.times_to_purchase).map(duration),
        time_to_purchase_p90: report::p90(&f.times_to_purchase).map(duration),
        lift: Some(conversion_lift(f, &lift, text_window)),
        complaint_rate: Some(ratio(f.complaint_count, f.sent_count)),
        complaints_per_thousand_texts: report::per_thousand(Ratio::new(
            f.complaint_count,
            f.sent_count,
        )),
        opt_outs_per_thousand_texts: report::per_thousand(Ratio::new(
            f.opt_out_count,
            f.sent_count,
        )),
        signups: Some(signups(&f.signups)),
        sell_through: Some(ratio(f.units_sold_after_restock, f.units_restocked)),
        sell_through_window: Some(duration(SELL_THROUGH_WINDOW)),
        segment_cost: None,
    }
}

fn day(d: &DayFigures) -> pb::DailyFigures {
    let money = |minor: i64, currency: &str| pb::Money {
        amount_minor: minor,
        currency_code: currency.to_string(),
    };
    pb::DailyFigures {
        day: d.day.to_string(),
        release_count: d.release_count,
        recipient_count: d.recipient_count,
        held_out_count: d.held_out_count,
        sent_count: d.sent_count,
        delivered_count: d.delivered_count,
        unique_click_count: d.clicked_count,
        conversion_count: d.conversion_count,
        delivery_rate: Some(ratio(d.delivered_count, d.sent_count)),
        click_through_rate: Some(ratio(d.clicked_count, d.sent_count)),
        conversion_rate: Some(ratio(d.conversion_count, d.sent_count)),
        revenue: d
            .revenue
            .iter()
            .map(|r| pb::DailyRevenue {
                currency_code: r.currency.clone(),
                conversion_count: r.orders,
                revenue: Some(money(r.revenue_minor, &r.currency)),
                last_click_revenue: Some(money(r.last_click_revenue_minor, &r.currency)),
            })
            .collect(),
        signup_count: d.signups,
        views_reported: d.views_reported,
        product_view_count: d.views,
        signup_rate: d.views_reported.then(|| ratio(d.signups, d.views)),
    }
}

fn signups(s: &SignupFigures) -> pb::SignupFigures {
    let day = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    pb::SignupFigures {
        first_day: day(s.first_day),
        last_day: day(s.last_day),
        signup_count: s.signups,
        views_reported: s.views_reported,
        product_view_count: s.views,
        // Without a view count the rate is not reported at all, not a ratio over zero views.
        signup_rate: s
            .views_reported
            .then(|| ratio(s.signups_on_viewed_days, s.views)),
        variant_specificity: Some(ratio(s.variant_signups, s.signups)),
        confirmation_rate: Some(ratio(s.confirmed, s.confirmation_requested)),
        time_to_confirm_median: s.time_to_confirm_median.map(duration),
        status_counts: {
            let mut counts: Vec<pb::SubscriptionStatusCount> = s
                .statuses
                .iter()
                .filter_map(|(status, count)| {
                    let status = restock_domain::SubscriptionStatus::parse(status)?;
                    Some(pb::SubscriptionStatusCount {
                        status: super::convert::status_pb(status) as i32,
                        count: *count,
                    })
                })
                .collect();
            counts.sort_by_key(|c| c.status);
            counts
        },
    }
}

fn conversion_lift(
    f: &Figures,
    lift: &Result<report::Lift, NoLift>,
    window: Duration,
) -> pb::ConversionLift {
    let mut out = pb::ConversionLift {
        treatment_conversion: Some(ratio(f.treatment_conversions, f.recipient_count)),
        holdout_conversion: Some(ratio(f.holdout_conversions, f.held_out_count)),
        window: Some(duration(window)),
        ..Default::default()
    };
    match lift {
        Ok(l) => {
            out.available = true;
            out.difference = l.difference;
            out.difference_interval = Some(interval(l.interval));
            out.significant = l.significant;
            out.incremental_conversions = l.incremental_conversions;
            out.incremental_conversions_interval = Some(interval(l.incremental_interval));
        }
        Err(NoLift::NoTreatment) => {
            out.unavailable_reason = pb::LiftUnavailableReason::NoTreatment as i32;
        }
        Err(NoLift::NoHoldout) => {
            out.unavailable_reason = pb::LiftUnavailableReason::NoHoldout as i32;
        }
    }
    out
}

fn ratio(numerator: u64, denominator: u64) -> pb::Ratio {
    pb::Ratio {
        numerator,
        denominator,
        value: Ratio::new(numerator, denominator).value(),
    }
}

fn interval(i: report::Interval) -> pb::Interval {
    pb::Interval {
        lower: i.lower,
        upper: i.upper,
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests;
