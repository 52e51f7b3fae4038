//! The hub profile downloads with hf-hub from whatever `HF_ENDPOINT` names: here a
//! loopback server speaking the Hugging Face "resolve" protocol (commit and etag
//! headers, byte ranges), so no real hub is needed.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::Path,
    process::Command,
};

use mmc_tests::{binary, sha256_file};

/// Serves `files` (path after `/resolve/<rev>/` -> bytes) for repo `test/tiny`, forever.
fn fake_hub(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut range_start = 0usize;
            let mut range_end: Option<usize> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap_or(("0", ""));
                    range_start = a.parse().unwrap_or(0);
                    range_end = b.parse().ok();
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut stream = stream;
            let file = path.strip_prefix("/test/tiny/resolve/main/").and_then(|f| files.get(f));
            let Some(data) = file else {
                let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            };
            let end = range_end.unwrap_or(data.len() - 1).min(data.len() - 1);
            let body = &data[range_start..=end];
            let _ = write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\n\
                 x-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\netag: \"{}\"\r\nConnection: close\r\n\r\n",
                body.len(),
                range_start,
                end,
                data.len(),
                data.len()
            );
            let _ = stream.write_all(body);
        }
    });
    format!("http://{addr}")
}

fn manifest(dir: &Path, pin: Option<&str>) -> std::path::PathBuf {
    let sha = pin.map(|s| format!(", sha256 = \"{s}\"")).unwrap_or_default();
    let text = format!(
        r#"
[[model]]
id = "tiny"
profile = "hub"
role = "test"
license = "MIT"
hub = {{ repo = "test/tiny", revision = "main" }}
files = [
  {{ from = ["config.json"], to = "config.json" }},
  {{ from = ["weights-1.bin", "weights-2.bin"], to = "weights.bin"{sha} }},
]
"#
    );
    let path = dir.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn fetch(models: &Path, manifest: &Path, endpoint: &str, hf_home: &Path) -> (bool, String) {
    let out = Command::new(binary("mmc"))
        .args(["models", "fetch", "--profile", "hub", "--manifest"])
        .arg(manifest)
        .env("MMC_MODELS_DIR", models)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", hf_home)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn hub_profile_downloads_through_hf_hub_from_hf_endpoint() {
    let part1: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let part2 = b"tail of the weights".to_vec();
    let config = br#"{"hidden_size": 8}"#.to_vec();
    let endpoint = fake_hub(HashMap::from([
        ("config.json".to_string(), config.clone()),
        ("weights-1.bin".to_string(), part1.clone()),
        ("weights-2.bin".to_string(), part2.clone()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");

    let (ok, log) = fetch(&models, &manifest(dir.path(), None), &endpoint, &dir.path().join("hf"));
    assert!(ok, "{log}");
    assert_eq!(std::fs::read(models.join("tiny/config.json")).unwrap(), config);
    let joined = [part1.as_slice(), part2.as_slice()].concat();
    assert_eq!(std::fs::read(models.join("tiny/weights.bin")).unwrap(), joined, "parts joined in order");
    let sha = sha256_file(&models.join("tiny/weights.bin"));
    let stamp = std::fs::read_to_string(models.join("tiny/.mmc-verified.json")).unwrap();
    assert!(stamp.contains(&sha), "sha256 recorded on first download: {stamp}");

    // A pinned sha256 that the download does not match is refused.
    let other = tempfile::tempdir().unwrap();
    let wrong = "1111111111111111111111111111111111111111111111111111111111111111";
    let (ok, log) = fetch(&other.path().join("models"), &manifest(other.path(), Some(wrong)), &endpoint, &other.path().join("hf"));
    assert!(!ok);
    assert!(log.contains("checksum mismatch") && log.contains(&sha), "{log}");
}
