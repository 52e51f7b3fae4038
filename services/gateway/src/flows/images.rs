//! Image search: indexing (image -> latents, image vector, caption, caption vector ->
//! index) and searching (text or image -> vector -> fused cosine ranking).
//!
//! Ranking fuses two cosines per image: with the image's own vector (EmbedImage, the
//! encoder's class distribution mapped into the text space) and with the vector of its
//! caption. The caption vector adds what the sentence-level text model knows about the
//! words of the caption ("espresso" near "a cup of coffee"); the image vector keeps the
//! ranking tied to what the encoder saw when the caption is vague. The weight is
//! configuration (`--image-weight`, default 0.5).

use std::{collections::BTreeMap, time::SystemTime};

use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::{Image, ModelInfo, StageTiming},
};
use sha2::{Digest, Sha256};

use super::Flows;
use crate::{
    error::GatewayError,
    store::{ImageRecord, ImageVectors, ModelRef, SearchQuery, StoredLabel},
    upstream::Deadline,
};

/// Result of indexing one image.
pub struct Indexed {
    pub record: ImageRecord,
    /// The same content was indexed before; nothing new was stored.
    pub already_indexed: bool,
}

/// What to search by.
pub enum Query {
    Text(String),
    Image(Image),
}

/// Search settings from the request, validated.
pub struct SearchParams {
    pub top_k: usize,
    pub score_threshold: f32,
    pub metadata_filter: BTreeMap<String, String>,
}

/// The id of an image: derived from its content, so re-uploads find the same record.
pub fn image_id(content_hash: &str) -> String {
    format!("img-{}", &content_hash[..32])
}

fn model_ref(m: &ModelInfo) -> ModelRef {
    ModelRef { id: m.id.clone(), family: m.family.clone(), profile: m.profile.clone(), revision: m.revision.clone(), dimensions: m.dimensions }
}

/// Longer side of stored thumbnails, in pixels (twice the web UI's grid cell, for sharp
/// results on high-density screens).
pub const THUMBNAIL_SIDE: u32 = 384;

/// The thumbnail of an upload, made on a blocking thread beside the model calls. `None`
/// (with a warning) when it cannot be made: the image is still indexed, since the model
/// services, which have the final say on what is a valid image, accepted it.
async fn make_thumbnail(data: Vec<u8>, name: &str) -> Option<Vec<u8>> {
    let made = tokio::task::spawn_blocking(move || {
        let decoded = mmc_media::image::decode(&data, &mmc_media::image::ImageLimits { max_bytes: usize::MAX, ..Default::default() })?;
        mmc_media::image::thumbnail_jpeg(&decoded.rgb, THUMBNAIL_SIDE)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|made| made.map_err(|e| e.to_string()));
    made.map_err(|e| tracing::warn!(image = name, "no thumbnail: {e}")).ok()
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Flows {
    /// Indexes one image. The record is acknowledged only once the store has committed it.
    pub async fn index_image(&self, image: Image, metadata: BTreeMap<String, String>, deadline: Deadline) -> Result<Indexed, GatewayError> {
        if image.data.is_empty() {
            return Err(GatewayError::Invalid("image.data is empty".into()));
        }
        let content_hash = hex::encode(Sha256::digest(&image.data));
        let image_id = image_id(&content_hash);
        if let Some(record) = self.store.get(&image_id).await? {
            return Ok(Indexed { record, already_indexed: true });
        }
        let thumbnail = make_thumbnail(image.data.clone(), &image.source_name);
        let ((latents, _), (image_vector, _), thumbnail) =
            tokio::try_join!(self.encode_image(&image, deadline), self.embed_image(&image, deadline), async { Ok(thumbnail.await) })?;
        let (caption, _) = self.caption(&latents, CaptionMode::AltText, deadline).await?;
        let (caption_vector, _) = self.embed_text("embed_caption", &caption.text, deadline).await?;
        if caption_vector.space != image_vector.space {
            return Err(GatewayError::Invalid(format!(
                "the embed service's image space {} differs from its text space {}; they must be one space",
                image_vector.space, caption_vector.space
            )));
        }
        let mut models = vec![model_ref(&image_vector.model)];
        models.extend(latents.encoder.as_ref().map(model_ref));
        models.extend(caption.model.as_ref().map(model_ref));
        let record = ImageRecord {
            image_id,
            content_hash,
            source_name: image.source_name,
            caption: caption.text,
            labels: latents
                .labels
                .iter()
                .map(|l| StoredLabel { name: l.name.clone(), probability: l.probability, class_index: l.class_index })
                .collect(),
            metadata,
            models,
            indexed_at_unix_ms: now_unix_ms(),
            seq: 0,
        };
        let vectors = ImageVectors { image: image_vector.vector, caption: caption_vector.vector };
        // The thumbnail first: an acknowledged record always has the thumbnail that was made.
        if let Some(jpeg) = thumbnail {
            self.thumbnails.put(&record.image_id, jpeg).await?;
        }
        let record = self.store.insert(record, vectors, image_vector.space).await?;
        metrics::gauge!("mmc_gateway_indexed_images").set(self.store.count() as f64);
        Ok(Indexed { record, already_indexed: false })
    }

    /// Removes an image and its thumbnail; false when there was no such image.
    pub async fn delete_image(&self, image_id: &str) -> Result<bool, GatewayError> {
        let deleted = self.store.delete(image_id).await?;
        self.thumbnails.delete(image_id).await?;
        metrics::gauge!("mmc_gateway_indexed_images").set(self.store.count() as f64);
        Ok(deleted)
    }

    /// Finds the images closest to `query`, best first.
    pub async fn search(
        &self,
        query: Query,
        params: SearchParams,
        deadline: Deadline,
    ) -> Result<(Vec<(ImageRecord, f32)>, Vec<StageTiming>), GatewayError> {
        let (embedded, timing) = match &query {
            Query::Text(text) => self.embed_text("embed_query", text, deadline).await?,
            Query::Image(image) => self.embed_image(image, deadline).await?,
        };
        let started = std::time::Instant::now();
        let hits = self
            .store
            .search(SearchQuery {
                vector: embedded.vector,
                space: embedded.space,
                top_k: params.top_k,
                score_threshold: params.score_threshold,
                metadata_filter: params.metadata_filter,
                fusion: self.fusion,
            })
            .await?;
        let search_timing = crate::upstream::timing("search", started.elapsed());
        Ok((hits, vec![timing, search_timing]))
    }
}
