//! Inference core of the latent service: owns the loaded engines and their batchers.
//!
//! Engines load after the server starts (health says NOT_SERVING meanwhile); until then
//! calls get [`CoreError::Loading`].

use std::{path::PathBuf, sync::Arc, time::Duration};

use mmc_runtime::batcher::{BatchError, Batcher, BatcherConfig};
use tokio::sync::OnceCell;

use crate::engine::{
    text::{TextEmbedding, TextEncoder},
    EngineError, ModelId,
};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub models_dir: PathBuf,
    pub text_model: String,
    pub profile: String,
    pub max_text_tokens: usize,
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

/// Errors the edge maps to gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the model is still loading")]
    Loading,
    #[error("text #{index} has {tokens} tokens; {model} takes at most {limit} (leave reject_overlong unset to truncate)")]
    TooLong { index: usize, tokens: usize, limit: usize, model: String },
    #[error(transparent)]
    Batch(#[from] BatchError<EngineError>),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct TextPath {
    encoder: Arc<TextEncoder>,
    batcher: Batcher<String, TextEmbedding, EngineError>,
}

/// The loaded models of the service.
pub struct EmbedCore {
    config: CoreConfig,
    text: OnceCell<TextPath>,
}

impl EmbedCore {
    pub fn new(config: CoreConfig) -> Arc<Self> {
        Arc::new(Self { config, text: OnceCell::new() })
    }

    /// Loads the models and runs one inference; the service is SERVING only after this.
    pub async fn load_and_warm_up(&self) -> Result<(), EngineError> {
        let cfg = self.config.clone();
        let encoder = tokio::task::spawn_blocking(move || {
            let dir = cfg.models_dir.join(&cfg.text_model);
            if !dir.join(mmc_models::store::STAMP).is_file() {
                return Err(EngineError::Missing(format!(
                    "{} is not fetched; run `mmc models fetch` (models directory {})",
                    cfg.text_model,
                    cfg.models_dir.display()
                )));
            }
            let encoder = TextEncoder::load(&dir, &cfg.text_model, &cfg.profile, cfg.max_text_tokens)?;
            encoder.embed(&["warm-up".to_string()])?;
            Ok(encoder)
        })
        .await
        .map_err(|e| EngineError::Load(e.to_string()))??;
        let encoder = Arc::new(encoder);
        let engine = encoder.clone();
        let batcher = Batcher::spawn(
            BatcherConfig {
                name: "embed_text",
                max_batch: self.config.max_batch,
                max_wait: self.config.max_wait,
                queue_capacity: self.config.queue_capacity,
            },
            move |texts: Vec<String>| engine.embed(&texts),
        );
        tracing::info!(model = %encoder.model_id().id, revision = %encoder.model_id().revision, "text encoder ready");
        let _ = self.text.set(TextPath { encoder, batcher });
        Ok(())
    }

    fn text(&self) -> Result<&TextPath, CoreError> {
        self.text.get().ok_or(CoreError::Loading)
    }

    /// The text model, once loaded.
    pub fn text_model(&self) -> Option<(ModelId, usize)> {
        self.text.get().map(|t| (t.encoder.model_id().clone(), t.encoder.max_tokens()))
    }

    /// Embeds texts through the batcher. With `reject_overlong`, a text over the token
    /// limit fails the whole request instead of being truncated.
    pub async fn embed_texts(&self, texts: Vec<String>, reject_overlong: bool) -> Result<Vec<TextEmbedding>, CoreError> {
        let text = self.text()?;
        if reject_overlong {
            let counts = text.encoder.count_tokens(&texts)?;
            let limit = text.encoder.max_tokens();
            if let Some((index, &tokens)) = counts.iter().enumerate().find(|(_, &c)| c > limit) {
                return Err(CoreError::TooLong { index, tokens, limit, model: text.encoder.model_id().id.clone() });
            }
        }
        Ok(text.batcher.submit(texts).await?)
    }
}
