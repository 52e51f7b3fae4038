//! What the model services need of model files at run time. Fetching and converting them
//! is `mmc-fetch` (used by the `mmc` command), so no service links an HTTP client, zip or
//! tar.
//!
//! - [`store`]: the models directory (`MMC_MODELS_DIR`) and paths inside it.
//! - [`hf_config`]: Hugging Face `config.json` files with `transformers`' defaults filled in.
//! - [`device`]: the device model code runs on (`MMC_DEVICE`: cpu, cuda, cuda:N).
//! - [`labels`]: label sets of classifier models (ImageNet-1k), shared by producer and readers.
//! - [`gguf_tokenizer`]: the tokenizer a GGUF file carries only as metadata, as a Hugging
//!   Face tokenizer (read by the text-generation engine, written to disk by `mmc-fetch`).

pub mod device;
pub mod gguf_tokenizer;
pub mod hf_config;
pub mod labels;
pub mod store;

pub use device::DeviceSpec;
pub use store::ModelStore;
