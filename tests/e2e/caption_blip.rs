//! The hub caption chain as a client sees it: `mmc-embed` serving BLIP's vision encoder
//! (EncodeImage -> patch latents), `mmc-caption` serving BLIP's text decoder over them, and
//! `mmc-gateway` chaining the two (DescribeImage), all real processes on loopback.
//!
//! Real BLIP weights cannot be had here, so the model is the random-weight BLIP of the exact
//! upstream layout in `tests/fixtures/blip-tiny`, and the assertion is exact: the served
//! caption is the text `transformers` decodes from the same PNG (`reference.json`,
//! "served"), not merely "some text".

use std::{path::Path, time::Duration};

use mmc_proto::{
    caption::v1::{caption_service_client::CaptionServiceClient, CaptionMode, CaptionRequest},
    common::v1::{Image, ModelInfo, Tensor},
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedImageRequest, EncodeImageRequest, ImageLatents, Label},
    gateway::v1::{gateway_service_client::GatewayServiceClient, DescribeImageRequest},
};
use mmc_tests::{http_get, metric_value, start_service, Service};
use tonic::Code;

const MODEL: &str = "blip-tiny";

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/blip-tiny"))
}

/// A models directory holding the BLIP fixture (as `mmc models fetch` would leave a hub
/// model: files plus the verification stamp) and the bundled text encoder the latent
/// service always loads.
fn models_with_blip() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(mmc_tests::models_dir().join("all-minilm-l6-v2"), dir.path().join("all-minilm-l6-v2")).unwrap();
    let blip = dir.path().join(MODEL);
    std::fs::create_dir(&blip).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), blip.join(f)).unwrap();
    }
    let stamp = serde_json::json!({ "files": { "model.safetensors": mmc_tests::sha256_file(&blip.join("model.safetensors")) } });
    std::fs::write(blip.join(".mmc-verified.json"), stamp.to_string()).unwrap();
    dir
}

struct Expected {
    latents: Vec<f32>,
    text: String,
}

fn expected() -> Expected {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap();
    let served = &json["served"];
    Expected {
        latents: served["latents"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        text: served["text"].as_str().unwrap().to_string(),
    }
}

fn image() -> Image {
    Image { data: std::fs::read(fixture().join("image.png")).unwrap(), mime_type: "image/png".into(), source_name: "image.png".into() }
}

async fn start(models: &Path) -> (Service, Service) {
    let models = models.to_str().unwrap();
    let embed = ["--models-dir", models, "--image-model", MODEL, "--profile", "hub"];
    let caption = ["--models-dir", models, "--decoder", MODEL, "--encoder", MODEL, "--profile", "hub"];
    tokio::join!(
        start_service("mmc-embed", &embed, Duration::from_secs(60)),
        start_service("mmc-caption", &caption, Duration::from_secs(60))
    )
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blip_chain_serves_exactly_the_reference_caption() {
    let models = models_with_blip();
    let (embed, captioner) = start(models.path()).await;
    let want = expected();

    // EncodeImage: BLIP patch latents, equal to the reference's for the same PNG.
    let mut embed_client = EmbedServiceClient::new(embed.channel.clone());
    let latents = embed_client
        .encode_image(EncodeImageRequest { image: Some(image()), top_k: 0 })
        .await
        .unwrap()
        .into_inner()
        .latents
        .unwrap();
    let encoder = latents.encoder.clone().unwrap();
    assert_eq!((encoder.id.as_str(), encoder.family.as_str(), encoder.profile.as_str()), (MODEL, "blip-vision", "hub"));
    assert!(latents.labels.is_empty(), "a patch encoder has no labels");
    let patches = latents.patch_latents.clone().expect("patch latents");
    assert_eq!(patches.shape, [17, 48]);
    let diff = max_abs_diff(&patches.values, &want.latents);
    eprintln!("served patch latents vs transformers: max abs diff {diff:e}");
    assert!(diff < 1e-4, "patch latents differ by up to {diff}");
    assert_eq!(latents.pooled, patches.values[..48], "pooled is the class token's latent");

    // Caption: the random-weight model is unsure of everything, so the caption says so.
    let mut client = CaptionServiceClient::new(captioner.channel.clone());
    let detailed = client
        .caption(CaptionRequest { latents: Some(latents.clone()), mode: CaptionMode::Detailed as i32, max_chars: 1000 })
        .await
        .unwrap()
        .into_inner();
    eprintln!("detailed: {:?} (confidence {:.4})", detailed.text, detailed.confidence);
    assert!(detailed.confidence > 0.0 && detailed.confidence < 0.5, "confidence {}", detailed.confidence);
    assert_eq!(detailed.text, format!("Possibly {}.", want.text));
    let model = detailed.model.clone().unwrap();
    assert_eq!((model.id.as_str(), model.family.as_str()), (MODEL, "blip-text-decoder"));
    assert_eq!(model.revision, mmc_tests::sha256_file(&fixture().join("model.safetensors"))[..12]);

    let alt = client
        .caption(CaptionRequest { latents: Some(latents.clone()), mode: CaptionMode::AltText as i32, max_chars: 0 })
        .await
        .unwrap()
        .into_inner();
    eprintln!("alt text: {:?}", alt.text);
    assert!(alt.text.chars().count() <= 125, "{}", alt.text);
    let stem = alt.text.trim_end_matches('.');
    assert!(detailed.text.starts_with(stem) && detailed.text[stem.len()..].starts_with(' '), "{:?} is not a word prefix of {:?}", alt.text, detailed.text);

    // Concurrent captions go through the batcher and all get the same caption.
    let calls = (0..4).map(|_| {
        let mut c = client.clone();
        let l = latents.clone();
        async move { c.caption(CaptionRequest { latents: Some(l), mode: CaptionMode::Detailed as i32, max_chars: 1000 }).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().into_inner().text, detailed.text);
    }
    let (_, scrape) = http_get(&captioner.metrics, "/metrics").unwrap();
    let batches = metric_value(&scrape, "mmc_batch_size_count", &["batcher=\"caption_blip\""]).unwrap_or(0.0);
    assert!(batches >= 1.0, "no caption_blip batches in the metrics");
    assert!(metric_value(&scrape, "mmc_caption_captions_total", &["source=\"blip\"", "mode=\"detailed\""]).unwrap_or(0.0) >= 5.0);

    // The gateway chains the two as it does the bundled ones.
    let data = tempfile::tempdir().unwrap();
    let args = ["--embed-endpoint", &embed.url, "--caption-endpoint", &captioner.url, "--data-dir", data.path().to_str().unwrap()];
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    let described = GatewayServiceClient::new(gateway.channel.clone())
        .describe_image(DescribeImageRequest { image: Some(image()), modes: vec![CaptionMode::Detailed as i32] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.captions.len(), 1);
    let via_gateway = &described.captions[0];
    assert!(via_gateway.text.starts_with("Possibly ") && detailed.text.starts_with(via_gateway.text.trim_end_matches('.')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blip_chain_refuses_what_it_cannot_use() {
    let models = models_with_blip();
    let (embed, captioner) = start(models.path()).await;

    // A patch encoder has no way into the text space: EmbedImage says so and what to use.
    let err = EmbedServiceClient::new(embed.channel.clone())
        .embed_image(EmbedImageRequest { images: vec![image()] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("patch latents") && err.message().contains("efficientnet-lite0"), "{}", err.message());

    let encoder = |id: &str| Some(ModelInfo { id: id.into(), ..Default::default() });
    let label = Label { name: "tabby cat".into(), probability: 0.9, class_index: 281 };
    let patches = |rows: u64, hidden: u64, n: usize| Some(Tensor { shape: vec![rows, hidden], values: vec![0.1; n] });
    let bad = [
        ("labels but no patch latents", ImageLatents { encoder: encoder(MODEL), labels: vec![label], ..Default::default() }, "no patch latents"),
        ("wrong shape", ImageLatents { encoder: encoder(MODEL), patch_latents: patches(16, 48, 16 * 48), ..Default::default() }, "[17, 48]"),
        ("values do not fill the shape", ImageLatents { encoder: encoder(MODEL), patch_latents: patches(17, 48, 10), ..Default::default() }, "17, 48"),
        ("another encoder", ImageLatents { encoder: encoder("efficientnet-lite0"), patch_latents: patches(17, 48, 17 * 48), ..Default::default() }, MODEL),
    ];
    let mut client = CaptionServiceClient::new(captioner.channel.clone());
    for (what, latents, needle) in bad {
        let err = client.caption(CaptionRequest { latents: Some(latents), mode: 0, max_chars: 0 }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(needle), "{what}: {:?} lacks {needle:?}", err.message());
    }
    // Still serving after all of that.
    let ok = client
        .caption(CaptionRequest { latents: Some(ImageLatents { encoder: encoder(MODEL), patch_latents: patches(17, 48, 17 * 48), ..Default::default() }), mode: 0, max_chars: 0 })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}
