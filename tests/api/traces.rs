//! Traces and metrics over OTLP, received by a collector of the test's own (the collector's
//! TraceService and MetricsService, from opentelemetry-proto): a call's W3C `traceparent` is
//! the parent of its server span; the RPC counter and the pool's gauges are pushed.
//! The server runs as a process of its own, as tracing is set up once per process.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;

/// Every span and metric exported to it.
#[derive(Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: MetricsCollector,
}

/// The metrics half of the collector, every export's metrics in order.
#[derive(Clone, Default)]
pub struct MetricsCollector(Arc<Mutex<Vec<Metric>>>);

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.0.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                metrics.extend(scope.metrics);
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
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
                .add_service(MetricsServiceServer::new(collector.metrics.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Every export of the metric `name`, oldest first.
    pub fn metrics(&self, name: &str) -> Vec<Metric> {
        self.metrics
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.name == name)
            .cloned()
            .collect()
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
        // Export every 100 ms rather than every 5 s (spans) and every minute (metrics).
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100")
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

#[tokio::test]
async fn a_restock_is_traced_from_the_inventory_event_to_the_providers_answer() {
    use restock::proto::v1 as pb;
    use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
    use restock_sms::fake::FakeTwilio;

    let (collector, endpoint) = Collector::start().await;
    let fake = FakeTwilio::start().await.unwrap();
    let twilio = fake.config();
    let (mut child, channel) = traced_server(
        &fresh_database().await,
        &endpoint,
        &[
            ("RESTOCK__SMS__PROVIDER", "twilio"),
            ("RESTOCK__SMS__TWILIO_BASE_URL", &twilio.base_url),
            ("RESTOCK__SMS__TWILIO_ACCOUNT_SID", &twilio.account_sid),
            ("RESTOCK__SMS__TWILIO_AUTH_TOKEN", &twilio.auth_token),
            ("RESTOCK__DISPATCH__POLL_INTERVAL_MS", "50"),
            // The real clock runs here: text at any hour.
            ("RESTOCK__TENANTS__DEMO__QUIET_HOURS_START", "00:00"),
            ("RESTOCK__TENANTS__DEMO__QUIET_HOURS_END", "00:00"),
        ],
    )
    .await;
    WaitlistServiceClient::new(channel.clone())
        .subscribe(subscribe_request("sku-c", "+14155550167"))
        .await
        .unwrap();
    let mut inventory = EligibilityServiceClient::new(channel);
    inventory
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![event("ev-c-1", "sku-c", "web", 0, 1)],
        })
        .await
        .unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(pb::ReportInventoryRequest {
        tenant_id: "demo".into(),
        events: vec![event("ev-c-2", "sku-c", "web", 5, 2)],
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    inventory.report_inventory(request).await.unwrap();
    assert!(fake.wait_for_messages(1, Duration::from_secs(20)).await);
    let sent = fake.messages()[0].clone();
    let sent_parent = sent
        .traceparent
        .clone()
        .expect("the provider got a traceparent");
    // Spans are exported in batches as they end, so a parent (the send batch ends after its
    // provider call) can arrive in a later export than its child: wait for the whole chain.
    let chain = || {
        let spans = collector.spans();
        let call = spans
            .iter()
            .find(|s| {
                s.name == "provider send"
                    && sent_parent == format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id))
            })
            .cloned()?;
        let batch = spans
            .iter()
            .find(|s| s.name == "send batch" && s.span_id == call.parent_span_id)
            .cloned()?;
        let event = spans
            .iter()
            .find(|s| s.name == "inventory event" && hex(&s.trace_id) == trace_id)
            .cloned()?;
        let rpc = spans
            .iter()
            .find(|s| {
                s.name == "restock.v1.EligibilityService/ReportInventory"
                    && hex(&s.trace_id) == trace_id
            })
            .cloned()?;
        let plans: Vec<Span> = spans
            .iter()
            .filter(|s| s.name == "plan release" && hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        (!plans.is_empty()).then_some((call, batch, event, rpc, plans))
    };
    eventually(
        Duration::from_secs(20),
        "the spans from the call to the provider's answer",
        || async { chain().is_some() },
    )
    .await;
    let (call, batch, event, rpc, plans) = chain().unwrap();
    // The event, in the caller's trace, under the call's span.
    assert_eq!(event.parent_span_id, rpc.span_id);
    // Its release's planning, in the same trace, under the event.
    for plan in &plans {
        assert_eq!(plan.parent_span_id, event.span_id, "{plan:?}");
    }
    // The send batch links to the event; the provider call is its child (a client span), and
    // its context went to the provider as the traceparent header (matched above).
    assert!(
        batch
            .links
            .iter()
            .any(|l| l.trace_id == event.trace_id && l.span_id == event.span_id),
        "the send batch links to the event: {batch:?}"
    );
    assert_eq!(call.kind, 3, "SPAN_KIND_CLIENT");
    assert!(!format!("{:?}", collector.spans()).contains("5550167"));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn metrics_go_out_over_otlp_under_the_names_of_the_scrape() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point;

    let (collector, endpoint) = Collector::start().await;
    let (mut child, channel) = traced_server(&fresh_database().await, &endpoint, &[]).await;
    let mut client = WaitlistServiceClient::new(channel);
    for phone in ["+14155550168", "+14155550169"] {
        client
            .subscribe(subscribe_request("sku-m", phone))
            .await
            .unwrap();
    }
    let attr = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str| {
        attrs
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.clone())
            .and_then(|v| match v {
                Value::StringValue(s) => Some(s),
                _ => None,
            })
    };
    // The counter is cumulative: some export carries both calls.
    let subscribes_ok = || {
        collector
            .metrics("restock_grpc_calls")
            .iter()
            .filter_map(|m| match &m.data {
                Some(Data::Sum(sum)) if sum.is_monotonic => Some(sum.data_points.clone()),
                _ => None,
            })
            .flatten()
            .filter(|p| {
                attr(&p.attributes, "method").as_deref() == Some("Subscribe")
                    && attr(&p.attributes, "code").as_deref() == Some("OK")
                    && attr(&p.attributes, "service").as_deref()
                        == Some("restock.v1.WaitlistService")
            })
            .filter_map(|p| match p.value {
                Some(number_data_point::Value::AsInt(n)) => Some(n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(20),
        "both Subscribe calls in an OTLP export",
        || async { subscribes_ok() >= 2 },
    )
    .await;
    assert_eq!(subscribes_ok(), 2);
    let durations = collector.metrics("restock_grpc_call_duration");
    assert!(
        durations
            .iter()
            .any(|m| m.unit == "s" && matches!(m.data, Some(Data::Histogram(_)))),
        "{durations:?}"
    );
    // The pool's gauges are read at each export: the pool holds at most what was configured.
    let max = collector.metrics("restock_db_pool_max_connections");
    let last = max.last().expect("the pool's size is exported");
    let Some(Data::Gauge(g)) = &last.data else {
        panic!("{last:?}")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(8))
    );
    assert!(!collector.metrics("restock_db_pool_connections").is_empty());
    assert!(!collector.metrics("restock_outbox_messages").is_empty());
    let _ = child.kill();
    let _ = child.wait();
}
