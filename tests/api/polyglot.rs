//! The proto is a public API: a Python client generated from `proto/` with grpcio-tools
//! subscribes against the running server.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

const CLIENT: &str = r#"
import sys, grpc
sys.path.insert(0, sys.argv[1])
from restock.v1 import waitlist_pb2, waitlist_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
channel = grpc.insecure_channel(sys.argv[2])
stub = waitlist_pb2_grpc.WaitlistServiceStub(channel)
auth = [("authorization", "Bearer " + sys.argv[3])]
captured = Timestamp(); captured.GetCurrentTime(); captured.seconds -= 60
resp = stub.Subscribe(waitlist_pb2.SubscribeRequest(
    tenant_id="demo", variant_id="sku-py", phone_number="020 7946 0958", default_region="GB",
    consent=waitlist_pb2.Consent(consent_text="Text me when it is back", source=waitlist_pb2.CONSENT_SOURCE_APP, capture_time=captured)),
    metadata=auth)
assert resp.created, resp
print(resp.subscription.phone_number, waitlist_pb2.SubscriptionStatus.Name(resp.subscription.status))
try:
    stub.Subscribe(waitlist_pb2.SubscribeRequest(tenant_id="demo"), metadata=auth)
except grpc.RpcError as e:
    print(e.code().name)
try:
    stub.Subscribe(waitlist_pb2.SubscribeRequest(tenant_id="demo"))
except grpc.RpcError as e:
    print(e.code().name)
"#;

#[tokio::test]
async fn a_python_client_generated_from_the_proto_subscribes() {
    let app = spawn_app().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/tools/venv/bin/python");
    assert!(
        python.exists(),
        "grpcio-tools venv missing: run `just test` (scripts/tools.sh makes it)"
    );
    let out_dir =
        std::env::temp_dir().join(format!("restock-py-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let addr = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        let gen = Command::new(&python)
            .args(["-c", "import grpc_tools, os, sys; from grpc_tools import protoc; \
                sys.exit(protoc.main(['protoc', '-I' + os.path.join(os.path.dirname(grpc_tools.__file__), '_proto')] + sys.argv[1:]))"])
            .arg(format!("-I{}", root.join("proto").display()))
            .arg(format!("--python_out={}", out_dir.display()))
            .arg(format!("--grpc_python_out={}", out_dir.display()))
            .args(["restock/v1/common.proto", "restock/v1/waitlist.proto", "restock/v1/eligibility.proto", "restock/v1/dispatch.proto"])
            .current_dir(root.join("proto"))
            .output()
            .unwrap();
        assert!(gen.status.success(), "protoc: {}", String::from_utf8_lossy(&gen.stderr));
        let run = Command::new(&python).args(["-c", CLIENT]).arg(&out_dir).arg(&addr).arg(TEST_TOKEN).output().unwrap();
        let _ = std::fs::remove_dir_all(&out_dir);
        run
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "+442079460958 SUBSCRIPTION_STATUS_ACTIVE",
            "INVALID_ARGUMENT",
            "UNAUTHENTICATED"
        ]
    );
}
