//! OpenAI-compatible endpoints, so tools written for the OpenAI API (the official
//! clients, LangChain, LlamaIndex...) work against mmc by changing the base URL:
//!
//! | route | upstream |
//! |---|---|
//! | `GET /v1/models` | each service's `GetModelInfo` |
//! | `POST /v1/embeddings` | `embed.EmbedText` (batched) |
//! | `POST /v1/chat/completions` | `textgen.Chat` (streamed as server-sent events when asked) |
//! | `POST /v1/audio/transcriptions` | `speech.Transcribe` (multipart upload streamed on) |
//!
//! The `model` field is informational: each route is served by the model its service has
//! loaded, and responses name that model (as llama.cpp's server and
//! text-embeddings-inference do). Parameters that would change the result and are not
//! implemented (`n > 1`, tools, penalties...) are refused with 400 `unsupported_parameter`
//! rather than silently ignored.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Multipart, State},
    http::header,
    response::{
        sse::{Event as SseEvent, Sse},
        IntoResponse, Response,
    },
    Json,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};

use utoipa::ToSchema;

use super::{
    error::{ApiError, ErrorBody},
    upload::{read_form, Form},
};
use crate::{
    domain::{ChatEvent, ChatMessage, ChatRequest, ChatRole, FinishReason, Sampling, TranscribeOptions, TranscriptFormat as Rendering},
    error::{shown, GatewayError},
    flows::Flows,
    upstream::{calls::TranscribeEvent, Deadline},
};

/// What the HTTP handlers share.
pub struct HttpState {
    pub flows: Arc<Flows>,
    /// Deadline of each HTTP request (gRPC requests take theirs from `grpc-timeout`).
    pub request_timeout: Duration,
    /// Largest audio upload accepted by `/v1/audio/transcriptions`, in bytes.
    pub max_upload_bytes: u64,
    /// `max_tokens` of a chat completion that sets none (0 = the text-generation
    /// service's default).
    pub default_max_tokens: u32,
    /// Largest `max_tokens` a chat completion may ask for.
    pub max_tokens: u32,
    /// `Host` names served (see [`super::guard`]).
    pub allowed_hosts: super::guard::AllowedHosts,
    /// When set, `/v1/` routes need one of these keys (see [`super::guard`]).
    pub api_keys: Option<mmc_runtime::auth::ApiKeys>,
    /// Origins whose pages may call the API (CORS); empty: none but this server's own.
    pub cors_origins: Vec<String>,
}

/// Most inputs in one embeddings request (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Longest embeddings input, in characters. The text model reads its first 256 tokens
/// (about 1000 characters); the bound refuses a huge input before it is tokenized.
pub const MAX_EMBEDDING_INPUT_CHARS: usize = 20_000;
/// Most messages in one chat completion.
pub const MAX_CHAT_MESSAGES: usize = 256;
/// Highest sampling temperature of a chat completion (OpenAI's limit).
pub const MAX_TEMPERATURE: f32 = 2.0;
/// Longest chat, in characters over all messages: past any context window the bundled
/// models have, so the limit refuses only what could never fit, before it is tokenized.
pub const MAX_CHAT_CHARS: usize = 400_000;

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A response id: `prefix` + 24 random hex digits.
fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}

/// Parses a JSON body into `T`, answering OpenAI-shaped 400s for bad JSON or fields.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("the request body is not valid: {e}")))
}

// ---------------------------------------------------------------------------------------
// GET /v1/models

/// A loaded model.
#[derive(Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// `embeddings`, `chat` or `transcription`.
    pub task: &'static str,
    pub profile: String,
}

/// The loaded models.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// The models the cluster serves, one entry per loaded model.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "The loaded models", body = ModelList)))]
pub async fn models(State(state): State<Arc<HttpState>>) -> Json<ModelList> {
    let loaded = state.flows.upstream.loaded_models(Deadline::after(Duration::from_secs(10))).await;
    let data =
        loaded.into_iter().map(|(m, task)| ModelCard { id: m.id, object: "model", created: 0, owned_by: "mmc", task, profile: m.profile }).collect();
    Json(ModelList { object: "list", data })
}

// ---------------------------------------------------------------------------------------
// POST /v1/embeddings

/// An embeddings request (OpenAI's).
#[derive(Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    input: EmbeddingInput,
    #[serde(default)]
    #[allow(dead_code)]
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    // Token-id input is recognised only to be refused with a clear message.
    #[allow(dead_code)]
    Tokens(Vec<u32>),
    #[allow(dead_code)]
    ManyTokens(Vec<Vec<u32>>),
}

/// One embedding: floats, or their little-endian bytes in base64.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValues {
    Floats(Vec<f32>),
    Base64(String),
}

/// One input's embedding.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValues,
}

/// Tokens read.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// The embeddings, in input order.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// `POST /v1/embeddings`: text embeddings.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest,
    responses((status = 200, description = "Embeddings", body = EmbeddingList), (status = "4XX", body = ErrorBody)))]
pub async fn embeddings(State(state): State<Arc<HttpState>>, body: Bytes) -> Result<Json<EmbeddingList>, ApiError> {
    let req: EmbeddingsRequest = parse_json(&body)?;
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(t) => t,
        EmbeddingInput::Tokens(_) | EmbeddingInput::ManyTokens(_) => {
            return Err(ApiError::unsupported("input", "token-id input is not supported: send text"))
        }
    };
    if texts.is_empty() {
        return Err(ApiError::invalid("input", "input is empty"));
    }
    if texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid("input", format!("{} inputs; at most {MAX_EMBEDDING_INPUTS} per request", texts.len())));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid("input", format!("input[{i}] is empty")));
    }
    if let Some(i) = texts.iter().position(|t| t.chars().count() > MAX_EMBEDDING_INPUT_CHARS) {
        return Err(ApiError::invalid("input", format!("input[{i}] is over {MAX_EMBEDDING_INPUT_CHARS} characters")));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::invalid("encoding_format", format!("encoding_format {}: expected float or base64", shown(other)))),
    };
    let deadline = Deadline::after(state.request_timeout);
    let (embeddings, space, _) = state.flows.upstream.embed_texts_detailed("embeddings", &texts, deadline).await?;
    let space = space.ok_or_else(|| GatewayError::Invalid("no embeddings".into()))?;
    if let Some(d) = req.dimensions {
        if d != space.dimensions {
            return Err(ApiError::unsupported(
                "dimensions",
                format!("{} produces {}-dimensional vectors; it cannot shorten them to {d}", space.model_id, space.dimensions),
            ));
        }
    }
    let tokens: u64 = embeddings.iter().map(|e| e.token_count as u64).sum();
    let data = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingValues::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValues::Floats(e.values)
            };
            EmbeddingData { object: "embedding", index, embedding }
        })
        .collect();
    Ok(Json(EmbeddingList { object: "list", data, model: space.model_id, usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens } }))
}

// ---------------------------------------------------------------------------------------
// POST /v1/chat/completions

/// A chat completion request (OpenAI's, with llama.cpp's sampling extensions).
#[derive(Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    messages: Vec<InMessage>,
    #[serde(default)]
    model: String,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    response_format: Option<ResponseFormat>,
    n: Option<u32>,
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<Value>>,
    logprobs: Option<bool>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    /// llama.cpp-style sampling extensions.
    top_k: Option<u32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
}

#[derive(Deserialize, ToSchema)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, ToSchema)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, ToSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, ToSchema)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize, ToSchema)]
struct JsonSchemaFormat {
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
}

/// The request as the text-generation service takes it.
fn chat_request(req: &ChatCompletionRequest, default_max_tokens: u32, max_tokens: u32) -> Result<ChatRequest, ApiError> {
    if req.n.unwrap_or(1) != 1 {
        return Err(ApiError::unsupported("n", "one choice per request (n = 1)"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported("tools", "tool calls are not supported; use response_format with a JSON schema"));
    }
    if req.logprobs == Some(true) {
        return Err(ApiError::unsupported("logprobs", "logprobs are not returned by this endpoint"));
    }
    for (name, v) in [("frequency_penalty", req.frequency_penalty), ("presence_penalty", req.presence_penalty)] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::unsupported(name, format!("{name} is not supported; use repetition_penalty")));
        }
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    if req.messages.len() > MAX_CHAT_MESSAGES {
        return Err(ApiError::invalid("messages", format!("{} messages; at most {MAX_CHAT_MESSAGES}", req.messages.len())));
    }
    for (name, asked) in [("max_tokens", req.max_tokens), ("max_completion_tokens", req.max_completion_tokens)] {
        if let Some(n) = asked.filter(|n| *n > max_tokens) {
            return Err(ApiError::invalid(name, format!("{name} {n} is over this server's limit of {max_tokens}")));
        }
    }
    // OpenAI's range: more is a client's bug (1e9 samples noise), as /openapi.json says.
    if let Some(t) = req.temperature.filter(|t| !(0.0..=MAX_TEMPERATURE).contains(t)) {
        return Err(ApiError::invalid("temperature", format!("temperature {t} is outside 0 to {MAX_TEMPERATURE}")));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => ChatRole::System,
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            other => return Err(ApiError::unsupported(&format!("messages[{i}].role"), format!("role {} is not supported", shown(other)))),
        };
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::unsupported(
                                &format!("messages[{i}].content"),
                                format!("content parts of type {} are not supported (images: use the gateway's DescribeImage)", shown(kind)),
                            ))
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage { role, content });
    }
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if chars > MAX_CHAT_CHARS {
        return Err(ApiError::invalid("messages", format!("the messages hold {chars} characters; at most {MAX_CHAT_CHARS}")));
    }
    let json_schema = match &req.response_format {
        None => String::new(),
        Some(f) => match f.kind.as_str() {
            "text" => String::new(),
            "json_object" => r#"{"type": "object"}"#.to_string(),
            "json_schema" => {
                let schema = f
                    .json_schema
                    .as_ref()
                    .and_then(|j| j.schema.as_ref())
                    .ok_or_else(|| ApiError::invalid("response_format.json_schema.schema", "a json_schema response format needs a schema"))?;
                schema.to_string()
            }
            other => return Err(ApiError::invalid("response_format.type", format!("{}: expected text, json_object or json_schema", shown(other)))),
        },
    };
    let stop = match &req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    Ok(ChatRequest {
        messages,
        sampling: Sampling {
            // OpenAI's defaults: temperature 1, top_p 1.
            temperature: req.temperature.unwrap_or(1.0),
            top_k: req.top_k.unwrap_or(0),
            top_p: req.top_p.unwrap_or(1.0),
            min_p: req.min_p.unwrap_or(0.0),
            repetition_penalty: req.repetition_penalty.unwrap_or(0.0),
            seed: req.seed,
        },
        max_tokens: req.max_completion_tokens.or(req.max_tokens).unwrap_or(default_max_tokens),
        stop,
        json_schema,
    })
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop => "stop",
    }
}

/// The assistant's message.
#[derive(Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// The one choice of a completion.
#[derive(Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Always null: log-probabilities are not returned.
    pub logprobs: Option<()>,
}

/// Tokens read and written.
#[derive(Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// A chat completion (the body when `stream` is false; with `stream`, the same content
/// comes as server-sent `chat.completion.chunk` events, then `[DONE]`).
#[derive(Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
}

/// `POST /v1/chat/completions`: a chat completion, streamed as server-sent events when asked.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest,
    responses((status = 200, description = "Completion (stream: server-sent events)", body = ChatCompletion), (status = "4XX", body = ErrorBody)))]
pub async fn chat_completions(State(state): State<Arc<HttpState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse_json(&body)?;
    let message = chat_request(&req, state.default_max_tokens, state.max_tokens)?;
    let deadline = Deadline::after(state.request_timeout);
    let upstream = state.flows.upstream.chat_stream(&message, deadline).await?;
    let mut upstream = Box::pin(upstream);
    let id = response_id("chatcmpl");
    let created = now_s();
    let model_of = |m: &Option<crate::domain::ModelRef>, hint: &str| match m {
        Some(m) if !m.id.is_empty() => m.id.clone(),
        _ => hint.to_string(),
    };
    let no_summary = || ApiError::internal("generation ended without a summary");

    if !req.stream {
        let mut summary = None;
        while let Some(event) = upstream.next().await {
            if let ChatEvent::Done(s) = event? {
                summary = Some(s);
            }
        }
        let s = summary.ok_or_else(no_summary)?;
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: model_of(&s.model, &req.model),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: s.text },
                finish_reason: finish_reason(s.finish_reason),
                logprobs: None,
            }],
            usage: CompletionUsage {
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.completion_tokens,
                total_tokens: s.prompt_tokens + s.completion_tokens,
            },
        })
        .into_response());
    }

    // Streamed: one chunk per token as it is decoded. A task relays the upstream stream;
    // when the client goes away the channel closes, the task ends and dropping the
    // upstream stream cancels the generation (its slot is freed at once).
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let (tx, rx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    let model_hint = req.model.clone();
    tokio::spawn(async move {
        let chunk = |model: &str, delta: Value, finish: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
            })
        };
        let send = |v: Value| {
            let tx = tx.clone();
            async move { tx.send(Ok(SseEvent::default().data(v.to_string()))).await.is_ok() }
        };
        if !send(chunk(&model_hint, json!({ "role": "assistant", "content": "" }), Value::Null)).await {
            return;
        }
        loop {
            match upstream.next().await {
                Some(Ok(ChatEvent::Token(text))) => {
                    if !send(chunk(&model_hint, json!({ "content": text }), Value::Null)).await {
                        return;
                    }
                }
                Some(Ok(ChatEvent::Done(s))) => {
                    let model = model_of(&s.model, &model_hint);
                    if !send(chunk(&model, json!({}), json!(finish_reason(s.finish_reason)))).await {
                        return;
                    }
                    if include_usage {
                        let usage = json!({
                            "id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                            "usage": { "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                                       "total_tokens": s.prompt_tokens + s.completion_tokens },
                        });
                        if !send(usage).await {
                            return;
                        }
                    }
                    let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    return;
                }
                Some(Err(e)) => {
                    // Headers are sent: the error travels as an event (OpenAI's clients raise it).
                    let _ = send(ApiError::from(e).body()).await;
                    return;
                }
                None => {
                    let _ = send(no_summary().body()).await;
                    return;
                }
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).into_response())
}

// ---------------------------------------------------------------------------------------
// POST /v1/audio/transcriptions

/// Response formats of OpenAI's transcription endpoint.
#[derive(Clone, Copy, PartialEq)]
enum TranscriptFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl TranscriptFormat {
    fn parse(s: &str) -> Result<Self, ApiError> {
        Ok(match s {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            other => return Err(ApiError::invalid("response_format", format!("{}: expected json, text, srt, vtt or verbose_json", shown(other)))),
        })
    }

    /// The rendering the speech service is asked for (json and text use the plain text).
    fn rendered(self) -> Rendering {
        match self {
            Self::Json | Self::Text => Rendering::Text,
            Self::Srt => Rendering::Srt,
            Self::Vtt => Rendering::Vtt,
            Self::VerboseJson => Rendering::VerboseJson,
        }
    }
}

/// `POST /v1/audio/transcriptions`' form (OpenAI's).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TranscriptionForm {
    /// The recording (WAV, FLAC, MP3, OGG, M4A).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// `whisper-1` (the default model) or a loaded model's id.
    model: Option<String>,
    /// ISO 639-1 code; empty to detect.
    language: Option<String>,
    /// Words that prime the decoder (names, jargon).
    prompt: Option<String>,
    /// `json`, `text`, `srt`, `vtt` or `verbose_json`.
    response_format: Option<String>,
    /// `word` and/or `segment` (word timings need `verbose_json`).
    #[schema(rename = "timestamp_granularities[]")]
    timestamp_granularities: Option<Vec<String>>,
}

/// `POST /v1/audio/transcriptions`: speech to text.
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "openai", request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The transcript: JSON (`json`, `verbose_json`), text/plain (`text`, `srt`) or text/vtt (`vtt`)", body = Object),
        (status = "4XX", body = ErrorBody)))]
pub async fn transcriptions(State(state): State<Arc<HttpState>>, form: Multipart) -> Result<Response, ApiError> {
    let mut format = TranscriptFormat::Json;
    let mut config = TranscribeOptions::default();
    let mut granularities: Vec<String> = Vec::new();
    let Form { file: upload, fields } = read_form(form, state.max_upload_bytes, "file").await?;
    for (name, value) in fields {
        match name.as_str() {
            "model"
                // OpenAI's name for its Whisper means "the default model".
                if !value.is_empty() && value != "whisper-1" => {
                    config.model_id = value;
                }
            "language" => config.language = value,
            "prompt" => config.initial_prompt = value,
            "response_format" => format = TranscriptFormat::parse(&value)?,
            "timestamp_granularities[]" | "timestamp_granularities" => granularities.push(value),
            "temperature"
                if value.parse::<f32>() != Ok(0.0) => {
                    return Err(ApiError::unsupported("temperature", "decoding is greedy with temperature fallback; only 0 is accepted"));
                }
            "stream"
                if value == "true" => {
                    return Err(ApiError::unsupported("stream", "streamed transcription is offered over gRPC (speech.Transcribe)"));
                }
            _ => {}
        }
    }
    for g in &granularities {
        match g.as_str() {
            "word" => config.word_timestamps = true,
            "segment" => {}
            other => return Err(ApiError::invalid("timestamp_granularities[]", format!("{}: expected word or segment", shown(other)))),
        }
    }
    if config.word_timestamps && format != TranscriptFormat::VerboseJson {
        return Err(ApiError::invalid("timestamp_granularities[]", "word timestamps need response_format verbose_json"));
    }
    config.formats = vec![format.rendered()];
    config.total_bytes = upload.size;
    let rx = upload.stream()?;
    let deadline = Deadline::after(state.request_timeout);
    let stream = state.flows.upstream.transcribe(&config, rx, deadline).await?;
    let mut stream = Box::pin(stream);
    let mut result = None;
    while let Some(event) = stream.next().await {
        if let TranscribeEvent::Result(r) = event? {
            result = Some(r);
        }
    }
    let result = result.ok_or_else(|| ApiError::internal("transcription ended without a result"))?;
    let rendered = |f: Rendering| result.rendered.iter().find(|(g, _)| *g == f).map(|(_, content)| content.clone());
    let (content_type, body) = match format {
        TranscriptFormat::Json => return Ok(Json(json!({ "text": result.text.trim() })).into_response()),
        TranscriptFormat::Text => ("text/plain; charset=utf-8", format!("{}\n", result.text.trim())),
        TranscriptFormat::Srt => ("text/plain; charset=utf-8", rendered(Rendering::Srt).unwrap_or_default()),
        TranscriptFormat::Vtt => ("text/vtt; charset=utf-8", rendered(Rendering::Vtt).unwrap_or_default()),
        TranscriptFormat::VerboseJson => ("application/json", rendered(Rendering::VerboseJson).unwrap_or_else(|| "{}".into())),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
