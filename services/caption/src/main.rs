//! `mmc-caption`: caption service (alt text and descriptions from image latents).
//!
//! The model engine lands with issue #6. Until then this binary serves the contract
//! (`CaptionService`) with every model RPC answering UNIMPLEMENTED, plus health, reflection and
//! metrics from the shared runtime, so `mmc up` and deployments can run the cluster.

use std::process::ExitCode;

use clap::Parser;
use mmc_proto::caption::v1::caption_service_server::{CaptionService, CaptionServiceServer};
use mmc_runtime::ServerArgs;

/// Command line of `mmc-caption`.
#[derive(Parser, Debug)]
#[command(name = "mmc-caption", version, about = "caption service (alt text and descriptions from image latents).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

/// The caption service: RPCs not yet implemented fall back to tonic's UNIMPLEMENTED stubs.
struct CaptionServiceImpl;

#[tonic::async_trait]
impl CaptionService for CaptionServiceImpl {}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    mmc_runtime::run_service("caption", args.server, |s| s.add(CaptionServiceServer::new(CaptionServiceImpl)), async { Ok(()) })
}
