//! `mmc-llm`: the language-model backend shared by the text-generation service and the
//! caption service (which runs a small instruction model in-process to phrase captions).
//! Neither service depends on the other; both depend on this crate, as
//! text-embeddings-inference's router depends on its backend crates.
//!
//! - [`engine`]: GGUF models (llama, gemma3), tokenizer, chat template, sampler, stop
//!   sequences, JSON-Schema constraints, the prefix cache; no protobuf, no async.
//! - [`core`]: a bounded queue of requests and the scheduler that interleaves the sequences
//!   in flight on one engine thread (continuous batching for llama on CPU).

pub mod core;
pub mod engine;
