//! Image decoding (`mmc_media::image::decode`): every image a client uploads goes through
//! it. Any input must give an image or an error within the limits, never a panic or an
//! allocation past the pixel limit.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The service's limits, smaller: libFuzzer's memory limit is 2 GB per process.
    let limits = mmc_media::image::ImageLimits { max_bytes: 1 << 20, max_pixels: 4_000_000, max_side: 4_000 };
    let _ = mmc_media::image::decode(data, &limits);
});
