//! Request ids: one short id per request, returned to the client and written on every log
//! line the request causes, in every service it reaches.
//!
//! Error messages to clients stay short and free of internal detail (addresses of model
//! services, the constraint engine's state); that detail goes to the service log. The id
//! joins the two: a user who reports `x-request-id: 4bf9…` lets an operator find the log
//! lines (`grep 4bf9…`) of that one call in the gateway and in each model service it
//! called.
//!
//! - **Which id.** The caller's `x-request-id` when it is a short token (a proxy in front,
//!   or a client, may choose it; the gateway passes its own on to the model services), else
//!   the trace id of the caller's W3C `traceparent` (so the id also finds the trace in an
//!   OpenTelemetry backend), else a new random 128-bit id. Anything else a client sends in
//!   the header (over 64 bytes, spaces, control characters) is ignored, so it can neither
//!   flood nor forge log lines.
//! - **Where it goes.** The server's request span carries it as the `request_id` field,
//!   which the log formatter prints on each line inside the span; every response carries
//!   it as the `x-request-id` header (gRPC: initial metadata, and trailers); outgoing calls
//!   made while serving the request carry it on ([`current`], used by
//!   [`crate::propagation::TracePropagation`]).
//!
//! [`current`] finds the id of the span being served: [`layer`] stores it in the span's
//! extensions when the span is made, so spawned tasks that keep the span (`.instrument`)
//! find it too.

use std::{fmt, sync::Arc};

use tracing::{field::Field, span, Subscriber};
use tracing_subscriber::{filter::DynFilterFn, layer::Context, registry::LookupSpan, Layer};

/// The header (HTTP) and metadata key (gRPC) that carries the id both ways.
pub const HEADER: &str = "x-request-id";

/// The span field that carries the id; [`layer`] looks for it.
pub const FIELD: &str = "request_id";

/// Longest id taken from a caller, in bytes.
const MAX_LEN: usize = 64;

/// One request's id (cheap to clone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id of a request with these headers (see the module docs for the order).
    pub fn of(headers: &http::HeaderMap) -> Self {
        let given = headers.get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| is_token(v));
        let traced = || headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(trace_id);
        given.map(Self::from).or_else(|| traced().map(Self::from)).unwrap_or_else(Self::random)
    }

    /// A new random id: 32 lowercase hex digits, the shape of a W3C trace id.
    pub fn random() -> Self {
        Self::from(format!("{:032x}", rand::random::<u128>()).as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a header value (always valid: it is a visible ASCII token).
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&self.0).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
    }
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1 to [`MAX_LEN`] bytes of letters, digits and `-_.:` (what proxies and tracing systems
/// use), nothing a log line could be broken with.
fn is_token(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_LEN && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), unless it is
/// malformed or all zeros (invalid by the spec).
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) && id.bytes().any(|b| b != b'0');
    valid.then_some(id)
}

/// The id of the request whose span (or a descendant of it) is current, if any.
pub fn current() -> Option<RequestId> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            span.scope().find_map(|s| s.extensions().get::<RequestId>().cloned())
        })
        .flatten()
}

/// The tracing layer that makes [`current`] work: it keeps the `request_id` field of each
/// new span in the span's extensions. Its filter only lets spans with that field through,
/// so it enables no other span (a layer without a filter would turn on every span of every
/// library, h2 and hyper included).
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let has_field = |meta: &tracing::Metadata<'_>| meta.is_span() && meta.fields().field(FIELD).is_some();
    let filter = DynFilterFn::new(move |meta, _| has_field(meta)).with_callsite_filter(move |meta| {
        if has_field(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    });
    Keeper.with_filter(filter)
}

struct Keeper;

impl<S> Layer<S> for Keeper
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut visitor = Visitor(None);
        attrs.record(&mut visitor);
        if let (Some(request_id), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(request_id);
        }
    }
}

struct Visitor(Option<RequestId>);

impl tracing::field::Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == FIELD {
            self.0 = Some(RequestId::from(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == FIELD {
            // `request_id = %id` records through Display, which Debug of the wrapper prints.
            self.0 = Some(RequestId::from(format!("{value:?}").as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap())).collect()
    }

    #[test]
    fn the_callers_token_wins_then_the_trace_id_then_a_new_one() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(RequestId::of(&headers(&[("x-request-id", "abc-123"), ("traceparent", traceparent)])).as_str(), "abc-123");
        assert_eq!(RequestId::of(&headers(&[("traceparent", traceparent)])).as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let fresh = RequestId::of(&headers(&[]));
        assert_eq!(fresh.as_str().len(), 32);
        assert_ne!(fresh, RequestId::of(&headers(&[])));
    }

    #[test]
    fn ids_that_could_flood_or_forge_a_log_line_are_replaced() {
        let long = "a".repeat(65);
        for bad in [long.as_str(), "a b", "x\"y", "a=b", ""] {
            let id = RequestId::of(&headers(&[("x-request-id", bad)]));
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 32, "{bad:?}");
        }
        for bad in ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-XYZ-00f067aa0ba902b7-01", "junk"] {
            assert_ne!(RequestId::of(&headers(&[("traceparent", bad)])).as_str(), "00000000000000000000000000000000", "{bad:?}");
        }
    }

    #[test]
    fn current_finds_the_id_of_an_enclosing_span() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current(), None);
            let id = RequestId::from("req-7");
            let request = tracing::info_span!("request", request_id = %id);
            let _entered = request.enter();
            let child = tracing::debug_span!("stage");
            let _child = child.enter();
            assert_eq!(current(), Some(id));
        });
    }
}
