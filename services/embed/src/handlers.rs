//! Protocol edge of the latent service: request validation and the one place where
//! core errors become gRPC statuses. Handlers never see tensors.

use std::{sync::Arc, time::Instant};

use mmc_proto::{
    common::v1::{ModelInfo, StageTiming},
    embed::v1::{
        embed_service_server::EmbedService, EmbedTextRequest, EmbedTextResponse, Embedding, GetModelInfoRequest,
        GetModelInfoResponse,
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
}

impl EmbedHandlers {
    pub fn new(core: Arc<EmbedCore>, max_texts_per_request: usize) -> Self {
        Self { core, max_texts_per_request }
    }
}

fn model_info(id: &ModelId) -> ModelInfo {
    ModelInfo {
        id: id.id.clone(),
        family: id.family.clone(),
        profile: id.profile.clone(),
        revision: id.revision.clone(),
        dimensions: id.dimensions,
    }
}

fn to_status(e: CoreError) -> Status {
    match e {
        CoreError::Loading => Status::unavailable("the model is still loading; retry shortly"),
        CoreError::TooLong { .. } => Status::invalid_argument(e.to_string()),
        CoreError::Batch(BatchError::QueueFull { .. }) => {
            Status::resource_exhausted(format!("{e}; retry with backoff"))
        }
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
        if req.texts.is_empty() {
            return Err(Status::invalid_argument("texts is empty: send at least one text"));
        }
        if req.texts.len() > self.max_texts_per_request {
            return Err(Status::invalid_argument(format!(
                "{} texts in one request; the limit is {} (split the request)",
                req.texts.len(),
                self.max_texts_per_request
            )));
        }
        let embeddings = self.core.embed_texts(req.texts, req.reject_overlong).await.map_err(to_status)?;
        let (model, _) = self.core.text_model().ok_or_else(|| to_status(CoreError::Loading))?;
        Ok(Response::new(EmbedTextResponse {
            embeddings: embeddings
                .into_iter()
                .map(|e| Embedding { values: e.values, token_count: e.token_count, truncated: e.truncated })
                .collect(),
            model: Some(model_info(&model)),
            timings: vec![StageTiming { stage: "embed_text".into(), duration_ms: started.elapsed().as_secs_f64() * 1e3 }],
        }))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<GetModelInfoResponse>, Status> {
        let (model, max_tokens) = self.core.text_model().ok_or_else(|| to_status(CoreError::Loading))?;
        Ok(Response::new(GetModelInfoResponse {
            text_model: Some(model_info(&model)),
            image_model: None,
            max_text_tokens: max_tokens as u32,
            max_image_bytes: 0,
        }))
    }
}
