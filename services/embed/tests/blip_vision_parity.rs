//! BLIP vision parity: the latent service's BLIP encoder (`engine::blip_vision`) against the
//! reference implementation (Hugging Face `transformers`) on a random-weight model of the
//! exact upstream layout. Fixture: `tests/fixtures/blip-tiny`, made by
//! `tests/scripts/blip_fixture.py` (committed, so this test needs no Python).

use std::path::PathBuf;

use candle_core::Device;
use mmc_embed::engine::blip_vision::{self, BlipVision};
use mmc_media::image::ImageLimits;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/blip-tiny")
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn patch_latents_of_given_pixels_match_transformers() {
    let r = reference();
    assert!(blip_vision::is_blip(&fixture()));
    let vision = BlipVision::load(&fixture(), &Device::Cpu).unwrap();
    let ours = vision.encode(&[floats(&r["pixel_values"])]).unwrap().remove(0);
    let diff = max_abs_diff(&ours, &floats(&r["latents"]));
    eprintln!("patch latents: max abs diff {diff:e}");
    assert!(diff < 1e-4, "patch latents differ by up to {diff}");
}

#[test]
fn a_png_through_preprocessing_and_encoder_matches_blips_processor_and_model() {
    let served = &reference()["served"];
    let vision = BlipVision::load(&fixture(), &Device::Cpu).unwrap();
    let bytes = std::fs::read(fixture().join(served["image"].as_str().unwrap())).unwrap();
    let decoded = mmc_media::image::decode(&bytes, &ImageLimits::default()).unwrap();
    // Two images in one forward pass: each matches the reference.
    let pixels = vision.preprocess(&decoded.rgb);
    let out = vision.encode(&[pixels.clone(), pixels]).unwrap();
    let shape: Vec<u64> = served["latents_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(out[0].len() as u64, shape[0] * shape[1]);
    for latents in &out {
        let diff = max_abs_diff(latents, &floats(&served["latents"]));
        eprintln!("latents from image.png: max abs diff {diff:e}");
        assert!(diff < 1e-4, "latents differ by up to {diff}");
    }
}

#[test]
fn a_classifier_directory_is_not_taken_for_blip() {
    let dir = std::env::temp_dir().join(format!("mmc-not-blip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(!blip_vision::is_blip(&dir));
    std::fs::write(dir.join("config.json"), r#"{"model_type": "clip"}"#).unwrap();
    assert!(!blip_vision::is_blip(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}
