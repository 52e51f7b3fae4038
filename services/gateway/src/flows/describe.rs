//! DescribeImage: image -> `embed.EncodeImage` -> `caption.Caption` once per mode.

use mmc_proto::{
    caption::v1::{CaptionMode, CaptionResponse},
    common::v1::{Image, StageTiming},
    embed::v1::Label,
};

use super::Flows;
use crate::{error::GatewayError, upstream::Deadline};

/// The texts written for one image.
pub struct Description {
    /// One caption per requested mode, in request order.
    pub captions: Vec<CaptionResponse>,
    /// The encoder labels the captions rest on.
    pub labels: Vec<Label>,
    pub timings: Vec<StageTiming>,
}

impl Flows {
    /// Encodes the image once, then writes the captions of all `modes` concurrently (the
    /// caption service interleaves them).
    pub async fn describe(&self, image: &Image, modes: &[CaptionMode], deadline: Deadline) -> Result<Description, GatewayError> {
        let (latents, encode_timing) = self.encode_image(image, deadline).await?;
        let results = futures::future::try_join_all(modes.iter().map(|m| self.caption(&latents, *m, deadline))).await?;
        let mut timings = vec![encode_timing];
        let mut captions = Vec::with_capacity(results.len());
        for (caption, timing) in results {
            timings.push(timing);
            captions.push(caption);
        }
        Ok(Description { captions, labels: latents.labels, timings })
    }
}
