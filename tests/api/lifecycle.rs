//! The server as a process: health, reflection through an SRE's tool, configuration errors and
//! graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

use crate::helpers::*;

async fn wait_for_status(app: &TestApp, service: &str, want: ServingStatus) {
    let mut client = HealthClient::new(app.channel.clone());
    for _ in 0..200 {
        let got = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status);
        if got.is_ok_and(|s| s == want as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{service} never became {want:?}");
}

#[tokio::test]
async fn health_is_serving_when_postgres_and_redis_answer() {
    let app = spawn_app().await;
    wait_for_status(&app, "", ServingStatus::Serving).await;
    wait_for_status(&app, "restock.v1.WaitlistService", ServingStatus::Serving).await;
}

#[tokio::test]
async fn redis_down_stops_dispatch_in_health_not_the_waitlist() {
    let app = spawn_app_with(|s| s.redis.url = "redis://127.0.0.1:1/0".into()).await;
    // Only dispatch needs Redis (its caps); the rest, and the server as a whole, serve.
    wait_for_status(&app, "restock.v1.WaitlistService", ServingStatus::Serving).await;
    wait_for_status(
        &app,
        "restock.v1.EligibilityService",
        ServingStatus::Serving,
    )
    .await;
    wait_for_status(&app, "", ServingStatus::Serving).await;
    wait_for_status(
        &app,
        "restock.v1.DispatchService",
        ServingStatus::NotServing,
    )
    .await;
    // Postgres still answers, so the waitlist works regardless.
    app.subscribe(subscribe_request("sku-1", "+14155550900"))
        .await
        .unwrap();
    // And the metrics say which dependency is down, for the alert that pages on it.
    let metrics = app.metrics().await.body;
    assert!(
        metrics.contains("restock_dependency_up{dependency=\"redis\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("restock_dependency_up{dependency=\"postgres\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stopping_drains_and_reports_not_serving() {
    let app = spawn_app().await;
    wait_for_status(&app, "", ServingStatus::Serving).await;
    // A load balancer's watch, open before the stop: it must hear NOT_SERVING before the
    // server goes away (tests/api/shutdown.rs checks the same of the real binary on SIGTERM).
    let mut watch = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("a status").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopped = tokio::spawn(app.stop());
    let mut heard = Vec::new();
    while let Ok(Some(update)) = watch.message().await {
        heard.push(update.status);
        if update.status == ServingStatus::NotServing as i32 {
            break;
        }
    }
    assert_eq!(
        heard.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "the watch heard {heard:?} before the stream ended"
    );
    stopped.await.unwrap().expect("a clean stop");
}

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/node_modules/.bin")
        .join(name);
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

#[tokio::test]
async fn an_sre_subscribes_with_buf_curl_through_reflection() {
    let app = spawn_app().await;
    let buf = tool("buf").expect("buf is missing: run `just test` (scripts/tools.sh installs it)");
    let base = format!("http://{}", app.addr);
    let addr = app.addr;
    let (list, call) = tokio::task::spawn_blocking(move || {
        let list = Command::new(&buf)
            .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services", &base])
            .output()
            .unwrap();
        let body = r#"{"tenantId":"demo","variantId":"sku-1","phoneNumber":"+14155550901","consent":{"consentText":"Text me","source":"CONSENT_SOURCE_WEB","captureTime":"2026-01-01T00:00:00Z"}}"#;
        let call = |token: Option<&str>| {
            let mut command = Command::new(&buf);
            command.args(["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--data", body]);
            if let Some(token) = token {
                command.args(["-H", &format!("authorization: Bearer {token}")]);
            }
            command
                .arg(format!("http://{addr}/restock.v1.WaitlistService/Subscribe"))
                .output()
                .unwrap()
        };
        let anonymous = call(None);
        assert!(!anonymous.status.success());
        assert!(
            String::from_utf8_lossy(&anonymous.stderr).contains("unauthenticated"),
            "{anonymous:?}"
        );
        (list, call(Some(TEST_TOKEN)))
    })
    .await
    .unwrap();
    let services = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    for s in [
        "restock.v1.WaitlistService",
        "restock.v1.EligibilityService",
        "restock.v1.DispatchService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(s), "{s} not listed: {services}");
    }
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&call.stdout).unwrap();
    assert_eq!(out["created"], true);
    assert_eq!(out["subscription"]["phoneNumber"], "+14155550901");
    assert_eq!(app.count("subscriptions").await, 1);
}

#[test]
fn a_bad_setting_stops_the_binary_with_its_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_restock"))
        .arg("serve")
        .env("RESTOCK__GRPC__PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpc.port"), "{err}");
}

#[tokio::test]
async fn the_binary_serves_and_exits_zero_on_sigterm() {
    let db = fresh_database().await;
    let (_, redis) = base_env();
    let mut child = Command::new(env!("CARGO_BIN_EXE_restock"))
        .arg("serve")
        .envs(test_credential_env())
        .env("DATABASE_URL", db)
        .env("REDIS_URL", redis)
        .env("RESTOCK__GRPC__PORT", "0")
        .env("RESTOCK__HTTP__PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, _) = listening_addrs(&mut child).await;
    let channel = connect(addr).await;
    restock::proto::v1::waitlist_service_client::WaitlistServiceClient::new(channel)
        .subscribe(subscribe_request("sku-1", "+14155550902"))
        .await
        .unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
