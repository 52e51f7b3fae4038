//! The latent service as a client sees it: a real `mmc-embed` process with the bundled
//! models (MiniLM, EfficientNet-Lite0 + ConSE), called over gRPC on loopback with real
//! photos.

use std::time::Duration;

use mmc_proto::{
    common::v1::Image,
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedImageRequest, EmbedTextRequest, EncodeImageRequest, GetModelInfoRequest},
};
use mmc_tests::{http_get, start_service, startup_error_without_models, Service};
use tonic::Code;

async fn start(extra: &[&str]) -> Service {
    start_service("mmc-embed", extra, Duration::from_secs(60)).await
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn texts(t: &[&str]) -> EmbedTextRequest {
    EmbedTextRequest { texts: t.iter().map(|s| s.to_string()).collect(), reject_overlong: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_text_over_grpc_with_real_minilm() {
    let embed = start(&["--max-wait-ms", "50", "--max-texts-per-request", "8"]).await;
    let mut client = EmbedServiceClient::new(embed.channel.clone());

    let resp = client
        .embed_text(texts(&["a cat sitting on a mat", "a kitten resting on a rug", "the quarterly revenue report"]))
        .await
        .unwrap()
        .into_inner();
    let model = resp.model.expect("model identity");
    assert_eq!((model.id.as_str(), model.dimensions, model.profile.as_str()), ("all-minilm-l6-v2", 384, "bundled"));
    assert_eq!(model.revision, "53aa51172d14", "weights digest from the fetch stamp");
    let v: Vec<&[f32]> = resp.embeddings.iter().map(|e| e.values.as_slice()).collect();
    assert!(
        cosine(v[0], v[1]) > cosine(v[0], v[2]) + 0.2,
        "cat~kitten {} should beat cat~revenue {}",
        cosine(v[0], v[1]),
        cosine(v[0], v[2])
    );

    let info = client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.max_text_tokens, 256);

    // Over-long input: truncated and flagged by default, refused on request.
    let long = "budget review ".repeat(300);
    let resp = client.embed_text(texts(&[&long])).await.unwrap().into_inner();
    assert!(resp.embeddings[0].truncated && resp.embeddings[0].token_count == 256);
    let err = client
        .embed_text(EmbedTextRequest { texts: vec![long.clone()], reject_overlong: true })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 256"), "{}", err.message());

    // Malformed requests get clear errors; the service stays up.
    let err = client.embed_text(texts(&[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client.embed_text(texts(&["x"; 9])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit is 8"), "{}", err.message());

    // Concurrent requests are coalesced into shared forward passes, each gets its own.
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { (i, c.embed_text(texts(&[&format!("sentence number {i}")])).await) })
        })
        .collect();
    let alone = client.embed_text(texts(&["sentence number 7"])).await.unwrap().into_inner();
    for call in calls {
        let (i, result) = call.await.unwrap();
        let e = result.unwrap().into_inner().embeddings.remove(0);
        if i == 7 {
            assert!(cosine(&e.values, &alone.embeddings[0].values) > 0.99999, "same text, same vector in a batch");
        }
    }
    let (_, body) = http_get(&embed.metrics, "/metrics").unwrap();
    let metric = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("batcher=\"embed_text\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in metrics:\n{body}"))
    };
    let (items, calls) = (metric("mmc_batch_size_sum"), metric("mmc_batch_size_count"));
    assert!(items > calls, "some forward passes served several texts ({items} texts in {calls} passes)");
}

#[test]
fn missing_model_fails_startup_with_instructions() {
    let stderr = startup_error_without_models("mmc-embed");
    assert!(stderr.contains("mmc models fetch"), "{stderr}");
}

fn photo(name: &str) -> Image {
    let path = mmc_tests::models_dir().join("test-photos").join(name);
    let data = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `mmc models fetch --profile test-assets`", path.display()));
    Image { data, mime_type: String::new(), source_name: name.to_string() }
}

/// A real photo whose PNG header is rewritten to claim 60000x60000 pixels (CRC fixed):
/// a decompression bomb as far as any decoder that trusts the header is concerned.
fn png_bomb() -> Vec<u8> {
    let mut png = photo("cat.png").data;
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_classified_and_share_the_text_space() {
    let embed = start(&[]).await;
    let mut client = EmbedServiceClient::new(embed.channel.clone());

    let latents = client
        .encode_image(EncodeImageRequest { image: Some(photo("cat.png")), top_k: 3 })
        .await
        .unwrap()
        .into_inner()
        .latents
        .unwrap();
    assert_eq!(latents.encoder.as_ref().unwrap().id, "efficientnet-lite0");
    assert_eq!((latents.width_px, latents.height_px), (451, 300));
    assert_eq!(latents.labels.len(), 3);
    assert_eq!(latents.pooled.len(), 1280);
    assert!(latents.labels.iter().any(|l| l.name.contains("cat")), "cat labels: {:?}", latents.labels);

    // Cross-modal: each sentence finds its photo among the four.
    let names = ["cat.png", "coffee.png", "rocket.jpg", "motorcycle.png"];
    let images = client
        .embed_image(EmbedImageRequest { images: names.iter().map(|n| photo(n)).collect() })
        .await
        .unwrap()
        .into_inner();
    let queries = ["a cat lying on a blanket", "a cup of coffee", "a rocket on the launch pad", "a motorbike"];
    let texts = client.embed_text(texts(&queries)).await.unwrap().into_inner();
    assert_eq!(images.model.as_ref().unwrap().id, texts.model.as_ref().unwrap().id, "one space, one id");
    eprintln!("cosine similarity, query x photo {names:?}:");
    for (qi, q) in texts.embeddings.iter().enumerate() {
        let scores: Vec<f32> = images.embeddings.iter().map(|i| cosine(&q.values, &i.values)).collect();
        eprintln!("  {:<28} {}", queries[qi], scores.iter().map(|s| format!("{s:6.3}")).collect::<Vec<_>>().join(" "));
        let best = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(names[best], names[qi], "query {:?} scores {scores:?}", queries[qi]);
    }

    // Bad images: clear INVALID_ARGUMENT naming the image; the service stays up.
    let bad = |data: Vec<u8>| EmbedImageRequest { images: vec![photo("cat.png"), Image { data, ..Default::default() }] };
    let err = client.embed_image(bad(b"definitely not an image".to_vec())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image #1") && err.message().contains("not a JPEG"), "{}", err.message());
    let err = client.embed_image(bad(png_bomb())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("60000x60000"), "{}", err.message());
    let mut truncated = photo("cat.png").data;
    truncated.truncate(truncated.len() / 2);
    let err = client.embed_image(bad(truncated)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image #1") && err.message().contains("corrupt or truncated"), "{}", err.message());
    let err = client.embed_image(bad(Vec::new())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image #1") && err.message().contains("empty (0 bytes)"), "{}", err.message());
    let err = client.encode_image(EncodeImageRequest { image: None, top_k: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    client.encode_image(EncodeImageRequest { image: Some(photo("coffee.png")), top_k: 0 }).await.expect("still serving");
}
