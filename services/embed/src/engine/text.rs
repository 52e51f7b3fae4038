//! Text encoder: a BERT sentence-embedding model (bundled: all-MiniLM-L6-v2) in candle.
//!
//! As sentence-transformers does for this model: WordPiece tokens with `[CLS]`/`[SEP]`,
//! at most `max_tokens` per text (256 for MiniLM; longer texts are cut and flagged), a
//! BERT forward pass, mean pooling over the attention mask, then L2 normalisation, so
//! the dot product of two vectors is their cosine similarity.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

use super::{EngineError, ModelId};

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
    model: BertModel,
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
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| EngineError::Missing(format!("{}: {e}", dir.join(name).display())))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| EngineError::Load(format!("config.json: {e}")))?;
        let max_tokens = max_tokens.min(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        // We truncate and pad ourselves, to report truncation and keep [SEP] last.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let sep_id = tokenizer.token_to_id("[SEP]").ok_or_else(|| EngineError::Tokenizer("no [SEP] token".into()))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        let device = device.clone();
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is not modified while mapped (model directories are replaced
        // atomically by `mmc models fetch`, never edited in place).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| EngineError::Load(e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| EngineError::Load(e.to_string()))?;
        let revision = revision_of(dir, "model.safetensors");
        Ok(Self {
            model,
            tokenizer,
            device,
            max_tokens,
            sep_id,
            pad_id,
            id: ModelId {
                id: id.to_string(),
                family: "bert".into(),
                profile: profile.to_string(),
                revision,
                dimensions: config.hidden_size as u32,
            },
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
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Embeds a batch of texts. Texts of similar length share a forward pass: the batch is
    /// sorted by token count and split where padding would exceed a quarter of the real
    /// tokens (as text-embeddings-inference avoids padding), then put back in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<TextEmbedding>, EngineError> {
        let ids = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out: Vec<Option<TextEmbedding>> = vec![None; ids.len()];
        let mut start = 0;
        while start < order.len() {
            let shortest = ids[order[start]].len().min(self.max_tokens).max(1);
            let mut end = start + 1;
            while end < order.len() && ids[order[end]].len().min(self.max_tokens) * 4 <= shortest * 5 {
                end += 1;
            }
            let group: Vec<Vec<u32>> = order[start..end].iter().map(|&i| ids[i].clone()).collect();
            for (&i, e) in order[start..end].iter().zip(self.forward(group)?) {
                out[i] = Some(e);
            }
            start = end;
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// One forward pass over token ids (cut and padded here).
    fn forward(&self, ids: Vec<Vec<u32>>) -> Result<Vec<TextEmbedding>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Batch::new(ids, self.max_tokens, self.sep_id, self.pad_id);
        let (n, width) = (batch.ids.len(), batch.width);
        let (input, mask) = (batch.input.clone(), batch.mask.clone());
        let input = Tensor::from_vec(input, (n, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, width), &self.device)?;
        let token_types = input.zeros_like()?;
        let hidden = self.model.forward(&input, &token_types, Some(&mask))?;
        // Mean over real tokens, then unit length.
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?;
        let counts = mask_f.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
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
    /// Row-major `[texts, width]` ids, padded with the pad id.
    pub input: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u32>,
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
        let mut mask = Vec::with_capacity(ids.len() * width);
        for seq in &ids {
            input.extend_from_slice(seq);
            input.extend(std::iter::repeat_n(pad_id, width - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, width - seq.len()));
        }
        Batch { ids, original, width, input, mask }
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
