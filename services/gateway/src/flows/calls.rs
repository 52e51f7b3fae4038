//! One function per upstream RPC the flows use, each a named stage (see
//! [`crate::upstream::stage`]). All of these are idempotent (same input, same output), so
//! all are retried on UNAVAILABLE / RESOURCE_EXHAUSTED.

use mmc_proto::{
    caption::v1::{caption_service_client::CaptionServiceClient, CaptionMode, CaptionRequest, CaptionResponse},
    common::v1::{Image, ModelInfo, StageTiming},
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedImageRequest, EmbedTextRequest, EncodeImageRequest, ImageLatents},
    speech::v1::{speech_service_client::SpeechServiceClient, transcribe_request, TranscribeConfig, TranscribeRequest, TranscribeResponse},
    textgen::v1::{
        generate_response, text_gen_service_client::TextGenServiceClient, ChatMessage, ChatRequest, GenerateResponse, GenerationOptions,
        OverflowPolicy, Role, SamplingParams,
    },
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tracing::Instrument;

use super::{prompts::RenderedPrompt, Flows};
use crate::{
    error::GatewayError,
    store::Space,
    upstream::{failure, request, stage, Deadline},
};

/// A vector and the space it lives in.
pub struct Embedded {
    pub vector: Vec<f32>,
    pub space: Space,
    pub model: ModelInfo,
}

fn embedded(
    stage: &'static str,
    service: &'static str,
    endpoint: &str,
    embeddings: Vec<mmc_proto::embed::v1::Embedding>,
    model: Option<ModelInfo>,
) -> Result<Embedded, GatewayError> {
    let bad = |message: &str| GatewayError::Stage {
        stage,
        service,
        endpoint: endpoint.to_string(),
        code: tonic::Code::Internal,
        message: message.to_string(),
    };
    let model = model.ok_or_else(|| bad("response names no model"))?;
    let vector = embeddings.into_iter().next().ok_or_else(|| bad("response holds no embedding"))?.values;
    if vector.len() != model.dimensions as usize {
        return Err(bad(&format!("embedding has {} values, the model says {}", vector.len(), model.dimensions)));
    }
    let space = Space { model_id: model.id.clone(), dimensions: model.dimensions };
    Ok(Embedded { vector, space, model })
}

impl Flows {
    /// `embed.EncodeImage`: the latents a caption decoder reads.
    pub async fn encode_image(&self, image: &Image, deadline: Deadline) -> Result<(ImageLatents, StageTiming), GatewayError> {
        let message = EncodeImageRequest { image: Some(image.clone()), top_k: self.top_labels };
        let (resp, timing) = stage("encode_image", &self.embed, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { EmbedServiceClient::new(ch).encode_image(request(message, t)).await }
        })
        .await?;
        let latents = resp.latents.ok_or_else(|| GatewayError::Stage {
            stage: "encode_image",
            service: self.embed.service,
            endpoint: self.embed.endpoints.clone(),
            code: tonic::Code::Internal,
            message: "response holds no latents".into(),
        })?;
        Ok((latents, timing))
    }

    /// `embed.EmbedImage`: the image as a vector of the shared space.
    pub async fn embed_image(&self, image: &Image, deadline: Deadline) -> Result<(Embedded, StageTiming), GatewayError> {
        let message = EmbedImageRequest { images: vec![image.clone()] };
        let (resp, timing) = stage("embed_image", &self.embed, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { EmbedServiceClient::new(ch).embed_image(request(message, t)).await }
        })
        .await?;
        Ok((embedded("embed_image", self.embed.service, &self.embed.endpoints, resp.embeddings, resp.model)?, timing))
    }

    /// `embed.EmbedText` of one text, under stage name `stage_name`.
    pub async fn embed_text(&self, stage_name: &'static str, text: &str, deadline: Deadline) -> Result<(Embedded, StageTiming), GatewayError> {
        let message = EmbedTextRequest { texts: vec![text.to_string()], reject_overlong: false };
        let (resp, timing) = stage(stage_name, &self.embed, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { EmbedServiceClient::new(ch).embed_text(request(message, t)).await }
        })
        .await?;
        Ok((embedded(stage_name, self.embed.service, &self.embed.endpoints, resp.embeddings, resp.model)?, timing))
    }

    /// `caption.Caption` of the latents in `mode`.
    pub async fn caption(
        &self,
        latents: &ImageLatents,
        mode: CaptionMode,
        deadline: Deadline,
    ) -> Result<(CaptionResponse, StageTiming), GatewayError> {
        let message = CaptionRequest { latents: Some(latents.clone()), mode: mode as i32, max_chars: 0 };
        stage("caption", &self.caption, deadline, &self.policy, true, |ch, t| {
            let message = message.clone();
            async move { CaptionServiceClient::new(ch).caption(request(message, t)).await }
        })
        .await
    }
}

/// Most texts sent in one EmbedText call (the embed service's default per-request limit is
/// higher; smaller batches keep each call short).
const EMBED_BATCH: usize = 32;

impl Flows {
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

    /// As [`Flows::embed_texts`], keeping each text's token count and truncation flag.
    pub async fn embed_texts_detailed(
        &self,
        stage_name: &'static str,
        texts: &[String],
        deadline: Deadline,
    ) -> Result<(Vec<mmc_proto::embed::v1::Embedding>, Option<Space>, StageTiming), GatewayError> {
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
            let model = resp.model.ok_or_else(|| GatewayError::Stage {
                stage: stage_name,
                service: self.embed.service,
                endpoint: self.embed.endpoints.clone(),
                code: tonic::Code::Internal,
                message: "response names no model".into(),
            })?;
            space = Some(Space { model_id: model.id, dimensions: model.dimensions });
            vectors.extend(resp.embeddings);
        }
        let timing = crate::upstream::timing(stage_name, started.elapsed());
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
    ) -> Result<(String, Option<ModelInfo>, StageTiming), GatewayError> {
        let message = ChatRequest {
            messages: vec![
                ChatMessage { role: Role::System as i32, content: prompt.system.clone() },
                ChatMessage { role: Role::User as i32, content: prompt.user.clone() },
            ],
            options: Some(GenerationOptions {
                sampling: Some(SamplingParams { temperature: 0.0, ..Default::default() }),
                max_tokens,
                stop: vec![],
                json_schema: json_schema.unwrap_or_default().to_string(),
                overflow: OverflowPolicy::Reject as i32,
            }),
        };
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
        Ok((summary.text, summary.model, timing))
    }
}

impl Flows {
    /// `speech.Transcribe`: sends `config`, then the audio chunks as they arrive on
    /// `audio`; returns the service's event stream (segments, progress, result). Not
    /// retried: the upload is consumed as it streams.
    pub async fn transcribe(
        &self,
        config: TranscribeConfig,
        audio: mpsc::Receiver<Vec<u8>>,
        deadline: Deadline,
    ) -> Result<tonic::Streaming<TranscribeResponse>, GatewayError> {
        let requests = tokio_stream::once(TranscribeRequest { payload: Some(transcribe_request::Payload::Config(config)) })
            .chain(ReceiverStream::new(audio).map(|chunk| TranscribeRequest { payload: Some(transcribe_request::Payload::AudioChunk(chunk)) }));
        let span = tracing::info_span!("gateway.stage", otel.name = "transcribe", otel.kind = "client", stage = "transcribe", service = "speech");
        Ok(SpeechServiceClient::new(self.speech.channel())
            .transcribe(request(requests, deadline.remaining()))
            .instrument(span)
            .await
            .map_err(|s| failure("transcribe", &self.speech, s))?
            .into_inner())
    }

    /// `textgen.Chat` as a token stream (the caller relays tokens as they come). Opening
    /// the stream is retried like the other stages (nothing has been generated yet); the
    /// generation may run until the request's deadline, not the per-stage timeout, since
    /// its length is the client's choice (`max_tokens`).
    pub async fn chat_stream(&self, message: ChatRequest, deadline: Deadline) -> Result<tonic::Streaming<GenerateResponse>, GatewayError> {
        let policy = crate::upstream::StagePolicy { stage_timeout: deadline.remaining(), ..self.policy.clone() };
        let (stream, _) = stage("chat", &self.textgen, deadline, &policy, true, |ch, t| {
            let message = message.clone();
            async move { TextGenServiceClient::new(ch).chat(request(message, t)).await }
        })
        .await?;
        Ok(stream)
    }

    /// The models the upstream services have loaded (text embedding, text generation,
    /// speech), each from its `GetModelInfo`; a service that does not answer is left out.
    pub async fn loaded_models(&self, deadline: Deadline) -> Vec<(ModelInfo, &'static str)> {
        let embed = stage("model_info", &self.embed, deadline, &self.policy, true, |ch, t| async move {
            EmbedServiceClient::new(ch).get_model_info(request(mmc_proto::embed::v1::GetModelInfoRequest {}, t)).await
        });
        let textgen = stage("model_info", &self.textgen, deadline, &self.policy, true, |ch, t| async move {
            TextGenServiceClient::new(ch).get_model_info(request(mmc_proto::textgen::v1::GetModelInfoRequest {}, t)).await
        });
        let speech = stage("model_info", &self.speech, deadline, &self.policy, true, |ch, t| async move {
            SpeechServiceClient::new(ch).get_model_info(request(mmc_proto::speech::v1::GetModelInfoRequest {}, t)).await
        });
        let (embed, textgen, speech) = tokio::join!(embed, textgen, speech);
        let mut out = Vec::new();
        if let Ok((r, _)) = embed {
            out.extend(r.text_model.map(|m| (m, "embeddings")));
        }
        if let Ok((r, _)) = textgen {
            out.extend(r.model.map(|m| (m, "chat")));
        }
        if let Ok((r, _)) = speech {
            out.extend(r.models.into_iter().map(|m| (m, "transcription")));
        }
        out
    }
}
