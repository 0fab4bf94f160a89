//! Values the store cannot take are refused at the door: timestamps outside 1970..=9999 in
//! every RPC that takes one, and stock levels whose totals would overflow.

use restock::proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::helpers::*;

/// 1969-12-31T23:59:59Z and 10000-01-01T00:00:00Z: one second outside the accepted range.
const OUTSIDE: [(&str, i64); 2] = [("1969", -1), ("10000", 253_402_300_800)];

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// Asserts an INVALID_ARGUMENT naming exactly `field`.
fn names(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str, year: &str) {
    let status = result.expect_err(&format!("{field} in year {year} must be refused"));
    assert_eq!(violated_fields(&status), [field], "year {year}: {status:?}");
}

fn observed(id: &str, seconds: i64) -> pb::InventoryEvent {
    pb::InventoryEvent {
        order: Some(pb::inventory_event::Order::ObserveTime(
            at(seconds).unwrap(),
        )),
        ..event(id, "sku-t", "web", 3, 0)
    }
}

#[tokio::test]
async fn timestamps_before_1970_or_after_9999_are_invalid_in_every_rpc() {
    let app = spawn_app().await;
    for (year, seconds) in OUTSIDE {
        // WaitlistService.Subscribe: the consent's capture time and the expiry.
        let mut req = subscribe_request("sku-1", "+14155550300");
        req.consent.as_mut().unwrap().capture_time = at(seconds);
        names(app.subscribe(req).await, "consent.capture_time", year);
        let mut req = subscribe_request("sku-1", "+14155550300");
        req.expire_time = at(seconds);
        names(app.subscribe(req).await, "expire_time", year);

        // WaitlistService.OptIn.
        let mut consent = web_consent();
        consent.capture_time = at(seconds);
        names(
            app.opt_in(pb::OptInRequest {
                tenant_id: "demo".into(),
                phone_number: "+14155550301".into(),
                consent: Some(consent),
                ..Default::default()
            })
            .await,
            "consent.capture_time",
            year,
        );

        // EligibilityService.ReportInventory: the event is REJECTED, naming the field.
        let acks = app
            .report_inventory(pb::ReportInventoryRequest {
                tenant_id: "demo".into(),
                events: vec![observed(&format!("r-{year}"), seconds)],
            })
            .await
            .expect("a bad event is acknowledged, not an error")
            .acks;
        assert_eq!(
            acks[0].outcome,
            pb::InventoryOutcome::Rejected as i32,
            "{year}"
        );
        let fields: Vec<_> = acks[0].field_violations.iter().map(|v| &v.field).collect();
        assert_eq!(fields, ["events[0].observe_time"], "{year}");

        // EligibilityService.StreamInventory: REJECTED, and the stream goes on.
        let mut acks = app
            .stream_inventory(tokio_stream::iter(vec![
                pb::StreamInventoryRequest {
                    tenant_id: "demo".into(),
                    event: Some(observed(&format!("s-{year}"), seconds)),
                },
                pb::StreamInventoryRequest {
                    tenant_id: "demo".into(),
                    event: Some(event(&format!("ok-{year}"), "sku-s", "web", 1, 1)),
                },
            ]))
            .await
            .unwrap();
        let bad = acks.next().await.unwrap().unwrap().ack.unwrap();
        assert_eq!(bad.outcome, pb::InventoryOutcome::Rejected as i32, "{year}");
        let fields: Vec<_> = bad.field_violations.iter().map(|v| &v.field).collect();
        assert_eq!(fields, ["event.observe_time"], "{year}");
        let next = acks.next().await.unwrap().unwrap().ack.unwrap();
        assert_ne!(
            next.outcome,
            pb::InventoryOutcome::Rejected as i32,
            "{year}"
        );

        // EligibilityService.SyncInventory.
        names(
            app.sync_inventory(tokio_stream::iter(vec![pb::SyncInventoryRequest {
                tenant_id: "demo".into(),
                snapshot_time: at(seconds),
                ..Default::default()
            }]))
            .await,
            "snapshot_time",
            year,
        );

        // EligibilityService.CreateExclusion.
        names(
            app.create_exclusion(pb::CreateExclusionRequest {
                tenant_id: "demo".into(),
                target: Some(pb::create_exclusion_request::Target::VariantId(
                    "sku-x".into(),
                )),
                reason: "recall".into(),
                creator: "merch".into(),
                expire_time: at(seconds),
            })
            .await,
            "expire_time",
            year,
        );

        // DispatchService.ListReleases: both ends of the window.
        for field in ["create_time_start", "create_time_end"] {
            let mut req = pb::ListReleasesRequest {
                tenant_id: "demo".into(),
                ..Default::default()
            };
            if field == "create_time_start" {
                req.create_time_start = at(seconds);
            } else {
                req.create_time_end = at(seconds);
            }
            names(app.list_releases(req).await, field, year);
        }

        // DispatchService.RecordPurchase.
        names(
            app.record_purchase(pb::RecordPurchaseRequest {
                tenant_id: "demo".into(),
                order_id: format!("o-{year}"),
                phone_number: "+14155550302".into(),
                lines: vec![pb::PurchaseLine {
                    variant_id: "sku-1".into(),
                    quantity: 1,
                    total_price: Some(pb::Money {
                        amount_minor: 100,
                        currency_code: "USD".into(),
                    }),
                    location_id: String::new(),
                }],
                purchase_time: at(seconds),
                ..Default::default()
            })
            .await,
            "purchase_time",
            year,
        );
    }
    // Nothing of the refused calls reached the store.
    assert_eq!(app.count("subscriptions").await, 0);
    assert_eq!(app.count("exclusions").await, 0);
    assert_eq!(app.count("purchases").await, 0);
}

#[tokio::test]
async fn huge_stock_levels_never_overflow_a_total() {
    let app = spawn_app().await;
    // Two locations at i64::MAX: today's sum panicked the handler.
    let acks = app
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![
                event("big-1", "sku-big", "a", i64::MAX, 1),
                event("big-2", "sku-big", "b", i64::MAX, 1),
                pb::InventoryEvent {
                    on_order: i64::MAX,
                    ..event("big-3", "sku-big", "c", 1, 1)
                },
            ],
        })
        .await
        .expect("a clean answer, not a panic")
        .acks;
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(
            ack.outcome,
            pb::InventoryOutcome::Rejected as i32,
            "{ack:?}"
        );
        let field = if i == 2 {
            "on_order"
        } else {
            "available_to_sell"
        };
        let fields: Vec<_> = ack
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, [format!("events[{i}].{field}")]);
    }
    // The bound itself is accepted at several locations, and totals add up.
    let acks = app
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![
                event("max-1", "sku-max", "a", 1_000_000_000, 1),
                event("max-2", "sku-max", "b", 1_000_000_000, 1),
            ],
        })
        .await
        .unwrap()
        .acks;
    assert!(acks
        .iter()
        .all(|a| a.outcome == pb::InventoryOutcome::Applied as i32));
    let stock = app
        .get_stock(pb::GetStockRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-max".into(),
            location_ids: vec![],
        })
        .await
        .unwrap();
    assert_eq!(stock.total_available_to_sell, 2_000_000_000);
    // A snapshot is held to the same bound.
    let synced = app
        .sync_inventory(tokio_stream::iter(vec![pb::SyncInventoryRequest {
            tenant_id: "demo".into(),
            snapshot_time: at(chrono::Utc::now().timestamp() - 1),
            levels: vec![pb::StockLevel {
                variant_id: "sku-max".into(),
                location_id: "c".into(),
                available_to_sell: i64::MAX,
                ..Default::default()
            }],
            ..Default::default()
        }]))
        .await
        .expect("a clean answer");
    assert_eq!(synced.rejected_count, 1);
    // DryRun refuses an assumption past the bound.
    names(
        app.dry_run(pb::DryRunRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-max".into(),
            assume_available: i64::MAX,
            ..Default::default()
        })
        .await,
        "assume_available",
        "-",
    );
}
