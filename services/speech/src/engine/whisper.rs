//! Whisper through whisper.cpp (whisper-rs): one loaded model, many decoder states.
//!
//! A `WhisperContext` holds the weights once; each `WhisperState` holds one decode's
//! buffers (mel, KV caches) and can run while other states run on other threads. So
//! concurrent requests share the weights and each borrows a state from the core's pool.
//!
//! The model sees one chunk (at most 30 s) per call. Within it whisper.cpp applies its own
//! guards against Whisper's failure modes: temperature fallback when a decode's entropy is
//! too low (a repetition loop, whisper.cpp's analogue of faster-whisper's compression-ratio
//! test) or its mean log-probability too low, and the no-speech threshold that drops a
//! window the model itself thinks is silent.

use std::{
    io::Write,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use super::EngineError;

/// Facts about the loaded model, for `GetModelInfo` and validation.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub id: String,
    pub profile: String,
    /// sha256 prefix of the weights file.
    pub revision: String,
    /// Whether the model knows languages other than English (and can translate).
    pub multilingual: bool,
    /// e.g. "tiny", "base" (whisper.cpp's name for the size).
    pub size: String,
}

/// A state that detects languages on a short encoder window ([`WhisperModel::new_detector`]).
pub struct LanguageDetector {
    state: WhisperState,
    window_samples: usize,
}

impl LanguageDetector {
    /// The language of the first window of `samples` (pass them from where speech starts).
    pub fn detect(&mut self, model: &WhisperModel, samples: &[f32], threads: usize) -> Result<Language, EngineError> {
        model.detect_language(&mut self.state, &samples[..samples.len().min(self.window_samples)], threads)
    }
}

/// Per-request decoding options.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// ISO 639-1 code; `None` = detect.
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    /// Compute per-word timings.
    pub word_timestamps: bool,
    /// Text that conditions the decoder (names, jargon).
    pub initial_prompt: Option<String>,
}

/// A timed word.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub probability: f32,
}

/// A decoded stretch of speech, with times relative to the whole recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub compression_ratio: f32,
    pub words: Vec<Word>,
}

/// The loaded model.
pub struct WhisperModel {
    context: WhisperContext,
    meta: ModelMeta,
    beam_size: usize,
}

/// How a language was settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Language {
    pub code: String,
    pub probability: f32,
}

impl WhisperModel {
    /// Loads a whisper.cpp ggml model file. `beam_size` 1 = greedy decoding; `gpu` = the
    /// CUDA device to run on (`None` = CPU; a GPU needs the crate's `cuda` feature).
    pub fn load(path: &Path, id: &str, profile: &str, beam_size: usize, gpu: Option<usize>) -> Result<Self, EngineError> {
        whisper_rs::install_logging_hooks();
        if !path.is_file() {
            return Err(EngineError::Load(format!(
                "{} not found: run `mmc models fetch` (it converts the bundled Whisper to whisper.cpp's format)",
                path.display()
            )));
        }
        // Flash attention stays off: on these CPUs it made tiny.en 1.8x slower (measured).
        let mut params = WhisperContextParameters::default();
        params.use_gpu(gpu.is_some()).gpu_device(gpu.unwrap_or(0) as i32);
        let context = WhisperContext::new_with_params(path, params)
            .map_err(|e| EngineError::Load(format!("whisper.cpp could not load {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let meta = ModelMeta {
            id: id.to_string(),
            profile: profile.to_string(),
            revision: mmc_models::store::revision_of(dir, &file),
            multilingual: context.is_multilingual(),
            size: context.model_type_readable_str_lossy().map(|s| s.into_owned()).unwrap_or_default(),
        };
        Ok(Self { context, meta, beam_size: beam_size.max(1) })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// A fresh decoder state (whisper.cpp allocates its buffers here: tens of MB).
    pub fn new_state(&self) -> Result<WhisperState, EngineError> {
        self.context.create_state().map_err(|e| EngineError::Whisper(format!("creating a decoder state: {e}")))
    }

    /// Checks a requested language against the model.
    pub fn check_language(&self, code: &str) -> Result<(), EngineError> {
        if whisper_rs::get_lang_id(code).is_none() {
            return Err(EngineError::BadOption(format!("unknown language code {code:?} (use ISO 639-1, e.g. \"en\", \"ko\")")));
        }
        if !self.meta.multilingual && code != "en" {
            return Err(EngineError::BadOption(format!("model {} is English-only; language {code:?} needs a multilingual model", self.meta.id)));
        }
        Ok(())
    }

    /// Detects the spoken language of (up to 30 s of) `samples`.
    pub fn detect_language(&self, state: &mut WhisperState, samples: &[f32], threads: usize) -> Result<Language, EngineError> {
        if !self.meta.multilingual {
            return Ok(Language { code: "en".into(), probability: 1.0 });
        }
        state.pcm_to_mel(samples, threads).map_err(|e| EngineError::Whisper(format!("mel spectrogram: {e}")))?;
        let (id, probs) = state.lang_detect(0, threads).map_err(|e| EngineError::Whisper(format!("language detection: {e}")))?;
        let code = whisper_rs::get_lang_str(id).unwrap_or("en").to_string();
        Ok(Language { code, probability: probs.get(id as usize).copied().unwrap_or(0.0) })
    }

    /// A decoder state kept for language detection alone, whose encoder reads only the
    /// first `window_ms` of what it is given instead of Whisper's 30 s window.
    ///
    /// Why: detection is one encoder pass that a request waits for before its model is
    /// chosen. On base at 2 threads the full window costs about 2.6 s even for a 5 s clip;
    /// a 10 s window costs a third of that and names German, Spanish and English speech as
    /// surely (docs/speech.md). whisper.cpp keeps the window (`audio_ctx`) in the state
    /// from its last full decode and has no other way to set it, so the state is made with
    /// one short decode under that setting and is never used to transcribe.
    pub fn new_detector(&self, window_ms: u32, threads: usize) -> Result<LanguageDetector, EngineError> {
        let mut state = self.new_state()?;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads.max(1) as i32);
        params.set_language(Some("en"));
        params.set_audio_ctx((window_ms / 20) as i32);
        params.set_max_tokens(1);
        params.set_single_segment(true);
        params.set_no_timestamps(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        let quiet: Vec<f32> = (0..crate::engine::audio::SAMPLE_RATE).map(|i| (i as f32 * 0.05).sin() * 0.01).collect();
        state.full(params, &quiet).map_err(|e| EngineError::Whisper(format!("preparing the language detector: {e}")))?;
        let window_samples = window_ms as usize * crate::engine::audio::SAMPLE_RATE as usize / 1000;
        Ok(LanguageDetector { state, window_samples })
    }

    /// Transcribes one chunk (at most 30 s); `offset_ms` places its segments in the
    /// recording. `cancel` aborts the decode between whisper.cpp's steps.
    pub fn transcribe(
        &self,
        state: &mut WhisperState,
        samples: &[f32],
        offset_ms: i64,
        options: &DecodeOptions,
        threads: usize,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Vec<Segment>, EngineError> {
        let strategy = if self.beam_size > 1 {
            SamplingStrategy::BeamSearch { beam_size: self.beam_size as i32, patience: -1.0 }
        } else {
            SamplingStrategy::Greedy { best_of: 1 }
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(threads.max(1) as i32);
        params.set_translate(options.translate);
        params.set_language(Some(options.language.as_deref().unwrap_or("auto")));
        // Chunks are decoded independently: conditioning on the previous text is what
        // lets one hallucination or loop spread through a long recording.
        params.set_no_context(true);
        params.set_token_timestamps(options.word_timestamps);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        // whisper.cpp's defaults for the fallback guards, stated so they are visible.
        params.set_temperature(0.0);
        params.set_temperature_inc(0.2);
        params.set_entropy_thold(2.4);
        params.set_logprob_thold(-1.0);
        params.set_no_speech_thold(0.6);
        if let Some(prompt) = options.initial_prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            params.set_initial_prompt(prompt);
        }
        // whisper-rs 0.16's `set_abort_callback_safe` casts its boxed closure back to the
        // wrong type (and so aborts at random); the raw callback reads our flag directly.
        // SAFETY: the pointer is to the AtomicBool inside `cancel`, which outlives `full`.
        unsafe {
            params.set_abort_callback(Some(abort_requested));
            params.set_abort_callback_user_data(Arc::as_ptr(cancel) as *mut std::ffi::c_void);
        }

        state.full(params, samples).map_err(|e| {
            if cancel.load(Ordering::Relaxed) {
                EngineError::Cancelled
            } else {
                EngineError::Whisper(format!("decoding: {e}"))
            }
        })?;
        if cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        let eot = self.context.token_eot();
        let chunk_end_ms = offset_ms + (samples.len() as i64 * 1000 / super::audio::SAMPLE_RATE as i64);
        let mut segments = Vec::new();
        for segment in state.as_iter() {
            let clamp = |cs: i64| (offset_ms + cs * 10).clamp(offset_ms, chunk_end_ms);
            let (start_ms, end_ms) = (clamp(segment.start_timestamp()), clamp(segment.end_timestamp()));
            let mut logprob_sum = 0f32;
            let mut text_tokens = 0usize;
            let mut words: Vec<Word> = Vec::new();
            let mut word_probs: Vec<f32> = Vec::new();
            for i in 0..segment.n_tokens() {
                let Some(token) = segment.get_token(i) else { continue };
                let data = token.token_data();
                if data.id >= eot {
                    continue;
                }
                logprob_sum += data.plog;
                text_tokens += 1;
                if !options.word_timestamps {
                    continue;
                }
                let piece = token.to_str_lossy().map(|s| s.into_owned()).unwrap_or_default();
                let (t0, t1) = (clamp(data.t0), clamp(data.t1));
                let starts_word = words.is_empty() || piece.starts_with(' ');
                if starts_word {
                    if let Some(w) = words.last_mut() {
                        w.probability = mean(&word_probs);
                    }
                    word_probs.clear();
                    words.push(Word { text: piece, start_ms: t0, end_ms: t1.max(t0), probability: 0.0 });
                } else if let Some(w) = words.last_mut() {
                    w.text.push_str(&piece);
                    w.end_ms = w.end_ms.max(t1);
                }
                word_probs.push(data.p);
            }
            if let Some(w) = words.last_mut() {
                w.probability = mean(&word_probs);
            }
            let text = segment.to_str_lossy().map(|s| s.trim().to_string()).unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            let words = words.into_iter().map(|w| Word { text: w.text.trim().to_string(), ..w }).filter(|w| !w.text.is_empty()).collect();
            segments.push(Segment {
                start_ms,
                end_ms: end_ms.max(start_ms),
                compression_ratio: compression_ratio(&text),
                text,
                avg_logprob: if text_tokens > 0 { logprob_sum / text_tokens as f32 } else { 0.0 },
                no_speech_prob: segment.no_speech_probability(),
                words,
            });
        }
        Ok(segments)
    }
}

/// whisper.cpp's abort callback: `user_data` points at the request's cancel flag.
unsafe extern "C" fn abort_requested(user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: set in `transcribe` to a live `AtomicBool` for the duration of the call.
    unsafe { (*(user_data as *const AtomicBool)).load(Ordering::Relaxed) }
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}

/// Text length over its zlib-compressed length: what faster-whisper and OpenAI's Whisper
/// use to spot repetition loops (above ~2.4 the text is suspiciously repetitive).
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(text.as_bytes());
    let compressed = z.finish().map(|v| v.len()).unwrap_or(text.len()).max(1);
    text.len() as f32 / compressed as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_flags_loops() {
        let normal = compression_ratio("The quarterly budget was approved and Maria will send the report on Friday.");
        let looped = compression_ratio(&"Thank you. ".repeat(20));
        assert!(normal < 1.6, "{normal}");
        assert!(looped > 2.4, "{looped}");
    }
}
