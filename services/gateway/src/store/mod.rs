//! Where the gateway keeps its state: indexed images (records, vectors, captions), their
//! thumbnails, and summarized meetings.
//!
//! Three traits, [`ImageStore`], [`MeetingStore`] and [`ThumbnailStore`], so the flows do
//! not care which engine holds the data. Two engines implement all three:
//! - [`embedded`] (the default): redb files on local disk, vectors searched in memory. One
//!   gateway process owns them: the laptop and single-node case.
//! - [`postgres`]: PostgreSQL with pgvector (`--store postgres://…`). Any number of gateway
//!   replicas share one database, so the gateway itself keeps no state.
//!
//! Every stored vector belongs to one embedding *space* (the text model that defines it); a
//! store refuses vectors and queries from another space, so switching models means
//! re-indexing instead of silently comparing unrelated vectors.

pub mod copy;
pub mod embedded;
pub mod postgres;
pub mod scan;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{Meeting, TextRevision, TextSource};

/// The embedding space of a store: every vector in it was made by this model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Model id of the text encoder that defines the space (e.g. `all-minilm-l6-v2`).
    pub model_id: String,
    /// Vector dimension.
    pub dimensions: u32,
}

impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} dimensions)", self.model_id, self.dimensions)
    }
}

/// A model that contributed to a stored image, as reported by the service that ran it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub id: String,
    pub family: String,
    pub profile: String,
    pub revision: String,
    pub dimensions: u32,
}

/// One encoder label kept with an image (shown in results, usable for debugging ranking).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub probability: f32,
    pub class_index: u32,
}

/// Everything stored for one image except its vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Stable id derived from the content hash (re-uploads map to the same id).
    pub image_id: String,
    /// sha256 of the encoded bytes, hex.
    pub content_hash: String,
    pub source_name: String,
    /// Alt-text caption written at indexing time.
    pub caption: String,
    pub labels: Vec<Label>,
    /// User metadata (exact-match search filters).
    pub metadata: BTreeMap<String, String>,
    /// Models that made the vectors and the caption.
    pub models: Vec<ModelRef>,
    pub indexed_at_unix_ms: i64,
    /// Insertion order, assigned by the store: ListImages pages by it (oldest first).
    #[serde(default)]
    pub seq: u64,
    /// Confidence and a person's review of the texts (records written before review existed
    /// read as machine texts that need no review).
    #[serde(default)]
    pub review: ImageReview,
}

/// What a person's review of an image keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageReview {
    /// Confidence of the machine caption's main subject.
    pub caption_confidence: f32,
    /// The machine was unsure and nobody has approved or corrected the text yet.
    pub needs_review: bool,
    /// Who wrote `caption`.
    pub caption_source: TextSource,
    /// A longer description a person wrote.
    pub description: String,
    /// Increases with every change ([`ImageStore::update`] checks it).
    pub version: u64,
    pub reviewed_by: String,
    pub reviewed_at_unix_ms: i64,
    /// Earlier texts, oldest first.
    pub history: Vec<TextRevision>,
}

/// The two vectors of an image, both unit length and in the store's [`Space`].
#[derive(Clone, Debug, PartialEq)]
pub struct ImageVectors {
    /// The image itself mapped into the space (embed.EmbedImage).
    pub image: Vec<f32>,
    /// The embedding of its caption (embed.EmbedText).
    pub caption: Vec<f32>,
}

impl ImageVectors {
    /// `image + caption`: the fused score with equal weights, `0.5·cos(q, image) +
    /// 0.5·cos(q, caption)`, is `0.5·(q · fused)` for unit vectors, so both stores' HNSW
    /// indexes hold this one vector per image (inner product) and rank by the fused score.
    pub fn fused(&self) -> Vec<f32> {
        self.image.iter().zip(&self.caption).map(|(i, c)| i + c).collect()
    }
}

/// How a query vector is scored against an image's two vectors.
#[derive(Clone, Copy, Debug)]
pub struct Fusion {
    /// Weight of the image vector's cosine; the caption vector gets `1 - image_weight`.
    pub image_weight: f32,
}

/// A similarity search.
#[derive(Clone, Debug)]
pub struct SearchQuery {
    pub vector: Vec<f32>,
    pub space: Space,
    pub top_k: usize,
    /// Hits scoring below this are dropped.
    pub score_threshold: f32,
    /// Every pair must be present in the image's metadata.
    pub metadata_filter: BTreeMap<String, String>,
    pub fusion: Fusion,
    /// Search breadth of an approximate (HNSW) search: how many neighbours the graph walk
    /// keeps (`ef`), all re-scored exactly. Wider finds more of the true top-k on hard data
    /// (random vectors) at more cost; `None` = [`DEFAULT_SEARCH_BREADTH`]. Exact scans and
    /// filtered searches ignore it; the embedded graph never walks narrower than 400.
    pub breadth: Option<usize>,
}

/// The search breadth when none is asked. Real embeddings cluster, and clustered vectors
/// give recall@10 1.000 at this breadth up to a million images; random 384-dimensional
/// vectors (the hardest case) need about 1 600 at 100 000 images for 0.95 (docs/gateway.md).
pub const DEFAULT_SEARCH_BREADTH: usize = 400;
/// The widest search breadth a query may ask for.
pub const MAX_SEARCH_BREADTH: usize = 4_000;

/// Neighbours an approximate search takes from its index for `top_k` results: at least
/// the breadth (`None` = [`DEFAULT_SEARCH_BREADTH`]) and four per result, at most
/// [`MAX_SEARCH_BREADTH`]. Both stores walk their graph this wide and re-score these.
pub fn ann_candidates(top_k: usize, breadth: Option<usize>) -> usize {
    (top_k * 4).max(breadth.unwrap_or(DEFAULT_SEARCH_BREADTH)).clamp(1, MAX_SEARCH_BREADTH)
}

/// How a store finds the candidates of an approximate search, for unfiltered searches with
/// equal weights (others scan exactly); the candidates are then scored exactly. The
/// embedded store uses either only from 20 000 images on (below it scans every image
/// exactly); the PostgreSQL store at any size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SearchIndex {
    /// An HNSW graph: fastest when vectors cluster, as real embeddings do. The embedded
    /// store builds it in the background (minutes per 100 000 images on two cores) and
    /// saves it beside the data; PostgreSQL keeps pgvector's in the database.
    #[default]
    Graph,
    /// Compact codes of every image, scanned whole: the same cost and recall however the
    /// vectors are spread, no build (see `store/scan.rs`). Held in the gateway's memory
    /// (about 480 bytes per image), also in each replica of a PostgreSQL-backed gateway.
    Scan,
}

impl std::str::FromStr for SearchIndex {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "graph" => Ok(Self::Graph),
            "scan" => Ok(Self::Scan),
            other => Err(format!("unknown search index {other:?} (graph or scan)")),
        }
    }
}

impl std::fmt::Display for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Graph => "graph",
            Self::Scan => "scan",
        })
    }
}

/// One page of [`ImageStore::list`].
#[derive(Clone, Debug)]
pub struct Page {
    pub images: Vec<ImageRecord>,
    /// `seq` to continue from, when more images follow.
    pub next: Option<u64>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Vectors or a query from another model than the one the index was built with.
    #[error(
        "the image index was built with {stored}, but the embed service now uses {offered}; \
         vectors of different models are not comparable: re-index the images (delete the index or use a new data directory)"
    )]
    SpaceMismatch { stored: Space, offered: Space },
    /// A vector whose length is not the space's dimension.
    #[error("vector of {got} values for a space of {want} dimensions")]
    Dimension { got: usize, want: usize },
    /// The image is not (or no longer) stored: deleted while a change was being made.
    #[error("no image with id {0:?}")]
    Missing(String),
    /// The record changed since the version a change was made on.
    #[error("image {image_id} has changed since version {expected} (now version {current}); reload it and apply the change again")]
    Conflict { image_id: String, expected: u64, current: u64 },
    /// The database cannot be reached (down, restarting, network): retry later. The
    /// message is for clients: it names no host or address.
    #[error("the {0} is unavailable; retry later")]
    Unavailable(&'static str),
    /// Text the engine cannot hold (PostgreSQL refuses the NUL character in text).
    #[error("text with a NUL character cannot be stored")]
    Unstorable,
    /// The engine failed (disk full, corrupt file...).
    #[error("image index storage failed: {0}")]
    Engine(String),
}

/// Cores to split a graph build, a scan or its coding over.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Cosine similarity of unit vectors, used by every scan of stored vectors. Computed in 8
/// independent lanes: a plain `zip().sum()` is one sequential float reduction that the
/// compiler may not reorder, hence not vectorize (measured: 5x slower).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Maps any engine error into [`StoreError::Engine`].
pub(crate) fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// The image index the gateway's search flows use.
///
/// Writes are durable when they return: a flow acknowledges an image to its client only
/// after [`ImageStore::insert`] succeeded, so no acknowledged image is lost in a crash.
/// The image index the gateway's search flows use.
///
/// Writes are durable when they return: a flow acknowledges an image to its client only
/// after [`ImageStore::insert`] succeeded, so no acknowledged image is lost in a crash.
#[async_trait::async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// The space of the stored vectors; `None` while the store is empty of any.
    async fn space(&self) -> Result<Option<Space>, StoreError>;
    /// Number of stored images.
    async fn count(&self) -> Result<u64, StoreError>;
    /// Number of stored images waiting for review (`review.needs_review`).
    async fn review_count(&self) -> Result<u64, StoreError>;
    /// The image with this id.
    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>, StoreError>;
    /// Stores an image (replacing one with the same id, which then moves to the end of the
    /// insertion order); returns it with `seq` set.
    async fn insert(&self, record: ImageRecord, vectors: ImageVectors, space: Space) -> Result<ImageRecord, StoreError> {
        let mut stored = self.insert_many(vec![(record, vectors)], space).await?;
        Ok(stored.pop().expect("one record in, one out"))
    }
    /// Stores many images in one transaction (one disk sync): bulk imports, copies between
    /// stores and benchmarks. The same as [`ImageStore::insert`] applied in order.
    async fn insert_many(&self, items: Vec<(ImageRecord, ImageVectors)>, space: Space) -> Result<Vec<ImageRecord>, StoreError>;
    /// Removes an image; false when there was none.
    async fn delete(&self, image_id: &str) -> Result<bool, StoreError>;
    /// Images in insertion order, from `seq` `after` (inclusive), at most `limit`.
    async fn list(&self, after: u64, limit: usize) -> Result<Page, StoreError>;
    /// As [`ImageStore::list`], with each image's vectors (for copying a store); the second
    /// value is the `seq` to continue from.
    async fn export(&self, after: u64, limit: usize) -> Result<(Vec<(ImageRecord, ImageVectors)>, Option<u64>), StoreError>;
    /// The best matches, best first, with their fused scores.
    async fn search(&self, query: SearchQuery) -> Result<Vec<(ImageRecord, f32)>, StoreError>;
    /// Replaces the record of a stored image in place (its `seq` and image vector kept),
    /// and its caption vector when one is given, provided its stored `review.version` is
    /// still `expected_version`; the stored record gets `expected_version + 1`. Durable
    /// when it returns, like [`ImageStore::insert`].
    async fn update(&self, record: ImageRecord, caption_vector: Option<Vec<f32>>, expected_version: u64) -> Result<ImageRecord, StoreError>;
    /// The review queue: images with `review.needs_review`, least confident first (then
    /// oldest), from position `offset`, at most `limit`; and whether more follow.
    async fn review_queue(&self, offset: usize, limit: usize) -> Result<(Vec<ImageRecord>, bool), StoreError>;
    /// Many images are about to be written at once ([`copy`]): the store may stop keeping
    /// its search index up to date row by row until [`ImageStore::end_bulk_load`], which
    /// builds it over all rows in one go (far cheaper than one graph insert per row).
    /// Searches stay correct meanwhile, only slower. Default: nothing to defer.
    async fn begin_bulk_load(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Builds what [`ImageStore::begin_bulk_load`] deferred. Idempotent: a store opened after
    /// an interrupted bulk load builds it too.
    async fn end_bulk_load(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Returns once the store's search index is ready. An embedded store loads or builds
    /// its graph in the background after opening (searches are exact, so slower, until
    /// then); benchmarks and tests wait for it. Default: always ready.
    async fn wait_for_index(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Writes what the store keeps only in memory (the embedded graph) so the next open
    /// starts fast; the gateway calls it on a graceful stop. Nothing is lost without it:
    /// the next open rebuilds from the durable records. Default: nothing to write.
    async fn persist(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A meeting as stored: what GetMeeting returns, plus one unit vector per segment.
pub struct StoredMeeting {
    pub meeting: Meeting,
    /// `vectors[i]` embeds `meeting.segments[i]`.
    pub vectors: Vec<Vec<f32>>,
    pub space: Space,
}

/// A change to a stored meeting: edits it and says whether to write it (false: the change
/// was refused, nothing is written). See [`MeetingStore::update`].
pub type MeetingChange = Box<dyn FnOnce(&mut Meeting) -> bool + Send + 'static>;

/// Summarized meetings (transcript, notes, review) and the embeddings of their segments
/// (for AskMeeting's retrieval). Writes are durable when they return.
#[async_trait::async_trait]
pub trait MeetingStore: Send + Sync + 'static {
    /// Stores (or replaces) a meeting with one vector per segment.
    async fn put(&self, meeting: &Meeting, vectors: &[Vec<f32>], space: &Space) -> Result<(), StoreError>;
    /// The meeting with this id, with its vectors.
    async fn get(&self, meeting_id: &str) -> Result<Option<StoredMeeting>, StoreError>;
    /// Every stored meeting, newest first.
    async fn list(&self) -> Result<Vec<Meeting>, StoreError>;
    /// Deletes a meeting and its vectors; false when there was none.
    async fn delete(&self, meeting_id: &str) -> Result<bool, StoreError>;
    /// Changes a stored meeting atomically: reads it, lets `change` edit it, and writes it
    /// back only when `change` returns true. Changes to one meeting run one at a time (on
    /// every gateway sharing the store), so a change always sees the one before it: two
    /// reviewers' edits are never interleaved and lost. `Ok(None)` when there is no such
    /// meeting. Callers use the typed [`update_meeting`].
    async fn update(&self, meeting_id: &str, change: MeetingChange) -> Result<Option<Meeting>, StoreError>;
}

/// Checks a meeting's vectors before they are stored (every engine the same).
fn check_meeting_vectors(meeting: &Meeting, vectors: &[Vec<f32>], space: &Space) -> Result<(), StoreError> {
    if vectors.len() != meeting.segments.len() {
        return Err(StoreError::Engine(format!("{} vectors for {} segments", vectors.len(), meeting.segments.len())));
    }
    if let Some(v) = vectors.iter().find(|v| v.len() != space.dimensions as usize) {
        return Err(StoreError::Dimension { got: v.len(), want: space.dimensions as usize });
    }
    Ok(())
}

/// Vectors as stored by both engines: little-endian f32, one after another.
fn floats_to_bytes<'a>(vectors: impl IntoIterator<Item = &'a Vec<f32>>) -> Vec<u8> {
    vectors.into_iter().flatten().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`floats_to_bytes`], cut into vectors of `dimensions` (also how
/// `mmc-store bench --vectors` reads a file of embeddings).
pub fn bytes_to_vectors(bytes: &[u8], dimensions: usize) -> Vec<Vec<f32>> {
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    floats.chunks(dimensions.max(1)).map(<[f32]>::to_vec).collect()
}

/// [`MeetingStore::update`] with a change that refuses with an error of its own: the error
/// comes back as `Err`, and nothing is written.
pub async fn update_meeting<E>(
    store: &dyn MeetingStore,
    meeting_id: &str,
    change: impl FnOnce(&mut Meeting) -> Result<(), E> + Send + 'static,
) -> Result<Option<Meeting>, E>
where
    E: From<StoreError> + Send + 'static,
{
    let refused = Arc::new(std::sync::Mutex::new(None));
    let slot = refused.clone();
    let change: MeetingChange = Box::new(move |meeting| match change(meeting) {
        Ok(()) => true,
        Err(e) => {
            *slot.lock().unwrap() = Some(e);
            false
        }
    });
    let updated = store.update(meeting_id, change).await?;
    let refused = refused.lock().unwrap().take();
    match refused {
        Some(e) => Err(e),
        None => Ok(updated),
    }
}

/// Thumbnails of indexed images (a small JPEG per image id) for showing search results.
///
/// Kept apart from [`ImageStore`] on purpose: a thumbnail is a few tens of kilobytes that
/// the gateway serves itself, read only when a result is shown. The originals are not kept.
#[async_trait::async_trait]
pub trait ThumbnailStore: Send + Sync + 'static {
    /// Stores (or replaces) the thumbnail of `image_id`, durably.
    async fn put(&self, image_id: &str, jpeg: Vec<u8>) -> Result<(), StoreError>;
    /// The thumbnail of `image_id` (JPEG bytes).
    async fn get(&self, image_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes the thumbnail of `image_id`, if any.
    async fn delete(&self, image_id: &str) -> Result<(), StoreError>;
}

/// The three stores of one gateway, on one engine.
#[derive(Clone)]
pub struct Stores {
    pub images: Arc<dyn ImageStore>,
    pub meetings: Arc<dyn MeetingStore>,
    pub thumbnails: Arc<dyn ThumbnailStore>,
}

/// Where the stores live: `--store` / `MMC_STORE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// redb files under a directory (`redb:PATH`, or a plain path).
    Embedded(std::path::PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`: libpq's URL syntax, with
    /// its `sslmode`, `sslrootcert`… parameters).
    Postgres(String),
}

impl Location {
    /// Parses `--store`; empty means the embedded store under `data_dir`.
    pub fn parse(store: &str, data_dir: &std::path::Path) -> Self {
        if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            Location::Postgres(store.to_string())
        } else if store.is_empty() {
            Location::Embedded(data_dir.to_path_buf())
        } else {
            Location::Embedded(store.strip_prefix("redb:").unwrap_or(store).into())
        }
    }

    /// For logs and messages: a database URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            Location::Embedded(dir) => format!("redb:{}", dir.display()),
            Location::Postgres(url) => postgres::redact(url),
        }
    }
}

impl Stores {
    /// Opens (or creates) the stores at `location`; for PostgreSQL, applies the schema's
    /// migrations first.
    pub async fn open(location: &Location) -> Result<Self, StoreError> {
        Self::open_with(location, SearchIndex::default()).await
    }

    /// [`Self::open`], searching through `index`.
    pub async fn open_with(location: &Location, index: SearchIndex) -> Result<Self, StoreError> {
        match location {
            Location::Embedded(dir) => embedded::open(dir, index),
            Location::Postgres(url) => postgres::open(url, index).await,
        }
    }
}
