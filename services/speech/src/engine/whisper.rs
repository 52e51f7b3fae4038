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

/// Milliseconds of audio per encoder position (Whisper's convolutions halve the 10 ms
/// mel frames): a 30 s window is 1 500 positions.
const MS_PER_POSITION: usize = 20;
/// Whisper's window in encoder positions.
const FULL_WINDOW_POSITIONS: usize = 1500;

/// How much audio the encoder reads for each chunk.
///
/// Whisper was trained on 30 s windows, and whisper.cpp by default encodes a full window
/// whatever the chunk holds (the rest is padding). The encoder is most of the cost on CPU
/// (70% of tiny.en's time on this project's 2-core machine), and its attention grows with
/// the square of the window, so a 20 s chunk read through a 30 s window pays for half
/// again as much encoder as it needs. `Fit` sets whisper.cpp's `audio_ctx` to the chunk's
/// own length plus a margin, never below a floor (very short windows are where Whisper
/// drifts: docs/speech.md has the word error rates that chose the floor and margin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderWindow {
    /// Whisper's 30 s window for every chunk.
    Full,
    /// The chunk's length plus [`Self::FIT_MARGIN_MS`], at least [`Self::FIT_MIN_MS`], at
    /// most Whisper's 30 s.
    #[default]
    Fit,
}

impl EncoderWindow {
    /// Audio after the chunk's end that the encoder still reads (padding, as in training).
    pub const FIT_MARGIN_MS: usize = 1_000;
    /// The shortest window `Fit` uses.
    pub const FIT_MIN_MS: usize = 10_000;
    /// `Fit` windows are a whole number of these positions (640 ms), because ggml's tiled
    /// f16 kernels (llamafile's tinyBLAS) take a product only when its sizes are multiples
    /// of their tile and vector widths, and otherwise fall back to one dot product per
    /// output. Found when the encoder's attention products ran on them (the fallback was a
    /// quarter of the pipeline's time); since `attention.rs` computes the attention, the
    /// product that still depends on the window's length there is the second convolution's
    /// (one row per position: a multiple of 4 on AVX2). Not re-measured on its own since.
    pub const FIT_ALIGN_POSITIONS: usize = 32;

    /// whisper.cpp's `audio_ctx` for `n_samples` of 16 kHz audio (0 = the full window).
    pub fn audio_ctx(self, n_samples: usize) -> i32 {
        match self {
            EncoderWindow::Full => 0,
            EncoderWindow::Fit => {
                let ms = (n_samples * 1000 / super::audio::SAMPLE_RATE as usize + Self::FIT_MARGIN_MS).max(Self::FIT_MIN_MS);
                let positions = ms.div_ceil(MS_PER_POSITION).next_multiple_of(Self::FIT_ALIGN_POSITIONS);
                if positions >= FULL_WINDOW_POSITIONS {
                    0
                } else {
                    positions as i32
                }
            }
        }
    }
}

impl std::str::FromStr for EncoderWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fit" => Ok(EncoderWindow::Fit),
            "full" => Ok(EncoderWindow::Full),
            _ => Err(format!("{s:?} is not an encoder window: use fit or full")),
        }
    }
}

/// A state that detects languages on a short encoder window ([`WhisperModel::new_detector`]).
pub struct LanguageDetector {
    state: WhisperState,
    window_samples: usize,
}

impl LanguageDetector {
    /// The language of the first window of `samples` (pass them from where speech starts).
    pub fn detect(&mut self, model: &WhisperModel, samples: &[f32], threads: usize) -> Result<Language, EngineError> {
        let audio_ctx = (self.window_samples * 1000 / super::audio::SAMPLE_RATE as usize).div_ceil(MS_PER_POSITION) as i32;
        model.detect_language(&mut self.state, &samples[..samples.len().min(self.window_samples)], audio_ctx, threads)
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
    encoder_window: EncoderWindow,
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
    pub fn load(
        path: &Path,
        id: &str,
        profile: &str,
        beam_size: usize,
        encoder_window: EncoderWindow,
        gpu: Option<usize>,
    ) -> Result<Self, EngineError> {
        whisper_rs::install_logging_hooks();
        super::keep_linked();
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
        Ok(Self { context, meta, beam_size: beam_size.max(1), encoder_window })
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

    /// Detects the spoken language of (up to 30 s of) `samples`, with the encoder reading
    /// `audio_ctx` positions of 20 ms (0 = Whisper's full 30 s window).
    pub fn detect_language(&self, state: &mut WhisperState, samples: &[f32], audio_ctx: i32, threads: usize) -> Result<Language, EngineError> {
        if !self.meta.multilingual {
            return Ok(Language { code: "en".into(), probability: 1.0 });
        }
        self.set_window(state, audio_ctx, threads)?;
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
    /// surely (docs/speech.md).
    pub fn new_detector(&self, window_ms: u32) -> Result<LanguageDetector, EngineError> {
        let window_samples = window_ms as usize * crate::engine::audio::SAMPLE_RATE as usize / 1000;
        Ok(LanguageDetector { state: self.new_state()?, window_samples })
    }

    /// Sets the encoder window (`audio_ctx`) that `state`'s next language detection reads.
    ///
    /// whisper.cpp keeps the window in the state from its last full decode, and its language
    /// detection (ours, and its own inside a full decode) reads whatever that left. With
    /// windows fitted to each chunk that would make a detection depend on the chunk decoded
    /// before it, so every detection first sets its window here: a decode of 0.2 s of
    /// silence that stops before the encoder runs (the encoder-begin callback says no) and
    /// so costs only its mel spectrogram.
    fn set_window(&self, state: &mut WhisperState, audio_ctx: i32, threads: usize) -> Result<(), EngineError> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads.max(1) as i32);
        params.set_language(Some("en"));
        params.set_audio_ctx(audio_ctx);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        // SAFETY: the callback reads nothing through its pointers.
        unsafe { params.set_start_encoder_callback(Some(stop_before_encoding)) };
        let silence = vec![0f32; super::audio::SAMPLE_RATE as usize / 5];
        state.full(params, &silence).map_err(|e| EngineError::Whisper(format!("setting the encoder window: {e}")))?;
        Ok(())
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
        params.set_audio_ctx(self.encoder_window.audio_ctx(samples.len()));
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

/// whisper.cpp's encoder-begin callback for [`WhisperModel::set_window`]: no encoding.
unsafe extern "C" fn stop_before_encoding(
    _ctx: *mut whisper_rs::WhisperSysContext,
    _state: *mut whisper_rs::WhisperSysState,
    _user_data: *mut std::ffi::c_void,
) -> bool {
    false
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
    fn a_fitted_window_covers_the_chunk_and_a_margin_within_whispers_window() {
        let rate = super::super::audio::SAMPLE_RATE as usize;
        assert_eq!(EncoderWindow::Full.audio_ctx(5 * rate), 0);
        // 20 ms per position: 20 s + 1 s of margin = 1 050 positions, rounded up to 33 x 32.
        assert_eq!(EncoderWindow::Fit.audio_ctx(20 * rate), 1056);
        // Short chunks get the 10 s floor (500 positions, 16 x 32), not their own length.
        assert_eq!(EncoderWindow::Fit.audio_ctx(2 * rate), 512);
        assert_eq!(EncoderWindow::Fit.audio_ctx(0), 512);
        // Every fitted window is a whole number of tiles for ggml's f16 kernels.
        for seconds in 0..=28 {
            assert_eq!(EncoderWindow::Fit.audio_ctx(seconds * rate) % 32, 0, "{seconds} s");
        }
        // From 29 s on, margin and rounding reach Whisper's 30 s: the full window (0), never more.
        assert_eq!(EncoderWindow::Fit.audio_ctx(28 * rate), 1472);
        assert_eq!(EncoderWindow::Fit.audio_ctx(28 * rate + rate / 2), 0);
        assert_eq!(EncoderWindow::Fit.audio_ctx(29 * rate), 0);
        assert_eq!(EncoderWindow::Fit.audio_ctx(30 * rate), 0);
        assert_eq!("fit".parse::<EncoderWindow>(), Ok(EncoderWindow::Fit));
        assert!("half".parse::<EncoderWindow>().is_err());
    }

    #[test]
    fn compression_ratio_flags_loops() {
        let normal = compression_ratio("The quarterly budget was approved and Maria will send the report on Friday.");
        let looped = compression_ratio(&"Thank you. ".repeat(20));
        assert!(normal < 1.6, "{normal}");
        assert!(looped > 2.4, "{looped}");
    }
}
