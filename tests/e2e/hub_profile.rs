//! The hub profile's models as a client sees them, real processes on loopback:
//! `mmc-embed` serving CLIP as the shared space (EmbedText, EmbedImage) and BLIP's vision
//! encoder (EncodeImage -> patch latents), `mmc-caption` serving BLIP's text decoder over
//! them, and `mmc-gateway` chaining them (DescribeImage, IndexImages, SearchImages).
//!
//! Real CLIP and BLIP weights cannot be had here, so the models are the random-weight CLIP
//! and BLIP of the exact upstream layouts in `tests/fixtures/{clip,blip}-tiny`, and the
//! assertions are exact: served vectors equal `transformers`' for the same texts and PNG,
//! and the served caption is the text `transformers` decodes from it (`reference.json`),
//! not merely "some text".

use std::{path::Path, time::Duration};

use mmc_proto::{
    caption::v1::{caption_service_client::CaptionServiceClient, CaptionMode, CaptionRequest},
    common::v1::{Image, ModelInfo, Tensor},
    embed::v1::{
        embed_service_client::EmbedServiceClient, EmbedImageRequest, EmbedTextRequest, EncodeImageRequest, GetModelInfoRequest, ImageLatents, Label,
    },
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response::Event, search_images_request::Query, DescribeImageRequest,
        IndexImagesRequest, SearchImagesRequest,
    },
};
use mmc_tests::{http_get, metric_value, start_service, Service};
use tonic::Code;

const MODEL: &str = "blip-tiny";
const CLIP: &str = "clip-tiny";
const MINILM: &str = "all-minilm-l6-v2";

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/blip-tiny"))
}

fn clip_fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/clip-tiny"))
}

/// A models directory holding the CLIP and BLIP fixtures (as `mmc models fetch` leaves a
/// hub model: its files plus the verification stamp) and the bundled text encoder.
fn hub_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(mmc_tests::models_dir().join(MINILM), dir.path().join(MINILM)).unwrap();
    for (id, from) in [(MODEL, fixture()), (CLIP, clip_fixture())] {
        let to = dir.path().join(id);
        std::fs::create_dir(&to).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
        let stamp = serde_json::json!({ "files": { "model.safetensors": mmc_tests::sha256_file(&to.join("model.safetensors")) } });
        std::fs::write(to.join(".mmc-verified.json"), stamp.to_string()).unwrap();
    }
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
    Image { data: std::fs::read(fixture().join("image.png")).unwrap().into(), mime_type: "image/png".into(), source_name: "image.png".into() }
}

/// The latent service with `text_model` (CLIP or MiniLM) and BLIP's vision encoder, and the
/// caption service with BLIP's decoder.
async fn start(models: &Path, text_model: &str) -> (Service, Service) {
    let models = models.to_str().unwrap();
    let embed = ["--models-dir", models, "--text-model", text_model, "--image-model", MODEL, "--profile", "hub"];
    let caption = ["--models-dir", models, "--decoder", MODEL, "--encoder", MODEL, "--profile", "hub"];
    tokio::join!(start_service("mmc-embed", &embed, Duration::from_secs(60)), start_service("mmc-caption", &caption, Duration::from_secs(60)))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_is_the_shared_space_and_blip_gives_the_latents() {
    let models = hub_models();
    let (embed, _captioner) = start(models.path(), CLIP).await;
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(clip_fixture().join("reference.json")).unwrap()).unwrap();
    let mut client = EmbedServiceClient::new(embed.channel.clone());

    let info = client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    let (text, image_model) = (info.text_model.unwrap(), info.image_model.unwrap());
    assert_eq!((text.id.as_str(), text.family.as_str(), text.dimensions), (CLIP, "clip", 16));
    assert_eq!((image_model.id.as_str(), image_model.family.as_str()), (MODEL, "blip-vision"));
    assert_eq!(info.max_text_tokens, 24);

    // EmbedText: CLIP's text vectors, the over-long text cut and flagged.
    let cases = reference["texts"].as_array().unwrap();
    let texts: Vec<String> = cases.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    let resp = client.embed_text(EmbedTextRequest { texts: texts.clone(), reject_overlong: false }).await.unwrap().into_inner();
    assert_eq!(resp.model.as_ref().unwrap().id, CLIP);
    for (case, e) in cases.iter().zip(&resp.embeddings) {
        let diff = max_abs_diff(&e.values, &floats(&case["embedding"]));
        assert!(diff < 1e-5, "{}: differs from transformers by up to {diff}", case["text"]);
        assert_eq!(e.truncated, case["untruncated_tokens"].as_u64() > Some(case["ids"].as_array().unwrap().len() as u64));
    }
    assert!(resp.embeddings.iter().any(|e| e.truncated));
    let err = client.embed_text(EmbedTextRequest { texts, reject_overlong: true }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("102 tokens") && err.message().contains("at most 24"), "{}", err.message());

    // EmbedImage: CLIP's image tower, in the same space (same model id) as the texts.
    let resp = client.embed_image(EmbedImageRequest { images: vec![image()] }).await.unwrap().into_inner();
    assert_eq!(resp.model.as_ref().unwrap().id, CLIP);
    let diff = max_abs_diff(&resp.embeddings[0].values, &floats(&reference["image"]["embedding"]));
    eprintln!("served CLIP image vector vs transformers: max abs diff {diff:e}");
    assert!(diff < 1e-5, "image vector differs by up to {diff}");

    // EncodeImage: BLIP's patch latents, whatever the shared space.
    let latents =
        client.encode_image(EncodeImageRequest { image: Some(image()), top_k: 0, ..Default::default() }).await.unwrap().into_inner().latents.unwrap();
    assert_eq!(latents.patch_latents.unwrap().shape, [17, 48]);
    // With the embedding (what indexing asks for): the same latents and CLIP's vector, from
    // one decode.
    let request = EncodeImageRequest { image: Some(image()), top_k: 0, include_embedding: true };
    let both = client.encode_image(request).await.unwrap().into_inner();
    assert_eq!(both.latents.unwrap().patch_latents.unwrap().shape, [17, 48]);
    assert_eq!(both.embedding_model.unwrap().id, CLIP);
    let diff = max_abs_diff(&both.embedding.unwrap().values, &resp.embeddings[0].values);
    assert!(diff < 1e-6, "EncodeImage's vector differs from EmbedImage's by up to {diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blip_chain_serves_exactly_the_reference_caption() {
    let models = hub_models();
    let (embed, captioner) = start(models.path(), CLIP).await;
    let want = expected();

    // EncodeImage: BLIP patch latents, equal to the reference's for the same PNG.
    let mut embed_client = EmbedServiceClient::new(embed.channel.clone());
    let latents = embed_client
        .encode_image(EncodeImageRequest { image: Some(image()), top_k: 0, include_embedding: false })
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
    // Unsure alt text says so plainly around BLIP's words (cut to fit).
    assert!(alt.uncertain && detailed.uncertain);
    let words = alt.text.strip_prefix("Photo, perhaps ").and_then(|t| t.strip_suffix(" (uncertain).")).unwrap_or_else(|| panic!("{:?}", alt.text));
    assert!(want.text == words || want.text.starts_with(&format!("{words} ")), "{words:?} is not a word prefix of {:?}", want.text);

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

    // The gateway chains them as it does the bundled models: description, and an index in
    // CLIP's space with BLIP's captions.
    let data = tempfile::tempdir().unwrap();
    let args = ["--embed-endpoint", &embed.url, "--caption-endpoint", &captioner.url, "--data-dir", data.path().to_str().unwrap()];
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    let mut gateway_client = GatewayServiceClient::new(gateway.channel.clone());
    let described = gateway_client
        .describe_image(DescribeImageRequest { image: Some(image()), modes: vec![CaptionMode::Detailed as i32] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.captions.len(), 1);
    let via_gateway = &described.captions[0];
    assert!(via_gateway.text.starts_with("Possibly ") && detailed.text.starts_with(via_gateway.text.trim_end_matches('.')));

    let photo = |name: &str| Image {
        data: std::fs::read(mmc_tests::models_dir().join("test-photos").join(name)).unwrap().into(),
        mime_type: String::new(),
        source_name: name.into(),
    };
    let uploads =
        [image(), photo("cat.png"), photo("coffee.png")].map(|image| IndexImagesRequest { image: Some(image), metadata: Default::default() });
    let mut events = gateway_client.index_images(tokio_stream::iter(uploads)).await.unwrap().into_inner();
    let mut indexed = Vec::new();
    while let Some(message) = events.message().await.unwrap() {
        match message.event.unwrap() {
            Event::Indexed(i) => indexed.push(i),
            Event::Failure(f) => panic!("indexing failed: {f:?}"),
            _ => {}
        }
    }
    assert_eq!(indexed.len(), 3);
    let request = SearchImagesRequest { query: Some(Query::Image(image())), top_k: 3, score_threshold: -1.0, metadata_filter: Default::default() };
    let found = gateway_client.search_images(request).await.unwrap().into_inner();
    let first = &found.hits[0];
    let record = first.image.as_ref().unwrap();
    eprintln!("search by image: {:?}", found.hits.iter().map(|r| (r.image.as_ref().unwrap().source_name.clone(), r.score)).collect::<Vec<_>>());
    assert_eq!(record.source_name, "image.png");
    assert!(record.caption.starts_with("Photo, perhaps ") && record.caption.ends_with(" (uncertain)."), "stored caption {:?}", record.caption);
    assert!(record.needs_review, "an unsure caption waits for review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blip_chain_refuses_what_it_cannot_use() {
    let models = hub_models();
    let (embed, captioner) = start(models.path(), MINILM).await;

    // Without CLIP, a patch encoder has no way into the text space: EmbedImage says so and
    // what to use.
    let err = EmbedServiceClient::new(embed.channel.clone()).embed_image(EmbedImageRequest { images: vec![image()] }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("patch latents") && err.message().contains("efficientnet-lite0"), "{}", err.message());
    // Nor can EncodeImage add the embedding; without it, the latents are served.
    let mut client = EmbedServiceClient::new(embed.channel.clone());
    let err = client.encode_image(EncodeImageRequest { image: Some(image()), top_k: 0, include_embedding: true }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(client.encode_image(EncodeImageRequest { image: Some(image()), top_k: 0, include_embedding: false }).await.is_ok());

    let encoder = |id: &str| Some(ModelInfo { id: id.into(), ..Default::default() });
    let label = Label { name: "tabby cat".into(), probability: 0.9, class_index: 281 };
    let patches = |rows: u64, hidden: u64, n: usize| Some(Tensor { shape: vec![rows, hidden], values: vec![0.1; n] });
    let bad = [
        ("labels but no patch latents", ImageLatents { encoder: encoder(MODEL), labels: vec![label], ..Default::default() }, "no patch latents"),
        ("wrong shape", ImageLatents { encoder: encoder(MODEL), patch_latents: patches(16, 48, 16 * 48), ..Default::default() }, "[17, 48]"),
        (
            "values do not fill the shape",
            ImageLatents { encoder: encoder(MODEL), patch_latents: patches(17, 48, 10), ..Default::default() },
            "17, 48",
        ),
        (
            "another encoder",
            ImageLatents { encoder: encoder("efficientnet-lite0"), patch_latents: patches(17, 48, 17 * 48), ..Default::default() },
            MODEL,
        ),
    ];
    let mut client = CaptionServiceClient::new(captioner.channel.clone());
    for (what, latents, needle) in bad {
        let err = client.caption(CaptionRequest { latents: Some(latents), mode: 0, max_chars: 0 }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(needle), "{what}: {:?} lacks {needle:?}", err.message());
    }
    // Still serving after all of that.
    let ok = client
        .caption(CaptionRequest {
            latents: Some(ImageLatents { encoder: encoder(MODEL), patch_latents: patches(17, 48, 17 * 48), ..Default::default() }),
            mode: 0,
            max_chars: 0,
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}
