//! Thumbnails in PostgreSQL (`bytea`, a few tens of kilobytes each).

use sqlx::PgPool;

use super::pg;
use crate::store::{StoreError, ThumbnailStore};

/// Thumbnails in PostgreSQL.
pub struct PostgresThumbnails {
    pool: PgPool,
}

impl PostgresThumbnails {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait::async_trait]
impl ThumbnailStore for PostgresThumbnails {
    async fn put(&self, image_id: &str, jpeg: Vec<u8>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO mmc_thumbnails (image_id, jpeg) VALUES ($1, $2) ON CONFLICT (image_id) DO UPDATE SET jpeg = EXCLUDED.jpeg")
            .bind(image_id)
            .bind(jpeg)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn get(&self, image_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT jpeg FROM mmc_thumbnails WHERE image_id = $1").bind(image_id).fetch_optional(&self.pool).await.map_err(pg)?;
        Ok(row.map(|(jpeg,)| jpeg))
    }

    async fn delete(&self, image_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mmc_thumbnails WHERE image_id = $1").bind(image_id).execute(&self.pool).await.map_err(pg)?;
        Ok(())
    }
}
