//! Meetings in PostgreSQL: one row per meeting, the gateway's [`Meeting`] as `jsonb` and
//! the segment vectors beside it (see `migrations/`).

use sqlx::{types::Json, PgPool, Row as _};

use super::pg;
use crate::domain::Meeting;
use crate::store::{bytes_to_vectors, check_meeting_vectors, floats_to_bytes, MeetingChange, MeetingStore, Space, StoreError, StoredMeeting};

/// Meetings in PostgreSQL.
pub struct PostgresMeetings {
    pool: PgPool,
}

impl PostgresMeetings {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait::async_trait]
impl MeetingStore for PostgresMeetings {
    async fn put(&self, meeting: &Meeting, vectors: &[Vec<f32>], space: &Space) -> Result<(), StoreError> {
        check_meeting_vectors(meeting, vectors, space)?;
        sqlx::query(
            "INSERT INTO mmc_meetings (meeting_id, created_at_unix_ms, meeting, space_model_id, space_dimensions, segment_vectors) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (meeting_id) DO UPDATE SET created_at_unix_ms = EXCLUDED.created_at_unix_ms, \
             meeting = EXCLUDED.meeting, space_model_id = EXCLUDED.space_model_id, space_dimensions = EXCLUDED.space_dimensions, \
             segment_vectors = EXCLUDED.segment_vectors",
        )
        .bind(&meeting.meeting_id)
        .bind(meeting.created_at_unix_ms)
        .bind(Json(meeting))
        .bind(&space.model_id)
        .bind(space.dimensions as i32)
        .bind(floats_to_bytes(vectors))
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn get(&self, meeting_id: &str) -> Result<Option<StoredMeeting>, StoreError> {
        let row = sqlx::query("SELECT meeting, space_model_id, space_dimensions, segment_vectors FROM mmc_meetings WHERE meeting_id = $1")
            .bind(meeting_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let Json(meeting): Json<Meeting> = row.try_get("meeting").map_err(pg)?;
        let space =
            Space { model_id: row.try_get("space_model_id").map_err(pg)?, dimensions: row.try_get::<i32, _>("space_dimensions").map_err(pg)? as u32 };
        let vectors = bytes_to_vectors(row.try_get::<&[u8], _>("segment_vectors").map_err(pg)?, space.dimensions as usize);
        if vectors.len() != meeting.segments.len() {
            return Err(StoreError::Engine(format!("meeting {meeting_id}: {} vectors for {} segments", vectors.len(), meeting.segments.len())));
        }
        Ok(Some(StoredMeeting { meeting, vectors, space }))
    }

    async fn list(&self) -> Result<Vec<Meeting>, StoreError> {
        let rows: Vec<(Json<Meeting>,)> = sqlx::query_as("SELECT meeting FROM mmc_meetings ORDER BY created_at_unix_ms DESC, meeting_id")
            .fetch_all(&self.pool)
            .await
            .map_err(pg)?;
        Ok(rows.into_iter().map(|(Json(m),)| m).collect())
    }

    async fn delete(&self, meeting_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM mmc_meetings WHERE meeting_id = $1").bind(meeting_id).execute(&self.pool).await.map_err(pg)?;
        Ok(done.rows_affected() > 0)
    }

    /// The row is locked (`FOR UPDATE`) from the read to the commit, so a change on another
    /// gateway waits for this one and then sees it.
    async fn update(&self, meeting_id: &str, change: MeetingChange) -> Result<Option<Meeting>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        let row: Option<(Json<Meeting>,)> = sqlx::query_as("SELECT meeting FROM mmc_meetings WHERE meeting_id = $1 FOR UPDATE")
            .bind(meeting_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?;
        let Some((Json(mut meeting),)) = row else {
            return Ok(None);
        };
        if !change(&mut meeting) {
            // Refused: the transaction rolls back when dropped.
            return Ok(Some(meeting));
        }
        sqlx::query("UPDATE mmc_meetings SET meeting = $2 WHERE meeting_id = $1")
            .bind(meeting_id)
            .bind(Json(&meeting))
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(meeting))
    }
}
