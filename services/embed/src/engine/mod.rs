//! Model code of the latent service. Engines take and return plain Rust values and
//! tensors; they never see protobuf.

pub mod bert;
pub mod blip_vision;
pub mod clip;
pub mod conse;
pub mod efficientnet;
pub mod pixels;
pub mod text;

/// Identity of a loaded model (mapped to `mmc.common.v1.ModelInfo` at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    pub id: String,
    pub family: String,
    pub profile: String,
    /// First 12 hex digits of the weights' sha256.
    pub revision: String,
    pub dimensions: u32,
}

/// Errors of the engines.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("model files: {0}")]
    Missing(String),
    #[error("loading the model: {0}")]
    Load(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Inference(e.to_string())
    }
}

/// A text encoder into a vector space: BERT sentence embeddings (bundled MiniLM) or CLIP's
/// text tower (hub). The core batches requests over it without knowing which.
pub trait TextEmbedder: Send + Sync {
    /// Identity of the model (and so of its vector space).
    fn model_id(&self) -> &ModelId;
    /// Most tokens per text; longer texts are cut (and flagged) or refused.
    fn max_tokens(&self) -> usize;
    /// Each text's token count before any cut.
    fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, EngineError>;
    /// Unit vectors of a batch of texts (one forward pass).
    fn embed(&self, texts: &[String]) -> Result<Vec<text::TextEmbedding>, EngineError>;
}
