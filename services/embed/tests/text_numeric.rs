//! Our candle MiniLM against an independent numpy implementation on the same weights
//! (tests/scripts/minilm_reference.py; its output is committed). Needs the bundled
//! models (`mmc models fetch`).

use std::path::Path;

use mmc_embed::engine::text::TextEncoder;
use mmc_models::ModelStore;

#[test]
fn minilm_embeddings_match_the_numpy_reference() {
    let store = ModelStore::from_env();
    store.file("all-minilm-l6-v2", "model.safetensors").unwrap_or_else(|e| panic!("{e}"));
    let encoder = TextEncoder::load(&store.model_dir("all-minilm-l6-v2"), "all-minilm-l6-v2", "bundled", 256, &candle_core::Device::Cpu).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/minilm.reference.json");
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let texts: Vec<String> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();

    // All texts in one padded batch: padding must not change any embedding.
    let ours = encoder.embed(&texts).unwrap();
    for (i, got) in ours.iter().enumerate() {
        let want: Vec<f32> = reference["embeddings"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(got.values.len(), 384);
        let max_diff = got.values.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let cosine: f32 = got.values.iter().zip(&want).map(|(a, b)| a * b).sum();
        assert!(max_diff < 2e-4 && cosine > 0.99999, "text #{i}: max |diff| {max_diff}, cosine {cosine}");
        assert_eq!(got.token_count as u64, reference["token_counts"][i].as_u64().unwrap(), "text #{i} tokens");
        assert_eq!(got.original_token_count as u64, reference["original_token_counts"][i].as_u64().unwrap(), "text #{i} original tokens");
        let norm: f32 = got.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length");
    }
    assert!(ours[5].truncated && !ours[0].truncated, "the long text is flagged as truncated");

    // Alone (no padding) gives the same vector as in the batch.
    let alone = encoder.embed(&texts[1..2]).unwrap();
    let diff = alone[0].values.iter().zip(&ours[1].values).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "batch padding changed an embedding by {diff}");
}
