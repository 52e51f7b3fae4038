//! CLIP (candle-transformers' `clip`): a text tower and an image tower trained into one
//! space, the hub profile's shared space. Text and image vectors are the projected, L2
//! normalised features, exactly as `transformers`' `get_text_features` /
//! `get_image_features` followed by normalisation.
//!
//! Text: CLIP's byte-level BPE (`tokenizer.json`), start and end tokens added, at most
//! `max_position_embeddings` (77) tokens with the end token kept last, padded with id 0.
//! candle's text tower pools at the largest id of each row, which is the end token only
//! because real CLIP gives it the largest id; [`Clip::load`] checks that, and padding with 0
//! keeps it true (the causal mask means padding after the end token changes nothing).
//!
//! Images: `CLIPImageProcessor`'s steps: the shorter side resized to the input size
//! (bicubic), the centre square cropped, scaled to [0, 1], normalised with CLIP's mean/std
//! (or the checkpoint's `preprocessor_config.json`).
//!
//! Proved against `transformers` on a random-weight model of the exact upstream layout
//! (`tests/scripts/clip_fixture.py`, `tests/clip_parity.rs`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::{
    self,
    text_model::{Activation, ClipTextConfig},
    vision_model::ClipVisionConfig,
};
use mmc_media::image::RgbImage;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::{
    pixels::{self, Normalize},
    text::{Batch, TextEmbedding},
    EngineError, ModelId, TextEmbedder,
};

/// True when `dir` holds a CLIP checkpoint (`config.json` with `model_type: clip`).
pub fn is_clip(dir: &Path) -> bool {
    mmc_models::store::model_type(dir).as_deref() == Some("clip")
}

/// A loaded CLIP model with its tokenizer and image preprocessing.
pub struct Clip {
    model: clip::ClipModel,
    tokenizer: Tokenizer,
    end_id: u32,
    max_tokens: usize,
    image_size: usize,
    normalize: Normalize,
    device: Device,
    id: ModelId,
}

/// candle's CLIP has only QuickGELU, the activation of every OpenAI CLIP.
fn activation(name: &Value) -> Result<Activation, EngineError> {
    match name.as_str() {
        None | Some("quick_gelu") => Ok(Activation::QuickGelu),
        Some(other) => Err(EngineError::Load(format!("config.json: activation {other:?} is not supported (quick_gelu only)"))),
    }
}

impl Clip {
    /// Loads `config.json`, `model.safetensors`, `tokenizer.json` and (if present)
    /// `preprocessor_config.json` from `dir`.
    pub fn load(dir: &Path, id: &str, profile: &str, max_tokens: usize, device: &Device) -> Result<Clip, EngineError> {
        let json = mmc_models::hf_config::clip_config(dir).map_err(EngineError::Load)?;
        let num = |v: &Value, key: &str| -> Result<usize, EngineError> {
            v[key].as_u64().map(|n| n as usize).ok_or_else(|| EngineError::Load(format!("config.json: {key} missing")))
        };
        let (t, v) = (&json["text_config"], &json["vision_config"]);
        let projection_dim = num(&json, "projection_dim")?;
        let text_config = ClipTextConfig {
            vocab_size: num(t, "vocab_size")?,
            embed_dim: num(t, "hidden_size")?,
            activation: activation(&t["hidden_act"])?,
            intermediate_size: num(t, "intermediate_size")?,
            max_position_embeddings: num(t, "max_position_embeddings")?,
            pad_with: None,
            num_hidden_layers: num(t, "num_hidden_layers")?,
            num_attention_heads: num(t, "num_attention_heads")?,
            projection_dim,
        };
        let vision_config = ClipVisionConfig {
            embed_dim: num(v, "hidden_size")?,
            activation: activation(&v["hidden_act"])?,
            intermediate_size: num(v, "intermediate_size")?,
            num_hidden_layers: num(v, "num_hidden_layers")?,
            num_attention_heads: num(v, "num_attention_heads")?,
            projection_dim,
            num_channels: 3,
            image_size: num(v, "image_size")?,
            patch_size: num(v, "patch_size")?,
        };
        let image_size = vision_config.image_size;
        let config = clip::ClipConfig { text_config: text_config.clone(), vision_config, logit_scale_init_value: 2.6592, image_size };

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| EngineError::Missing(format!("{}: {e}", tokenizer_path.display())))?;
        // We truncate and pad ourselves, to report truncation and keep the end token last.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let end_id = tokenizer.token_to_id("<|endoftext|>").ok_or_else(|| EngineError::Tokenizer("no <|endoftext|> token".into()))?;
        if end_id as usize + 1 != text_config.vocab_size {
            return Err(EngineError::Load(format!(
                "<|endoftext|> is id {end_id}, not the largest id {}: candle's CLIP text tower pools at the largest id",
                text_config.vocab_size - 1
            )));
        }

        let normalize = Normalize::of_checkpoint(dir)?;

        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| EngineError::Load(format!("{}: {e}", weights.display())))?;
        // candle fills a missing class embedding with random values instead of failing.
        if !vb.contains_tensor("vision_model.embeddings.class_embedding") {
            return Err(EngineError::Load(format!("{}: vision_model.embeddings.class_embedding is missing", weights.display())));
        }
        let model = clip::ClipModel::new(vb, &config).map_err(|e| EngineError::Load(format!("{}: {e}", weights.display())))?;
        Ok(Clip {
            model,
            tokenizer,
            end_id,
            max_tokens: max_tokens.min(text_config.max_position_embeddings),
            image_size,
            normalize,
            device: device.clone(),
            id: ModelId {
                id: id.to_string(),
                family: "clip".into(),
                profile: profile.to_string(),
                revision: mmc_models::store::revision_of(dir, "model.safetensors"),
                dimensions: projection_dim as u32,
            },
        })
    }

    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EngineError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Side of the square input, in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// An RGB image as normalised pixel values `[3, size, size]`, channel-major.
    pub fn preprocess(&self, image: &RgbImage) -> Vec<f32> {
        let size = self.image_size as u32;
        self.normalize.to_chw(&mmc_media::image::resize_center_crop_bicubic(image, size))
    }

    /// Unit vectors of a batch of preprocessed images (one forward pass).
    pub fn embed_images(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let input = pixels::batch(pixels, self.image_size, &self.device)?;
        let features = self.model.get_image_features(&input)?;
        Ok(clip::div_l2_norm(&features)?.to_dtype(DType::F32)?.to_vec2()?)
    }
}

impl TextEmbedder for Clip {
    fn model_id(&self) -> &ModelId {
        &self.id
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, EngineError> {
        Ok(self.tokenize(texts)?.iter().map(Vec::len).collect())
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<TextEmbedding>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Batch::new(self.tokenize(texts)?, self.max_tokens, self.end_id, 0);
        let input = Tensor::from_vec(batch.input.clone(), (batch.ids.len(), batch.width), &self.device)?;
        let features = self.model.get_text_features(&input)?;
        Ok(batch.embeddings(clip::div_l2_norm(&features)?.to_dtype(DType::F32)?.to_vec2()?))
    }
}
