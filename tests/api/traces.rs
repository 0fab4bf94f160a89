//! Traces over OTLP, received by a collector of the test's own (the collector's TraceService,
//! from opentelemetry-proto): a call's W3C `traceparent` is the parent of its server span.
//! The server runs as a process of its own, as tracing is set up once per process.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;

use crate::dispatch::eventually;
use crate::helpers::*;

/// Every span exported to it.
#[derive(Clone, Default)]
pub struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Starts one on a free port; answers its endpoint.
    pub async fn start() -> (Self, String) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    /// The spans named `name`.
    pub fn named(&self, name: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }
}

/// A `restock serve` process tracing to `endpoint`.
pub async fn traced_server(
    db_url: &str,
    endpoint: &str,
    extra: &[(&str, &str)],
) -> (Child, Channel) {
    let (_, redis) = base_env();
    let mut command = Command::new(env!("CARGO_BIN_EXE_restock"));
    command
        .arg("serve")
        .envs(test_credential_env())
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis)
        .env("RESTOCK__GRPC__PORT", "0")
        .env("RESTOCK__HTTP__PORT", "0")
        .env("RESTOCK__DATABASE__POOL_SIZE", "8")
        .env("RESTOCK__TELEMETRY__OTLP_ENDPOINT", endpoint)
        .env(
            "RESTOCK__REDIS__KEY_PREFIX",
            format!("traces-{}", uuid::Uuid::new_v4().simple()),
        )
        .env(
            "RESTOCK__SMS__LOG_PATH",
            std::env::temp_dir()
                .join(format!("restock-{}-outbox.jsonl", uuid::Uuid::new_v4()))
                .display()
                .to_string(),
        )
        // Export every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    for (k, v) in extra {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let (grpc, _) = listening_addrs(&mut child).await;
    let channel = connect(grpc).await;
    (child, channel)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_calls_traceparent_is_the_parent_of_its_server_span() {
    let (collector, endpoint) = Collector::start().await;
    let (mut child, channel) = traced_server(&fresh_database().await, &endpoint, &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(subscribe_request("sku-t", "+14155550166"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    WaitlistServiceClient::new(channel)
        .subscribe(request)
        .await
        .unwrap();
    let name = "restock.v1.WaitlistService/Subscribe";
    eventually(Duration::from_secs(20), "the Subscribe span", || async {
        !collector.named(name).is_empty()
    })
    .await;
    let span = &collector.named(name)[0];
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent_id);
    // SPAN_KIND_SERVER, with the RPC conventions' attributes.
    assert_eq!(span.kind, 2);
    let attr = |key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    };
    assert!(attr("rpc.system").contains("grpc"), "{span:?}");
    assert!(attr("rpc.method").contains("Subscribe"), "{span:?}");
    assert!(attr("rpc.grpc.status_code").contains('0'), "{span:?}");
    assert!(attr("caller").contains("test"), "{span:?}");
    // No phone number in any span.
    assert!(!format!("{:?}", collector.spans()).contains("5550166"));
    let _ = child.kill();
    let _ = child.wait();
}
