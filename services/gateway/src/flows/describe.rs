//! DescribeImage: image -> `embed.EncodeImage` -> `caption.Caption` once per mode.
//!
//! When the same image (by content hash) is indexed and a person wrote or approved its
//! texts, theirs are what the flow returns: a correction replaces the machine text
//! everywhere, not only in search results.

use super::{
    images::{content_hash, image_id},
    limits::MAX_MODES,
    Flows,
};
use crate::{
    domain::{CaptionMode, Description, ImageUpload, TextSource},
    error::GatewayError,
    upstream::Deadline,
};

impl Flows {
    /// Encodes the image once, then writes the captions of all `modes` (alt text when
    /// none) concurrently (the caption service interleaves them).
    pub async fn describe(&self, image: &ImageUpload, modes: &[CaptionMode], deadline: Deadline) -> Result<Description, GatewayError> {
        if image.data.is_empty() {
            return Err(GatewayError::Invalid("image with data is required".into()));
        }
        if modes.len() > MAX_MODES {
            return Err(GatewayError::Invalid(format!("{} modes requested; at most {MAX_MODES}", modes.len())));
        }
        let modes = if modes.is_empty() { &[CaptionMode::AltText][..] } else { modes };
        let (latents, _, encode_timing) = self.upstream.encode_image(&image.data, &image.source_name, false, deadline).await?;
        let results = futures::future::try_join_all(modes.iter().map(|m| self.upstream.caption(&latents, *m, deadline))).await?;
        let stored = self.store.get(&image_id(&content_hash(&image.data))).await?;
        let mut timings = vec![encode_timing];
        let mut captions = Vec::with_capacity(results.len());
        for (mut caption, timing) in results {
            timings.push(timing);
            if let Some(record) = &stored {
                let human = match caption.mode {
                    CaptionMode::AltText if record.review.caption_source == TextSource::Human => Some(record.caption.clone()),
                    CaptionMode::Detailed if !record.review.description.is_empty() => Some(record.review.description.clone()),
                    _ => None,
                };
                if let Some(text) = human {
                    caption.text = text;
                    caption.source = TextSource::Human;
                    caption.uncertain = false;
                }
            }
            captions.push(caption);
        }
        let reviewed = stored.as_ref().is_some_and(|r| !r.review.reviewed_by.is_empty());
        let needs_review = !reviewed && captions.iter().any(|c| c.uncertain);
        Ok(Description { captions, labels: latents.labels, timings, needs_review, image_id: stored.map(|r| r.image_id) })
    }
}
