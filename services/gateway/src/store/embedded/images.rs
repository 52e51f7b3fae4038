//! The default image index: a [redb](https://docs.rs/redb) file on local disk, searched
//! exactly in memory, or through an HNSW graph (or a scan of codes) past [`ANN_MIN_IMAGES`]
//! images.
//!
//! Why this shape: redb is a maintained, ACID, crash-safe embedded key-value engine (a
//! committed transaction survives a crash or power loss), so durability is not ours to get
//! right. The vectors are also held in memory and scanned exactly: a flat scan of 10 000
//! images of 384 dimensions is about 8 M multiply-adds, a few milliseconds, with perfect
//! recall and no index to rebuild. Past [`ANN_MIN_IMAGES`] images, unfiltered searches with
//! equal weights go through an HNSW graph of the fused vectors ([`super::ann`]), loaded
//! from its saved file (or built) off the lock after the store opens, so a large library
//! serves exact searches at once and approximate ones seconds later; filtered searches and
//! other weights stay exact. With [`SearchIndex::Scan`] the graph is replaced by codes of
//! the same fused vectors, made at open and scanned whole ([`crate::store::scan`]).
//!
//! Layout (all written in one transaction per change):
//! - `images`: image id -> JSON [`ImageRecord`]
//! - `vectors`: image id -> image vector ‖ caption vector, little-endian f32
//! - `order`: insertion seq -> image id (ListImages pages)
//! - `meta`: `space` -> JSON [`Space`], `next_seq` -> decimal

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::ann::{Ann, SavedKeys, ANN_MIN_IMAGES};
use super::open_redb;
use crate::store::{
    bytes_to_vectors, dot, engine, floats_to_bytes,
    scan::{Scan, SHORTLIST_PER_CANDIDATE},
    ImageRecord, ImageStore, ImageVectors, Page, SearchIndex, SearchQuery, Space, StoreError,
};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const VECTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("vectors");
const ORDER: TableDefinition<u64, &str> = TableDefinition::new("order");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// One image as held in memory.
struct Entry {
    record: ImageRecord,
    vectors: ImageVectors,
}

/// The in-memory view, always equal to the last committed state on disk.
#[derive(Default)]
struct State {
    space: Option<Space>,
    next_seq: u64,
    by_seq: BTreeMap<u64, Arc<Entry>>,
    seq_of: HashMap<String, u64>,
    /// Records with `review.needs_review`, kept with every change (a gauge reads it).
    needs_review: usize,
    /// The approximate index, once the store is large enough (see [`super::ann`]).
    ann: Option<Ann>,
    /// How approximate searches find their candidates.
    index: SearchIndex,
    /// The codes scanned instead of a graph, with [`SearchIndex::Scan`] (see
    /// [`crate::store::scan`]): kept current from the first image on, as coding is cheap.
    scan: Option<Scan>,
    /// A build or change of the graph failed: searches stay exact until the next open.
    ann_failed: bool,
    /// A graph being loaded or built off the lock ([`GraphJob`]): its generation, and the
    /// seqs changed since its snapshot, replayed on it when it is installed.
    ann_pending: Option<(u64, Vec<u64>)>,
    ann_generation: u64,
    /// Between `begin_bulk_load` and `end_bulk_load`: no graph, it is built once at the end.
    bulk_loading: bool,
    /// Changes applied to the graph since it was last saved.
    ann_unsaved: usize,
    /// How the graph came: loaded from its file with this many changes replayed, or built
    /// (`None`).
    ann_replayed: Option<usize>,
}

impl State {
    /// Keeps the graph in step with a change to `seq` already committed to disk and made in
    /// `by_seq`. A graph that fails is dropped, not the change: searches fall back to the
    /// exact scan.
    fn ann_touch(&mut self, seq: u64) {
        if self.index == SearchIndex::Scan {
            let dimensions = self.space.as_ref().map_or(0, |s| s.dimensions as usize);
            let scan = self.scan.get_or_insert_with(|| Scan::new(dimensions));
            match self.by_seq.get(&seq) {
                Some(entry) => scan.add(seq, &entry.vectors),
                None => scan.remove(seq),
            }
            return;
        }
        if let Some((_, touched)) = &mut self.ann_pending {
            touched.push(seq);
            return;
        }
        let Some(ann) = &self.ann else { return };
        let result = match self.by_seq.get(&seq) {
            Some(entry) => ann.add(seq, &entry.vectors),
            None => ann.remove(seq),
        };
        match result {
            Ok(()) => self.ann_unsaved += 1,
            Err(e) => {
                tracing::warn!("the approximate index failed, searches are exact until the next start: {e}");
                self.ann = None;
                self.ann_failed = true;
            }
        }
    }

    /// Whether a graph should be loaded or built now.
    fn graph_due(&self) -> bool {
        self.index == SearchIndex::Graph
            && self.ann.is_none()
            && !self.ann_failed
            && self.ann_pending.is_none()
            && !self.bulk_loading
            && self.by_seq.len() >= ANN_MIN_IMAGES
    }
}

/// What a graph of `entries` holds (see [`SavedKeys`]).
fn saved_keys<'a>(entries: impl Iterator<Item = (&'a u64, &'a Arc<Entry>)>) -> SavedKeys {
    entries.map(|(seq, e)| (*seq, e.record.review.version)).collect()
}

/// Loads (or builds) the graph from a snapshot of the images, off the store's lock, and
/// installs it with the changes made meanwhile.
struct GraphJob {
    generation: u64,
    snapshot: Vec<(u64, Arc<Entry>)>,
    dimensions: usize,
    /// Try the saved graph first (at open); a bulk load's end builds afresh.
    use_saved: bool,
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    save_lock: Arc<Mutex<()>>,
}

impl GraphJob {
    fn run(self) {
        let started = Instant::now();
        let prepared = self.prepare();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Superseded: a bulk load began meanwhile (and builds its own at its end).
        let Some((_, touched)) = state.ann_pending.take_if(|(generation, _)| *generation == self.generation) else {
            return;
        };
        match prepared {
            Ok((ann, replayed)) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::info!(images = ann.len(), elapsed_ms, replayed, changed_meanwhile = touched.len(), "approximate index ready");
                state.ann = Some(ann);
                state.ann_replayed = replayed;
                state.ann_unsaved = 0;
                for seq in touched {
                    state.ann_touch(seq);
                }
            }
            Err(e) => {
                tracing::warn!("the approximate index could not be built, searches stay exact: {e}");
                state.ann_failed = true;
            }
        }
    }

    /// The graph and, when it was loaded, how many changes were replayed on it.
    fn prepare(&self) -> Result<(Ann, Option<usize>), StoreError> {
        // One writer of the graph files at a time (a shutdown's save, another job).
        let _files = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Only when a save is due: a graph loaded with nothing to replay is not written again.
        let save = |ann: &Ann| {
            if let Err(e) = ann.save(&self.dir, &saved_keys(self.snapshot.iter().map(|(seq, e)| (seq, e)))) {
                tracing::warn!("saving the approximate index failed (the next start builds it again): {e}");
            }
        };
        if self.use_saved {
            match Ann::load(&self.dir, self.dimensions) {
                Ok(Some((ann, saved))) => match replay(&ann, &saved, &self.snapshot)? {
                    Some(changes) => {
                        if changes > 0 {
                            save(&ann);
                        }
                        return Ok((ann, Some(changes)));
                    }
                    None => tracing::info!("the saved approximate index is far behind the store: building it afresh"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!("the saved approximate index is not usable, building it afresh: {e}"),
            }
        }
        let entries: Vec<(u64, &ImageVectors)> = self.snapshot.iter().map(|(seq, e)| (*seq, &e.vectors)).collect();
        let ann = Ann::build(self.dimensions, &entries)?;
        save(&ann);
        Ok((ann, None))
    }
}

/// Brings a loaded graph in step with `snapshot`: removes the images gone since the save,
/// adds the new and re-captioned ones. `None` (nothing done) when more than a quarter of the
/// images differ: building afresh on every core is then faster than adding one by one.
fn replay(ann: &Ann, saved: &SavedKeys, snapshot: &[(u64, Arc<Entry>)]) -> Result<Option<usize>, StoreError> {
    let saved: HashMap<u64, u64> = saved.iter().copied().collect();
    let stale: Vec<&(u64, Arc<Entry>)> = snapshot.iter().filter(|(seq, e)| saved.get(seq) != Some(&e.record.review.version)).collect();
    let present: HashSet<u64> = snapshot.iter().map(|(seq, _)| *seq).collect();
    let gone: Vec<u64> = saved.keys().filter(|seq| !present.contains(seq)).copied().collect();
    let changes = stale.len() + gone.len();
    if changes > snapshot.len() / 4 {
        return Ok(None);
    }
    for seq in gone {
        ann.remove(seq)?;
    }
    for (seq, entry) in stale {
        ann.add(*seq, &entry.vectors)?;
    }
    Ok(Some(changes))
}

/// The embedded [`ImageStore`] (see the module docs).
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    state: Arc<RwLock<State>>,
    /// Serialises writers (see [`ImageStore::insert`]).
    writer: tokio::sync::Mutex<()>,
    /// Serialises writers of the saved graph's files.
    save_lock: Arc<Mutex<()>>,
}

fn vector_bytes(v: &ImageVectors) -> Vec<u8> {
    floats_to_bytes([&v.image, &v.caption])
}

fn vectors_from(bytes: &[u8], dimensions: usize) -> Result<ImageVectors, StoreError> {
    if bytes.len() != dimensions * 8 {
        return Err(StoreError::Engine(format!("stored vectors have {} bytes, expected {}", bytes.len(), dimensions * 8)));
    }
    let mut two = bytes_to_vectors(bytes, dimensions).into_iter();
    let (image, caption) = (two.next().unwrap_or_default(), two.next().unwrap_or_default());
    Ok(ImageVectors { image, caption })
}

impl EmbeddedStore {
    /// Opens (or creates) the index in directory `dir` and loads it into memory, searching
    /// through the default [`SearchIndex`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, SearchIndex::default())
    }

    /// [`Self::open`] with the approximate search method chosen.
    pub fn open_with(dir: &Path, index: SearchIndex) -> Result<Self, StoreError> {
        let db = open_redb(dir, "images.redb", |txn| {
            txn.open_table(IMAGES)?;
            txn.open_table(VECTORS)?;
            txn.open_table(ORDER)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        let path = dir.join("images.redb");
        let mut state = Self::load(&db)?;
        tracing::info!(path = %path.display(), images = state.by_seq.len(), "image index opened");
        state.index = index;
        if let (SearchIndex::Scan, Some(space)) = (index, &state.space) {
            let started = Instant::now();
            let entries: Vec<(u64, &ImageVectors)> = state.by_seq.iter().map(|(seq, e)| (*seq, &e.vectors)).collect();
            let scan = Scan::build(space.dimensions as usize, &entries);
            tracing::info!(images = scan.len(), elapsed_ms = started.elapsed().as_millis() as u64, "scan codes ready");
            state.scan = Some(scan);
        }
        super::ann::remove_temp_files(dir);
        let store = Self {
            db: Arc::new(db),
            path,
            state: Arc::new(RwLock::new(state)),
            writer: tokio::sync::Mutex::new(()),
            save_lock: Arc::new(Mutex::new(())),
        };
        store.start_graph_when_due(&mut store.state.write().unwrap(), true);
        Ok(store)
    }

    /// Starts loading or building the graph off the lock when the store is large enough
    /// and has none (searches stay exact meanwhile).
    fn start_graph_when_due(&self, state: &mut State, use_saved: bool) {
        if !state.graph_due() {
            return;
        }
        let job = self.graph_job(state, use_saved);
        if let Err(e) = std::thread::Builder::new().name("mmc-graph".into()).spawn(move || job.run()) {
            tracing::warn!("could not start building the approximate index, searches stay exact: {e}");
            state.ann_pending = None;
            state.ann_failed = true;
        }
    }

    fn graph_job(&self, state: &mut State, use_saved: bool) -> GraphJob {
        state.ann_generation += 1;
        state.ann_pending = Some((state.ann_generation, Vec::new()));
        GraphJob {
            generation: state.ann_generation,
            snapshot: state.by_seq.iter().map(|(seq, e)| (*seq, e.clone())).collect(),
            dimensions: state.space.as_ref().map_or(0, |s| s.dimensions as usize),
            use_saved,
            dir: self.dir().to_path_buf(),
            state: self.state.clone(),
            save_lock: self.save_lock.clone(),
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Where the index file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(db: &Database) -> Result<State, StoreError> {
        let txn = db.begin_read().map_err(engine)?;
        let meta = txn.open_table(META).map_err(engine)?;
        let mut state = State::default();
        if let Some(space) = meta.get("space").map_err(engine)? {
            state.space = Some(serde_json::from_str(space.value()).map_err(engine)?);
        }
        if let Some(next) = meta.get("next_seq").map_err(engine)? {
            state.next_seq = next.value().parse().map_err(engine)?;
        }
        let images = txn.open_table(IMAGES).map_err(engine)?;
        let vectors = txn.open_table(VECTORS).map_err(engine)?;
        let order = txn.open_table(ORDER).map_err(engine)?;
        let dims = state.space.as_ref().map_or(0, |s| s.dimensions as usize);
        for row in order.iter().map_err(engine)? {
            let (seq, id) = row.map_err(engine)?;
            let (seq, id) = (seq.value(), id.value().to_string());
            let record = images.get(id.as_str()).map_err(engine)?.ok_or_else(|| StoreError::Engine(format!("image {id} listed but missing")))?;
            let mut record: ImageRecord = serde_json::from_slice(record.value()).map_err(engine)?;
            record.seq = seq;
            let bytes = vectors.get(id.as_str()).map_err(engine)?.ok_or_else(|| StoreError::Engine(format!("vectors of {id} missing")))?;
            let vectors = vectors_from(bytes.value(), dims)?;
            state.seq_of.insert(id, seq);
            state.needs_review += usize::from(record.review.needs_review);
            state.by_seq.insert(seq, Arc::new(Entry { record, vectors }));
        }
        Ok(state)
    }

    fn check_space(state: &State, offered: &Space) -> Result<(), StoreError> {
        match &state.space {
            Some(stored) if stored != offered => Err(StoreError::SpaceMismatch { stored: stored.clone(), offered: offered.clone() }),
            _ => Ok(()),
        }
    }

    async fn insert_batch(&self, items: Vec<(ImageRecord, ImageVectors)>, space: Space) -> Result<Vec<ImageRecord>, StoreError> {
        let dims = space.dimensions as usize;
        for (_, vectors) in &items {
            for v in [&vectors.image, &vectors.caption] {
                if v.len() != dims {
                    return Err(StoreError::Dimension { got: v.len(), want: dims });
                }
            }
        }
        // One writer at a time: redb serialises write transactions anyway, and holding the
        // order lets the in-memory state be updated in commit order.
        let _writer = self.writer.lock().await;
        // Assign seqs and find the records each insert replaces (earlier ones in the batch
        // included).
        let mut plan: Vec<(Option<u64>, ImageRecord, ImageVectors)> = Vec::with_capacity(items.len());
        let next_seq = {
            let state = self.state.read().unwrap();
            Self::check_space(&state, &space)?;
            let mut latest: HashMap<String, u64> = HashMap::new();
            let mut next = state.next_seq;
            for (mut record, vectors) in items {
                let previous = latest.get(&record.image_id).copied().or_else(|| state.seq_of.get(&record.image_id).copied());
                record.seq = next;
                latest.insert(record.image_id.clone(), next);
                next += 1;
                plan.push((previous, record, vectors));
            }
            next
        };
        // (replaced seq, seq, id, record JSON, vector bytes) per image.
        type Row = (Option<u64>, u64, String, Vec<u8>, Vec<u8>);
        let rows: Vec<Row> = plan
            .iter()
            .map(|(previous, r, v)| Ok((*previous, r.seq, r.image_id.clone(), serde_json::to_vec(r).map_err(engine)?, vector_bytes(v))))
            .collect::<Result<_, StoreError>>()?;
        let space_json = serde_json::to_string(&space).map_err(engine)?;
        self.write(move |txn| {
            let mut images = txn.open_table(IMAGES).map_err(engine)?;
            let mut vectors = txn.open_table(VECTORS).map_err(engine)?;
            let mut order = txn.open_table(ORDER).map_err(engine)?;
            for (previous, seq, id, json, bytes) in &rows {
                images.insert(id.as_str(), json.as_slice()).map_err(engine)?;
                vectors.insert(id.as_str(), bytes.as_slice()).map_err(engine)?;
                if let Some(old) = previous {
                    order.remove(*old).map_err(engine)?;
                }
                order.insert(*seq, id.as_str()).map_err(engine)?;
            }
            let mut meta = txn.open_table(META).map_err(engine)?;
            meta.insert("space", space_json.as_str()).map_err(engine)?;
            meta.insert("next_seq", next_seq.to_string().as_str()).map_err(engine)?;
            Ok(())
        })
        .await?;
        let mut state = self.state.write().unwrap();
        state.space = Some(space);
        let mut stored = Vec::with_capacity(plan.len());
        for (previous, record, vectors) in plan {
            if let Some(old) = previous.and_then(|old| state.by_seq.remove(&old)) {
                state.needs_review -= usize::from(old.record.review.needs_review);
                state.ann_touch(old.record.seq);
            }
            state.needs_review += usize::from(record.review.needs_review);
            state.seq_of.insert(record.image_id.clone(), record.seq);
            state.by_seq.insert(record.seq, Arc::new(Entry { record: record.clone(), vectors }));
            state.ann_touch(record.seq);
            stored.push(record);
        }
        state.next_seq = next_seq;
        self.start_graph_when_due(&mut state, false);
        Ok(stored)
    }

    /// Runs a write transaction off the async threads (commit waits for the disk).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(engine)?;
            let out = f(&txn)?;
            txn.commit().map_err(engine)?;
            Ok(out)
        })
        .await
        .map_err(engine)?
    }
}

#[async_trait::async_trait]
impl ImageStore for EmbeddedStore {
    async fn space(&self) -> Result<Option<Space>, StoreError> {
        Ok(self.state.read().unwrap().space.clone())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.state.read().unwrap().by_seq.len() as u64)
    }

    async fn review_count(&self) -> Result<u64, StoreError> {
        Ok(self.state.read().unwrap().needs_review as u64)
    }

    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let state = self.state.read().unwrap();
        Ok(state.seq_of.get(image_id).and_then(|s| state.by_seq.get(s)).map(|e| e.record.clone()))
    }

    async fn insert_many(&self, items: Vec<(ImageRecord, ImageVectors)>, space: Space) -> Result<Vec<ImageRecord>, StoreError> {
        self.insert_batch(items, space).await
    }

    async fn delete(&self, image_id: &str) -> Result<bool, StoreError> {
        let _writer = self.writer.lock().await;
        let Some(seq) = self.state.read().unwrap().seq_of.get(image_id).copied() else {
            return Ok(false);
        };
        let id = image_id.to_string();
        self.write(move |txn| {
            txn.open_table(IMAGES).map_err(engine)?.remove(id.as_str()).map_err(engine)?;
            txn.open_table(VECTORS).map_err(engine)?.remove(id.as_str()).map_err(engine)?;
            txn.open_table(ORDER).map_err(engine)?.remove(seq).map_err(engine)?;
            Ok(())
        })
        .await?;
        let mut state = self.state.write().unwrap();
        state.seq_of.remove(image_id);
        if let Some(old) = state.by_seq.remove(&seq) {
            state.needs_review -= usize::from(old.record.review.needs_review);
        }
        state.ann_touch(seq);
        Ok(true)
    }

    async fn list(&self, after: u64, limit: usize) -> Result<Page, StoreError> {
        let state = self.state.read().unwrap();
        let mut rows = state.by_seq.range(after..);
        let images: Vec<ImageRecord> = rows.by_ref().take(limit).map(|(_, e)| e.record.clone()).collect();
        let next = rows.next().map(|(seq, _)| *seq);
        Ok(Page { images, next })
    }

    async fn export(&self, after: u64, limit: usize) -> Result<(Vec<(ImageRecord, ImageVectors)>, Option<u64>), StoreError> {
        let state = self.state.read().unwrap();
        let mut rows = state.by_seq.range(after..);
        let images = rows.by_ref().take(limit).map(|(_, e)| (e.record.clone(), e.vectors.clone())).collect();
        Ok((images, rows.next().map(|(seq, _)| *seq)))
    }

    async fn update(&self, mut record: ImageRecord, caption_vector: Option<Vec<f32>>, expected_version: u64) -> Result<ImageRecord, StoreError> {
        let _writer = self.writer.lock().await;
        let (seq, was_queued, mut vectors) = {
            let state = self.state.read().unwrap();
            let dims = state.space.as_ref().map_or(0, |s| s.dimensions as usize);
            let Some(entry) = state.seq_of.get(&record.image_id).and_then(|s| state.by_seq.get(s)) else {
                return Err(StoreError::Missing(record.image_id.clone()));
            };
            let current = entry.record.review.version;
            if current != expected_version {
                return Err(StoreError::Conflict { image_id: record.image_id.clone(), expected: expected_version, current });
            }
            if let Some(v) = &caption_vector {
                if v.len() != dims {
                    return Err(StoreError::Dimension { got: v.len(), want: dims });
                }
            }
            (entry.record.seq, entry.record.review.needs_review, entry.vectors.clone())
        };
        // The vectors are written only when the caption's changed.
        let caption_changed = caption_vector.is_some();
        let bytes = caption_vector.map(|v| {
            vectors.caption = v;
            vector_bytes(&vectors)
        });
        record.seq = seq;
        record.review.version = expected_version + 1;
        let (id, json) = (record.image_id.clone(), serde_json::to_vec(&record).map_err(engine)?);
        self.write(move |txn| {
            txn.open_table(IMAGES).map_err(engine)?.insert(id.as_str(), json.as_slice()).map_err(engine)?;
            if let Some(bytes) = bytes {
                txn.open_table(VECTORS).map_err(engine)?.insert(id.as_str(), bytes.as_slice()).map_err(engine)?;
            }
            Ok(())
        })
        .await?;
        let mut state = self.state.write().unwrap();
        state.needs_review = state.needs_review - usize::from(was_queued) + usize::from(record.review.needs_review);
        state.by_seq.insert(seq, Arc::new(Entry { record: record.clone(), vectors }));
        if caption_changed {
            state.ann_touch(seq);
        }
        Ok(record)
    }

    async fn review_queue(&self, offset: usize, limit: usize) -> Result<(Vec<ImageRecord>, bool), StoreError> {
        let state = self.state.read().unwrap();
        let mut queue: Vec<&ImageRecord> = state.by_seq.values().map(|e| &e.record).filter(|r| r.review.needs_review).collect();
        queue.sort_by(|a, b| a.review.caption_confidence.total_cmp(&b.review.caption_confidence).then(a.seq.cmp(&b.seq)));
        let more = queue.len() > offset.saturating_add(limit);
        Ok((queue.into_iter().skip(offset).take(limit).cloned().collect(), more))
    }

    /// Drops the graph until [`ImageStore::end_bulk_load`] (searches are exact meanwhile).
    async fn begin_bulk_load(&self) -> Result<(), StoreError> {
        let mut state = self.state.write().unwrap();
        state.bulk_loading = true;
        state.ann = None;
        state.ann_pending = None;
        Ok(())
    }

    /// Builds the graph over everything on every core, saves it, and returns once it
    /// answers searches.
    async fn end_bulk_load(&self) -> Result<(), StoreError> {
        let job = {
            let mut state = self.state.write().unwrap();
            state.bulk_loading = false;
            if !state.graph_due() {
                return Ok(());
            }
            self.graph_job(&mut state, false)
        };
        tokio::task::spawn_blocking(move || job.run()).await.map_err(engine)
    }

    async fn wait_for_index(&self) -> Result<(), StoreError> {
        while self.state.read().unwrap().ann_pending.is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Saves the graph when it changed since its last save, so the next open loads it
    /// instead of replaying or rebuilding.
    async fn persist(&self) -> Result<(), StoreError> {
        let (state, dir, save_lock) = (self.state.clone(), self.dir().to_path_buf(), self.save_lock.clone());
        tokio::task::spawn_blocking(move || {
            let _files = save_lock.lock().unwrap_or_else(|e| e.into_inner());
            let saved = {
                // The read lock keeps writers out, so the graph and its key list agree.
                let state = state.read().unwrap();
                match state.ann.as_ref().filter(|_| state.ann_unsaved > 0) {
                    Some(ann) => {
                        let started = Instant::now();
                        ann.save(&dir, &saved_keys(state.by_seq.iter()))?;
                        tracing::info!(images = ann.len(), elapsed_ms = started.elapsed().as_millis() as u64, "approximate index saved");
                        state.ann_unsaved
                    }
                    None => 0,
                }
            };
            let mut state = state.write().unwrap();
            state.ann_unsaved = state.ann_unsaved.saturating_sub(saved);
            Ok(())
        })
        .await
        .map_err(engine)?
    }

    async fn search(&self, query: SearchQuery) -> Result<Vec<(ImageRecord, f32)>, StoreError> {
        let state = self.state.read().unwrap();
        Self::check_space(&state, &query.space)?;
        if query.vector.len() != query.space.dimensions as usize {
            return Err(StoreError::Dimension { got: query.vector.len(), want: query.space.dimensions as usize });
        }
        let w = query.fusion.image_weight.clamp(0.0, 1.0);
        let score = |e: &Arc<Entry>| w * dot(&query.vector, &e.vectors.image) + (1.0 - w) * dot(&query.vector, &e.vectors.caption);
        // The graph ranks by the fused score with equal weights; it is not asked with a
        // filter (a post-filter misses matches) or other weights.
        // The scan's codes are of the same fused vector, so the same holds for it.
        let fused_order = query.metadata_filter.is_empty() && w == 0.5;
        let wanted = crate::store::ann_candidates(query.top_k, query.breadth);
        let scan = state.scan.as_ref().filter(|scan| fused_order && scan.len() >= ANN_MIN_IMAGES);
        let graph = state.ann.as_ref().filter(|_| fused_order);
        let approximate = match (scan, graph) {
            (Some(scan), _) => Some(Ok(scan.search(&query.vector, wanted, wanted.saturating_mul(SHORTLIST_PER_CANDIDATE)))),
            (None, Some(ann)) => Some(ann.search(&query.vector, wanted)),
            (None, None) => None,
        };
        let candidates: Box<dyn Iterator<Item = &Arc<Entry>>> = match approximate {
            Some(Ok(seqs)) => Box::new(seqs.into_iter().filter_map(|seq| state.by_seq.get(&seq))),
            Some(Err(e)) => {
                tracing::warn!("approximate search failed, scanning exactly: {e}");
                Box::new(state.by_seq.values())
            }
            None => Box::new(state.by_seq.values()),
        };
        let mut hits: Vec<(f32, &Arc<Entry>)> = candidates
            .filter(|e| query.metadata_filter.iter().all(|(k, v)| e.record.metadata.get(k) == Some(v)))
            .map(|e| (score(e), e))
            .filter(|(score, _)| *score >= query.score_threshold)
            .collect();
        // Only the best `top_k` need ordering: select them first (linear), then sort those.
        // Ties are broken by insertion order, so results are deterministic.
        let order = |a: &(f32, &Arc<Entry>), b: &(f32, &Arc<Entry>)| b.0.total_cmp(&a.0).then(a.1.record.seq.cmp(&b.1.record.seq));
        if hits.len() > query.top_k && query.top_k > 0 {
            hits.select_nth_unstable_by(query.top_k - 1, order);
            hits.truncate(query.top_k);
        }
        hits.sort_by(order);
        Ok(hits.into_iter().take(query.top_k).map(|(score, e)| (e.record.clone(), score)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fusion, Label};

    fn space() -> Space {
        Space { model_id: "m".into(), dimensions: 2 }
    }

    fn record(id: &str, meta: &[(&str, &str)]) -> ImageRecord {
        ImageRecord {
            image_id: id.into(),
            content_hash: format!("hash-{id}"),
            source_name: format!("{id}.jpg"),
            caption: format!("a {id}"),
            labels: vec![Label { name: id.into(), probability: 0.9, class_index: 1 }],
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            models: vec![],
            indexed_at_unix_ms: 1,
            seq: 0,
            review: Default::default(),
        }
    }

    fn unit(x: f32, y: f32) -> Vec<f32> {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    }

    /// Random unit vectors of `dims` dimensions, the same ones for the same seed.
    fn random_units(dims: usize, seed: u64) -> impl FnMut() -> Vec<f32> {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        move || {
            let v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        }
    }

    fn query(v: Vec<f32>, filter: &[(&str, &str)]) -> SearchQuery {
        SearchQuery {
            vector: v,
            space: space(),
            top_k: 10,
            score_threshold: -1.0,
            metadata_filter: filter.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            fusion: Fusion { image_weight: 0.5 },
            breadth: None,
        }
    }

    #[tokio::test]
    async fn survives_reopen_and_ranks_by_fused_cosine() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let v = |x, y| ImageVectors { image: unit(x, y), caption: unit(x, y) };
            store.insert(record("east", &[("album", "a")]), v(1.0, 0.0), space()).await.unwrap();
            store.insert(record("north", &[("album", "b")]), v(0.0, 1.0), space()).await.unwrap();
            store.insert(record("northeast", &[("album", "a")]), v(1.0, 1.0), space()).await.unwrap();
            assert!(store.delete("north").await.unwrap());
            assert!(!store.delete("north").await.unwrap());
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.count().await.unwrap(), 2);
        assert_eq!(store.space().await.unwrap(), Some(space()));
        let hits = store.search(query(unit(1.0, 0.2), &[])).await.unwrap();
        let ids: Vec<&str> = hits.iter().map(|(r, _)| r.image_id.as_str()).collect();
        assert_eq!(ids, ["east", "northeast"]);
        assert!(hits[0].1 > hits[1].1);
        let filtered = store.search(query(unit(0.0, 1.0), &[("album", "a")])).await.unwrap();
        assert_eq!(filtered.len(), 2);
        assert!(store.search(query(unit(0.0, 1.0), &[("album", "b")])).await.unwrap().is_empty());
        // Pages continue where they stopped, oldest first.
        let first = store.list(0, 1).await.unwrap();
        assert_eq!(first.images[0].image_id, "east");
        let second = store.list(first.next.unwrap(), 1).await.unwrap();
        assert_eq!(second.images[0].image_id, "northeast");
        assert!(second.next.is_none());
    }

    #[tokio::test]
    async fn reinserting_an_id_replaces_it_in_batches_too() {
        let dir = tempfile::tempdir().unwrap();
        let v = |x, y| ImageVectors { image: unit(x, y), caption: unit(x, y) };
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.insert(record("a", &[]), v(1.0, 0.0), space()).await.unwrap();
            let batch = vec![(record("b", &[]), v(0.0, 1.0)), (record("a", &[("k", "1")]), v(1.0, 1.0)), (record("b", &[("k", "2")]), v(0.0, 1.0))];
            store.insert_many(batch, space()).await.unwrap();
            assert_eq!(store.count().await.unwrap(), 2);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let page = store.list(0, 10).await.unwrap();
        let got: Vec<(&str, u64, &str)> = page.images.iter().map(|r| (r.image_id.as_str(), r.seq, r.metadata["k"].as_str())).collect();
        assert_eq!(got, [("a", 2, "1"), ("b", 3, "2")]);
    }

    #[tokio::test]
    async fn updates_keep_place_check_versions_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let v = |x, y| ImageVectors { image: unit(x, y), caption: unit(x, y) };
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            for (id, confidence, needs) in [("a", 0.9, false), ("b", 0.4, true), ("c", 0.2, true)] {
                let mut r = record(id, &[]);
                r.review.caption_confidence = confidence;
                r.review.needs_review = needs;
                store.insert(r, v(1.0, 0.0), space()).await.unwrap();
            }
            assert_eq!(store.review_count().await.unwrap(), 2);
            let (queue, more) = store.review_queue(0, 10).await.unwrap();
            assert_eq!(queue.iter().map(|r| r.image_id.as_str()).collect::<Vec<_>>(), ["c", "b"]);
            assert!(!more);
            assert!(store.review_queue(0, 1).await.unwrap().1);
            // A correction: new text, new caption vector, out of the queue.
            let mut b = store.get("b").await.unwrap().unwrap();
            b.caption = "a corrected caption".into();
            b.review.needs_review = false;
            let stored = store.update(b.clone(), Some(unit(0.0, 1.0)), 0).await.unwrap();
            assert_eq!(stored.review.version, 1);
            // A second change made on version 0 is refused, not applied.
            let err = store.update(b, None, 0).await.unwrap_err();
            assert!(matches!(err, StoreError::Conflict { expected: 0, current: 1, .. }), "{err}");
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let b = store.get("b").await.unwrap().unwrap();
        assert_eq!((b.caption.as_str(), b.review.version, b.seq), ("a corrected caption", 1, 1));
        assert_eq!(store.review_queue(0, 10).await.unwrap().0.len(), 1);
        assert_eq!(store.review_count().await.unwrap(), 1, "counted again on load");
        assert!(store.delete("c").await.unwrap());
        assert_eq!(store.review_count().await.unwrap(), 0);
        // Search sees the new caption vector (fused half image, half caption).
        let hits = store.search(query(unit(0.0, 1.0), &[])).await.unwrap();
        assert_eq!(hits[0].0.image_id, "b");
        assert!((hits[0].1 - 0.5).abs() < 1e-5, "{}", hits[0].1);
    }

    /// Past ANN_MIN_IMAGES the graph answers unfiltered searches: its results match the
    /// exact scan's, follow deletes and caption changes, and come back after a reopen.
    #[tokio::test]
    async fn large_stores_search_through_the_graph_and_keep_it_current() {
        use rand::{Rng as _, SeedableRng as _};
        const DIMS: usize = 16;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut unit = || {
            let v: Vec<f32> = (0..DIMS).map(|_| rng.random::<f32>() - 0.5).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let space = Space { model_id: "m".into(), dimensions: DIMS as u32 };
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let items: Vec<(ImageRecord, ImageVectors)> =
            (0..ANN_MIN_IMAGES + 500).map(|i| (record(&format!("i{i}"), &[]), ImageVectors { image: unit(), caption: unit() })).collect();
        store.insert_many(items, space.clone()).await.unwrap();
        store.wait_for_index().await.unwrap();
        assert!(store.state.read().unwrap().ann.is_some(), "the graph is built once the store is large");
        let queries: Vec<Vec<f32>> = (0..50).map(|_| unit()).collect();
        async fn search(store: &EmbeddedStore, v: &[f32]) -> Vec<String> {
            let mut q = query(v.to_vec(), &[]);
            q.space = Space { model_id: "m".into(), dimensions: v.len() as u32 };
            store.search(q).await.unwrap().into_iter().map(|(r, _)| r.image_id).collect()
        }
        let exact = |store: &EmbeddedStore, v: &[f32]| {
            let state = store.state.read().unwrap();
            let mut all: Vec<(f32, String)> = state
                .by_seq
                .values()
                .map(|e| (0.5 * dot(v, &e.vectors.image) + 0.5 * dot(v, &e.vectors.caption), e.record.image_id.clone()))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.into_iter().take(10).map(|(_, id)| id).collect::<Vec<_>>()
        };
        let mut found = 0;
        for q in &queries {
            let got = search(&store, q).await;
            found += exact(&store, q).iter().filter(|id| got.contains(id)).count();
        }
        let recall = found as f64 / (queries.len() * 10) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // A deleted image is never found again; a changed caption vector moves its image.
        let first = search(&store, &queries[0]).await[0].clone();
        let first_seq = store.get(&first).await.unwrap().unwrap().seq;
        assert!(store.delete(&first).await.unwrap());
        assert!(!search(&store, &queries[0]).await.contains(&first));
        let target = store.get("i7").await.unwrap().unwrap();
        let toward = queries[1].clone();
        store.update(target, Some(toward.clone()), 0).await.unwrap();
        let mut boosted = query(toward.clone(), &[]);
        boosted.space = space.clone();
        boosted.fusion.image_weight = 0.0;
        assert_eq!(store.search(boosted).await.unwrap()[0].0.image_id, "i7", "exact, other weights");
        {
            let state = store.state.read().unwrap();
            let entry = &state.by_seq[&state.seq_of["i7"]];
            let in_graph = state.ann.as_ref().unwrap().vector(entry.record.seq).expect("i7 is in the graph");
            let want = ImageVectors { image: entry.vectors.image.clone(), caption: toward.clone() }.fused();
            assert!(in_graph.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-2), "the graph has the new caption vector");
            assert!(state.ann.as_ref().unwrap().vector(first_seq).is_none(), "deleted from the graph");
        }
        // Reopened: the graph comes back (from its file, with the changes since replayed).
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.wait_for_index().await.unwrap();
        assert!(store.state.read().unwrap().ann.is_some());
        assert!(!search(&store, &queries[0]).await.contains(&first));
    }

    /// With `SearchIndex::Scan` no graph is built: the codes answer unfiltered searches past
    /// ANN_MIN_IMAGES, follow deletes and caption changes at once, and are made again on
    /// reopen.
    #[tokio::test]
    async fn the_scan_index_answers_large_stores_and_keeps_current_without_a_graph() {
        const DIMS: usize = 16;
        let mut unit = random_units(DIMS, 5);
        let space = Space { model_id: "m".into(), dimensions: DIMS as u32 };
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), SearchIndex::Scan).unwrap();
        let items: Vec<(ImageRecord, ImageVectors)> =
            (0..ANN_MIN_IMAGES + 500).map(|i| (record(&format!("i{i}"), &[]), ImageVectors { image: unit(), caption: unit() })).collect();
        store.insert_many(items, space.clone()).await.unwrap();
        store.wait_for_index().await.unwrap();
        let search = |v: Vec<f32>| {
            let mut q = query(v, &[]);
            q.space = space.clone();
            let store = &store;
            async move { store.search(q).await.unwrap().into_iter().map(|(r, _)| r.image_id).collect::<Vec<_>>() }
        };
        let exact = |v: &[f32]| {
            let state = store.state.read().unwrap();
            let mut all: Vec<(f32, String)> = state.by_seq.values().map(|e| (dot(v, &e.vectors.fused()), e.record.image_id.clone())).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.into_iter().take(10).map(|(_, id)| id).collect::<Vec<_>>()
        };
        {
            let state = store.state.read().unwrap();
            assert!(state.ann.is_none() && state.ann_pending.is_none(), "no graph with the scan index");
            assert_eq!(state.scan.as_ref().map(Scan::len), Some(ANN_MIN_IMAGES + 500));
        }
        let queries: Vec<Vec<f32>> = (0..50).map(|_| unit()).collect();
        let mut found = 0;
        for q in &queries {
            let got = search(q.clone()).await;
            found += exact(q).iter().filter(|id| got.contains(id)).count();
        }
        let recall = found as f64 / (queries.len() * 10) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // A deleted image is never found again; a changed caption vector is re-coded.
        let first = search(queries[0].clone()).await[0].clone();
        assert!(store.delete(&first).await.unwrap());
        assert!(!search(queries[0].clone()).await.contains(&first));
        let toward = queries[1].clone();
        let target = store.get("i7").await.unwrap().unwrap();
        store.update(target, Some(toward.clone()), 0).await.unwrap();
        assert_eq!(exact(&toward)[0], "i7");
        assert_eq!(search(toward.clone()).await[0], "i7", "the scan has the new caption vector");
        // Reopened: the codes are made again from redb.
        drop(store);
        let store = EmbeddedStore::open_with(dir.path(), SearchIndex::Scan).unwrap();
        assert_eq!(store.state.read().unwrap().scan.as_ref().map(Scan::len), Some(ANN_MIN_IMAGES + 499));
        let mut q = query(toward, &[]);
        q.space = space;
        assert_eq!(store.search(q).await.unwrap()[0].0.image_id, "i7");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wider_search_breadth_finds_more_of_the_true_top_ten() {
        // Random 384-dimensional vectors: no structure for the graph to use, so a narrow
        // walk misses some of the exact top ten and a wide one finds (nearly) all.
        const DIMS: usize = 384;
        let mut unit = random_units(DIMS, 9);
        let space = Space { model_id: "m".into(), dimensions: DIMS as u32 };
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let items: Vec<(ImageRecord, ImageVectors)> =
            (0..ANN_MIN_IMAGES + 5_000).map(|i| (record(&format!("i{i}"), &[]), ImageVectors { image: unit(), caption: unit() })).collect();
        let all: Vec<(String, ImageVectors)> = items.iter().map(|(r, v)| (r.image_id.clone(), v.clone())).collect();
        store.begin_bulk_load().await.unwrap();
        store.insert_many(items, space.clone()).await.unwrap();
        store.end_bulk_load().await.unwrap();
        assert!(store.state.read().unwrap().ann.is_some(), "searches go through the graph");
        let queries: Vec<Vec<f32>> = (0..50).map(|_| unit()).collect();
        let mut recall = Vec::new();
        for breadth in [10, 3_000] {
            let mut hits = 0;
            for q in &queries {
                let mut exact: Vec<(f32, &String)> = all.iter().map(|(id, v)| (0.5 * dot(q, &v.image) + 0.5 * dot(q, &v.caption), id)).collect();
                exact.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut search = query(q.clone(), &[]);
                search.space = space.clone();
                search.breadth = Some(breadth);
                let got: Vec<String> = store.search(search).await.unwrap().into_iter().map(|(r, _)| r.image_id).collect();
                hits += exact[..10].iter().filter(|(_, id)| got.contains(id)).count();
            }
            recall.push(hits as f64 / 500.0);
        }
        println!("recall@10 at breadth 10 (the graph's own 400) and 3 000: {recall:?}");
        assert!(recall[1] > recall[0], "the wider search found no more: {recall:?}");
        assert!(recall[1] >= 0.98, "{recall:?}");
    }

    /// The graph is saved after its build and on `persist`; an open loads it and replays
    /// only what changed since (here without a `persist`, as after a crash), and a damaged
    /// file is noticed and rebuilt, never trusted.
    #[tokio::test]
    async fn a_saved_graph_is_loaded_and_catches_up_with_changes_made_after_it() {
        const DIMS: usize = 16;
        let mut unit = random_units(DIMS, 5);
        let space = Space { model_id: "m".into(), dimensions: DIMS as u32 };
        async fn search(store: &EmbeddedStore, v: &[f32]) -> Option<String> {
            let mut q = query(v.to_vec(), &[]);
            q.space = Space { model_id: "m".into(), dimensions: v.len() as u32 };
            q.top_k = 1;
            assert!(store.state.read().unwrap().ann.is_some(), "searched through the graph");
            store.search(q).await.unwrap().into_iter().map(|(r, _)| r.image_id).next()
        }
        let dir = tempfile::tempdir().unwrap();
        let (gone, fresh, moved, toward) = {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let items: Vec<_> =
                (0..ANN_MIN_IMAGES + 100).map(|i| (record(&format!("i{i}"), &[]), ImageVectors { image: unit(), caption: unit() })).collect();
            store.begin_bulk_load().await.unwrap();
            store.insert_many(items, space.clone()).await.unwrap();
            assert!(store.state.read().unwrap().ann.is_none(), "no graph during a bulk load");
            store.end_bulk_load().await.unwrap();
            assert_eq!(store.state.read().unwrap().ann_replayed, None, "built");
            assert!(dir.path().join("images.hnsw.keys").exists(), "saved after the build");
            // Changes after the save, then no persist: a crash.
            let gone = store.get("i3").await.unwrap().unwrap();
            assert!(store.delete("i3").await.unwrap());
            let fresh: Vec<(String, Vec<f32>)> = (0..10).map(|i| (format!("new{i}"), unit())).collect();
            for (id, v) in &fresh {
                store.insert(record(id, &[]), ImageVectors { image: v.clone(), caption: v.clone() }, space.clone()).await.unwrap();
            }
            let toward = unit();
            let moved = store.get("i9").await.unwrap().unwrap();
            store.update(moved.clone(), Some(toward.clone()), 0).await.unwrap();
            (gone, fresh, moved, toward)
        };
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.wait_for_index().await.unwrap();
        assert_eq!(store.state.read().unwrap().ann_replayed, Some(12), "loaded: 1 delete, 10 inserts, 1 re-caption replayed");
        for (id, v) in &fresh {
            assert_eq!(search(&store, v).await.as_deref(), Some(id.as_str()), "a new image is in the graph");
        }
        {
            let state = store.state.read().unwrap();
            let ann = state.ann.as_ref().unwrap();
            assert!(ann.vector(gone.seq).is_none(), "the deleted image left the graph");
            let fused = ann.vector(moved.seq).unwrap();
            let image = &state.by_seq[&moved.seq].vectors.image;
            let want = ImageVectors { image: image.clone(), caption: toward.clone() }.fused();
            assert!(fused.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-2), "the re-captioned image has its new vector");
        }
        // A graceful stop saves; the next open has nothing to replay.
        assert!(store.delete("i4").await.unwrap());
        store.persist().await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.wait_for_index().await.unwrap();
        assert_eq!(store.state.read().unwrap().ann_replayed, Some(0));
        drop(store);
        // A damaged graph file: rebuilt, and searches still right.
        let graph = dir.path().join("images.hnsw");
        let mut bytes = std::fs::read(&graph).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&graph, &bytes).unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.wait_for_index().await.unwrap();
        assert_eq!(store.state.read().unwrap().ann_replayed, None, "rebuilt, not trusted");
        assert_eq!(search(&store, &fresh[0].1).await.as_deref(), Some(fresh[0].0.as_str()));
    }

    #[tokio::test]
    async fn refuses_other_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let v = ImageVectors { image: unit(1.0, 0.0), caption: unit(1.0, 0.0) };
        store.insert(record("a", &[]), v.clone(), space()).await.unwrap();
        let other = Space { model_id: "other".into(), dimensions: 2 };
        let err = store.insert(record("b", &[]), v, other.clone()).await.unwrap_err();
        assert!(err.to_string().contains("re-index"), "{err}");
        let mut q = query(unit(1.0, 0.0), &[]);
        q.space = other;
        assert!(matches!(store.search(q).await, Err(StoreError::SpaceMismatch { .. })));
        let short = ImageVectors { image: vec![1.0], caption: vec![1.0] };
        assert!(matches!(store.insert(record("c", &[]), short, space()).await, Err(StoreError::Dimension { .. })));
    }
}
