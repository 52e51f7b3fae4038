//! W3C trace context (`traceparent`, `tracestate`) carried in gRPC metadata.
//!
//! Server side, [`extract`] reads the caller's context from the request headers so the
//! server span becomes its child ([`crate::policy`] does this for every request).
//! Client side, [`TracePropagation`] is a tonic interceptor that writes the current
//! span's context into outgoing metadata. Together they make one trace of a request
//! that crosses the gateway and the model services.

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    Context,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value);
        if let (Ok(key), Ok(value)) = (key, value) {
            self.0.insert(key, value);
        }
    }
}

/// The remote parent context found in request headers (empty when there is none).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the current tracing span's OpenTelemetry context into `metadata`.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// Client interceptor adding the current trace context, and the id of the request being
/// served ([`crate::request_id::current`]), to every outgoing request: the called service
/// logs under the same id.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracePropagation;

impl tonic::service::Interceptor for TracePropagation {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(request.metadata_mut());
        if let Some(id) = crate::request_id::current() {
            if let Ok(value) = id.as_str().parse() {
                request.metadata_mut().insert(crate::request_id::HEADER, value);
            }
        }
        Ok(request)
    }
}
