//! One method per model-service RPC the flows use, each a named stage (see
//! [`super::stage`]). Requests and answers are the gateway's own types
//! ([`crate::domain`]); the protobuf messages of the model services stay in this file.
//! All unary calls are idempotent (same input, same output), so all are retried on
//! UNAVAILABLE / RESOURCE_EXHAUSTED.

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use mmc_proto::{
    caption::v1::{self as caption_pb, caption_service_client::CaptionServiceClient, CaptionRequest},
    common::v1::{AudioEncoding, AudioFormat, Image, ModelInfo},
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedImageRequest, EmbedTextRequest, EncodeImageRequest, ImageLatents},
    speech::v1::{
        speech_service_client::SpeechServiceClient, transcribe_request, transcribe_response, OutputFormat, Task, TranscribeConfig, TranscribeRequest,
    },
    textgen::v1::{self as textgen_pb, generate_response, text_gen_service_client::TextGenServiceClient, GenerationOptions, OverflowPolicy, Role},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::{bad_answer, failure, request, stage, Deadline, StagePolicy, Upstream};
use crate::{
    domain::{
        AudioInput, Caption, CaptionMode, ChatEvent, ChatMessage, ChatRequest, ChatRole, ChatSummary, Evidence, FinishReason, Label, ModelRef,
        Segment, StageTiming, TextEmbedding, TranscribeOptions, Transcript, TranscriptFormat, Word,
    },
    error::GatewayError,
    flows::prompts::RenderedPrompt,
    store::Space,
};

/// The model services as the flows reach them, with the call policy they share.
pub struct Upstreams {
    pub embed: Upstream,
    pub caption: Upstream,
    pub speech: Upstream,
    pub textgen: Upstream,
    pub policy: StagePolicy,
    /// Encoder labels asked for per image.
    pub top_labels: u32,
}

/// A vector and the space it lives in.
pub struct Embedded {
    pub vector: Vec<f32>,
    pub space: Space,
    pub model: ModelRef,
}

/// What the image encoder made of an image: the latents a caption decoder reads (opaque
/// to the flows) and the labels it is sure of.
pub struct Latents {
    latents: ImageLatents,
    pub labels: Vec<Label>,
    pub encoder: Option<ModelRef>,
}

/// What a transcription yields as it goes.
pub enum TranscribeEvent {
    Segment(Segment),
    /// Progress of the speech service: done, total, unit, fraction, message.
    Progress {
        done_units: u64,
        total_units: u64,
        unit: String,
        fraction_done: f64,
        message: String,
    },
    Result(Transcript),
}

pub(crate) fn model_ref(m: ModelInfo) -> ModelRef {
    ModelRef { id: m.id, family: m.family, profile: m.profile, revision: m.revision, dimensions: m.dimensions }
}

fn image(data: &Bytes, source_name: &str) -> Image {
    // `Image.data` is generated as `Bytes`: the message shares the upload, and cloning it
    // per attempt copies nothing.
    Image { data: data.clone(), mime_type: String::new(), source_name: source_name.to_string() }
}

impl Upstreams {
    fn embedded(
        &self,
        stage: &'static str,
        embeddings: Vec<mmc_proto::embed::v1::Embedding>,
        model: Option<ModelInfo>,
    ) -> Result<Embedded, GatewayError> {
        let model = model.ok_or_else(|| bad_answer(stage, &self.embed, "response names no model"))?;
        let vector = embeddings.into_iter().next().ok_or_else(|| bad_answer(stage, &self.embed, "response holds no embedding"))?.values;
        if vector.len() != model.dimensions as usize {
            return Err(bad_answer(stage, &self.embed, &format!("embedding has {} values, the model says {}", vector.len(), model.dimensions)));
        }
        let space = Space { model_id: model.id.clone(), dimensions: model.dimensions };
        Ok(Embedded { vector, space, model: model_ref(model) })
    }

    /// `embed.EncodeImage`: the latents a caption decoder reads, and with `embed` the
    /// image's vector in the shared space too (one call, one decode and, with a classifier
    /// encoder, one forward pass: what indexing needs).
    pub async fn encode_image(
        &self,
        data: &Bytes,
        source_name: &str,
        embed: bool,
        deadline: Deadline,
    ) -> Result<(Latents, Option<Embedded>, StageTiming), GatewayError> {
        let message = EncodeImageRequest { image: Some(image(data, source_name)), top_k: self.top_labels, include_embedding: embed };
        let (resp, timing) = stage("encode_image", &self.embed, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { EmbedServiceClient::new(ch).encode_image(request(message, t)).await }
        })
        .await?;
        let latents = resp.latents.ok_or_else(|| bad_answer("encode_image", &self.embed, "response holds no latents"))?;
        let labels = latents.labels.iter().map(|l| Label { name: l.name.clone(), probability: l.probability, class_index: l.class_index }).collect();
        let encoder = latents.encoder.clone().map(model_ref);
        let embedded = match (embed, resp.embedding) {
            (false, _) => None,
            (true, Some(e)) => Some(self.embedded("encode_image", vec![e], resp.embedding_model)?),
            (true, None) => return Err(bad_answer("encode_image", &self.embed, "response holds no embedding")),
        };
        Ok((Latents { latents, labels, encoder }, embedded, timing))
    }

    /// `embed.EmbedImage`: the image as a vector of the shared space.
    pub async fn embed_image(&self, data: &Bytes, source_name: &str, deadline: Deadline) -> Result<(Embedded, StageTiming), GatewayError> {
        let message = EmbedImageRequest { images: vec![image(data, source_name)] };
        let (resp, timing) = stage("embed_image", &self.embed, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { EmbedServiceClient::new(ch).embed_image(request(message, t)).await }
        })
        .await?;
        Ok((self.embedded("embed_image", resp.embeddings, resp.model)?, timing))
    }

    /// `embed.EmbedText` of one text, under stage name `stage_name`.
    pub async fn embed_text(&self, stage_name: &'static str, text: &str, deadline: Deadline) -> Result<(Embedded, StageTiming), GatewayError> {
        let message = EmbedTextRequest { texts: vec![text.to_string()], reject_overlong: false };
        let (resp, timing) = stage(stage_name, &self.embed, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { EmbedServiceClient::new(ch).embed_text(request(message, t)).await }
        })
        .await?;
        Ok((self.embedded(stage_name, resp.embeddings, resp.model)?, timing))
    }

    /// `caption.Caption` of the latents in `mode`.
    pub async fn caption(&self, latents: &Latents, mode: CaptionMode, deadline: Deadline) -> Result<(Caption, StageTiming), GatewayError> {
        let mode_pb = match mode {
            CaptionMode::AltText => caption_pb::CaptionMode::AltText,
            CaptionMode::Detailed => caption_pb::CaptionMode::Detailed,
        };
        let message = CaptionRequest { latents: Some(latents.latents.clone()), mode: mode_pb as i32, max_chars: 0 };
        let (c, timing) = stage("caption", &self.caption, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { CaptionServiceClient::new(ch).caption(request(message, t)).await }
        })
        .await?;
        let caption = Caption {
            text: c.text,
            mode,
            confidence: c.confidence,
            evidence: c.evidence.into_iter().map(|e| Evidence { label: e.label, probability: e.probability }).collect(),
            attempts: c.attempts,
            from_template: c.from_template,
            uncertain: c.uncertain,
            source: crate::domain::TextSource::Machine,
            model: c.model.map(model_ref),
        };
        Ok((caption, timing))
    }
}

/// Most texts sent in one EmbedText call (the embed service's default per-request limit is
/// higher; smaller batches keep each call short).
const EMBED_BATCH: usize = 32;

impl Upstreams {
    /// `embed.EmbedText` of many texts (in batches), under stage name `stage_name`.
    pub async fn embed_texts(
        &self,
        stage_name: &'static str,
        texts: &[String],
        deadline: Deadline,
    ) -> Result<(Vec<Vec<f32>>, Option<Space>, StageTiming), GatewayError> {
        let (embeddings, space, timing) = self.embed_texts_detailed(stage_name, texts, deadline).await?;
        Ok((embeddings.into_iter().map(|e| e.values).collect(), space, timing))
    }

    /// As [`Upstreams::embed_texts`], keeping each text's token count.
    pub async fn embed_texts_detailed(
        &self,
        stage_name: &'static str,
        texts: &[String],
        deadline: Deadline,
    ) -> Result<(Vec<TextEmbedding>, Option<Space>, StageTiming), GatewayError> {
        let started = std::time::Instant::now();
        let mut vectors = Vec::with_capacity(texts.len());
        let mut space = None;
        for batch in texts.chunks(EMBED_BATCH) {
            let message = EmbedTextRequest { texts: batch.to_vec(), reject_overlong: false };
            let (resp, _) = stage(stage_name, &self.embed, deadline, &self.policy, true, |ch, t| {
                let message = message.clone();
                async move { EmbedServiceClient::new(ch).embed_text(request(message, t)).await }
            })
            .await?;
            let model = resp.model.ok_or_else(|| bad_answer(stage_name, &self.embed, "response names no model"))?;
            space = Some(Space { model_id: model.id, dimensions: model.dimensions });
            vectors.extend(resp.embeddings.into_iter().map(|e| TextEmbedding { values: e.values, token_count: e.token_count }));
        }
        let timing = super::timing(stage_name, started.elapsed());
        Ok((vectors, space, timing))
    }

    /// `textgen.Chat` with greedy decoding, optionally constrained by `json_schema`;
    /// returns the whole generated text and the model. Greedy output is a function of the
    /// input, so the stage is retried like the others.
    pub async fn chat(
        &self,
        stage_name: &'static str,
        prompt: &RenderedPrompt,
        json_schema: Option<&str>,
        max_tokens: u32,
        deadline: Deadline,
    ) -> Result<(String, Option<ModelRef>, StageTiming), GatewayError> {
        let message = chat_message(&ChatRequest {
            messages: vec![
                ChatMessage { role: ChatRole::System, content: prompt.system.clone() },
                ChatMessage { role: ChatRole::User, content: prompt.user.clone() },
            ],
            max_tokens,
            json_schema: json_schema.unwrap_or_default().to_string(),
            ..Default::default()
        });
        let (summary, timing) = stage(stage_name, &self.textgen, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move {
                let response = TextGenServiceClient::new(ch).chat(request(message, t)).await?;
                let (metadata, mut stream, extensions) = response.into_parts();
                while let Some(event) = stream.message().await? {
                    if let Some(generate_response::Event::Summary(summary)) = event.event {
                        return Ok(tonic::Response::from_parts(metadata, summary, extensions));
                    }
                }
                Err(tonic::Status::internal("generation ended without a summary"))
            }
        })
        .await?;
        Ok((summary.text, summary.model.map(model_ref), timing))
    }

    /// `textgen.Chat` as a stream of tokens, then the summary (the caller relays tokens as
    /// they come). Opening the stream is retried like the other stages (nothing has been
    /// generated yet); the generation may run until the request's deadline, not the
    /// per-stage timeout, since its length is the client's choice (`max_tokens`). Dropping
    /// the stream cancels the generation.
    pub async fn chat_stream(
        &self,
        chat: &ChatRequest,
        deadline: Deadline,
    ) -> Result<impl Stream<Item = Result<ChatEvent, GatewayError>> + Send + 'static, GatewayError> {
        let message = chat_message(chat);
        let policy = StagePolicy { stage_timeout: deadline.remaining(), ..self.policy.clone() };
        let (stream, _) = stage("chat", &self.textgen, deadline, &policy, true, |ch, t| {
            let message = message.clone();
            async move { TextGenServiceClient::new(ch).chat(request(message, t)).await }
        })
        .await?;
        let textgen = self.textgen.clone();
        let events = futures::stream::unfold((stream, textgen, false), |(mut stream, textgen, done)| async move {
            if done {
                return None;
            }
            loop {
                match stream.message().await {
                    Ok(Some(event)) => match event.event {
                        Some(generate_response::Event::Token(t)) if !t.text.is_empty() => {
                            return Some((Ok(ChatEvent::Token(t.text)), (stream, textgen, false)))
                        }
                        Some(generate_response::Event::Summary(s)) => {
                            let finish_reason = match textgen_pb::FinishReason::try_from(s.finish_reason) {
                                Ok(textgen_pb::FinishReason::Length) => FinishReason::Length,
                                _ => FinishReason::Stop,
                            };
                            let summary = ChatSummary {
                                text: s.text,
                                finish_reason,
                                prompt_tokens: s.prompt_tokens,
                                completion_tokens: s.completion_tokens,
                                model: s.model.map(model_ref),
                            };
                            return Some((Ok(ChatEvent::Done(summary)), (stream, textgen, true)));
                        }
                        _ => {}
                    },
                    Ok(None) => {
                        let e = bad_answer("chat", &textgen, "generation ended without a summary");
                        return Some((Err(e), (stream, textgen, true)));
                    }
                    Err(status) => {
                        let e = failure("chat", &textgen, status);
                        return Some((Err(e), (stream, textgen, true)));
                    }
                }
            }
        });
        Ok(events)
    }
}

/// The text-generation service's request for `chat`.
fn chat_message(chat: &ChatRequest) -> textgen_pb::ChatRequest {
    let messages = chat
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                ChatRole::System => Role::System,
                ChatRole::User => Role::User,
                ChatRole::Assistant => Role::Assistant,
            };
            textgen_pb::ChatMessage { role: role as i32, content: m.content.clone() }
        })
        .collect();
    let s = &chat.sampling;
    textgen_pb::ChatRequest {
        messages,
        options: Some(GenerationOptions {
            sampling: Some(textgen_pb::SamplingParams {
                temperature: s.temperature,
                top_k: s.top_k,
                top_p: s.top_p,
                min_p: s.min_p,
                repetition_penalty: s.repetition_penalty,
                seed: s.seed,
            }),
            max_tokens: chat.max_tokens,
            stop: chat.stop.clone(),
            json_schema: chat.json_schema.clone(),
            overflow: OverflowPolicy::Reject as i32,
        }),
    }
}

fn output_format(f: TranscriptFormat) -> OutputFormat {
    match f {
        TranscriptFormat::Text => OutputFormat::Text,
        TranscriptFormat::Srt => OutputFormat::Srt,
        TranscriptFormat::Vtt => OutputFormat::Vtt,
        TranscriptFormat::VerboseJson => OutputFormat::VerboseJson,
    }
}

fn transcribe_config(o: &TranscribeOptions) -> TranscribeConfig {
    let format = match o.audio {
        AudioInput::Detect => None,
        AudioInput::PcmS16le { sample_rate_hz, channels } => Some(AudioFormat { encoding: AudioEncoding::PcmS16le as i32, sample_rate_hz, channels }),
        AudioInput::PcmF32le { sample_rate_hz, channels } => Some(AudioFormat { encoding: AudioEncoding::PcmF32le as i32, sample_rate_hz, channels }),
    };
    TranscribeConfig {
        format,
        language: o.language.clone(),
        task: if o.translate { Task::Translate } else { Task::Transcribe } as i32,
        word_timestamps: o.word_timestamps,
        formats: o.formats.iter().map(|f| output_format(*f) as i32).collect(),
        initial_prompt: o.initial_prompt.clone(),
        total_bytes: o.total_bytes,
        model_id: o.model_id.clone(),
    }
}

pub(crate) fn segment(s: mmc_proto::speech::v1::Segment) -> Segment {
    Segment {
        id: s.id,
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        text: s.text,
        avg_logprob: s.avg_logprob,
        no_speech_prob: s.no_speech_prob,
        compression_ratio: s.compression_ratio,
        words: s.words.into_iter().map(|w| Word { text: w.text, start_ms: w.start_ms, end_ms: w.end_ms, probability: w.probability }).collect(),
    }
}

impl Upstreams {
    /// `speech.Transcribe`: sends the options, then the audio chunks as they arrive on
    /// `audio`; yields segments and progress as they come, and the result last. Not
    /// retried: the upload is consumed as it streams.
    pub async fn transcribe(
        &self,
        options: &TranscribeOptions,
        audio: mpsc::Receiver<Vec<u8>>,
        deadline: Deadline,
    ) -> Result<impl Stream<Item = Result<TranscribeEvent, GatewayError>> + Send + 'static, GatewayError> {
        let config = transcribe_config(options);
        let requests = tokio_stream::once(TranscribeRequest { payload: Some(transcribe_request::Payload::Config(config)) })
            .chain(ReceiverStream::new(audio).map(|chunk| TranscribeRequest { payload: Some(transcribe_request::Payload::AudioChunk(chunk)) }));
        let span = tracing::info_span!("gateway.stage", otel.name = "transcribe", otel.kind = "client", stage = "transcribe", service = "speech");
        let stream = SpeechServiceClient::new(self.speech.channel())
            .transcribe(request(requests, deadline.remaining()))
            .instrument(span)
            .await
            .map_err(|s| failure("transcribe", &self.speech, s))?
            .into_inner();
        let speech = self.speech.clone();
        Ok(futures::stream::unfold((stream, speech, false), |(mut stream, speech, done)| async move {
            if done {
                return None;
            }
            loop {
                let event = match stream.message().await {
                    Ok(Some(message)) => match message.event {
                        Some(transcribe_response::Event::Segment(s)) => TranscribeEvent::Segment(segment(s)),
                        Some(transcribe_response::Event::Progress(p)) => TranscribeEvent::Progress {
                            done_units: p.done_units,
                            total_units: p.total_units,
                            unit: p.unit,
                            fraction_done: p.fraction_done,
                            message: p.message,
                        },
                        Some(transcribe_response::Event::Result(r)) => {
                            let rendered = r
                                .rendered
                                .into_iter()
                                .filter_map(|x| {
                                    let format = match OutputFormat::try_from(x.format).ok()? {
                                        OutputFormat::Text => TranscriptFormat::Text,
                                        OutputFormat::Srt => TranscriptFormat::Srt,
                                        OutputFormat::Vtt => TranscriptFormat::Vtt,
                                        OutputFormat::VerboseJson => TranscriptFormat::VerboseJson,
                                        _ => return None,
                                    };
                                    Some((format, x.content))
                                })
                                .collect();
                            let transcript = Transcript {
                                text: r.text,
                                language: r.language,
                                audio_duration_ms: r.audio_duration_ms,
                                rendered,
                                model: r.model.map(model_ref),
                            };
                            return Some((Ok(TranscribeEvent::Result(transcript)), (stream, speech, true)));
                        }
                        None => continue,
                    },
                    Ok(None) => {
                        let e = bad_answer("transcribe", &speech, "transcription ended without a result");
                        return Some((Err(e), (stream, speech, true)));
                    }
                    Err(status) => return Some((Err(failure("transcribe", &speech, status)), (stream, speech, true))),
                };
                return Some((Ok(event), (stream, speech, false)));
            }
        }))
    }

    /// The models the upstream services have loaded (text embedding, text generation,
    /// speech), each from its `GetModelInfo`, with the task it serves; a service that does
    /// not answer is left out.
    pub async fn loaded_models(&self, deadline: Deadline) -> Vec<(ModelRef, &'static str)> {
        let embed = stage("model_info", &self.embed, deadline, &self.policy, true, |ch, t| async move {
            EmbedServiceClient::new(ch).get_model_info(request(mmc_proto::embed::v1::GetModelInfoRequest {}, t)).await
        });
        let textgen = stage("model_info", &self.textgen, deadline, &self.policy, true, |ch, t| async move {
            TextGenServiceClient::new(ch).get_model_info(request(textgen_pb::GetModelInfoRequest {}, t)).await
        });
        let speech = stage("model_info", &self.speech, deadline, &self.policy, true, |ch, t| async move {
            SpeechServiceClient::new(ch).get_model_info(request(mmc_proto::speech::v1::GetModelInfoRequest {}, t)).await
        });
        let (embed, textgen, speech) = tokio::join!(embed, textgen, speech);
        let mut out = Vec::new();
        if let Ok((r, _)) = embed {
            out.extend(r.text_model.map(|m| (model_ref(m), "embeddings")));
        }
        if let Ok((r, _)) = textgen {
            out.extend(r.model.map(|m| (model_ref(m), "chat")));
        }
        if let Ok((r, _)) = speech {
            out.extend(r.models.into_iter().map(|m| (model_ref(m), "transcription")));
        }
        out
    }
}
