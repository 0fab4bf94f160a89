//! The report RPCs of DispatchService: parse the request, let `app::reports` read the figures
//! and compute what they come to, and view the report.

use std::time::Duration;

use restock_domain::report::{NoLift, Ratio};
use restock_store::reports::{DayFigures, SignupFigures};

use super::convert::timestamp;
use super::requests::reports::{PeriodReport, ReleaseReport, VariantReport};
use crate::app::reports::{self, Report, ReportError};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::reporting::{OPT_OUT_WINDOW, SELL_THROUGH_WINDOW};
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
    let report = reports::release(state, policy, &tenant_id, release_id)
        .await
        .map_err(|e| match e {
            ReportError::Store(e) => ApiError::from(e),
            e @ ReportError::ReleaseNotFound(_) => ApiError::NotFound(e.to_string()),
        })?;
    Ok(pb::GetReleaseReportResponse {
        report: Some(view(&report)),
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
    let report = reports::variant(state, policy, &tenant_id, variant_id, from, before).await?;
    Ok(pb::GetVariantReportResponse {
        report: Some(view(&report)),
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
    let (report, days) = reports::period(state, policy, &tenant_id, from, before).await?;
    Ok(pb::GetPeriodReportResponse {
        report: Some(view(&report)),
        days: days.iter().map(day).collect(),
        time_zone: policy.time_zone.clone(),
    })
}

/// A report as the API shows it.
fn view(r: &Report) -> pb::AttributionReport {
    let f = &r.figures;
    let revenue = r
        .revenue
        .iter()
        .map(|c| {
            let money = |minor: i64| pb::Money {
                amount_minor: minor,
                currency_code: c.figures.currency.clone(),
            };
            pb::CurrencyRevenue {
                currency_code: c.figures.currency.clone(),
                conversion_count: c.figures.orders,
                units: c.figures.units,
                revenue: Some(money(c.figures.revenue_minor)),
                last_click_conversion_count: c.figures.last_click_orders,
                last_click_revenue: Some(money(c.figures.last_click_revenue_minor)),
                refund_count: c.figures.refund_count,
                refunded: Some(money(c.figures.refunded_minor)),
                revenue_per_text: c.per_text_minor.map(money),
                revenue_per_subscriber: c.per_subscriber_minor.map(money),
                incremental_revenue: c.incremental.map(|r| pb::IncrementalRevenue {
                    estimate: Some(money(r.estimate)),
                    lower: Some(money(r.lower)),
                    upper: Some(money(r.upper)),
                }),
            }
        })
        .collect();
    pb::AttributionReport {
        compute_time: Some(timestamp(r.computed_at)),
        windows_closed: r.windows_closed,
        text_window: Some(duration(r.text_window)),
        click_window: Some(duration(r.click_window)),
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
        time_to_purchase_median: r.time_to_purchase_median.map(duration),
        time_to_purchase_p90: r.time_to_purchase_p90.map(duration),
        lift: Some(conversion_lift(r)),
        complaint_rate: Some(ratio(f.complaint_count, f.sent_count)),
        complaints_per_thousand_texts: r.complaints_per_thousand_texts,
        opt_outs_per_thousand_texts: r.opt_outs_per_thousand_texts,
        signups: Some(signups(&f.signups)),
        sell_through: Some(ratio(f.units_sold_after_restock, f.units_restocked)),
        sell_through_window: Some(duration(SELL_THROUGH_WINDOW)),
        segment_cost: r
            .segment_cost
            .as_ref()
            .map(|(amount_minor, currency)| pb::Money {
                amount_minor: *amount_minor,
                currency_code: currency.clone(),
            }),
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

fn conversion_lift(r: &Report) -> pb::ConversionLift {
    let f = &r.figures;
    let mut out = pb::ConversionLift {
        treatment_conversion: Some(ratio(f.treatment_conversions, f.recipient_count)),
        holdout_conversion: Some(ratio(f.holdout_conversions, f.held_out_count)),
        window: Some(duration(r.text_window)),
        ..Default::default()
    };
    match &r.lift {
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

fn interval(i: restock_domain::report::Interval) -> pb::Interval {
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
