//! One model ready to generate ([`Engine`]) and one generation in progress ([`Sequence`]).
//!
//! A sequence advances one [`Sequence::step`] at a time: a chunk of the prompt (prefill) or
//! one new token (decode). The core's scheduler interleaves the steps of all sequences in
//! flight, so a long prompt or a long answer never blocks a short one for long.

use std::path::Path;

use candle_core::Device;

use super::{
    chat::{ChatError, ChatTemplate, Message},
    constraint::{Constraint, ConstraintError, ConstraintFactory},
    model::{BatchStep, Instance, Model, ModelError},
    prefix_cache::{self, PrefixCache},
    sampler::{logprob, Sampler, SamplingConfig},
    stop::{StopCheck, StopMatcher},
    tokenizer::{IncrementalDecoder, Tokenizer, TokenizerError},
};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error("the prompt is {prompt_tokens} tokens; the context window is {context_length} tokens, so a prompt may have at most {max_prompt_tokens} (shorten it, or ask for truncation)")]
    PromptTooLong { prompt_tokens: usize, context_length: usize, max_prompt_tokens: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("JSON-Schema constraints are unavailable for this model: {0}")]
    NoConstraints(String),
    #[error("the constraint allows no token at step {0} (the schema cannot be completed)")]
    DeadEnd(usize),
    #[error("batched model step failed: {0}")]
    Batch(String),
}

/// What to do with a prompt that does not fit the context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Refuse with the counts.
    #[default]
    Reject,
    /// Drop the oldest input: whole turns after the system prompt first (chat), then the
    /// start of what remains.
    TruncateStart,
}

/// What the model is asked to continue.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Sent as is (special-token text is parsed as special tokens).
    Raw(String),
    /// Rendered with the model's chat template, with the assistant's turn opened.
    Chat(Vec<Message>),
    /// As `Chat`, with the assistant's answer begun by `prefix` (prefill), which the model
    /// continues; the generated text does not repeat it. Steers a small model's form (e.g.
    /// an answer that must start "Possibly a") without a grammar. Never truncated.
    ChatPrefix { messages: Vec<Message>, prefix: String },
}

/// Everything a generation is configured by.
#[derive(Debug, Clone, Default)]
pub struct GenerationParams {
    pub sampling: SamplingConfig,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Generation ends before any of these strings.
    pub stop: Vec<String>,
    /// JSON Schema (JSON text) the output must conform to.
    pub json_schema: Option<String>,
    pub overflow: OverflowPolicy,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-turn token (or the JSON document is complete).
    Stop,
    /// `max_tokens` or the context window reached.
    Length,
    /// A stop sequence matched.
    StopSequence,
}

/// A prompt tokenized and fitted to the context window.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub ids: Vec<u32>,
    /// Tokens dropped by [`OverflowPolicy::TruncateStart`].
    pub truncated_tokens: usize,
    /// Length of the conversation's earlier turns (every message but the last, rendered),
    /// when they are a strict prefix of `ids`: the state there is worth caching.
    pub history_tokens: Option<usize>,
}

/// A sampled token as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOut {
    pub id: u32,
    /// Text released with this token (held back while a stop sequence or a multi-byte
    /// character may be incomplete).
    pub text: String,
    /// Log-probability under the unconstrained, unpenalised model.
    pub logprob: f32,
}

/// The end of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    /// The whole generated text (what was streamed).
    pub text: String,
    pub completion_tokens: usize,
}

/// Result of one [`Sequence::step`].
#[derive(Debug, Default)]
pub struct Step {
    /// A new token, if this step sampled one that is part of the output.
    pub token: Option<TokenOut>,
    /// Set when the generation is over.
    pub finished: Option<Finished>,
}

/// A loaded model with its tokenizer, chat template and constraint factory.
pub struct Engine {
    pub model: Model,
    pub tokenizer: Tokenizer,
    chat: Result<ChatTemplate, String>,
    constraints: Result<ConstraintFactory, String>,
    /// Context window in tokens (the model's, or less if configured).
    pub context_length: usize,
    /// Prompt tokens run per prefill step.
    pub prefill_chunk: usize,
    /// States after earlier conversation turns (see [`prefix_cache`]).
    prefix_cache: PrefixCache,
}

impl Engine {
    /// Sets the prefix cache's capacity in entries (0 = off; default
    /// [`prefix_cache::DEFAULT_ENTRIES`]).
    pub fn with_prefix_cache(mut self, entries: usize) -> Engine {
        self.prefix_cache = PrefixCache::new(entries, prefix_cache::DEFAULT_MAX_TOKENS);
        self
    }

    /// Loads the GGUF at `path`; `max_context` caps the context window (0 = the model's).
    pub fn load(path: &Path, device: &Device, max_context: usize, prefill_chunk: usize) -> Result<Engine, EngineError> {
        let model = Model::load(path, device)?;
        let tokenizer = Tokenizer::load(path, &model.metadata)?;
        let template = model.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let chat = ChatTemplate::new(template.as_deref(), &tokenizer.bos_text, &tokenizer.eos_text).map_err(|e| e.to_string());
        let constraints = ConstraintFactory::new(tokenizer.inner(), &tokenizer.stop_ids).map_err(|e| e.to_string());
        if let Err(e) = &constraints {
            tracing::warn!(error = %e, "JSON-Schema constraints unavailable for this model");
        }
        let context_length = if max_context > 0 { model.context_length.min(max_context) } else { model.context_length };
        Ok(Engine {
            model,
            tokenizer,
            chat,
            constraints,
            context_length,
            prefill_chunk: prefill_chunk.max(1),
            prefix_cache: PrefixCache::new(prefix_cache::DEFAULT_ENTRIES, prefix_cache::DEFAULT_MAX_TOKENS),
        })
    }

    /// Whether requests may carry a JSON Schema.
    pub fn supports_json_schema(&self) -> bool {
        self.constraints.is_ok()
    }

    /// The chat rendering of `messages`.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String, EngineError> {
        self.render_chat_with(messages, true)
    }

    fn render_chat_with(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, EngineError> {
        match &self.chat {
            Ok(t) => Ok(t.render_with(messages, add_generation_prompt)?),
            Err(_) if !self.model.metadata.contains_key("tokenizer.chat_template") => Err(ChatError::NoTemplate.into()),
            Err(e) => Err(ChatError::Compile(e.clone()).into()),
        }
    }

    /// Token count of a prompt as the model would see it (no truncation).
    pub fn count_tokens(&self, prompt: &Prompt) -> Result<usize, EngineError> {
        Ok(self.tokenize(prompt)?.len())
    }

    fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        Ok(match prompt {
            Prompt::Raw(text) => self.tokenizer.encode(text)?,
            Prompt::Chat(messages) => self.tokenizer.encode(&self.render_chat(messages)?)?,
            Prompt::ChatPrefix { messages, prefix } => self.tokenizer.encode(&(self.render_chat(messages)? + prefix))?,
        })
    }

    /// Tokenizes `prompt` and fits it to the context window by `policy` (one token of room
    /// is kept for the answer).
    pub fn prepare(&self, prompt: &Prompt, policy: OverflowPolicy) -> Result<PreparedPrompt, EngineError> {
        let max_prompt_tokens = self.context_length.saturating_sub(1);
        let ids = self.tokenize(prompt)?;
        if ids.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if ids.len() <= max_prompt_tokens {
            let history_tokens = self.history_tokens(prompt, &ids);
            return Ok(PreparedPrompt { ids, truncated_tokens: 0, history_tokens });
        }
        let too_long = EngineError::PromptTooLong { prompt_tokens: ids.len(), context_length: self.context_length, max_prompt_tokens };
        if policy == OverflowPolicy::Reject {
            return Err(too_long);
        }
        let original = ids.len();
        let fitted = match prompt {
            Prompt::Raw(_) => {
                let keep_bos = self.tokenizer.bos.filter(|b| ids.first() == Some(b));
                let mut tail = ids[ids.len() - (max_prompt_tokens - keep_bos.is_some() as usize)..].to_vec();
                if let Some(b) = keep_bos {
                    tail.insert(0, b);
                }
                tail
            }
            Prompt::Chat(messages) => self.fit_chat(messages, max_prompt_tokens)?,
            Prompt::ChatPrefix { .. } => return Err(too_long),
        };
        Ok(PreparedPrompt { truncated_tokens: original - fitted.len(), ids: fitted, history_tokens: None })
    }

    /// Token length of a chat's earlier turns when they are a strict prefix of `ids` (and the
    /// prefix cache would keep them).
    fn history_tokens(&self, prompt: &Prompt, ids: &[u32]) -> Option<usize> {
        let messages = match prompt {
            Prompt::Chat(m) | Prompt::ChatPrefix { messages: m, .. } => m,
            Prompt::Raw(_) => return None,
        };
        if messages.len() < 2 || self.prefix_cache.is_off() {
            return None;
        }
        let history = self.render_chat_with(&messages[..messages.len() - 1], false).ok()?;
        let prefix = self.tokenizer.encode(&history).ok()?;
        (prefix.len() < ids.len() && ids.starts_with(&prefix) && self.prefix_cache.wants(prefix.len())).then_some(prefix.len())
    }

    /// Drops the oldest turns after the system prompt, then the start of the last turn's
    /// text, until the rendered conversation fits `max_tokens`.
    fn fit_chat(&self, messages: &[Message], max_tokens: usize) -> Result<Vec<u32>, EngineError> {
        let mut msgs = messages.to_vec();
        let first_other = msgs.iter().position(|m| m.role != "system").unwrap_or(msgs.len());
        loop {
            let ids = self.tokenize(&Prompt::Chat(msgs.clone()))?;
            if ids.len() <= max_tokens {
                return Ok(ids);
            }
            if msgs.len() - first_other > 1 {
                msgs.remove(first_other);
                continue;
            }
            // One turn left: cut the start of its text by the overflow (plus a margin for
            // re-tokenisation at the cut).
            let Some(last) = msgs.last_mut() else { return Err(EngineError::EmptyPrompt) };
            let content = self.tokenizer.encode_plain(&last.content)?;
            let excess = ids.len() - max_tokens + 4;
            if excess >= content.len() {
                return Err(EngineError::PromptTooLong {
                    prompt_tokens: ids.len(),
                    context_length: self.context_length,
                    max_prompt_tokens: max_tokens,
                });
            }
            last.content = self.tokenizer.decode(&content[excess..]);
        }
    }

    /// Starts a generation of `prompt` on `instance` (which must have an empty KV cache),
    /// under `constraint` (from [`Engine::constraint`] for `params.json_schema`).
    pub fn start(
        &self,
        prompt: PreparedPrompt,
        params: &GenerationParams,
        constraint: Option<Constraint>,
        instance: Instance,
    ) -> Result<Sequence, EngineError> {
        let room = self.context_length.saturating_sub(prompt.ids.len());
        // Resume from the longest cached prefix; note where to keep the state otherwise.
        let (instance, prefilled) = match self.prefix_cache.lookup(&prompt.ids) {
            Some((len, cached)) => {
                metrics::counter!("mmc_textgen_prefix_cache_hits_total").increment(1);
                metrics::counter!("mmc_textgen_prefix_cache_reused_tokens_total").increment(len as u64);
                (cached, len)
            }
            None => {
                if !self.prefix_cache.is_off() {
                    metrics::counter!("mmc_textgen_prefix_cache_misses_total").increment(1);
                }
                (instance, 0)
            }
        };
        let snapshot_at = prompt.history_tokens.filter(|&h| h > prefilled && !self.prefix_cache.contains(&prompt.ids[..h]));
        Ok(Sequence {
            instance,
            prompt_len: prompt.ids.len(),
            tokens: prompt.ids,
            prefilled,
            reused: prefilled,
            snapshot_at,
            generated: Vec::new(),
            sampler: Sampler::new(params.sampling.clone()),
            constraint,
            stop: StopMatcher::new(&params.stop),
            detokenizer: IncrementalDecoder::default(),
            max_new: params.max_tokens.min(room),
            finished: false,
        })
    }

    /// Advances every sequence by one step (a prefill chunk or one token each), running
    /// their model inputs together in one batched pass where the model allows (see
    /// [`Model::forward_batch`]); results are in the order of `seqs`.
    pub fn step_all(&self, seqs: &mut [&mut Sequence]) -> Vec<Result<Step, EngineError>> {
        let plans: Vec<Option<Planned>> = seqs.iter().map(|s| s.plan(self)).collect();
        let mut batch = Vec::new();
        for (s, p) in seqs.iter_mut().zip(&plans) {
            if let Some(p) = p {
                let s: &mut Sequence = s;
                batch.push(BatchStep { instance: &mut s.instance, tokens: &s.tokens[p.start..p.end], pos: p.start, want_logits: p.logits });
            }
        }
        let outcome = self.model.forward_batch(&mut batch);
        drop(batch);
        let mut logits = match outcome {
            Ok(l) => l.into_iter(),
            Err(e) => {
                let msg = e.to_string();
                return seqs
                    .iter_mut()
                    .zip(plans)
                    .map(|(s, p)| match p {
                        Some(_) => Err(EngineError::Batch(msg.clone())),
                        None => s.complete(self, None, None),
                    })
                    .collect();
            }
        };
        seqs.iter_mut()
            .zip(plans)
            .map(|(s, p)| {
                let l = if p.is_some() { logits.next().flatten() } else { None };
                s.complete(self, p, l)
            })
            .collect()
    }

    /// Compiles the constraint for `params.json_schema` (none without a schema). The core
    /// does this before queueing, so a bad schema fails at once and the scheduler thread
    /// never compiles one.
    pub fn constraint(&self, params: &GenerationParams) -> Result<Option<Constraint>, EngineError> {
        let Some(schema) = &params.json_schema else { return Ok(None) };
        match &self.constraints {
            Ok(f) => Ok(Some(f.json_schema(schema)?)),
            Err(e) => Err(EngineError::NoConstraints(e.clone())),
        }
    }
}

/// A step's model input: `tokens[start..end]` at positions `start..end`.
struct Planned {
    start: usize,
    end: usize,
    /// Whether the last token's logits are needed (not for a prefill chunk before the last).
    logits: bool,
}

/// One generation in progress.
pub struct Sequence {
    instance: Instance,
    /// Prompt then generated ids.
    tokens: Vec<u32>,
    prompt_len: usize,
    prefilled: usize,
    /// Prompt tokens taken from the prefix cache instead of being run.
    reused: usize,
    /// Prompt position whose state goes into the prefix cache when prefill reaches it.
    snapshot_at: Option<usize>,
    generated: Vec<u32>,
    sampler: Sampler,
    constraint: Option<Constraint>,
    stop: StopMatcher,
    /// Generated ids to text, a few tokens at a time.
    detokenizer: IncrementalDecoder,
    max_new: usize,
    finished: bool,
}

impl Sequence {
    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_len
    }

    /// Prompt tokens whose state came from the prefix cache.
    pub fn reused_prompt_tokens(&self) -> usize {
        self.reused
    }

    /// True while the prompt is still being run.
    pub fn in_prefill(&self) -> bool {
        self.prefilled < self.prompt_len
    }

    /// Gives the model instance back (to reuse it for another sequence).
    pub fn into_instance(self) -> Instance {
        self.instance
    }

    /// Advances by one prefill chunk or one decoded token, alone (the scheduler batches
    /// sequences with [`Engine::step_all`] instead).
    pub fn step(&mut self, engine: &Engine) -> Result<Step, EngineError> {
        debug_assert!(!self.finished, "step after finish");
        let planned = self.plan(engine);
        let logits = match &planned {
            Some(p) => Some(self.instance.forward(&self.tokens[p.start..p.end], p.start, engine.model.device())?),
            None => None,
        };
        self.complete(engine, planned, logits)
    }

    /// The model input of the next step (`None` when the step needs no model run: the
    /// sequence can only finish).
    fn plan(&self, engine: &Engine) -> Option<Planned> {
        if self.max_new == 0 {
            return None;
        }
        if !self.in_prefill() {
            let pos = self.tokens.len() - 1;
            return Some(Planned { start: pos, end: pos + 1, logits: true });
        }
        let mut end = (self.prefilled + engine.prefill_chunk).min(self.prompt_len);
        if let Some(at) = self.snapshot_at.filter(|&at| at > self.prefilled) {
            end = end.min(at);
        }
        Some(Planned { start: self.prefilled, end, logits: end == self.prompt_len })
    }

    /// The rest of a step whose model input (from [`Sequence::plan`]) has been run, giving
    /// `logits` for its last token when it asked for them.
    fn complete(&mut self, engine: &Engine, planned: Option<Planned>, logits: Option<Vec<f32>>) -> Result<Step, EngineError> {
        let Some(planned) = planned else {
            return Ok(self.finish(FinishReason::Length, None));
        };
        if self.in_prefill() {
            let end = planned.end;
            self.prefilled = end;
            if self.snapshot_at == Some(end) {
                if let Some(copy) = self.instance.try_clone() {
                    engine.prefix_cache.insert(self.tokens[..end].to_vec(), copy);
                }
            }
            if self.in_prefill() {
                return Ok(Step::default());
            }
        }
        let logits = logits.ok_or(EngineError::Batch("the model returned no logits for a step that needs them".into()))?;

        let allowed = match &mut self.constraint {
            Some(c) => Some(c.allowed()?),
            None => None,
        };
        let check = allowed.as_ref().map(|a| move |id: u32| a.contains(id));
        let token = self
            .sampler
            .sample(&logits, &self.tokens, check.as_ref().map(|f| f as &dyn Fn(u32) -> bool))
            .ok_or(EngineError::DeadEnd(self.generated.len()))?;
        let lp = logprob(&logits, token);

        if engine.tokenizer.stop_ids.contains(&token) {
            return Ok(self.finish(FinishReason::Stop, None));
        }
        self.tokens.push(token);
        self.generated.push(token);
        if let Some(c) = &mut self.constraint {
            c.consume(token)?;
        }
        let new_text = self.detokenizer.next(&engine.tokenizer, &self.generated);
        let (piece, stopped) = match self.stop.push(&new_text) {
            StopCheck::Release(p) => (p, false),
            StopCheck::Stopped(p) => (p, true),
        };
        let out = TokenOut { id: token, text: piece, logprob: lp };
        if stopped {
            return Ok(self.finish(FinishReason::StopSequence, Some(out)));
        }
        if self.constraint.as_ref().is_some_and(|c| c.is_finished()) {
            return Ok(self.finish(FinishReason::Stop, Some(out)));
        }
        if self.generated.len() >= self.max_new {
            return Ok(self.finish(FinishReason::Length, Some(out)));
        }
        Ok(Step { token: Some(out), finished: None })
    }

    fn finish(&mut self, reason: FinishReason, mut last: Option<TokenOut>) -> Step {
        self.finished = true;
        if reason != FinishReason::StopSequence {
            let rest = self.stop.flush();
            if !rest.is_empty() {
                match &mut last {
                    Some(t) => t.text.push_str(&rest),
                    None => last = Some(TokenOut { id: *self.generated.last().unwrap_or(&0), text: rest, logprob: 0.0 }),
                }
            }
        }
        Step {
            token: last,
            finished: Some(Finished { reason, text: self.stop.released_text().to_string(), completion_tokens: self.generated.len() }),
        }
    }
}
