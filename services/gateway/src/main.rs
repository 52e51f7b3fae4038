//! `mmc-gateway`: gateway chaining the model services into the user flows.
//!
//! The model engine lands with issue #7. Until then this binary serves the contract
//! (`GatewayService`) with every model RPC answering UNIMPLEMENTED, plus health, reflection and
//! metrics from the shared runtime, so `mmc up` and deployments can run the cluster.

use std::process::ExitCode;

use clap::Parser;
use mmc_proto::gateway::v1::gateway_service_server::{GatewayService, GatewayServiceServer};
use mmc_runtime::ServerArgs;

/// Command line of `mmc-gateway`.
#[derive(Parser, Debug)]
#[command(name = "mmc-gateway", version, about = "gateway chaining the model services into the user flows.")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

/// The gateway service: RPCs not yet implemented fall back to tonic's UNIMPLEMENTED stubs.
struct GatewayServiceImpl;

#[tonic::async_trait]
impl GatewayService for GatewayServiceImpl {}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    mmc_runtime::run_service("gateway", args.server, |s| s.add(GatewayServiceServer::new(GatewayServiceImpl)), async { Ok(()) })
}
