//! EfficientNet-Lite0 (our candle module on the converted checkpoint) classifies real
//! photos correctly. Needs `mmc models fetch --profile bundled` and `--profile test-assets`.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use mmc_embed::engine::efficientnet::{EfficientNetLite0, IMAGE_SIZE};
use mmc_models::ModelStore;

fn classes() -> Vec<String> {
    include_str!("../data/imagenet_classes.txt").lines().map(str::to_string).collect()
}

#[test]
fn real_photos_get_the_right_imagenet_classes() {
    let store = ModelStore::from_env();
    let weights = store.file("efficientnet-lite0", "model.safetensors").unwrap_or_else(|e| panic!("{e}"));
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }.unwrap();
    let model = EfficientNetLite0::load(vb).unwrap();
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
