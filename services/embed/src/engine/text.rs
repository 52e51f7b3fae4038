//! Text encoder: a BERT sentence-embedding model (bundled: all-MiniLM-L6-v2) in candle.
//!
//! As sentence-transformers does for this model: WordPiece tokens with `[CLS]`/`[SEP]`,
//! at most `max_tokens` per text (256 for MiniLM; longer texts are cut and flagged), a
//! BERT forward pass, mean pooling over the attention mask, then L2 normalisation, so
//! the dot product of two vectors is their cosine similarity.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::Tokenizer;

use super::{bert::PackedBert, EngineError, ModelId};

/// One text's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbedding {
    /// Unit-length vector.
    pub values: Vec<f32>,
    /// Tokens the model saw (after truncation), `[CLS]`/`[SEP]` included.
    pub token_count: u32,
    /// Tokens the text had before truncation.
    pub original_token_count: u32,
    pub truncated: bool,
}

/// A loaded BERT sentence encoder.
pub struct TextEncoder {
    model: PackedBert,
    tokenizer: Tokenizer,
    device: Device,
    max_tokens: usize,
    sep_id: u32,
    pad_id: u32,
    id: ModelId,
}

impl TextEncoder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir` onto `device`.
    pub fn load(dir: &Path, id: &str, profile: &str, max_tokens: usize, device: &Device) -> Result<Self, EngineError> {
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| EngineError::Missing(format!("{}: {e}", dir.join(name).display())));
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|e| EngineError::Load(format!("config.json: {e}")))?;
        let max_tokens = max_tokens.min(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        // We truncate and pad ourselves, to report truncation and keep [SEP] last.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let sep_id = tokenizer.token_to_id("[SEP]").ok_or_else(|| EngineError::Tokenizer("no [SEP] token".into()))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        let device = device.clone();
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is not modified while mapped (model directories are replaced
        // atomically by `mmc models fetch`, never edited in place).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }.map_err(|e| EngineError::Load(e.to_string()))?;
        let model = PackedBert::load(vb, &config).map_err(|e| EngineError::Load(e.to_string()))?;
        let revision = revision_of(dir, "model.safetensors");
        Ok(Self {
            model,
            tokenizer,
            device,
            max_tokens,
            sep_id,
            pad_id,
            id: ModelId { id: id.to_string(), family: "bert".into(), profile: profile.to_string(), revision, dimensions: config.hidden_size as u32 },
        })
    }

    pub fn model_id(&self) -> &ModelId {
        &self.id
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token count of each text as the model would see it before truncation.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, EngineError> {
        Ok(self.tokenize(texts)?.iter().map(Vec::len).collect())
    }

    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EngineError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Embeds a batch of texts in one forward pass over their tokens laid end to end (no
    /// padding; see [`PackedBert`]).
    pub fn embed(&self, texts: &[String]) -> Result<Vec<TextEmbedding>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Batch::new(self.tokenize(texts)?, self.max_tokens, self.sep_id, self.pad_id);
        let mean = self.model.mean_pooled(&batch.ids, &self.device)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(batch.embeddings(unit.to_vec2()?))
    }
}

impl super::TextEmbedder for TextEncoder {
    fn model_id(&self) -> &ModelId {
        &self.id
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, EngineError> {
        TextEncoder::count_tokens(self, texts)
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<TextEmbedding>, EngineError> {
        TextEncoder::embed(self, texts)
    }
}

/// Token ids of a batch of texts, cut to the model's limit with the end token kept last
/// (and the cut recorded), padded to one width: what every text encoder feeds its model.
pub(crate) struct Batch {
    /// Each text's ids after the cut.
    pub ids: Vec<Vec<u32>>,
    /// Each text's token count before the cut.
    pub original: Vec<usize>,
    pub width: usize,
    /// Row-major `[texts, width]` ids, padded with the pad id (for encoders that take a
    /// padded batch).
    pub input: Vec<u32>,
}

impl Batch {
    pub fn new(mut ids: Vec<Vec<u32>>, max_tokens: usize, end_id: u32, pad_id: u32) -> Batch {
        let original: Vec<usize> = ids.iter().map(Vec::len).collect();
        for seq in &mut ids {
            if seq.len() > max_tokens {
                seq.truncate(max_tokens - 1);
                seq.push(end_id);
            }
        }
        let width = ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut input = Vec::with_capacity(ids.len() * width);
        for seq in &ids {
            input.extend_from_slice(seq);
            input.extend(std::iter::repeat_n(pad_id, width - seq.len()));
        }
        Batch { ids, original, width, input }
    }

    /// The model's unit vectors for this batch, with each text's token counts.
    pub fn embeddings(&self, rows: Vec<Vec<f32>>) -> Vec<TextEmbedding> {
        rows.into_iter()
            .zip(self.ids.iter().zip(&self.original))
            .map(|(values, (seq, &orig))| TextEmbedding {
                values,
                token_count: seq.len() as u32,
                original_token_count: orig as u32,
                truncated: orig > seq.len(),
            })
            .collect()
    }
}

pub use mmc_models::store::revision_of;
