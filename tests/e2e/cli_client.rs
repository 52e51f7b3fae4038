//! The `mmc` client commands as a shell user or a script runs them, against real services:
//! index a directory of photos, search by words and by a photo, describe a photo,
//! transcribe recorded speech to subtitles, summarize a recording and ask about it, all
//! with `--json` parsed here; and the message a user gets when the cluster is not running.

use std::{path::Path, process::Command};

use mmc_tests::{binary, models_dir, start_cluster};
use serde_json::Value;

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";

/// Runs `mmc args...`; returns (success, stdout, stderr).
fn mmc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("mmc")).args(args).output().expect("run mmc");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn mmc_json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = mmc(args);
    assert!(ok, "mmc {args:?} failed:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("mmc {args:?}: not JSON ({e}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_every_flow_against_a_live_cluster() {
    let data = tempfile::tempdir().unwrap();
    let (services, gateway) = start_cluster(&["mmc-embed", "mmc-caption", "mmc-speech", "mmc-textgen"], data.path(), &[]).await;
    let gw = gateway.url.clone();
    let sp = services[2].url.clone();

    tokio::task::spawn_blocking(move || {
        let photos = models_dir().join("test-photos");
        let photos = photos.to_str().unwrap();

        // Index a directory; a second run finds every photo already indexed.
        let indexed = mmc_json(&["index", photos, "--meta", "album=test", "--gateway", &gw, "--json"]);
        let images = indexed["images"].as_array().unwrap();
        let photo_files =
            std::fs::read_dir(photos).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png" || x == "jpg")).count();
        assert_eq!(images.len(), photo_files, "{indexed}");
        assert_eq!(indexed["failed"], 0);
        assert!(images.iter().all(|i| !i["caption"].as_str().unwrap().is_empty()), "{indexed}");
        let again = mmc_json(&["index", photos, "--gateway", &gw, "--json"]);
        assert!(again["images"].as_array().unwrap().iter().all(|i| i["already_indexed"] == true), "{again}");

        // Search by words, with a metadata filter, and by a photo.
        let hits = mmc_json(&["search", "a cat", "--top-k", "3", "--filter", "album=test", "--gateway", &gw, "--json"]);
        assert_eq!(hits["hits"][0]["source_name"], "cat.png", "{hits}");
        let none = mmc_json(&["search", "a cat", "--filter", "album=other", "--gateway", &gw, "--json"]);
        assert_eq!(none["hits"].as_array().unwrap().len(), 0, "{none}");
        let cat = Path::new(photos).join("cat.png");
        let by_image = mmc_json(&["search", "--image", cat.to_str().unwrap(), "--top-k", "1", "--gateway", &gw, "--json"]);
        assert_eq!(by_image["hits"][0]["source_name"], "cat.png", "{by_image}");

        // Describe: alt text within 125 characters, naming the cat.
        let described = mmc_json(&["describe", cat.to_str().unwrap(), "--gateway", &gw, "--json"]);
        let alt = described["captions"].as_array().unwrap().iter().find(|c| c["mode"] == "alt_text").expect("alt text");
        let alt = alt["text"].as_str().unwrap();
        assert!(alt.len() <= 125 && alt.to_lowercase().contains("cat"), "{described}");

        // Review: the unsure alt texts are listed, least confident first; one is corrected
        // by file, one approved by id; both leave the queue and the correction is found.
        let queue = mmc_json(&["review", "--gateway", &gw, "--json"]);
        let queued = queue["images"].as_array().unwrap();
        assert!(queued.iter().any(|i| i["source_name"] == "astronaut.png"), "{queue}");
        assert!(queued.iter().all(|i| i["needs_review"] == true && i["source_name"] != "cat.png"), "{queue}");
        let astronaut = Path::new(photos).join("astronaut.png");
        let set = mmc_json(&[
            "describe",
            astronaut.to_str().unwrap(),
            "--set",
            "An astronaut in a spacesuit.",
            "--reviewer",
            "ana",
            "--gateway",
            &gw,
            "--json",
        ]);
        assert_eq!((set["caption"].as_str(), set["needs_review"].as_bool()), (Some("An astronaut in a spacesuit."), Some(false)), "{set}");
        let other = queued.iter().find(|i| i["source_name"] != "astronaut.png").expect("a second image to review");
        let id = other["image_id"].as_str().unwrap();
        mmc_json(&["review", "--approve", id, "--reviewer", "bo", "--gateway", &gw, "--json"]);
        let after = mmc_json(&["review", "--gateway", &gw, "--json"]);
        assert_eq!(after["images"].as_array().unwrap().len(), queued.len() - 2, "{after}");
        let found = mmc_json(&["search", "astronaut spacesuit", "--top-k", "1", "--gateway", &gw, "--json"]);
        assert_eq!(found["hits"][0]["source_name"], "astronaut.png", "{found}");

        // Transcribe to SubRip subtitles (speech service).
        let (ok, srt, stderr) = mmc(&["transcribe", CLIP, "--format", "srt", "--speech", &sp]);
        assert!(ok, "{stderr}");
        assert!(srt.starts_with("1\n") && srt.contains(" --> ") && srt.to_lowercase().contains("young man"), "{srt}");

        // Summarize a recording and ask about it.
        let meeting = mmc_json(&["summarize", CLIP, "--title", "Reading", "--language", "en", "--gateway", &gw, "--json"]);
        let id = meeting["meeting_id"].as_str().unwrap().to_string();
        assert!(!id.is_empty() && meeting["transcript"].as_array().is_some_and(|t| !t.is_empty()), "{meeting}");
        let answer = mmc_json(&["ask", &id, "Who was not ill disposed?", "--gateway", &gw, "--json"]);
        assert!(answer["answer"].as_str().is_some_and(|a| !a.is_empty()), "{answer}");
        let (ok, md, stderr) = mmc(&["meeting", "export", &id, "--format", "md", "--gateway", &gw]);
        assert!(ok && md.starts_with("# Reading") && md.contains("## Action items"), "{md}{stderr}");
        let (ok, ics, stderr) = mmc(&["meeting", "export", &id, "--format", "ics", "--gateway", &gw]);
        assert!(ok && ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}{stderr}");
        let listed = mmc_json(&["meeting", "list", "--gateway", &gw, "--json"]);
        assert!(listed["meetings"].as_array().unwrap().iter().any(|m| m["meeting_id"] == id.as_str()), "{listed}");
        mmc_json(&["meeting", "delete", &id, "--gateway", &gw, "--json"]);
        let (ok, _, stderr) = mmc(&["ask", &id, "anything", "--gateway", &gw]);
        assert!(!ok && stderr.contains("no meeting"), "a deleted meeting: {stderr}");
        let (ok, _, stderr) = mmc(&["ask", "no-such-meeting", "anything", "--gateway", &gw]);
        assert!(!ok && stderr.contains("no-such-meeting"), "unknown meeting: {stderr}");
        // The server's refusal reads as its code, its message and the id of the request
        // (what finds it in the gateway's log), not as tonic's debug dump.
        let line = stderr.lines().find(|l| l.starts_with("mmc: error: NOT_FOUND: ")).unwrap_or_else(|| panic!("{stderr}"));
        let id = line.rsplit_once("(request id ").and_then(|(_, id)| id.strip_suffix(')')).unwrap_or_else(|| panic!("{line}"));
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");

        // Nothing listening: a clear message, not a transport error dump.
        let (ok, _, stderr) = mmc(&["search", "a cat", "--gateway", "http://127.0.0.1:9"]);
        assert!(!ok && stderr.contains("is the cluster running") && stderr.contains("mmc up"), "{stderr}");
    })
    .await
    .unwrap();
}
