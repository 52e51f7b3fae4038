//! The chained flows: the gateway's core. Each flow is a sequence of stages (calls to model
//! services, see [`crate::upstream`]) plus the gateway's own state (the image index, the
//! meeting store). Flows take and return the gateway's own types ([`crate::domain`]) and
//! check every request against the limits here, so the two protocol edges share one
//! validation and one set of messages; the edges only translate and map errors.

pub mod describe;
pub mod images;
pub mod meeting;
pub mod prompts;
pub mod review;

use std::sync::Arc;

use crate::{
    store::{Fusion, ImageStore, MeetingStore, ThumbnailStore},
    upstream::Upstreams,
};

/// Everything the flows need: the upstream services, the index and the policies.
pub struct Flows {
    /// The model services and how they are called.
    pub upstream: Upstreams,
    pub store: Arc<dyn ImageStore>,
    /// Thumbnails of the indexed images, for result pages.
    pub thumbnails: Arc<dyn ThumbnailStore>,
    /// How search scores combine the image vector and the caption vector.
    pub fusion: Fusion,
    /// Search breadth of approximate image searches (`--search-breadth`).
    pub search_breadth: usize,
    /// Summarized meetings and their segment vectors.
    pub meetings: Arc<dyn MeetingStore>,
    /// Versioned prompt templates of the meeting flows.
    pub prompts: prompts::PromptLibrary,
    pub meeting: meeting::MeetingSettings,
    /// Example-line vectors per prompt version (see [`meeting::ExampleCache`]).
    pub example_cache: meeting::ExampleCache,
}

/// Limits of the requests the flows take (one source for both edges and the OpenAPI
/// document).
pub mod limits {
    /// Largest `top_k` of a search.
    pub const MAX_TOP_K: u32 = 100;
    /// Largest ListImages page.
    pub const MAX_PAGE_SIZE: u32 = 500;
    /// Longest text query, in characters (the text model truncates far earlier; this bounds work).
    pub const MAX_QUERY_CHARS: usize = 2000;
    /// Metadata bounds per image: entries, key length, value length.
    pub const MAX_METADATA: (usize, usize, usize) = (32, 128, 1024);
    /// Most caption modes in one DescribeImage.
    pub const MAX_MODES: usize = 4;
    /// Longest meeting title, in characters.
    pub const MAX_TITLE_CHARS: usize = 200;
    /// Longest AskMeeting question, in characters.
    pub const MAX_QUESTION_CHARS: usize = 1000;
    /// Most transcript passages AskMeeting may retrieve.
    pub const MAX_ASK_TOP_K: u32 = 20;
    /// Longest alt text a person may set (125 or fewer is the guidance).
    pub const MAX_ALT_TEXT_CHARS: usize = 1000;
    /// Longest image description a person may set.
    pub const MAX_DESCRIPTION_CHARS: usize = 4000;
    /// Longest reviewer name.
    pub const MAX_REVIEWER_CHARS: usize = 128;
    /// Longest decision or action-item text a person may set.
    pub const MAX_ITEM_CHARS: usize = 500;
    /// Longest owner or due date a person may set.
    pub const MAX_OWNER_CHARS: usize = 64;
}
