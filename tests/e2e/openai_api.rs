//! The gateway's OpenAI-compatible HTTP API as an OpenAI user sees it: the official
//! `openai` Python client (tests/scripts/openai_client_check.py) against a real gateway
//! over real embed, speech and textgen processes, with recorded LibriVox speech. Plus the
//! edges the client does not reach: OpenAI-shaped errors for malformed bodies and
//! unknown routes, the upload limit, and a streamed chat cut off by its client.

use std::{process::Command, time::Duration};

use mmc_tests::{deploy_tool, free_port_range, http_get, http_request, start_cluster};

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";
/// Words of the clip's human transcript ("he was not an ill disposed young man") that
/// tiny.en gets right ("ill disposed" it hears as "old-sposed").
const CLIP_WORDS: &str = "was not young man";

/// `mmc_tests::http_request` with a timeout long enough for model work.
fn http(addr: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    http_request(addr, method, path, content_type, body, Duration::from_secs(120)).unwrap()
}

/// The `error` object of an OpenAI-shaped error body (chunked framing tolerated).
fn error_of(body: &str) -> serde_json::Value {
    let start = body.find('{').unwrap_or_else(|| panic!("no JSON in {body:?}"));
    let end = body.rfind('}').unwrap();
    let v: serde_json::Value = serde_json::from_str(&body[start..=end]).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_works_against_the_gateway() {
    let data = tempfile::tempdir().unwrap();
    let http_addr = format!("127.0.0.1:{}", free_port_range(1));
    let gateway_args = ["--http-listen", &http_addr, "--http-max-upload-bytes", "2000000"];
    let _cluster = start_cluster(&["mmc-speech", "mmc-textgen", "mmc-embed"], data.path(), &gateway_args).await;

    // The official client: every endpoint, every transcription format, streaming, schemas, errors.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/openai_client_check.py");
    let base = format!("http://{http_addr}/v1");
    let out = tokio::task::spawn_blocking(move || Command::new(deploy_tool("python")).arg(script).args([&base, CLIP, CLIP_WORDS]).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "openai client checks failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("openai client report: {report}");
    assert_eq!(report["embeddings_float"]["dims"], 384);

    // What the client never sends: bad JSON, unknown routes, oversized uploads.
    let addr = http_addr.clone();
    tokio::task::spawn_blocking(move || {
        let (status, body) = http(&addr, "POST", "/v1/chat/completions", "application/json", b"{not json");
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_of(&body)["type"], "invalid_request_error");
        let (status, body) = http(&addr, "POST", "/v1/embeddings", "application/json", br#"{"input": [1, 2, 3]}"#);
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_of(&body)["code"], "unsupported_parameter");
        let (status, body) = http(&addr, "GET", "/v1/nothing", "text/plain", b"");
        assert_eq!(status, 404, "{body}");
        assert_eq!(error_of(&body)["type"], "not_found_error");
        // 3 MB against a 2 MB limit: refused, the process stays up.
        let boundary = "mmcboundary";
        let mut form =
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
                .into_bytes();
        form.extend(std::iter::repeat_n(0u8, 3_000_000));
        form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        let (status, body) = http(&addr, "POST", "/v1/audio/transcriptions", &format!("multipart/form-data; boundary={boundary}"), &form);
        assert!(status == 413 || status == 400, "oversized upload: {status} {body}");
        let (status, _) = http_get(&addr, "/healthz").unwrap();
        assert_eq!(status, 200, "the gateway is still serving");
    })
    .await
    .unwrap();
}
