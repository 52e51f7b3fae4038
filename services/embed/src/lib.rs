//! The latent (embedding) service: text and images in one vector space.
//!
//! Three layers, as in text-embeddings-inference: [`handlers`] (protocol edge:
//! validation, error-to-status mapping) -> [`core`] (loaded models, dynamic batching)
//! -> [`engine`] (model code, no protobuf). Implemented so far: `EmbedText` and
//! `GetModelInfo` with the bundled text encoder (all-MiniLM-L6-v2). `EmbedImage` and
//! `EncodeImage` (image encoder, ConSE) answer UNIMPLEMENTED until the rest of issue #3.

pub mod core;
pub mod engine;
pub mod handlers;
