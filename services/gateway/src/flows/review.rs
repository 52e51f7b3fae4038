//! Human review of indexed images: a person corrects or approves what the machine wrote.
//!
//! Why here and not in the store: a correction is a flow. A new alt text is re-embedded
//! (the caption vector is half of every search score), so search finds the image by the
//! person's words at once; the machine draft moves to the record's history; and the change
//! is applied only on the version the person saw (optimistic concurrency: two reviewers who
//! edit the same image at once do not silently overwrite each other, the later one gets
//! [`GatewayError::Conflict`]).

use super::{limits::*, Flows};
use crate::{
    domain::{ImageEdit, ImageRecord, TextRevision, TextSource},
    error::{shown, GatewayError},
    flows::images::{check_metadata, now_unix_ms},
    store::StoreError,
    upstream::Deadline,
};

/// The reviewer's name, checked: required, bounded.
pub fn check_reviewer(reviewer: &str) -> Result<String, GatewayError> {
    let reviewer = reviewer.trim();
    if reviewer.is_empty() {
        return Err(GatewayError::Invalid("reviewer is required: say who makes the change".into()));
    }
    if reviewer.chars().count() > MAX_REVIEWER_CHARS {
        return Err(GatewayError::Invalid(format!("reviewer is over {MAX_REVIEWER_CHARS} characters")));
    }
    Ok(reviewer.to_string())
}

/// A person's text, checked: trimmed, not empty, at most `max` characters.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<String, GatewayError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(GatewayError::Invalid(format!("{field} is empty")));
    }
    if text.chars().count() > max {
        return Err(GatewayError::Invalid(format!("{field} is over {max} characters")));
    }
    Ok(text.to_string())
}

/// A store conflict as the client's error, or any other store error unchanged.
fn conflict(e: StoreError) -> GatewayError {
    match e {
        StoreError::Conflict { image_id, expected, current } => GatewayError::Conflict(format!(
            "image {} was changed by someone else (version {current}, your change was made on version {expected}); reload it and apply your change again",
            shown(&image_id)
        )),
        e => e.into(),
    }
}

impl Flows {
    /// One indexed image.
    pub async fn get_image(&self, image_id: &str) -> Result<ImageRecord, GatewayError> {
        if image_id.is_empty() {
            return Err(GatewayError::Invalid("image_id is empty".into()));
        }
        self.store.get(image_id).await?.ok_or_else(|| GatewayError::NotFound(format!("no image with id {}", shown(image_id))))
    }

    /// The stored image, checked against the version the client's change was made on.
    async fn image_for_change(&self, image_id: &str, expected_version: Option<u64>) -> Result<ImageRecord, GatewayError> {
        let record = self.get_image(image_id).await?;
        if let Some(expected) = expected_version.filter(|v| *v != record.review.version) {
            return Err(conflict(StoreError::Conflict { image_id: image_id.into(), expected, current: record.review.version }));
        }
        Ok(record)
    }

    /// Applies a person's correction (see the module docs).
    pub async fn update_image(&self, edit: ImageEdit, deadline: Deadline) -> Result<ImageRecord, GatewayError> {
        let reviewer = check_reviewer(&edit.reviewer)?;
        let alt_text = edit.alt_text.as_deref().map(|t| check_text("alt_text", t, MAX_ALT_TEXT_CHARS)).transpose()?;
        let description = match edit.description.as_deref() {
            // An empty description removes it.
            Some(t) if t.trim().is_empty() => Some(String::new()),
            Some(t) => Some(check_text("description", t, MAX_DESCRIPTION_CHARS)?),
            None => None,
        };
        if let Some(m) = &edit.metadata {
            check_metadata(m, "metadata")?;
        }
        if alt_text.is_none() && description.is_none() && edit.metadata.is_none() {
            return Err(GatewayError::Invalid("nothing to change: give alt_text, description or metadata".into()));
        }
        let mut record = self.image_for_change(&edit.image_id, edit.expected_version).await?;
        let version = record.review.version;
        let now = now_unix_ms();
        let mut caption_vector = None;
        if let Some(text) = alt_text.filter(|t| *t != record.caption) {
            // Embedded before anything is stored: a failed embed changes nothing.
            let (embedded, _) = self.upstream.embed_text("embed_caption", &text, deadline).await?;
            if let Some(stored) = self.store.space().await?.filter(|s| *s != embedded.space) {
                return Err(StoreError::SpaceMismatch { stored, offered: embedded.space }.into());
            }
            let old = std::mem::replace(&mut record.caption, text);
            record.review.history.push(revision("alt_text", old, record.review.caption_source, &reviewer, now));
            record.review.caption_source = TextSource::Human;
            caption_vector = Some(embedded.vector);
        }
        if let Some(text) = description.filter(|t| *t != record.review.description) {
            let old = std::mem::replace(&mut record.review.description, text);
            if !old.is_empty() {
                record.review.history.push(revision("description", old, TextSource::Human, &reviewer, now));
            }
        }
        if let Some(metadata) = edit.metadata {
            record.metadata = metadata;
        }
        // A person looked at the image and left it as they want it.
        record.review.needs_review = false;
        record.review.reviewed_by = reviewer;
        record.review.reviewed_at_unix_ms = now;
        let stored = self.store.update(record, caption_vector, version).await.map_err(conflict)?;
        metrics::counter!("mmc_gateway_reviews_total", "action" => "update").increment(1);
        self.refresh_gauges().await;
        Ok(stored)
    }

    /// A person approves the stored alt text as it stands.
    pub async fn approve_image(&self, image_id: &str, reviewer: &str, expected_version: Option<u64>) -> Result<ImageRecord, GatewayError> {
        let reviewer = check_reviewer(reviewer)?;
        let mut record = self.image_for_change(image_id, expected_version).await?;
        let version = record.review.version;
        record.review.needs_review = false;
        record.review.reviewed_by = reviewer;
        record.review.reviewed_at_unix_ms = now_unix_ms();
        let stored = self.store.update(record, None, version).await.map_err(conflict)?;
        metrics::counter!("mmc_gateway_reviews_total", "action" => "approve").increment(1);
        self.refresh_gauges().await;
        Ok(stored)
    }

    /// Sets `mmc_gateway_indexed_images` and `mmc_gateway_review_queue_images` from the
    /// store: after each change made here, and periodically (gateways sharing a database
    /// see each other's changes there). A store that cannot count right now leaves them.
    pub async fn refresh_gauges(&self) {
        match self.store.count().await {
            Ok(n) => metrics::gauge!("mmc_gateway_indexed_images").set(n as f64),
            Err(e) => tracing::debug!("image count for the gauge: {e}"),
        }
        match self.store.review_count().await {
            Ok(n) => metrics::gauge!("mmc_gateway_review_queue_images").set(n as f64),
            Err(e) => tracing::debug!("review count for the gauge: {e}"),
        }
    }
}

fn revision(field: &str, text: String, source: TextSource, by: &str, at: i64) -> TextRevision {
    TextRevision { field: field.into(), text, source, replaced_by: by.into(), replaced_at_unix_ms: at }
}
