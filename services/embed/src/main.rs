//! `mmc-embed`: latent embedding service (text and images in one vector space).
//!
//! The model engine lands with issue #3. Until then this binary serves the contract
//! (`EmbedService`) with every model RPC answering UNIMPLEMENTED, plus health, reflection and
//! metrics from the shared runtime, so `mmc up` and deployments can run the cluster.

use std::process::ExitCode;

use clap::Parser;
use mmc_proto::embed::v1::embed_service_server::{EmbedService, EmbedServiceServer};
use mmc_runtime::ServerArgs;

/// Command line of `mmc-embed`.
#[derive(Parser, Debug)]
#[command(name = "mmc-embed", version, about = "latent embedding service (text and images in one vector space).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

/// The embed service: RPCs not yet implemented fall back to tonic's UNIMPLEMENTED stubs.
struct EmbedServiceImpl;

#[tonic::async_trait]
impl EmbedService for EmbedServiceImpl {}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    mmc_runtime::run_service("embed", args.server, |s| s.add(EmbedServiceServer::new(EmbedServiceImpl)), async { Ok(()) })
}
