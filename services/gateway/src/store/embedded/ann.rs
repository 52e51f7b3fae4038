//! Approximate search for the embedded store: an HNSW graph ([usearch]) over one vector per
//! image, `image + caption`.
//!
//! Why that one vector: the fused score with equal weights, `0.5·cos(q, image) +
//! 0.5·cos(q, caption)`, is `0.5·(q · (image + caption))` for unit vectors, so the graph's
//! inner-product order is the fused order itself (the PostgreSQL store does the same). A
//! search takes the graph's nearest [`candidates`] and the store scores them exactly.
//!
//! redb stays the one durable copy; the graph is derived from it and lives in memory, with
//! vectors in f16 (candidates are re-scored from the f32 originals). Building it costs about
//! one millisecond of a core per image (a million images: minutes), so it is also saved
//! beside the redb file ([`Ann::save`]: on a graceful stop and after every build) with the
//! `(seq, review version)` of each image it holds. The next open loads that file and
//! replays only what differs from redb (images added, deleted or re-captioned since the
//! save, a crash included), or builds afresh when the file is missing, damaged or too far
//! behind. Used from [`ANN_MIN_IMAGES`] images on: below that the exact scan is as fast.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

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

/// The saved graph and its key list, beside `images.redb`.
const GRAPH_FILE: &str = "images.hnsw";
const KEYS_FILE: &str = "images.hnsw.keys";
/// Format tag of the key list (bump it when the graph's parameters or layout change: an
/// old file is then rebuilt, not misread).
const KEYS_MAGIC: &[u8; 8] = b"mmcgrph1";

/// What a saved graph holds: `(seq, review version)` of each image. A caption correction
/// bumps the version and changes the caption vector, so a differing version means the
/// graph's vector is stale.
pub type SavedKeys = Vec<(u64, u64)>;

/// The graph (see the module docs), keyed by the images' `seq`.
pub struct Ann {
    index: Index,
}

fn ann_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(format!("approximate index: {e}"))
}

fn options(dimensions: usize) -> IndexOptions {
    IndexOptions {
        dimensions,
        metric: MetricKind::IP,
        quantization: ScalarKind::F16,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

impl Ann {
    /// A graph of `entries` (seq, vectors), built on every core: usearch's adds are safe to
    /// run concurrently (each takes one of the reserved thread slots).
    pub fn build(dimensions: usize, entries: &[(u64, &ImageVectors)]) -> Result<Self, StoreError> {
        let ann = Self { index: Index::new(&options(dimensions)).map_err(ann_error)? };
        ann.reserve(entries.len())?;
        let threads = crate::store::cores().min(THREADS);
        let chunk = entries.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = entries
                .chunks(chunk)
                .map(|part| scope.spawn(|| part.iter().try_for_each(|(seq, v)| ann.index.add(*seq, &v.fused()).map_err(ann_error))))
                .collect();
            workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err(ann_error("a build thread panicked"))))
        })?;
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

    /// Images in the graph.
    pub fn len(&self) -> usize {
        self.index.size()
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

    /// The seqs of the `candidates` nearest `query` by the fused score (usearch walks the
    /// graph with a breadth of at least as many: asking for more is a wider search).
    pub fn search(&self, query: &[f32], candidates: usize) -> Result<Vec<u64>, StoreError> {
        Ok(self.index.search(query, candidates).map_err(ann_error)?.keys)
    }

    /// Writes the graph and `keys` (what it holds) into `dir`, crash-safely: the key list
    /// is removed first and written last, so a key list on disk always describes the graph
    /// file beside it (and carries its length and CRC-32, so a damaged graph is noticed).
    /// The caller keeps the graph unchanged meanwhile and runs one save at a time.
    pub fn save(&self, dir: &Path, keys: &[(u64, u64)]) -> Result<(), StoreError> {
        let (graph, key_file) = (dir.join(GRAPH_FILE), dir.join(KEYS_FILE));
        match std::fs::remove_file(&key_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(ann_error(format!("removing {}: {e}", key_file.display()))),
            _ => sync_dir(dir)?,
        }
        let tmp = temp_path(&graph);
        self.index.save(&tmp.to_string_lossy()).map_err(ann_error)?;
        super::private(&tmp, 0o600)?;
        let (length, crc) = file_crc(&tmp)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| ann_error(format!("syncing {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &graph).map_err(|e| ann_error(format!("renaming {}: {e}", tmp.display())))?;
        let mut bytes = Vec::with_capacity(40 + keys.len() * 16);
        bytes.extend_from_slice(KEYS_MAGIC);
        for n in [self.index.dimensions() as u64, length, u64::from(crc), keys.len() as u64] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        for (seq, version) in keys {
            bytes.extend_from_slice(&seq.to_le_bytes());
            bytes.extend_from_slice(&version.to_le_bytes());
        }
        let tmp = temp_path(&key_file);
        (|| {
            let mut f = std::fs::File::create(&tmp)?;
            let _ = super::private(&tmp, 0o600);
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &key_file)
        })()
        .map_err(|e| ann_error(format!("writing {}: {e}", key_file.display())))?;
        sync_dir(dir)
    }

    /// The graph saved in `dir` and what it holds; `Ok(None)` when none was saved. A key
    /// list that does not match its graph file (length, CRC-32, dimensions, count) is an
    /// error: the caller rebuilds.
    pub fn load(dir: &Path, dimensions: usize) -> Result<Option<(Self, SavedKeys)>, StoreError> {
        let (graph, key_file) = (dir.join(GRAPH_FILE), dir.join(KEYS_FILE));
        let bytes = match std::fs::read(&key_file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ann_error(format!("reading {}: {e}", key_file.display()))),
        };
        let word = |i: usize| bytes.get(8 + i * 8..16 + i * 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        let (Some(dims), Some(length), Some(crc), Some(count)) = (word(0), word(1), word(2), word(3)) else {
            return Err(ann_error("the saved key list is truncated"));
        };
        if &bytes[..8] != KEYS_MAGIC || bytes.len() as u64 != 40 + count.saturating_mul(16) {
            return Err(ann_error("the saved key list is of another format or truncated"));
        }
        if dims != dimensions as u64 {
            return Err(ann_error(format!("the saved graph has {dims} dimensions, the store {dimensions}")));
        }
        if file_crc(&graph)? != (length, crc as u32) {
            return Err(ann_error("the saved graph does not match its key list (damaged or replaced)"));
        }
        let keys: SavedKeys = bytes[40..]
            .chunks_exact(16)
            .map(|c| (u64::from_le_bytes(c[..8].try_into().unwrap_or_default()), u64::from_le_bytes(c[8..].try_into().unwrap_or_default())))
            .collect();
        let index = Index::new(&options(dimensions)).map_err(ann_error)?;
        index.load(&graph.to_string_lossy()).map_err(ann_error)?;
        // Search breadth is ours, not whatever the file was saved with.
        index.change_expansion_search(EXPANSION_SEARCH);
        index.change_expansion_add(EXPANSION_ADD);
        if index.size() != keys.len() || index.dimensions() != dimensions {
            return Err(ann_error("the saved graph does not hold what its key list says"));
        }
        Ok(Some((Self { index }, keys)))
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    name.into()
}

/// Length and CRC-32 of a file, read in 1 MiB blocks.
fn file_crc(path: &Path) -> Result<(u64, u32), StoreError> {
    let err = |e: std::io::Error| ann_error(format!("reading {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(err)?;
    let (mut hasher, mut length, mut block) = (crc32fast::Hasher::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = file.read(&mut block).map_err(err)?;
        if n == 0 {
            return Ok((length, hasher.finalize()));
        }
        hasher.update(&block[..n]);
        length += n as u64;
    }
}

/// Makes renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ann_error(format!("syncing {}: {e}", dir.display())))
}

/// Removes graph files a crash left half-written (`save` writes under a temporary name).
pub fn remove_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with(GRAPH_FILE) || name.starts_with(KEYS_FILE)) && name.contains(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
