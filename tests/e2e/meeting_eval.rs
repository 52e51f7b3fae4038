//! The meeting chain scored on a subset of the evaluation set (issue #25's CI gate): real
//! `mmc-speech`, `mmc-textgen`, `mmc-embed` and `mmc-gateway` processes, meetings spoken
//! by espeak-ng in two voices, and `mmc eval meetings` (the same command as
//! `tests/bench/meetings.sh`) scoring what the gateway wrote against each meeting's facts.
//!
//! It fails on any invented answer, action item or summary claim, and on owner accuracy,
//! decision precision or recall, or question accuracy below 0.8. The full table (every
//! meeting, three voices, two speeds) is in docs/gateway.md.

use std::{path::Path, process::Command};

use mmc_tests::{binary, start_meeting_services};

/// Four settings of the twelve: a budget meeting, an incident review, a research group and
/// a school board (numbers, dates, names that speech recognition hears well and badly).
const MEETINGS: [&str; 4] = ["budget_planning", "incident_review", "research_group", "school_board"];
const VOICES: [&str; 2] = ["en-gb", "en-us+f3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_notes_and_answers_invent_nothing_on_the_evaluation_subset() {
    let dir = tempfile::tempdir().unwrap();
    let (_speech, _textgen, _embed, gateway) = start_meeting_services(&dir.path().join("data")).await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/meetings");
    let mut cmd = Command::new(binary("mmc"));
    cmd.args(["eval", "meetings", "--json", "--speed", "150", "--gateway", &gateway.url, "--fixtures", fixtures.to_str().unwrap()]);
    for m in MEETINGS {
        cmd.args(["--meeting", m]);
    }
    for v in VOICES {
        cmd.args(["--voice", v]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "mmc eval meetings failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for run in report["runs"].as_array().unwrap() {
        let s = &run["score"];
        println!("{} {} {}", s["meeting"], s["voice"], run["figures"]);
        for a in s["answers"].as_array().unwrap() {
            println!(
                "  {} {} [{}] {} -> {}",
                if a["right"] == true { "ok " } else { "BAD" },
                if a["invented"] == true { "INVENTED" } else { "" },
                a["source"],
                a["question"],
                a["answer"]
            );
        }
    }
    let total = &report["totals"][0];
    let f = &total["figures"];
    println!("totals: {f}");
    assert_eq!(report["runs"].as_array().unwrap().len(), MEETINGS.len() * VOICES.len());
    assert_eq!(f["invented_items"], 0, "{}", total["invented_items"]);
    assert_eq!(f["invented_answers"], 0, "{}", total["invented_answers"]);
    assert_eq!(f["summary_invented"], 0, "{}", total["summary_invented"]);
    for figure in ["owner_accuracy", "decision_precision", "decision_recall", "question_accuracy"] {
        let value = f[figure].as_f64().unwrap();
        assert!(value >= 0.8, "{figure} = {value:.3} < 0.8");
    }
}
