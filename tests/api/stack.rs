//! The tower stack in front of the services: deadlines (the caller's, capped by the server's;
//! past it DEADLINE_EXCEEDED and nothing written), load shedding past the concurrency limit
//! (RESOURCE_EXHAUSTED with RetryInfo while health and admitted calls keep answering), and a
//! request id on every call.

use std::time::Duration;

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use tonic::Code;
use tonic_types::StatusExt;

fn report_request(variant: &str, id: &str, available: i64, seq: u64) -> pb::ReportInventoryRequest {
    pb::ReportInventoryRequest {
        tenant_id: "demo".into(),
        events: vec![event(id, variant, "web", available, seq)],
    }
}

/// A transaction of the test's own holding `variant`'s inventory row, so an inventory event
/// of it waits inside its handler's transaction until the lock is let go.
async fn lock_level(app: &TestApp, variant: &str) -> tokio_postgres::Client {
    let db = app.db().await;
    db.batch_execute("BEGIN").await.unwrap();
    let locked = db
        .execute(
            "SELECT 1 FROM inventory WHERE tenant_id = 'demo' AND variant_id = $1 FOR UPDATE",
            &[&variant],
        )
        .await
        .unwrap();
    assert_eq!(locked, 1);
    db
}

/// Waits until `n` other sessions of the test's database wait on a lock.
async fn waiting_on_locks(app: &TestApp, n: i64) {
    let db = app.db().await;
    eventually(Duration::from_secs(10), "calls to wait on the lock", || async {
        db.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            >= n
    })
    .await;
}

/// Waits until no session of the test's database but the caller's has a transaction open:
/// an abandoned call's transaction has ended one way or the other.
async fn transactions_ended(app: &TestApp) {
    let db = app.db().await;
    eventually(
        Duration::from_secs(10),
        "open transactions to end",
        || async {
            db.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                == 0
        },
    )
    .await;
}

async fn event_ids(app: &TestApp) -> Vec<String> {
    app.db()
        .await
        .query(
            "SELECT event_id FROM inventory_events ORDER BY event_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Makes a call that waits on a held lock: it must be abandoned at its deadline.
async fn assert_deadline_exceeded(
    app: &TestApp,
    request: tonic::Request<pb::ReportInventoryRequest>,
) {
    let status = app
        .eligibility()
        .report_inventory(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_call_past_the_callers_deadline_is_deadline_exceeded_and_rolled_back() {
    let app = spawn_app().await;
    set_stock(&app, "sku-d", "web", 0, 1).await;
    let lock = lock_level(&app, "sku-d").await;
    // tonic's own client would cancel at its deadline as the server answers; this one waits for
    // the server's answer.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let mut patient = EligibilityServiceClient::with_origin(
        tonic::service::interceptor::InterceptedService::new(
            client,
            restock::auth::Bearer::new(TEST_TOKEN),
        ),
        format!("http://{}", app.addr).parse().unwrap(),
    );
    let mut request = tonic::Request::new(report_request("sku-d", "ev-late", 5, 2));
    request.set_timeout(Duration::from_millis(300));
    let status = patient.report_inventory(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The abandoned transaction had written its event row before it waited; it must go.
    lock.batch_execute("COMMIT").await.unwrap();
    transactions_ended(&app).await;
    assert_eq!(event_ids(&app).await, ["ev-sku-d-web-1"]);
    assert_eq!(app.count("restocks").await, 0);
    // The same event again, in time, is applied: nothing of the first attempt stands in its way.
    let ack = app
        .eligibility()
        .report_inventory(report_request("sku-d", "ev-late", 5, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ack.acks[0].outcome,
        pb::InventoryOutcome::Applied as i32,
        "{ack:?}"
    );
    assert!(app.count("restocks").await > 0, "the restock starts now");
}

#[tokio::test]
async fn the_server_caps_the_deadline_a_caller_asks_for() {
    let app = spawn_app_with(|s| s.grpc.max_call_ms = 300).await;
    set_stock(&app, "sku-d", "web", 0, 1).await;
    let lock = lock_level(&app, "sku-d").await;
    // No deadline from the caller, then a generous one: the server's 300 ms applies to both.
    assert_deadline_exceeded(
        &app,
        tonic::Request::new(report_request("sku-d", "ev-a", 5, 2)),
    )
    .await;
    let mut request = tonic::Request::new(report_request("sku-d", "ev-b", 5, 3));
    request.set_timeout(Duration::from_secs(60));
    assert_deadline_exceeded(&app, request).await;
    lock.batch_execute("ROLLBACK").await.unwrap();
    transactions_ended(&app).await;
    assert_eq!(event_ids(&app).await, ["ev-sku-d-web-1"]);
}

#[tokio::test]
async fn an_inventory_stream_outlives_the_servers_deadline_cap() {
    let app = spawn_app_with(|s| s.grpc.max_call_ms = 100).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = app
        .eligibility()
        .stream_inventory(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for seq in 1..=3u64 {
        tx.send(pb::StreamInventoryRequest {
            tenant_id: "demo".into(),
            event: Some(event(&format!("ev-{seq}"), "sku-s", "web", 1, seq)),
        })
        .await
        .unwrap();
        let ack = acks.message().await.unwrap().unwrap().ack.unwrap();
        assert_eq!(ack.event_id, format!("ev-{seq}"));
        // Well past the cap between events.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(tx);
    assert!(acks.message().await.unwrap().is_none());
}

#[tokio::test]
async fn past_the_concurrency_limit_calls_are_shed_with_retry_info_while_health_and_admitted_calls_answer(
) {
    use tonic_health::pb::health_client::HealthClient;
    const LIMIT: usize = 4;
    let app = spawn_app_with(|s| {
        s.grpc.max_concurrent_calls = LIMIT;
        s.grpc.shed_retry_after_ms = 250;
    })
    .await;
    set_stock(&app, "sku-f", "web", 0, 1).await;
    let lock = lock_level(&app, "sku-f").await;
    // LIMIT calls admitted, each waiting on the lock inside its transaction.
    let admitted: Vec<_> = (0..LIMIT as u64)
        .map(|i| {
            let mut client = app.eligibility();
            tokio::spawn(async move {
                client
                    .report_inventory(report_request("sku-f", &format!("ev-in-{i}"), 5, 2 + i))
                    .await
            })
        })
        .collect();
    waiting_on_locks(&app, LIMIT as i64).await;
    // A flood meanwhile: every call is answered at once, none queued.
    let flood: Vec<_> = (0..50)
        .map(|i| {
            let mut client = app.eligibility();
            tokio::spawn(async move {
                client
                    .get_stock(pb::GetStockRequest {
                        tenant_id: "demo".into(),
                        variant_id: format!("sku-{i}"),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for call in flood {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
    }
    // Health still answers, SERVING.
    let health = HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1);
    // The admitted calls finish once the lock goes, and the server takes calls again.
    lock.batch_execute("COMMIT").await.unwrap();
    for call in admitted {
        call.await.unwrap().expect("an admitted call answers");
    }
    app.eligibility()
        .get_stock(pb::GetStockRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-f".into(),
            ..Default::default()
        })
        .await
        .expect("in-limit calls answer again");
}

#[tokio::test]
async fn every_call_gets_a_request_id_echoed_in_its_response() {
    let app = spawn_app().await;
    let mut request = tonic::Request::new(pb::GetStockRequest {
        tenant_id: "demo".into(),
        variant_id: "sku-1".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "checkout-7f3a.1".parse().unwrap());
    // Not found, as the variant is unknown: answers, errors included, carry the id.
    let status = app.eligibility().get_stock(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.metadata().get("x-request-id").unwrap(),
        "checkout-7f3a.1"
    );
    let mut request = tonic::Request::new(pb::ListExclusionsRequest {
        tenant_id: "demo".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "checkout-7f3a.2".parse().unwrap());
    let response = app.eligibility().list_exclusions(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "checkout-7f3a.2"
    );
    // None given (or an unusable one): one is made, errors included.
    let mut request = tonic::Request::new(pb::GetStockRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "not one we log as it is".parse().unwrap());
    let status = app.eligibility().get_stock(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let made = status
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    let raw = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = EligibilityServiceClient::new(raw)
        .get_stock(pb::GetStockRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.metadata().get("x-request-id").is_some());
}
