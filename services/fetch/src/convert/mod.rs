//! Format converters, in Rust, run by model fetching.
//!
//! - [`pth_legacy`]: PyTorch's legacy (pre-1.6, non-zip) pickle checkpoints, which
//!   candle's `pickle` module cannot open, to safetensors.
//! - [`gguf_tokenizer`] (in `mmc-models`, which the engine reads it with): the tokenizer that a GGUF file carries only as metadata, to a
//!   Hugging Face `tokenizer.json` with the correct pre-tokenizer.
//! - [`ct2_whisper`]: CTranslate2 Whisper models (faster-whisper's format) to whisper.cpp's
//!   ggml file.

pub mod ct2_whisper;
pub mod pth_legacy;

pub use mmc_models::gguf_tokenizer;

use std::path::Path;

use crate::manifest::ConversionKind;

/// Runs one conversion from `input` to `output`.
pub fn run(kind: ConversionKind, input: &Path, output: &Path) -> Result<(), String> {
    match kind {
        ConversionKind::PthLegacyToSafetensors => pth_legacy::convert(input, output),
        ConversionKind::GgufTokenizer => gguf_tokenizer::convert(input, output),
        ConversionKind::Ct2WhisperToGgml => ct2_whisper::convert(input, output, ct2_whisper::Weights::AsStored),
        ConversionKind::Ct2WhisperToGgmlQ8_0 => ct2_whisper::convert(input, output, ct2_whisper::Weights::Q8_0),
    }
}
