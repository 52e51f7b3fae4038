//! The chained flows. Each flow is a sequence of stages (calls to model services, see
//! [`crate::upstream`]) plus the gateway's own state (the image index, the meeting
//! store). The handlers validate requests and map errors; the flows do the work.

pub mod calls;
pub mod describe;
pub mod images;
pub mod meeting;
pub mod prompts;

use std::sync::Arc;

use crate::{
    store::{meetings::MeetingStore, thumbnails::ThumbnailStore, Fusion, ImageStore},
    upstream::{StagePolicy, Upstream},
};

/// Everything the flows need: the upstream services, the index and the policies.
pub struct Flows {
    pub embed: Upstream,
    pub caption: Upstream,
    pub speech: Upstream,
    pub textgen: Upstream,
    pub store: Arc<dyn ImageStore>,
    /// Thumbnails of the indexed images, for result pages.
    pub thumbnails: ThumbnailStore,
    pub policy: StagePolicy,
    /// How search scores combine the image vector and the caption vector.
    pub fusion: Fusion,
    /// Encoder labels asked for (and stored) per image.
    pub top_labels: u32,
    /// Summarized meetings and their segment vectors.
    pub meetings: MeetingStore,
    /// Versioned prompt templates of the meeting flows.
    pub prompts: prompts::PromptLibrary,
    pub meeting: meeting::MeetingSettings,
    /// Example-line vectors per prompt version (see [`meeting::ExampleCache`]).
    pub example_cache: meeting::ExampleCache,
}
