//! The per-request policy every mmc server applies, as one tower layer:
//!
//! 1. **Exemptions**: health checks and reflection bypass everything below, so a busy
//!    server still answers its probes.
//! 2. **Authentication** (when the server has API keys, [`crate::auth`]): a request without
//!    a valid `authorization: Bearer <key>` gets UNAUTHENTICATED before it costs anything.
//! 3. **Load shedding**: a global semaphore of `max_concurrency` permits. A request that
//!    finds none gets RESOURCE_EXHAUSTED at once (clients retry with backoff or go to
//!    another replica) instead of waiting in an unbounded queue. The permit is held until
//!    the response body ends, so a streaming RPC counts for as long as it streams.
//! 4. **Deadline**: the client's `grpc-timeout`, capped by the server's default, covers
//!    the whole call including a streamed response. When it passes, the call ends with
//!    DEADLINE_EXCEEDED and the handler's future or stream is dropped (cancelled).
//! 5. **Tracing**: a server span per request whose parent is the caller's W3C trace
//!    context from the metadata, carrying the request id ([`crate::request_id`]) that
//!    every answer returns as `x-request-id` (initial metadata and trailers).
//! 6. **Metrics**: started/handled counters by gRPC code, latency histogram, in-flight
//!    gauge (see [`crate::metrics`]).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use std::future::Future as _;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Frame;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{body::Body, Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    metrics as m, propagation,
    request_id::{self, RequestId},
};

/// Trailer of every answer that has a body: the milliseconds from the request's arrival
/// here to the answer's end, so a caller can tell the server's time from its own cost of
/// the hop (the gateway reports both per stage).
pub const HANDLING_MS_KEY: &str = "mmc-handling-ms";

/// Paths that are never shed, limited or timed: probes must work under load.
const EXEMPT_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

/// The tonic timeout layer (outside ours) also honours `grpc-timeout`, but ends the call
/// with CANCELLED. Firing this much earlier makes ours win and answer DEADLINE_EXCEEDED,
/// as the gRPC spec asks.
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

/// Settings of the policy layer.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Requests handled at once; more are shed.
    pub max_concurrency: usize,
    /// Deadline for requests without `grpc-timeout`, and cap for those with one.
    pub default_timeout: Duration,
    /// When set, every request but the exempt ones must carry one of these keys.
    pub api_keys: Option<crate::auth::ApiKeys>,
}

/// Tower layer applying [`PolicyConfig`] to every request (see module docs).
#[derive(Clone)]
pub struct PolicyLayer {
    config: Arc<PolicyConfig>,
    permits: Arc<Semaphore>,
}

impl PolicyLayer {
    pub fn new(config: PolicyConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrency));
        Self { config: Arc::new(config), permits }
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService { inner, config: self.config.clone(), permits: self.permits.clone() }
    }
}

/// The service produced by [`PolicyLayer`].
#[derive(Clone)]
pub struct PolicyService<S> {
    inner: S,
    config: Arc<PolicyConfig>,
    permits: Arc<Semaphore>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for PolicyService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // The usual tower dance: call the instance that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_owned();
        if EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(inner.call(req));
        }

        let (service, method) = split_path(&path);
        let request_id = RequestId::of(req.headers());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = %request_id,
        );
        let _ = span.set_parent(propagation::extract(req.headers()));
        let mut observer = Observer::start(service, method, span.clone());

        // Authentication before anything costs: a refused call holds no permit.
        if let Some(keys) = &self.config.api_keys {
            let authorization = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if let Err(e) = keys.authorize(authorization, crate::auth::scope_of_method(&observer.method)) {
                let status = auth_status(e);
                observer.finish(status.code());
                return Box::pin(async move { Ok(with_id(status.into_http(), &request_id)) });
            }
        }

        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!(m::SHED, "grpc_service" => observer.service.clone(), "grpc_method" => observer.method.clone()).increment(1);
            let status = Status::resource_exhausted(format!(
                "server at capacity ({} requests in flight); retry with backoff or use another replica",
                self.config.max_concurrency
            ));
            observer.finish(status.code());
            return Box::pin(async move { Ok(with_id(status.into_http(), &request_id)) });
        };

        let timeout = parse_grpc_timeout(req.headers()).map_or(self.config.default_timeout, |t| t.min(self.config.default_timeout));
        let deadline = tokio::time::Instant::now() + timeout.saturating_sub(DEADLINE_MARGIN);

        Box::pin(
            async move {
                let response = match tokio::time::timeout_at(deadline, inner.call(req)).await {
                    Err(_) => {
                        let status = deadline_status(timeout);
                        observer.finish(status.code());
                        return Ok(with_id(status.into_http(), &request_id));
                    }
                    Ok(Err(e)) => {
                        observer.finish(Code::Internal);
                        return Err(e);
                    }
                    Ok(Ok(mut response)) => {
                        client_decode_error(response.headers_mut());
                        with_id(response, &request_id)
                    }
                };
                // Trailers-only response (an error before any message): the code is in
                // the headers and the body is empty.
                if let Some(code) = code_from_headers(response.headers()) {
                    observer.finish(code);
                    return Ok(response);
                }
                Ok(response.map(|body| {
                    Body::new(PolicyBody {
                        inner: body,
                        deadline: Box::pin(tokio::time::sleep_until(deadline)),
                        timeout,
                        done: false,
                        observer,
                        request_id,
                        _permit: permit,
                    })
                }))
            }
            .instrument(span),
        )
    }
}

/// `response` with the request id in its headers (a trailers-only error's metadata too).
fn with_id<B>(mut response: http::Response<B>, id: &RequestId) -> http::Response<B> {
    response.headers_mut().insert(request_id::HEADER, id.header_value());
    response
}

/// The status of a refused key: UNAUTHENTICATED, PERMISSION_DENIED, or RESOURCE_EXHAUSTED
/// with `retry-after` (seconds) in the metadata.
fn auth_status(e: crate::auth::AuthError) -> Status {
    use crate::auth::AuthError;
    match e {
        AuthError::Missing | AuthError::Invalid => Status::unauthenticated(e.to_string()),
        AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
        AuthError::RateLimited { retry_after_s } => {
            let mut status = Status::resource_exhausted(e.to_string());
            if let Ok(value) = retry_after_s.to_string().parse() {
                status.metadata_mut().insert("retry-after", value);
            }
            status
        }
    }
}

fn deadline_status(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("deadline of {} ms exceeded", timeout.as_millis()))
}

/// `/pkg.Service/Method` -> (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_string();
    let method = parts.next().unwrap_or_default().to_string();
    (service, method)
}

/// tonic answers a message it cannot decode (not protobuf, or a string field that is not
/// UTF-8) with INTERNAL, as if the server had failed, and a message that may quote the
/// input. It is the client's mistake: the status in `headers` (response headers of a
/// trailers-only answer, or trailers) becomes INVALID_ARGUMENT with a short reason.
fn client_decode_error(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else { return };
    if status.code() != Code::Internal || !status.message().starts_with("failed to decode Protobuf message") {
        return;
    }
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    let reason = if status.message().contains("UTF-8") {
        "the request is not a valid message for this method: a string field is not UTF-8"
    } else {
        "the request is not a valid protobuf message for this method"
    };
    let _ = Status::invalid_argument(reason).add_header(headers);
}

fn code_from_headers(headers: &http::HeaderMap) -> Option<Code> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<i32>().ok()).map(Code::from_i32)
}

/// Parses the `grpc-timeout` header: an integer of at most 8 digits and a unit
/// (H, M, S, m, u, n), as the gRPC HTTP/2 protocol defines it.
pub fn parse_grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Records one request's metrics and span status exactly once.
struct Observer {
    service: String,
    method: String,
    started: Instant,
    span: tracing::Span,
    finished: bool,
}

impl Observer {
    fn start(service: String, method: String, span: tracing::Span) -> Self {
        metrics::counter!(m::STARTED, "grpc_service" => service.clone(), "grpc_method" => method.clone()).increment(1);
        metrics::gauge!(m::IN_FLIGHT).increment(1.0);
        Self { service, method, started: Instant::now(), span, finished: false }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let code_name = code_name(code);
        let labels = [("grpc_service", self.service.clone()), ("grpc_method", self.method.clone()), ("grpc_code", code_name.to_string())];
        metrics::counter!(m::HANDLED, &labels).increment(1);
        metrics::histogram!(m::HANDLING_SECONDS, &labels[..2]).record(self.started.elapsed().as_secs_f64());
        metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
        self.span.record("rpc.grpc.status_code", code as i32);
        if code != Code::Ok {
            self.span.in_scope(|| tracing::info!(grpc_code = code_name, "request failed"));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // A body dropped before its end means the client went away (or reset the stream).
        self.finish(Code::Cancelled);
    }
}

/// Upper snake case gRPC code name, as Prometheus labels conventionally use.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pin_project! {
    /// Response body that enforces the deadline on streams, reads the final status from
    /// the trailers for metrics, and holds the concurrency permit until it ends.
    struct PolicyBody {
        #[pin]
        inner: Body,
        deadline: Pin<Box<tokio::time::Sleep>>,
        timeout: Duration,
        done: bool,
        observer: Observer,
        request_id: RequestId,
        _permit: OwnedSemaphorePermit,
    }
}

impl http_body::Body for PolicyBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    client_decode_error(trailers);
                    // Also in the trailers: a client reads an error's metadata from there
                    // once the response has started.
                    trailers.insert(request_id::HEADER, this.request_id.header_value());
                    let handling_ms = this.observer.started.elapsed().as_secs_f64() * 1e3;
                    if let Ok(value) = format!("{handling_ms:.3}").parse() {
                        trailers.insert(HANDLING_MS_KEY, value);
                    }
                    this.observer.finish(code_from_headers(trailers).unwrap_or(Code::Ok));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => {
                this.observer.finish(status.code());
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                *this.done = true;
                this.observer.finish(Code::Ok);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Deadline passed mid-stream: end the stream with DEADLINE_EXCEEDED.
                *this.done = true;
                let status = deadline_status(*this.timeout);
                this.observer.finish(status.code());
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                trailers.insert(request_id::HEADER, this.request_id.header_value());
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", v.parse().unwrap());
        h
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout(&headers("250m")), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout(&headers("3S")), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(&headers("2M")), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(&headers("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(&headers("7u")), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(&headers("9n")), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn malformed_grpc_timeout_is_ignored() {
        for bad in ["", "m", "12", "1x", "123456789S", "-1S", "1.5S"] {
            let mut h = http::HeaderMap::new();
            if !bad.is_empty() {
                h.insert("grpc-timeout", bad.parse().unwrap());
            }
            assert_eq!(parse_grpc_timeout(&h), None, "{bad:?}");
        }
    }

    fn slow_inner() -> impl Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible, Future = impl Send> + Clone
    {
        tower::service_fn(|_req: http::Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        })
    }

    fn request(timeout: Option<&str>) -> http::Request<Body> {
        let mut b = http::Request::builder().uri("/pkg.Svc/Method");
        if let Some(t) = timeout {
            b = b.header("grpc-timeout", t);
        }
        b.body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_grpc_timeout_ends_a_slow_call_with_deadline_exceeded() {
        let mut svc =
            PolicyLayer::new(PolicyConfig { max_concurrency: 4, default_timeout: Duration::from_secs(60), api_keys: None }).layer(slow_inner());
        let started = tokio::time::Instant::now();
        let resp = svc.call(request(Some("100m"))).await.unwrap();
        assert_eq!(code_from_headers(resp.headers()), Some(Code::DeadlineExceeded));
        let waited = started.elapsed();
        assert!(waited <= Duration::from_millis(100) && waited >= Duration::from_millis(90), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_default_caps_a_longer_grpc_timeout() {
        let mut svc =
            PolicyLayer::new(PolicyConfig { max_concurrency: 4, default_timeout: Duration::from_millis(300), api_keys: None }).layer(slow_inner());
        let started = tokio::time::Instant::now();
        let resp = svc.call(request(Some("10S"))).await.unwrap();
        assert_eq!(code_from_headers(resp.headers()), Some(Code::DeadlineExceeded));
        assert!(started.elapsed() <= Duration::from_millis(300));
    }

    #[test]
    fn path_split() {
        assert_eq!(split_path("/mmc.embed.v1.EmbedService/EmbedText"), ("mmc.embed.v1.EmbedService".to_string(), "EmbedText".to_string()));
    }
}
