//! One trace per task across processes: `umi run` with remote role workers, all
//! exporting over OTLP to a stand-in collector (a test double that records what the real
//! exporters send). The worker's span must sit under the `role_call` span that made the
//! call, in the task's trace, and name the task.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use support::procs::{start_worker, worker_command};
use support::umi;

/// A span as received: (service name, span name, trace id, span id, parent span id,
/// attributes as `key=value`).
type Received = (String, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<String>);

/// Test double for an OpenTelemetry collector: keeps every exported span.
#[derive(Clone, Default)]
struct RecordingCollector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for RecordingCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attributes = s
                        .attributes
                        .iter()
                        .map(|a| {
                            let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(text)) => text.clone(),
                                other => format!("{other:?}"),
                            };
                            format!("{}={value}", a.key)
                        })
                        .collect();
                    spans.push((
                        service.clone(),
                        s.name,
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                        attributes,
                    ));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn start_collector() -> (RecordingCollector, SocketAddr) {
    let collector = RecordingCollector::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let service = collector.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
    });
    (collector, addr)
}

fn traced(cmd: &mut Command, collector: SocketAddr) -> &mut Command {
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env_remove("RUST_LOG")
}

#[test]
fn a_workers_span_joins_the_trace_of_the_task_that_called_it() {
    let (collector, addr) = start_collector();
    let mut workers = Vec::new();
    let mut endpoints = Vec::new();
    for role in ["planner", "caller", "summarizer"] {
        let (w, at) = start_worker(traced(&mut worker_command(role, None), addr));
        endpoints.push(at);
        workers.push(w);
    }
    let out = tempfile::tempdir().unwrap();
    let mut cmd = umi();
    cmd.args(["run", "--queries", "tests/fixtures/one-query.json", "--out"])
        .arg(out.path())
        .args([
            "--max-steps",
            "1",
            "--max-new-tokens",
            "4",
            "--temperature",
            "0",
        ])
        .args([
            "--planner-endpoint",
            &endpoints[0],
            "--caller-endpoint",
            &endpoints[1],
        ])
        .args(["--summarizer-endpoint", &endpoints[2]]);
    let status = traced(&mut cmd, addr).status().unwrap();
    assert!(status.success());
    for w in &mut workers {
        assert!(w.terminate().success(), "{}", w.stderr()); // flushes its spans
    }

    let spans = collector.0.lock().unwrap().clone();
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.0.contains(service) && s.1 == name)
            .unwrap_or_else(|| panic!("no {name} span from {service} among {spans:?}"))
            .clone()
    };
    let task = find("\"umi\"", "task");
    let role_call = find("\"umi\"", "role_call");
    let worker = find("umi-planner", "worker_generate");
    assert_eq!(
        role_call.2, task.2,
        "the role call is not in the task's trace"
    );
    assert_eq!(
        worker.2, role_call.2,
        "the worker's span is not in the task's trace"
    );
    assert_eq!(
        worker.4, role_call.3,
        "the worker's span is not under the role call"
    );
    // The worker's span names the task, for logs read without the trace.
    let task_id = task.5.iter().find(|a| a.starts_with("task_id=")).unwrap();
    assert!(
        worker.5.contains(task_id),
        "{task_id} not among the worker span's {:?}",
        worker.5
    );
}
