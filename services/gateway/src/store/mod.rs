//! The image index: where indexed images, their vectors and their captions live.
//!
//! One trait, [`ImageStore`], so the flows do not care which engine holds the vectors:
//! [`embedded::EmbeddedStore`] (the default: a redb file on local disk, searched exactly in
//! memory) today, an external vector database (Qdrant) for deployments that outgrow one
//! node. Every stored vector belongs to one embedding *space* (the text model that defines
//! it); a store refuses vectors and queries from another space, so switching models means
//! re-indexing instead of silently comparing unrelated vectors.

pub mod embedded;
mod legacy;
pub mod meetings;
pub mod thumbnails;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{TextRevision, TextSource};

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
    /// The engine failed (disk full, corrupt file...).
    #[error("image index storage failed: {0}")]
    Engine(String),
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

/// Restricts `path` to its owner: the stores hold transcripts, captions and photos'
/// thumbnails, which other users of the machine have no business reading. (Existing files
/// of earlier versions, written 0644 in 0755 directories, are tightened on open too.) A
/// volume this process does not own (some container setups) keeps its mode, with a warning:
/// refusing to start would protect nothing.
fn private(path: &std::path::Path, mode: u32) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), "could not restrict to its owner: {e}");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Opens (or creates) redb file `file` in directory `dir` and runs `create_tables` in one
/// committed transaction, so that a fresh file reads as empty tables.
pub(crate) fn open_redb(
    dir: &std::path::Path,
    file: &str,
    create_tables: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::TableError>,
) -> Result<redb::Database, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(file);
    let db = redb::Database::create(&path).map_err(|e| StoreError::Engine(format!("opening {}: {e}", path.display())))?;
    private(dir, 0o700)?;
    private(&path, 0o600)?;
    let txn = db.begin_write().map_err(engine)?;
    create_tables(&txn).map_err(engine)?;
    txn.commit().map_err(engine)?;
    Ok(db)
}

/// The image index the gateway's search flows use.
///
/// Writes are durable when they return: a flow acknowledges an image to its client only
/// after [`ImageStore::insert`] succeeded, so no acknowledged image is lost in a crash.
#[async_trait::async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// The space of the stored vectors; `None` while the store is empty of any.
    fn space(&self) -> Option<Space>;
    /// Number of stored images.
    fn count(&self) -> usize;
    /// Number of stored images waiting for review (`review.needs_review`).
    fn review_count(&self) -> usize;
    /// The image with this id.
    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>, StoreError>;
    /// Stores an image (replacing one with the same id); returns it with `seq` set.
    async fn insert(&self, record: ImageRecord, vectors: ImageVectors, space: Space) -> Result<ImageRecord, StoreError>;
    /// Removes an image; false when there was none.
    async fn delete(&self, image_id: &str) -> Result<bool, StoreError>;
    /// Images in insertion order, from `seq` `after` (inclusive), at most `limit`.
    async fn list(&self, after: u64, limit: usize) -> Result<Page, StoreError>;
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
}
