//! `mmc-textgen`: text-generation service (GGUF LLMs).
//!
//! The model engine lands with issue #4. Until then this binary serves the contract
//! (`TextGenService`) with every model RPC answering UNIMPLEMENTED, plus health, reflection and
//! metrics from the shared runtime, so `mmc up` and deployments can run the cluster.

use std::process::ExitCode;

use clap::Parser;
use mmc_proto::textgen::v1::text_gen_service_server::{TextGenService, TextGenServiceServer};
use mmc_runtime::ServerArgs;

/// Command line of `mmc-textgen`.
#[derive(Parser, Debug)]
#[command(name = "mmc-textgen", version, about = "text-generation service (GGUF LLMs).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

/// The textgen service: RPCs not yet implemented fall back to tonic's UNIMPLEMENTED stubs.
struct TextGenServiceImpl;

#[tonic::async_trait]
impl TextGenService for TextGenServiceImpl {}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    mmc_runtime::run_service("textgen", args.server, |s| s.add(TextGenServiceServer::new(TextGenServiceImpl)), async { Ok(()) })
}
