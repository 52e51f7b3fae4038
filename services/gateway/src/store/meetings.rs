//! The meeting store: each summarized meeting (transcript, summary) and the embeddings of
//! its segments (for AskMeeting's retrieval), in a redb file beside the image index.
//!
//! A meeting is kept as the JSON of the gateway's own [`Meeting`] type (fields added later
//! carry serde defaults, so older rows still read). Rows written before the store held
//! its own types are `gateway.v1.Meeting` protobuf; they are told apart by their first
//! byte (JSON starts with `{`, that protobuf with field 1's tag) and read by [`legacy`].
//! Segment vectors are stored apart, little-endian f32, with the space they belong to.

use std::{path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{engine, legacy, open_redb, Space, StoreError};
use crate::domain::Meeting;

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
        let bytes = serde_json::to_vec(meeting).map_err(engine)?;
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

    /// Changes a stored meeting in one write transaction: reads it, lets `change` edit it,
    /// and writes it back only when `change` succeeds. Write transactions run one at a time,
    /// so a change always sees the one before it (two reviewers' edits are never interleaved
    /// and lost). `Ok(None)` when there is no such meeting.
    pub async fn update<E>(&self, meeting_id: &str, change: impl FnOnce(&mut Meeting) -> Result<(), E> + Send + 'static) -> Result<Option<Meeting>, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        let id = meeting_id.to_string();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(engine)?;
            let mut meeting = {
                let table = txn.open_table(MEETINGS).map_err(engine)?;
                let Some(bytes) = table.get(id.as_str()).map_err(engine)? else {
                    return Ok(None);
                };
                read_meeting(bytes.value())?
            };
            change(&mut meeting)?;
            let bytes = serde_json::to_vec(&meeting).map_err(engine)?;
            txn.open_table(MEETINGS).map_err(engine)?.insert(id.as_str(), bytes.as_slice()).map_err(engine)?;
            txn.commit().map_err(engine)?;
            Ok(Some(meeting))
        })
        .await
        .map_err(|e| E::from(engine(e)))?
    }

    /// Every stored meeting, newest first (read whole: fine for the thousands of meetings
    /// one gateway keeps; a deployment past that uses the PostgreSQL store of issue #29).
    pub async fn list(&self) -> Result<Vec<Meeting>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(engine)?;
            let table = txn.open_table(MEETINGS).map_err(engine)?;
            let mut all = Vec::new();
            for row in table.iter().map_err(engine)? {
                let (_, bytes) = row.map_err(engine)?;
                all.push(read_meeting(bytes.value())?);
            }
            all.sort_by(|a: &Meeting, b: &Meeting| b.created_at_unix_ms.cmp(&a.created_at_unix_ms).then_with(|| a.meeting_id.cmp(&b.meeting_id)));
            Ok(all)
        })
        .await
        .map_err(engine)?
    }

    /// Deletes a meeting and its vectors in one transaction; false when there was none.
    pub async fn delete(&self, meeting_id: &str) -> Result<bool, StoreError> {
        let db = self.db.clone();
        let id = meeting_id.to_string();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(engine)?;
            let existed = txn.open_table(MEETINGS).map_err(engine)?.remove(id.as_str()).map_err(engine)?.is_some();
            txn.open_table(SEGMENT_VECTORS).map_err(engine)?.remove(id.as_str()).map_err(engine)?;
            txn.open_table(SPACES).map_err(engine)?.remove(id.as_str()).map_err(engine)?;
            txn.commit().map_err(engine)?;
            Ok(existed)
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
            let meeting = read_meeting(bytes.value())?;
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

/// A stored row: JSON, or the protobuf of earlier versions.
fn read_meeting(bytes: &[u8]) -> Result<Meeting, StoreError> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(engine)
    } else {
        legacy::meeting(bytes).map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionItem, CitedItem, MeetingSummary, Segment};

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
            summary: Some(MeetingSummary {
                action_items: vec![ActionItem {
                    item: CitedItem { text: "Ann will call".into(), segment_ids: vec![1], citation_verified: true, ..Default::default() },
                    owner: "Ann".into(),
                    due: String::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        {
            let store = MeetingStore::open(dir.path()).unwrap();
            store.put(&meeting, &[vec![1.0, 0.0], vec![0.0, 1.0]], &space).await.unwrap();
            assert!(store.put(&meeting, &[vec![1.0, 0.0]], &space).await.is_err());
        }
        let store = MeetingStore::open(dir.path()).unwrap();
        // Only the owner may read the transcripts.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join("meetings.redb")), 0o600);
            assert_eq!(mode(dir.path()), 0o700);
        }
        let got = store.get("mtg-1").await.unwrap().unwrap();
        assert_eq!(got.meeting, meeting);
        assert_eq!(got.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(got.space, space);
        assert!(store.get("nope").await.unwrap().is_none());
        // A change is written whole or not at all, and survives a reopen.
        let changed = store
            .update("mtg-1", |m: &mut Meeting| {
                m.title = "Weekly sync".into();
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.title, "Weekly sync");
        let refused = store
            .update("mtg-1", |m: &mut Meeting| {
                m.title = "lost".into();
                Err(StoreError::Engine("refused".into()))
            })
            .await;
        assert!(refused.is_err());
        assert!(store.update("nope", |_: &mut Meeting| Ok::<_, StoreError>(())).await.unwrap().is_none());
        drop(store);
        let store = MeetingStore::open(dir.path()).unwrap();
        let got = store.get("mtg-1").await.unwrap().unwrap();
        assert_eq!(got.meeting.title, "Weekly sync");
        assert_eq!(got.vectors.len(), 2, "segment vectors are kept");
        assert_eq!(store.list().await.unwrap().len(), 1);
        assert!(store.delete("mtg-1").await.unwrap());
        assert!(!store.delete("mtg-1").await.unwrap());
        assert!(store.get("mtg-1").await.unwrap().is_none() && store.list().await.unwrap().is_empty());
    }

    /// A row written by an earlier version (protobuf) still reads, as the same meeting.
    #[tokio::test]
    async fn protobuf_rows_of_earlier_versions_read() {
        use mmc_proto::gateway::v1 as pb;
        use prost::Message as _;
        let dir = tempfile::tempdir().unwrap();
        let space = Space { model_id: "m".into(), dimensions: 1 };
        let old = pb::Meeting {
            meeting_id: "mtg-old".into(),
            title: "Old".into(),
            segments: vec![mmc_proto::speech::v1::Segment { id: 3, text: "we ship".into(), ..Default::default() }],
            summary: Some(pb::MeetingSummary {
                decisions: vec![pb::CitedItem { text: "we ship".into(), segment_ids: vec![3], citation_verified: true, ..Default::default() }],
                action_items: vec![pb::ActionItem {
                    item: Some(pb::CitedItem { text: "Bo will test".into(), segment_ids: vec![3], citation_verified: true, ..Default::default() }),
                    owner: "Bo".into(),
                    due: "Friday".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        {
            let store = MeetingStore::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(MEETINGS).unwrap().insert("mtg-old", old.encode_to_vec().as_slice()).unwrap();
            txn.open_table(SEGMENT_VECTORS).unwrap().insert("mtg-old", 1f32.to_le_bytes().as_slice()).unwrap();
            txn.open_table(SPACES).unwrap().insert("mtg-old", serde_json::to_string(&space).unwrap().as_str()).unwrap();
            txn.commit().unwrap();
        }
        let got = MeetingStore::open(dir.path()).unwrap().get("mtg-old").await.unwrap().unwrap().meeting;
        assert_eq!((got.title.as_str(), got.segments[0].id, got.segments[0].text.as_str()), ("Old", 3, "we ship"));
        let summary = got.summary.unwrap();
        assert_eq!(summary.decisions[0].segment_ids, [3]);
        assert_eq!((summary.action_items[0].owner.as_str(), summary.action_items[0].item.text.as_str()), ("Bo", "Bo will test"));
    }
}
