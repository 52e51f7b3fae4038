//! The scan index in a PostgreSQL-backed gateway (`--search-index scan`): each gateway keeps
//! codes of every image's fused vector in memory ([`crate::store::scan`]) and finds a
//! search's candidates there; PostgreSQL scores them exactly by seq.
//!
//! Why: pgvector's HNSW graph has the embedded graph's weakness. On vectors that do not
//! cluster its walk has nothing to follow, and at a million clustered images its search at
//! the default breadth took 12.9 ms p50; with the codes it takes 8.5 ms there and 8.4 ms with
//! recall@10 0.976 on random vectors (two cores shared with the server; docs/gateway.md).
//! The codes take about 480 bytes per image in each replica (480 MB at a million), and the
//! database builds no index for them (a million images load in two minutes, not an hour).
//!
//! How the codes stay current with several gateways writing: every row write numbers itself
//! from one sequence, in commit order (migration 0002 says how), and leaves the number in
//! the row (`changed`) or, for a removed row, in `mmc_image_removals`. A gateway loads every
//! row once (in the background at start; searches go to SQL until then), remembers the
//! highest number it has seen, and before each search applies the changes numbered above
//! it, in order: one indexed query that usually returns nothing. So an image indexed,
//! re-captioned or deleted through any gateway is searched as such through every other one
//! at once, as with the HNSW index.
//!
//! Removals older than a retention are pruned ([`super::removals`]). A gateway that had not
//! read one yet learns it from the pruned horizon, read with its changes, and sweeps its
//! codes in the background: every seq it holds is looked up, and those gone are dropped
//! (seqs are never reused, so a seq gone is gone for good). Until then a stale code only
//! wastes a candidate: scores come from the rows that exist.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::TryStreamExt as _;
use pgvector::Vector;
use sqlx::{PgPool, Row as _};

use super::pg;
use crate::store::{
    engine,
    scan::{Scan, SHORTLIST_PER_CANDIDATE},
    StoreError,
};

/// The advisory lock that orders row writes (migration 0002); writers take it first.
pub const CHANGE_LOCK: i64 = 7_243_102;

/// Rows coded per step of the load (each step is coded on every core).
const LOAD_CHUNK: usize = 16_384;
/// Changes read per query when catching up (a bulk load elsewhere can leave many).
const CHANGES_PER_PAGE: i64 = 10_000;
/// Seqs looked up per query when sweeping the codes.
const SWEEP_CHUNK: usize = 10_000;
/// The `seq` of the change row that says removals up to its number were pruned.
const PRUNED: i64 = -1;

/// Changes numbered above `$1`, oldest first, at most `$2`: a vector to add (or replace)
/// at `seq`, or none for a removed `seq`. Each side is ordered and limited on its own, so
/// the plan is two index range scans merged, whatever the statistics say (one `ORDER BY`
/// over the union was planned as a scan of the whole table right after a bulk load: 10 ms
/// at 100 000 images, for a query that usually returns nothing). A third side says, with
/// seq [`PRUNED`], that removals up to its number were pruned (migration 0003); one
/// statement, so it is read in the same snapshot as the removals.
const CHANGES: &str = "SELECT change, seq, fused_vector FROM ( \
     (SELECT changed AS change, seq, fused_vector FROM mmc_images WHERE changed > $1 ORDER BY changed LIMIT $2) \
     UNION ALL (SELECT change, seq, NULL::vector FROM mmc_image_removals WHERE change > $1 ORDER BY change LIMIT $2) \
     UNION ALL (SELECT through, -1, NULL::vector FROM mmc_image_removals_pruned WHERE through > $1) \
     ) changes ORDER BY change LIMIT $2";

/// The highest change number a load's snapshot holds (0 when none); removals pruned from it
/// are reflected in its rows too.
const SEEN: &str = "SELECT greatest((SELECT max(changed) FROM mmc_images), (SELECT max(change) FROM mmc_image_removals), \
     (SELECT through FROM mmc_image_removals_pruned), 0)";

/// The codes of one gateway, and how far they have applied the change log.
pub struct Codes {
    pool: PgPool,
    /// `None` until loaded.
    loaded: Arc<RwLock<Option<Loaded>>>,
    ready: tokio::sync::watch::Receiver<bool>,
    /// One catch-up at a time; holds when the last one began.
    catching_up: tokio::sync::Mutex<Option<Instant>>,
}

struct Loaded {
    /// `None` while no image has a vector (the dimension comes with the first).
    scan: Option<Scan>,
    /// The highest change number applied.
    seen: i64,
}

impl Loaded {
    fn add(&mut self, seq: i64, fused: &[f32]) {
        self.scan.get_or_insert_with(|| Scan::new(fused.len())).add_fused(seq as u64, fused);
    }
}

impl Codes {
    /// Starts loading the codes of every image in the background (retrying while the
    /// database is unavailable).
    pub fn start(pool: PgPool) -> Arc<Self> {
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let codes = Arc::new(Self { pool, loaded: Arc::new(RwLock::new(None)), ready, catching_up: tokio::sync::Mutex::new(None) });
        let (pool, slot) = (codes.pool.clone(), codes.loaded.clone());
        tokio::spawn(async move {
            loop {
                let started = Instant::now();
                match load(&pool).await {
                    Ok(loaded) => {
                        let images = loaded.scan.as_ref().map_or(0, Scan::len);
                        metrics::gauge!("mmc_gateway_scan_images").set(images as f64);
                        *slot.write().expect("codes lock") = Some(loaded);
                        tracing::info!(images, elapsed_ms = started.elapsed().as_millis() as u64, "scan codes ready");
                        let _ = ready_tx.send(true);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("loading the scan codes failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        codes
    }

    /// Returns once the codes are loaded.
    pub async fn wait_ready(&self) -> Result<(), StoreError> {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.map(|_| ()).map_err(|_| StoreError::Engine("loading the scan codes stopped".into()))
    }

    /// The seqs of about the `candidates` best images for `query` by the fused score (see
    /// [`Scan::search`]), after applying every change committed before this call; `None`
    /// until the codes are loaded (the caller searches in SQL meanwhile).
    pub async fn candidates(&self, query: Vec<f32>, candidates: usize) -> Result<Option<Vec<i64>>, StoreError> {
        if !*self.ready.borrow() {
            return Ok(None);
        }
        self.catch_up(Instant::now()).await?;
        let loaded = self.loaded.clone();
        let seqs = tokio::task::spawn_blocking(move || {
            let loaded = loaded.read().expect("codes lock");
            match loaded.as_ref().and_then(|l| l.scan.as_ref()) {
                Some(scan) => scan.search(&query, candidates, candidates.saturating_mul(SHORTLIST_PER_CANDIDATE)),
                None => Vec::new(),
            }
        })
        .await
        .map_err(engine)?;
        Ok(Some(seqs.into_iter().map(|seq| seq as i64).collect()))
    }

    /// Applies the changes committed since the last catch-up. A catch-up that began after
    /// `asked` (another search's) and succeeded saw everything committed before it, so it is
    /// not repeated.
    async fn catch_up(&self, asked: Instant) -> Result<(), StoreError> {
        let mut last = self.catching_up.lock().await;
        if last.is_some_and(|began| began >= asked) {
            return Ok(());
        }
        let began = Instant::now();
        self.apply_changes().await?;
        *last = Some(began);
        Ok(())
    }

    /// Reads and applies the changes numbered above those applied, page by page.
    async fn apply_changes(&self) -> Result<(), StoreError> {
        loop {
            let seen = self.loaded.read().expect("codes lock").as_ref().map_or(0, |l| l.seen);
            let rows = sqlx::query(CHANGES).bind(seen).bind(CHANGES_PER_PAGE).fetch_all(&self.pool).await.map_err(pg)?;
            let mut changes = Vec::with_capacity(rows.len());
            for row in &rows {
                let vector: Option<Vector> = row.try_get("fused_vector").map_err(pg)?;
                changes.push((row.try_get::<i64, _>("change").map_err(pg)?, row.try_get::<i64, _>("seq").map_err(pg)?, vector));
            }
            if changes.is_empty() {
                return Ok(());
            }
            let full = changes.len() as i64 == CHANGES_PER_PAGE;
            metrics::counter!("mmc_gateway_scan_changes_applied_total").increment(changes.len() as u64);
            let missed_removals = changes.iter().any(|(_, seq, _)| *seq == PRUNED);
            let loaded = self.loaded.clone();
            // Under the write lock, which waits for searches in progress: off the async threads.
            tokio::task::spawn_blocking(move || {
                let mut loaded = loaded.write().expect("codes lock");
                let loaded = loaded.as_mut().expect("catch-up runs on loaded codes");
                for (change, seq, vector) in changes {
                    match vector {
                        Some(fused) => loaded.add(seq, fused.as_slice()),
                        None if seq == PRUNED => {}
                        None => {
                            if let Some(scan) = &mut loaded.scan {
                                scan.remove(seq as u64)
                            }
                        }
                    }
                    loaded.seen = change;
                }
                metrics::gauge!("mmc_gateway_scan_images").set(loaded.scan.as_ref().map_or(0, Scan::len) as f64);
            })
            .await
            .map_err(engine)?;
            if missed_removals {
                tracing::warn!("removals this gateway had not read were pruned; sweeping the scan codes");
                tokio::spawn(sweep(self.pool.clone(), self.loaded.clone()));
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Drops the codes of images that no longer exist (after removals this gateway had not read
/// were pruned). Retries while the database is unavailable.
async fn sweep(pool: PgPool, loaded: Arc<RwLock<Option<Loaded>>>) {
    let held: Vec<i64> = match loaded.read().expect("codes lock").as_ref().and_then(|l| l.scan.as_ref()) {
        Some(scan) => scan.seqs().iter().map(|&seq| seq as i64).collect(),
        None => return,
    };
    let mut dropped = 0u64;
    for chunk in held.chunks(SWEEP_CHUNK) {
        let existing: Vec<i64> = loop {
            match sqlx::query_scalar("SELECT seq FROM mmc_images WHERE seq = ANY($1)").bind(chunk).fetch_all(&pool).await.map_err(pg) {
                Ok(existing) => break existing,
                Err(e) => {
                    tracing::warn!("sweeping the scan codes: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let existing: std::collections::HashSet<i64> = existing.into_iter().collect();
        let gone: Vec<u64> = chunk.iter().filter(|seq| !existing.contains(seq)).map(|&seq| seq as u64).collect();
        if gone.is_empty() {
            continue;
        }
        dropped += gone.len() as u64;
        let loaded = loaded.clone();
        // Under the write lock, which waits for searches in progress: off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            let mut loaded = loaded.write().expect("codes lock");
            if let Some(scan) = loaded.as_mut().and_then(|l| l.scan.as_mut()) {
                for seq in gone {
                    scan.remove(seq);
                }
                metrics::gauge!("mmc_gateway_scan_images").set(scan.len() as f64);
            }
        })
        .await;
    }
    metrics::counter!("mmc_gateway_scan_codes_swept_total").increment(dropped);
    tracing::info!(checked = held.len(), dropped, "scan codes swept");
}

/// The codes of every row, and the highest change number they include, from one snapshot.
async fn load(pool: &PgPool) -> Result<Loaded, StoreError> {
    let mut tx = pool.begin().await.map_err(pg)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await.map_err(pg)?;
    let mut loaded = Loaded { scan: None, seen: 0 };
    {
        let mut rows = sqlx::query("SELECT seq, fused_vector FROM mmc_images").fetch(&mut *tx);
        let mut chunk: Vec<(u64, Vector)> = Vec::with_capacity(LOAD_CHUNK);
        loop {
            let row = rows.try_next().await.map_err(pg)?;
            if let Some(row) = &row {
                let vector: Vector = row.try_get("fused_vector").map_err(pg)?;
                chunk.push((row.try_get::<i64, _>("seq").map_err(pg)? as u64, vector));
            }
            if chunk.len() == LOAD_CHUNK || (row.is_none() && !chunk.is_empty()) {
                let part = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                let mut scan = loaded.scan.take().unwrap_or_else(|| Scan::new(part[0].1.as_slice().len()));
                loaded.scan = Some(
                    tokio::task::spawn_blocking(move || {
                        scan.extend_with(&part, |codes, (seq, fused)| codes.add_fused(*seq, fused.as_slice()));
                        scan
                    })
                    .await
                    .map_err(engine)?,
                );
            }
            if row.is_none() {
                break;
            }
        }
    }
    let (seen,): (i64,) = sqlx::query_as(SEEN).fetch_one(&mut *tx).await.map_err(pg)?;
    loaded.seen = seen;
    tx.commit().await.map_err(pg)?;
    Ok(loaded)
}
