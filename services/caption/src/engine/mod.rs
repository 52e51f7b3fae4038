//! The caption engine: everything between encoder labels and a checked caption, with no
//! protobuf in sight. The language model itself is the text-generation engine
//! (`mmc_llm`), run in-process by the core.
//!
//! - [`vocabulary`]: which words name objects, and which words each class may be called by.
//! - [`brief`]: labels -> main subject, confidence, evidence, rules for the text.
//! - [`prompt`]: the few-shot conversation that asks the model to phrase the evidence.
//! - [`text`]: clean-up of decoded text.
//! - [`check`]: grounding, salience, hedging and form checks.
//! - [`template`]: the deterministic fallback caption.
//! - [`blip`]: the hub decoder, BLIP's text decoder over the BLIP vision encoder's patch
//!   latents (proved against `transformers` on a random-weight model; not yet served).

pub mod blip;
pub mod brief;
pub mod check;
pub mod prompt;
pub mod template;
pub mod text;
pub mod vocabulary;

pub use brief::{Brief, BriefConfig, Label, Mode};
pub use check::Rejection;
pub use vocabulary::Vocabulary;
