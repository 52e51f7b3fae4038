//! Traces leave a service over OTLP/gRPC when an endpoint is configured: a real service
//! process, a loopback OTLP collector, one call with a W3C `traceparent`.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use mmc_proto::embed::v1::{embed_service_client::EmbedServiceClient, EmbedTextRequest};
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
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_spans_are_exported_over_otlp_with_the_callers_trace_id() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let ports = free_port_range(2);
    let mut embed = ChildGuard::spawn(
        Command::new(binary("mmc-embed"))
            .args(["--listen", &format!("127.0.0.1:{ports}"), "--metrics-listen", &format!("127.0.0.1:{}", ports + 1)])
            .args(["--otlp-endpoint", &format!("http://{otlp_addr}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{ports}");
    let channel = eventually(Duration::from_secs(30), || async {
        tonic::transport::Channel::from_shared(url.clone()).unwrap().connect().await.ok()
    })
    .await
    .expect("mmc-embed accepts connections");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(EmbedTextRequest { texts: vec!["hi".into()], ..Default::default() });
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    let _ = EmbedServiceClient::new(channel).embed_text(request).await;

    // Shutdown flushes the batch exporter.
    nix::sys::signal::kill(Pid::from_raw(embed.pid()), Signal::SIGTERM).unwrap();
    let status = embed.wait_timeout(Duration::from_secs(30)).expect("mmc-embed exits");
    assert!(status.success(), "{status}");

    let exported = collector.0.lock().unwrap().clone();
    let spans: Vec<_> = exported
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map({
                let service = service.clone();
                move |s| (service.clone(), s.clone())
            }))
        })
        .collect();
    let (service, span) = spans
        .iter()
        .find(|(_, s)| s.name == "mmc.embed.v1.EmbedService/EmbedText")
        .unwrap_or_else(|| panic!("server span exported; got {:?}", spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()));
    assert!(service.as_deref().unwrap_or_default().contains("mmc-embed"), "service.name: {service:?}");
    assert_eq!(hex::encode(&span.trace_id), trace_id, "joins the caller's trace");
    assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7", "caller's span is the parent");
}
