//! Calls from the gateway to the model services, with the chaining discipline every flow
//! shares: per-stage deadlines cut from the caller's deadline, retries with jittered
//! exponential backoff for idempotent stages only, client-side balancing over replicas
//! (see [`mmc_runtime::client::connect_balanced`]), a per-stage latency histogram, and
//! errors that name the stage and the service.
//!
//! This is the gateway's client edge: the only place besides [`crate::grpc`] that speaks
//! protobuf. [`calls`] holds one method per model-service RPC the flows use, taking and
//! returning the gateway's own types ([`crate::domain`]).

pub mod calls;

use std::{future::Future, time::Duration};

use mmc_runtime::client::{connect_balanced, BalanceError, TracedChannel};
use rand::Rng;
use tokio::time::Instant;
use tonic::{transport::ClientTlsConfig, Code, Status};
use tracing::Instrument;

pub use self::calls::{Embedded, Upstreams};
use crate::{
    domain::StageTiming,
    error::{ErrorKind, GatewayError},
};

/// Status metadata key a model service sets to say more than the gRPC code can (e.g.
/// `context_length_exceeded` beside INVALID_ARGUMENT), so no caller parses messages.
pub const ERROR_REASON_KEY: &str = "mmc-error-reason";

/// Stage latency histogram, labelled `stage`.
pub const STAGE_SECONDS: &str = "mmc_gateway_stage_duration_seconds";
/// Failed stage calls (after retries), labelled `stage` and `code`.
pub const STAGE_ERRORS: &str = "mmc_gateway_stage_errors_total";
/// Retried stage calls, labelled `stage`.
pub const STAGE_RETRIES: &str = "mmc_gateway_stage_retries_total";
/// The gateway's own cost of a successful stage call, labelled `stage`: the attempt's wall
/// time minus the time the model service reports (`mmc-handling-ms`).
pub const HOP_OVERHEAD_SECONDS: &str = "mmc_gateway_hop_overhead_seconds";

/// One model service as the gateway reaches it.
#[derive(Clone)]
pub struct Upstream {
    /// Service name used in errors and logs ("caption").
    pub service: &'static str,
    /// The configured endpoints, for error messages.
    pub endpoints: String,
    channel: TracedChannel,
}

impl Upstream {
    /// A balanced, lazily connected upstream over `endpoints` (comma-separated URLs;
    /// `https://` ones with `tls`).
    pub fn connect(service: &'static str, endpoints: &str, tls: Option<&ClientTlsConfig>) -> Result<Self, BalanceError> {
        let urls: Vec<String> = endpoints.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        Ok(Self { service, endpoints: urls.join(","), channel: connect_balanced(&urls, tls)? })
    }

    /// The channel, for building a generated client.
    pub fn channel(&self) -> TracedChannel {
        self.channel.clone()
    }
}

/// How stages are timed and retried.
#[derive(Clone, Debug)]
pub struct StagePolicy {
    /// Longest a single stage call may take, even when the caller allows more.
    pub stage_timeout: Duration,
    /// Tries for an idempotent stage (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled per retry, with full jitter.
    pub backoff: Duration,
}

impl Default for StagePolicy {
    fn default() -> Self {
        Self { stage_timeout: Duration::from_secs(60), attempts: 3, backoff: Duration::from_millis(200) }
    }
}

/// The end of a request as the caller set it (`grpc-timeout`), or the server default.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now (an HTTP request's server timeout, or a gRPC request's
    /// `grpc-timeout` capped by it).
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Codes worth another try: the replica is down or busy. Anything else (a bad image, a
/// deadline) would fail again.
fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::ResourceExhausted)
}

/// Runs one stage: `call(channel, timeout)` against `upstream`, within the caller's
/// `deadline` and the policy's stage timeout, retried when `idempotent`. Returns the
/// response and the stage's wall time.
pub async fn stage<T, F, Fut>(
    stage: &'static str,
    upstream: &Upstream,
    deadline: Deadline,
    policy: &StagePolicy,
    idempotent: bool,
    mut call: F,
) -> Result<(T, StageTiming), GatewayError>
where
    F: FnMut(TracedChannel, Duration) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let started = Instant::now();
    let attempts = if idempotent { policy.attempts.max(1) } else { 1 };
    let mut attempt = 0;
    let status = loop {
        attempt += 1;
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            metrics::counter!(STAGE_ERRORS, "stage" => stage, "code" => "DeadlineExceeded").increment(1);
            return Err(GatewayError::NoTimeLeft { stage });
        }
        let timeout = remaining.min(policy.stage_timeout);
        let attempt_started = Instant::now();
        // One client span per attempt, parent of the model service's server span (the
        // channel's interceptor sends this span's context), so a trace shows the chain.
        let span = tracing::info_span!("gateway.stage", otel.name = stage, otel.kind = "client", stage, service = upstream.service, attempt);
        // The client-side timeout also bounds connecting to a replica that is gone.
        let result = match tokio::time::timeout(timeout, call(upstream.channel(), timeout)).instrument(span).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis()))),
        };
        match result {
            Ok(response) => {
                let elapsed = started.elapsed();
                metrics::histogram!(STAGE_SECONDS, "stage" => stage).record(elapsed.as_secs_f64());
                let mut timing = timing(stage, elapsed);
                if let Some(upstream_ms) = handling_ms(response.metadata()) {
                    timing.upstream_ms = upstream_ms;
                    let overhead_ms = (attempt_started.elapsed().as_secs_f64() * 1e3 - upstream_ms).max(0.0);
                    metrics::histogram!(HOP_OVERHEAD_SECONDS, "stage" => stage).record(overhead_ms / 1e3);
                }
                return Ok((response.into_inner(), timing));
            }
            Err(status) if attempt < attempts && retryable(status.code()) => {
                let cap = policy.backoff.saturating_mul(1 << (attempt - 1).min(10));
                let pause = Duration::from_micros(rand::rng().random_range(0..=cap.as_micros() as u64));
                if pause >= deadline.remaining() {
                    break status;
                }
                metrics::counter!(STAGE_RETRIES, "stage" => stage).increment(1);
                tracing::warn!(stage, service = upstream.service, code = ?status.code(), attempt, "stage failed; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(status) => break status,
        }
    };
    Err(failure(stage, upstream, status))
}

/// The error of a failed `stage` (counted in the stage error metric): for stages that
/// cannot go through [`stage`], such as a streamed upload.
pub fn failure(stage: &'static str, upstream: &Upstream, status: Status) -> GatewayError {
    metrics::counter!(STAGE_ERRORS, "stage" => stage, "code" => format!("{:?}", status.code())).increment(1);
    let reason = status.metadata().get(ERROR_REASON_KEY).and_then(|v| v.to_str().ok());
    let kind = match status.code() {
        Code::InvalidArgument if reason == Some("context_length_exceeded") => ErrorKind::ContextLength,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
        Code::NotFound => ErrorKind::NotFound,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::ResourceExhausted => ErrorKind::Overloaded,
        Code::Unavailable => ErrorKind::Unavailable,
        // Our services never answer UNKNOWN: it is tonic's code for a call whose connection
        // broke (the service crashed or was killed mid-stream, "h2 protocol error").
        Code::Unknown => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Cancelled => ErrorKind::Cancelled,
        _ => ErrorKind::Internal,
    };
    GatewayError::Stage { stage, service: upstream.service, endpoint: upstream.endpoints.clone(), kind, message: status.message().to_string() }
}

/// A malformed answer of a model service (a fault of this system, not of the request).
pub fn bad_answer(stage: &'static str, upstream: &Upstream, message: &str) -> GatewayError {
    failure(stage, upstream, Status::internal(message))
}

/// The per-stage timing reported in responses.
pub fn timing(stage: &str, elapsed: Duration) -> StageTiming {
    StageTiming { stage: stage.to_string(), duration_ms: elapsed.as_secs_f64() * 1e3, upstream_ms: 0.0 }
}

/// The model service's own time for a call (the runtime's `mmc-handling-ms` trailer, which
/// tonic merges into a unary answer's metadata).
pub fn handling_ms(metadata: &tonic::metadata::MetadataMap) -> Option<f64> {
    metadata.get(mmc_runtime::policy::HANDLING_MS_KEY)?.to_str().ok()?.parse().ok().filter(|ms: &f64| ms.is_finite() && *ms >= 0.0)
}

/// A request with the stage's timeout set as its `grpc-timeout`, so the model service
/// stops working on it when the gateway stops waiting.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Some(key) = API_KEY.get() {
        request.metadata_mut().insert("authorization", key.clone());
    }
    request
}

/// `Bearer <key>` sent with every upstream call (`--upstream-api-key-file`). One per
/// process: a gateway has one identity towards the model services it calls.
static API_KEY: std::sync::OnceLock<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = std::sync::OnceLock::new();

/// Sets the key sent to the model services (once, at start).
pub fn set_api_key(value: tonic::metadata::MetadataValue<tonic::metadata::Ascii>) {
    let _ = API_KEY.set(value);
}
