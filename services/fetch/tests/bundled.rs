//! Checks on the converted bundled models. They need `mmc models fetch` to have run (the
//! README's test command does that first) and fail with that instruction otherwise.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use mmc_models::ModelStore;

fn model_file(id: &str, name: &str) -> PathBuf {
    ModelStore::from_env().file(id, name).unwrap_or_else(|e| panic!("{e}"))
}

/// Our Rust converter versus an independent pure-Python reader of the same legacy
/// checkpoint (tests/scripts/pth_legacy_reference.py, output committed).
#[test]
fn efficientnet_safetensors_match_the_reference_reader() {
    let tensors = candle_core::safetensors::load(model_file("efficientnet-lite0", "model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/efficientnet-lite0.reference.json");
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let reference = reference.as_object().unwrap();
    assert_eq!(tensors.len(), reference.len(), "tensor count");
    assert_eq!(tensors["_fc.weight"].dims(), &[1000, 1280]);
    for (name, want) in reference {
        let t = tensors.get(name).unwrap_or_else(|| panic!("{name} missing"));
        let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name} shape");
        let values: Vec<f64> = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // Exact at f32 precision (the JSON parser may be off in the last f64 digit).
        let first: Vec<f32> = want["first"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let ours: Vec<f32> = values[..first.len()].iter().map(|v| *v as f32).collect();
        assert_eq!(ours, first, "{name} leading values");
        let sum: f64 = values.iter().sum();
        let sum_sq: f64 = values.iter().map(|v| v * v).sum();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
        assert!(close(sum, want["sum"].as_f64().unwrap()), "{name} sum {sum} vs {}", want["sum"]);
        assert!(close(sum_sq, want["sum_sq"].as_f64().unwrap()), "{name} sum of squares");
    }
    // A strided (non-contiguous) view would differ in `first` above if gathered wrongly;
    // also make sure the weights are not all zero.
    let w: Tensor = tensors["_conv_stem.weight"].clone();
    assert!(w.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 1.0);
}

/// The tokenizer rebuilt from GGUF metadata tokenizes as llama.cpp does for SmolLM2
/// (`pre = smollm`): no prefix space, digits one by one, ChatML control tokens whole.
#[test]
fn smollm_tokenizer_from_gguf_metadata() {
    let tok = tokenizers::Tokenizer::from_file(model_file("smollm2-135m-instruct-q4_1", "tokenizer.json")).unwrap();
    let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    // candle's TokenizerFromGguf gives 817 ("Ġsystem") here; llama.cpp gives 9690.
    assert_eq!(ids("system"), vec![9690]);
    assert_eq!(ids("2024").len(), 4, "digits are split individually");
    let chat = ids("<|im_start|>user\nHi<|im_end|>");
    assert_eq!(chat.first(), Some(&1), "<|im_start|> is one control token");
    assert_eq!(chat.last(), Some(&2), "<|im_end|> is one control token");
    let text = "Decisions: ship v2 on 2026-12-01, Anna owns QA.";
    let decoded = tok.decode(&ids(text), false).unwrap();
    assert_eq!(decoded, text, "round trip");
}
