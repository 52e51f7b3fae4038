//! EfficientNet-Lite0 (our candle module on the converted checkpoint) classifies real
//! photos correctly. Needs `mmc models fetch --profile bundled` and `--profile test-assets`.

use mmc_embed::engine::efficientnet::{EfficientNetLite0, IMAGE_SIZE};
use mmc_models::ModelStore;

fn classes() -> Vec<String> {
    mmc_models::labels::imagenet_1k().into_iter().map(str::to_string).collect()
}

fn load_model(store: &ModelStore) -> EfficientNetLite0 {
    let weights = store.file("efficientnet-lite0", "model.safetensors").unwrap_or_else(|e| panic!("{e}"));
    EfficientNetLite0::load_file(&weights, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn real_photos_get_the_right_imagenet_classes() {
    let store = ModelStore::from_env();
    let model = load_model(&store);
    let classes = classes();
    let cases = [
        ("cat.png", &["tabby", "tiger cat", "Egyptian cat"][..]),
        ("coffee.png", &["espresso", "cup", "coffee mug"][..]),
        ("rocket.jpg", &["missile", "projectile", "space shuttle"][..]),
        ("motorcycle.png", &["moped", "motor scooter", "crash helmet", "disk brake"][..]),
    ];
    let mut images = Vec::new();
    for (file, _) in &cases {
        let bytes = std::fs::read(store.file("test-photos", file).unwrap_or_else(|e| panic!("{e}"))).unwrap();
        let decoded = mmc_media::image::decode(&bytes, &Default::default()).unwrap();
        let square = mmc_media::image::resize_center_crop(&decoded.rgb, IMAGE_SIZE as u32);
        images.push(square.into_raw());
    }
    let out = model.classify(&images).unwrap();
    for ((file, expected), probs) in cases.iter().zip(&out.probs) {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<String> = order[..5].iter().map(|&i| format!("{} ({:.2})", classes[i], probs[i])).collect();
        eprintln!("{file}: {top:?}");
        let hit = order[..3].iter().any(|&i| expected.iter().any(|e| classes[i].split(", ").any(|n| n == *e)));
        assert!(hit, "{file}: expected one of {expected:?} in the top 3, got {top:?}");
        let sum: f32 = probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
    assert_eq!(out.pooled[0].len(), 1280);
}

/// Our candle module against an independent numpy implementation of the same
/// architecture, reading the original checkpoint (tests/scripts/
/// efficientnet_lite0_reference.py; output committed), on a synthetic image both build.
#[test]
fn efficientnet_matches_the_numpy_reference_on_the_original_checkpoint() {
    let store = ModelStore::from_env();
    let model = load_model(&store);
    let mut pixels = Vec::with_capacity(IMAGE_SIZE * IMAGE_SIZE * 3);
    for y in 0..IMAGE_SIZE {
        for x in 0..IMAGE_SIZE {
            for c in 0..3 {
                pixels.push(((7 * x + 13 * y + 50 * c) % 256) as u8);
            }
        }
    }
    // One image runs each layer on every thread; a batch runs sub-batches side by side,
    // each on one thread: both must give the reference's answer.
    let probs = model.classify(std::slice::from_ref(&pixels)).unwrap().probs.remove(0);
    let batch = model.classify(&vec![pixels; 5]).unwrap().probs;
    for (i, row) in batch.iter().enumerate() {
        let diff = row.iter().zip(&probs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-6, "image {i} of a batch of 5 differs from the same image alone by {diff}");
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/efficientnet-lite0.logits.json");
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let want: Vec<f32> = reference["probs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let max_diff = probs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let top5: Vec<u64> = order[..5].iter().map(|&i| i as u64).collect();
    let want_top5: Vec<u64> = reference["top5"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    eprintln!("max |p - p_ref| = {max_diff:e}; top-5 {top5:?} (reference {want_top5:?})");
    assert_eq!(top5, want_top5);
    assert!(max_diff < 1e-4, "probabilities differ by up to {max_diff}");
}
