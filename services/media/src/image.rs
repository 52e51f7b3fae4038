//! Image decoding with limits.
//!
//! Order matters for safety: the byte size is checked first, then the format is sniffed
//! from the content (the client's MIME type is only a hint), then the dimensions are
//! read from the header and checked against the pixel and side limits, and only then is
//! the image decoded, under an allocation limit as a second guard. A 50 KB PNG that
//! claims 60000x60000 pixels is refused before it can ask for 14 GB.

use std::io::Cursor;

/// The decoded pixel type every service works on (re-exported so services need not
/// depend on `image` themselves).
pub use image::RgbImage;
use image::{imageops::FilterType, metadata::Orientation, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Bounds on what a client may upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest encoded size in bytes.
    pub max_bytes: usize,
    /// Largest decoded size in pixels (width x height).
    pub max_pixels: u64,
    /// Largest width or height in pixels.
    pub max_side: u32,
}

impl Default for ImageLimits {
    /// 20 MiB, 40 megapixels, 12000 px a side: every phone and DSLR photo, nothing absurd.
    fn default() -> Self {
        Self { max_bytes: 20 * 1024 * 1024, max_pixels: 40_000_000, max_side: 12_000 }
    }
}

/// A decoded image, upright, as 8-bit RGB.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub rgb: RgbImage,
    /// Detected format ("jpeg", "png", "webp", "gif").
    pub format: &'static str,
}

/// Why an image was refused. Messages are written for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("the image is {size} bytes; the limit is {limit} bytes")]
    TooManyBytes { size: usize, limit: usize },
    #[error("not a JPEG, PNG, WebP or GIF image (unrecognised content)")]
    UnknownFormat,
    #[error("{0} images are not supported; send JPEG, PNG, WebP or GIF")]
    Unsupported(String),
    #[error("the image is {width}x{height} pixels; the limits are {max_side} pixels a side and {max_pixels} pixels in all")]
    TooLarge { width: u32, height: u32, max_side: u32, max_pixels: u64 },
    #[error("the {format} image is corrupt or truncated: {detail}")]
    Corrupt { format: &'static str, detail: String },
}

fn format_name(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Jpeg => Some("jpeg"),
        ImageFormat::Png => Some("png"),
        ImageFormat::WebP => Some("webp"),
        ImageFormat::Gif => Some("gif"),
        _ => None,
    }
}

/// Width and height from the header alone (no pixel buffer), checked against `limits`:
/// what decoding the image will cost, known before paying it.
pub fn dimensions(bytes: &[u8], limits: &ImageLimits) -> Result<(u32, u32), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes { size: bytes.len(), limit: limits.max_bytes });
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnknownFormat)?;
    let name = format_name(format).ok_or_else(|| ImageError::Unsupported(format!("{format:?}").to_uppercase()))?;
    let mut header = ImageReader::with_format(Cursor::new(bytes), format);
    header.no_limits();
    let (width, height) = header.into_dimensions().map_err(|e| ImageError::Corrupt { format: name, detail: e.to_string() })?;
    if width == 0 || height == 0 || width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooLarge { width, height, max_side: limits.max_side, max_pixels: limits.max_pixels });
    }
    Ok((width, height))
}

/// Decodes an uploaded image (see the module docs for the order of checks).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<DecodedImage, ImageError> {
    // Pass 1: the header only (no pixel buffer is allocated here).
    dimensions(bytes, limits)?;
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnknownFormat)?;
    let name = format_name(format).ok_or(ImageError::UnknownFormat)?;
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => ImageError::Corrupt { format: name, detail: format!("over the decoding limits: {l}") },
        other => ImageError::Corrupt { format: name, detail: other.to_string() },
    };
    // Pass 2: decode, under an allocation limit as a second guard (the header might lie
    // about frames or chunks the decoder meets later).
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut alloc = Limits::default();
    alloc.max_image_width = Some(limits.max_side);
    alloc.max_image_height = Some(limits.max_side);
    // Room for the decoded image in the widest pixel type plus conversion copies.
    alloc.max_alloc = Some(limits.max_pixels.saturating_mul(16));
    reader.limits(alloc);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(DecodedImage { rgb: to_rgb(image), format: name })
}

/// 8-bit RGB; transparent pixels are composited over white (as a viewer shows them),
/// not turned black.
fn to_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        for c in 0..3 {
            dst[c] = ((u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// The centre `size`x`size` square of the image at the shorter side's scale: the usual
/// input of ImageNet-style encoders (bilinear filtering).
pub fn resize_center_crop(image: &RgbImage, size: u32) -> RgbImage {
    center_square(image, size, FilterType::Triangle)
}

/// [`resize_center_crop`] with bicubic filtering, as `CLIPImageProcessor` does.
pub fn resize_center_crop_bicubic(image: &RgbImage, size: u32) -> RgbImage {
    center_square(image, size, FilterType::CatmullRom)
}

/// Crops the centre square of the source first, then resizes only that to `size`: the
/// same picture as resizing the shorter side and cropping, at a cost bounded by the square,
/// however elongated the upload (resizing a 12000x1 image's shorter side to 224 first
/// would allocate a 224x2,688,000 image). A square already `size` is returned unchanged.
fn center_square(image: &RgbImage, size: u32, filter: FilterType) -> RgbImage {
    let (w, h) = image.dimensions();
    let side = w.min(h);
    let square = image::imageops::crop_imm(image, (w - side) / 2, (h - side) / 2, side, side).to_image();
    if side == size {
        return square;
    }
    image::imageops::resize(&square, size, size, filter)
}

/// Resizes to exactly `width`x`height` with bicubic filtering, ignoring the aspect ratio:
/// the input of ViT-style encoders whose processors do the same (BLIP, CLIP's
/// `do_center_crop: false` variants). An image already that size is returned unchanged.
pub fn resize_exact(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    image::imageops::resize(image, width, height, FilterType::CatmullRom)
}

/// A small JPEG of an upright image, its longer side at most `max_side` pixels (never
/// enlarged): what a browser shows in a grid of search results, instead of the full
/// upload (a 12-megapixel photo is megabytes; its thumbnail is tens of kilobytes).
pub fn thumbnail_jpeg(image: &RgbImage, max_side: u32) -> Result<Vec<u8>, ImageError> {
    let (w, h) = image.dimensions();
    let scale = (max_side as f32 / w.max(h) as f32).min(1.0);
    let (tw, th) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
    let small = if (tw, th) == (w, h) { image.clone() } else { image::imageops::resize(image, tw, th, FilterType::Triangle) };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82)
        .encode_image(&small)
        .map_err(|e| ImageError::Corrupt { format: "jpeg", detail: format!("encoding the thumbnail: {e}") })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_squares_of_elongated_images_cost_only_the_square() {
        let strip = RgbImage::from_fn(12_000, 1, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
        let square = resize_center_crop(&strip, 224);
        assert_eq!(square.dimensions(), (224, 224));
        // The centre pixel of the strip (column 5999 of 12000) is what fills the square.
        assert!(square.pixels().all(|p| *p == image::Rgb([(5999 % 256) as u8, 0, 0])));
        let tall = RgbImage::from_fn(3, 9, |_, y| image::Rgb([0, (y * 20) as u8, 0]));
        let centre = resize_center_crop_bicubic(&tall, 3);
        assert_eq!(centre.get_pixel(1, 1), &image::Rgb([0, 80, 0]), "rows 3..6 of 9 are the centre");
    }
    use image::{ImageEncoder, Rgb, Rgba};

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]))
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn thumbnails_fit_the_box_keep_the_aspect_and_decode() {
        let big = gradient(640, 320);
        let jpeg = thumbnail_jpeg(&big, 256).unwrap();
        let back = decode(&jpeg, &ImageLimits::default()).unwrap();
        assert_eq!((back.format, back.rgb.dimensions()), ("jpeg", (256, 128)));
        // Never enlarged.
        let small = decode(&thumbnail_jpeg(&gradient(40, 30), 256).unwrap(), &ImageLimits::default()).unwrap();
        assert_eq!(small.rgb.dimensions(), (40, 30));
    }

    #[test]
    fn decodes_jpeg_png_webp_gif() {
        let img = DynamicImage::ImageRgb8(gradient(32, 16));
        for (format, name) in [(ImageFormat::Jpeg, "jpeg"), (ImageFormat::Png, "png"), (ImageFormat::WebP, "webp"), (ImageFormat::Gif, "gif")] {
            let bytes = match format {
                ImageFormat::Gif => encode(&DynamicImage::ImageRgba8(img.to_rgba8()), format),
                _ => encode(&img, format),
            };
            let decoded = decode(&bytes, &ImageLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded.format, name);
            assert_eq!(decoded.rgb.dimensions(), (32, 16), "{name}");
        }
    }

    #[test]
    fn grayscale_becomes_rgb_and_transparency_becomes_white() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([77])));
        let d = decode(&encode(&gray, ImageFormat::Png), &ImageLimits::default()).unwrap();
        assert_eq!(d.rgb.get_pixel(0, 0), &Rgb([77, 77, 77]));

        let clear = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0])));
        let d = decode(&encode(&clear, ImageFormat::Png), &ImageLimits::default()).unwrap();
        assert_eq!(d.rgb.get_pixel(1, 1), &Rgb([255, 255, 255]));
    }

    /// Inserts an EXIF APP1 segment with the given orientation right after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
        let mut app1 = vec![0xFF, 0xE1, 0x00, 34];
        app1.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08");
        app1.extend_from_slice(&[0x00, 0x01, 0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, orientation, 0x00, 0x00]);
        app1.extend_from_slice(&[0, 0, 0, 0]);
        [&jpeg[..2], &app1, &jpeg[2..]].concat()
    }

    #[test]
    fn exif_orientation_is_applied() {
        let jpeg = encode(&DynamicImage::ImageRgb8(gradient(32, 16)), ImageFormat::Jpeg);
        let rotated = decode(&with_exif_orientation(&jpeg, 6), &ImageLimits::default()).unwrap();
        assert_eq!(rotated.rgb.dimensions(), (16, 32), "orientation 6 = rotate 90 degrees");
        let upright = decode(&with_exif_orientation(&jpeg, 1), &ImageLimits::default()).unwrap();
        assert_eq!(upright.rgb.dimensions(), (32, 16));
    }

    /// A real 1x1 PNG whose header is rewritten to claim `w`x`h` (CRC fixed up).
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png).write_image(&[0, 0, 0], 1, 1, image::ExtendedColorType::Rgb8).unwrap();
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn decompression_bombs_are_refused_from_the_header() {
        let err = decode(&png_claiming(60_000, 60_000), &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { width: 60_000, height: 60_000, .. }), "{err:?}");
        let err = decode(&png_claiming(10_000, 10_000), &ImageLimits::default()).unwrap_err();
        assert!(err.to_string().contains("40000000 pixels"), "{err}");
    }

    #[test]
    fn bad_input_gets_clear_errors() {
        let limits = ImageLimits { max_bytes: 100, ..ImageLimits::default() };
        assert_eq!(decode(&[], &limits).err(), Some(ImageError::Empty));
        assert_eq!(decode(&[0u8; 101], &limits).err(), Some(ImageError::TooManyBytes { size: 101, limit: 100 }));
        assert_eq!(decode(b"hello, not an image", &ImageLimits::default()).err(), Some(ImageError::UnknownFormat));
        let bmp = [b"BM".as_slice(), &[0u8; 60]].concat();
        assert_eq!(decode(&bmp, &ImageLimits::default()).err(), Some(ImageError::Unsupported("BMP".into())));
        let mut png = encode(&DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Png);
        png.truncate(png.len() / 2);
        assert!(matches!(decode(&png, &ImageLimits::default()), Err(ImageError::Corrupt { format: "png", .. })));
    }

    #[test]
    fn resize_center_crop_gives_a_square() {
        let out = resize_center_crop(&gradient(300, 200), 224);
        assert_eq!(out.dimensions(), (224, 224));
    }
}
