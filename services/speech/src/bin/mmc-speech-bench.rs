//! `mmc-speech-bench`: real-time factor of our whole transcription pipeline (decode,
//! resample, chunk, whisper.cpp, guards) on one recording with one stream (on one state
//! with every thread, and on the service's default shape: one thread per state, idle
//! states lent to the request), and aggregate throughput with 2 and 4 concurrent streams
//! through the core's state pool. With `--reference FILE` (JSON figures of faster-whisper and whisper.cpp on the same audio
//! and thread count, from `tests/bench/speech.sh`) it prints the ratios.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context;
use clap::Parser;
use mmc_speech::{
    core::{CoreConfig, Event, Job, SpeechCore},
    engine::{
        audio::AudioInput,
        chunker::ChunkerConfig,
        whisper::{DecodeOptions, EncoderWindow},
    },
};

#[derive(Parser, Debug)]
#[command(name = "mmc-speech-bench", about = "Speech-to-text speed, optionally against faster-whisper and whisper.cpp")]
struct Args {
    /// The whisper.cpp ggml model.
    #[arg(long)]
    ggml: PathBuf,
    /// The recording (any supported format).
    #[arg(long, required_unless_present = "transcribe")]
    audio: Option<PathBuf>,
    /// Instead of timing one recording: transcribes each of these on the service's default
    /// shape and writes `{"texts": {FILE: TEXT}, "seconds": S}` to `--json` (for word error
    /// rates: `tests/bench/speech_wer.sh`).
    #[arg(long, num_args = 1..)]
    transcribe: Vec<PathBuf>,
    /// How much audio the encoder reads per chunk: fit or full (as `mmc-speech`).
    #[arg(long, default_value = "fit")]
    encoder_window: EncoderWindow,
    /// Threads in all (split between concurrent streams).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Runs per measurement (the best is kept).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Reference figures (JSON: {"audio_s", "whisper_cpp": {"rtf", "streams": {...}}, "faster_whisper": {...}}).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Also writes the figures as JSON here (`tests/bench/speech.sh` takes medians of them):
    /// `{"one_stream_rtf": {SHAPE: RTF}, "throughput": {STREAMS: audio s per s}}`.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Transcribes `streams` copies of the recording at once; returns (wall seconds, audio seconds each, text).
async fn run(core: &Arc<SpeechCore>, audio: &std::path::Path, streams: usize) -> anyhow::Result<(f64, f64, String)> {
    let t = Instant::now();
    let mut receivers = Vec::new();
    for _ in 0..streams {
        let copy = tempfile::NamedTempFile::new()?.into_temp_path();
        std::fs::copy(audio, &copy)?;
        let options = DecodeOptions { language: Some("en".into()), ..Default::default() };
        receivers.push(core.transcribe(Job { audio: copy, input: AudioInput::Container, options, detected: None })?);
    }
    let (mut audio_s, mut text) = (0.0, String::new());
    for mut rx in receivers {
        let mut segments = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Segment(s) => segments.push(s.text),
                Event::Progress { .. } => {}
                Event::Done(s) => audio_s = s.audio_duration_ms as f64 / 1000.0,
                Event::Failed(e) => anyhow::bail!("transcription failed: {e}"),
            }
        }
        text = segments.join(" ");
    }
    Ok((t.elapsed().as_secs_f64(), audio_s, text))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // The heap as the service runs it.
    mmc_runtime::memory::retain_freed_memory();
    let args = Args::parse();
    let reference: Option<serde_json::Value> = match &args.reference {
        Some(p) => Some(serde_json::from_str(&std::fs::read_to_string(p)?).context("reading the reference figures")?),
        None => None,
    };
    let threads = args.threads.max(1);
    if !args.transcribe.is_empty() {
        return transcribe_each(&args, threads).await;
    }
    let audio = args.audio.clone().context("--audio is required")?;
    println!("audio: {}  threads: {}  encoder window: {:?}", audio.display(), args.threads, args.encoder_window);
    // (streams, decoder states, threads per state):
    // - one stream on one state with every thread: the engine's own shape, as whisper.cpp
    //   and faster-whisper run one file;
    // - one stream on the service's default shape (one thread per state, `--concurrency`
    //   = cores): the request borrows the idle states and transcribes chunks side by side;
    // - 2 and 4 concurrent streams, one state each.
    let setups = [(1usize, 1usize, threads), (1, threads, 1), (2, 2, (threads / 2).max(1)), (4, 4, (threads / 4).max(1))];
    let mut single: Vec<(String, f64)> = Vec::new();
    let mut figures = serde_json::json!({ "one_stream_rtf": {}, "throughput": {} });
    for (streams, states, per_state) in setups {
        let core = load(&args, states, per_state).await?;
        // One whole run first, discarded, as the references get (whisper.cpp's and
        // faster-whisper's first run warms up too): the first pass over a long recording
        // pays for growing the states' buffers and first-touch page faults.
        run(&core, &audio, streams).await?;
        let mut best: Option<(f64, f64, String)> = None;
        for _ in 0..args.runs {
            let r = run(&core, &audio, streams).await?;
            if best.as_ref().is_none_or(|b| r.0 < b.0) {
                best = Some(r);
            }
        }
        let (wall, audio_s, text) = best.expect("at least one run");
        let throughput = streams as f64 * audio_s / wall;
        if streams == 1 {
            let shape = if states == 1 {
                format!("1 state x {per_state} threads")
            } else {
                format!("{states} states x {per_state} thread, idle states lent to it")
            };
            let rtf = wall / audio_s;
            println!("\nours, 1 stream ({shape}): {audio_s:.1} s of audio in {wall:.2} s: RTF {rtf:.4}\n  text: {}", preview(&text));
            figures["one_stream_rtf"][if states == 1 { "one_state" } else { "default" }] = rtf.into();
            single.push((shape, rtf));
        }
        figures["throughput"][streams.to_string()] = throughput.into();
        println!("ours, {streams} stream(s), {states} state(s) x {per_state} thread(s): {throughput:.1} audio s per s");
        if states == 1 && threads == 1 {
            break; // the other setups would repeat this one
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, figures.to_string()).context("writing the JSON figures")?;
    }
    if let Some(r) = reference {
        println!();
        for name in ["whisper_cpp", "faster_whisper"] {
            let Some(rtf) = r[name]["rtf"].as_f64() else { continue };
            let seq = r[name]["sequential_throughput"].as_f64().unwrap_or(1.0 / rtf);
            println!("{name}: RTF {rtf:.4}  (one-at-a-time throughput {seq:.1} audio s per s)");
            for (shape, ours) in &single {
                println!("  ours / theirs speed, 1 stream on {shape}: {:.2}x", rtf / ours);
            }
        }
    }
    Ok(())
}

/// A core on `states` decoder states of `per_state` threads each.
async fn load(args: &Args, states: usize, per_state: usize) -> anyhow::Result<Arc<SpeechCore>> {
    let core = SpeechCore::new(CoreConfig {
        model_path: args.ggml.clone(),
        model_id: "bench".into(),
        profile: "bench".into(),
        max_concurrent: states,
        queue_capacity: 16,
        threads_per_request: per_state,
        beam_size: 1,
        encoder_window: args.encoder_window,
        max_audio_ms: 4 * 3600 * 1000,
        chunker: ChunkerConfig::default(),
        device: mmc_models::DeviceSpec::Cpu,
        lend_idle_states: true,
    });
    core.load_and_warm_up().await?;
    Ok(core)
}

/// `--transcribe`: each file once, one at a time, on the default shape.
async fn transcribe_each(args: &Args, threads: usize) -> anyhow::Result<()> {
    let core = load(args, threads, 1).await?;
    let (mut texts, mut seconds) = (serde_json::Map::new(), 0.0);
    for file in &args.transcribe {
        let (wall, _, text) = run(&core, file, 1).await.with_context(|| format!("transcribing {}", file.display()))?;
        seconds += wall;
        texts.insert(file.display().to_string(), text.into());
    }
    let out = serde_json::json!({ "texts": texts, "seconds": seconds, "encoder_window": format!("{:?}", args.encoder_window) });
    match &args.json {
        Some(path) => std::fs::write(path, out.to_string()).context("writing the transcripts")?,
        None => println!("{out}"),
    }
    Ok(())
}

fn preview(text: &str) -> String {
    let t: String = text.chars().take(160).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}
