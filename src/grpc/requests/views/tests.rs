//! RecordProductViews's command: every bad count field named, days bounded by the tenant's
//! today.

use super::*;
use crate::grpc::requests::test_support::fields;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
}

fn count(variant_id: &str, day: &str, source: &str, view_count: u64) -> pb::ProductViewCount {
    pb::ProductViewCount {
        variant_id: variant_id.into(),
        product_id: String::new(),
        day: day.into(),
        source: source.into(),
        view_count,
    }
}

fn request(counts: Vec<pb::ProductViewCount>) -> pb::RecordProductViewsRequest {
    pb::RecordProductViewsRequest {
        tenant_id: "demo".into(),
        counts,
    }
}

/// The fields at fault in `req`, parsed against [`today`].
fn faults(req: pb::RecordProductViewsRequest) -> Vec<String> {
    fields(RecordProductViews::parse(req, |_| Some(today())).unwrap_err())
}

/// The one fault of a request of one count, and its description.
fn one_fault(c: pb::ProductViewCount) -> (String, String) {
    match RecordProductViews::parse(request(vec![c]), |_| Some(today())).unwrap_err() {
        ApiError::InvalidArgument(mut v) if v.len() == 1 => v.remove(0),
        other => panic!("not one violation: {other:?}"),
    }
}

#[test]
fn a_valid_request_is_its_command() {
    let mut by_product = count("", "2026-11-27", "app", 7);
    by_product.product_id = "prod-1".into();
    let cmd = RecordProductViews::parse(
        request(vec![count("sku-1", "2026-11-28", "web", 12), by_product]),
        |t| {
            assert_eq!(t, "demo");
            Some(today())
        },
    )
    .unwrap();
    assert_eq!(cmd.tenant_id, "demo");
    assert_eq!(cmd.counts.len(), 2);
    assert_eq!(cmd.counts[0].target, ViewTarget::Variant("sku-1".into()));
    assert_eq!(cmd.counts[0].day, today());
    assert_eq!(
        (cmd.counts[0].source.as_str(), cmd.counts[0].views),
        ("web", 12)
    );
    assert_eq!(cmd.counts[1].target, ViewTarget::Product("prod-1".into()));
}

#[test]
fn the_tenant_is_required_and_today_is_not_asked_without_one() {
    let mut req = request(vec![count("sku-1", "2026-11-28", "web", 1)]);
    req.tenant_id = String::new();
    let e = RecordProductViews::parse(req, |_| panic!("no tenant to ask about")).unwrap_err();
    assert_eq!(fields(e), ["tenant_id"]);
}

#[test]
fn counts_are_one_to_a_thousand() {
    assert_eq!(faults(request(Vec::new())), ["counts"]);
    let many = (0..=MAX_COUNTS)
        .map(|i| count(&format!("sku-{i}"), "2026-11-28", "web", 1))
        .collect();
    assert_eq!(faults(request(many)), ["counts"]);
}

#[test]
fn exactly_one_of_variant_and_product_is_named() {
    let neither = count("", "2026-11-28", "web", 1);
    assert_eq!(one_fault(neither).0, "counts[0].variant_id");
    let mut both = count("sku-1", "2026-11-28", "web", 1);
    both.product_id = "prod-1".into();
    assert_eq!(one_fault(both).0, "counts[0].product_id");
    let bad_id = count(&"x".repeat(200), "2026-11-28", "web", 1);
    assert_eq!(one_fault(bad_id).0, "counts[0].variant_id");
}

#[test]
fn a_day_is_an_iso_date_from_400_days_ago_to_tomorrow() {
    let (field, why) = one_fault(count("sku-1", "", "web", 1));
    assert_eq!(
        (field.as_str(), why.as_str()),
        ("counts[0].day", "is required")
    );
    let (field, why) = one_fault(count("sku-1", "28/11/2026", "web", 1));
    assert_eq!(field, "counts[0].day");
    assert!(why.contains("ISO 8601"), "{why}");
    // Tomorrow is allowed (a zone ahead of the tenant's), the day after is not.
    assert!(RecordProductViews::parse(
        request(vec![count("sku-1", "2026-11-29", "web", 1)]),
        |_| { Some(today()) }
    )
    .is_ok());
    let (field, why) = one_fault(count("sku-1", "2026-11-30", "web", 1));
    assert_eq!(
        (field.as_str(), why.as_str()),
        ("counts[0].day", "must not be after tomorrow")
    );
    let oldest = (today() - Duration::days(MAX_AGE_DAYS)).to_string();
    assert!(
        RecordProductViews::parse(request(vec![count("sku-1", &oldest, "web", 1)]), |_| {
            Some(today())
        })
        .is_ok()
    );
    let too_old = (today() - Duration::days(MAX_AGE_DAYS + 1)).to_string();
    let (field, why) = one_fault(count("sku-1", &too_old, "web", 1));
    assert_eq!(field, "counts[0].day");
    assert!(why.contains("days ago"), "{why}");
}

#[test]
fn days_are_unbounded_for_a_tenant_the_caller_does_not_know() {
    // Its NOT_FOUND (or PERMISSION_DENIED) is answered after parsing, not a bound on days.
    let req = request(vec![count("sku-1", "2000-01-01", "web", 1)]);
    assert!(RecordProductViews::parse(req, |_| None).is_ok());
}

#[test]
fn a_source_is_a_short_name() {
    let (field, why) = one_fault(count("sku-1", "2026-11-28", "", 1));
    assert_eq!(
        (field.as_str(), why.as_str()),
        ("counts[0].source", "is required")
    );
    for bad in ["web site", "wéb", &"w".repeat(MAX_SOURCE + 1)] {
        assert_eq!(
            one_fault(count("sku-1", "2026-11-28", bad, 1)).0,
            "counts[0].source"
        );
    }
    assert!(RecordProductViews::parse(
        request(vec![count(
            "sku-1",
            "2026-11-28",
            &"w".repeat(MAX_SOURCE),
            1
        )]),
        |_| Some(today())
    )
    .is_ok());
}

#[test]
fn view_counts_are_at_most_ten_to_the_twelfth() {
    let (field, _) = one_fault(count("sku-1", "2026-11-28", "web", MAX_VIEWS + 1));
    assert_eq!(field, "counts[0].view_count");
    let cmd = RecordProductViews::parse(
        request(vec![count("sku-1", "2026-11-28", "web", MAX_VIEWS)]),
        |_| Some(today()),
    )
    .unwrap();
    assert_eq!(cmd.counts[0].views, MAX_VIEWS as i64);
}

#[test]
fn a_target_day_and_source_is_counted_once() {
    let mut by_product = count("", "2026-11-28", "web", 1);
    by_product.product_id = "sku-1".into();
    let req = request(vec![
        count("sku-1", "2026-11-28", "web", 1),
        // Another source, another day, a product of the same id: all distinct.
        count("sku-1", "2026-11-28", "app", 1),
        count("sku-1", "2026-11-27", "web", 1),
        by_product,
        count("sku-1", "2026-11-28", "web", 2),
    ]);
    assert_eq!(faults(req), ["counts[4].day"]);
}

#[test]
fn every_fault_is_named_at_once() {
    let mut both = count("sku-2", "2026-11-28", "web", 1);
    both.product_id = "prod-2".into();
    let mut req = request(vec![
        count("", "", "", MAX_VIEWS + 1),
        both,
        count("sku-3", "2026/11/25", "w w", 1),
    ]);
    req.tenant_id = String::new();
    let mut got = fields(RecordProductViews::parse(req, |_| Some(today())).unwrap_err());
    got.sort();
    assert_eq!(
        got,
        [
            "counts[0].day",
            "counts[0].source",
            "counts[0].variant_id",
            "counts[0].view_count",
            "counts[1].product_id",
            "counts[2].day",
            "counts[2].source",
            "tenant_id",
        ]
    );
}
