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
    latents: Tensor,
    greedy_ids: Vec<u32>,
    step_logits: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f32> { json[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let shape = |k: &str| -> Vec<usize> { json[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect() };
    let latents = Tensor::from_vec(floats("latents"), shape("latents_shape"), &Device::Cpu).unwrap().squeeze(0).unwrap();
    let greedy_ids = json["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let step_logits =
        json["step_logits"].as_array().unwrap().iter().map(|s| s.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()).collect();
    Reference { latents, greedy_ids, step_logits }
}

/// The served case: `image.png` through BLIP's processor and vision encoder, decoded
/// greedily to the end, and the text BLIP's tokenizer makes of it.
struct Served {
    latents: Tensor,
    greedy_ids: Vec<u32>,
    max_new_tokens: usize,
    text: String,
}

fn served() -> Served {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap();
    let s = &json["served"];
    let values: Vec<f32> = s["latents"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let shape: Vec<usize> = s["latents_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    Served {
        latents: Tensor::from_vec(values, shape, &Device::Cpu).unwrap(),
        greedy_ids: s["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
        max_new_tokens: s["max_new_tokens"].as_u64().unwrap() as usize,
        text: s["text"].as_str().unwrap().to_string(),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn text_decoder_greedy_ids_and_logits_match_transformers() {
    let r = reference();
    let decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    assert_eq!(r.greedy_ids[0], decoder.special_ids().bos);
    let steps = r.greedy_ids.len() - 1;
    let out = decoder.greedy(&r.latents, steps, true).unwrap();
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
    assert_eq!(decoder.greedy(&r.latents, steps, false).unwrap().ids, out.ids);
}

#[test]
fn served_image_decodes_to_the_reference_ids_and_text() {
    let s = served();
    let decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    let out = decoder.greedy(&s.latents, s.max_new_tokens, false).unwrap();
    assert_eq!(out.ids, s.greedy_ids[1..], "greedy ids");
    assert!(out.logprobs.iter().all(|p| *p <= 0.0 && p.is_finite()));
    let text = decoder.detokenize(&out.ids).unwrap();
    eprintln!("caption: {text:?}");
    assert_eq!(text, s.text);
}

#[test]
fn decodes_one_after_another_share_no_state() {
    let (r, s) = (reference(), served());
    let steps = 12;
    let fresh = |l: &Tensor| BlipDecoder::load(&fixture(), &Device::Cpu).unwrap().greedy(l, steps, false).unwrap().ids;
    let alone = vec![fresh(&s.latents), fresh(&r.latents), fresh(&s.latents)];
    // One decoder, three images in a row (as the service's batcher runs a batch).
    let decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    let in_a_row: Vec<Vec<u32>> = [&s.latents, &r.latents, &s.latents].iter().map(|l| decoder.greedy(l, steps, false).unwrap().ids).collect();
    assert_eq!(in_a_row, alone);
    assert_ne!(in_a_row[0], in_a_row[1], "two different images should not decode alike");
}

#[test]
fn wrong_latent_shapes_are_refused_with_the_expected_one() {
    let decoder = BlipDecoder::load(&fixture(), &Device::Cpu).unwrap();
    for (rows, hidden) in [(17, 7), (16, 48)] {
        let wrong = Tensor::zeros((rows, hidden), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = decoder.greedy(&wrong, 4, false).unwrap_err().to_string();
        assert!(err.contains("[17, 48]"), "{err}");
    }
}
