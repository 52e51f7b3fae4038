//! Protocol edge of the latent service: request validation and the one place where
//! core errors become gRPC statuses. Handlers never see tensors.

use std::{sync::Arc, time::Instant};

use mmc_proto::{
    common::v1::{ModelInfo, StageTiming, Tensor},
    embed::v1::{
        embed_service_server::EmbedService, EmbedImageRequest, EmbedImageResponse, EmbedTextRequest, EmbedTextResponse, Embedding,
        EncodeImageRequest, EncodeImageResponse, GetModelInfoRequest, GetModelInfoResponse, ImageLatents, Label,
    },
};
use mmc_runtime::batcher::BatchError;
use tonic::{Request, Response, Status};

use crate::{
    core::{CoreError, EmbedCore},
    engine::ModelId,
};

/// gRPC handlers over an [`EmbedCore`].
pub struct EmbedHandlers {
    core: Arc<EmbedCore>,
    max_texts_per_request: usize,
    max_images_per_request: usize,
}

impl EmbedHandlers {
    pub fn new(core: Arc<EmbedCore>, max_texts_per_request: usize, max_images_per_request: usize) -> Self {
        Self { core, max_texts_per_request, max_images_per_request }
    }
}

/// A batch field must hold 1..=limit items.
fn check_count(field: &str, n: usize, limit: usize) -> Result<(), Status> {
    if n == 0 {
        return Err(Status::invalid_argument(format!("{field} is empty: send at least one")));
    }
    if n > limit {
        return Err(Status::invalid_argument(format!("{n} {field} in one request; the limit is {limit} (split the request)")));
    }
    Ok(())
}

fn timing(stage: &str, started: Instant) -> StageTiming {
    StageTiming { stage: stage.into(), duration_ms: started.elapsed().as_secs_f64() * 1e3, upstream_ms: 0.0 }
}

fn model_info(id: &ModelId) -> ModelInfo {
    ModelInfo { id: id.id.clone(), family: id.family.clone(), profile: id.profile.clone(), revision: id.revision.clone(), dimensions: id.dimensions }
}

fn to_status(e: CoreError) -> Status {
    match e {
        CoreError::Loading => Status::unavailable("the model is still loading; retry shortly"),
        CoreError::TooLong { .. } | CoreError::TextTooLarge { .. } | CoreError::Image { .. } => Status::invalid_argument(e.to_string()),
        CoreError::NoSharedSpace { .. } => Status::failed_precondition(e.to_string()),
        CoreError::Batch(BatchError::QueueFull { .. }) => Status::resource_exhausted(format!("{e}; retry with backoff")),
        CoreError::Batch(BatchError::Stopped(_)) => Status::unavailable(e.to_string()),
        CoreError::Batch(BatchError::Engine(e)) | CoreError::Engine(e) => {
            tracing::error!(error = %e, "engine failure");
            Status::internal(format!("inference failed: {e}"))
        }
    }
}

#[tonic::async_trait]
impl EmbedService for EmbedHandlers {
    async fn embed_text(&self, request: Request<EmbedTextRequest>) -> Result<Response<EmbedTextResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        check_count("texts", req.texts.len(), self.max_texts_per_request)?;
        let embeddings = self.core.embed_texts(req.texts, req.reject_overlong).await.map_err(to_status)?;
        let (model, _) = self.core.text_model().ok_or_else(|| to_status(CoreError::Loading))?;
        Ok(Response::new(EmbedTextResponse {
            embeddings: embeddings.into_iter().map(|e| Embedding { values: e.values, token_count: e.token_count, truncated: e.truncated }).collect(),
            model: Some(model_info(&model)),
            timings: vec![timing("embed_text", started)],
        }))
    }

    async fn embed_image(&self, request: Request<EmbedImageRequest>) -> Result<Response<EmbedImageResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        check_count("images", req.images.len(), self.max_images_per_request)?;
        let vectors = self.core.embed_images(req.images.into_iter().map(|i| i.data).collect()).await.map_err(to_status)?;
        let space = self.core.shared_space().ok_or_else(|| to_status(CoreError::Loading))?;
        Ok(Response::new(EmbedImageResponse {
            embeddings: vectors.into_iter().map(|values| Embedding { values, token_count: 0, truncated: false }).collect(),
            model: Some(model_info(&space)),
            timings: vec![timing("embed_image", started)],
        }))
    }

    async fn encode_image(&self, request: Request<EncodeImageRequest>) -> Result<Response<EncodeImageResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let image = req.image.ok_or_else(|| Status::invalid_argument("image is required"))?;
        let top_k = match req.top_k {
            0 => 5,
            k => (k as usize).min(1000),
        };
        let (encoding, embedding) = self.core.encode_image(image.data, top_k, req.include_embedding).await.map_err(to_status)?;
        let encoder = self.core.image_model().ok_or_else(|| to_status(CoreError::Loading))?;
        let embedding_model = match &embedding {
            Some(_) => Some(model_info(&self.core.shared_space().ok_or_else(|| to_status(CoreError::Loading))?)),
            None => None,
        };
        Ok(Response::new(EncodeImageResponse {
            latents: Some(ImageLatents {
                encoder: Some(model_info(&encoder)),
                labels: encoding.labels.into_iter().map(|l| Label { name: l.name, probability: l.probability, class_index: l.class_index }).collect(),
                pooled: encoding.pooled,
                patch_latents: encoding.patches.map(|p| Tensor { shape: vec![p.rows as u64, p.hidden as u64], values: p.values }),
                width_px: encoding.width,
                height_px: encoding.height,
            }),
            timings: vec![timing("encode_image", started)],
            embedding: embedding.map(|values| Embedding { values, token_count: 0, truncated: false }),
            embedding_model,
        }))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<GetModelInfoResponse>, Status> {
        let (model, max_tokens) = self.core.text_model().ok_or_else(|| to_status(CoreError::Loading))?;
        let conse = self.core.conse_config();
        Ok(Response::new(GetModelInfoResponse {
            text_model: Some(model_info(&model)),
            image_model: self.core.image_model().as_ref().map(model_info),
            max_text_tokens: max_tokens as u32,
            max_image_bytes: self.core.image_limits().max_bytes as u64,
            conse_top_t: conse.as_ref().map_or(0, |(t, _)| *t as u32),
            class_template: conse.map(|(_, template)| template).unwrap_or_default(),
        }))
    }
}
