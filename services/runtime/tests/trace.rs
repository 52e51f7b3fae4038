//! W3C trace context across a real gRPC hop: the client's span is the parent of the
//! server's span. In its own test binary because tracing caches per-callsite interest
//! process-wide, so a thread-local subscriber is only reliable when no other test runs.

mod common;

use std::time::Duration;

use common::{args, sleep_req, TestServer};
use mmc_proto::embed::v1::embed_service_client::EmbedServiceClient;
use mmc_runtime::propagation::TracePropagation;

#[tokio::test]
async fn client_span_is_parent_of_server_span() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporterBuilder, SdkTracerProvider};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{layer::SubscriberExt, Layer};

    let exporter = InMemorySpanExporterBuilder::new().build();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start(args(&[])).await;
    let ch = server.channel().await;
    let mut client = EmbedServiceClient::with_interceptor(ch, TracePropagation);

    let span = tracing::info_span!("client-operation");
    let client_cx = span.context();
    let client_span_id = client_cx.span().span_context().span_id();
    let trace_id = client_cx.span().span_context().trace_id();
    async { client.embed_text(sleep_req(0)).await.unwrap() }.instrument(span.clone()).await;
    drop(span);

    let mut found = None;
    for _ in 0..100 {
        let spans = exporter.get_finished_spans().unwrap();
        found = spans.into_iter().find(|s| s.name == "mmc.embed.v1.EmbedService/EmbedText");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_span = found.unwrap_or_else(|| {
        let names: Vec<_> = exporter.get_finished_spans().unwrap().into_iter().map(|s| s.name).collect();
        panic!("server span not exported; spans: {names:?}")
    });
    assert_eq!(server_span.span_context.trace_id(), trace_id, "same trace");
    assert_eq!(server_span.parent_span_id, client_span_id, "client span is the parent");
    assert_eq!(server_span.span_kind, opentelemetry::trace::SpanKind::Server);
    server.stop().await.unwrap();
}
