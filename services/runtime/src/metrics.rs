//! Prometheus metrics on their own port.
//!
//! Metric names follow the go-grpc-prometheus conventions that dashboards already know
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`), with a global
//! `service` label naming the mmc service. Model services add their own (batch size,
//! queue time, compute time) with the `metrics` macros; they appear here automatically.
//!
//! The port also answers `GET /healthz` (200 SERVING / 503 NOT_SERVING, as gRPC health)
//! and `GET /livez` (200 while the process answers): plain HTTP probes that work whether
//! or not the service port speaks TLS or wants an API key (Kubernetes' native gRPC probes
//! can do neither). Every other path serves the metrics.

use std::{net::SocketAddr, sync::Mutex, time::Duration};

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// The recorder's handle and the bound metrics port, from [`install`] until the server
/// ([`crate::server`]) starts serving them beside its own listeners.
static ENDPOINT: Mutex<Option<(PrometheusHandle, tokio::net::TcpListener)>> = Mutex::new(None);

/// Installs the global recorder and binds the metrics port `addr` (served by
/// [`crate::server`], with the probes of the module docs). Call once, inside the Tokio
/// runtime.
pub fn install(service: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding the metrics endpoint {addr}"))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let handle = PrometheusBuilder::new()
        .add_global_label("service", service)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // What the exporter's own listener would do: drain histograms now and then.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    *ENDPOINT.lock().expect("metrics endpoint lock") = Some((handle, listener));
    metrics::describe_counter!(STARTED, "gRPC requests started");
    metrics::describe_counter!(HANDLED, "gRPC requests completed, by status code");
    metrics::describe_histogram!(HANDLING_SECONDS, metrics::Unit::Seconds, "gRPC request latency");
    metrics::describe_gauge!(IN_FLIGHT, "gRPC requests being handled");
    metrics::describe_counter!(SHED, "gRPC requests refused because the server was at capacity");
    metrics::describe_gauge!(SERVING, "1 while the service reports SERVING");
    Ok(())
}

/// The metrics port bound by [`install`] and its router (metrics on any path, `/livez`),
/// once; `None` when metrics were not installed (tests that run a bare server).
pub fn take_endpoint() -> Option<(tokio::net::TcpListener, axum::Router)> {
    use axum::{http::header, routing::get};
    let (handle, listener) = ENDPOINT.lock().expect("metrics endpoint lock").take()?;
    let render = move || {
        let handle = handle.clone();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }
    };
    let router = axum::Router::new().route("/livez", get(|| async { "ok\n" })).fallback(get(render));
    Some((listener, router))
}
