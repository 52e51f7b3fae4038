//! `mmc-gateway`: the only service that calls the others. It chains the model services
//! into the user flows and owns the image index.
//!
//! - [`grpc`]: the gRPC edge (protobuf <-> [`domain`], error -> status).
//! - [`http`]: the HTTP edge, its sibling (REST, the OpenAI-compatible API, the web UI;
//!   errors in OpenAI's shape).
//! - [`flows`]: the core: the chained flows (describe, index, search, meetings), stage by
//!   stage, and the request limits both edges share.
//! - [`domain`]: the plain types the flows take and return and the stores keep.
//! - [`upstream`]: the client edge: how a stage calls a model service (deadlines,
//!   retries, balancing), one method per RPC.
//! - [`store`]: the image index behind one trait (embedded redb by default), the meeting
//!   and thumbnail stores.

pub mod domain;
pub mod error;
pub mod flows;
pub mod grpc;
pub mod http;
pub mod store;
pub mod upstream;
