//! Inference core of the caption service: turns validated labels into a checked caption.
//!
//! For each request: labels -> [`Brief`] -> up to `max_attempts` decodes by the language
//! model (the first greedy, later ones sampled with a seed derived from the labels, so the
//! same image always gets the same caption) -> each decode cleaned and checked (grounding,
//! salience, hedging, form) -> the first that passes is the caption; if none does, the
//! deterministic template is. The language model runs in-process on `mmc_textgen`'s core,
//! whose scheduler interleaves the decode steps of concurrent requests (up to
//! `max_sequences` at once, then a bounded queue), so one caption never waits for another
//! to finish.

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use mmc_textgen::{
    core::{CoreConfig as TextGenConfig, CoreError as TextGenError, Event, LoadedModel, TextGenCore},
    engine::{chat::Message, sampler::SamplingConfig, GenerationParams, Prompt},
};

use crate::engine::{check, prompt, template, text, Brief, BriefConfig, Label, Mode, Rejection, Vocabulary};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The decoder's GGUF file.
    pub decoder_path: PathBuf,
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
    /// Device the language model runs on.
    pub device: mmc_models::DeviceSpec,
}

/// A caption request, as the core sees it.
#[derive(Debug, Clone)]
pub struct CaptionJob {
    /// Id of the encoder that produced the labels.
    pub encoder_id: String,
    /// The encoder's labels (class index, name, probability).
    pub labels: Vec<Label>,
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

/// The core: the vocabulary of the encoder's label set and the language model.
pub struct CaptionCore {
    config: CoreConfig,
    vocab: Vocabulary,
    decoder: Arc<TextGenCore>,
}

impl CaptionCore {
    pub fn new(config: CoreConfig) -> Arc<CaptionCore> {
        let decoder = TextGenCore::new(TextGenConfig {
            model_path: config.decoder_path.clone(),
            model_id: config.decoder_id.clone(),
            profile: config.profile.clone(),
            max_sequences: config.max_sequences,
            queue_capacity: config.queue_capacity,
            max_context: 0,
            prefill_chunk: 256,
            default_max_tokens: 64,
            // Every caption shares the system prompt and examples: their state is kept once.
            prefix_cache_entries: mmc_textgen::engine::prefix_cache::DEFAULT_ENTRIES,
            device: config.device,
        });
        Arc::new(CaptionCore { config, vocab: Vocabulary::imagenet(), decoder })
    }

    /// Loads the language model and warms it up.
    pub async fn load_and_warm_up(&self) -> Result<(), CoreError> {
        self.decoder.load_and_warm_up().await?;
        Ok(())
    }

    /// The loaded decoder's facts.
    pub fn decoder(&self) -> Result<LoadedModel, CoreError> {
        Ok(self.decoder.model()?)
    }

    /// Id of the encoder whose latents are accepted.
    pub fn expected_encoder(&self) -> &str {
        &self.config.expected_encoder
    }

    /// Checks the job's latents against the encoder this decoder reads, and names each
    /// label by this label set's readable name.
    fn validate(&self, job: &mut CaptionJob) -> Result<(), CoreError> {
        let expected = &self.config.expected_encoder;
        if job.encoder_id != *expected {
            return Err(CoreError::WrongEncoder { got: job.encoder_id.clone(), expected: expected.clone() });
        }
        let invalid = |reason: String| CoreError::InvalidLatents { expected: expected.clone(), reason };
        if job.labels.is_empty() {
            return Err(invalid("no labels; this decoder writes from the encoder's top labels (EncodeImage with top_k >= 1)".into()));
        }
        for (i, l) in job.labels.iter_mut().enumerate() {
            let Some(name) = self.vocab.readable_name(l.class_index) else {
                return Err(invalid(format!(
                    "labels[{i}].class_index is {}, but the label set has {} classes",
                    l.class_index,
                    self.vocab.len()
                )));
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
    pub async fn caption(&self, mut job: CaptionJob) -> Result<Caption, CoreError> {
        self.validate(&mut job)?;
        let brief = Brief::new(&self.vocab, job.labels, job.mode, job.max_chars, &self.config.brief);
        let seed = seed_of(&brief);
        let mut rejections = Vec::new();
        let mut timings = Vec::new();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut accepted = None;
        while (attempts as usize) < self.config.max_attempts {
            let raw = self.decode(&brief, attempts, seed).await?;
            attempts += 1;
            let candidate = text::clean(&raw, brief.mode);
            match check::check(&candidate, &brief, &self.vocab) {
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
            rejections,
            timings,
        })
    }

    /// One decode of the brief; attempt 0 is greedy, later ones sampled.
    async fn decode(&self, brief: &Brief, attempt: u32, seed: u64) -> Result<String, CoreError> {
        let messages = prompt::conversation(brief)
            .into_iter()
            .map(|(role, content)| Message { role: role.to_string(), content })
            .collect();
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
        let mut events = self.decoder.generate(prompt, params)?;
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
