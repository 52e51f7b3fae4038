//! `mmc-textgen`: the text-generation service binary; see the `mmc_textgen` library.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use mmc_proto::textgen::v1::text_gen_service_server::TextGenServiceServer;
use mmc_runtime::ServerArgs;
use mmc_textgen::{core, handlers};

/// Command line of `mmc-textgen`.
#[derive(Parser, Debug)]
#[command(name = "mmc-textgen", version, about = "Text-generation service (GGUF LLMs).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Models directory (default: the one `mmc models fetch` fills).
    #[arg(long, env = "MMC_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// The model: an id in the models directory (its `model.gguf` is loaded).
    #[arg(long, env = "MMC_TEXTGEN_MODEL", default_value = "smollm2-135m-instruct-q4_1")]
    model: String,
    /// A GGUF file to load instead of `--model` from the models directory.
    #[arg(long, env = "MMC_TEXTGEN_GGUF")]
    gguf: Option<PathBuf>,
    /// Weights profile of the model, reported with every result.
    #[arg(long, env = "MMC_PROFILE", default_value = "bundled")]
    profile: String,
    /// Generations in flight at once (their steps are interleaved).
    #[arg(long, env = "MMC_MAX_SEQUENCES", default_value_t = 4)]
    max_sequences: usize,
    /// Requests that may wait for a free slot; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MMC_QUEUE_CAPACITY", default_value_t = 64)]
    queue_capacity: usize,
    /// Cap on the context window in tokens (0 = the model's).
    #[arg(long, env = "MMC_MAX_CONTEXT", default_value_t = 0)]
    max_context: usize,
    /// Prompt tokens run per scheduling step (smaller = fairer to other requests).
    #[arg(long, env = "MMC_PREFILL_CHUNK", default_value_t = 256)]
    prefill_chunk: usize,
    /// max_tokens for requests that leave it 0.
    #[arg(long, env = "MMC_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    default_max_tokens: usize,
    /// Conversation prefixes (earlier turns, shared system prompts) whose model state is kept
    /// so later requests resume after them; 0 turns the cache off.
    #[arg(long, env = "MMC_PREFIX_CACHE_ENTRIES", default_value_t = mmc_textgen::engine::prefix_cache::DEFAULT_ENTRIES)]
    prefix_cache_entries: usize,
    /// Device the model runs on: cpu, cuda or cuda:N (CUDA needs a `cuda` build).
    #[arg(long, env = "MMC_DEVICE", default_value = "cpu")]
    device: mmc_models::DeviceSpec,
}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    let (model_path, model_id) = mmc_models::store::locate(args.models_dir.as_deref(), &args.model, "model.gguf", args.gguf.as_deref());
    let core = core::TextGenCore::new(core::CoreConfig {
        model_path,
        model_id,
        profile: args.profile.clone(),
        max_sequences: args.max_sequences,
        queue_capacity: args.queue_capacity,
        max_context: args.max_context,
        prefill_chunk: args.prefill_chunk,
        default_max_tokens: args.default_max_tokens,
        prefix_cache_entries: args.prefix_cache_entries,
        device: args.device,
    });
    let handlers = handlers::TextGenHandlers::new(core.clone(), handlers::RequestLimits::default());
    mmc_runtime::run_service("textgen", args.server, |s| s.add(TextGenServiceServer::new(handlers)), async move {
        core.load_and_warm_up().await.map_err(anyhow::Error::new)
    })
}
