//! The speech service as a client sees it: a real `mmc-speech` process with the bundled
//! Whisper tiny.en (converted by `mmc models fetch` from CTranslate2 to ggml), called over
//! gRPC on loopback with real recorded speech (Debian's pocketsphinx-testdata, LibriVox
//! readings) and meeting scripts synthesized by espeak-ng in several voices.
//!
//! Word error rates are printed per clip and per voice (`--nocapture`) so the figures
//! stay visible as models and settings change.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mmc_proto::{
    common::v1::{AudioEncoding, AudioFormat},
    speech::v1::{
        speech_service_client::SpeechServiceClient, transcribe_request::Payload, transcribe_response::Event, GetModelInfoRequest, OutputFormat,
        Segment, Task, TranscribeConfig, TranscribeRequest, TranscriptionResult,
    },
};
use mmc_tests::{assert_documented_stages, metric_value, run_tool, start_service, startup_error_without_models, Service};
use tonic::{transport::Channel, Code, Status};

const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

/// The service with tiny.en alone (the English tests need no second model), unless the
/// test names `--multilingual-model`.
async fn start(extra: &[&str]) -> Service {
    let mut args = extra.to_vec();
    if !args.contains(&"--multilingual-model") {
        args.extend(["--multilingual-model", ""]);
    }
    start_service("mmc-speech", &args, Duration::from_secs(60)).await
}

fn client(s: &Service) -> SpeechServiceClient<Channel> {
    SpeechServiceClient::new(s.channel.clone())
}

/// Everything a transcription returned.
#[derive(Debug)]
struct Transcript {
    segments: Vec<Segment>,
    progress: Vec<(u64, u64)>,
    result: TranscriptionResult,
}

/// Sends `config`, then `audio` in `chunk`-byte messages, and reads the whole response stream.
async fn transcribe(c: &mut SpeechServiceClient<Channel>, config: TranscribeConfig, audio: Vec<u8>, chunk: usize) -> Result<Transcript, Status> {
    let mut messages = vec![TranscribeRequest { payload: Some(Payload::Config(config)) }];
    messages.extend(audio.chunks(chunk).map(|c| TranscribeRequest { payload: Some(Payload::AudioChunk(c.to_vec())) }));
    read(c.transcribe(tokio_stream::iter(messages)).await?.into_inner()).await
}

async fn read(mut stream: tonic::Streaming<mmc_proto::speech::v1::TranscribeResponse>) -> Result<Transcript, Status> {
    let (mut segments, mut progress) = (Vec::new(), Vec::new());
    while let Some(msg) = stream.message().await? {
        match msg.event.expect("event set") {
            Event::Segment(s) => segments.push(s),
            Event::Progress(p) => progress.push((p.done_units, p.total_units)),
            Event::Result(result) => return Ok(Transcript { segments, progress, result }),
        }
    }
    panic!("stream ended without a result");
}

fn english() -> TranscribeConfig {
    TranscribeConfig { language: "en".into(), ..Default::default() }
}

/// Words, lowercased, without punctuation; hyphenated words split ("cold-hearted" = "cold hearted").
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['-', '—'], " ")
        .split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').collect::<String>())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hypothesis` against `reference`: word-level edit distance over
/// reference length.
fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(rw != hw)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

/// Synthesizes `text` with espeak-ng (22.05 kHz mono WAV).
fn espeak(dir: &Path, name: &str, voice: &str, speed: u32, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wav"));
    run_tool(Command::new("espeak-ng").args(["-v", voice, "-s", &speed.to_string(), "-w"]).arg(&path).arg(text));
    path
}

/// Duration of a WAV in milliseconds (from sox).
fn duration_ms(path: &Path) -> i64 {
    let out = Command::new("soxi").arg("-D").arg(path).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap() * 1000.0) as i64
}

/// LibriVox clips with their human transcripts (from pocketsphinx-testdata).
fn librivox() -> Vec<(PathBuf, String)> {
    let listing =
        std::fs::read_to_string(format!("{LIBRIVOX}/transcription")).expect("pocketsphinx-testdata is missing: tests/run.sh installs it (apt)");
    listing
        .lines()
        .filter_map(|l| {
            let (text, id) = l.rsplit_once(" (")?;
            let text = text.replace("<s>", "").replace("</s>", "");
            Some((PathBuf::from(format!("{LIBRIVOX}/{}.wav", id.trim_end_matches(')'))), text.trim().to_string()))
        })
        .collect()
}

fn assert_timeline(segments: &[Segment], duration_ms: i64) {
    let mut last = 0;
    for s in segments {
        assert!(s.start_ms >= last - 10, "segments out of order: {segments:?}");
        assert!(s.start_ms <= s.end_ms && s.end_ms <= duration_ms + 10, "segment outside [0, {duration_ms}]: {s:?}");
        for w in &s.words {
            assert!(w.start_ms <= w.end_ms, "word {w:?}");
            assert!(w.start_ms >= s.start_ms - 10 && w.end_ms <= s.end_ms + 10, "word {w:?} outside its segment {s:?}");
        }
        last = s.start_ms;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_speech_matches_faster_whisper_on_the_original_weights() {
    let svc = start(&[]).await;
    let mut c = client(&svc);
    let info = c.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    let model = &info.models[0];
    assert_eq!((model.id.as_str(), model.family.as_str()), ("whisper-tiny.en-ct2", "whisper"));
    assert_eq!(model.revision, "513afc94e8db", "digest of the 8-bit ggml file the service loads by default");

    // faster-whisper 1.2.1 on the CTranslate2 files we converted (tests/scripts/faster_whisper_reference.py).
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/whisper-tiny.en.faster_whisper.json")).unwrap())
            .unwrap();
    let (mut ref_errors, mut fw_errors, mut ref_words) = (0.0, 0.0, 0.0);
    for (path, human) in librivox() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let audio = std::fs::read(&path).unwrap();
        let t = transcribe(&mut c, english(), audio, 16 * 1024).await.unwrap();
        let ours = t.result.text.clone();
        let theirs = fixture["clips"][&name]["text"].as_str().unwrap();
        let (vs_human, vs_fw) = (wer(&human, &ours), wer(theirs, &ours));
        println!("{name}: WER vs transcript {:.1}%, vs faster-whisper {:.1}%\n  ours: {ours}\n  fw:   {theirs}", vs_human * 100.0, vs_fw * 100.0);
        let n = words(&human).len() as f64;
        ref_errors += vs_human * n;
        fw_errors += vs_fw * words(theirs).len() as f64;
        ref_words += n;
        assert_eq!(t.result.language, "en");
        assert_eq!(t.result.segment_count as usize, t.segments.len());
        assert_timeline(&t.segments, t.result.audio_duration_ms);
        let wav_ms = duration_ms(&path);
        assert!((t.result.audio_duration_ms - wav_ms).abs() <= 20, "{} vs {wav_ms}", t.result.audio_duration_ms);
        assert_eq!(t.progress.last().map(|p| p.0 as i64), Some(t.result.audio_duration_ms), "progress reaches the end");
    }
    let (vs_human, vs_fw) = (ref_errors / ref_words, fw_errors / ref_words);
    println!("LibriVox overall: WER vs transcripts {:.1}%, vs faster-whisper {:.1}%", vs_human * 100.0, vs_fw * 100.0);
    assert!(vs_human <= 0.10, "WER against the human transcripts {:.1}%", vs_human * 100.0);
    // Same weights, same greedy decoding: whisper.cpp and CTranslate2 agree but for rounding.
    assert!(vs_fw <= 0.05, "transcripts differ from faster-whisper's: {:.1}% WER", vs_fw * 100.0);
}

/// Meeting speech, as the summarization flow will get it.
const SCRIPTS: [&str; 3] = [
    "Good morning everyone. Let's start the weekly planning meeting. The first item is the budget for the new website.",
    "We decided to move the product launch to the fifteenth of March. Anna will update the project plan by Friday.",
    "Finally, the team agreed to hire two more engineers. Thank you all, the meeting is closed.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_meeting_speech_in_several_voices() {
    let svc = start(&[]).await;
    let mut c = client(&svc);
    let dir = tempfile::tempdir().unwrap();
    let script = SCRIPTS.join(" ");
    for (voice, speed) in [("en-us", 160), ("en-gb", 150), ("en-us+f3", 150), ("en-gb-x-rp", 140)] {
        let path = espeak(dir.path(), &format!("{voice}-{speed}"), voice, speed, &script);
        let config = TranscribeConfig { word_timestamps: true, ..english() };
        let t = transcribe(&mut c, config, std::fs::read(&path).unwrap(), 64 * 1024).await.unwrap();
        let error = wer(&script, &t.result.text);
        println!("espeak-ng {voice} at {speed} wpm: WER {:.1}%\n  {}", error * 100.0, t.result.text);
        assert!(error <= 0.15, "{voice}: WER {:.1}% > 15%", error * 100.0);
        assert_timeline(&t.segments, t.result.audio_duration_ms);
        let n_words: usize = t.segments.iter().map(|s| s.words.len()).sum();
        assert!(n_words >= words(&t.result.text).len() / 2, "word timings were asked for: {:?}", t.segments);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scripts_in_a_row_keep_order_boundaries_and_parse_as_subtitles() {
    let svc = start(&[]).await;
    let mut c = client(&svc);
    let dir = tempfile::tempdir().unwrap();
    // Three scripts with 2 s of silence between them, as one FLAC file (sox).
    let parts: Vec<PathBuf> = SCRIPTS.iter().enumerate().map(|(i, s)| espeak(dir.path(), &format!("s{i}"), "en-us", 160, s)).collect();
    let gap = dir.path().join("gap.wav");
    run_tool(Command::new("sox").args(["-n", "-r", "22050", "-c", "1", "-b", "16"]).arg(&gap).args(["trim", "0", "2"]));
    let joined = dir.path().join("meeting.flac");
    run_tool(Command::new("sox").args([&parts[0], &gap, &parts[1], &gap, &parts[2]]).arg(&joined));
    let starts = [0, duration_ms(&parts[0]) + 2000, duration_ms(&parts[0]) + duration_ms(&parts[1]) + 4000];

    let config = TranscribeConfig {
        formats: vec![OutputFormat::Srt as i32, OutputFormat::Vtt as i32, OutputFormat::VerboseJson as i32, OutputFormat::Text as i32],
        ..english()
    };
    let t = transcribe(&mut c, config, std::fs::read(&joined).unwrap(), 8 * 1024).await.unwrap();
    assert_timeline(&t.segments, t.result.audio_duration_ms);
    // Each script's first words open a segment that starts within 1 s of where the script starts.
    let keys = ["morning", "decided", "finally"];
    let mut last_index = 0;
    for (key, start) in keys.iter().zip(starts) {
        let (i, seg) = t
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| words(&s.text).iter().any(|w| w == key))
            .unwrap_or_else(|| panic!("no segment with {key:?}: {:?}", t.segments));
        assert!(i >= last_index, "{key:?} out of order");
        last_index = i;
        assert!((seg.start_ms - start).abs() <= 1000, "{key:?} segment starts at {} ms, the script at {start} ms", seg.start_ms);
    }

    let rendered = |f: OutputFormat| t.result.rendered.iter().find(|r| r.format == f as i32).unwrap().content.clone();
    let srt = srtlib::Subtitles::parse_from_str(rendered(OutputFormat::Srt)).expect("valid SRT").to_vec();
    assert_eq!(srt.len(), t.segments.len());
    let vtt_text = rendered(OutputFormat::Vtt);
    let vtt = webvtt_parser::Vtt::parse(&vtt_text).expect("valid WebVTT");
    assert_eq!(vtt.cues.len(), t.segments.len());
    for ((s, cue), seg) in srt.iter().zip(&vtt.cues).zip(&t.segments) {
        let (h, m, sec, ms) = s.start_time.get();
        let srt_ms = ((h as i64 * 60 + m as i64) * 60 + sec as i64) * 1000 + ms as i64;
        assert_eq!(srt_ms, seg.start_ms);
        assert_eq!(cue.start.as_milliseconds() as i64, seg.start_ms);
        assert_eq!(s.text.trim(), seg.text.trim());
    }
    let json: serde_json::Value = serde_json::from_str(&rendered(OutputFormat::VerboseJson)).unwrap();
    assert_eq!(json["segments"].as_array().unwrap().len(), t.segments.len());
    assert_eq!(json["language"], "en");
    assert_eq!(rendered(OutputFormat::Text).lines().count(), t.segments.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_containers_raw_pcm_and_silence() {
    let svc = start(&[]).await;
    let mut c = client(&svc);
    let dir = tempfile::tempdir().unwrap();
    let (clip, human) = librivox().into_iter().next().unwrap();
    let reference = transcribe(&mut c, english(), std::fs::read(&clip).unwrap(), 1 << 20).await.unwrap().result.text;
    assert!(wer(&human, &reference) <= 0.1, "{reference}");

    // The same clip as 44.1 kHz stereo MP3, OGG/Vorbis and Opus, and as headerless PCM.
    for ext in ["mp3", "ogg"] {
        let path = dir.path().join(format!("clip.{ext}"));
        run_tool(Command::new("sox").arg(&clip).args(["-r", "44100", "-c", "2"]).arg(&path));
        let t = transcribe(&mut c, english(), std::fs::read(&path).unwrap(), 32 * 1024).await.unwrap();
        println!("{ext}: {}", t.result.text);
        assert!(wer(&reference, &t.result.text) <= 0.15, "{ext}: {} vs {reference}", t.result.text);
    }
    // Opus in Ogg, as opusenc (the reference encoder) writes it: decoded by libopus, its
    // pre-skip dropped, so the duration matches the source's.
    let stereo = dir.path().join("clip44.wav");
    run_tool(Command::new("sox").arg(&clip).args(["-r", "44100", "-c", "2"]).arg(&stereo));
    let opus = dir.path().join("clip.opus");
    run_tool(Command::new("opusenc").args(["--quiet", "--bitrate", "32"]).arg(&stereo).arg(&opus));
    let t = transcribe(&mut c, english(), std::fs::read(&opus).unwrap(), 32 * 1024).await.unwrap();
    println!("opus: {} ({} ms, source {} ms)", t.result.text, t.result.audio_duration_ms, duration_ms(&clip));
    assert!(wer(&reference, &t.result.text) <= 0.15, "opus: {} vs {reference}", t.result.text);
    assert!((t.result.audio_duration_ms - duration_ms(&clip)).abs() <= 30, "opus duration {} vs {}", t.result.audio_duration_ms, duration_ms(&clip));

    let raw = dir.path().join("clip.raw");
    run_tool(Command::new("sox").arg(&clip).args(["-t", "raw", "-e", "signed", "-b", "16", "-r", "8000", "-c", "1"]).arg(&raw));
    let config =
        TranscribeConfig { format: Some(AudioFormat { encoding: AudioEncoding::PcmS16le as i32, sample_rate_hz: 8000, channels: 1 }), ..english() };
    let t = transcribe(&mut c, config, std::fs::read(&raw).unwrap(), 32 * 1024).await.unwrap();
    assert!(wer(&reference, &t.result.text) <= 0.2, "raw 8 kHz: {} vs {reference}", t.result.text);

    // Silence (digital, then faint noise) yields no text: Whisper never sees it.
    let silence = dir.path().join("silence.wav");
    run_tool(Command::new("sox").args(["-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&silence).args(["trim", "0", "40"]));
    let hiss = dir.path().join("hiss.wav");
    run_tool(Command::new("sox").args(["-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&hiss).args(["synth", "20", "whitenoise", "vol", "0.002"]));
    for path in [silence, hiss] {
        let t = transcribe(&mut c, english(), std::fs::read(&path).unwrap(), 64 * 1024).await.unwrap();
        assert!(t.segments.is_empty() && t.result.text.is_empty(), "{}: {:?}", path.display(), t.segments);
        assert!(t.result.audio_duration_ms >= 19_900);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_status_and_the_service_stays_up() {
    let svc = start(&[]).await;
    let mut c = client(&svc);
    let (clip, _) = librivox().into_iter().next().unwrap();
    let wav = std::fs::read(&clip).unwrap();
    let png = std::fs::read(mmc_tests::models_dir().join("test-photos/cat.png")).unwrap();
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();

    let cases: Vec<(&str, TranscribeConfig, Vec<u8>, Code, &str)> = vec![
        ("empty upload", english(), vec![], Code::InvalidArgument, "no audio"),
        ("garbage", english(), garbage, Code::InvalidArgument, "not a recognised audio file"),
        ("a PNG", english(), png, Code::InvalidArgument, "not a recognised audio file"),
        ("truncated WAV", english(), wav[..wav.len() / 3].to_vec(), Code::InvalidArgument, "truncated"),
        ("header only", english(), wav[..30].to_vec(), Code::InvalidArgument, "audio"),
        ("unknown language", TranscribeConfig { language: "xx".into(), ..english() }, wav.clone(), Code::InvalidArgument, "unknown language"),
        ("German on tiny.en", TranscribeConfig { language: "de".into(), ..english() }, wav.clone(), Code::InvalidArgument, "English-only"),
        (
            "translate on tiny.en",
            TranscribeConfig { task: Task::Translate as i32, ..english() },
            wav.clone(),
            Code::InvalidArgument,
            "cannot translate",
        ),
        (
            "raw without rate",
            TranscribeConfig { format: Some(AudioFormat { encoding: AudioEncoding::PcmS16le as i32, ..Default::default() }), ..english() },
            wav.clone(),
            Code::InvalidArgument,
            "sample_rate_hz",
        ),
        ("another model", TranscribeConfig { model_id: "whisper-large-v3".into(), ..english() }, wav.clone(), Code::NotFound, "not loaded"),
    ];
    for (name, config, audio, code, needle) in cases {
        let err = transcribe(&mut c, config, audio, 8192).await.expect_err(name);
        println!("{name}: {:?} {}", err.code(), err.message());
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(err.message().contains(needle), "{name}: {:?} lacks {needle:?}", err.message());
    }

    // Protocol misuse: audio before the config, two configs.
    let chunk = |b: &[u8]| TranscribeRequest { payload: Some(Payload::AudioChunk(b.to_vec())) };
    let config = || TranscribeRequest { payload: Some(Payload::Config(english())) };
    for (name, messages) in [("audio first", vec![chunk(&wav), config()]), ("two configs", vec![config(), chunk(&wav), config()])] {
        let err = match c.transcribe(tokio_stream::iter(messages)).await {
            Err(e) => e,
            Ok(r) => read(r.into_inner()).await.expect_err(name),
        };
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {}", err.message());
    }
    // An upload over the limit is refused while it streams.
    let small = start(&["--max-upload-bytes", "100000"]).await;
    let err = transcribe(&mut client(&small), english(), vec![0; 300_000], 65_536).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit of 100000 bytes"), "{}", err.message());
    // A recording over the duration limit (40 s against 30 s) is refused with the limit named.
    let short = start(&["--max-audio-s", "30"]).await;
    let dir = tempfile::tempdir().unwrap();
    let long_path = dir.path().join("long.wav");
    let list: Vec<PathBuf> = (0..8).map(|_| clip.clone()).collect();
    run_tool(Command::new("sox").args(&list).arg(&long_path));
    let err = transcribe(&mut client(&short), english(), std::fs::read(&long_path).unwrap(), 65_536).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("longer than the limit of 30 s"), "{}", err.message());

    // Still serving, and still right.
    let t = transcribe(&mut c, english(), wav, 65_536).await.unwrap();
    assert!(t.result.text.contains("Dashwood"), "{}", t.result.text);
    let scrape = mmc_tests::http_get(&svc.metrics, "/metrics").unwrap().1;
    assert!(metric_value(&scrape, "mmc_speech_segments_total", &[]).unwrap_or(0.0) >= 1.0, "{scrape}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_both_finish_and_a_dropped_stream_is_cancelled() {
    // Lending off: with it, whichever request arrives first under load may borrow the other
    // state for a chunk and the second then waits (lending is tested by
    // `a_lone_long_recording_borrows_the_idle_state_and_gives_it_back_when_asked`).
    let svc = start(&["--concurrency", "2", "--lend-idle-states", "false"]).await;
    let dir = tempfile::tempdir().unwrap();
    let clips = librivox();
    let (a, b) = (std::fs::read(&clips[0].0).unwrap(), std::fs::read(&clips[3].0).unwrap());
    let (mut c1, mut c2) = (client(&svc), client(&svc));
    let (r1, r2) = tokio::join!(transcribe(&mut c1, english(), a, 4096), transcribe(&mut c2, english(), b, 4096));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(wer(&clips[0].1, &r1.result.text) <= 0.1, "{}", r1.result.text);
    assert!(wer(&clips[3].1, &r2.result.text) <= 0.15, "{}", r2.result.text);
    // They ran side by side, each on its own decoder state: neither waited in the queue for
    // the other's transcription (with --concurrency 1 this fails: queue = the other's
    // transcribe time). The speed-up itself is measured by tests/bench/speech.sh.
    let stage = |r: &Transcript, name: &str| r.result.timings.iter().find(|t| t.stage == name).unwrap().duration_ms;
    assert_documented_stages("mmc/speech/v1/speech.proto", "TranscriptionResult", r1.result.timings.iter().map(|t| t.stage.as_str()));
    for (a, b) in [(&r1, &r2), (&r2, &r1)] {
        assert!(
            stage(a, "queue") < stage(b, "transcribe") / 2.0,
            "one request queued behind the other: queue {} ms, other's transcribe {} ms",
            stage(a, "queue"),
            stage(b, "transcribe")
        );
    }

    // A long recording whose client goes away after the first progress message.
    let list: Vec<PathBuf> = (0..20).map(|i| clips[i % clips.len()].0.clone()).collect();
    let long_path = dir.path().join("long.wav");
    run_tool(Command::new("sox").args(&list).arg(&long_path));
    let audio = std::fs::read(&long_path).unwrap();
    let mut messages = vec![TranscribeRequest { payload: Some(Payload::Config(english())) }];
    messages.extend(audio.chunks(65_536).map(|c| TranscribeRequest { payload: Some(Payload::AudioChunk(c.to_vec())) }));
    let mut stream = c1.transcribe(tokio_stream::iter(messages)).await.unwrap().into_inner();
    loop {
        match stream.message().await.unwrap().unwrap().event.unwrap() {
            Event::Progress(_) => break,
            Event::Result(_) => panic!("finished before it could be cancelled"),
            Event::Segment(_) => {}
        }
    }
    drop(stream);
    let cancelled = mmc_tests::eventually(Duration::from_secs(30), || async {
        let scrape = mmc_tests::http_get(&svc.metrics, "/metrics").ok()?.1;
        (metric_value(&scrape, "mmc_speech_cancelled_total", &[])? >= 1.0 && metric_value(&scrape, "mmc_speech_active_requests", &[])? == 0.0)
            .then_some(())
    })
    .await;
    assert!(cancelled.is_some(), "the dropped request was not cancelled");
    // And the freed state serves the next request.
    let t = transcribe(&mut c2, english(), std::fs::read(&clips[4].0).unwrap(), 65_536).await.unwrap();
    assert!(wer(&clips[4].1, &t.result.text) <= 0.1, "{}", t.result.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_short_clip_borrows_the_idle_states_threads_and_gives_them_back() {
    // A clip of one chunk cannot be spread over two states: the idle one lends its thread
    // (the one worker decodes with both; 1.6-2x faster on a 13 s clip, docs/speech.md).
    let svc = start(&["--concurrency", "2", "--threads", "1"]).await;
    let clips = librivox();
    let borrowed = || {
        let scrape = mmc_tests::http_get(&svc.metrics, "/metrics").unwrap().1;
        metric_value(&scrape, "mmc_speech_borrowed_states_total", &[]).unwrap_or(0.0)
    };
    let before = borrowed();
    let t = transcribe(&mut client(&svc), english(), std::fs::read(&clips[0].0).unwrap(), 65_536).await.unwrap();
    assert!(wer(&clips[0].1, &t.result.text) <= 0.1, "{}", t.result.text);
    assert_eq!(borrowed(), before + 1.0, "the idle state did not lend its thread to a lone one-chunk clip");

    // The loan ends with the job: both states serve the next two clips at once, whichever
    // arrives first, and both come back whole; the pool then lends again.
    let (mut c1, mut c2) = (client(&svc), client(&svc));
    let (a, b) = tokio::join!(
        transcribe(&mut c1, english(), std::fs::read(&clips[3].0).unwrap(), 65_536),
        transcribe(&mut c2, english(), std::fs::read(&clips[4].0).unwrap(), 65_536),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(wer(&clips[3].1, &a.result.text) <= 0.15, "{}", a.result.text);
    assert!(wer(&clips[4].1, &b.result.text) <= 0.1, "{}", b.result.text);
    let lent = borrowed();
    let t = transcribe(&mut client(&svc), english(), std::fs::read(&clips[0].0).unwrap(), 65_536).await.unwrap();
    assert!(wer(&clips[0].1, &t.result.text) <= 0.1, "{}", t.result.text);
    assert_eq!(borrowed(), lent + 1.0, "the pool did not lend again after two requests at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_long_recording_borrows_the_idle_state_and_gives_it_back_when_asked() {
    let svc = start(&["--concurrency", "2", "--threads", "1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let clips = librivox();
    // About 190 s of reading: seven or eight chunks of up to 30 s.
    let picks: Vec<&(PathBuf, String)> = (0..40).map(|i| &clips[i % clips.len()]).collect();
    let long_path = dir.path().join("long.wav");
    run_tool(Command::new("sox").args(picks.iter().map(|c| &c.0)).arg(&long_path));
    let reference = picks.iter().map(|c| c.1.as_str()).collect::<Vec<_>>().join(" ");
    let audio = std::fs::read(&long_path).unwrap();
    let borrowed = || {
        let scrape = mmc_tests::http_get(&svc.metrics, "/metrics").unwrap().1;
        metric_value(&scrape, "mmc_speech_borrowed_states_total", &[]).unwrap_or(0.0)
    };

    // Alone, it takes the idle state too: chunks are transcribed two at a time, and the
    // client still gets them whole and in recording order.
    let mut c1 = client(&svc);
    let t = transcribe(&mut c1, english(), audio.clone(), 65_536).await.unwrap();
    let error = wer(&reference, &t.result.text);
    println!("{} chunks, WER {error:.3}, states borrowed: {}", t.progress.len(), borrowed());
    assert!(borrowed() >= 1.0, "the idle state was not borrowed");
    assert!(error <= 0.12, "WER {error:.3}: {}", t.result.text);
    assert_timeline(&t.segments, duration_ms(&long_path));
    assert!(t.progress.windows(2).all(|p| p[0].0 < p[1].0), "progress out of order: {:?}", t.progress);

    // Again, and a short request arrives while it runs: the borrowed state comes back at
    // the end of the chunk it is on, not at the end of the recording.
    let stage = |r: &TranscriptionResult, name: &str| r.timings.iter().find(|t| t.stage == name).unwrap().duration_ms;
    let mut messages = vec![TranscribeRequest { payload: Some(Payload::Config(english())) }];
    messages.extend(audio.chunks(65_536).map(|c| TranscribeRequest { payload: Some(Payload::AudioChunk(c.to_vec())) }));
    let mut stream = c1.transcribe(tokio_stream::iter(messages)).await.unwrap().into_inner();
    let mut chunks_done = 0;
    while chunks_done == 0 {
        match stream.message().await.unwrap().unwrap().event.unwrap() {
            Event::Progress(_) => chunks_done += 1,
            Event::Result(_) => panic!("the long recording finished before the short request was sent"),
            Event::Segment(_) => {}
        }
    }
    let long = tokio::spawn(async move {
        let rest = read(stream).await.unwrap();
        (rest, std::time::Instant::now())
    });
    let short = transcribe(&mut client(&svc), english(), std::fs::read(&clips[4].0).unwrap(), 65_536).await.unwrap();
    let short_done = std::time::Instant::now();
    let (long, long_done) = long.await.unwrap();
    assert!(wer(&clips[4].1, &short.result.text) <= 0.1, "{}", short.result.text);
    let chunks = (chunks_done + long.progress.len()) as f64;
    let per_chunk_ms = stage(&long.result, "transcribe") / chunks;
    println!("short request queued {:.0} ms; the long one: {chunks} chunks, {per_chunk_ms:.0} ms each on average", stage(&short.result, "queue"));
    assert!(short_done < long_done, "the short request waited for the whole long recording");
    // It waits for the rest of one chunk at most (the chunk may be a long one, and slowed by
    // other tests); keeping the state to the end of the recording would be three or more.
    assert!(
        stage(&short.result, "queue") < 2.0 * per_chunk_ms,
        "the short request waited {:.0} ms for the borrowed state: more than one chunk ({per_chunk_ms:.0} ms)",
        stage(&short.result, "queue")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilingual_model_detects_the_language_and_translates() {
    let svc = start(&["--model", "whisper-base-ct2"]).await;
    let mut c = client(&svc);
    let dir = tempfile::tempdir().unwrap();
    let german = "Guten Morgen. Wir haben beschlossen, das neue Produkt im März zu starten. Die Besprechung ist beendet.";
    let path = espeak(dir.path(), "de", "de", 150, german);
    let audio = std::fs::read(&path).unwrap();

    let t = transcribe(&mut c, TranscribeConfig::default(), audio.clone(), 65_536).await.unwrap();
    println!("detected {} (p = {:.3}): {}", t.result.language, t.result.language_probability, t.result.text);
    assert_eq!(t.result.language, "de");
    assert!(t.result.language_probability > 0.5, "{}", t.result.language_probability);
    assert!(words(&t.result.text).iter().any(|w| w == "morgen"), "{}", t.result.text);

    // Three readings 15 s apart: chunks go to both decoder states at once; the language is
    // detected once, on the first chunk, and the other state's chunks wait for it.
    let gap = dir.path().join("gap.wav");
    run_tool(Command::new("sox").args(["-n", "-r", "22050", "-c", "1", "-b", "16"]).arg(&gap).args(["trim", "0", "15"]));
    let parts = [
        ("Guten Morgen. Wir beginnen jetzt mit der Sitzung.", "morgen"),
        ("Das neue Produkt startet im März.", "produkt"),
        ("Vielen Dank und auf Wiedersehen.", "wiedersehen"),
    ];
    let mut files = Vec::new();
    for (i, (text, _)) in parts.iter().enumerate() {
        files.extend([espeak(dir.path(), &format!("part{i}"), "de", 150, text), gap.clone()]);
    }
    let long = dir.path().join("long.wav");
    run_tool(Command::new("sox").args(&files[..files.len() - 1]).arg(&long));
    let t = transcribe(&mut c, TranscribeConfig::default(), std::fs::read(&long).unwrap(), 65_536).await.unwrap();
    println!("{} chunks, detected {}: {}", t.progress.len(), t.result.language, t.result.text);
    assert!(t.progress.len() >= 2, "{:?}", t.progress);
    assert_eq!(t.result.language, "de");
    let heard = words(&t.result.text);
    let at: Vec<Option<usize>> = parts.iter().map(|(_, key)| heard.iter().position(|w| w == key)).collect();
    assert!(at.iter().all(Option::is_some) && at.is_sorted(), "readings missing or out of order ({at:?}): {}", t.result.text);
    let scrape = mmc_tests::http_get(&svc.metrics, "/metrics").unwrap().1;
    assert!(metric_value(&scrape, "mmc_speech_borrowed_states_total", &[]).unwrap_or(0.0) >= 1.0, "chunks did not run side by side");

    let translated = TranscribeConfig { task: Task::Translate as i32, language: "de".into(), ..Default::default() };
    let t = transcribe(&mut c, translated, audio, 65_536).await.unwrap();
    println!("translated: {}", t.result.text);
    assert_eq!((t.result.language.as_str(), t.result.language_probability), ("de", 1.0));
    let english = words(&t.result.text);
    assert!(english.iter().any(|w| w == "morning" || w == "meeting" || w == "product"), "{}", t.result.text);
}

/// The default service holds tiny.en and base and sends each request to one by its
/// language: English stays on the fast English-only model, German and Spanish go to the
/// multilingual one, detected when the request names no language.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_route_each_request_by_its_language() {
    let svc = start(&["--multilingual-model", "whisper-base-ct2"]).await;
    let mut c = client(&svc);
    let info = c.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    let ids: Vec<&str> = info.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["whisper-tiny.en-ct2", "whisper-base-ct2"]);

    let dir = tempfile::tempdir().unwrap();
    let german = espeak(dir.path(), "de", "de", 150, "Guten Morgen. Wir haben beschlossen, das neue Produkt im März zu starten.");
    let spanish = espeak(dir.path(), "es", "es", 150, "Buenos días. Hemos decidido lanzar el nuevo producto en marzo.");
    let english_wav = espeak(dir.path(), "en", "en-us", 160, SCRIPTS[1]);
    let detect = TranscribeConfig::default;
    // (what, config, audio, expected model, expected language, a word the transcript must hold)
    let cases = [
        ("German, detected", detect(), &german, "whisper-base-ct2", "de", "morgen"),
        ("Spanish, detected", detect(), &spanish, "whisper-base-ct2", "es", "producto"),
        ("English, detected", detect(), &english_wav, "whisper-tiny.en-ct2", "en", "launch"),
        ("English, named", english(), &english_wav, "whisper-tiny.en-ct2", "en", "launch"),
        ("Spanish, named", TranscribeConfig { language: "es".into(), ..detect() }, &spanish, "whisper-base-ct2", "es", "producto"),
        (
            "English on base by id",
            TranscribeConfig { model_id: "whisper-base-ct2".into(), ..english() },
            &english_wav,
            "whisper-base-ct2",
            "en",
            "launch",
        ),
        (
            "German translated",
            TranscribeConfig { task: Task::Translate as i32, language: "de".into(), ..detect() },
            &german,
            "whisper-base-ct2",
            "de",
            "product",
        ),
    ];
    let stage = |r: &TranscriptionResult, name: &str| r.timings.iter().find(|t| t.stage == name).unwrap().duration_ms;
    for (what, config, path, model, language, word) in cases {
        let t = transcribe(&mut c, config, std::fs::read(path).unwrap(), 65_536).await.unwrap();
        let r = &t.result;
        let detect_ms = stage(r, "detect_language");
        println!(
            "{what}: {} {} (p = {:.3}, detection {detect_ms:.0} ms): {}",
            r.model.as_ref().unwrap().id,
            r.language,
            r.language_probability,
            r.text
        );
        assert_eq!(r.model.as_ref().unwrap().id, model, "{what}");
        assert_eq!(r.language, language, "{what}: {}", r.text);
        assert!(words(&r.text).iter().any(|w| w == word), "{what}: {:?} lacks {word:?}", r.text);
        if what.ends_with("detected") {
            // The detector reads 10 s of speech: sure enough to pick the language, less sure
            // than a full window (German 0.57 here, Spanish 0.92, English 0.96).
            assert!(detect_ms > 0.0 && r.language_probability > 0.3 && r.language_probability < 1.0, "{what}: detection not reported");
        } else {
            assert_eq!((detect_ms, r.language_probability), (0.0, 1.0), "{what}: the named language needs no detection");
        }
    }
    let scrape = mmc_tests::http_get(&svc.metrics, "/metrics").unwrap().1;
    let routed = |model: &str, language: &str| {
        let (model, language) = (format!("model=\"{model}\""), format!("language=\"{language}\""));
        metric_value(&scrape, "mmc_speech_routed_total", &[&model, &language]).unwrap_or(0.0)
    };
    assert_eq!(routed("whisper-tiny.en-ct2", "en"), 2.0);
    assert_eq!(routed("whisper-base-ct2", "es"), 2.0);

    // What no loaded model has is still refused before the upload.
    let wav = std::fs::read(&german).unwrap();
    let err = transcribe(&mut c, TranscribeConfig { model_id: "whisper-large-v3".into(), ..detect() }, wav.clone(), 8192).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("whisper-base-ct2"), "{}", err.message());
    let err = transcribe(&mut c, TranscribeConfig { language: "xx".into(), ..detect() }, wav, 8192).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_long_recording_is_transcribed_in_bounded_memory() {
    let svc = start(&["--concurrency", "1"]).await;
    let mut c = client(&svc);
    let dir = tempfile::tempdir().unwrap();
    let clips = librivox();
    // Warm-up: the decoder state's buffers are allocated and touched.
    transcribe(&mut c, english(), std::fs::read(&clips[0].0).unwrap(), 65_536).await.unwrap();
    let before = peak_rss(svc.process.pid());

    // One hour (FLAC): silence with three readings, at 10:00, 35:00 and 59:00.
    let at_s = [600.0, 2100.0, 3540.0];
    let picks = [&clips[0], &clips[3], &clips[4]];
    let mut parts: Vec<PathBuf> = Vec::new();
    let mut t = 0.0;
    for (i, (start, clip)) in at_s.iter().zip(picks).enumerate() {
        let gap = dir.path().join(format!("gap{i}.wav"));
        run_tool(Command::new("sox").args(["-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&gap).args(["trim", "0", &format!("{:.3}", start - t)]));
        parts.extend([gap, clip.0.clone()]);
        t = start + duration_ms(&clip.0) as f64 / 1000.0;
    }
    let tail = dir.path().join("tail.wav");
    run_tool(Command::new("sox").args(["-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&tail).args(["trim", "0", &format!("{:.3}", 3600.0 - t)]));
    parts.push(tail);
    let hour = dir.path().join("hour.flac");
    run_tool(Command::new("sox").args(&parts).arg(&hour));

    let config = TranscribeConfig { formats: vec![OutputFormat::Srt as i32], ..english() };
    let t = transcribe(&mut c, config, std::fs::read(&hour).unwrap(), 65_536).await.unwrap();
    let growth = peak_rss(svc.process.pid()).saturating_sub(before);
    println!("1 h recording: {} segments, peak memory grew by {:.1} MB", t.segments.len(), growth as f64 / 1e6);
    assert!((t.result.audio_duration_ms - 3_600_000).abs() < 100, "{}", t.result.audio_duration_ms);
    // Decoded block by block, one 30 s chunk at a time: no hour of samples (230 MB as f32) held.
    assert!(growth < 40_000_000, "peak memory grew by {growth} bytes during the hour-long request");
    assert_timeline(&t.segments, t.result.audio_duration_ms);
    for ((start, clip), key) in at_s.iter().zip(picks).zip(["dashwood", "married", "himself"]) {
        let seg = t.segments.iter().find(|s| words(&s.text).iter().any(|w| w == key)).unwrap_or_else(|| panic!("{key:?} missing: {:?}", t.segments));
        assert!((seg.start_ms as f64 / 1000.0 - start).abs() <= 1.0, "{key:?} at {} ms, spoken at {start} s", seg.start_ms);
        assert!(
            wer(
                &clip.1,
                &t.segments
                    .iter()
                    .filter(|s| (s.start_ms as f64 / 1000.0 - start).abs() < 10.0)
                    .map(|s| s.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ) <= 0.3
        );
    }
    let srt = srtlib::Subtitles::parse_from_str(t.result.rendered[0].content.clone()).unwrap().to_vec();
    assert_eq!(srt.last().unwrap().start_time.get().1, 59, "last cue at 00:59:xx");
    // Progress covered the whole hour.
    let last = t.progress.last().unwrap();
    assert_eq!((last.0, last.1), (3_600_000, 3_600_000));
}

#[test]
fn refuses_to_start_without_its_model() {
    let stderr = startup_error_without_models("mmc-speech");
    assert!(stderr.contains("mmc models fetch"), "{stderr}");
}

/// Uploads are spooled in the service's own directory (`<spool-dir>/mmc-speech-<uid>-<port>`,
/// private), gone once transcribed; uploads a killed run left there are removed when the
/// service starts again, and nothing else in it is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_spool_in_the_services_own_directory_and_a_crashed_runs_are_removed() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let port = mmc_tests::free_port_range(2);
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(base.path()).unwrap());
    let own = base.path().join(format!("mmc-speech-{uid}-{port}"));
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("upload-a1b2c3"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(own.join("notes.txt"), "not ours to delete").unwrap();
    let args = ["--spool-dir", base.path().to_str().unwrap(), "--multilingual-model", ""];
    let svc = mmc_tests::start_service_on("mmc-speech", port, &args, Duration::from_secs(60)).await;
    assert!(!own.join("upload-a1b2c3").exists(), "the crashed run's upload is still there");
    assert!(own.join("notes.txt").exists());
    assert_eq!(std::fs::metadata(&own).unwrap().permissions().mode() & 0o777, 0o700);
    let (clip, _) = librivox().into_iter().next().unwrap();
    transcribe(&mut client(&svc), english(), std::fs::read(&clip).unwrap(), 65_536).await.unwrap();
    let left: Vec<_> =
        std::fs::read_dir(&own).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with("upload-")).collect();
    assert!(left.is_empty(), "uploads left after transcribing: {left:?}");
}
