//! `mmc-speech`: speech-to-text service (Whisper).
//!
//! The model engine lands with issue #5. Until then this binary serves the contract
//! (`SpeechService`) with every model RPC answering UNIMPLEMENTED, plus health, reflection and
//! metrics from the shared runtime, so `mmc up` and deployments can run the cluster.

use std::process::ExitCode;

use clap::Parser;
use mmc_proto::speech::v1::speech_service_server::{SpeechService, SpeechServiceServer};
use mmc_runtime::ServerArgs;

/// Command line of `mmc-speech`.
#[derive(Parser, Debug)]
#[command(name = "mmc-speech", version, about = "speech-to-text service (Whisper).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

/// The speech service: RPCs not yet implemented fall back to tonic's UNIMPLEMENTED stubs.
struct SpeechServiceImpl;

#[tonic::async_trait]
impl SpeechService for SpeechServiceImpl {}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    mmc_runtime::run_service("speech", args.server, |s| s.add(SpeechServiceServer::new(SpeechServiceImpl)), async { Ok(()) })
}
