//! CLIP parity: the latent service's CLIP (`engine::clip`: tokenizer, text tower, image
//! preprocessing, image tower, projections) against the reference implementation
//! (Hugging Face `transformers`) on a random-weight model of the exact upstream layout.
//! Fixture: `tests/fixtures/clip-tiny`, made by `tests/scripts/clip_fixture.py` (committed,
//! so this test needs no Python).

use std::path::PathBuf;

use candle_core::Device;
use mmc_embed::engine::{
    clip::{self, Clip},
    TextEmbedder,
};
use mmc_media::image::ImageLimits;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip-tiny")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn load() -> Clip {
    Clip::load(&fixture(), "clip-tiny", "hub", 77, &Device::Cpu).unwrap()
}

#[test]
fn text_embeddings_and_token_counts_match_transformers() {
    let r = reference();
    assert!(clip::is_clip(&fixture()));
    let clip = load();
    assert_eq!(clip.max_tokens(), 24, "the model's position table bounds the tokens");
    let cases = r["texts"].as_array().unwrap();
    let texts: Vec<String> = cases.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    // One padded batch of every text: padding must not change any vector.
    let ours = clip.embed(&texts).unwrap();
    let counts = clip.count_tokens(&texts).unwrap();
    for ((case, e), count) in cases.iter().zip(&ours).zip(counts) {
        let ids = case["ids"].as_array().unwrap().len() as u32;
        let untruncated = case["untruncated_tokens"].as_u64().unwrap() as u32;
        assert_eq!((e.token_count, e.original_token_count, count as u32), (ids, untruncated, untruncated), "{}", case["text"]);
        assert_eq!(e.truncated, untruncated > ids);
        let diff = max_abs_diff(&e.values, &floats(&case["embedding"]));
        eprintln!("{:?}: {} tokens, max abs diff {diff:e}", case["text"].as_str().unwrap().chars().take(30).collect::<String>(), e.token_count);
        assert!(diff < 1e-5, "{}: differs by up to {diff}", case["text"]);
    }
    assert!(ours.iter().any(|e| e.truncated), "the fixture has an over-long text");
}

#[test]
fn image_embedding_of_a_png_matches_clips_processor_and_model() {
    let r = reference();
    let clip = load();
    let bytes = std::fs::read(fixture().join(r["image"]["file"].as_str().unwrap())).unwrap();
    let decoded = mmc_media::image::decode(&bytes, &ImageLimits::default()).unwrap();
    let pixels = clip.preprocess(&decoded.rgb);
    let ours = clip.embed_images(&[pixels.clone(), pixels]).unwrap();
    for v in &ours {
        let diff = max_abs_diff(v, &floats(&r["image"]["embedding"]));
        eprintln!("image: max abs diff {diff:e}");
        assert!(diff < 1e-5, "image embedding differs by up to {diff}");
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_checkpoint_whose_end_token_is_not_the_largest_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    config["text_config"]["vocab_size"] = serde_json::json!(600);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = Clip::load(dir.path(), "x", "hub", 77, &Device::Cpu).err().expect("refused").to_string();
    assert!(err.contains("largest id"), "{err}");
}
