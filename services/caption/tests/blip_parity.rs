//! BLIP parity: our hub decoder (candle-transformers' BLIP modules, loaded and driven by
//! `engine::blip`) against the reference implementation (Hugging Face `transformers`) on a
//! random-weight model of the exact upstream layout. Fixture: `tests/fixtures/blip-tiny`,
//! made by `tests/scripts/blip_fixture.py` (committed, so this test needs no Python).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use mmc_caption::engine::blip::BlipDecoder;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/blip-tiny")
}

struct Reference {
    pixel_values: Tensor,
    latents: Tensor,
    greedy_ids: Vec<u32>,
    step_logits: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f32> { json[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let shape = |k: &str| -> Vec<usize> { json[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect() };
    let pixel_values = Tensor::from_vec(floats("pixel_values"), shape("pixel_values_shape"), &Device::Cpu).unwrap();
    let latents = Tensor::from_vec(floats("latents"), shape("latents_shape"), &Device::Cpu).unwrap().squeeze(0).unwrap();
    let greedy_ids = json["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let step_logits = json["step_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    Reference { pixel_values, latents, greedy_ids, step_logits }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn vision_encoder_patch_latents_match_transformers() {
    let r = reference();
    let decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    let ours = decoder.vision_latents(&r.pixel_values).unwrap();
    assert_eq!(ours.dims(), r.latents.dims());
    let diff = max_abs_diff(&ours.flatten_all().unwrap().to_vec1().unwrap(), &r.latents.flatten_all().unwrap().to_vec1().unwrap());
    eprintln!("patch latents: max abs diff {diff:e}");
    assert!(diff < 1e-4, "patch latents differ by up to {diff}");
}

#[test]
fn text_decoder_greedy_ids_and_logits_match_transformers() {
    let r = reference();
    let mut decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    assert_eq!(r.greedy_ids[0], decoder.special_ids().bos);
    let steps = r.greedy_ids.len() - 1;
    let out = decoder.greedy(&r.latents, steps).unwrap();
    // The reference decodes a fixed number of steps; ours stops after [SEP].
    let n = out.ids.len();
    assert_eq!(out.ids, r.greedy_ids[1..=n], "greedy ids");
    assert!(n == steps || out.ids.last() == Some(&decoder.special_ids().sep));
    for (i, (ours, theirs)) in out.step_logits.iter().zip(&r.step_logits).enumerate() {
        let diff = max_abs_diff(ours, theirs);
        eprintln!("step {i}: logits max abs diff {diff:e}");
        assert!(diff < 1e-3, "step {i}: logits differ by up to {diff}");
    }
    // Running again (KV cache reset) gives the same ids.
    assert_eq!(decoder.greedy(&r.latents, steps).unwrap().ids, out.ids);
}

#[test]
fn wrong_latent_shapes_are_refused_with_the_expected_one() {
    let mut decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    let wrong = Tensor::zeros((17, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = decoder.greedy(&wrong, 4).unwrap_err().to_string();
    assert!(err.contains("[patches, 48]"), "{err}");
}
