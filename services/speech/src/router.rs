//! Which loaded model transcribes a request.
//!
//! A default cluster holds two Whisper models: the English-only one (fast: tiny.en) and a
//! multilingual one (base), each a [`SpeechCore`] with its own decoder states and queue.
//! The router sends each request to one of them, so a German or Spanish recording works
//! without restarting anything while English stays on the fast model:
//!
//! | request | model |
//! |---|---|
//! | `model_id` set | that model (NOT_FOUND if it is not loaded) |
//! | `task = translate`, or a language other than English | the multilingual model |
//! | language `en` | the English-only model |
//! | no language | detected first on the multilingual model (10 s from where speech starts, a short encoder pass), then English → English-only model, any other → multilingual model with that language; below probability 0.5 → the multilingual model, which detects again on its full 30 s window |
//!
//! With one model loaded (the primary is itself multilingual, or the second is switched off
//! or missing) every request goes to it, as before.

use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;

use crate::{
    core::{CoreConfig, CoreError, Event, Job, SpeechCore},
    engine::{whisper::ModelMeta, EngineError},
};

/// Below this probability the short-window detection is not trusted (see
/// [`SpeechRouter::transcribe`]).
pub const SURE_DETECTION: f32 = 0.5;

/// The loaded models and the rule above.
pub struct SpeechRouter {
    primary: Arc<SpeechCore>,
    /// The multilingual model beside an English-only primary, when configured (in use
    /// once it has loaded).
    second: Option<Arc<SpeechCore>>,
}

/// Where a request went, and what the choice cost.
pub struct Routed {
    pub model: ModelMeta,
    pub events: mpsc::Receiver<Event>,
    /// Time spent detecting the language before the job (0 when none was needed).
    pub detect_ms: f64,
}

impl SpeechRouter {
    /// `second`: the multilingual model to load beside an English-only primary.
    pub fn new(primary: CoreConfig, second: Option<CoreConfig>) -> Arc<Self> {
        Arc::new(SpeechRouter { primary: SpeechCore::new(primary), second: second.map(SpeechCore::new) })
    }

    /// Loads the primary model, then the multilingual one if the primary is English-only.
    /// A configured second model whose file is missing is skipped with a warning (the
    /// service then transcribes English only, as `GetModelInfo` shows); one that fails to
    /// load is an error.
    pub async fn load_and_warm_up(&self) -> Result<(), CoreError> {
        self.primary.load_and_warm_up().await?;
        if let Some(second) = &self.second {
            if self.primary.model()?.meta().multilingual {
                tracing::info!(model = %second.config().model_id, "the primary model is multilingual; the second is not loaded");
            } else if !second.config().model_path.exists() {
                tracing::warn!(
                    model = %second.config().model_id, path = %second.config().model_path.display(),
                    "multilingual model not found (mmc models fetch gets it); only English is transcribed"
                );
            } else {
                second.load_and_warm_up().await?;
            }
        }
        Ok(())
    }

    /// The loaded cores, primary first.
    fn cores(&self) -> impl Iterator<Item = &Arc<SpeechCore>> {
        let second = self.second.as_ref().filter(|c| c.model().is_ok());
        std::iter::once(&self.primary).chain(second)
    }

    /// The loaded models, primary first.
    pub fn models(&self) -> Result<Vec<ModelMeta>, CoreError> {
        self.cores().map(|c| c.model().map(|m| m.meta().clone())).collect()
    }

    /// Longest recording accepted, in milliseconds.
    pub fn max_audio_ms(&self) -> u64 {
        self.primary.config().max_audio_ms
    }

    fn english(&self) -> Option<&Arc<SpeechCore>> {
        self.cores().find(|c| c.model().is_ok_and(|m| !m.meta().multilingual))
    }

    fn multilingual(&self) -> Option<&Arc<SpeechCore>> {
        self.cores().find(|c| c.model().is_ok_and(|m| m.meta().multilingual))
    }

    /// The model for a request, or `None` when its language must be detected first.
    /// Checks what the request asks for (language code, translation, model id) before any
    /// audio is received.
    pub fn choose(&self, model_id: &str, language: Option<&str>, translate: bool) -> Result<Option<&Arc<SpeechCore>>, CoreError> {
        self.primary.model()?;
        let core = if !model_id.is_empty() {
            let found = self.cores().find(|c| c.config().model_id == model_id);
            Some(found.ok_or_else(|| CoreError::UnknownModel { asked: model_id.to_string(), loaded: self.loaded_ids() })?)
        } else if translate || language.is_some_and(|l| l != "en") {
            // The English-only model's check gives the clear refusal when no other is here.
            Some(self.multilingual().unwrap_or(&self.primary))
        } else if language == Some("en") {
            Some(self.english().unwrap_or(&self.primary))
        } else if self.english().is_some() && self.multilingual().is_some() {
            None
        } else {
            Some(&self.primary)
        };
        if let Some(core) = core {
            let model = core.model()?;
            if let Some(language) = language {
                model.check_language(language)?;
            }
            if translate && !model.meta().multilingual {
                return Err(EngineError::BadOption(format!("model {} is English-only and cannot translate", model.meta().id)).into());
            }
        }
        Ok(core)
    }

    fn loaded_ids(&self) -> Vec<String> {
        self.cores().map(|c| c.config().model_id.clone()).collect()
    }

    /// Queues a job on the model [`choose`](Self::choose) picks, detecting the language
    /// first when it must.
    pub async fn transcribe(&self, model_id: &str, mut job: Job) -> Result<Routed, CoreError> {
        let chosen = self.choose(model_id, job.options.language.as_deref(), job.options.translate)?;
        let started = Instant::now();
        let (core, detect_ms) = match chosen {
            Some(core) => (core, 0.0),
            None => {
                let (english, multilingual) = (self.english().expect("two models"), self.multilingual().expect("two models"));
                let detected = multilingual.detect_language(&job.audio, job.input).await?;
                let detect_ms = started.elapsed().as_secs_f64() * 1000.0;
                let core = match &detected {
                    Some(l) if l.probability < SURE_DETECTION => {
                        // Unsure on the short window (a German line full of "Budget" and
                        // "Produkt" scored English 0.24): the multilingual model detects
                        // again on its full window and transcribes whatever it finds.
                        tracing::info!(language = %l.code, probability = l.probability, detect_ms, "language unsure; the multilingual model decides");
                        job.detected = None;
                        return self.queue(multilingual, job, detect_ms);
                    }
                    Some(l) if l.code != "en" => multilingual,
                    _ => english,
                };
                if let Some(l) = &detected {
                    tracing::info!(language = %l.code, probability = l.probability, model = %core.config().model_id, detect_ms, "language detected");
                }
                job.options.language = detected.as_ref().map(|l| l.code.clone());
                job.detected = detected;
                (core, detect_ms)
            }
        };
        self.queue(core, job, detect_ms)
    }

    fn queue(&self, core: &Arc<SpeechCore>, job: Job, detect_ms: f64) -> Result<Routed, CoreError> {
        let model = core.model()?.meta().clone();
        let language = job.options.language.clone().unwrap_or_else(|| "detect".into());
        metrics::counter!("mmc_speech_routed_total", "model" => model.id.clone(), "language" => language).increment(1);
        let events = core.transcribe(job)?;
        Ok(Routed { model, events, detect_ms })
    }
}
