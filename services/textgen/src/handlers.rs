//! Protocol edge of the text-generation service: request validation, protobuf <-> engine
//! types, and the one place where core errors become gRPC statuses. Handlers never see
//! tensors or token ids beyond what the protocol reports.

use std::{pin::Pin, sync::Arc};

use mmc_proto::{
    common::v1::ModelInfo,
    textgen::v1::{
        count_tokens_request::Input, generate_response::Event as PbEvent, text_gen_service_server::TextGenService, ChatRequest, CountTokensRequest,
        CountTokensResponse, FinishReason as PbFinish, GenerateRequest, GenerateResponse, GenerationOptions, GenerationSummary, GetModelInfoRequest,
        GetModelInfoResponse, OverflowPolicy as PbOverflow, Role, TokenChunk,
    },
};
use tokio_stream::{wrappers::UnboundedReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::{
    core::{CoreError, Event, LoadedModel, TextGenCore},
    engine::{
        chat::{ChatError, Message},
        constraint::ConstraintError,
        sampler::SamplingConfig,
        EngineError, FinishReason, GenerationParams, OverflowPolicy, Prompt,
    },
};

/// Limits on request fields, checked before anything is queued.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Most stop sequences per request.
    pub max_stop_sequences: usize,
    /// Longest stop sequence, in bytes.
    pub max_stop_bytes: usize,
    /// Largest JSON Schema, in bytes.
    pub max_schema_bytes: usize,
    /// Most chat messages per request.
    pub max_messages: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_stop_sequences: 16, max_stop_bytes: 256, max_schema_bytes: 64 * 1024, max_messages: 1024 }
    }
}

/// gRPC handlers over a [`TextGenCore`].
pub struct TextGenHandlers {
    core: Arc<TextGenCore>,
    limits: RequestLimits,
}

impl TextGenHandlers {
    pub fn new(core: Arc<TextGenCore>, limits: RequestLimits) -> Self {
        Self { core, limits }
    }

    fn params(&self, options: Option<GenerationOptions>) -> Result<GenerationParams, Status> {
        let o = options.unwrap_or_default();
        let s = o.sampling.unwrap_or_default();
        let bad = |m: String| Err(Status::invalid_argument(m));
        if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            return bad(format!("sampling.temperature must be >= 0 (0 = greedy), got {}", s.temperature));
        }
        if !(0.0..=1.0).contains(&s.top_p) {
            return bad(format!("sampling.top_p must be in [0, 1], got {}", s.top_p));
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return bad(format!("sampling.min_p must be in [0, 1], got {}", s.min_p));
        }
        if !(s.repetition_penalty >= 0.0 && s.repetition_penalty.is_finite()) {
            return bad(format!("sampling.repetition_penalty must be >= 0, got {}", s.repetition_penalty));
        }
        if o.stop.len() > self.limits.max_stop_sequences {
            return bad(format!("{} stop sequences; the limit is {}", o.stop.len(), self.limits.max_stop_sequences));
        }
        if let Some(long) = o.stop.iter().find(|s| s.len() > self.limits.max_stop_bytes) {
            return bad(format!("a stop sequence is {} bytes; the limit is {}", long.len(), self.limits.max_stop_bytes));
        }
        if o.json_schema.len() > self.limits.max_schema_bytes {
            return bad(format!("json_schema is {} bytes; the limit is {}", o.json_schema.len(), self.limits.max_schema_bytes));
        }
        let overflow = match PbOverflow::try_from(o.overflow) {
            Ok(PbOverflow::Reject) => OverflowPolicy::Reject,
            Ok(PbOverflow::TruncateStart) => OverflowPolicy::TruncateStart,
            Err(_) => return bad(format!("unknown overflow policy {}", o.overflow)),
        };
        Ok(GenerationParams {
            sampling: SamplingConfig {
                temperature: s.temperature,
                top_k: s.top_k as usize,
                top_p: s.top_p,
                min_p: s.min_p,
                repetition_penalty: s.repetition_penalty,
                seed: s.seed,
            },
            max_tokens: if o.max_tokens == 0 { self.core.default_max_tokens() } else { o.max_tokens as usize },
            stop: o.stop,
            json_schema: (!o.json_schema.trim().is_empty()).then_some(o.json_schema),
            overflow,
        })
    }

    fn messages(&self, chat: Vec<mmc_proto::textgen::v1::ChatMessage>) -> Result<Vec<Message>, Status> {
        if chat.is_empty() {
            return Err(Status::invalid_argument("messages is empty: send at least one"));
        }
        if chat.len() > self.limits.max_messages {
            return Err(Status::invalid_argument(format!("{} messages; the limit is {}", chat.len(), self.limits.max_messages)));
        }
        chat.into_iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match Role::try_from(m.role) {
                    Ok(Role::System) => "system",
                    Ok(Role::User) => "user",
                    Ok(Role::Assistant) => "assistant",
                    _ => return Err(Status::invalid_argument(format!("messages[{i}].role must be SYSTEM, USER or ASSISTANT"))),
                };
                Ok(Message { role: role.into(), content: m.content })
            })
            .collect()
    }

    fn stream(&self, prompt: Prompt, params: GenerationParams) -> Result<Response<EventStream>, Status> {
        let model = model_info(&self.core.model().map_err(to_status)?);
        let events = self.core.generate(prompt, params).map_err(to_status)?;
        let stream = UnboundedReceiverStream::new(events).map(move |ev| match ev {
            Event::Token(t) => Ok(GenerateResponse { event: Some(PbEvent::Token(TokenChunk { text: t.text, token_id: t.id, logprob: t.logprob })) }),
            Event::Done(s) => Ok(GenerateResponse {
                event: Some(PbEvent::Summary(GenerationSummary {
                    finish_reason: match s.reason {
                        FinishReason::Stop => PbFinish::Stop,
                        FinishReason::Length => PbFinish::Length,
                        FinishReason::StopSequence => PbFinish::StopSequence,
                    } as i32,
                    prompt_tokens: s.prompt_tokens as u32,
                    completion_tokens: s.completion_tokens as u32,
                    time_to_first_token_ms: s.time_to_first_token_ms,
                    tokens_per_second: s.tokens_per_second,
                    text: s.text,
                    truncated_prompt_tokens: s.truncated_prompt_tokens as u32,
                    cached_prompt_tokens: s.cached_prompt_tokens as u32,
                    model: Some(model.clone()),
                })),
            }),
            Event::Failed(e) => Err(to_status(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

fn model_info(m: &LoadedModel) -> ModelInfo {
    ModelInfo { id: m.id.clone(), family: m.family.clone(), profile: m.profile.clone(), revision: m.revision.clone(), dimensions: 0 }
}

/// The one mapping from core errors to gRPC statuses.
fn to_status(e: CoreError) -> Status {
    match &e {
        CoreError::Loading | CoreError::Stopped => Status::unavailable(format!("{e}; retry shortly")),
        CoreError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
        CoreError::Device(_) => Status::failed_precondition(e.to_string()),
        CoreError::Engine(inner) => match inner {
            EngineError::PromptTooLong { .. } => {
                // INVALID_ARGUMENT (the request is at fault) with the reason in metadata, so
                // callers (the gateway's OpenAI edge: `context_length_exceeded`) need not
                // parse the message.
                let mut status = Status::invalid_argument(e.to_string());
                status.metadata_mut().insert("mmc-error-reason", tonic::metadata::MetadataValue::from_static("context_length_exceeded"));
                status
            }
            EngineError::EmptyPrompt
            | EngineError::Constraint(ConstraintError::NotJson(_) | ConstraintError::Schema(_) | ConstraintError::TooComplex(_))
            | EngineError::Chat(ChatError::Render(_)) => Status::invalid_argument(e.to_string()),
            EngineError::Chat(ChatError::NoTemplate) | EngineError::NoConstraints(_) => Status::failed_precondition(e.to_string()),
            _ => {
                tracing::error!(error = %e, "engine failure");
                Status::internal(format!("generation failed: {e}"))
            }
        },
    }
}

#[tonic::async_trait]
impl TextGenService for TextGenHandlers {
    async fn generate(&self, request: Request<GenerateRequest>) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        if r.prompt.is_empty() {
            return Err(Status::invalid_argument("prompt is empty"));
        }
        let params = self.params(r.options)?;
        self.stream(Prompt::Raw(r.prompt), params)
    }

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let messages = self.messages(r.messages)?;
        let params = self.params(r.options)?;
        self.stream(Prompt::Chat(messages), params)
    }

    async fn count_tokens(&self, request: Request<CountTokensRequest>) -> Result<Response<CountTokensResponse>, Status> {
        let prompt = match request.into_inner().input {
            Some(Input::Prompt(p)) => Prompt::Raw(p),
            Some(Input::Chat(c)) => Prompt::Chat(self.messages(c.messages)?),
            None => return Err(Status::invalid_argument("set prompt or chat")),
        };
        let count = self.core.count_tokens(&prompt).map_err(to_status)?;
        let model = self.core.model().map_err(to_status)?;
        Ok(Response::new(CountTokensResponse { token_count: count as u32, context_length: model.context_length as u32 }))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<GetModelInfoResponse>, Status> {
        let m = self.core.model().map_err(to_status)?;
        Ok(Response::new(GetModelInfoResponse {
            model: Some(model_info(&m)),
            context_length: m.context_length as u32,
            supports_json_schema: m.supports_json_schema,
        }))
    }
}
