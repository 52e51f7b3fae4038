//! `mmc-gateway`: the only service that calls the others. It chains the model services
//! into the user flows and owns the image index.
//!
//! - [`handlers`]: the gRPC edge (validation, error -> status).
//! - [`http`]: the HTTP edge (OpenAI-compatible API, errors in OpenAI's shape).
//! - [`flows`]: the chained flows (describe, index, search), stage by stage.
//! - [`upstream`]: how a stage calls a model service (deadlines, retries, balancing).
//! - [`store`]: the image index behind one trait (embedded redb by default).

pub mod error;
pub mod flows;
pub mod handlers;
pub mod http;
pub mod store;
pub mod upstream;
