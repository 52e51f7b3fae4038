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

use super::{legacy, open_redb};
use crate::domain::Meeting;
use crate::store::{bytes_to_vectors, check_meeting_vectors, engine, floats_to_bytes, MeetingChange, MeetingStore, Space, StoreError, StoredMeeting};

const MEETINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("meetings");
const SEGMENT_VECTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("segment_vectors");
const SPACES: TableDefinition<&str, &str> = TableDefinition::new("spaces");

/// Meetings on local disk (see the module docs).
pub struct EmbeddedMeetings {
    db: Arc<Database>,
}

impl EmbeddedMeetings {
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
}

#[async_trait::async_trait]
impl MeetingStore for EmbeddedMeetings {
    /// Stores a meeting durably (the commit waits for the disk).
    async fn put(&self, meeting: &Meeting, vectors: &[Vec<f32>], space: &Space) -> Result<(), StoreError> {
        check_meeting_vectors(meeting, vectors, space)?;
        let id = meeting.meeting_id.clone();
        let bytes = serde_json::to_vec(meeting).map_err(engine)?;
        let floats = floats_to_bytes(vectors);
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

    /// One write transaction: redb runs them one at a time.
    async fn update(&self, meeting_id: &str, change: MeetingChange) -> Result<Option<Meeting>, StoreError> {
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
            if !change(&mut meeting) {
                return Ok(Some(meeting));
            }
            let bytes = serde_json::to_vec(&meeting).map_err(engine)?;
            txn.open_table(MEETINGS).map_err(engine)?.insert(id.as_str(), bytes.as_slice()).map_err(engine)?;
            txn.commit().map_err(engine)?;
            Ok(Some(meeting))
        })
        .await
        .map_err(engine)?
    }

    /// Read whole: fine for the thousands of meetings one gateway keeps; a deployment past
    /// that uses the PostgreSQL engine.
    async fn list(&self) -> Result<Vec<Meeting>, StoreError> {
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
    async fn delete(&self, meeting_id: &str) -> Result<bool, StoreError> {
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
    async fn get(&self, meeting_id: &str) -> Result<Option<StoredMeeting>, StoreError> {
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
            let vectors = floats.map(|b| bytes_to_vectors(b.value(), space.dimensions as usize)).unwrap_or_default();
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
    use crate::store::update_meeting;

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
            let store = EmbeddedMeetings::open(dir.path()).unwrap();
            store.put(&meeting, &[vec![1.0, 0.0], vec![0.0, 1.0]], &space).await.unwrap();
            assert!(store.put(&meeting, &[vec![1.0, 0.0]], &space).await.is_err());
        }
        let store = EmbeddedMeetings::open(dir.path()).unwrap();
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
        let changed = update_meeting(&store, "mtg-1", |m: &mut Meeting| {
            m.title = "Weekly sync".into();
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(changed.title, "Weekly sync");
        let refused = update_meeting(&store, "mtg-1", |m: &mut Meeting| {
            m.title = "lost".into();
            Err(StoreError::Engine("refused".into()))
        })
        .await;
        assert!(refused.is_err());
        assert!(update_meeting(&store, "nope", |_: &mut Meeting| Ok::<_, StoreError>(())).await.unwrap().is_none());
        drop(store);
        let store = EmbeddedMeetings::open(dir.path()).unwrap();
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
            let store = EmbeddedMeetings::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(MEETINGS).unwrap().insert("mtg-old", old.encode_to_vec().as_slice()).unwrap();
            txn.open_table(SEGMENT_VECTORS).unwrap().insert("mtg-old", 1f32.to_le_bytes().as_slice()).unwrap();
            txn.open_table(SPACES).unwrap().insert("mtg-old", serde_json::to_string(&space).unwrap().as_str()).unwrap();
            txn.commit().unwrap();
        }
        let got = EmbeddedMeetings::open(dir.path()).unwrap().get("mtg-old").await.unwrap().unwrap().meeting;
        assert_eq!((got.title.as_str(), got.segments[0].id, got.segments[0].text.as_str()), ("Old", 3, "we ship"));
        let summary = got.summary.unwrap();
        assert_eq!(summary.decisions[0].segment_ids, [3]);
        assert_eq!((summary.action_items[0].owner.as_str(), summary.action_items[0].item.text.as_str()), ("Bo", "Bo will test"));
    }
}
