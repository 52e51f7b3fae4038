//! BLIP's vision encoder (candle-transformers' `blip`): an image becomes patch latents
//! `[1 + patches, hidden]`, the input of BLIP's caption decoder in the caption service.
//!
//! Preprocessing follows `transformers`' `BlipImageProcessor`: a bicubic resize to the
//! model's square input (no crop, aspect ratio ignored), scaling to [0, 1], then per-channel
//! normalisation with the checkpoint's `preprocessor_config.json` mean and std (CLIP's when
//! the file is absent). Proved against the reference on a random-weight model of the exact
//! upstream layout (`tests/fixtures/blip-tiny`, `tests/blip_vision_parity.rs`).

use std::path::Path;

use candle_core::{DType, Device, Module};
use candle_nn::VarBuilder;
use candle_transformers::models::blip;
use mmc_media::image::RgbImage;

use super::{
    pixels::{self, Normalize},
    EngineError,
};

/// The vision tower of a BLIP captioning checkpoint.
pub struct BlipVision {
    model: blip::BlipForConditionalGeneration,
    image_size: usize,
    hidden: usize,
    normalize: Normalize,
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
        let json = mmc_models::hf_config::blip_config(dir).map_err(EngineError::Load)?;
        let config: blip::Config = serde_json::from_value(json.clone()).map_err(|e| EngineError::Load(format!("config.json: {e}")))?;
        let normalize = Normalize::of_checkpoint(dir)?;
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| EngineError::Load(format!("{}: {e}", weights.display())))?;
        let model = blip::BlipForConditionalGeneration::new(&config, vb).map_err(|e| EngineError::Load(format!("{}: {e}", weights.display())))?;
        Ok(BlipVision {
            model,
            image_size: config.vision_config.image_size,
            hidden: config.vision_config.hidden_size,
            normalize,
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

    /// An RGB image as normalised pixel values `[3, size, size]`, channel-major.
    pub fn preprocess(&self, image: &RgbImage) -> Vec<f32> {
        let size = self.image_size as u32;
        self.normalize.to_chw(&mmc_media::image::resize_exact(image, size, size))
    }

    /// Patch latents of a batch of preprocessed images: one `[rows * hidden]` vector each.
    pub fn encode(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let input = pixels::batch(pixels, self.image_size, &self.device)?;
        let latents = self.model.vision_model().forward(&input)?;
        let (b, rows, hidden) = latents.dims3()?;
        let flat: Vec<f32> = latents.reshape((b, rows * hidden))?.to_dtype(DType::F32)?.to_vec2::<f32>()?.concat();
        Ok(flat.chunks(rows * hidden).map(<[f32]>::to_vec).collect())
    }
}
