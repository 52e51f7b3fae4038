//! The hub decoder: BLIP's image-grounded text decoder (candle-transformers' `blip_text`),
//! reading the BLIP vision encoder's patch latents (which the latent service produces) and
//! writing caption token ids greedily with its KV cache.
//!
//! Real BLIP weights come from a model hub in deployments; here the code is proved against
//! the reference implementation on a random-weight model of the exact upstream layout
//! (`tests/scripts/blip_fixture.py`, `tests/blip_parity.rs`), and served end to end in
//! `tests/e2e/caption_service.rs`.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{blip, blip_text};

/// Errors of the BLIP decoder (cloneable, so one failed batch can answer every caller).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlipError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("patch latents have shape {got:?}; this decoder expects [{rows}, {hidden}] (BLIP's vision encoder at its input size)")]
    Shape { got: Vec<usize>, rows: usize, hidden: usize },
    #[error("detokenizing: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for BlipError {
    fn from(e: candle_core::Error) -> Self {
        BlipError::Inference(e.to_string())
    }
}

/// Token ids the decoder starts from and stops at (BERT's `[DEC]`-style bos and `[SEP]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub sep: u32,
}

/// A greedy decode of one image.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Ids after the bos token, up to and including `sep` when it was reached.
    pub ids: Vec<u32>,
    /// Log-probability of each chosen id (the caption's confidence comes from these).
    pub logprobs: Vec<f32>,
    /// Each step's logits, when asked for (parity tests).
    pub step_logits: Vec<Vec<f32>>,
}

/// BLIP's text decoder with its configuration and tokenizer.
pub struct BlipDecoder {
    model: blip::BlipForConditionalGeneration,
    config: blip::Config,
    special: SpecialIds,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
}

impl BlipDecoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` (a Hugging Face BLIP
    /// captioning checkpoint's files) from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<BlipDecoder, BlipError> {
        let load_err = |path: &Path, message: String| BlipError::Load { path: path.display().to_string(), message };
        let config_path = dir.join("config.json");
        let json = mmc_models::hf_config::blip_config(dir).map_err(|e| load_err(&config_path, e))?;
        let config: blip::Config = serde_json::from_value(json.clone()).map_err(|e| load_err(&config_path, e.to_string()))?;
        let id = |key: &str| json["text_config"][key].as_u64().unwrap_or_default() as u32;
        // Upstream BLIP: bos 30522 ([DEC]), sep 102 ([SEP]).
        let special = SpecialIds { bos: id("bos_token_id"), sep: id("sep_token_id") };
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| load_err(&tokenizer_path, e.to_string()))?;
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }.map_err(|e| load_err(&weights, e.to_string()))?;
        let model = blip::BlipForConditionalGeneration::new(&config, vb).map_err(|e| load_err(&weights, e.to_string()))?;
        Ok(BlipDecoder { model, config, special, tokenizer, device: device.clone() })
    }

    /// The text configuration (vocabulary size, hidden sizes).
    pub fn text_config(&self) -> &blip_text::Config {
        &self.config.text_config
    }

    /// The bos and sep ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    /// Shape `[rows, hidden]` of the latents this decoder reads: the class token and one
    /// row per patch of the vision encoder's input.
    pub fn latent_shape(&self) -> [usize; 2] {
        let v = &self.config.vision_config;
        [1 + (v.image_size / v.patch_size).pow(2), self.config.text_config.encoder_hidden_size]
    }

    /// Most tokens one caption may have (the decoder's position table, less the bos).
    pub fn max_new_tokens(&self) -> usize {
        self.config.text_config.max_position_embeddings.saturating_sub(1)
    }

    /// Checks one image's latents `[rows, hidden]` against [`Self::latent_shape`].
    pub fn check_shape(&self, dims: &[usize]) -> Result<(), BlipError> {
        let [rows, hidden] = self.latent_shape();
        if dims != [rows, hidden] {
            return Err(BlipError::Shape { got: dims.to_vec(), rows, hidden });
        }
        Ok(())
    }

    /// Greedy decoding of one image's latents `[rows, hidden]`, stopping after `sep` or
    /// `max_tokens` tokens.
    pub fn greedy(&self, latents: &Tensor, max_tokens: usize, keep_logits: bool) -> Result<Decoded, BlipError> {
        self.check_shape(latents.dims())?;
        let encoder_states = latents.to_device(&self.device)?.unsqueeze(0)?;
        // A clone shares the weights (reference-counted) and has its own, empty KV cache,
        // so concurrent decodes never see each other's state.
        let mut model = self.model.clone();
        model.reset_kv_cache();
        let mut out = Decoded { ids: Vec::new(), logprobs: Vec::new(), step_logits: Vec::new() };
        let mut next = self.special.bos;
        for _ in 0..max_tokens.min(self.max_new_tokens()) {
            let input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
            let logits = model.text_decoder().forward(&input, &encoder_states)?;
            let last = logits.i((0, logits.dim(1)? - 1))?.to_dtype(DType::F32)?;
            let logprobs = candle_nn::ops::log_softmax(&last, 0)?.to_vec1::<f32>()?;
            next = argmax(&logprobs);
            out.ids.push(next);
            out.logprobs.push(logprobs[next as usize]);
            if keep_logits {
                out.step_logits.push(last.to_vec1()?);
            }
            if next == self.special.sep {
                break;
            }
        }
        Ok(out)
    }

    /// The caption text of `ids`, special tokens skipped (as `transformers`'
    /// `decode(ids, skip_special_tokens=True)`).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, BlipError> {
        self.tokenizer.decode(ids, true).map_err(|e| BlipError::Tokenizer(e.to_string()))
    }
}

/// Openers accessibility guidelines advise against (a screen reader already says "image").
const OPENERS: &[&str] = &["a picture of ", "a photo of ", "a photograph of ", "an image of ", "an illustration of "];

/// The served caption made of BLIP's decoded `raw` text: openers such as "a picture of"
/// dropped, whitespace collapsed, first letter capitalised, a full stop at the end, and cut
/// at a word boundary to at most `max_chars` characters. When `hedge`, the text says it is
/// unsure: alt text (`alt_text`) plainly, "Photo, perhaps a dog on a bench (uncertain).", a
/// description with "Possibly " in front. BLIP writes real sentences, so nothing else is
/// changed.
pub fn caption_text(raw: &str, hedge: bool, alt_text: bool, max_chars: usize) -> String {
    let mut words: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    while let Some(opener) = OPENERS.iter().find(|o| words.len() > o.len() && words[..o.len()].eq_ignore_ascii_case(o)) {
        words = words[opener.len()..].to_string();
    }
    let (prefix, suffix) = match (hedge, alt_text) {
        (true, true) => ("Photo, perhaps ", " (uncertain)."),
        (true, false) => ("possibly ", "."),
        (false, _) => ("", "."),
    };
    if words.is_empty() {
        return String::new();
    }
    let budget = max_chars.saturating_sub(prefix.chars().count() + suffix.chars().count());
    if words.chars().count() > budget {
        let cut: String = words.chars().take(budget + 1).collect();
        words = match cut.rfind(' ') {
            Some(space) => cut[..space].to_string(),
            None => cut.chars().take(budget).collect(),
        };
    }
    let words = words.trim_end_matches([',', ';', ':', ' ', '.', '!', '?']);
    super::text::capitalise(&format!("{prefix}{words}{suffix}"))
}

fn argmax(values: &[f32]) -> u32 {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::caption_text;

    #[test]
    fn captions_lose_openers_gain_form_and_fit() {
        assert_eq!(caption_text("a picture of a dog on a bench", false, true, 125), "A dog on a bench.");
        assert_eq!(caption_text("  a cat   sitting ", true, false, 125), "Possibly a cat sitting.");
        assert_eq!(caption_text("  a cat   sitting ", true, true, 125), "Photo, perhaps a cat sitting (uncertain).");
        let long = "a man riding a bicycle down a street next to a tall building with many windows";
        let cut = caption_text(long, false, true, 40);
        assert!(cut.chars().count() <= 40, "{cut}");
        assert_eq!(cut, "A man riding a bicycle down a street.");
        let cut = caption_text(long, true, true, 40);
        assert_eq!(cut, "Photo, perhaps a man riding (uncertain).");
        assert_eq!(caption_text("", false, true, 125), "");
    }
}
