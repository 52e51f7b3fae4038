//! `mmc eval alt-text`: alt text judged against what each photo shows ([`alt_text`]).
//!
//! `mmc eval meetings`: the meeting chain scored on the evaluation set
//! (`tests/fixtures/meetings/`). Each meeting is spoken by espeak-ng in every voice and
//! speed asked for, summarized through the gateway (with its participant list), asked its
//! questions, and scored by [`score`] against its facts. Several `--prompt-version`s are
//! run on the same recordings and compared side by side, so a prompt change is judged by
//! numbers. `--json` prints every run and answer for scripts and tests.

pub mod alt_text;
pub(crate) mod fixtures;
pub mod score;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use mmc_proto::{
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, summarize_meeting_request::Payload, summarize_meeting_response::Event, AnswerSource,
        AskMeetingRequest, MeetingConfig, MeetingSummary, SummarizeMeetingRequest,
    },
    speech::v1::{Segment, TranscribeConfig},
};
use serde_json::json;

use self::score::{Figures, Score};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Score the meeting chain (transcript, decisions, action items, answers) on the
    /// evaluation set, through a running gateway.
    Meetings(MeetingsArgs),
    /// Judge the alt text of every photo in the given directories against what each shows
    /// (tests/fixtures/alt-text/expected.toml): correct, honestly uncertain, or wrong.
    AltText(alt_text::AltTextArgs),
}

#[derive(Args, Debug)]
pub struct MeetingsArgs {
    /// Gateway endpoint.
    #[arg(long, env = "MMC_GATEWAY_ENDPOINT", default_value = "http://127.0.0.1:50055")]
    gateway: String,
    /// The evaluation set.
    #[arg(long, default_value = "tests/fixtures/meetings")]
    fixtures: PathBuf,
    /// Meetings to run (file stems); default: all.
    #[arg(long = "meeting")]
    meetings: Vec<String>,
    /// espeak-ng voices, one recording each.
    #[arg(long = "voice", default_values_t = ["en-us".to_string(), "en-gb".to_string(), "en-us+f3".to_string()])]
    voices: Vec<String>,
    /// Speaking rates in words per minute, one recording each.
    #[arg(long = "speed", default_values_t = [150u32, 180])]
    speeds: Vec<u32>,
    /// Prompt versions to compare (each run on the same recordings); default: the gateway's.
    #[arg(long = "prompt-version")]
    prompt_versions: Vec<String>,
    /// Send no participant list (owners must then come from the transcript alone).
    #[arg(long)]
    no_participants: bool,
    /// The speech model to transcribe with (`TranscribeConfig.model_id`, e.g.
    /// whisper-base-ct2); default: the speech service's choice for English.
    #[arg(long, default_value = "")]
    speech_model: String,
    /// Join the chosen meetings into one long meeting, their lines in order and repeated
    /// this many times (every fact and question once), to measure a long recording end to
    /// end: the 13 of the set make about 15 minutes at 150 words a minute, `--concatenate 3`
    /// about 45. 0: each meeting on its own.
    #[arg(long, default_value_t = 0)]
    concatenate: usize,
    /// Print one JSON document (every run, every answer) instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write each rendered recording here (`<meeting>.<voice>.<speed>.wav`), to listen
    /// to or to feed `mmc summarize`.
    #[arg(long)]
    audio_dir: Option<PathBuf>,
}

pub async fn run(command: EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Meetings(args) => meetings(args).await,
        EvalCommand::AltText(args) => alt_text::run(args).await,
    }
}

/// One recording's summary through the gateway.
async fn summarize(
    client: &mut GatewayServiceClient<crate::cli_client::Authed>,
    meeting: &fixtures::Meeting,
    audio: &[u8],
    version: &str,
    participants: bool,
    speech_model: &str,
) -> anyhow::Result<(Vec<Segment>, MeetingSummary)> {
    let config = MeetingConfig {
        title: meeting.title.clone(),
        transcription: Some(TranscribeConfig { language: "en".into(), model_id: speech_model.to_string(), ..Default::default() }),
        prompt_version: version.to_string(),
        participants: if participants { meeting.participants.clone() } else { Vec::new() },
    };
    let mut messages = vec![SummarizeMeetingRequest { payload: Some(Payload::Config(config)) }];
    messages.extend(audio.chunks(64 * 1024).map(|c| SummarizeMeetingRequest { payload: Some(Payload::AudioChunk(c.to_vec())) }));
    let mut stream = client.summarize_meeting(tokio_stream::iter(messages)).await?.into_inner();
    let mut segments = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::Segment(s)) => segments.push(s),
            Some(Event::Summary(s)) => return Ok((segments, s)),
            _ => {}
        }
    }
    anyhow::bail!("the meeting stream ended without a summary")
}

async fn meetings(args: MeetingsArgs) -> anyhow::Result<ExitCode> {
    let mut set = fixtures::load(&args.fixtures, &args.meetings)?;
    if args.concatenate > 0 {
        set = vec![fixtures::concatenate(&set, args.concatenate)];
    }
    let channel = crate::cli_client::connect(&args.gateway).await.with_context(|| format!("cannot reach the gateway at {}", args.gateway))?;
    let mut client = GatewayServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    let versions = if args.prompt_versions.is_empty() { vec![String::new()] } else { args.prompt_versions.clone() };
    let mut runs: Vec<Score> = Vec::new();
    for meeting in &set {
        for voice in &args.voices {
            for &speed in &args.speeds {
                let lines: Vec<(&str, &str)> = meeting.lines.iter().map(|l| (voice.as_str(), l.as_str())).collect();
                let audio = crate::speak::speak(&lines, speed, 600)?.context("espeak-ng is not installed (deploy/setup.sh installs it)")?;
                if let Some(dir) = &args.audio_dir {
                    std::fs::create_dir_all(dir)?;
                    std::fs::write(dir.join(format!("{}.{}.{speed}.wav", meeting.name, voice.replace('+', "_"))), &audio)?;
                }
                for version in &versions {
                    let started = Instant::now();
                    let (segments, summary) = summarize(&mut client, meeting, &audio, version, !args.no_participants, &args.speech_model)
                        .await
                        .with_context(|| format!("summarizing {} ({voice}, {speed} wpm)", meeting.name))?;
                    let mut s = score::score_summary(meeting, &segments, &summary, !args.no_participants);
                    for q in &meeting.questions {
                        let request = AskMeetingRequest { meeting_id: summary.meeting_id.clone(), question: q.q.clone(), top_k: 0 };
                        let a = client.ask_meeting(request).await.with_context(|| format!("asking {:?}", q.q))?.into_inner();
                        let source =
                            AnswerSource::try_from(a.source).unwrap_or_default().as_str_name().trim_start_matches("ANSWER_SOURCE_").to_lowercase();
                        let participants = if args.no_participants { &[][..] } else { &meeting.participants[..] };
                        let reply = score::Reply { answer: &a.answer, answerable: a.answerable, source: &source };
                        s.add_answer(&q.q, &q.answer, reply, &segments, participants);
                    }
                    s.meeting = meeting.name.clone();
                    s.setting = meeting.setting.clone();
                    s.voice = voice.clone();
                    s.speed = speed;
                    s.prompt_version = summary.prompt_version.clone();
                    s.seconds = started.elapsed().as_secs_f64();
                    eprintln!("{:<20} {:<9} {:>3} wpm {:<4} {}", s.meeting, s.voice, s.speed, s.prompt_version, line(&s.figures()));
                    let stages: Vec<String> = summary.timings.iter().map(|t| format!("{} {:.1} s", t.stage, t.duration_ms / 1000.0)).collect();
                    let recording_s = segments.last().map_or(0, |s| s.end_ms) / 1000;
                    eprintln!("  {} min {} s of speech; stages: {}; total {:.1} s", recording_s / 60, recording_s % 60, stages.join(", "), s.seconds);
                    runs.push(s);
                }
            }
        }
    }
    let by_version: Vec<(String, Score)> = versions
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let mut total = Score::default();
            for run in runs.iter().skip(i).step_by(versions.len()) {
                total.add(run);
            }
            (runs.get(i).map_or_else(String::new, |r| r.prompt_version.clone()), total)
        })
        .collect();
    if args.json {
        let totals: Vec<_> = by_version.iter().map(|(v, t)| json!({ "prompt_version": v, "figures": t.figures(), "invented_items": t.invented_items, "invented_answers": t.invented_answers, "summary_invented": t.summary_invented })).collect();
        println!("{}", json!({ "runs": runs.iter().map(|r| json!({ "score": r, "figures": r.figures() })).collect::<Vec<_>>(), "totals": totals }));
        return Ok(ExitCode::SUCCESS);
    }
    print_tables(&runs, &by_version);
    Ok(ExitCode::SUCCESS)
}

fn line(f: &Figures) -> String {
    format!(
        "WER {:>5.1}%  dec P {:.2} R {:.2}  act R {:.2} own {:.2} P {:.2}  inv.items {}  Q {:.2}  inv.ans {}  quoted {}  inv.summary {}",
        f.wer * 100.0,
        f.decision_precision,
        f.decision_recall,
        f.action_recall,
        f.owner_accuracy,
        f.action_precision,
        f.invented_items,
        f.question_accuracy,
        f.invented_answers,
        f.extractive_answers,
        f.summary_invented
    )
}

/// Per-meeting rows (summed over voices and speeds) for each version, then the totals of
/// every version side by side with the difference to the first.
fn print_tables(runs: &[Score], totals: &[(String, Score)]) {
    for (version, _) in totals {
        println!("\nprompt version {version}: per meeting (all voices and speeds)");
        let mut names: Vec<&str> = runs.iter().map(|r| r.meeting.as_str()).collect();
        names.dedup();
        for name in names {
            let mut m = Score::default();
            for r in runs.iter().filter(|r| r.meeting == name && &r.prompt_version == version) {
                m.add(r);
            }
            let f = m.figures();
            let setting = runs.iter().find(|r| r.meeting == name).map_or("", |r| r.setting.as_str());
            println!("{name:<20} {setting:<18} {}", line(&f));
        }
    }
    println!("\ntotals ({} runs)", runs.len());
    let header: Vec<String> = totals.iter().map(|(v, _)| format!("{:>10}", if v.is_empty() { "default" } else { v })).collect();
    let diff = if totals.len() > 1 {
        totals[1..].iter().map(|(v, _)| format!("{:>10}", format!("{v}-{}", totals[0].0))).collect::<Vec<_>>().join(" ")
    } else {
        String::new()
    };
    println!("{:<22} {} {diff}", "figure", header.join(" "));
    let figures: Vec<serde_json::Value> = totals.iter().map(|(_, t)| serde_json::to_value(t.figures()).unwrap_or_default()).collect();
    let names = [
        "wer",
        "decision_precision",
        "decision_recall",
        "decision_recall_terms",
        "action_recall",
        "owner_accuracy",
        "action_precision",
        "invented_items",
        "question_accuracy",
        "invented_answers",
        "extractive_answers",
        "summary_invented",
    ];
    for name in names {
        let values: Vec<f64> = figures.iter().map(|f| f[name].as_f64().unwrap_or(0.0)).collect();
        let cells: Vec<String> = values.iter().map(|v| format!("{v:>10.3}")).collect();
        let diffs: Vec<String> = values.iter().skip(1).map(|v| format!("{:>+10.3}", v - values[0])).collect();
        println!("{name:<22} {} {}", cells.join(" "), diffs.join(" "));
    }
    for (version, t) in totals {
        for item in t.invented_items.iter().chain(&t.invented_answers) {
            println!("invented ({version}): {item}");
        }
        for claim in &t.summary_invented {
            println!("summary claim not in the transcript ({version}): {claim}");
        }
    }
}
