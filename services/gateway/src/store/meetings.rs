//! The meeting store: each summarized meeting (transcript, summary) and the embeddings of
//! its segments (for AskMeeting's retrieval), in a redb file beside the image index.
//!
//! A meeting is kept as its `gateway.v1.Meeting` protobuf encoding: the contract's own
//! versioned, forward-compatible serialization, so a stored meeting reads back exactly as
//! GetMeeting returns it. Segment vectors are stored apart, little-endian f32, with the
//! space they belong to.

use std::{path::Path, sync::Arc};

use mmc_proto::gateway::v1::Meeting;
use prost::Message;
use redb::{Database, ReadableDatabase, TableDefinition};

use super::{engine, open_redb, Space, StoreError};

const MEETINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("meetings");
const SEGMENT_VECTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("segment_vectors");
const SPACES: TableDefinition<&str, &str> = TableDefinition::new("spaces");

/// A meeting as stored: what GetMeeting returns, plus one unit vector per segment.
pub struct StoredMeeting {
    pub meeting: Meeting,
    /// `vectors[i]` embeds `meeting.segments[i]`.
    pub vectors: Vec<Vec<f32>>,
    pub space: Space,
}

/// Meetings on local disk (see the module docs).
pub struct MeetingStore {
    db: Arc<Database>,
}

impl MeetingStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_redb(dir, "meetings.redb", |txn| {
            txn.open_table(MEETINGS)?;
            txn.open_table(SEGMENT_VECTORS)?;
            txn.open_table(SPACES)?;
            Ok(())
        })?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Stores a meeting durably (the commit waits for the disk).
    pub async fn put(&self, meeting: &Meeting, vectors: &[Vec<f32>], space: &Space) -> Result<(), StoreError> {
        if vectors.len() != meeting.segments.len() {
            return Err(StoreError::Engine(format!("{} vectors for {} segments", vectors.len(), meeting.segments.len())));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != space.dimensions as usize) {
            return Err(StoreError::Dimension { got: v.len(), want: space.dimensions as usize });
        }
        let id = meeting.meeting_id.clone();
        let bytes = meeting.encode_to_vec();
        let floats: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
        let space = serde_json::to_string(space).map_err(engine)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(engine)?;
            txn.open_table(MEETINGS).map_err(engine)?.insert(id.as_str(), bytes.as_slice()).map_err(engine)?;
            txn.open_table(SEGMENT_VECTORS).map_err(engine)?.insert(id.as_str(), floats.as_slice()).map_err(engine)?;
            txn.open_table(SPACES).map_err(engine)?.insert(id.as_str(), space.as_str()).map_err(engine)?;
            txn.commit().map_err(engine)
        })
        .await
        .map_err(engine)?
    }

    /// The meeting with this id.
    pub async fn get(&self, meeting_id: &str) -> Result<Option<StoredMeeting>, StoreError> {
        let db = self.db.clone();
        let id = meeting_id.to_string();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(engine)?;
            let Some(bytes) = txn.open_table(MEETINGS).map_err(engine)?.get(id.as_str()).map_err(engine)? else {
                return Ok(None);
            };
            let meeting = Meeting::decode(bytes.value()).map_err(engine)?;
            let space: Space = match txn.open_table(SPACES).map_err(engine)?.get(id.as_str()).map_err(engine)? {
                Some(s) => serde_json::from_str(s.value()).map_err(engine)?,
                None => return Err(StoreError::Engine(format!("meeting {id} has no space"))),
            };
            let floats = txn.open_table(SEGMENT_VECTORS).map_err(engine)?.get(id.as_str()).map_err(engine)?;
            let floats: Vec<f32> =
                floats.map(|b| b.value().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()).unwrap_or_default();
            let dims = (space.dimensions as usize).max(1);
            let vectors: Vec<Vec<f32>> = floats.chunks(dims).map(<[f32]>::to_vec).collect();
            if vectors.len() != meeting.segments.len() {
                return Err(StoreError::Engine(format!("meeting {id}: {} vectors for {} segments", vectors.len(), meeting.segments.len())));
            }
            Ok(Some(StoredMeeting { meeting, vectors, space }))
        })
        .await
        .map_err(engine)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmc_proto::speech::v1::Segment;

    #[tokio::test]
    async fn meetings_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space { model_id: "m".into(), dimensions: 2 };
        let meeting = Meeting {
            meeting_id: "mtg-1".into(),
            title: "Weekly".into(),
            segments: vec![
                Segment { id: 0, text: "hello".into(), ..Default::default() },
                Segment { id: 1, text: "bye".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        {
            let store = MeetingStore::open(dir.path()).unwrap();
            store.put(&meeting, &[vec![1.0, 0.0], vec![0.0, 1.0]], &space).await.unwrap();
            assert!(store.put(&meeting, &[vec![1.0, 0.0]], &space).await.is_err());
        }
        let store = MeetingStore::open(dir.path()).unwrap();
        let got = store.get("mtg-1").await.unwrap().unwrap();
        assert_eq!(got.meeting, meeting);
        assert_eq!(got.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(got.space, space);
        assert!(store.get("nope").await.unwrap().is_none());
    }
}
