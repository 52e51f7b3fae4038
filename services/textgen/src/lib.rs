//! The text-generation service: GGUF instruction models with streamed tokens, sampling
//! controls, stop sequences and JSON-Schema-constrained output.
//!
//! Three layers, as in text-embeddings-inference: [`handlers`] (protocol edge: validation,
//! error-to-status mapping) -> [`core`] (bounded queue, scheduler interleaving the
//! sequences in flight) -> [`engine`] (model, tokenizer, chat template, sampler,
//! constraints; no protobuf). The core and the engine live in the `mmc-llm` crate, which
//! the caption service uses too; this crate is the gRPC service over them.

pub use mmc_llm::{core, engine};

pub mod handlers;
