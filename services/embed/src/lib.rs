//! The latent (embedding) service: text and images in one vector space.
//!
//! Three layers, as in text-embeddings-inference: [`handlers`] (protocol edge:
//! validation, error-to-status mapping) -> [`core`] (loaded models, dynamic batching)
//! -> [`engine`] (model code, no protobuf). Bundled profile: all-MiniLM-L6-v2 for text;
//! EfficientNet-Lite0 for images, mapped into the text space by ConSE
//! ([`engine::conse`]). The hub profile (CLIP, BLIP encoder) is not implemented yet.

pub mod core;
pub mod engine;
pub mod handlers;
