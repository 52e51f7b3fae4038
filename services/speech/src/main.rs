//! `mmc-speech`: the speech-to-text service binary; see the `mmc_speech` library.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Parser;
use mmc_proto::speech::v1::speech_service_server::SpeechServiceServer;
use mmc_runtime::ServerArgs;
use mmc_speech::{
    core,
    engine::{chunker::ChunkerConfig, whisper::EncoderWindow},
    handlers,
    router::SpeechRouter,
};

/// Command line of `mmc-speech`.
#[derive(Parser, Debug)]
#[command(name = "mmc-speech", version, about = "Speech-to-text service (Whisper, whisper.cpp).")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Models directory (default: the one `mmc models fetch` fills).
    #[arg(long, env = "MMC_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// The model: an id in the models directory (its converted `ggml-model.bin` is loaded).
    #[arg(long, env = "MMC_SPEECH_MODEL", default_value = "whisper-tiny.en-ct2")]
    model: String,
    /// A multilingual model loaded beside an English-only `--model`: requests in other
    /// languages, translations, and those whose detected language is not English go to it
    /// (see the `router` module). Empty: English-only. Skipped with a warning when its
    /// files are missing, and not loaded when `--model` is multilingual itself.
    #[arg(long, env = "MMC_SPEECH_MULTILINGUAL_MODEL", default_value = "whisper-base-ct2")]
    multilingual_model: String,
    /// A whisper.cpp ggml file to load instead of `--model` from the models directory.
    #[arg(long, env = "MMC_SPEECH_GGML")]
    ggml: Option<PathBuf>,
    /// Which converted weights of a model to load: `auto` = its 8-bit `ggml-model-q8_0.bin`
    /// where `mmc models fetch` made one (for models whose word error rate it leaves within
    /// half a point; docs/speech.md), else `ggml-model.bin`; `q8_0` = the 8-bit file;
    /// `stored` = the weights as shipped (f16).
    #[arg(long, env = "MMC_SPEECH_WEIGHTS", value_enum, default_value = "auto")]
    weights: Weights,
    /// Weights profile of the model, reported with every result.
    #[arg(long, env = "MMC_PROFILE", default_value = "bundled")]
    profile: String,
    /// Requests transcribed at once (one decoder state each, the weights shared).
    #[arg(long, env = "MMC_SPEECH_CONCURRENCY", default_value_t = 2)]
    concurrency: usize,
    /// Whether a lone request may borrow idle decoder states and transcribe its chunks side
    /// by side, or, when the recording is one chunk, decode it with their threads too
    /// (`--lend-idle-states false`: one state and its threads per request, always).
    #[arg(long, env = "MMC_SPEECH_LEND_IDLE_STATES", default_value_t = true, action = clap::ArgAction::Set)]
    lend_idle_states: bool,
    /// Requests that may wait for a free decoder state; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MMC_QUEUE_CAPACITY", default_value_t = 32)]
    queue_capacity: usize,
    /// whisper.cpp threads per request (0 = the machine's cores / concurrency, at least 1).
    #[arg(long, env = "MMC_SPEECH_THREADS", default_value_t = 0)]
    threads: usize,
    /// Beam width; 1 = greedy decoding (fastest).
    #[arg(long, env = "MMC_SPEECH_BEAM_SIZE", default_value_t = 1)]
    beam_size: usize,
    /// Longest recording accepted, in seconds (decoding is streamed: memory does not grow with it).
    #[arg(long, env = "MMC_SPEECH_MAX_AUDIO_S", default_value_t = 4 * 3600)]
    max_audio_s: u64,
    /// Largest upload in bytes.
    #[arg(long, env = "MMC_SPEECH_MAX_UPLOAD_BYTES", default_value_t = 2 << 30)]
    max_upload_bytes: u64,
    /// Directory under which uploads are spooled while they arrive, in `mmc-speech-<uid>-<port>/`
    /// (emptied of a crashed run's uploads at start; default: the system's temp dir).
    #[arg(long, env = "MMC_SPEECH_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// How much audio the encoder reads per chunk: `fit` (the chunk's length plus 1 s, at
    /// least 10 s) or `full` (Whisper's 30 s window whatever the chunk holds).
    #[arg(long, env = "MMC_SPEECH_ENCODER_WINDOW", default_value = "fit")]
    encoder_window: EncoderWindow,
    /// Device whisper.cpp runs on: cpu, cuda or cuda:N (CUDA needs a `cuda` build).
    #[arg(long, env = "MMC_DEVICE", default_value = "cpu")]
    device: mmc_models::DeviceSpec,
}

/// The weights files `mmc models fetch` makes for a Whisper model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Weights {
    Auto,
    #[value(name = "q8_0")]
    Q8_0,
    Stored,
}

/// The ggml file of model `id` with the chosen weights (`explicit` wins).
fn locate_model(models_dir: Option<&Path>, id: &str, weights: Weights, explicit: Option<&Path>) -> (PathBuf, String) {
    let (stored, id) = mmc_models::store::locate(models_dir, id, "ggml-model.bin", explicit);
    if explicit.is_some() {
        return (stored, id);
    }
    let q8_0 = stored.with_file_name("ggml-model-q8_0.bin");
    match weights {
        Weights::Stored => (stored, id),
        Weights::Q8_0 => (q8_0, id),
        Weights::Auto if q8_0.is_file() => (q8_0, id),
        Weights::Auto => (stored, id),
    }
}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    let (model_path, model_id) = locate_model(args.models_dir.as_deref(), &args.model, args.weights, args.ggml.as_deref());
    let concurrency = args.concurrency.max(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = if args.threads == 0 { (cores / concurrency).max(1) } else { args.threads };
    let primary = core::CoreConfig {
        model_path,
        model_id,
        profile: args.profile.clone(),
        max_concurrent: concurrency,
        queue_capacity: args.queue_capacity,
        threads_per_request: threads,
        beam_size: args.beam_size,
        encoder_window: args.encoder_window,
        max_audio_ms: args.max_audio_s * 1000,
        chunker: ChunkerConfig::default(),
        device: args.device,
        lend_idle_states: args.lend_idle_states,
    };
    let second = (!args.multilingual_model.trim().is_empty()).then(|| {
        let (model_path, model_id) = locate_model(args.models_dir.as_deref(), args.multilingual_model.trim(), args.weights, None);
        core::CoreConfig { model_path, model_id, ..primary.clone() }
    });
    let router = SpeechRouter::new(primary, second);
    let base = args.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let spool_dir = match handlers::prepare_spool_dir(&base, args.server.listen.port()) {
        Ok((dir, removed)) => {
            if removed > 0 {
                eprintln!("mmc-speech: removed {removed} upload(s) a previous run left in {}", dir.display());
            }
            dir
        }
        Err(e) => {
            eprintln!("mmc-speech: cannot prepare the spool directory under {}: {e}", base.display());
            return ExitCode::FAILURE;
        }
    };
    let limits = handlers::RequestLimits { max_upload_bytes: args.max_upload_bytes, spool_dir: Some(spool_dir.clone()), ..Default::default() };
    let handlers = handlers::SpeechHandlers::new(router.clone(), limits);
    let code = mmc_runtime::run_service("speech", args.server, |s| s.add(SpeechServiceServer::new(handlers)), async move {
        router.load_and_warm_up().await.map_err(anyhow::Error::new)
    });
    // Drained: every upload's file is gone, so the directory is empty unless someone else put
    // something there (then it stays; remove_dir only removes an empty directory).
    let _ = std::fs::remove_dir(&spool_dir);
    code
}
