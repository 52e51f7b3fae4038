//! The chained flows. Each flow is a sequence of stages (calls to model services, see
//! [`crate::upstream`]) plus the gateway's own state (the image index). Flows know the
//! upstream contracts but not the gateway's own RPC messages: the handlers translate.

pub mod calls;
pub mod describe;
pub mod images;

use std::sync::Arc;

use crate::{
    store::{Fusion, ImageStore},
    upstream::{StagePolicy, Upstream},
};

/// Everything the flows need: the upstream services, the index and the policies.
pub struct Flows {
    pub embed: Upstream,
    pub caption: Upstream,
    pub store: Arc<dyn ImageStore>,
    pub policy: StagePolicy,
    /// How search scores combine the image vector and the caption vector.
    pub fusion: Fusion,
    /// Encoder labels asked for (and stored) per image.
    pub top_labels: u32,
}
