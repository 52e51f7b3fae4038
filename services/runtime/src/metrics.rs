//! Prometheus metrics on their own port.
//!
//! Metric names follow the go-grpc-prometheus conventions that dashboards already know
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`), with a global
//! `service` label naming the mmc service. Model services add their own (batch size,
//! queue time, compute time) with the `metrics` macros; they appear here automatically.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Requests started, by `grpc_service` and `grpc_method`.
pub const STARTED: &str = "grpc_server_started_total";
/// Requests finished, by `grpc_service`, `grpc_method` and `grpc_code`.
pub const HANDLED: &str = "grpc_server_handled_total";
/// Request latency until the last response byte (streams included), in seconds.
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "grpc_server_in_flight_requests";
/// Requests refused by load shedding (they also count in HANDLED as RESOURCE_EXHAUSTED).
pub const SHED: &str = "grpc_server_shed_total";
/// 1 while the service reports SERVING, else 0.
pub const SERVING: &str = "mmc_serving";

/// Latency buckets from 1 ms to 10 min: model calls range from a millisecond
/// (embedding a word) to minutes (an hour of audio).
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Installs the global recorder and serves `/metrics` on `addr`. Call once, inside the
/// Tokio runtime.
pub fn install(service: &str, addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .add_global_label("service", service)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install()
        .with_context(|| format!("starting the metrics endpoint on {addr}"))?;
    metrics::describe_counter!(STARTED, "gRPC requests started");
    metrics::describe_counter!(HANDLED, "gRPC requests completed, by status code");
    metrics::describe_histogram!(HANDLING_SECONDS, metrics::Unit::Seconds, "gRPC request latency");
    metrics::describe_gauge!(IN_FLIGHT, "gRPC requests being handled");
    metrics::describe_counter!(SHED, "gRPC requests refused because the server was at capacity");
    metrics::describe_gauge!(SERVING, "1 while the service reports SERVING");
    Ok(())
}
