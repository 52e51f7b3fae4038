//! Client commands for people and scripts, against a running cluster:
//!
//! - through the gateway: `mmc index DIR`, `mmc search "text"` (or `--image FILE`),
//!   `mmc describe IMAGE`, `mmc summarize AUDIO`, `mmc ask MEETING_ID "question"`
//!   (review and export: [`crate::review_cmd`]);
//! - on the speech service: `mmc transcribe AUDIO --format text|srt|vtt|json` (segments
//!   are streamed as they are decoded; the gateway's HTTP API offers the same to remote
//!   clients at `/v1/audio/transcriptions`).
//!
//! Output is for reading by default; `--json` prints one JSON document on stdout for
//! scripts. Progress of long work goes to stderr. A cluster that is not running is
//! reported as such, with how to start it.

use std::{collections::HashMap, io::Write, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::{Image, Progress},
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response, search_images_request::Query, summarize_meeting_request,
        summarize_meeting_response, AskMeetingRequest, DescribeImageRequest, IndexImagesRequest, MeetingConfig, SearchImagesRequest,
        SummarizeMeetingRequest, TextSource,
    },
    speech::v1::{
        speech_service_client::SpeechServiceClient, transcribe_request, transcribe_response, OutputFormat, TranscribeConfig, TranscribeRequest,
    },
};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

/// Upload message size (audio and images are streamed in pieces of this size).
const CHUNK: usize = 256 * 1024;

/// Options every gateway command shares.
#[derive(Args, Debug)]
pub struct GatewayOpts {
    /// Gateway endpoint.
    #[arg(long, env = "MMC_GATEWAY_ENDPOINT", default_value = "http://127.0.0.1:50055")]
    gateway: String,
    /// Print one JSON document (for scripts) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

async fn reach(endpoint: &str, what: &str, flag: &str, var: &str) -> anyhow::Result<crate::cli_client::Authed> {
    crate::cli_client::connect(endpoint).await.with_context(|| {
        format!("cannot reach the {what} at {endpoint}: is the cluster running? (start it with `mmc up`, or point {flag} / {var} at it)")
    })
}

pub(crate) async fn gateway(opts: &GatewayOpts) -> anyhow::Result<GatewayServiceClient<crate::cli_client::Authed>> {
    let channel = reach(&opts.gateway, "gateway", "--gateway", "MMC_GATEWAY_ENDPOINT").await?;
    Ok(GatewayServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20))
}

/// A one-line progress display on stderr (only when stderr is a terminal: logs stay clean).
struct ProgressLine(bool);

impl ProgressLine {
    fn new() -> Self {
        ProgressLine(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    }

    fn show(&self, text: &str) {
        if self.0 {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        }
    }

    fn progress(&self, p: &Progress) {
        let bar_len = 24;
        let filled = ((p.fraction_done.clamp(0.0, 1.0)) * bar_len as f64).round() as usize;
        let message = if p.message.is_empty() { p.stage.clone() } else { p.message.clone() };
        self.show(&format!("[{}{}] {:>3.0}% {message}", "#".repeat(filled), "-".repeat(bar_len - filled), p.fraction_done * 100.0));
    }

    fn done(&self) {
        if self.0 {
            eprint!("\r\x1b[2K");
        }
    }
}

/// A recording's size and its bytes as a stream of [`CHUNK`]-sized pieces, read from disk
/// as they are sent (memory stays bounded for hour-long recordings).
fn file_chunks(path: &PathBuf) -> anyhow::Result<(u64, tokio_stream::wrappers::ReceiverStream<Vec<u8>>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let size = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let name = path.display().to_string();
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(buf).is_err() {
                    break;
                }
            }
            Err(e) => {
                // The upload ends short; the service then reports the audio as truncated.
                eprintln!("mmc: reading {name}: {e}");
                break;
            }
        }
    });
    Ok((size, tokio_stream::wrappers::ReceiverStream::new(rx)))
}

pub(crate) fn read_image(path: &PathBuf) -> anyhow::Result<Image> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Image { data: data.into(), mime_type: String::new(), source_name: name })
}

/// `key=value` (metadata and filters).
fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?}: expected key=value"))
}

// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Directory of images (not recursive), or image files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Metadata stored with every image (repeatable), e.g. --meta album=holidays.
    #[arg(long = "meta", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    #[command(flatten)]
    opts: GatewayOpts,
}

/// Image files of a directory (by extension), or the files given.
fn image_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png" | "webp" | "gif"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        bail!("no images (.jpg, .jpeg, .png, .webp, .gif) in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(files)
}

pub async fn index(args: IndexArgs) -> anyhow::Result<ExitCode> {
    let files = image_files(&args.paths)?;
    let mut client = gateway(&args.opts).await?;
    let metadata: HashMap<String, String> = args.metadata.into_iter().collect();
    // Images are read as the stream is sent, not all at once.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let reader_files = files.clone();
    let reader = tokio::spawn(async move {
        for f in reader_files {
            let image = read_image(&f)?;
            if tx.send(IndexImagesRequest { image: Some(image), metadata: metadata.clone() }).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    });
    let mut events = client.index_images(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let progress = ProgressLine::new();
    let (mut results, mut failed) = (Vec::new(), 0);
    let mut done = 0;
    while let Some(message) = events.message().await? {
        match message.event {
            Some(index_images_response::Event::Indexed(i)) => {
                done += 1;
                let name = files[i.request_index as usize].display().to_string();
                progress.show(&format!("[{done}/{}] {name}", files.len()));
                if !args.opts.json {
                    progress.done();
                    let state = if i.already_indexed { "already indexed" } else { "indexed" };
                    println!("{name}\t{}\t{state}\t{}", i.image_id, i.caption);
                }
                results.push(json!({ "file": name, "image_id": i.image_id, "caption": i.caption, "already_indexed": i.already_indexed }));
            }
            Some(index_images_response::Event::Failure(f)) => {
                done += 1;
                failed += 1;
                let name = files.get(f.request_index as usize).map(|p| p.display().to_string()).unwrap_or(f.source_name);
                progress.done();
                eprintln!("mmc: {name}: {} ({})", f.message, f.code);
                results.push(json!({ "file": name, "error": f.message, "code": f.code }));
            }
            _ => {}
        }
    }
    progress.done();
    reader.await??;
    if args.opts.json {
        println!("{}", json!({ "images": results, "failed": failed }));
    } else {
        eprintln!("mmc: {} image(s), {failed} failed", files.len());
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// What to look for, in words.
    #[arg(required_unless_present = "image")]
    query: Option<String>,
    /// Search by an image instead of words.
    #[arg(long, conflicts_with = "query")]
    image: Option<PathBuf>,
    /// How many results.
    #[arg(long, default_value_t = 5)]
    top_k: u32,
    /// Leave out results scoring below this (cosine, -1 to 1).
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    min_score: f32,
    /// Only images whose metadata has key=value (repeatable).
    #[arg(long = "filter", value_parser = key_value)]
    filters: Vec<(String, String)>,
    #[command(flatten)]
    opts: GatewayOpts,
}

pub async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let query = match (&args.query, &args.image) {
        (_, Some(path)) => Query::Image(read_image(path)?),
        (Some(q), None) => Query::Text(q.clone()),
        (None, None) => bail!("give a query or --image"),
    };
    let mut client = gateway(&args.opts).await?;
    let request = SearchImagesRequest {
        query: Some(query),
        top_k: args.top_k,
        score_threshold: args.min_score,
        metadata_filter: args.filters.into_iter().collect(),
    };
    let hits = client.search_images(request).await?.into_inner().hits;
    if args.opts.json {
        let hits: Vec<Value> = hits
            .iter()
            .map(|h| {
                let i = h.image.clone().unwrap_or_default();
                json!({ "image_id": i.image_id, "source_name": i.source_name, "caption": i.caption, "score": h.score, "metadata": i.metadata })
            })
            .collect();
        println!("{}", json!({ "hits": hits }));
    } else {
        for h in &hits {
            let i = h.image.clone().unwrap_or_default();
            println!("{:.3}\t{}\t{}\t{}", h.score, i.source_name, i.image_id, i.caption);
        }
        if hits.is_empty() {
            eprintln!("mmc: no results");
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------

/// Which descriptions to write.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum DescribeMode {
    /// One sentence of at most 125 characters, for `alt` attributes.
    Alt,
    /// Two or three sentences.
    Detailed,
    /// Both.
    Both,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The image (with --set: an indexed image's id, or its file).
    image: PathBuf,
    #[arg(long, value_enum, default_value_t = DescribeMode::Both)]
    mode: DescribeMode,
    /// Replace the indexed image's alt text with this text (a person's correction: it is
    /// searchable at once and the machine's draft is kept in the image's history).
    #[arg(long, value_name = "TEXT")]
    set: Option<String>,
    /// Who makes the correction (with --set).
    #[arg(long, env = "MMC_REVIEWER")]
    reviewer: Option<String>,
    #[command(flatten)]
    opts: GatewayOpts,
}

pub async fn describe(args: DescribeArgs) -> anyhow::Result<ExitCode> {
    if let Some(text) = &args.set {
        return crate::review_cmd::set_alt_text(&args.image, text, &args.reviewer, &args.opts).await;
    }
    let image = read_image(&args.image)?;
    let modes = match args.mode {
        DescribeMode::Alt => vec![CaptionMode::AltText],
        DescribeMode::Detailed => vec![CaptionMode::Detailed],
        DescribeMode::Both => vec![CaptionMode::AltText, CaptionMode::Detailed],
    };
    let mut client = gateway(&args.opts).await?;
    let request = DescribeImageRequest { image: Some(image), modes: modes.iter().map(|m| *m as i32).collect() };
    let described = client.describe_image(request).await?.into_inner();
    let name = |m: i32| if m == CaptionMode::Detailed as i32 { "detailed" } else { "alt_text" };
    if args.opts.json {
        let captions: Vec<Value> = described
            .captions
            .iter()
            .map(|c| json!({ "mode": name(c.mode), "text": c.text, "confidence": c.confidence, "from_template": c.from_template, "uncertain": c.uncertain }))
            .collect();
        let labels: Vec<Value> = described.labels.iter().map(|l| json!({ "name": l.name, "probability": l.probability })).collect();
        let source = if described.source == TextSource::Human as i32 { "human" } else { "machine" };
        println!(
            "{}",
            json!({ "file": args.image.display().to_string(), "captions": captions, "labels": labels, "needs_review": described.needs_review,
                    "source": source, "image_id": described.image_id })
        );
    } else {
        for c in &described.captions {
            println!("{}\t{}", name(c.mode), c.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------

/// Transcript formats `mmc transcribe` prints.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum TranscriptFormat {
    Text,
    Srt,
    Vtt,
    /// OpenAI-style verbose JSON (segments, timings, words with --words).
    Json,
}

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// The recording (WAV, FLAC, MP3, OGG, M4A...).
    audio: PathBuf,
    #[arg(long, value_enum, default_value_t = TranscriptFormat::Text)]
    format: TranscriptFormat,
    /// Spoken language (ISO 639-1, e.g. en); default: detected.
    #[arg(long)]
    language: Option<String>,
    /// Word timings (in --format json).
    #[arg(long)]
    words: bool,
    /// Speech service endpoint.
    #[arg(long, env = "MMC_SPEECH_ENDPOINT", default_value = "http://127.0.0.1:50053")]
    speech: String,
}

pub async fn transcribe(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    let (size, audio) = file_chunks(&args.audio)?;
    let channel = reach(&args.speech, "speech service", "--speech", "MMC_SPEECH_ENDPOINT").await?;
    let format = match args.format {
        TranscriptFormat::Text => OutputFormat::Text,
        TranscriptFormat::Srt => OutputFormat::Srt,
        TranscriptFormat::Vtt => OutputFormat::Vtt,
        TranscriptFormat::Json => OutputFormat::VerboseJson,
    };
    let config = TranscribeConfig {
        language: args.language.unwrap_or_default(),
        word_timestamps: args.words,
        formats: vec![format as i32],
        total_bytes: size,
        ..Default::default()
    };
    let requests = tokio_stream::once(TranscribeRequest { payload: Some(transcribe_request::Payload::Config(config)) })
        .chain(audio.map(|c| TranscribeRequest { payload: Some(transcribe_request::Payload::AudioChunk(c)) }));
    let mut events = SpeechServiceClient::new(channel).transcribe(requests).await?.into_inner();
    let progress = ProgressLine::new();
    let mut result = None;
    while let Some(message) = events.message().await? {
        match message.event {
            Some(transcribe_response::Event::Progress(p)) => progress.progress(&p),
            Some(transcribe_response::Event::Segment(s)) => progress.show(&format!("[{:>7.1} s] {}", s.end_ms as f64 / 1000.0, s.text.trim())),
            Some(transcribe_response::Event::Result(r)) => result = Some(r),
            None => {}
        }
    }
    progress.done();
    let result = result.context("the transcription ended without a result")?;
    let rendered = result.rendered.iter().find(|r| r.format == format as i32).map(|r| r.content.clone()).unwrap_or_default();
    print!("{rendered}");
    if !rendered.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// The meeting recording.
    audio: PathBuf,
    /// Title stored with the meeting.
    #[arg(long, default_value = "")]
    title: String,
    /// Spoken language (ISO 639-1); default: detected.
    #[arg(long)]
    language: Option<String>,
    /// Prompt version (see the gateway's prompts directory); default: the gateway's.
    #[arg(long, default_value = "")]
    prompt_version: String,
    /// Attendee names, comma-separated ("Aiko,Bruno,Chidi"): action-item owners are
    /// matched to them, misheard names included.
    #[arg(long, value_delimiter = ',')]
    participants: Vec<String>,
    #[command(flatten)]
    opts: GatewayOpts,
}

fn at(ms: i64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub async fn summarize(args: SummarizeArgs) -> anyhow::Result<ExitCode> {
    let (size, audio) = file_chunks(&args.audio)?;
    let mut client = gateway(&args.opts).await?;
    let config = MeetingConfig {
        title: args.title.clone(),
        transcription: Some(TranscribeConfig { language: args.language.unwrap_or_default(), total_bytes: size, ..Default::default() }),
        prompt_version: args.prompt_version.clone(),
        participants: args.participants.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
    };
    let requests = tokio_stream::once(SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::Config(config)) })
        .chain(audio.map(|c| SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::AudioChunk(c)) }));
    let mut events = client.summarize_meeting(requests).await?.into_inner();
    let progress = ProgressLine::new();
    let mut segments = Vec::new();
    let mut summary = None;
    while let Some(message) = events.message().await? {
        match message.event {
            Some(summarize_meeting_response::Event::Progress(p)) => progress.progress(&p),
            Some(summarize_meeting_response::Event::Segment(s)) => segments.push(s),
            Some(summarize_meeting_response::Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    progress.done();
    let s = summary.context("the meeting stream ended without a summary")?;
    let start_of = |ids: &[u32]| ids.iter().filter_map(|id| segments.iter().find(|g| g.id == *id)).map(|g| g.start_ms).min().unwrap_or(0);
    if args.opts.json {
        let cited = |text: &str, ids: &[u32]| json!({ "text": text, "segment_ids": ids, "start_ms": start_of(ids) });
        let doc = json!({
            "meeting_id": s.meeting_id,
            "summary": s.summary,
            "key_points": s.key_points.iter().map(|i| cited(&i.text, &i.segment_ids)).collect::<Vec<_>>(),
            "decisions": s.decisions.iter().map(|i| cited(&i.text, &i.segment_ids)).collect::<Vec<_>>(),
            "action_items": s.action_items.iter().map(|a| {
                let item = a.item.clone().unwrap_or_default();
                json!({ "owner": a.owner, "due": a.due, "text": item.text, "segment_ids": item.segment_ids, "start_ms": start_of(&item.segment_ids) })
            }).collect::<Vec<_>>(),
            "transcript": segments.iter().map(|g| json!({ "id": g.id, "start_ms": g.start_ms, "end_ms": g.end_ms, "text": g.text.trim() })).collect::<Vec<_>>(),
            "prompt_version": s.prompt_version,
        });
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let language = if s.language.is_empty() { String::new() } else { format!(" (language: {})", s.language) };
    println!("Meeting {}{language}\n\nSummary: {}\n", s.meeting_id, s.summary);
    println!("Decisions:");
    for d in &s.decisions {
        println!("  [{}] {}", at(start_of(&d.segment_ids)), d.text);
    }
    println!("Action items:");
    for a in &s.action_items {
        let item = a.item.clone().unwrap_or_default();
        let owner = if a.owner.is_empty() { "(no owner stated)" } else { &a.owner };
        let due = if a.due.is_empty() { String::new() } else { format!(" (due {})", a.due) };
        println!("  [{}] {owner}: {}{due}", at(start_of(&item.segment_ids)), item.text);
    }
    println!("\nAsk about it: mmc ask {} \"...\"", s.meeting_id);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct AskArgs {
    /// Id printed by `mmc summarize`.
    meeting_id: String,
    /// The question.
    question: String,
    #[command(flatten)]
    opts: GatewayOpts,
}

pub async fn ask(args: AskArgs) -> anyhow::Result<ExitCode> {
    let mut client = gateway(&args.opts).await?;
    let request = AskMeetingRequest { meeting_id: args.meeting_id.clone(), question: args.question.clone(), top_k: 0 };
    let answer = client.ask_meeting(request).await?.into_inner();
    if args.opts.json {
        let citations: Vec<Value> = answer
            .citations
            .iter()
            .map(|c| json!({ "segment_id": c.segment_id, "start_ms": c.start_ms, "end_ms": c.end_ms, "text": c.text }))
            .collect();
        let source = mmc_proto::gateway::v1::AnswerSource::try_from(answer.source).unwrap_or_default();
        let source = source.as_str_name().trim_start_matches("ANSWER_SOURCE_").to_lowercase();
        println!(
            "{}",
            json!({ "answer": answer.answer, "answerable": answer.answerable, "citations": citations, "source": source, "withheld_reason": answer.withheld_reason })
        );
    } else {
        println!("{}", answer.answer);
        if !answer.withheld_reason.is_empty() {
            println!("  (quoted from the transcript: {})", answer.withheld_reason);
        }
        for c in &answer.citations {
            println!("  [{}] {}", at(c.start_ms), c.text.trim());
        }
    }
    Ok(ExitCode::SUCCESS)
}
