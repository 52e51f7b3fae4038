//! DescribeImage: image -> `embed.EncodeImage` -> `caption.Caption` once per mode.

use super::{limits::MAX_MODES, Flows};
use crate::{
    domain::{CaptionMode, Description, ImageUpload},
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
        let mut timings = vec![encode_timing];
        let mut captions = Vec::with_capacity(results.len());
        for (caption, timing) in results {
            timings.push(timing);
            captions.push(caption);
        }
        Ok(Description { captions, labels: latents.labels, timings })
    }
}
