//! Pixel input of ViT-style encoders (CLIP, BLIP): the per-channel normalisation their
//! Hugging Face image processors apply after resizing, and its parameters.

use std::path::Path;

use candle_core::{Device, Tensor};
use mmc_media::image::RgbImage;

use super::EngineError;

/// CLIP's channel means and deviations: the defaults of `CLIPImageProcessor` and
/// `BlipImageProcessor`.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// `(x / 255 - mean) / std` per channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// The checkpoint's `preprocessor_config.json` (`image_mean`, `image_std`) in `dir`, or
    /// CLIP's values where it is absent or silent.
    pub fn of_checkpoint(dir: &Path) -> Result<Normalize, EngineError> {
        let mut n = Normalize { mean: CLIP_MEAN, std: CLIP_STD };
        let path = dir.join("preprocessor_config.json");
        let Ok(raw) = std::fs::read(&path) else { return Ok(n) };
        let pre: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let three = |v: &serde_json::Value| -> Option<[f32; 3]> {
            let a = v.as_array()?;
            Some([a.first()?.as_f64()? as f32, a.get(1)?.as_f64()? as f32, a.get(2)?.as_f64()? as f32])
        };
        n.mean = three(&pre["image_mean"]).unwrap_or(n.mean);
        n.std = three(&pre["image_std"]).unwrap_or(n.std);
        Ok(n)
    }

    /// An RGB image (already at the model's input size) as normalised values `[3, h, w]`,
    /// channel-major.
    pub fn to_chw(&self, image: &RgbImage) -> Vec<f32> {
        let plane = (image.width() * image.height()) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in image.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(p[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// Preprocessed images of side `size` as one `[n, 3, size, size]` tensor.
pub fn batch(pixels: &[Vec<f32>], size: usize, device: &Device) -> Result<Tensor, EngineError> {
    let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (pixels.len(), 3, size, size), device)?)
}
