//! Thumbnails of indexed images (see [`ThumbnailStore`]): a small JPEG per image id, in a
//! redb file beside the image index.

use std::{path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::open_redb;
use crate::store::{engine, StoreError, ThumbnailStore};

const THUMBNAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("thumbnails");

/// Thumbnails on local disk, by image id.
pub struct EmbeddedThumbnails {
    db: Arc<Database>,
}

impl EmbeddedThumbnails {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_redb(dir, "thumbnails.redb", |txn| txn.open_table(THUMBNAILS).map(drop))?;
        Ok(Self { db: Arc::new(db) })
    }
}

#[async_trait::async_trait]
impl ThumbnailStore for EmbeddedThumbnails {
    async fn put(&self, image_id: &str, jpeg: Vec<u8>) -> Result<(), StoreError> {
        let (db, id) = (self.db.clone(), image_id.to_string());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(engine)?;
            txn.open_table(THUMBNAILS).map_err(engine)?.insert(id.as_str(), jpeg.as_slice()).map_err(engine)?;
            txn.commit().map_err(engine)
        })
        .await
        .map_err(engine)?
    }

    async fn get(&self, image_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (db, id) = (self.db.clone(), image_id.to_string());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(engine)?;
            let table = txn.open_table(THUMBNAILS).map_err(engine)?;
            Ok(table.get(id.as_str()).map_err(engine)?.map(|v| v.value().to_vec()))
        })
        .await
        .map_err(engine)?
    }

    async fn delete(&self, image_id: &str) -> Result<(), StoreError> {
        let (db, id) = (self.db.clone(), image_id.to_string());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(engine)?;
            txn.open_table(THUMBNAILS).map_err(engine)?.remove(id.as_str()).map_err(engine)?;
            txn.commit().map_err(engine)
        })
        .await
        .map_err(engine)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn thumbnails_survive_reopen_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedThumbnails::open(dir.path()).unwrap();
            store.put("img-1", vec![1, 2, 3]).await.unwrap();
            store.put("img-2", vec![4]).await.unwrap();
            store.delete("img-2").await.unwrap();
            store.delete("img-none").await.unwrap();
        }
        let store = EmbeddedThumbnails::open(dir.path()).unwrap();
        assert_eq!(store.get("img-1").await.unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(store.get("img-2").await.unwrap(), None);
    }
}
