//! BLIP's vision encoder (candle-transformers' `blip`): an image becomes patch latents
//! `[1 + patches, hidden]`, the input of BLIP's caption decoder in the caption service.
//!
//! Preprocessing follows `transformers`' `BlipImageProcessor`: a bicubic resize to the
//! model's square input (no crop, aspect ratio ignored), scaling to [0, 1], then per-channel
//! normalisation with the checkpoint's `preprocessor_config.json` mean and std (CLIP's when
//! the file is absent). Proved against the reference on a random-weight model of the exact
//! upstream layout (`tests/fixtures/blip-tiny`, `tests/blip_vision_parity.rs`).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::blip;
use mmc_media::image::RgbImage;

use super::EngineError;

/// CLIP's channel means and deviations, BLIP's processor defaults.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The vision tower of a BLIP captioning checkpoint.
pub struct BlipVision {
    model: blip::BlipForConditionalGeneration,
    image_size: usize,
    hidden: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: Device,
}

/// True when `dir` holds a BLIP checkpoint (`config.json` with `model_type: blip`).
pub fn is_blip(dir: &Path) -> bool {
    mmc_models::store::model_type(dir).as_deref() == Some("blip")
}

impl BlipVision {
    /// Loads `config.json`, `model.safetensors` and (if present) `preprocessor_config.json`.
    ///
    /// candle only builds the vision tower as part of the whole captioning model, so the
    /// text decoder's weights are loaded too (about a third of BLIP-base); the
    /// caption service holds its own copy of the decoder.
    pub fn load(dir: &Path, device: &Device) -> Result<BlipVision, EngineError> {
        let read_json = |name: &str| -> Result<serde_json::Value, EngineError> {
            let path = dir.join(name);
            let raw = std::fs::read(&path).map_err(|e| EngineError::Missing(format!("{}: {e}", path.display())))?;
            serde_json::from_slice(&raw).map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))
        };
        let json = mmc_models::hf_config::blip_config(dir).map_err(EngineError::Load)?;
        let config: blip::Config =
            serde_json::from_value(json.clone()).map_err(|e| EngineError::Load(format!("config.json: {e}")))?;
        let (mut mean, mut std) = (CLIP_MEAN, CLIP_STD);
        if dir.join("preprocessor_config.json").is_file() {
            let pre = read_json("preprocessor_config.json")?;
            let three = |v: &serde_json::Value| -> Option<[f32; 3]> {
                let a = v.as_array()?;
                Some([a.first()?.as_f64()? as f32, a.get(1)?.as_f64()? as f32, a.get(2)?.as_f64()? as f32])
            };
            mean = three(&pre["image_mean"]).unwrap_or(mean);
            std = three(&pre["image_std"]).unwrap_or(std);
        }
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| EngineError::Load(format!("{}: {e}", weights.display())))?;
        let model = blip::BlipForConditionalGeneration::new(&config, vb)
            .map_err(|e| EngineError::Load(format!("{}: {e}", weights.display())))?;
        Ok(BlipVision {
            model,
            image_size: config.vision_config.image_size,
            hidden: config.vision_config.hidden_size,
            mean,
            std,
            device: device.clone(),
        })
    }

    /// Side of the square input, in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Width of each latent row.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Rows of the latents: the class token and one per patch.
    pub fn latent_rows(&self, patch_size: usize) -> usize {
        1 + (self.image_size / patch_size).pow(2)
    }

    /// An RGB image as normalised pixel values `[3, size, size]`, channel-major.
    pub fn preprocess(&self, image: &RgbImage) -> Vec<f32> {
        let size = self.image_size as u32;
        let resized = mmc_media::image::resize_exact(image, size, size);
        let plane = (size * size) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in resized.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(p[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// Patch latents of a batch of preprocessed images: one `[rows * hidden]` vector each.
    pub fn encode(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let s = self.image_size;
        let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (pixels.len(), 3, s, s), &self.device)?;
        let latents = self.model.vision_model().forward(&input)?;
        let (b, rows, hidden) = latents.dims3()?;
        let flat: Vec<f32> = latents.reshape((b, rows * hidden))?.to_dtype(DType::F32)?.to_vec2::<f32>()?.concat();
        Ok(flat.chunks(rows * hidden).map(<[f32]>::to_vec).collect())
    }
}
