//! `mmc-caption`: the caption service binary; see the `mmc_caption` library.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use mmc_caption::{core, engine::BriefConfig, handlers};
use mmc_proto::caption::v1::caption_service_server::CaptionServiceServer;
use mmc_runtime::ServerArgs;

/// Command line of `mmc-caption`.
#[derive(Parser, Debug)]
#[command(name = "mmc-caption", version, about = "Caption service (alt text and descriptions from image latents).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Models directory (default: the one `mmc models fetch` fills).
    #[arg(long, env = "MMC_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// The decoder: an id in the models directory. A GGUF instruct model phrases the
    /// encoder's labels; a BLIP captioning checkpoint (config.json with model_type "blip")
    /// decodes the BLIP encoder's patch latents (pair it with --encoder naming that encoder).
    #[arg(long, env = "MMC_CAPTION_DECODER", default_value = "smollm2-135m-instruct-q4_1")]
    decoder: String,
    /// A GGUF file to load instead of `--decoder` from the models directory.
    #[arg(long, env = "MMC_CAPTION_GGUF")]
    gguf: Option<PathBuf>,
    /// Id of the encoder whose latents are accepted (its labels must be ImageNet-1k).
    #[arg(long, env = "MMC_CAPTION_ENCODER", default_value = "efficientnet-lite0")]
    encoder: String,
    /// Weights profile of the decoder, reported with every caption.
    #[arg(long, env = "MMC_PROFILE", default_value = "bundled")]
    profile: String,
    /// Decodes tried before the deterministic template is used.
    #[arg(long, env = "MMC_CAPTION_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: usize,
    /// Below this subject confidence the caption says plainly that it is unsure ("Photo,
    /// perhaps a teapot or a vase (uncertain).") and needs review.
    #[arg(long, env = "MMC_CAPTION_HEDGE_BELOW", default_value_t = mmc_caption::engine::brief::DEFAULT_HEDGE_BELOW)]
    hedge_below: f32,
    /// Labels under this probability are not shown to the decoder (the top one always is).
    #[arg(long, env = "MMC_CAPTION_MIN_EVIDENCE", default_value_t = 0.05)]
    min_evidence: f32,
    /// Captions decoded at once (their decode steps are interleaved).
    #[arg(long, env = "MMC_MAX_SEQUENCES", default_value_t = 4)]
    max_sequences: usize,
    /// Captions that may wait for the decoder; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MMC_QUEUE_CAPACITY", default_value_t = 64)]
    queue_capacity: usize,
    /// Device the language model runs on: cpu, cuda or cuda:N (CUDA needs a `cuda` build).
    #[arg(long, env = "MMC_DEVICE", default_value = "cpu")]
    device: mmc_models::DeviceSpec,
}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    let (gguf, decoder_id) = mmc_models::store::locate(args.models_dir.as_deref(), &args.decoder, "model.gguf", args.gguf.as_deref());
    let dir = gguf.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let decoder = if args.gguf.is_none() && mmc_models::store::model_type(&dir).as_deref() == Some("blip") {
        core::DecoderFiles::Blip(dir)
    } else {
        core::DecoderFiles::Phrasing(gguf)
    };
    let core = core::CaptionCore::new(core::CoreConfig {
        decoder,
        decoder_id,
        profile: args.profile.clone(),
        expected_encoder: args.encoder.clone(),
        max_attempts: args.max_attempts.max(1),
        brief: BriefConfig { hedge_below: args.hedge_below, min_evidence: args.min_evidence, ..BriefConfig::default() },
        max_sequences: args.max_sequences,
        queue_capacity: args.queue_capacity,
        device: args.device,
    });
    let handlers = handlers::CaptionHandlers::new(core.clone());
    mmc_runtime::run_service("caption", args.server, |s| s.add(CaptionServiceServer::new(handlers)), async move {
        core.load_and_warm_up().await.map_err(anyhow::Error::new)
    })
}
