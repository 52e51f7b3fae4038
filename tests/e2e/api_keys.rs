//! API keys (issue #28), as a client sees them, on real processes: model services and a
//! gateway started with `--api-keys-file`; the gateway sends its own key to the model
//! services (`--upstream-api-key-file`). A call without a key, or with a wrong one, is
//! refused (UNAUTHENTICATED over gRPC, 401 `invalid_api_key` over HTTP) before any work;
//! with the key the whole chain works; health checks, the web UI's pages and the `mmc`
//! client (`MMC_API_KEY`) behave as documented.

use std::{process::Command, time::Duration};

use mmc_proto::{
    common::v1::Image,
    gateway::v1::{gateway_service_client::GatewayServiceClient, DescribeImageRequest},
};
use mmc_tests::{binary, free_port_range, http_request_as, models_dir, start_service};
use tonic::{Code, Request};

const KEY: &str = "mmc-test-key-5f2b9c0e1d7a4b3c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_wants_the_key_and_the_chain_carries_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("# the test's key\n{KEY}\n")).unwrap();
    let keys = keys.to_str().unwrap();
    let keyed = ["--api-keys-file", keys];
    let (embed, caption) =
        tokio::join!(start_service("mmc-embed", &keyed, Duration::from_secs(60)), start_service("mmc-caption", &keyed, Duration::from_secs(60)),);
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let data = dir.path().join("data");
    let args = [
        "--embed-endpoint",
        &embed.url,
        "--caption-endpoint",
        &caption.url,
        "--data-dir",
        data.to_str().unwrap(),
        "--http-listen",
        &http,
        "--api-keys-file",
        keys,
        "--upstream-api-key-file",
        keys,
    ];
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    let photo = std::fs::read(models_dir().join("test-photos/cat.png")).unwrap();
    let describe = |key: Option<&str>| {
        let mut request = Request::new(DescribeImageRequest {
            image: Some(Image { data: photo.clone().into(), mime_type: String::new(), source_name: "cat.png".into() }),
            modes: vec![],
        });
        if let Some(k) = key {
            request.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        let mut client = GatewayServiceClient::new(gateway.channel.clone());
        async move { client.describe_image(request).await }
    };

    // gRPC: no key, a wrong key: refused; the key: the chain (gateway -> embed -> caption) works.
    for key in [None, Some("not-the-key-at-all-0000")] {
        let e = describe(key).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{key:?}: {e:?}");
    }
    let described = describe(Some(KEY)).await.expect("with the key").into_inner();
    assert_eq!(described.captions[0].text, "A cat.");
    // A model service called directly wants the key too.
    let e = mmc_proto::embed::v1::embed_service_client::EmbedServiceClient::new(embed.channel.clone())
        .embed_text(mmc_proto::embed::v1::EmbedTextRequest { texts: vec!["a cat".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // HTTP: the API wants the key; the web UI's pages and the OpenAPI document do not.
    let t = Duration::from_secs(30);
    let get = |path: &str, auth: Option<String>| {
        let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("Authorization", a)).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request_as(&http, &http, &headers, "GET", path, "text/plain", b"", t).unwrap()
    };
    let (status, body) = get("/v1/models", None);
    assert!(status == 401 && body.contains("invalid_api_key"), "{status} {body}");
    let (status, body) = get("/v1/models", Some("Bearer wrong-wrong-wrong-wrong".into()));
    assert!(status == 401 && body.contains("not valid"), "{status} {body}");
    let (status, body) = get("/v1/models", Some(format!("Bearer {KEY}")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(get("/ui/search", None).0, 200);
    assert_eq!(get("/openapi.json", None).0, 200);

    // The CLI sends MMC_API_KEY.
    let cat = models_dir().join("test-photos/cat.png");
    let url = gateway.url.clone();
    let (with, without) = tokio::task::spawn_blocking(move || {
        let run = |key: Option<&str>| {
            let mut cmd = Command::new(binary("mmc"));
            cmd.args(["describe", cat.to_str().unwrap(), "--mode", "alt", "--gateway", &url]).env_remove("MMC_API_KEY");
            if let Some(k) = key {
                cmd.env("MMC_API_KEY", k);
            }
            cmd.output().unwrap()
        };
        (run(Some(KEY)), run(None))
    })
    .await
    .unwrap();
    assert!(with.status.success() && String::from_utf8_lossy(&with.stdout).contains("A cat."), "{with:?}");
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success() && stderr.contains("API key"), "{stderr}");
}
