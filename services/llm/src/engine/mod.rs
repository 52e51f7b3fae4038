//! The engine: model code and everything that turns logits into text. No protobuf here.
//!
//! - [`model`]: a GGUF loaded into the module its architecture calls for.
//! - [`llama`]: our own forward pass for `llama` files, batched across sequences.
//! - [`gemma3`]: Gemma 3, candle's module with its activation and sliding window fixed.
//! - [`q8_0`]: the multi-row Q8_0 matmul kernel it runs on x86-64.
//! - [`fastmath`]: a vectorizable `exp` for softmaxes over attention rows and vocabularies
//!   (the `mmc-fastmath` crate, shared with the speech engine).
//! - [`tokenizer`]: text <-> ids, special ids.
//! - [`chat`]: the GGUF's Jinja chat template.
//! - [`sampler`]: temperature, top-k, top-p, min-p, repetition penalty, seeds.
//! - [`constraint`]: JSON-Schema-constrained decoding (llguidance).
//! - [`stop`]: stop sequences over streamed text.
//! - [`generation`]: [`Engine`] (all of the above for one model) and [`Sequence`] (one
//!   generation, advanced a step at a time so a scheduler can interleave many).

pub mod chat;
pub mod constraint;
/// Shared with the speech engine: its own crate.
pub use mmc_fastmath as fastmath;
pub mod gemma3;
pub mod generation;
pub mod llama;
pub mod model;
pub mod prefix_cache;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub mod q8_0;
pub mod sampler;
mod shared_out;
pub mod stop;
pub mod tokenizer;

pub use generation::{Engine, EngineError, FinishReason, GenerationParams, OverflowPolicy, Prompt, Sequence, Step};
