//! Inference core of the caption service: turns validated latents into a caption, with one
//! of two decoders chosen by the model's files:
//!
//! - **Phrasing** (bundled): a small instruct language model writes from the encoder's
//!   labels, checked for grounding (below).
//! - **BLIP** (hub): BLIP's text decoder reads the BLIP vision encoder's patch latents and
//!   decodes greedily; concurrent captions go through a [`Batcher`] (its queue, limits and
//!   metrics; see `engine::blip` for why a batch is decoded one image after another).
//!
//! Phrasing, for each request: labels -> [`Brief`] -> up to `max_attempts` decodes by the language
//! model (the first greedy, later ones sampled with a seed derived from the labels, so the
//! same image always gets the same caption) -> each decode cleaned and checked (grounding,
//! salience, hedging, form) -> the first that passes is the caption; if none does, the
//! deterministic template is. The language model runs in-process on `mmc_llm`'s core,
//! whose scheduler interleaves the decode steps of concurrent requests (up to
//! `max_sequences` at once, then a bounded queue), so one caption never waits for another
//! to finish.

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use candle_core::Tensor;
use mmc_runtime::batcher::{BatchError, Batcher, BatcherConfig};
use tokio::sync::OnceCell;

use mmc_llm::{
    core::{CoreConfig as TextGenConfig, CoreError as TextGenError, Event, TextGenCore},
    engine::{chat::Message, sampler::SamplingConfig, GenerationParams, Prompt},
};

use crate::engine::{
    blip::{self, BlipDecoder, BlipError, Decoded},
    check, prompt, template, text, Brief, BriefConfig, Label, Mode, Rejection, Vocabulary,
};

/// The decoder's files; their kind decides how captions are made.
#[derive(Debug, Clone)]
pub enum DecoderFiles {
    /// A GGUF instruct model that phrases the encoder's labels (the bundled decoder).
    Phrasing(PathBuf),
    /// A BLIP captioning checkpoint directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`) whose text decoder reads patch latents.
    Blip(PathBuf),
}

/// New tokens BLIP may write per mode (BLIP's own generation default is 20 to 30).
const BLIP_MAX_TOKENS_ALT_TEXT: usize = 30;
const BLIP_MAX_TOKENS_DETAILED: usize = 60;

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The decoder's files.
    pub decoder: DecoderFiles,
    /// Id reported with captions (e.g. `smollm2-135m-instruct-q4_1`).
    pub decoder_id: String,
    /// Weights profile reported with captions.
    pub profile: String,
    /// Id of the encoder whose labels this decoder reads (its label set is ImageNet-1k).
    pub expected_encoder: String,
    /// Decodes tried before falling back to the template.
    pub max_attempts: usize,
    /// How labels become a brief (hedging threshold, evidence shown).
    pub brief: BriefConfig,
    /// Captions decoded at once (their steps are interleaved).
    pub max_sequences: usize,
    /// Captions that may wait for the decoder; more get [`CoreError::QueueFull`].
    pub queue_capacity: usize,
    /// Device the decoder runs on.
    pub device: mmc_models::DeviceSpec,
}

/// Patch latents of one image, row-major (the BLIP decoder's input).
#[derive(Debug, Clone)]
pub struct Patches {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Identity of the loaded decoder (mapped to `mmc.common.v1.ModelInfo` at the edge).
#[derive(Debug, Clone)]
pub struct DecoderInfo {
    pub id: String,
    pub family: String,
    pub profile: String,
    pub revision: String,
}

/// A caption request, as the core sees it.
#[derive(Debug, Clone)]
pub struct CaptionJob {
    /// Id of the encoder that produced the labels.
    pub encoder_id: String,
    /// The encoder's labels (class index, name, probability): the phrasing decoder's input.
    pub labels: Vec<Label>,
    /// The encoder's patch latents: the BLIP decoder's input.
    pub patches: Option<Patches>,
    pub mode: Mode,
    /// Length limit in characters.
    pub max_chars: usize,
}

/// A finished caption.
#[derive(Debug, Clone)]
pub struct Caption {
    pub text: String,
    pub mode: Mode,
    /// Probability mass of the main subject's classes.
    pub confidence: f32,
    /// Labels the caption was written from.
    pub evidence: Vec<Label>,
    /// Decodes made (0 when the template was used at once).
    pub attempts: u32,
    pub from_template: bool,
    /// True when the text says plainly that it is unsure (a person should review it).
    pub uncertain: bool,
    /// Why earlier decodes were rejected, in order.
    pub rejections: Vec<(String, Rejection)>,
    /// (stage, milliseconds).
    pub timings: Vec<(&'static str, f64)>,
}

/// Errors the edge maps to gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the decoder is still loading")]
    Loading,
    #[error("{0} captions are already waiting for the decoder; retry with backoff")]
    QueueFull(usize),
    #[error("the decoder has stopped")]
    Stopped,
    #[error("these latents come from encoder {got:?}, but this decoder reads latents from {expected:?}: encode the image with {expected:?} (embed.v1.EncodeImage)")]
    WrongEncoder { got: String, expected: String },
    #[error("invalid latents from {expected:?}: {reason}")]
    InvalidLatents { expected: String, reason: String },
    #[error("the decoder failed: {0}")]
    Decoder(String),
}

impl From<BatchError<BlipError>> for CoreError {
    fn from(e: BatchError<BlipError>) -> Self {
        match e {
            BatchError::QueueFull { capacity, .. } => CoreError::QueueFull(capacity),
            BatchError::Stopped(_) => CoreError::Stopped,
            BatchError::Engine(e) => CoreError::Decoder(e.to_string()),
        }
    }
}

impl From<TextGenError> for CoreError {
    fn from(e: TextGenError) -> Self {
        match e {
            TextGenError::Loading => CoreError::Loading,
            TextGenError::QueueFull(n) => CoreError::QueueFull(n),
            TextGenError::Stopped => CoreError::Stopped,
            TextGenError::Engine(e) => CoreError::Decoder(e.to_string()),
            TextGenError::Device(e) => CoreError::Decoder(e.to_string()),
        }
    }
}

/// The decoder behind the core.
enum Backend {
    /// The vocabulary of the encoder's label set and the language model phrasing it.
    Phrasing { vocab: Vocabulary, lm: Arc<TextGenCore> },
    /// BLIP's text decoder, once loaded.
    Blip { dir: PathBuf, loaded: OnceCell<BlipPath> },
}

struct BlipPath {
    decoder: Arc<BlipDecoder>,
    batcher: Batcher<(Tensor, usize), Decoded, BlipError>,
    info: DecoderInfo,
}

/// The core: the configured decoder and the checks around it.
pub struct CaptionCore {
    config: CoreConfig,
    backend: Backend,
}

impl CaptionCore {
    pub fn new(config: CoreConfig) -> Arc<CaptionCore> {
        let backend = match &config.decoder {
            DecoderFiles::Phrasing(gguf) => {
                let lm = TextGenCore::new(TextGenConfig {
                    model_path: gguf.clone(),
                    model_id: config.decoder_id.clone(),
                    profile: config.profile.clone(),
                    max_sequences: config.max_sequences,
                    queue_capacity: config.queue_capacity,
                    max_context: 0,
                    prefill_chunk: 256,
                    default_max_tokens: 64,
                    // Every caption shares the system prompt and examples: their state is kept once.
                    prefix_cache_entries: mmc_llm::engine::prefix_cache::DEFAULT_ENTRIES,
                    device: config.device,
                });
                Backend::Phrasing { vocab: Vocabulary::imagenet(), lm }
            }
            DecoderFiles::Blip(dir) => Backend::Blip { dir: dir.clone(), loaded: OnceCell::new() },
        };
        Arc::new(CaptionCore { config, backend })
    }

    /// Loads the decoder and warms it up.
    pub async fn load_and_warm_up(&self) -> Result<(), CoreError> {
        match &self.backend {
            Backend::Phrasing { lm, .. } => Ok(lm.load_and_warm_up().await?),
            Backend::Blip { dir, loaded } => {
                let (dir, device, config) = (dir.clone(), self.config.device, self.config.clone());
                let (decoder, info) = tokio::task::spawn_blocking(move || {
                    let device = device.candle().map_err(|e| CoreError::Decoder(e.to_string()))?;
                    let decoder = BlipDecoder::load(&dir, &device).map_err(|e| CoreError::Decoder(e.to_string()))?;
                    let [rows, hidden] = decoder.latent_shape();
                    let zeros = Tensor::zeros((rows, hidden), candle_core::DType::F32, &candle_core::Device::Cpu)
                        .map_err(|e| CoreError::Decoder(e.to_string()))?;
                    decoder.greedy(&zeros, 2, false).map_err(|e| CoreError::Decoder(e.to_string()))?;
                    let info = DecoderInfo {
                        id: config.decoder_id.clone(),
                        family: "blip-text-decoder".into(),
                        profile: config.profile.clone(),
                        revision: mmc_models::store::revision_of(&dir, "model.safetensors"),
                    };
                    Ok::<_, CoreError>((Arc::new(decoder), info))
                })
                .await
                .map_err(|e| CoreError::Decoder(e.to_string()))??;
                let engine = decoder.clone();
                let batcher = Batcher::spawn(
                    BatcherConfig {
                        name: "caption_blip",
                        max_batch: self.config.max_sequences.max(1),
                        max_wait: Duration::from_millis(2),
                        queue_capacity: self.config.queue_capacity,
                    },
                    move |jobs: Vec<(Tensor, usize)>| jobs.iter().map(|(latents, max_tokens)| engine.greedy(latents, *max_tokens, false)).collect(),
                );
                tracing::info!(decoder = %info.id, revision = %info.revision, "BLIP decoder ready");
                let _ = loaded.set(BlipPath { decoder, batcher, info });
                Ok(())
            }
        }
    }

    /// The loaded decoder's identity.
    pub fn decoder(&self) -> Result<DecoderInfo, CoreError> {
        match &self.backend {
            Backend::Phrasing { lm, .. } => {
                let m = lm.model()?;
                Ok(DecoderInfo { id: m.id, family: m.family, profile: m.profile, revision: m.revision })
            }
            Backend::Blip { loaded, .. } => Ok(loaded.get().ok_or(CoreError::Loading)?.info.clone()),
        }
    }

    /// Id of the encoder whose latents are accepted.
    pub fn expected_encoder(&self) -> &str {
        &self.config.expected_encoder
    }

    /// Checks the job's labels against the encoder this decoder reads, and names each
    /// label by this label set's readable name.
    fn validate_labels(&self, vocab: &Vocabulary, job: &mut CaptionJob) -> Result<(), CoreError> {
        let expected = &self.config.expected_encoder;
        let invalid = |reason: String| CoreError::InvalidLatents { expected: expected.clone(), reason };
        if job.labels.is_empty() {
            return Err(invalid("no labels; this decoder writes from the encoder's top labels (EncodeImage with top_k >= 1)".into()));
        }
        for (i, l) in job.labels.iter_mut().enumerate() {
            let Some(name) = vocab.readable_name(l.class_index) else {
                return Err(invalid(format!("labels[{i}].class_index is {}, but the label set has {} classes", l.class_index, vocab.len())));
            };
            if !l.name.is_empty() && !l.name.eq_ignore_ascii_case(&name) {
                return Err(invalid(format!(
                    "labels[{i}] is named {:?}, but class {} is {name:?} in this decoder's label set (a different label set?)",
                    l.name, l.class_index
                )));
            }
            if !(0.0..=1.0).contains(&l.probability) {
                return Err(invalid(format!("labels[{i}].probability is {}, outside [0, 1]", l.probability)));
            }
            l.name = name;
        }
        Ok(())
    }

    /// Writes a caption for `job`.
    pub async fn caption(&self, job: CaptionJob) -> Result<Caption, CoreError> {
        let expected = &self.config.expected_encoder;
        if job.encoder_id != *expected {
            return Err(CoreError::WrongEncoder { got: job.encoder_id.clone(), expected: expected.clone() });
        }
        match &self.backend {
            Backend::Phrasing { vocab, lm } => self.phrase(vocab, lm, job).await,
            Backend::Blip { loaded, .. } => self.blip(loaded.get().ok_or(CoreError::Loading)?, job).await,
        }
    }

    /// BLIP: greedy decoding over the patch latents, then [`blip::caption_text`].
    async fn blip(&self, path: &BlipPath, job: CaptionJob) -> Result<Caption, CoreError> {
        let invalid = |reason: String| CoreError::InvalidLatents { expected: self.config.expected_encoder.clone(), reason };
        let patches = job.patches.ok_or_else(|| {
            invalid("no patch latents; this decoder reads BLIP's patch latents (EncodeImage returns them in latents.patch_latents)".into())
        })?;
        path.decoder.check_shape(&patches.shape).map_err(|e| invalid(e.to_string()))?;
        let latents = Tensor::from_vec(patches.values, patches.shape.as_slice(), &candle_core::Device::Cpu).map_err(|e| invalid(e.to_string()))?;
        let max_tokens = match job.mode {
            Mode::AltText => BLIP_MAX_TOKENS_ALT_TEXT,
            Mode::Detailed => BLIP_MAX_TOKENS_DETAILED,
        };
        let started = Instant::now();
        let decoded = path.batcher.submit(vec![(latents, max_tokens)]).await?.remove(0);
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        let sep = path.decoder.special_ids().sep;
        let words: Vec<u32> = decoded.ids.iter().copied().filter(|&id| id != sep).collect();
        let raw = path.decoder.detokenize(&words).map_err(|e| CoreError::Decoder(e.to_string()))?;
        // Geometric mean of the chosen tokens' probabilities.
        let confidence = if decoded.logprobs.is_empty() { 0.0 } else { (decoded.logprobs.iter().sum::<f32>() / decoded.logprobs.len() as f32).exp() };
        let uncertain = confidence < self.config.brief.hedge_below;
        let text = blip::caption_text(&raw, uncertain, job.mode == Mode::AltText, job.max_chars);
        metrics::counter!("mmc_caption_captions_total", "mode" => job.mode.as_str(), "source" => "blip").increment(1);
        metrics::histogram!("mmc_caption_confidence").record(f64::from(confidence));
        Ok(Caption {
            text,
            mode: job.mode,
            confidence,
            evidence: Vec::new(),
            attempts: 1,
            from_template: false,
            uncertain,
            rejections: Vec::new(),
            timings: vec![("decode", decode_ms)],
        })
    }

    /// Phrasing: labels -> brief -> checked decodes -> caption (or the template).
    async fn phrase(&self, vocab: &Vocabulary, lm: &TextGenCore, mut job: CaptionJob) -> Result<Caption, CoreError> {
        self.validate_labels(vocab, &mut job)?;
        let brief = Brief::new(vocab, job.labels, job.mode, job.max_chars, &self.config.brief);
        let seed = seed_of(&brief);
        let mut rejections = Vec::new();
        let mut timings = Vec::new();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut accepted = None;
        // Unsure text has one honest form, the template's ("Photo, perhaps a teapot or a vase
        // (uncertain)."; a description names the alternatives and the confidence): the small
        // language model, phrasing guesses, joined them with invented relations and repeats.
        let decodes = if brief.hedge { 0 } else { self.config.max_attempts };
        while (attempts as usize) < decodes {
            let raw = Self::decode(lm, &brief, attempts, seed).await?;
            attempts += 1;
            let candidate = text::clean(&raw, brief.mode);
            match check::check(&candidate, &brief, vocab) {
                Ok(()) => {
                    accepted = Some(candidate);
                    break;
                }
                Err(r) => {
                    tracing::debug!(caption = %candidate, reason = %r, "caption rejected");
                    metrics::counter!("mmc_caption_rejections_total", "reason" => r.reason()).increment(1);
                    rejections.push((candidate, r));
                }
            }
        }
        timings.push(("decode", started.elapsed().as_secs_f64() * 1e3));
        let from_template = accepted.is_none();
        let text = accepted.unwrap_or_else(|| template::caption(&brief));
        let source = if from_template { "template" } else { "model" };
        metrics::counter!("mmc_caption_captions_total", "mode" => brief.mode.as_str(), "source" => source).increment(1);
        metrics::histogram!("mmc_caption_attempts").record(f64::from(attempts));
        metrics::histogram!("mmc_caption_confidence").record(f64::from(brief.confidence));
        Ok(Caption {
            text,
            mode: brief.mode,
            confidence: brief.confidence,
            evidence: brief.evidence,
            attempts,
            from_template,
            uncertain: brief.hedge,
            rejections,
            timings,
        })
    }

    /// One decode of the brief; attempt 0 is greedy, later ones sampled.
    async fn decode(lm: &TextGenCore, brief: &Brief, attempt: u32, seed: u64) -> Result<String, CoreError> {
        let messages = prompt::conversation(brief).into_iter().map(|(role, content)| Message { role: role.to_string(), content }).collect();
        let sampling = if attempt == 0 {
            SamplingConfig::default()
        } else {
            SamplingConfig { temperature: 0.8, top_p: 0.95, seed: Some(seed.wrapping_add(u64::from(attempt))), ..Default::default() }
        };
        let (max_tokens, stop) = match brief.mode {
            Mode::AltText => (48, vec!["\n".to_string()]),
            Mode::Detailed => (120, vec!["\n\n".to_string()]),
        };
        let params = GenerationParams { sampling, max_tokens, stop, ..Default::default() };
        let prefix = prompt::answer_prefix(brief);
        let prompt = if prefix.is_empty() { Prompt::Chat(messages) } else { Prompt::ChatPrefix { messages, prefix: prefix.clone() } };
        let mut events = lm.generate(prompt, params)?;
        while let Some(event) = events.recv().await {
            match event {
                Event::Done(summary) => return Ok(prefix + &summary.text),
                Event::Failed(e) => return Err(e.into()),
                Event::Token(_) => {}
            }
        }
        Err(CoreError::Stopped)
    }
}

/// A seed that depends only on the evidence, so a photo's caption is reproducible.
fn seed_of(brief: &Brief) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in &brief.evidence {
        l.class_index.hash(&mut h);
        ((l.probability * 100.0).round() as i32).hash(&mut h);
    }
    brief.mode.as_str().hash(&mut h);
    h.finish()
}
