//! Media decoding shared by every service that takes user uploads.
//!
//! - [`image`]: JPEG, PNG, WebP and GIF (first frame) to RGB, with EXIF orientation
//!   applied, grayscale/CMYK/alpha normalised, and limits checked from the header before
//!   any pixel is decoded (decompression bombs are refused cheaply).

pub mod image;
