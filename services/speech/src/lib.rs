//! The speech-to-text service (Whisper), in three layers as every model service here:
//!
//! - [`handlers`]: the protocol edge. Validates requests, spools the client-streamed upload
//!   to disk, maps results to protobuf (including rendered SRT/WebVTT/JSON) and errors to
//!   gRPC statuses, once.
//! - [`core`]: the inference core. A pool of whisper.cpp decoder states over one loaded
//!   model, a bounded queue, per-request jobs that decode, chunk, transcribe and stream
//!   segments, with cancellation and the hallucination guards.
//! - [`router`]: part of the core. Which loaded model (English-only or multilingual)
//!   transcribes a request, by its language, detected first when none is given.
//! - [`engine`]: audio decoding/resampling, voice-activity chunking and the Whisper model.
//!   No protobuf.
//!
//! [`render`] turns segments into the subtitle and transcript formats.

pub mod core;
pub mod engine;
pub mod handlers;
pub mod render;
pub mod router;
