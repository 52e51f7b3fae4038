//! The gateway's web UI in a real browser: the whole cluster as processes, then
//! `tests/ui/web_ui_check.mjs` drives Debian's headless Chromium through playwright-core
//! (pinned by `tests/ui/package-lock.json`, installed by `deploy/test-tools.sh`):
//! photos indexed by drag and drop and the file input, "a cat" finds the cat photo first;
//! the unsure alt texts reviewed (one corrected, one approved, keyboard only); a photo
//! described, its alt text copied; the test meeting uploaded, its action items,
//! timestamps and a cited answer shown, an owner reassigned, a decision rejected and the
//! notes exported. On every page: all controls reachable by Tab,
//! alt text on every photo, no script errors or CSP violations, and no serious or
//! critical axe-core violations. Screenshots and axe reports are kept in
//! `target/test-artifacts/web-ui/` (or `$MMC_TEST_ARTIFACTS/web-ui/`).

use std::{path::PathBuf, process::Command};

use mmc_tests::{bin_dir, deploy_tool, free_port_range, models_dir, start_cluster, synthesize_meeting};

fn artifacts_dir() -> PathBuf {
    let root = std::env::var_os("MMC_TEST_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| bin_dir().join("../test-artifacts"));
    root.join("web-ui")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_searches_describes_and_summarizes_accessibly() {
    let dir = tempfile::tempdir().unwrap();
    let meeting = synthesize_meeting(dir.path());
    let http_addr = format!("127.0.0.1:{}", free_port_range(1));
    // With API keys on, as a shared deployment runs: the UI asks for the key once.
    let key = "web-ui-test-key-0123456789";
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{key}\n")).unwrap();
    let gateway_args = ["--http-listen", &http_addr, "--api-keys-file", keys.to_str().unwrap()];
    let _cluster = start_cluster(&["mmc-embed", "mmc-caption", "mmc-speech", "mmc-textgen"], &dir.path().join("data"), &gateway_args).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui/web_ui_check.mjs");
    let artifacts = artifacts_dir();
    let _ = std::fs::remove_dir_all(&artifacts);
    let (base, photos, out_dir) = (format!("http://{http_addr}"), models_dir().join("test-photos"), artifacts.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(deploy_tool("node")).arg(script).arg(base).arg(photos).arg(meeting).arg(out_dir).env("MMC_UI_API_KEY", key).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "web UI checks failed (screenshots in {}):\n{stdout}\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["search", "review", "describe", "meetings"] {
        let shot = artifacts.join(format!("{page}.png"));
        let bytes = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} is a real screenshot", shot.display());
    }
}
