//! Approximate search for the embedded store: an HNSW graph ([usearch]) over one vector per
//! image, `image + caption`.
//!
//! Why that one vector: the fused score with equal weights, `0.5·cos(q, image) +
//! 0.5·cos(q, caption)`, is `0.5·(q · (image + caption))` for unit vectors, so the graph's
//! inner-product order is the fused order itself (the PostgreSQL store does the same). A
//! search takes the graph's nearest [`candidates`] and the store scores them exactly.
//!
//! The graph lives in memory beside the vectors and is rebuilt from redb when the store
//! opens (redb stays the one durable copy, so the graph can never disagree with it after a
//! crash); vectors are kept in f16 in the graph, since candidates are re-scored from the
//! f32 originals. Used from [`ANN_MIN_IMAGES`] images on: below that the exact scan is as
//! fast and needs no graph.

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::store::{ImageVectors, StoreError};

/// From this many images on, unfiltered searches with equal weights use the graph. (The
/// exact scan costs about 1.5 ms at 10 000 images here and grows linearly past the caches:
/// 39 ms at 100 000.)
pub const ANN_MIN_IMAGES: usize = 20_000;

/// HNSW graph degree and build/search breadth, above usearch's defaults (16, 128, 64):
/// random 384-dimensional vectors, the benchmark's worst case (no structure to find),
/// gave recall@10 0.32 at 30 000 images with the defaults and 0.90 with these (usearch's
/// Python package, f16); real embeddings cluster and are easier.
const CONNECTIVITY: usize = 32;
const EXPANSION_ADD: usize = 256;
const EXPANSION_SEARCH: usize = 400;

/// Concurrent searches the graph takes (searches hold the store's read lock, writes its
/// write lock, so adds never run beside searches). More than the runtime's threads.
const THREADS: usize = 64;

/// Neighbours taken from the graph for a search of `top_k` (re-scored exactly; the graph's
/// breadth is [`EXPANSION_SEARCH`] whatever is asked below it).
pub fn candidates(top_k: usize) -> usize {
    (top_k * 4).clamp(100, 1000)
}

/// The graph (see the module docs), keyed by the images' `seq`.
pub struct Ann {
    index: Index,
}

fn ann_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(format!("approximate index: {e}"))
}

impl Ann {
    /// A graph of `entries` (seq, vectors).
    pub fn build<'a>(dimensions: usize, entries: impl ExactSizeIterator<Item = (u64, &'a ImageVectors)>) -> Result<Self, StoreError> {
        let options = IndexOptions {
            dimensions,
            metric: MetricKind::IP,
            quantization: ScalarKind::F16,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let index = Index::new(&options).map_err(ann_error)?;
        let ann = Self { index };
        ann.reserve(entries.len())?;
        for (seq, vectors) in entries {
            ann.index.add(seq, &vectors.fused()).map_err(ann_error)?;
        }
        Ok(ann)
    }

    fn reserve(&self, more: usize) -> Result<(), StoreError> {
        let wanted = self.index.size() + more;
        if wanted > self.index.capacity() {
            // Grow by half at least, so a stream of single inserts does not reallocate each time.
            let capacity = wanted.max(self.index.capacity() * 3 / 2).max(1024);
            self.index.reserve_capacity_and_threads(capacity, THREADS).map_err(ann_error)?;
        }
        Ok(())
    }

    /// Adds (or replaces) the image at `seq`.
    pub fn add(&self, seq: u64, vectors: &ImageVectors) -> Result<(), StoreError> {
        self.remove(seq)?;
        self.reserve(1)?;
        self.index.add(seq, &vectors.fused()).map_err(ann_error)
    }

    /// Removes the image at `seq`, if it is there.
    pub fn remove(&self, seq: u64) -> Result<(), StoreError> {
        if self.index.contains(seq) {
            self.index.remove(seq).map_err(ann_error)?;
        }
        Ok(())
    }

    /// The vector stored for `seq` (f16 precision), if any.
    #[cfg(test)]
    pub fn vector(&self, seq: u64) -> Option<Vec<f32>> {
        let mut v = vec![0f32; self.index.dimensions()];
        matches!(self.index.get(seq, &mut v), Ok(n) if n > 0).then_some(v)
    }

    /// The seqs of the [`candidates`] nearest `query` by the fused score.
    pub fn search(&self, query: &[f32], top_k: usize) -> Result<Vec<u64>, StoreError> {
        Ok(self.index.search(query, candidates(top_k)).map_err(ann_error)?.keys)
    }
}
