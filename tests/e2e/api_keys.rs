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

/// `message` with `authorization: Bearer <key>`.
fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// Sends one HTTP/1.1 request and returns the status, the `Retry-After` header and the body.
fn http_call(addr: &str, method: &str, path: &str, key: &str) -> (u16, Option<String>, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = if method == "POST" { "{}" } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let retry_after = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_string()));
    (status, retry_after, body.to_string())
}

/// Scopes: a read key reads but may not change or delete, a write key may not delete;
/// refused with PERMISSION_DENIED / 403 before any work. Rate limit: one token bucket per
/// key, shared by the gateway's gRPC and HTTP ports; past it, RESOURCE_EXHAUSTED with
/// `retry-after` / 429 with `Retry-After`, while other keys go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_per_key_rate_limits() {
    use mmc_proto::gateway::v1::{DeleteMeetingRequest, ListMeetingsRequest};
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (reader, writer, admin, busy) = ("reader-key-0123456789ab", "writer-key-0123456789ab", "admin-key-0123456789abc", "busy-key-0123456789abcd");
    std::fs::write(&keys, format!("{reader} read\n{writer} write\n{admin}\n{busy} read\n")).unwrap();
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let data = dir.path().join("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--http-listen",
        &http,
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--api-key-rate-per-s",
        "1",
        "--api-key-burst",
        "5",
    ];
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    let mut client = GatewayServiceClient::new(gateway.channel.clone());
    let delete = |key: &str| with_key(key, DeleteMeetingRequest { meeting_id: "mtg-0000".into() });

    // gRPC: reading with a read key works; deleting needs admin.
    client.list_meetings(with_key(reader, ListMeetingsRequest::default())).await.expect("a read key lists");
    for key in [reader, writer] {
        let e = client.delete_meeting(delete(key)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{key}: {e:?}");
        assert!(e.message().contains("needs admin"), "{}", e.message());
    }
    let e = client.delete_meeting(delete(admin)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "the admin key passes; there is no such meeting: {e:?}");

    // HTTP: the same scopes by route.
    let (status, _, body) = http_call(&http, "GET", "/v1/meetings", reader);
    assert_eq!(status, 200, "{body}");
    for (key, method, path, want) in [
        (reader, "POST", "/v1/images", 403),
        (reader, "POST", "/v1/meetings/mtg-0000/review", 403),
        (writer, "DELETE", "/v1/meetings/mtg-0000", 403),
        (admin, "DELETE", "/v1/meetings/mtg-0000", 404),
    ] {
        let (status, _, body) = http_call(&http, method, path, key);
        assert_eq!(status, want, "{key} {method} {path}: {body}");
        if want == 403 {
            assert!(body.contains("insufficient_scope"), "{body}");
        }
    }

    // Rate limit: a burst of 5 for the busy key, over both ports; then refused with a time
    // to wait, while another key is served.
    for _ in 0..3 {
        client.list_meetings(with_key(busy, ListMeetingsRequest::default())).await.expect("within the burst");
    }
    for _ in 0..2 {
        assert_eq!(http_call(&http, "GET", "/v1/meetings", busy).0, 200, "within the burst");
    }
    let (status, retry_after, body) = http_call(&http, "GET", "/v1/meetings", busy);
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limit_exceeded"), "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let e = client.list_meetings(with_key(busy, ListMeetingsRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    client.list_meetings(with_key(admin, ListMeetingsRequest::default())).await.expect("another key is not limited by the busy one");
    // The bucket refills: one call a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(http_call(&http, "GET", "/v1/meetings", busy).0, 200, "refilled");
    let scrape = mmc_tests::http_get(&gateway.metrics, "/metrics").unwrap().1;
    assert!(mmc_tests::metric_value(&scrape, "mmc_api_key_rate_limited_total", &[]).unwrap_or(0.0) >= 2.0, "{scrape}");
}

/// Beyond loopback the gateway wants keys: without them it does not start, and says what
/// to do; `--allow-unauthenticated` (meant, e.g. behind a trusted proxy) or a keys file
/// lets it start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_to_listen_beyond_loopback_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_range(2);
    let listen = format!("0.0.0.0:{port}");
    let out = Command::new(binary("mmc-gateway"))
        .args(["--listen", &listen, "--metrics-listen", &format!("127.0.0.1:{}", port + 1), "--http-listen", "off", "--data-dir"])
        .arg(dir.path())
        .env_remove("MMC_API_KEYS_FILE")
        .env_remove("MMC_ALLOW_UNAUTHENTICATED")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started open to the network: {stderr}");
    assert!(stderr.contains("needs API keys") && stderr.contains("--api-keys-file"), "{stderr}");
    // The HTTP listener counts too, and loopback alone needs nothing (every other test).
    let http = format!("0.0.0.0:{}", free_port_range(1));
    let out = Command::new(binary("mmc-gateway"))
        .args(["--http-listen", &http, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env_remove("MMC_API_KEYS_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs API keys"));
    let mut open = Command::new(binary("mmc-gateway"));
    open.args([
        "--listen",
        &listen,
        "--metrics-listen",
        &format!("127.0.0.1:{}", port + 1),
        "--http-listen",
        "off",
        "--allow-unauthenticated",
        "--data-dir",
    ])
    .arg(dir.path().join("open"))
    .env_remove("MMC_API_KEYS_FILE");
    let _guard = mmc_tests::ChildGuard::spawn(&mut open);
    let serving = mmc_tests::eventually(Duration::from_secs(30), || async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?.into_inner().status;
        (status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32).then_some(())
    })
    .await;
    assert!(serving.is_some(), "--allow-unauthenticated: the gateway did not come up on {listen}");
}
