//! The hub decoder: BLIP's image-grounded text decoder (candle-transformers' `blip_text`),
//! reading the BLIP vision encoder's patch latents (which the latent service produces) and
//! writing caption token ids greedily, with its KV cache.
//!
//! Real BLIP weights come from a model hub in deployments; here the code is proved against
//! the reference implementation on a random-weight model of the exact upstream layout
//! (`tests/scripts/blip_fixture.py`, `tests/blip_parity.rs`).

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{blip, blip_text};

/// Errors of the BLIP decoder.
#[derive(Debug, thiserror::Error)]
pub enum BlipError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("patch latents have shape {got:?}; this decoder expects [patches, {hidden}]")]
    Shape { got: Vec<usize>, hidden: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Token ids the decoder starts from and stops at (BERT's `[DEC]`-style bos and `[SEP]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub sep: u32,
}

/// A greedy decode: ids after the bos token and the logits of each step.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub ids: Vec<u32>,
    pub step_logits: Vec<Vec<f32>>,
}

/// BLIP's text decoder with its configuration.
pub struct BlipDecoder {
    model: blip::BlipForConditionalGeneration,
    config: blip::Config,
    special: SpecialIds,
    device: Device,
}

impl BlipDecoder {
    /// Loads `config.json` and `model.safetensors` (a Hugging Face BLIP captioning
    /// checkpoint's files) from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<BlipDecoder, BlipError> {
        let load_err = |path: &Path, message: String| BlipError::Load { path: path.display().to_string(), message };
        let config_path = dir.join("config.json");
        let raw = std::fs::read_to_string(&config_path).map_err(|e| load_err(&config_path, e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&raw).map_err(|e| load_err(&config_path, e.to_string()))?;
        let config: blip::Config = serde_json::from_value(json.clone()).map_err(|e| load_err(&config_path, e.to_string()))?;
        let id = |key: &str, default: u32| json["text_config"][key].as_u64().map_or(default, |v| v as u32);
        // Upstream BLIP: bos 30522 ([DEC]), sep 102 ([SEP]).
        let special = SpecialIds { bos: id("bos_token_id", 30522), sep: id("sep_token_id", 102) };
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| load_err(&weights, e.to_string()))?;
        let model = blip::BlipForConditionalGeneration::new(&config, vb).map_err(|e| load_err(&weights, e.to_string()))?;
        Ok(BlipDecoder { model, config, special, device: device.clone() })
    }

    /// The text configuration (vocabulary size, hidden sizes).
    pub fn text_config(&self) -> &blip_text::Config {
        &self.config.text_config
    }

    /// The bos and sep ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    /// The vision encoder's patch latents for `pixel_values` [1, 3, size, size] (what the
    /// latent service's BLIP encoder returns), as [patches, hidden].
    pub fn vision_latents(&self, pixel_values: &Tensor) -> Result<Tensor, BlipError> {
        use candle_core::Module;
        Ok(self.model.vision_model().forward(pixel_values)?.squeeze(0)?)
    }

    /// Greedy decoding over `latents` [patches, hidden] for at most `max_tokens` tokens,
    /// stopping after `sep`.
    pub fn greedy(&mut self, latents: &Tensor, max_tokens: usize) -> Result<Decoded, BlipError> {
        let hidden = self.config.text_config.encoder_hidden_size;
        let dims = latents.dims().to_vec();
        if dims.len() != 2 || dims[1] != hidden {
            return Err(BlipError::Shape { got: dims, hidden });
        }
        let latents = latents.to_device(&self.device)?.unsqueeze(0)?;
        self.model.reset_kv_cache();
        let mut ids = Vec::new();
        let mut step_logits = Vec::new();
        let mut next = self.special.bos;
        for _ in 0..max_tokens {
            let input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
            let logits = self.model.text_decoder().forward(&input, &latents)?;
            let last: Vec<f32> = logits.i((0, logits.dim(1)? - 1))?.to_dtype(DType::F32)?.to_vec1()?;
            next = last.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
            step_logits.push(last);
            ids.push(next);
            if next == self.special.sep {
                break;
            }
        }
        self.model.reset_kv_cache();
        Ok(Decoded { ids, step_logits })
    }
}
