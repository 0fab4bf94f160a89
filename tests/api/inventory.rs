//! Inventory in: the stream, the batch, the snapshot, and restock detection behind them.

use std::time::Duration;

use restock::proto::v1 as pb;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

fn req(event: pb::InventoryEvent) -> pb::StreamInventoryRequest {
    pb::StreamInventoryRequest {
        tenant_id: "demo".into(),
        event: Some(event),
    }
}

fn outcome(ack: &pb::InventoryAck) -> pb::InventoryOutcome {
    pb::InventoryOutcome::try_from(ack.outcome).unwrap()
}

async fn restocks(app: &TestApp) -> Vec<(String, Option<String>, bool)> {
    app.db()
        .await
        .query("SELECT variant_id, location_id, excluded FROM restocks ORDER BY started_at, location_id NULLS LAST", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn stock(app: &TestApp, variant: &str) -> pb::GetStockResponse {
    app.get_stock(pb::GetStockRequest {
        tenant_id: "demo".into(),
        variant_id: variant.into(),
        location_ids: vec![],
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_sold_out_variant_coming_back_starts_one_restock() {
    let app = spawn_app().await;
    let acks = stream(
        &app,
        vec![
            req(event("e1", "sku-1", "web", 0, 1)),
            req(event("e2", "sku-1", "web", 5, 2)),
            req(event("e3", "sku-1", "web", 3, 3)),
        ],
    )
    .await;
    assert_eq!(
        acks.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e3"]
    );
    assert!(acks
        .iter()
        .all(|a| outcome(a) == pb::InventoryOutcome::Applied));
    assert!(!acks[0].restock_started);
    assert!(acks[1].restock_started);
    assert!(!acks[2].restock_started, "still in stock: the same restock");
    // A location-level and a variant-level restock; the ack names the variant-level one.
    assert_eq!(
        restocks(&app).await,
        [
            ("sku-1".to_string(), Some("web".to_string()), false),
            ("sku-1".to_string(), None, false)
        ]
    );
    let stock = stock(&app, "sku-1").await;
    assert_eq!(stock.total_available_to_sell, 3);
    assert!(!stock.locations[0].last_restock_id.is_empty());
    assert!(stock.locations[0].in_stock);
    // The restock it names is the one with the release (the variant-level one).
    assert_eq!(stock.locations[0].last_restock_id, acks[1].restock_id);
    let releases: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM releases WHERE restock_id::text = $1",
            &[&stock.locations[0].last_restock_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(releases, 1);
}

#[tokio::test]
async fn duplicates_and_stale_events_change_nothing() {
    let app = spawn_app().await;
    let first = stream(
        &app,
        vec![
            req(event("e1", "sku-1", "web", 0, 10)),
            req(event("e2", "sku-1", "web", 4, 11)),
        ],
    )
    .await;
    let again = stream(
        &app,
        vec![
            req(event("e2", "sku-1", "web", 99, 11)),
            req(event("e0", "sku-1", "web", 50, 9)),
            req(event("e0b", "sku-1", "web", 50, 11)),
        ],
    )
    .await;
    assert_eq!(outcome(&again[0]), pb::InventoryOutcome::Duplicate);
    assert!(
        again[0].restock_started,
        "a duplicate repeats the first answer"
    );
    assert_eq!(again[0].restock_id, first[1].restock_id);
    assert_eq!(outcome(&again[1]), pb::InventoryOutcome::Stale);
    assert_eq!(
        outcome(&again[2]),
        pb::InventoryOutcome::Stale,
        "not newer is stale"
    );
    assert_eq!(stock(&app, "sku-1").await.total_available_to_sell, 4);
    assert_eq!(restocks(&app).await.len(), 2);
}

#[tokio::test]
async fn events_ordered_by_observation_time_reject_older_ones() {
    let app = spawn_app().await;
    let at = |secs: i64| {
        Some(pb::inventory_event::Order::ObserveTime(
            prost_types::Timestamp {
                seconds: 1_790_000_000 + secs,
                nanos: 0,
            },
        ))
    };
    let mut newer = event("t2", "sku-1", "store-9", 2, 0);
    newer.order = at(60);
    let mut older = event("t1", "sku-1", "store-9", 0, 0);
    older.order = at(0);
    let acks = stream(&app, vec![req(newer), req(older)]).await;
    assert_eq!(outcome(&acks[0]), pb::InventoryOutcome::Applied);
    assert_eq!(outcome(&acks[1]), pb::InventoryOutcome::Stale);
    assert_eq!(stock(&app, "sku-1").await.locations[0].available_to_sell, 2);
}

#[tokio::test]
async fn flapping_above_the_rearm_level_starts_no_second_restock() {
    let app = spawn_app().await;
    let levels = [5, 2, 6, 1, 7, 0, 3];
    let events = levels
        .iter()
        .enumerate()
        .map(|(i, &l)| req(event(&format!("f{i}"), "sku-1", "web", l, i as u64 + 1)))
        .collect();
    let acks = stream(&app, events).await;
    let started: Vec<bool> = acks.iter().map(|a| a.restock_started).collect();
    assert_eq!(
        started,
        [true, false, false, false, false, false, true],
        "only a sell-out re-arms"
    );
}

#[tokio::test]
async fn on_order_units_never_count_as_stock() {
    let app = spawn_app().await;
    let mut e = event("o1", "sku-1", "web", 0, 1);
    e.on_order = 500;
    let acks = stream(&app, vec![req(e)]).await;
    assert!(!acks[0].restock_started);
    let s = stock(&app, "sku-1").await;
    assert_eq!(
        (
            s.total_available_to_sell,
            s.locations[0].on_order,
            s.locations[0].in_stock
        ),
        (0, 500, false)
    );
}

#[tokio::test]
async fn bad_events_are_rejected_in_their_ack_and_the_stream_goes_on() {
    let app = spawn_app().await;
    let mut no_order = event("b4", "sku-1", "web", 1, 0);
    no_order.order = None;
    let acks = stream(
        &app,
        vec![
            pb::StreamInventoryRequest {
                tenant_id: "nobody".into(),
                event: Some(event("b1", "sku-1", "web", 1, 1)),
            },
            req(event("b2", "sku-1", "web", -3, 1)),
            req(event("", "", "web", 1, 1)),
            req(no_order),
            pb::StreamInventoryRequest {
                tenant_id: "demo".into(),
                event: None,
            },
            req(event("g1", "sku-1", "web", 1, 1)),
        ],
    )
    .await;
    let fields = |a: &pb::InventoryAck| {
        a.field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect::<Vec<_>>()
    };
    for a in &acks[..5] {
        assert_eq!(outcome(a), pb::InventoryOutcome::Rejected, "{a:?}");
    }
    assert!(acks[0].message.contains("nobody"));
    assert_eq!(fields(&acks[1]), ["event.available_to_sell"]);
    assert_eq!(fields(&acks[2]), ["event.event_id", "event.variant_id"]);
    assert_eq!(fields(&acks[3]), ["event.sequence_number"]);
    assert_eq!(fields(&acks[4]), ["event"]);
    assert_eq!(outcome(&acks[5]), pb::InventoryOutcome::Applied);
    assert!(acks[5].restock_started);
    assert_eq!(
        app.count("inventory_events").await,
        1,
        "rejected events leave nothing behind"
    );
}

#[tokio::test]
async fn a_client_that_reconnects_and_resends_ends_where_one_that_never_disconnected_does() {
    let events: Vec<_> = [0, 4, 0, 2, 9]
        .iter()
        .enumerate()
        .map(|(i, &l)| req(event(&format!("r{i}"), "sku-1", "web", l, i as u64 + 1)))
        .collect();
    let steady = spawn_app().await;
    stream(&steady, events.clone()).await;

    let flaky = spawn_app().await;
    {
        // Three events go out; the connection drops after two acks.
        let mut acks = flaky
            .stream_inventory(tokio_stream::iter(events[..3].to_vec()))
            .await
            .unwrap();
        acks.next().await.unwrap().unwrap();
        acks.next().await.unwrap().unwrap();
    }
    let resent = stream(&flaky, events.clone()).await;
    assert!(resent[..2]
        .iter()
        .all(|a| outcome(a) == pb::InventoryOutcome::Duplicate));
    let (a, b) = (stock(&steady, "sku-1").await, stock(&flaky, "sku-1").await);
    assert_eq!(
        a.locations[0].available_to_sell,
        b.locations[0].available_to_sell
    );
    assert_eq!(
        a.locations[0].sequence_number,
        b.locations[0].sequence_number
    );
    assert_eq!(restocks(&steady).await, restocks(&flaky).await);
    assert_eq!(
        restocks(&flaky).await.len(),
        4,
        "two crossings, each at the location and the variant"
    );
}

#[tokio::test]
async fn concurrent_streams_racing_on_one_variant_create_exactly_one_restock() {
    let app = spawn_app().await;
    let tasks = (0..4u64).map(|k| {
        let events: Vec<_> = (0..25u64)
            .map(|i| {
                let seq = i * 4 + k + 1;
                req(event(
                    &format!("s{k}-{i}"),
                    "sku-hot",
                    "web",
                    5 + (seq % 3) as i64,
                    seq,
                ))
            })
            .collect();
        let app = &app;
        async move { stream(app, events).await }
    });
    let all: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all.iter().filter(|a| a.restock_started).count(), 1);
    assert_eq!(
        restocks(&app).await.len(),
        2,
        "one location-level and one variant-level restock"
    );
    // The same events resent on four streams at once: all duplicates, still one restock.
    let resend = (0..4).map(|_| {
        let events: Vec<_> = (0..10u64)
            .map(|i| req(event(&format!("s0-{i}"), "sku-hot", "web", 5, i * 4 + 1)))
            .collect();
        let app = &app;
        async move { stream(app, events).await }
    });
    for acks in futures::future::join_all(resend).await {
        assert!(acks
            .iter()
            .all(|a| outcome(a) == pb::InventoryOutcome::Duplicate));
    }
    assert_eq!(restocks(&app).await.len(), 2);
}

#[tokio::test]
async fn two_replicas_fed_the_same_events_start_one_restock() {
    let first = spawn_app().await;
    let second = spawn_app_on(first.db_url.clone(), |_| {}).await;
    let events: Vec<_> = (0..30u64)
        .map(|i| {
            req(event(
                &format!("d{i}"),
                "sku-dup",
                "web",
                3 + (i % 2) as i64,
                i + 1,
            ))
        })
        .collect();
    let (a, b) = tokio::join!(stream(&first, events.clone()), stream(&second, events));
    let started = a
        .iter()
        .chain(b.iter())
        .filter(|ack| ack.restock_started && outcome(ack) == pb::InventoryOutcome::Applied)
        .count();
    assert_eq!(started, 1);
    for i in 0..30 {
        let kinds = [outcome(&a[i]), outcome(&b[i])];
        assert!(
            kinds.contains(&pb::InventoryOutcome::Applied)
                || kinds.contains(&pb::InventoryOutcome::Stale),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&pb::InventoryOutcome::Duplicate),
            "each event is applied by one replica: {kinds:?}"
        );
    }
    assert_eq!(restocks(&first).await.len(), 2);
}

#[tokio::test]
async fn a_producer_that_reads_no_acks_is_held_back() {
    let app = spawn_app().await;
    const N: usize = 5_000;
    // Long event ids make long acks, so the transport's own buffers (about 450 KB between
    // hyper's send buffer and the client's window) fill well before N acks.
    let events: Vec<_> = (0..N)
        .map(|i| {
            req(event(
                &format!("{i:0>120}"),
                "sku-1",
                "web",
                (i % 7) as i64,
                i as u64 + 1,
            ))
        })
        .collect();
    // A client with modest HTTP/2 receive windows, not hyper's roomy defaults (megabytes).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(128 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .connect()
        .await
        .unwrap();
    let mut acks = EligibilityServiceClient::new(with_token(channel, TEST_TOKEN))
        .stream_inventory(tokio_stream::iter(events))
        .await
        .unwrap()
        .into_inner();
    // Without reading acks, the server stops taking events once its buffers are full.
    let mut last = -1;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = app.count("inventory_events").await;
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        (last as usize) < N,
        "the server applied {last} of {N} events without anyone reading acks"
    );
    let mut read = 0;
    while let Some(ack) = acks.next().await {
        ack.unwrap();
        read += 1;
    }
    assert_eq!(read, N, "reading the acks lets the rest through");
}

#[tokio::test]
async fn report_inventory_has_the_stream_semantics() {
    let app = spawn_app().await;
    let acks = app
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![
                event("u1", "sku-1", "web", 3, 1),
                event("u1", "sku-1", "web", 3, 1),
                event("u2", "sku-1", "web", -1, 2),
            ],
        })
        .await
        .unwrap()
        .acks;
    assert_eq!(outcome(&acks[0]), pb::InventoryOutcome::Applied);
    assert!(acks[0].restock_started);
    assert_eq!(outcome(&acks[1]), pb::InventoryOutcome::Duplicate);
    assert_eq!(
        acks[2].field_violations[0].field,
        "events[2].available_to_sell"
    );

    let err = app
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["events"]);
    let err = app
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "nobody".into(),
            events: vec![event("x", "v", "l", 1, 1)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .get_stock(pb::GetStockRequest {
            tenant_id: "demo".into(),
            variant_id: "never-seen".into(),
            location_ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn excluded_variants_and_products_start_no_restock() {
    let app = spawn_app_with(|s| {
        s.tenants.get_mut("demo").unwrap().excluded_products = vec!["prod-recalled".into()]
    })
    .await;
    let created = app
        .create_exclusion(pb::CreateExclusionRequest {
            tenant_id: "demo".into(),
            target: Some(pb::create_exclusion_request::Target::VariantId(
                "sku-x".into(),
            )),
            reason: "launch embargo".into(),
            creator: "merch-tool".into(),
            expire_time: None,
        })
        .await
        .unwrap();
    assert!(created.created);
    let mut from_recalled = event("x2", "sku-y", "web", 5, 1);
    from_recalled.product_id = "prod-recalled".into();
    let acks = stream(
        &app,
        vec![
            req(event("x1", "sku-x", "web", 5, 1)),
            req(from_recalled),
            req(event("x3", "sku-z", "web", 5, 1)),
        ],
    )
    .await;
    assert_eq!(
        acks.iter().map(|a| a.restock_started).collect::<Vec<_>>(),
        [false, false, true]
    );
    let mut recorded = restocks(&app).await;
    recorded.sort();
    let excluded: Vec<(&str, bool)> = recorded.iter().map(|r| (r.0.as_str(), r.2)).collect();
    assert_eq!(
        excluded,
        [
            ("sku-x", true),
            ("sku-x", true),
            ("sku-y", true),
            ("sku-y", true),
            ("sku-z", false),
            ("sku-z", false)
        ],
        "excluded restocks are recorded, not started"
    );

    let list = app
        .list_exclusions(pb::ListExclusionsRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.exclusions.len(), 1);
    let id = list.exclusions[0].exclusion_id.clone();
    app.delete_exclusion(pb::DeleteExclusionRequest {
        tenant_id: "demo".into(),
        exclusion_id: id,
    })
    .await
    .unwrap();
    let acks = stream(
        &app,
        vec![
            req(event("x4", "sku-x", "web", 0, 2)),
            req(event("x5", "sku-x", "web", 5, 3)),
        ],
    )
    .await;
    assert!(
        acks[1].restock_started,
        "a lifted exclusion lets the next restock through"
    );
    let err = app
        .create_exclusion(pb::CreateExclusionRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["creator", "product_id", "reason"]);
}

fn level(variant: &str, location: &str, available: i64) -> pb::StockLevel {
    pb::StockLevel {
        variant_id: variant.into(),
        location_id: location.into(),
        available_to_sell: available,
        ..Default::default()
    }
}

async fn sync(
    app: &TestApp,
    chunks: Vec<pb::SyncInventoryRequest>,
) -> Result<pb::SyncInventoryResponse, tonic::Status> {
    app.eligibility()
        .sync_inventory(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_snapshot_catches_a_restock_the_stream_missed() {
    let app = spawn_app().await;
    stream(
        &app,
        vec![
            req(event("m1", "sku-1", "web", 0, 1)),
            req(event("m2", "sku-2", "web", 6, 1)),
            req(event("m3", "sku-3", "store-1", 2, 1)),
        ],
    )
    .await;
    let before = restocks(&app).await.len();
    let snapshot = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp(),
        nanos: 0,
    };
    let out = sync(
        &app,
        vec![
            pb::SyncInventoryRequest {
                tenant_id: "demo".into(),
                snapshot_time: Some(snapshot),
                location_ids: vec!["web".into()],
                zero_missing: true,
                levels: vec![level("sku-1", "web", 8), level("bad", "web", -1)],
            },
            pb::SyncInventoryRequest {
                tenant_id: "demo".into(),
                levels: vec![level("sku-4", "web", 0)],
                ..Default::default()
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(out.received_count, 3);
    assert_eq!(out.rejected_count, 1);
    assert_eq!(out.rejections[0].index, 1);
    assert_eq!(
        out.rejections[0].field_violations[0].field,
        "available_to_sell"
    );
    assert_eq!(
        out.zeroed_count, 1,
        "sku-2 at web was not in the complete snapshot"
    );
    assert_eq!(
        out.restocks_started_count, 2,
        "sku-1 came back: at web and as a variant"
    );
    assert_eq!(restocks(&app).await.len(), before + 2);
    assert_eq!(stock(&app, "sku-2").await.total_available_to_sell, 0);
    assert_eq!(
        stock(&app, "sku-3").await.total_available_to_sell,
        2,
        "store-1 is not covered by the snapshot"
    );
    // The same snapshot again: stale, nothing changes, no new restock.
    let again = sync(
        &app,
        vec![pb::SyncInventoryRequest {
            tenant_id: "demo".into(),
            snapshot_time: Some(snapshot),
            levels: vec![level("sku-1", "web", 8)],
            ..Default::default()
        }],
    )
    .await
    .unwrap();
    assert_eq!((again.stale_count, again.restocks_started_count), (1, 0));
}

#[tokio::test]
async fn a_bad_snapshot_changes_nothing() {
    let app = spawn_app().await;
    let snapshot = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp(),
        nanos: 0,
    });
    let err = sync(
        &app,
        vec![pb::SyncInventoryRequest {
            tenant_id: "demo".into(),
            snapshot_time: snapshot,
            levels: vec![level("sku-1", "web", 5), level("sku-1", "web", 6)],
            ..Default::default()
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&err), ["levels"]);
    let err = sync(
        &app,
        vec![pb::SyncInventoryRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&err), ["snapshot_time"]);
    let err = sync(
        &app,
        vec![
            pb::SyncInventoryRequest {
                tenant_id: "demo".into(),
                snapshot_time: snapshot,
                levels: vec![level("sku-9", "web", 5)],
                ..Default::default()
            },
            pb::SyncInventoryRequest {
                tenant_id: "other".into(),
                ..Default::default()
            },
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&err), ["tenant_id"]);
    for table in ["inventory", "restocks", "variant_stock"] {
        assert_eq!(
            app.count(table).await,
            0,
            "{table} untouched by a failed sync"
        );
    }
}

/// A producer that sends as fast as it can, one event per HTTP/2 DATA frame (as a producer
/// flushing each event does), and reads its acks concurrently, keeps its stream: before the
/// HTTP/2 tuning, hyper closed the connection (GOAWAY ENHANCE_YOUR_CALM, `too_many_data_frames`)
/// at 2,400-4,000 small events in flight, and buffered acks were lost.
#[tokio::test]
async fn a_producer_flooding_one_stream_gets_every_ack_in_order() {
    // The connection used to break after a handful of acks; `just bench` streams more.
    const EVENTS: usize = 10_000;
    let app = spawn_app().await;
    // A channel of one: the client's encoder finds the next event not yet there after each
    // one, so every event leaves in a DATA frame of its own.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..EVENTS {
            // Many variants, so most events are plain updates and a few are restocks.
            let e = req(event(
                &format!("flood-{i}"),
                &format!("sku-{}", i % 500),
                "web",
                (i % 3) as i64,
                (i / 500 + 1) as u64,
            ));
            if tx.send(e).await.is_err() {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    let mut acks = app
        .stream_inventory(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let mut n = 0usize;
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap_or_else(|s| panic!("stream broke after {n} acks: {s:?}"));
        let ack = ack.ack.unwrap();
        assert_eq!(ack.event_id, format!("flood-{n}"), "acks in order");
        assert_eq!(outcome(&ack), pb::InventoryOutcome::Applied, "{ack:?}");
        n += 1;
    }
    assert_eq!(n, EVENTS, "one ack per event");
    eprintln!(
        "{EVENTS} events acked on one stream in {:.1?} ({:.0}/s, debug build)",
        started.elapsed(),
        EVENTS as f64 / started.elapsed().as_secs_f64()
    );
}
