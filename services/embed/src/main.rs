//! `mmc-embed`: the latent (embedding) service binary; see the `mmc_embed` library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mmc_proto::embed::v1::embed_service_server::EmbedServiceServer;
use mmc_embed::{core, handlers};
use mmc_runtime::ServerArgs;

/// Command line of `mmc-embed`.
#[derive(Parser, Debug)]
#[command(name = "mmc-embed", version, about = "Latent embedding service (text and images in one vector space).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Models directory (default: the one `mmc models fetch` fills).
    #[arg(long, env = "MMC_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Text encoder: a model id in the models directory.
    #[arg(long, env = "MMC_TEXT_MODEL", default_value = "all-minilm-l6-v2")]
    text_model: String,
    /// Weights profile of the models, reported with every vector.
    #[arg(long, env = "MMC_PROFILE", default_value = "bundled")]
    profile: String,
    /// Longest text in tokens; longer ones are truncated (and flagged) or refused.
    #[arg(long, env = "MMC_MAX_TEXT_TOKENS", default_value_t = 256)]
    max_text_tokens: usize,
    /// Most texts per request.
    #[arg(long, env = "MMC_MAX_TEXTS_PER_REQUEST", default_value_t = 256)]
    max_texts_per_request: usize,
    /// Most items per forward pass (dynamic batching).
    #[arg(long, env = "MMC_MAX_BATCH", default_value_t = 32)]
    max_batch: usize,
    /// Longest an item waits for others to share its forward pass, in milliseconds.
    #[arg(long, env = "MMC_MAX_WAIT_MS", default_value_t = 5)]
    max_wait_ms: u64,
    /// Requests that may wait for the model; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MMC_QUEUE_CAPACITY", default_value_t = 256)]
    queue_capacity: usize,
}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    let models_dir = args
        .models_dir
        .clone()
        .unwrap_or_else(|| mmc_models::ModelStore::from_env().root().to_path_buf());
    let core = core::EmbedCore::new(core::CoreConfig {
        models_dir,
        text_model: args.text_model.clone(),
        profile: args.profile.clone(),
        max_text_tokens: args.max_text_tokens,
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue_capacity: args.queue_capacity,
    });
    let handlers = handlers::EmbedHandlers::new(core.clone(), args.max_texts_per_request);
    mmc_runtime::run_service("embed", args.server, |s| s.add(EmbedServiceServer::new(handlers)), async move {
        core.load_and_warm_up().await.map_err(anyhow::Error::new)
    })
}
