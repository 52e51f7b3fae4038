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

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{limits::*, Flows};
use crate::{
    domain::{CaptionMode, ImagePage, ImageUpload, Indexed, ListRequest, Query, SearchHit, SearchRequest, SearchResults},
    error::{shown, GatewayError},
    store::{ImageRecord, ImageReview, ImageVectors, SearchQuery},
    upstream::Deadline,
};

/// sha256 of an image's encoded bytes, hex: what its id is derived from.
pub fn content_hash(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The id of an image: derived from its content, so re-uploads find the same record.
pub fn image_id(content_hash: &str) -> String {
    format!("img-{}", &content_hash[..32])
}

/// Longer side of stored thumbnails, in pixels (twice the web UI's grid cell, for sharp
/// results on high-density screens).
pub const THUMBNAIL_SIDE: u32 = 384;

/// The thumbnail of an upload, made on a blocking thread beside the model calls. `None`
/// (with a warning) when it cannot be made: the image is still indexed, since the model
/// services, which have the final say on what is a valid image, accepted it.
async fn make_thumbnail(data: Bytes, name: &str) -> Option<Vec<u8>> {
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

/// Bounds on user metadata (entries, key and value lengths).
pub fn check_metadata(metadata: &BTreeMap<String, String>, field: &str) -> Result<(), GatewayError> {
    let (entries, key_len, value_len) = MAX_METADATA;
    if metadata.len() > entries {
        return Err(GatewayError::Invalid(format!("{field} has {} entries; the limit is {entries}", metadata.len())));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.chars().count() > key_len || v.chars().count() > value_len {
            return Err(GatewayError::Invalid(format!(
                "{field} key {}: keys must be 1..={key_len} characters and values at most {value_len}",
                shown(k)
            )));
        }
    }
    Ok(())
}

impl Flows {
    /// Indexes one image. The record is acknowledged only once the store has committed it.
    pub async fn index_image(&self, image: ImageUpload, metadata: BTreeMap<String, String>, deadline: Deadline) -> Result<Indexed, GatewayError> {
        check_metadata(&metadata, "metadata")?;
        if image.data.is_empty() {
            return Err(GatewayError::Invalid("image.data is empty".into()));
        }
        let content_hash = content_hash(&image.data);
        let image_id = image_id(&content_hash);
        if let Some(record) = self.store.get(&image_id).await? {
            return Ok(Indexed { record, already_indexed: true });
        }
        let up = &self.upstream;
        let thumbnail = make_thumbnail(image.data.clone(), &image.source_name);
        // One EncodeImage gives the labels the caption rests on and the image's vector
        // (one decode, one forward pass), while the thumbnail is made here.
        let ((latents, image_vector, _), thumbnail) =
            tokio::try_join!(up.encode_image(&image.data, &image.source_name, true, deadline), async { Ok(thumbnail.await) })?;
        let image_vector = image_vector.expect("asked for the embedding");
        let (caption, _) = up.caption(&latents, CaptionMode::AltText, deadline).await?;
        let (caption_vector, _) = up.embed_text("embed_caption", &caption.text, deadline).await?;
        if caption_vector.space != image_vector.space {
            return Err(GatewayError::Invalid(format!(
                "the embed service's image space {} differs from its text space {}; they must be one space",
                image_vector.space, caption_vector.space
            )));
        }
        let mut models = vec![image_vector.model];
        models.extend(latents.encoder);
        models.extend(caption.model);
        let record = ImageRecord {
            image_id,
            content_hash,
            source_name: image.source_name,
            caption: caption.text,
            labels: latents.labels,
            metadata,
            models,
            indexed_at_unix_ms: now_unix_ms(),
            seq: 0,
            review: ImageReview { caption_confidence: caption.confidence, needs_review: caption.uncertain, ..Default::default() },
        };
        let vectors = ImageVectors { image: image_vector.vector, caption: caption_vector.vector };
        // The thumbnail first: an acknowledged record always has the thumbnail that was made.
        if let Some(jpeg) = thumbnail {
            self.thumbnails.put(&record.image_id, jpeg).await?;
        }
        let record = self.store.insert(record, vectors, image_vector.space).await?;
        self.refresh_gauges().await;
        Ok(Indexed { record, already_indexed: false })
    }

    /// Removes an image and its thumbnail; false when there was no such image.
    pub async fn delete_image(&self, image_id: &str) -> Result<bool, GatewayError> {
        if image_id.is_empty() {
            return Err(GatewayError::Invalid("image_id is empty".into()));
        }
        let deleted = self.store.delete(image_id).await?;
        self.thumbnails.delete(image_id).await?;
        self.refresh_gauges().await;
        Ok(deleted)
    }

    /// A page of the index, oldest first.
    pub async fn list_images(&self, request: ListRequest) -> Result<ImagePage, GatewayError> {
        let size = match request.page_size {
            0 => 50,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match request.page_token.as_str() {
            "" => 0,
            token => token.parse::<u64>().map_err(|_| GatewayError::Invalid("page_token is not one this server issued".into()))?,
        };
        if request.needs_review {
            // The queue is ordered by confidence, so its pages are positions in it.
            let (images, more) = self.store.review_queue(after as usize, size as usize).await?;
            let next_page_token = if more { (after + size as u64).to_string() } else { String::new() };
            return Ok(ImagePage { images, next_page_token });
        }
        let page = self.store.list(after, size as usize).await?;
        Ok(ImagePage { images: page.images, next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default() })
    }

    /// The stored thumbnail (JPEG) of an image.
    pub async fn thumbnail(&self, image_id: &str) -> Result<Vec<u8>, GatewayError> {
        let jpeg = self.thumbnails.get(image_id).await?;
        jpeg.ok_or_else(|| GatewayError::NotFound(format!("no thumbnail for image id {}", shown(image_id))))
    }

    /// Finds the images closest to the query, best first.
    pub async fn search(&self, request: SearchRequest, deadline: Deadline) -> Result<SearchResults, GatewayError> {
        let query = match request.query {
            Query::Text(text) => {
                let text = text.trim().to_string();
                if text.is_empty() {
                    return Err(GatewayError::Invalid("query text is empty".into()));
                }
                if text.chars().count() > MAX_QUERY_CHARS {
                    return Err(GatewayError::Invalid(format!("query text is over {MAX_QUERY_CHARS} characters")));
                }
                Query::Text(text)
            }
            Query::Image(image) if image.data.is_empty() => return Err(GatewayError::Invalid("query image has no data".into())),
            image => image,
        };
        let top_k = match request.top_k {
            0 => 10,
            k if k > MAX_TOP_K => return Err(GatewayError::Invalid(format!("top_k {k} is over the limit of {MAX_TOP_K}"))),
            k => k,
        };
        if !(-1.0..=1.0).contains(&request.score_threshold) {
            return Err(GatewayError::Invalid("score_threshold must be a cosine similarity in [-1, 1]".into()));
        }
        check_metadata(&request.metadata_filter, "metadata_filter")?;
        let (embedded, timing) = match &query {
            Query::Text(text) => self.upstream.embed_text("embed_query", text, deadline).await?,
            Query::Image(image) => self.upstream.embed_image(&image.data, &image.source_name, deadline).await?,
        };
        let started = std::time::Instant::now();
        let hits = self
            .store
            .search(SearchQuery {
                vector: embedded.vector,
                space: embedded.space,
                top_k: top_k as usize,
                score_threshold: request.score_threshold,
                metadata_filter: request.metadata_filter,
                fusion: self.fusion,
                breadth: Some(self.search_breadth),
            })
            .await?;
        let search_timing = crate::upstream::timing("search", started.elapsed());
        Ok(SearchResults { hits: hits.into_iter().map(|(image, score)| SearchHit { image, score }).collect(), timings: vec![timing, search_timing] })
    }
}
