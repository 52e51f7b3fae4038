//! Traces leave a service over OTLP/gRPC when an endpoint is configured: real service
//! processes, a loopback OTLP collector, calls with a W3C `traceparent`. A call through
//! the gateway is one trace: caller -> gateway server span -> stage span -> model service.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use mmc_proto::{
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedTextRequest},
    gateway::v1::{gateway_service_client::GatewayServiceClient, search_images_request::Query, SearchImagesRequest},
};
use mmc_tests::{binary, eventually, free_port_range, ChildGuard};
use nix::{sys::signal::Signal, unistd::Pid};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(&self, request: Request<ExportTraceServiceRequest>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A loopback OTLP collector; returns it and its address.
async fn start_collector() -> (Collector, std::net::SocketAddr) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder().add_service(svc).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)).await
    });
    (collector, otlp_addr)
}

/// Starts workspace binary `name` exporting to `otlp`, with `extra` flags; returns the
/// process and a connected channel.
async fn spawn_traced(name: &str, otlp: std::net::SocketAddr, extra: &[&str]) -> (ChildGuard, tonic::transport::Channel, String) {
    let ports = free_port_range(2);
    let child = ChildGuard::spawn(
        Command::new(binary(name))
            .args(["--listen", &format!("127.0.0.1:{ports}"), "--metrics-listen", &format!("127.0.0.1:{}", ports + 1)])
            .args(["--otlp-endpoint", &format!("http://{otlp}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{ports}");
    let channel = eventually(Duration::from_secs(30), || async { tonic::transport::Channel::from_shared(url.clone()).unwrap().connect().await.ok() })
        .await
        .unwrap_or_else(|| panic!("{name} accepts connections"));
    (child, channel, url)
}

/// Stops a traced process with SIGTERM (which flushes its batch exporter).
fn stop(mut child: ChildGuard, name: &str) {
    nix::sys::signal::kill(Pid::from_raw(child.pid()), Signal::SIGTERM).unwrap();
    let status = child.wait_timeout(Duration::from_secs(30)).unwrap_or_else(|| panic!("{name} exits"));
    assert!(status.success(), "{name}: {status}");
}

type ExportedSpan = (Option<String>, opentelemetry_proto::tonic::trace::v1::Span);

/// Every exported span with its resource's `service.name`.
fn exported_spans(collector: &Collector) -> Vec<ExportedSpan> {
    let exported = collector.0.lock().unwrap().clone();
    exported
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map({
                    let service = service.clone();
                    move |s| (service.clone(), s.clone())
                })
            })
        })
        .collect()
}

fn traced<T>(message: T, trace_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_spans_are_exported_over_otlp_with_the_callers_trace_id() {
    let (collector, otlp_addr) = start_collector().await;
    let (embed, channel, _) = spawn_traced("mmc-embed", otlp_addr, &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request = traced(EmbedTextRequest { texts: vec!["hi".into()], ..Default::default() }, trace_id);
    let _ = EmbedServiceClient::new(channel).embed_text(request).await;
    stop(embed, "mmc-embed");

    let spans = exported_spans(&collector);
    let (service, span) = spans
        .iter()
        .find(|(_, s)| s.name == "mmc.embed.v1.EmbedService/EmbedText")
        .unwrap_or_else(|| panic!("server span exported; got {:?}", spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()));
    assert!(service.as_deref().unwrap_or_default().contains("mmc-embed"), "service.name: {service:?}");
    assert_eq!(hex::encode(&span.trace_id), trace_id, "joins the caller's trace");
    assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7", "caller's span is the parent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_flow_is_one_trace_across_services() {
    let (collector, otlp_addr) = start_collector().await;
    let (embed, embed_channel, embed_url) = spawn_traced("mmc-embed", otlp_addr, &[]).await;
    // Wait for the model, so the one traced call below goes through without retries.
    let serving = eventually(Duration::from_secs(60), || {
        let channel = embed_channel.clone();
        async move {
            use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
            let status = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.ok()?;
            (status.into_inner().status() == ServingStatus::Serving).then_some(())
        }
    })
    .await;
    assert!(serving.is_some(), "mmc-embed SERVING");
    let data = tempfile::tempdir().unwrap();
    let args = ["--embed-endpoint", &embed_url, "--data-dir", data.path().to_str().unwrap(), "--http-listen", "127.0.0.1:0"];
    let (gateway, channel, _) = spawn_traced("mmc-gateway", otlp_addr, &args).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let request = traced(SearchImagesRequest { query: Some(Query::Text("a cat".into())), ..Default::default() }, trace_id);
    GatewayServiceClient::new(channel).search_images(request).await.expect("search answered");
    stop(gateway, "mmc-gateway");
    stop(embed, "mmc-embed");

    let spans = exported_spans(&collector);
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    let find = |name: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == name && hex::encode(&s.trace_id) == trace_id)
            .unwrap_or_else(|| panic!("{name} in the trace; got {names:?}"))
    };
    let (gateway_service, search) = find("mmc.gateway.v1.GatewayService/SearchImages");
    let (_, stage) = find("embed_query");
    let (embed_service, embed_text) = find("mmc.embed.v1.EmbedService/EmbedText");
    assert!(gateway_service.as_deref().unwrap_or_default().contains("mmc-gateway"), "{gateway_service:?}");
    assert!(embed_service.as_deref().unwrap_or_default().contains("mmc-embed"), "{embed_service:?}");
    // caller -> gateway server span -> stage span -> embed server span.
    assert_eq!(hex::encode(&search.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(stage.parent_span_id, search.span_id, "the stage span is a child of the gateway's server span");
    assert_eq!(embed_text.parent_span_id, stage.span_id, "the embed server span is a child of the stage span");
}
