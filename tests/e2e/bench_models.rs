//! `mmc bench models` (the core of `tests/bench/gpu.sh`) against live model services on the
//! CPU: it records their outputs on its fixed inputs, a second run compared with the record
//! holds every check (same binaries, same device) and prints figures, and a doctored record
//! fails every check with exit status 1, which is what the GPU script relies on.

use std::{process::Command, time::Duration};

use mmc_tests::{binary, models_dir, start_service};
use serde_json::Value;

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";

/// Runs `mmc bench models` with `args`; returns (exit code, JSON lines printed).
fn bench(args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(binary("mmc")).args(["bench", "models"]).args(args).output().expect("run mmc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.code().is_some(), "killed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    (out.status.code().unwrap(), lines)
}

fn checks(lines: &[Value]) -> Vec<(String, bool)> {
    lines.iter().filter(|l| l.get("check").is_some()).map(|l| (l["check"].as_str().unwrap().to_string(), l["held"].as_bool().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_models_records_compares_and_fails_a_doctored_record() {
    let t = Duration::from_secs(90);
    let (embed, textgen, speech) = tokio::join!(
        start_service("mmc-embed", &[], t),
        start_service("mmc-textgen", &[], t),
        start_service("mmc-speech", &["--multilingual-model", ""], t),
    );
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("cpu.json");
    let doctored = dir.path().join("doctored.json");
    let photos = models_dir().join("test-photos");
    let (embed, textgen, speech) = (embed.url.clone(), textgen.url.clone(), speech.url.clone());

    tokio::task::spawn_blocking(move || {
        let services = ["--embed", &embed, "--textgen", &textgen, "--speech", &speech, "--audio", CLIP, "--photos", photos.to_str().unwrap()];
        let small = ["--max-tokens", "24", "--runs", "1", "--streams", "2", "--speech-streams", "1", "--embed-requests", "2"];

        let (code, lines) = bench(&[&services[..], &["--no-figures", "--max-tokens", "24", "--record", record.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{lines:?}");
        let recorded: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(recorded["embed"]["texts"].as_array().unwrap().len(), 8);
        assert!(!recorded["embed"]["images"].as_object().unwrap().is_empty());
        for p in recorded["textgen"]["prompts"].as_array().unwrap() {
            assert_eq!(p["tokens"].as_array().unwrap().len(), p["logprobs"].as_array().unwrap().len());
            assert!(!p["tokens"].as_array().unwrap().is_empty(), "{p}");
        }
        assert!(recorded["speech"]["text"].as_str().unwrap().to_lowercase().contains("young man"), "{}", recorded["speech"]);

        // Same binaries, same device: every check holds; the figures are printed.
        let (code, lines) = bench(&[&services[..], &small[..], &["--label", "again", "--compare", record.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{lines:?}");
        let held = checks(&lines);
        assert_eq!(held.len(), 4, "{lines:?}");
        assert!(held.iter().all(|(_, ok)| *ok), "{held:?}");
        let figures: Vec<&Value> = lines.iter().filter(|l| l.get("figure").is_some()).collect();
        let names: Vec<&str> = figures.iter().map(|f| f["figure"].as_str().unwrap()).collect();
        assert_eq!(names, ["texts_per_s", "images_per_s", "tokens_per_s", "audio_s_per_s"], "{figures:?}");
        assert!(figures.iter().all(|f| f["median"].as_f64().unwrap() > 0.0 && f["label"] == "again"), "{figures:?}");

        // A record that differs the way a broken device would: every check fails, exit 1.
        let mut bad = recorded.clone();
        for v in bad["embed"]["texts"][0].as_array_mut().unwrap() {
            *v = Value::from(-v.as_f64().unwrap());
        }
        for p in bad["textgen"]["prompts"].as_array_mut().unwrap() {
            let tokens = p["tokens"].as_array_mut().unwrap();
            tokens[1] = Value::from(tokens[1].as_u64().unwrap() + 1); // parts after one token
            p["logprobs"][0] = Value::from(p["logprobs"][0].as_f64().unwrap() - 2.0);
        }
        bad["speech"]["text"] = Value::from("nothing like what was said in the recording at all");
        std::fs::write(&doctored, serde_json::to_vec(&bad).unwrap()).unwrap();
        let (code, lines) = bench(&[&services[..], &["--no-figures", "--max-tokens", "24", "--compare", doctored.to_str().unwrap()]].concat());
        assert_eq!(code, 1, "{lines:?}");
        let held = checks(&lines);
        assert_eq!(held.len(), 4, "{lines:?}");
        assert!(held.iter().all(|(_, ok)| !*ok), "{held:?}");
    })
    .await
    .unwrap();
}
