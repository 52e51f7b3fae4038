//! Structured logs and OpenTelemetry traces.
//!
//! Logs go to stderr as text or JSON lines (`--log-format`), filtered by `RUST_LOG`
//! (default [`DEFAULT_FILTER`]). When an OTLP endpoint is configured (`--otlp-endpoint` or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT`), every tracing span is also exported as an
//! OpenTelemetry span over OTLP/gRPC, with `service.name` set to the mmc service.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Log filter when `RUST_LOG` is unset: `info`, except for libraries that narrate their
/// internals at info level (whisper.cpp's model-load report) or warn once per damaged
/// frame of a media file (symphonia's demuxers; the service reports skipped packets itself).
pub const DEFAULT_FILTER: &str = "info,whisper_rs=warn,symphonia=error,symphonia_bundle_mp3=error";

use crate::config::{LogFormat, ServerArgs};

/// Keeps the trace pipeline alive; flushes and shuts it down when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("trace exporter shutdown: {e}");
            }
        }
    }
}

/// Installs the global log/trace subscriber for `service`. Call once, inside the Tokio
/// runtime (the OTLP exporter uses tonic).
pub fn init(service: &str, args: &ServerArgs) -> anyhow::Result<TelemetryGuard> {
    init_with(service, args.log_format, args.otlp_endpoint.as_deref())
}

/// As [`init`], from the individual settings (used by the `mmc` command too).
pub fn init_with(service: &str, format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(std::io::stderr).boxed(),
    };
    let provider = match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("OTLP exporter for {endpoint}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(format!("mmc-{service}")).build())
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("mmc")).with_filter(filter()));
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .with(crate::request_id::layer())
        .try_init()
        .context("installing the tracing subscriber")?;
    if let Some(endpoint) = otlp_endpoint.filter(|e| !e.is_empty()) {
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider })
}
