//! The latent service's text path as a client sees it: a real `mmc-embed` process with
//! the bundled MiniLM, called over gRPC on loopback.

use std::{process::{Command, Stdio}, time::Duration};

use mmc_proto::embed::v1::{embed_service_client::EmbedServiceClient, EmbedTextRequest, GetModelInfoRequest};
use mmc_tests::{binary, eventually, free_port_range, http_get, ChildGuard};
use tonic::{transport::Channel, Code};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

struct Embed {
    _process: ChildGuard,
    channel: Channel,
    metrics: String,
}

async fn start(extra: &[&str]) -> Embed {
    let port = free_port_range(2);
    let metrics = format!("127.0.0.1:{}", port + 1);
    let process = ChildGuard::spawn(
        Command::new(binary("mmc-embed"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", &metrics])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let channel = eventually(Duration::from_secs(60), || async {
        let ch = Channel::from_shared(url.clone()).unwrap().connect().await.ok()?;
        let status = HealthClient::new(ch.clone()).check(HealthCheckRequest { service: String::new() }).await.ok()?;
        (status.into_inner().status() == ServingStatus::Serving).then_some(ch)
    })
    .await
    .expect("mmc-embed becomes SERVING");
    Embed { _process: process, channel, metrics }
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
    let empty = tempfile::tempdir().unwrap();
    let port = free_port_range(2);
    let out = Command::new(binary("mmc-embed"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", &format!("127.0.0.1:{}", port + 1)])
        .env("MMC_MODELS_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mmc models fetch"), "{stderr}");
}
