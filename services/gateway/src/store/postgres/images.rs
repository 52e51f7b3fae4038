//! The image index in PostgreSQL (see the module docs of [`super`] and the schema in
//! `migrations/`).
//!
//! How a search runs: the score of an image is the fused cosine `w·cos(q, image) + (1-w)·
//! cos(q, caption)` of unit vectors, which is `q · (w·image + (1-w)·caption)`: linear in
//! one vector per image. The table keeps `fused_vector = image + caption` with an HNSW
//! index (inner product), so a search with the default equal weights asks that index for
//! the nearest [`candidates`], scores them exactly and keeps the best `top_k`: one index
//! walk, ranked by the fused score itself. (A first version asked two indexes, image and
//! caption, for candidates and fused the union: with independent vectors the fused top 10
//! is often in neither list's top 100, and recall@10 was 0.65 at 10 000 random images.)
//! Other weights, and searches with a metadata filter, scan exactly: the rows the filter
//! selects (GIN-indexed), since HNSW with a post-filter misses matches when the filter is
//! selective, and exact results are what a filter promises.
//!
//! With `--search-index scan` the candidates come from codes this gateway keeps in memory
//! instead ([`super::codes`]), and are scored exactly here by seq; no HNSW index is built
//! (searches before the codes are loaded use it if another gateway built it, or scan).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use pgvector::Vector;
use sqlx::{postgres::PgRow, types::Json, AssertSqlSafe, PgPool, Postgres, Row as _, Transaction};

use super::{
    codes::{Codes, CHANGE_LOCK},
    pg, HNSW_EF_CONSTRUCTION, HNSW_M,
};
use crate::store::{ImageRecord, ImageStore, ImageVectors, Page, SearchIndex, SearchQuery, Space, StoreError};

/// The image index in PostgreSQL.
pub struct PostgresImages {
    pool: PgPool,
    /// The recorded space, once seen (it never changes after it is recorded).
    space: OnceLock<Space>,
    /// In a bulk load: the HNSW index is left unbuilt until it ends.
    bulk: AtomicBool,
    /// With [`SearchIndex::Scan`]: the codes searched instead of the HNSW index.
    codes: Option<Arc<Codes>>,
}

/// The HNSW index of the fused vectors (see the module docs).
fn create_index_sql(if_not_exists: bool) -> String {
    let guard = if if_not_exists { "IF NOT EXISTS " } else { "" };
    format!(
        "CREATE INDEX {guard}mmc_images_fused_hnsw ON mmc_images USING hnsw (fused_vector vector_ip_ops) \
         WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )
}

/// Memory for building the HNSW index over many rows at once: pgvector builds far faster
/// while the graph fits in `maintenance_work_mem` (the server's default is 64 MB; a million
/// 384-dimensional images need about 2 GB). Set for the build's transaction only.
const BUILD_MEMORY: &str = "1GB";

/// The fused score of a row for query vector `$1` and image weight `$2`.
macro_rules! fused_score {
    () => {
        "($2 * (1 - (image_vector <=> $1)) + (1 - $2) * (1 - (caption_vector <=> $1)))::real"
    };
}

const EXACT_SEARCH: &str =
    concat!("SELECT seq, record, ", fused_score!(), " AS score FROM mmc_images WHERE record -> 'metadata' @> $3 ORDER BY score DESC, seq LIMIT $4");

/// Equal weights (`$2` = 0.5): candidates from the fused vector's HNSW index.
const APPROXIMATE_SEARCH: &str = concat!(
    "WITH candidates AS (SELECT seq FROM mmc_images ORDER BY fused_vector <#> $1 LIMIT $3) ",
    "SELECT seq, record, ",
    fused_score!(),
    " AS score FROM mmc_images JOIN candidates USING (seq) ORDER BY score DESC, seq LIMIT $4"
);

const UPSERT: &str = "INSERT INTO mmc_images (seq, image_id, content_hash, record, needs_review, caption_confidence, version, \
     image_vector, caption_vector, fused_vector) \
     VALUES (nextval('mmc_image_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (image_id) DO UPDATE SET seq = nextval('mmc_image_seq'), content_hash = EXCLUDED.content_hash, record = EXCLUDED.record, \
     needs_review = EXCLUDED.needs_review, caption_confidence = EXCLUDED.caption_confidence, version = EXCLUDED.version, \
     image_vector = EXCLUDED.image_vector, caption_vector = EXCLUDED.caption_vector, fused_vector = EXCLUDED.fused_vector \
     RETURNING seq";

/// Equal weights, candidates from the scan's codes (`$2`: their seqs), `$1` the query as a
/// unit vector. The fused score with equal weights of unit vectors is half the inner
/// product with `fused_vector` (see the module docs): one vector read per row instead of
/// two, the same score as [`fused_score!`] up to float rounding.
const RESCORE: &str =
    "SELECT seq, record, (-0.5 * (fused_vector <#> $1))::real AS score FROM mmc_images WHERE seq = ANY($2) ORDER BY score DESC, seq LIMIT $3";

/// The weight at which [`APPROXIMATE_SEARCH`]'s index ranks by the fused score.
const INDEXED_WEIGHT: f32 = 0.5;

/// A row's record, with its `seq` (kept in its own column).
fn record(row: &PgRow) -> Result<ImageRecord, StoreError> {
    let Json(mut record): Json<ImageRecord> = row.try_get("record").map_err(pg)?;
    record.seq = row.try_get::<i64, _>("seq").map_err(pg)? as u64;
    Ok(record)
}

fn check_dimensions(vectors: &[&Vec<f32>], space: &Space) -> Result<(), StoreError> {
    match vectors.iter().find(|v| v.len() != space.dimensions as usize) {
        Some(v) => Err(StoreError::Dimension { got: v.len(), want: space.dimensions as usize }),
        None => Ok(()),
    }
}

/// Takes [`CHANGE_LOCK`] for the rest of `tx`: first in every write transaction (see
/// migration 0002).
async fn lock_changes(tx: &mut Transaction<'static, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHANGE_LOCK).execute(&mut **tx).await.map_err(pg)?;
    Ok(())
}

impl PostgresImages {
    /// The image index in the database behind `pool`, searched through `index` (with
    /// [`SearchIndex::Scan`], the codes start loading in the background).
    pub fn new(pool: PgPool, index: SearchIndex) -> Self {
        let codes = (index == SearchIndex::Scan).then(|| Codes::start(pool.clone()));
        Self { pool, space: OnceLock::new(), bulk: AtomicBool::new(false), codes }
    }

    /// Whether this gateway builds the HNSW index (the scan does not need it).
    fn keeps_hnsw(&self) -> bool {
        self.codes.is_none() && !self.bulk.load(Ordering::SeqCst)
    }

    /// Checks `offered` against the recorded space, recording it (and typing the vector
    /// columns and building their HNSW indexes) when none is: within the write's
    /// transaction, so two gateways' first images agree on one space.
    async fn ensure_space(&self, tx: &mut Transaction<'static, Postgres>, offered: &Space) -> Result<(), StoreError> {
        if let Some(stored) = self.space.get() {
            return match stored == offered {
                true => Ok(()),
                false => Err(StoreError::SpaceMismatch { stored: stored.clone(), offered: offered.clone() }),
            };
        }
        let recorded = sqlx::query("INSERT INTO mmc_spaces (store, model_id, dimensions) VALUES ('images', $1, $2) ON CONFLICT (store) DO NOTHING")
            .bind(&offered.model_id)
            .bind(offered.dimensions as i32)
            .execute(&mut **tx)
            .await
            .map_err(pg)?
            .rows_affected();
        if recorded == 1 {
            // The first image of the index: its model fixes the dimension. (The table is
            // empty, so the type change and the index builds are instant.)
            let n = offered.dimensions;
            let mut ddl = vec![format!(
                "ALTER TABLE mmc_images ALTER COLUMN image_vector TYPE vector({n}), ALTER COLUMN caption_vector TYPE vector({n}), \
                 ALTER COLUMN fused_vector TYPE vector({n})"
            )];
            if self.keeps_hnsw() {
                ddl.push(create_index_sql(false));
            }
            for statement in ddl {
                sqlx::query(AssertSqlSafe(statement)).execute(&mut **tx).await.map_err(pg)?;
            }
            return Ok(());
        }
        let (model_id, dimensions): (String, i32) =
            sqlx::query_as("SELECT model_id, dimensions FROM mmc_spaces WHERE store = 'images'").fetch_one(&mut **tx).await.map_err(pg)?;
        let stored = Space { model_id, dimensions: dimensions as u32 };
        if &stored != offered {
            return Err(StoreError::SpaceMismatch { stored, offered: offered.clone() });
        }
        let _ = self.space.set(stored);
        Ok(())
    }

    /// Builds the HNSW index when the space is recorded and the index is missing (after a
    /// bulk load, or one that was interrupted); returns whether it did. Gateways call it
    /// at start.
    pub async fn build_index_if_missing(&self) -> Result<bool, StoreError> {
        if self.codes.is_some() || self.space().await?.is_none() {
            return Ok(false);
        }
        let present = "SELECT to_regclass('mmc_images_fused_hnsw') IS NOT NULL";
        let (there,): (bool,) = sqlx::query_as(present).fetch_one(&self.pool).await.map_err(pg)?;
        if there {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await.map_err(pg)?;
        // Gateways starting together build it once: the others wait here, then find it.
        sqlx::query("SELECT pg_advisory_xact_lock(7243101)").execute(&mut *tx).await.map_err(pg)?;
        let (there,): (bool,) = sqlx::query_as(present).fetch_one(&mut *tx).await.map_err(pg)?;
        if there {
            return Ok(false);
        }
        sqlx::query(AssertSqlSafe(format!("SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'"))).execute(&mut *tx).await.map_err(pg)?;
        sqlx::query(AssertSqlSafe(create_index_sql(true))).execute(&mut *tx).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "HNSW index of the images built");
        Ok(true)
    }

    async fn rows(&self, sql: &'static str, a: i64, b: i64) -> Result<Vec<PgRow>, StoreError> {
        sqlx::query(sql).bind(a).bind(b).fetch_all(&self.pool).await.map_err(pg)
    }
}

#[async_trait::async_trait]
impl ImageStore for PostgresImages {
    async fn space(&self) -> Result<Option<Space>, StoreError> {
        if let Some(space) = self.space.get() {
            return Ok(Some(space.clone()));
        }
        let row: Option<(String, i32)> =
            sqlx::query_as("SELECT model_id, dimensions FROM mmc_spaces WHERE store = 'images'").fetch_optional(&self.pool).await.map_err(pg)?;
        Ok(row.map(|(model_id, dimensions)| self.space.get_or_init(|| Space { model_id, dimensions: dimensions as u32 }).clone()))
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM mmc_images").fetch_one(&self.pool).await.map_err(pg)?;
        Ok(n as u64)
    }

    async fn review_count(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM mmc_images WHERE needs_review").fetch_one(&self.pool).await.map_err(pg)?;
        Ok(n as u64)
    }

    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let row =
            sqlx::query("SELECT seq, record FROM mmc_images WHERE image_id = $1").bind(image_id).fetch_optional(&self.pool).await.map_err(pg)?;
        row.as_ref().map(record).transpose()
    }

    async fn insert_many(&self, items: Vec<(ImageRecord, ImageVectors)>, space: Space) -> Result<Vec<ImageRecord>, StoreError> {
        for (_, v) in &items {
            check_dimensions(&[&v.image, &v.caption], &space)?;
        }
        let mut tx = self.pool.begin().await.map_err(pg)?;
        lock_changes(&mut tx).await?;
        self.ensure_space(&mut tx, &space).await?;
        let mut stored = Vec::with_capacity(items.len());
        for (mut record, vectors) in items {
            let fused = vectors.fused();
            let (seq,): (i64,) = sqlx::query_as(UPSERT)
                .bind(&record.image_id)
                .bind(&record.content_hash)
                .bind(Json(&record))
                .bind(record.review.needs_review)
                .bind(record.review.caption_confidence)
                .bind(record.review.version as i64)
                .bind(Vector::from(vectors.image))
                .bind(Vector::from(vectors.caption))
                .bind(Vector::from(fused))
                .fetch_one(&mut *tx)
                .await
                .map_err(pg)?;
            record.seq = seq as u64;
            stored.push(record);
        }
        // Committed (and synced, PostgreSQL's default) before the images are acknowledged.
        tx.commit().await.map_err(pg)?;
        Ok(stored)
    }

    async fn begin_bulk_load(&self) -> Result<(), StoreError> {
        self.bulk.store(true, Ordering::SeqCst);
        sqlx::query("DROP INDEX IF EXISTS mmc_images_fused_hnsw").execute(&self.pool).await.map_err(pg)?;
        Ok(())
    }

    async fn end_bulk_load(&self) -> Result<(), StoreError> {
        self.bulk.store(false, Ordering::SeqCst);
        self.build_index_if_missing().await.map(|_| ())
    }

    async fn wait_for_index(&self) -> Result<(), StoreError> {
        match &self.codes {
            Some(codes) => codes.wait_ready().await,
            None => Ok(()),
        }
    }

    async fn delete(&self, image_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        lock_changes(&mut tx).await?;
        let done = sqlx::query("DELETE FROM mmc_images WHERE image_id = $1").bind(image_id).execute(&mut *tx).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list(&self, after: u64, limit: usize) -> Result<Page, StoreError> {
        let rows = self.rows("SELECT seq, record FROM mmc_images WHERE seq >= $1 ORDER BY seq LIMIT $2", after as i64, limit as i64 + 1).await?;
        let mut images = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let next = (images.len() > limit).then(|| images.pop().expect("one more than the page").seq);
        Ok(Page { images, next })
    }

    async fn export(&self, after: u64, limit: usize) -> Result<(Vec<(ImageRecord, ImageVectors)>, Option<u64>), StoreError> {
        let sql = "SELECT seq, record, image_vector, caption_vector FROM mmc_images WHERE seq >= $1 ORDER BY seq LIMIT $2";
        let rows = self.rows(sql, after as i64, limit as i64 + 1).await?;
        let mut images = Vec::with_capacity(rows.len());
        for row in &rows {
            let image: Vector = row.try_get("image_vector").map_err(pg)?;
            let caption: Vector = row.try_get("caption_vector").map_err(pg)?;
            images.push((record(row)?, ImageVectors { image: image.to_vec(), caption: caption.to_vec() }));
        }
        let next = (images.len() > limit).then(|| images.pop().expect("one more than the page").0.seq);
        Ok((images, next))
    }

    async fn search(&self, query: SearchQuery) -> Result<Vec<(ImageRecord, f32)>, StoreError> {
        match self.space().await? {
            Some(stored) if stored != query.space => return Err(StoreError::SpaceMismatch { stored, offered: query.space }),
            None => return Ok(Vec::new()),
            Some(_) => {}
        }
        check_dimensions(&[&query.vector], &query.space)?;
        if query.top_k == 0 {
            return Ok(Vec::new());
        }
        let weight = query.fusion.image_weight.clamp(0.0, 1.0);
        let top_k = query.top_k as i64;
        let breadth = crate::store::ann_candidates(query.top_k, query.breadth);
        let fused_order = query.metadata_filter.is_empty() && weight == INDEXED_WEIGHT;
        let codes = match &self.codes {
            Some(codes) if fused_order => codes.candidates(query.vector.clone(), breadth).await?,
            _ => None,
        };
        let rows = if let Some(seqs) = codes {
            let norm = query.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            let unit = Vector::from(query.vector.iter().map(|x| if norm > 0.0 { x / norm } else { 0.0 }).collect::<Vec<_>>());
            sqlx::query(RESCORE).bind(unit).bind(seqs).bind(top_k).fetch_all(&self.pool).await.map_err(pg)?
        } else if fused_order {
            let vector = Vector::from(query.vector);
            // The search breadth is per transaction (SET LOCAL), so pooled connections
            // keep the server's default for anything else.
            let mut tx = self.pool.begin().await.map_err(pg)?;
            // Also the search breadth (`hnsw.ef_search`, which must be at least as many).
            let breadth = breadth as i64;
            sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)").bind(breadth.to_string()).execute(&mut *tx).await.map_err(pg)?;
            let rows = sqlx::query(APPROXIMATE_SEARCH)
                .bind(vector)
                .bind(f64::from(weight))
                .bind(breadth)
                .bind(top_k)
                .fetch_all(&mut *tx)
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            rows
        } else {
            let vector = Vector::from(query.vector);
            sqlx::query(EXACT_SEARCH)
                .bind(vector)
                .bind(f64::from(weight))
                .bind(Json(&query.metadata_filter))
                .bind(top_k)
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?
        };
        // Ordered best first, so the threshold can be applied after the limit.
        let mut hits = Vec::with_capacity(rows.len());
        for row in &rows {
            let score: f32 = row.try_get("score").map_err(pg)?;
            if score >= query.score_threshold {
                hits.push((record(row)?, score));
            }
        }
        Ok(hits)
    }

    async fn update(&self, mut record: ImageRecord, caption_vector: Option<Vec<f32>>, expected_version: u64) -> Result<ImageRecord, StoreError> {
        if let (Some(v), Some(space)) = (&caption_vector, self.space().await?) {
            check_dimensions(&[v], &space)?;
        }
        record.review.version = expected_version + 1;
        let mut tx = self.pool.begin().await.map_err(pg)?;
        lock_changes(&mut tx).await?;
        let updated: Option<(i64,)> = sqlx::query_as(
            "UPDATE mmc_images SET record = $2, needs_review = $3, caption_confidence = $4, version = $5, \
             caption_vector = COALESCE($6::vector, caption_vector), fused_vector = COALESCE(image_vector + $6::vector, fused_vector) \
             WHERE image_id = $1 AND version = $7 RETURNING seq",
        )
        .bind(&record.image_id)
        .bind(Json(&record))
        .bind(record.review.needs_review)
        .bind(record.review.caption_confidence)
        .bind(record.review.version as i64)
        .bind(caption_vector.map(Vector::from))
        .bind(expected_version as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        if let Some((seq,)) = updated {
            record.seq = seq as u64;
            return Ok(record);
        }
        let current: Option<(i64,)> = sqlx::query_as("SELECT version FROM mmc_images WHERE image_id = $1")
            .bind(&record.image_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        Err(match current {
            None => StoreError::Missing(record.image_id),
            Some((current,)) => StoreError::Conflict { image_id: record.image_id, expected: expected_version, current: current as u64 },
        })
    }

    async fn review_queue(&self, offset: usize, limit: usize) -> Result<(Vec<ImageRecord>, bool), StoreError> {
        let sql = "SELECT seq, record FROM mmc_images WHERE needs_review ORDER BY caption_confidence, seq OFFSET $1 LIMIT $2";
        let rows = self.rows(sql, offset as i64, limit as i64 + 1).await?;
        let mut images = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let more = images.len() > limit;
        images.truncate(limit);
        Ok((images, more))
    }
}
