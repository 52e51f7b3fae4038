//! Inference core of the text-generation service: the loaded [`Engine`], a bounded queue of
//! requests and the scheduler that runs them.
//!
//! The scheduler owns the engine on one thread. Up to `max_sequences` generations are in
//! flight at once; each round gives every one of them a step (a prefill chunk or one
//! token), so a short request admitted behind a long one starts streaming at once instead of
//! waiting for it. For `llama` models on CPU a round is one batched forward pass over all of
//! them, each at its own position with its own KV cache (continuous batching: a sequence
//! joins the batch the round after it is admitted, and leaves it when it finishes), so the
//! weights are read once per round instead of once per sequence; other architectures run
//! their sequences' steps one after another. Requests beyond that
//! wait in a queue of `queue_capacity`; when it is full, new ones are refused at once.
//! A client that goes away (cancel, disconnect, deadline) is noticed at its next step and
//! its slot is freed.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Instant,
};

use tokio::sync::mpsc;

use crate::engine::{
    constraint::Constraint, generation::PreparedPrompt, model::Instance, Engine, EngineError, FinishReason, GenerationParams, Prompt, Sequence,
};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// Id reported with results (e.g. `smollm2-135m-instruct-q4_1`).
    pub model_id: String,
    /// Weights profile reported with results.
    pub profile: String,
    /// Generations in flight at once.
    pub max_sequences: usize,
    /// Requests that may wait for a free slot; more get [`CoreError::QueueFull`].
    pub queue_capacity: usize,
    /// Cap on the context window (0 = the model's).
    pub max_context: usize,
    /// Prompt tokens per prefill step.
    pub prefill_chunk: usize,
    /// `max_tokens` when a request leaves it 0.
    pub default_max_tokens: usize,
    /// Conversation prefixes whose model state is kept for reuse (0 = off).
    pub prefix_cache_entries: usize,
    /// Device the model runs on.
    pub device: mmc_models::DeviceSpec,
}

/// Errors the edge maps to gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the model is still loading")]
    Loading,
    #[error("{0} requests are already waiting for the model; retry with backoff")]
    QueueFull(usize),
    #[error("the generation scheduler has stopped")]
    Stopped,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Device(#[from] mmc_models::device::DeviceError),
}

/// Streamed result of a generation.
#[derive(Debug)]
pub enum Event {
    /// A token (text may be empty while held back).
    Token(crate::engine::generation::TokenOut),
    /// The last event of a successful generation.
    Done(Summary),
    /// The generation failed; nothing follows.
    Failed(CoreError),
}

/// Totals and timings of a finished generation.
#[derive(Debug, Clone)]
pub struct Summary {
    pub reason: FinishReason,
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub truncated_prompt_tokens: usize,
    /// Prompt tokens resumed from the prefix cache.
    pub cached_prompt_tokens: usize,
    /// From arrival at the service to the first token, in milliseconds.
    pub time_to_first_token_ms: f64,
    /// Tokens per second after the first.
    pub tokens_per_second: f64,
}

/// Facts about the loaded model.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub id: String,
    pub family: String,
    pub profile: String,
    pub revision: String,
    pub context_length: usize,
    pub supports_json_schema: bool,
}

struct Job {
    prompt: Prompt,
    params: GenerationParams,
    /// Compiled from `params.json_schema` before queueing.
    constraint: Option<Constraint>,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
}

struct Loaded {
    engine: Arc<Engine>,
    jobs: mpsc::Sender<Job>,
    info: LoadedModel,
}

/// The core: loads the engine, queues requests, runs the scheduler.
pub struct TextGenCore {
    config: CoreConfig,
    loaded: OnceLock<Loaded>,
}

impl TextGenCore {
    pub fn new(config: CoreConfig) -> Arc<TextGenCore> {
        Arc::new(TextGenCore { config, loaded: OnceLock::new() })
    }

    /// Loads the model, starts the scheduler and runs one short generation to warm up.
    pub async fn load_and_warm_up(self: &Arc<Self>) -> Result<(), CoreError> {
        let config = self.config.clone();
        let engine = tokio::task::spawn_blocking(move || -> Result<Engine, CoreError> {
            let device = config.device.candle()?;
            Ok(Engine::load(&config.model_path, &device, config.max_context, config.prefill_chunk)
                .map(|e| e.with_prefix_cache(config.prefix_cache_entries))?)
        })
        .await
        .map_err(|_| CoreError::Stopped)??;
        let engine = Arc::new(engine);
        let path = &self.config.model_path;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let revision = mmc_models::store::revision_of(path.parent().unwrap_or(path), file_name);
        let info = LoadedModel {
            id: self.config.model_id.clone(),
            family: engine.model.architecture().to_string(),
            profile: self.config.profile.clone(),
            revision,
            context_length: engine.context_length,
            supports_json_schema: engine.supports_json_schema(),
        };
        let (tx, rx) = mpsc::channel(self.config.queue_capacity.max(1));
        let scheduler = Scheduler { engine: engine.clone(), jobs: rx, max_sequences: self.config.max_sequences.max(1), spare: Vec::new() };
        std::thread::Builder::new().name("textgen-scheduler".into()).spawn(move || scheduler.run()).map_err(|_| CoreError::Stopped)?;
        tracing::info!(model = %info.id, family = %info.family, context_length = info.context_length, "model loaded");
        let _ = self.loaded.set(Loaded { engine, jobs: tx, info });
        // Warm-up: one greedy token end to end.
        let params = GenerationParams { max_tokens: 1, ..Default::default() };
        let mut events = self.generate(Prompt::Raw("Hello".into()), params)?;
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Failed(e) => return Err(e),
                Event::Done(_) => break,
                Event::Token(_) => {}
            }
        }
        Ok(())
    }

    fn loaded(&self) -> Result<&Loaded, CoreError> {
        self.loaded.get().ok_or(CoreError::Loading)
    }

    /// The loaded model's facts.
    pub fn model(&self) -> Result<LoadedModel, CoreError> {
        Ok(self.loaded()?.info.clone())
    }

    /// The default for `max_tokens` = 0.
    pub fn default_max_tokens(&self) -> usize {
        self.config.default_max_tokens
    }

    /// Tokens `prompt` takes.
    pub fn count_tokens(&self, prompt: &Prompt) -> Result<usize, CoreError> {
        Ok(self.loaded()?.engine.count_tokens(prompt)?)
    }

    /// Queues a generation; events arrive on the returned receiver. Dropping the receiver
    /// cancels the generation. Fails at once if the queue is full or the schema is unusable.
    pub fn generate(&self, prompt: Prompt, params: GenerationParams) -> Result<mpsc::UnboundedReceiver<Event>, CoreError> {
        let loaded = self.loaded()?;
        let constraint = loaded.engine.constraint(&params)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let job = Job { prompt, params, constraint, events: tx, arrived: Instant::now() };
        match loaded.jobs.try_send(job) {
            Ok(()) => {
                metrics::gauge!("mmc_textgen_queue_depth").increment(1.0);
                Ok(rx)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("mmc_textgen_rejected_total", "reason" => "queue_full").increment(1);
                Err(CoreError::QueueFull(self.config.queue_capacity))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CoreError::Stopped),
        }
    }
}

/// A sequence in flight and where its events go.
struct Active {
    seq: Sequence,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
    first_token: Option<Instant>,
    truncated: usize,
}

struct Scheduler {
    engine: Arc<Engine>,
    jobs: mpsc::Receiver<Job>,
    max_sequences: usize,
    /// Instances whose KV cache was cleared, for reuse.
    spare: Vec<Instance>,
}

impl Scheduler {
    fn run(mut self) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            // Admit waiting jobs into free slots; sleep when there is nothing to do.
            while active.len() < self.max_sequences {
                let job = if active.is_empty() {
                    match self.jobs.blocking_recv() {
                        Some(job) => job,
                        None => return,
                    }
                } else {
                    match self.jobs.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                metrics::gauge!("mmc_textgen_queue_depth").decrement(1.0);
                if let Some(a) = self.admit(job) {
                    active.push(a);
                }
            }
            metrics::gauge!("mmc_textgen_active_sequences").set(active.len() as f64);

            // Clients that went away free their slots first.
            let mut i = 0;
            while i < active.len() {
                if active[i].events.is_closed() {
                    metrics::counter!("mmc_textgen_cancelled_total").increment(1);
                    let a = active.swap_remove(i);
                    self.release(a.seq);
                } else {
                    i += 1;
                }
            }
            if active.is_empty() {
                continue;
            }

            // One step for each sequence in flight, in one batched pass where the model allows.
            metrics::histogram!("mmc_textgen_step_sequences").record(active.len() as f64);
            let results = {
                let mut seqs: Vec<&mut Sequence> = active.iter_mut().map(|a| &mut a.seq).collect();
                self.engine.step_all(&mut seqs)
            };
            let mut done = Vec::new();
            for (i, (a, result)) in active.iter_mut().zip(results).enumerate() {
                match result {
                    Err(e) => {
                        tracing::warn!(error = %e, "generation failed");
                        let _ = a.events.send(Event::Failed(e.into()));
                        done.push(i);
                    }
                    Ok(step) => {
                        if let Some(tok) = step.token {
                            if a.first_token.is_none() {
                                a.first_token = Some(Instant::now());
                                metrics::histogram!("mmc_textgen_time_to_first_token_seconds").record(a.arrived.elapsed().as_secs_f64());
                            }
                            metrics::counter!("mmc_textgen_generated_tokens_total").increment(1);
                            let _ = a.events.send(Event::Token(tok));
                        }
                        if let Some(fin) = step.finished {
                            let now = Instant::now();
                            let first = a.first_token.unwrap_or(now);
                            let decode_s = now.duration_since(first).as_secs_f64();
                            let summary = Summary {
                                reason: fin.reason,
                                text: fin.text,
                                prompt_tokens: a.seq.prompt_tokens(),
                                completion_tokens: fin.completion_tokens,
                                truncated_prompt_tokens: a.truncated,
                                cached_prompt_tokens: a.seq.reused_prompt_tokens(),
                                time_to_first_token_ms: first.duration_since(a.arrived).as_secs_f64() * 1e3,
                                tokens_per_second: if decode_s > 0.0 && fin.completion_tokens > 1 {
                                    (fin.completion_tokens - 1) as f64 / decode_s
                                } else {
                                    0.0
                                },
                            };
                            let _ = a.events.send(Event::Done(summary));
                            done.push(i);
                        }
                    }
                }
            }
            // Highest index first, so each swap_remove moves a sequence that stays.
            for i in done.into_iter().rev() {
                let a = active.swap_remove(i);
                self.release(a.seq);
            }
        }
    }

    /// Prepares a job for its first step, or reports why it cannot run.
    fn admit(&mut self, job: Job) -> Option<Active> {
        if job.events.is_closed() {
            metrics::counter!("mmc_textgen_cancelled_total").increment(1);
            return None;
        }
        let fail = |e: EngineError| {
            let _ = job.events.send(Event::Failed(e.into()));
            None
        };
        let prepared: PreparedPrompt = match self.engine.prepare(&job.prompt, job.params.overflow) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let instance = match self.spare.pop() {
            Some(i) => i,
            None => match self.engine.model.instance() {
                Ok(i) => i,
                Err(e) => return fail(e.into()),
            },
        };
        metrics::counter!("mmc_textgen_prompt_tokens_total").increment(prepared.ids.len() as u64);
        let truncated = prepared.truncated_tokens;
        match self.engine.start(prepared, &job.params, job.constraint, instance) {
            Ok(seq) => Some(Active { seq, events: job.events, arrived: job.arrived, first_token: None, truncated }),
            Err(e) => fail(e),
        }
    }

    fn release(&mut self, seq: Sequence) {
        let mut instance = seq.into_instance();
        match self.engine.model.reset(&mut instance) {
            Ok(()) => self.spare.push(instance),
            Err(e) => tracing::warn!(error = %e, "dropping a model instance that could not be reset"),
        }
    }
}
