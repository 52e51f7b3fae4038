//! The shared runtime of every mmc service.
//!
//! A service crate holds only its model and its RPC handlers; everything a production
//! gRPC server needs around them lives here, once:
//!
//! - [`config`]: flags, `MMC_*` environment variables and an optional TOML file.
//! - [`server`]: tonic bootstrap with [`health`] (NOT_SERVING until the model is warm and
//!   again while draining), server reflection, message-size limits, HTTP/2
//!   keep-alives and graceful shutdown with a drain deadline.
//! - [`policy`]: the per-request tower layer: deadline (`grpc-timeout` and a server
//!   default), global concurrency limit with immediate load shedding
//!   (RESOURCE_EXHAUSTED), a server span whose parent comes from W3C trace context, and
//!   request metrics.
//! - [`metrics`]: a Prometheus exporter on its own port.
//! - [`memory`]: malloc tuning so per-request buffers are reused, not faulted in anew.
//! - [`telemetry`]: structured logs and OpenTelemetry traces over OTLP.
//! - [`propagation`]: W3C trace context in gRPC metadata, client and server side.
//! - [`request_id`]: the `x-request-id` each response carries and each log line of the
//!   request shows.
//! - [`batcher`]: dynamic batching for the inference core of model services.
//! - [`tls`]: TLS and mutual TLS on the listeners (certificates reloaded on change) and on
//!   the gateway's channels; [`certs`]: development certificates.
//! - [`client`]: channels to other services (used by the gateway) with the same limits
//!   and trace propagation.

pub mod auth;
pub mod batcher;
pub mod certs;
pub mod client;
pub mod config;
pub mod health;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod propagation;
pub mod request_id;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::ServerArgs;
pub use health::Health;
pub use server::{run, run_service, serve, ServiceSet};
