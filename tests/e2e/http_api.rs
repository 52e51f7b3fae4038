//! The gateway's own REST routes and OpenAPI document, against the whole cluster as real
//! processes: `tests/scripts/http_api_check.py` (images indexed, searched, listed,
//! described and deleted over multipart/JSON; a meeting summarized with server-sent
//! progress, fetched and asked; every documented operation routed), then schemathesis
//! generates requests from `/openapi.json` and none may get a 5xx.

use std::process::Command;

use std::time::Duration;

use mmc_tests::{deploy_tool as tool, free_port_range, http_request_as, models_dir, start_cluster};

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";

#[tokio::test(flavor = "multi_thread")]
async fn rest_routes_and_the_openapi_document_hold_up() {
    let data = tempfile::tempdir().unwrap();
    let http_addr = format!("127.0.0.1:{}", free_port_range(1));
    let gateway_args = [
        "--http-listen",
        &http_addr,
        "--http-max-upload-bytes",
        "50000000",
        // Generated chats that set no max_tokens stay short (the property is "no 5xx", not length).
        "--http-default-max-tokens",
        "24",
        // And the longest any may ask for (the document states it, so generated ones keep to it).
        "--http-max-tokens",
        "32",
    ];
    let _cluster = start_cluster(&["mmc-embed", "mmc-caption", "mmc-speech", "mmc-textgen"], data.path(), &gateway_args).await;
    let base = format!("http://{http_addr}");

    // A browser on another site: no DNS rebinding (a foreign Host name on a loopback
    // listener), no state-changing request from another origin; the same request from the
    // gateway's own pages, or from a client that is not a browser, goes through.
    let search = br#"{"query": "a cat"}"#;
    let t = Duration::from_secs(30);
    let (status, body) = http_request_as(&http_addr, "evil.example:80", &[], "GET", "/v1/models", "text/plain", b"", t).unwrap();
    assert!(status == 403 && body.contains("host_not_allowed"), "{status} {body}");
    let (status, _) =
        http_request_as(&http_addr, &format!("localhost:{}", http_addr.rsplit(':').next().unwrap()), &[], "GET", "/v1/models", "text/plain", b"", t)
            .unwrap();
    assert_eq!(status, 200);
    for headers in [[("Origin", "http://evil.example")], [("Sec-Fetch-Site", "cross-site")]] {
        let (status, body) = http_request_as(&http_addr, &http_addr, &headers, "POST", "/v1/images/search", "text/plain", search, t).unwrap();
        assert!(status == 403 && body.contains("cross_origin"), "{headers:?}: {status} {body}");
    }
    // A body declared larger than the route takes is refused at once, not waited for.
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(&http_addr).unwrap();
    stream.set_read_timeout(Some(t)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!("POST /v1/embeddings HTTP/1.1\r\nHost: {http_addr}\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n{{")
            .as_bytes(),
    )
    .unwrap();
    // Read until the refusal is in (the server may keep the socket open to drain).
    let mut response = String::new();
    let mut buffer = [0u8; 4096];
    while !response.contains("payload_too_large") {
        match std::io::Read::read(&mut stream, &mut buffer) {
            Ok(n) if n > 0 => response.push_str(&String::from_utf8_lossy(&buffer[..n])),
            _ => break,
        }
    }
    assert!(response.starts_with("HTTP/1.1 413") && response.contains("payload_too_large"), "{response}");
    assert!(started.elapsed() < t, "the refusal waited for the body");
    let own = format!("http://{http_addr}");
    let (status, body) =
        http_request_as(&http_addr, &http_addr, &[("Origin", own.as_str())], "POST", "/v1/images/search", "application/json", search, t).unwrap();
    assert_eq!(status, 200, "{body}");

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/http_api_check.py");
    let photos = models_dir().join("test-photos");
    let b = base.clone();
    let out =
        tokio::task::spawn_blocking(move || Command::new(tool("python")).arg(script).arg(&b).arg(photos).arg(CLIP).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "REST checks failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("REST report: {}", stdout.lines().last().unwrap_or_default());

    // Property-based: requests generated from the document (valid and invalid); no 5xx.
    let report = tempfile::tempdir().unwrap();
    let b = base.clone();
    let report_dir = report.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool("schemathesis"))
            .args(["run", &format!("{b}/openapi.json"), "--checks", "not_a_server_error", "--max-examples", "8", "--seed", "1"])
            .args(["--phases", "examples,fuzzing", "--generation-database", "none", "--request-timeout", "120", "--workers", "2"])
            .args(["--no-color"])
            .arg("--report-dir")
            .arg(report_dir)
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found server errors:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("schemathesis: {}", stdout.lines().rev().take(6).collect::<Vec<_>>().join(" | "));
}

/// CORS is off by default and opened per origin: with `--http-cors-origins`, the named
/// origin's preflight is answered and its requests (state-changing ones included) go
/// through and may be read; another origin gets no CORS headers and its state-changing
/// requests are refused.
#[tokio::test(flavor = "multi_thread")]
async fn cors_is_opened_only_to_the_origins_named() {
    let data = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let args = ["--http-listen", &http, "--data-dir", data.path().to_str().unwrap(), "--http-cors-origins", "https://app.example"];
    let _gateway = mmc_tests::start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    let raw = |origin: &str, method: &str, path: &str, extra: &str| {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\nOrigin: {origin}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
        let mut stream = std::net::TcpStream::connect(&http).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut response);
        response.to_ascii_lowercase()
    };
    let preflight = "Access-Control-Request-Method: DELETE\r\nAccess-Control-Request-Headers: authorization\r\n";
    let allowed = raw("https://app.example", "OPTIONS", "/v1/images/img-0", preflight);
    assert!(allowed.starts_with("http/1.1 204"), "{allowed}");
    assert!(allowed.contains("access-control-allow-origin: https://app.example"), "{allowed}");
    assert!(allowed.contains("access-control-allow-headers: authorization, content-type"), "{allowed}");
    let read = raw("https://app.example", "GET", "/v1/images", "");
    assert!(read.starts_with("http/1.1 200") && read.contains("access-control-allow-origin: https://app.example"), "{read}");
    // A state-changing request from the named origin reaches the route (404: no such image).
    let delete = raw("https://app.example", "DELETE", "/v1/images/img-0123456789abcdef0123456789abcdef", "");
    assert!(delete.starts_with("http/1.1 404"), "{delete}");
    // Another origin: no CORS headers, and its state-changing requests are refused.
    for response in [raw("https://evil.example", "OPTIONS", "/v1/images/img-0", preflight), raw("https://evil.example", "GET", "/v1/images", "")] {
        assert!(!response.contains("access-control-allow-origin"), "{response}");
    }
    let refused = raw("https://evil.example", "DELETE", "/v1/images/img-0123456789abcdef0123456789abcdef", "");
    assert!(refused.starts_with("http/1.1 403"), "{refused}");
}
