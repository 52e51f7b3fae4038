//! The caption service: an image-conditioned language decoder that turns the latent
//! service's image latents into alt text and descriptions.
//!
//! Three layers, as in the other model services: [`handlers`] (protocol edge: validation of
//! the latents, error-to-status mapping) -> [`core`] (attempts, grounding checks, fallback;
//! the language model's queue and interleaving scheduler come from `mmc_llm`) ->
//! [`engine`] (vocabulary, brief, prompt, checks, template; no protobuf).

pub mod core;
pub mod engine;
pub mod handlers;
