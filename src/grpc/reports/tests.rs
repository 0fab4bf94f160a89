//! How reports are shown: rates over nothing, holdouts, cached figures, lift.

use super::*;
use chrono::{DateTime, Utc};
use restock_store::reports::{CurrencyFigures, Figures};

/// A report of `f` computed at `now`, as the API shows it.
fn shape(
    f: &Figures,
    now: DateTime<Utc>,
    text_window: Duration,
    click_window: Duration,
) -> pb::AttributionReport {
    view(&reports::compute(f, now, text_window, click_window))
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

#[test]
fn an_empty_scope_computes_nothing_rather_than_zero() {
    let r = shape(&Figures::default(), Utc::now(), hours(24), hours(168));
    assert_eq!(r.delivery_rate.unwrap().value, None);
    assert_eq!(r.conversion_rate.unwrap().value, None);
    assert!(r.revenue.is_empty());
    assert_eq!(r.time_to_purchase_median, None);
    let lift = r.lift.unwrap();
    assert!(!lift.available);
    assert_eq!(
        lift.unavailable_reason,
        pb::LiftUnavailableReason::NoTreatment as i32
    );
    assert_eq!(lift.difference_interval, None);
    assert!(!r.windows_closed);
}

#[test]
fn all_held_out_has_no_treatment_and_no_rates_over_nothing_sent() {
    // Five recipients, all in the control group, one of whom bought anyway.
    let f = Figures {
        release_count: 1,
        held_out_count: 5,
        holdout_conversions: 1,
        ..Figures::default()
    };
    let r = shape(&f, Utc::now(), hours(24), hours(168));
    assert_eq!(
        (r.recipient_count, r.held_out_count, r.sent_count),
        (0, 5, 0)
    );
    let lift = r.lift.unwrap();
    assert!(!lift.available);
    assert_eq!(
        lift.unavailable_reason,
        pb::LiftUnavailableReason::NoTreatment as i32
    );
    let holdout = lift.holdout_conversion.unwrap();
    assert_eq!((holdout.numerator, holdout.denominator), (1, 5));
    assert_eq!(holdout.value, Some(0.2));
    for rate in [
        r.delivery_rate,
        r.conversion_rate,
        r.complaint_rate,
        r.opt_out_rate,
    ] {
        let rate = rate.unwrap();
        assert_eq!((rate.numerator, rate.denominator, rate.value), (0, 0, None));
    }
    assert_eq!(r.complaints_per_thousand_texts, None);
    assert_eq!(r.opt_outs_per_thousand_texts, None);
}

#[test]
fn cached_figures_add_up_like_one_reading_of_both_releases() {
    let usd = |orders, minor| CurrencyFigures {
        currency: "USD".into(),
        orders,
        units: orders,
        revenue_minor: minor,
        last_click_orders: 0,
        last_click_revenue_minor: 0,
        refund_count: 0,
        refunded_minor: 0,
    };
    let mut a = Figures {
        sent_count: 10,
        failures: vec![restock_store::reports::FailureCount {
            code: "30007".into(),
            count: 1,
        }],
        currencies: vec![usd(1, 1_000)],
        times_to_purchase: vec![Duration::from_secs(60)],
        ..Figures::default()
    };
    let b = Figures {
        sent_count: 5,
        failures: vec![
            restock_store::reports::FailureCount {
                code: "30003".into(),
                count: 2,
            },
            restock_store::reports::FailureCount {
                code: "30007".into(),
                count: 2,
            },
        ],
        currencies: vec![
            CurrencyFigures {
                currency: "EUR".into(),
                ..usd(1, 500)
            },
            usd(2, -300),
        ],
        times_to_purchase: vec![Duration::from_secs(30)],
        ..Figures::default()
    };
    a.add(&b);
    assert_eq!(a.sent_count, 15);
    let codes: Vec<_> = a
        .failures
        .iter()
        .map(|f| (f.code.as_str(), f.count))
        .collect();
    assert_eq!(codes, [("30007", 3), ("30003", 2)]);
    let money: Vec<_> = a
        .currencies
        .iter()
        .map(|c| (c.currency.as_str(), c.orders, c.revenue_minor))
        .collect();
    assert_eq!(money, [("EUR", 1, 500), ("USD", 3, 700)]);
    assert_eq!(a.times_to_purchase.len(), 2);
}

#[test]
fn no_holdout_leaves_incremental_revenue_unset() {
    let f = Figures {
        recipient_count: 10,
        sent_count: 10,
        conversion_count: 2,
        treatment_conversions: 2,
        currencies: vec![CurrencyFigures {
            currency: "USD".into(),
            orders: 2,
            units: 2,
            revenue_minor: 5_000,
            last_click_orders: 0,
            last_click_revenue_minor: 0,
            refund_count: 0,
            refunded_minor: 0,
        }],
        ..Figures::default()
    };
    let r = shape(&f, Utc::now(), hours(24), hours(168));
    let lift = r.lift.unwrap();
    assert_eq!(
        lift.unavailable_reason,
        pb::LiftUnavailableReason::NoHoldout as i32
    );
    let usd = &r.revenue[0];
    assert_eq!(usd.incremental_revenue, None);
    assert_eq!(usd.revenue_per_text.as_ref().unwrap().amount_minor, 500);
}
