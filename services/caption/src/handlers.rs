//! Protocol edge of the caption service: request validation and the one place where core
//! errors become gRPC statuses. Handlers never see the language model.

use std::{sync::Arc, time::Instant};

use mmc_proto::{
    caption::v1::{
        caption_service_server::CaptionService, CaptionMode, CaptionRequest, CaptionResponse, Evidence, GetModelInfoRequest, GetModelInfoResponse,
    },
    common::v1::{ModelInfo, StageTiming},
};
use tonic::{Request, Response, Status};

use crate::{
    core::{CaptionCore, CaptionJob, CoreError, Patches},
    engine::{Label, Mode},
};

/// Most labels one request may carry (the encoder's top-k).
pub const MAX_LABELS: usize = 100;
/// Shortest and longest `max_chars` a client may ask for.
pub const MAX_CHARS_RANGE: std::ops::RangeInclusive<u32> = 16..=1000;

/// gRPC handlers over a [`CaptionCore`].
pub struct CaptionHandlers {
    core: Arc<CaptionCore>,
}

impl CaptionHandlers {
    pub fn new(core: Arc<CaptionCore>) -> Self {
        Self { core }
    }

    fn decoder_info(&self) -> Result<ModelInfo, Status> {
        let m = self.core.decoder().map_err(to_status)?;
        Ok(ModelInfo { id: m.id, family: m.family, profile: m.profile, revision: m.revision, dimensions: 0 })
    }
}

fn to_status(e: CoreError) -> Status {
    match e {
        CoreError::Loading | CoreError::Stopped => Status::unavailable(format!("{e}; retry shortly")),
        CoreError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
        CoreError::WrongEncoder { .. } | CoreError::InvalidLatents { .. } => Status::invalid_argument(e.to_string()),
        CoreError::Decoder(_) => {
            tracing::error!(error = %e, "decoder failure");
            Status::internal(e.to_string())
        }
    }
}

/// The request as the core's job, or INVALID_ARGUMENT saying what is wrong.
fn to_job(req: CaptionRequest, expected_encoder: &str) -> Result<CaptionJob, Status> {
    let latents = req.latents.ok_or_else(|| {
        Status::invalid_argument(format!(
            "latents are required: encode the image with embed.v1.EncodeImage ({expected_encoder}) and pass its latents"
        ))
    })?;
    let encoder_id = latents.encoder.map(|e| e.id).unwrap_or_default();
    if encoder_id.is_empty() {
        return Err(Status::invalid_argument(format!("latents.encoder.id is empty; this decoder reads latents from {expected_encoder:?}")));
    }
    if latents.labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "{} labels in latents; at most {MAX_LABELS} are read (ask EncodeImage for a smaller top_k)",
            latents.labels.len()
        )));
    }
    let mode = match CaptionMode::try_from(req.mode) {
        Ok(CaptionMode::Unspecified | CaptionMode::AltText) => Mode::AltText,
        Ok(CaptionMode::Detailed) => Mode::Detailed,
        Err(_) => return Err(Status::invalid_argument(format!("mode {} is not a CaptionMode", req.mode))),
    };
    let max_chars = match req.max_chars {
        0 => mode.default_max_chars(),
        n if MAX_CHARS_RANGE.contains(&n) => n as usize,
        n => {
            return Err(Status::invalid_argument(format!(
                "max_chars is {n}; use 0 (the mode's default) or {}..={}",
                MAX_CHARS_RANGE.start(),
                MAX_CHARS_RANGE.end()
            )))
        }
    };
    let patches = match latents.patch_latents {
        None => None,
        Some(t) => {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if count != Some(t.values.len()) {
                return Err(Status::invalid_argument(format!(
                    "latents.patch_latents has shape {shape:?} but {} values (row-major values must fill the shape)",
                    t.values.len()
                )));
            }
            Some(Patches { shape, values: t.values })
        }
    };
    let labels = latents.labels.into_iter().map(|l| Label { class_index: l.class_index, name: l.name, probability: l.probability }).collect();
    Ok(CaptionJob { encoder_id, labels, patches, mode, max_chars })
}

fn to_proto_mode(mode: Mode) -> CaptionMode {
    match mode {
        Mode::AltText => CaptionMode::AltText,
        Mode::Detailed => CaptionMode::Detailed,
    }
}

#[tonic::async_trait]
impl CaptionService for CaptionHandlers {
    async fn caption(&self, request: Request<CaptionRequest>) -> Result<Response<CaptionResponse>, Status> {
        let started = Instant::now();
        let job = to_job(request.into_inner(), self.core.expected_encoder())?;
        let caption = self.core.caption(job).await.map_err(to_status)?;
        let mut timings: Vec<StageTiming> =
            caption.timings.iter().map(|(stage, ms)| StageTiming { stage: stage.to_string(), duration_ms: *ms, upstream_ms: 0.0 }).collect();
        timings.push(StageTiming { stage: "caption".into(), duration_ms: started.elapsed().as_secs_f64() * 1e3, upstream_ms: 0.0 });
        Ok(Response::new(CaptionResponse {
            text: caption.text,
            mode: to_proto_mode(caption.mode) as i32,
            confidence: caption.confidence,
            evidence: caption.evidence.into_iter().map(|l| Evidence { label: l.name, probability: l.probability }).collect(),
            attempts: caption.attempts,
            from_template: caption.from_template,
            uncertain: caption.uncertain,
            model: Some(self.decoder_info()?),
            timings,
        }))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<GetModelInfoResponse>, Status> {
        Ok(Response::new(GetModelInfoResponse { decoder: Some(self.decoder_info()?), expected_encoder_id: self.core.expected_encoder().to_string() }))
    }
}
