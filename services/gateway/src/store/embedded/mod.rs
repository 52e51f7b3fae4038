//! The embedded engine (the default): redb files on local disk.
//!
//! Why redb: a maintained, ACID, crash-safe embedded key-value engine in pure Rust (a
//! committed transaction survives a crash or power loss), so durability is not ours to get
//! right. One gateway process owns the files; for several gateways on one data set use the
//! [`super::postgres`] engine.
//!
//! Layout under the data directory: `images/images.redb` (the image index),
//! `images/thumbnails.redb`, `meetings/meetings.redb`.

mod ann;
pub mod images;
mod legacy;
pub mod meetings;
pub mod thumbnails;

use std::{path::Path, sync::Arc};

pub use images::EmbeddedStore;
pub use meetings::EmbeddedMeetings;
pub use thumbnails::EmbeddedThumbnails;

use super::{engine, SearchIndex, StoreError, Stores};

/// Opens (or creates) the three stores under `data_dir`, the image index searching
/// through `index`.
pub fn open(data_dir: &Path, index: SearchIndex) -> Result<Stores, StoreError> {
    Ok(Stores {
        images: Arc::new(EmbeddedStore::open_with(&data_dir.join("images"), index)?),
        meetings: Arc::new(EmbeddedMeetings::open(&data_dir.join("meetings"))?),
        thumbnails: Arc::new(EmbeddedThumbnails::open(&data_dir.join("images"))?),
    })
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
