//! The text-generation service: GGUF instruction models with streamed tokens, sampling
//! controls, stop sequences and JSON-Schema-constrained output.
//!
//! Three layers, as in text-embeddings-inference: [`handlers`] (protocol edge: validation,
//! error-to-status mapping) -> [`core`] (bounded queue, scheduler interleaving the
//! sequences in flight) -> [`engine`] (model, tokenizer, chat template, sampler,
//! constraints; no protobuf).

pub mod core;
pub mod engine;
pub mod handlers;
