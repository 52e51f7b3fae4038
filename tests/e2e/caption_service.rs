//! The caption service as a client sees it: real `mmc-embed` and `mmc-caption` processes,
//! chained as the gateway chains them (EncodeImage -> Caption), on real photos.

use std::{collections::HashSet, time::Duration};

use mmc_proto::{
    caption::v1::{caption_service_client::CaptionServiceClient, CaptionMode, CaptionRequest, CaptionResponse, GetModelInfoRequest},
    common::v1::{Image, ModelInfo},
    embed::v1::{embed_service_client::EmbedServiceClient, EncodeImageRequest, ImageLatents, Label},
};
use mmc_tests::{assert_documented_stages, http_get, metric_value, start_service, startup_error_without_models, Service};
use tonic::Code;

async fn start_caption(extra: &[&str]) -> Service {
    start_service("mmc-caption", extra, Duration::from_secs(60)).await
}

async fn start_embed() -> Service {
    start_service("mmc-embed", &[], Duration::from_secs(60)).await
}

fn photo(name: &str) -> Image {
    let path = mmc_tests::models_dir().join("test-photos").join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `mmc models fetch --profile test-assets`)", path.display()));
    Image { data: data.into(), mime_type: String::new(), source_name: name.to_string() }
}

async fn encode(embed: &Service, name: &str) -> ImageLatents {
    let mut client = EmbedServiceClient::new(embed.channel.clone());
    let resp = client.encode_image(EncodeImageRequest { image: Some(photo(name)), top_k: 5, include_embedding: false }).await.unwrap().into_inner();
    assert_documented_stages("mmc/embed/v1/embed.proto", "EncodeImageResponse", resp.timings.iter().map(|t| t.stage.as_str()));
    resp.latents.expect("latents")
}

async fn caption(client: &mut CaptionServiceClient<tonic::transport::Channel>, latents: &ImageLatents, mode: CaptionMode) -> CaptionResponse {
    let req = CaptionRequest { latents: Some(latents.clone()), mode: mode as i32, max_chars: 0 };
    let resp = client.caption(req).await.unwrap_or_else(|e| panic!("caption failed: {e:?}")).into_inner();
    assert_documented_stages("mmc/caption/v1/caption.proto", "CaptionResponse", resp.timings.iter().map(|t| t.stage.as_str()));
    resp
}

/// Head nouns of every ImageNet class (the last word of each synonym), read from the label
/// file itself: the objects a caption could wrongly name.
fn imagenet_objects() -> HashSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/models/data/imagenet_classes.txt");
    let text = std::fs::read_to_string(path).unwrap();
    // Words that end some synonym but are ordinary English in a caption.
    let ordinary = [
        "light", "home", "head", "can", "top", "case", "cover", "board", "fly", "maker", "pack", "pick", "place", "press", "rule", "safe", "scale",
        "shade", "site", "slide", "spot", "spray", "stage", "star", "stick", "stole", "swing", "unit", "watch", "file", "front", "piece", "point",
        "close", "grand", "bar", "set", "kit", "jack", "hot",
    ];
    text.lines()
        .flat_map(|l| l.split(','))
        .filter_map(|s| s.trim().split(' ').next_back().map(str::to_lowercase))
        .filter(|w| w.len() > 2 && !ordinary.contains(&w.as_str()))
        .collect()
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches('s').to_string())
        .collect()
}

/// An object word of `caption` that none of the encoder's `labels` (nor the broader nouns
/// the service documents) accounts for.
fn ungrounded(caption: &str, labels: &[Label], objects: &HashSet<String>) -> Option<String> {
    let mut allowed: HashSet<String> = labels.iter().flat_map(|l| words(&l.name)).collect();
    // Broader nouns for the families on the test photos (docs/caption.md lists them all).
    for (word, member_words) in
        [("cat", "cat lynx"), ("bicycle", "bike"), ("bike", "bike"), ("rocket", "missile projectile shuttle"), ("coffee", "espresso mug")]
    {
        if labels.iter().any(|l| words(&l.name).iter().any(|w| member_words.split(' ').any(|m| m == w))) {
            allowed.insert(word.to_string());
        }
    }
    words(caption).into_iter().find(|w| objects.contains(w) && !allowed.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_name_the_photographed_object_and_only_what_the_encoder_saw() {
    let (embed, captioner) = tokio::join!(start_embed(), start_caption(&[]));
    let mut client = CaptionServiceClient::new(captioner.channel.clone());
    let objects = imagenet_objects();
    let expectations: &[(&str, &[&str])] = &[
        ("bike.jpg", &["bike", "bicycle"]),
        ("cat.png", &["cat"]),
        ("coffee.png", &["coffee", "cup", "espresso"]),
        ("rocket.jpg", &["rocket", "missile", "space shuttle"]),
        ("motorcycle.png", &[]),
        ("astronaut.png", &[]),
        ("hubble_deep_field.jpg", &[]),
    ];
    let (mut from_model, mut sure) = (0, 0);
    for (i, (name, expected)) in expectations.iter().enumerate() {
        let latents = encode(&embed, name).await;
        let modes: &[CaptionMode] = if i < 3 { &[CaptionMode::AltText, CaptionMode::Detailed] } else { &[CaptionMode::AltText] };
        for &mode in modes {
            let c = caption(&mut client, &latents, mode).await;
            eprintln!("{name} {mode:?}: {:?} (confidence {:.2}, attempts {}, template {})", c.text, c.confidence, c.attempts, c.from_template);
            let lower = c.text.to_lowercase();
            assert!(expected.is_empty() || expected.iter().any(|e| lower.contains(e)), "{name}: {:?} names none of {expected:?}", c.text);
            if let Some(w) = ungrounded(&c.text, &latents.labels, &objects) {
                panic!("{name}: {:?} names {w:?}, which is not among the encoder's labels {:?}", c.text, latents.labels);
            }
            assert!(!lower.starts_with("image of") && !lower.starts_with("picture of"), "{:?}", c.text);
            assert!((0.0..=1.0).contains(&c.confidence));
            assert_eq!(c.evidence.first().map(|e| e.label.as_str()), Some(latents.labels[0].name.as_str()), "evidence starts with the top label");
            assert_eq!(c.model.as_ref().map(|m| m.id.as_str()), Some("smollm2-135m-instruct-q4_1"));
            assert_eq!(c.mode, mode as i32);
            // Under the service's default threshold (0.7) the text says plainly that it is unsure.
            assert_eq!(c.uncertain, c.confidence < 0.7, "{name}: confidence {} but uncertain = {}", c.confidence, c.uncertain);
            if c.uncertain {
                let plain = match mode {
                    CaptionMode::AltText => lower.ends_with("(uncertain).") || lower.contains("not recognised"),
                    _ => lower.starts_with("possibly"),
                };
                assert!(plain, "unsure but not said plainly: {:?}", c.text);
            } else {
                // A classifier reports no relation between its labels: sure alt text names the subject alone.
                assert!(mode != CaptionMode::AltText || c.text.split_whitespace().count() <= 4, "{:?}", c.text);
            }
            match mode {
                CaptionMode::AltText => {
                    assert!(c.text.chars().count() <= 125, "alt text over 125 characters: {:?}", c.text);
                    assert_eq!(c.text.matches(". ").count(), 0, "alt text is one sentence: {:?}", c.text);
                    from_model += usize::from(!c.from_template);
                    sure += usize::from(!c.uncertain);
                }
                _ => assert!(c.text.matches(". ").count() >= 1, "a detailed description has two or three sentences: {:?}", c.text),
            }
        }
    }
    // The language model, not only the template, writes the sure alt texts (unsure ones have
    // one honest form, the template's; greedy first tries are deterministic, so this is stable).
    // (motorcycle.png's three decodes fail their checks, and the template answers.)
    assert!(sure >= 3 && from_model >= 2, "{from_model} of the {sure} sure alt texts came from the language model");
    let (_, scrape) = http_get(&captioner.metrics, "/metrics").unwrap();
    assert!(metric_value(&scrape, "mmc_caption_captions_total", &["mode=\"alt_text\"", "source=\"model\""]).unwrap_or(0.0) >= 2.0, "{scrape}");
    // Every caption after the first resumes after the shared system prompt and examples.
    assert!(metric_value(&scrape, "mmc_textgen_prefix_cache_hits_total", &[]).unwrap_or(0.0) >= 3.0, "{scrape}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_or_malformed_latents_get_invalid_argument_naming_the_encoder() {
    let captioner = start_caption(&[]).await;
    let mut client = CaptionServiceClient::new(captioner.channel.clone());
    let info = client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.expected_encoder_id, "efficientnet-lite0");
    assert_eq!(info.decoder.unwrap().family, "llama");

    let encoder = |id: &str| Some(ModelInfo { id: id.into(), family: String::new(), profile: String::new(), revision: String::new(), dimensions: 0 });
    let label = |name: &str, class_index: u32, probability: f32| Label { name: name.into(), probability, class_index };
    let good = ImageLatents { encoder: encoder("efficientnet-lite0"), labels: vec![label("tabby cat", 281, 0.8)], ..Default::default() };
    let request = |latents: Option<ImageLatents>, mode: i32, max_chars: u32| CaptionRequest { latents, mode, max_chars };
    let cases: Vec<(CaptionRequest, &str)> = vec![
        (request(None, 0, 0), "latents are required"),
        (request(Some(ImageLatents { encoder: encoder("clip-vit-base-patch32"), ..good.clone() }), 0, 0), "efficientnet-lite0"),
        (request(Some(ImageLatents { encoder: None, ..good.clone() }), 0, 0), "efficientnet-lite0"),
        (request(Some(ImageLatents { labels: vec![], ..good.clone() }), 0, 0), "no labels"),
        (request(Some(ImageLatents { labels: vec![label("", 4000, 0.5)], ..good.clone() }), 0, 0), "1000 classes"),
        (request(Some(ImageLatents { labels: vec![label("tabby cat", 281, f32::NAN)], ..good.clone() }), 0, 0), "outside [0, 1]"),
        (request(Some(ImageLatents { labels: vec![label("golden retriever", 281, 0.5)], ..good.clone() }), 0, 0), "label set"),
        (request(Some(good.clone()), 9, 0), "CaptionMode"),
        (request(Some(good.clone()), 1, 5), "max_chars"),
    ];
    for (req, needle) in cases {
        let err = client.caption(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{:?} should mention {needle:?}", err.message());
    }
    // Still serving.
    let c = caption(&mut client, &good, CaptionMode::AltText).await;
    assert!(c.text.to_lowercase().contains("cat"), "{:?}", c.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_captions_share_the_decoder_and_a_full_queue_sheds_load() {
    let captioner = start_caption(&["--max-sequences", "1", "--queue-capacity", "1"]).await;
    let latents = ImageLatents {
        encoder: Some(ModelInfo { id: "efficientnet-lite0".into(), ..Default::default() }),
        labels: vec![
            Label { name: "espresso".into(), probability: 0.9, class_index: 967 },
            Label { name: "cup".into(), probability: 0.05, class_index: 968 },
        ],
        ..Default::default()
    };
    let calls = (0..6).map(|_| {
        let mut client = CaptionServiceClient::new(captioner.channel.clone());
        let req = CaptionRequest { latents: Some(latents.clone()), mode: CaptionMode::AltText as i32, max_chars: 0 };
        async move { client.caption(req).await }
    });
    let results = futures::future::join_all(calls).await;
    let ok: Vec<String> = results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.get_ref().text.clone()).collect();
    let shed = results.iter().filter(|r| r.as_ref().is_err_and(|e| e.code() == Code::ResourceExhausted)).count();
    assert!(!ok.is_empty() && shed >= 1, "ok {ok:?}, shed {shed}: {results:?}");
    assert_eq!(ok.len() + shed, 6, "{results:?}");
    // Same labels, same caption: the first decode is greedy.
    assert!(ok.iter().all(|t| t == &ok[0]), "{ok:?}");
}

#[test]
fn caption_service_refuses_to_start_without_its_decoder() {
    let stderr = startup_error_without_models("mmc-caption");
    assert!(stderr.contains("mmc models fetch"), "{stderr}");
}
