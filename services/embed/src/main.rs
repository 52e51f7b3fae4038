//! `mmc-embed`: the latent (embedding) service binary; see the `mmc_embed` library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mmc_embed::{core, handlers};
use mmc_media::image::ImageLimits;
use mmc_proto::embed::v1::embed_service_server::EmbedServiceServer;
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
    /// Image classifier: a model id in the models directory.
    #[arg(long, env = "MMC_IMAGE_MODEL", default_value = "efficientnet-lite0")]
    image_model: String,
    /// ConSE: how many top classes make an image's vector.
    #[arg(long, env = "MMC_CONSE_TOP_T", default_value_t = 5)]
    conse_top_t: usize,
    /// ConSE: sentence embedded for each class ({} = the class name, {gloss} = its WordNet
    /// definition).
    #[arg(long, env = "MMC_CLASS_TEMPLATE", default_value = "a photo of a {}, {gloss}")]
    class_template: String,
    /// Most images per EmbedImage request.
    #[arg(long, env = "MMC_MAX_IMAGES_PER_REQUEST", default_value_t = 32)]
    max_images_per_request: usize,
    /// Largest encoded image, in bytes.
    #[arg(long, env = "MMC_MAX_IMAGE_BYTES", default_value_t = 20 * 1024 * 1024)]
    max_image_bytes: usize,
    /// Largest decoded image, in pixels (width x height).
    #[arg(long, env = "MMC_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    max_image_pixels: u64,
    /// Pixels decoded at once across all requests (default: 3 x --max-image-pixels); a
    /// decode that would exceed it waits. Bounds image memory whatever the concurrency.
    #[arg(long, env = "MMC_DECODE_PIXEL_BUDGET")]
    decode_pixel_budget: Option<u64>,
    /// Text bytes (after each text is cut to the words the model reads) tokenized at once
    /// across all requests; a request that would exceed it waits. Bounds tokenizer memory
    /// (up to ~170 bytes per byte) whatever the concurrency. At least 1 MiB.
    #[arg(long, env = "MMC_TEXT_BYTE_BUDGET", default_value_t = 2 << 20)]
    text_byte_budget: u64,
    /// Device the models run on: cpu, cuda or cuda:N (CUDA needs a `cuda` build).
    #[arg(long, env = "MMC_DEVICE", default_value = "cpu")]
    device: mmc_models::DeviceSpec,
}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    let models_dir = args.models_dir.clone().unwrap_or_else(|| mmc_models::ModelStore::from_env().root().to_path_buf());
    let core = core::EmbedCore::new(core::CoreConfig {
        models_dir,
        text_model: args.text_model.clone(),
        profile: args.profile.clone(),
        max_text_tokens: args.max_text_tokens,
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue_capacity: args.queue_capacity,
        image_model: args.image_model.clone(),
        conse_top_t: args.conse_top_t,
        class_template: args.class_template.clone(),
        image_limits: ImageLimits { max_bytes: args.max_image_bytes, max_pixels: args.max_image_pixels, ..ImageLimits::default() },
        decode_pixel_budget: args.decode_pixel_budget.unwrap_or(3 * args.max_image_pixels),
        text_byte_budget: args.text_byte_budget,
        device: args.device,
    });
    let handlers = handlers::EmbedHandlers::new(core.clone(), args.max_texts_per_request, args.max_images_per_request);
    mmc_runtime::run_service("embed", args.server, |s| s.add(EmbedServiceServer::new(handlers)), async move {
        core.load_and_warm_up().await.map_err(anyhow::Error::new)
    })
}
