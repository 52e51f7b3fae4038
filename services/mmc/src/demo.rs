//! `mmc demo`: the user flows that are available so far, run against a live cluster and
//! printed for a person to read. Today, through the gateway: cross-modal image search
//! (the photos indexed with IndexImages, each sentence's best photos from SearchImages, a
//! photo used as the query) and image descriptions for accessibility (DescribeImage: alt
//! text and a detailed description per photo), meeting summarization (a meeting spoken by
//! espeak-ng in several voices -> SummarizeMeeting -> cited decisions and action items ->
//! AskMeeting); then the text-generation service directly (a streamed answer, then meeting
//! notes as schema-valid JSON).

use std::{collections::HashMap, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::Args;
use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::Image,
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response, search_images_request::Query, summarize_meeting_request,
        summarize_meeting_response, AskMeetingRequest, DescribeImageRequest, IndexImagesRequest, MeetingConfig, SearchImagesRequest,
        SummarizeMeetingRequest,
    },
    speech::v1::TranscribeConfig,
    textgen::v1::{generate_response::Event, text_gen_service_client::TextGenServiceClient, ChatMessage, ChatRequest, GenerationOptions, Role},
};
use std::io::Write;

use crate::cli_client::connect;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Gateway endpoint.
    #[arg(long, env = "MMC_GATEWAY_ENDPOINT", default_value = "http://127.0.0.1:50055")]
    gateway: String,
    /// Text-generation service endpoint.
    #[arg(long, env = "MMC_TEXTGEN_ENDPOINT", default_value = "http://127.0.0.1:50054")]
    textgen: String,
    /// Directory of photos (default: the test-assets profile's photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// A meeting recording to summarize (default: a short meeting synthesized with
    /// espeak-ng, when it is installed).
    #[arg(long)]
    meeting: Option<PathBuf>,
}

/// The demo meeting: (espeak-ng voice, line).
const SPOKEN_MEETING: [(&str, &str); 8] = [
    ("en-us", "Good morning everyone, this is the weekly planning meeting."),
    ("en-gb", "We decided to move the product launch to the fifteenth of March."),
    ("en-gb", "Sarah will update the project plan by Friday."),
    ("en-us+f3", "The team agreed to hire two more engineers."),
    ("en-us", "David will write the job description for the engineers."),
    ("en-us+f3", "We also decided to switch the website to a new hosting provider."),
    ("en-gb", "Maria will call the hosting provider tomorrow."),
    ("en-us", "Thank you all, the meeting is closed."),
];

/// Questions asked about the demo meeting (the last one it does not answer).
const MEETING_QUESTIONS: [&str; 3] =
    ["Who will update the project plan?", "When is the product launch?", "What did they say about the office coffee machine?"];

const QUERIES: [&str; 5] = ["a cat lying on a blanket", "a cup of coffee", "a rocket on the launch pad", "a motorbike", "stars and galaxies"];

type Gateway = GatewayServiceClient<crate::cli_client::Authed>;

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = args.photos.unwrap_or_else(|| mmc_models::ModelStore::from_env().model_dir("test-photos"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading photos in {} (run `mmc models fetch --profile test-assets`)", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let images: Vec<Image> = names
        .iter()
        .map(|n| Ok(Image { data: std::fs::read(dir.join(n))?.into(), mime_type: String::new(), source_name: n.clone() }))
        .collect::<std::io::Result<_>>()?;
    let mut gateway = GatewayServiceClient::new(connect(&args.gateway).await?);
    search_demo(&mut gateway, &images).await?;
    describe_demo(&mut gateway, &images).await?;
    meeting_demo(&mut gateway, args.meeting).await?;
    textgen_demo(&args.textgen).await?;
    Ok(ExitCode::SUCCESS)
}

/// Indexes the photos (idempotent: a second run finds them stored) and runs the queries.
async fn search_demo(gateway: &mut Gateway, images: &[Image]) -> anyhow::Result<()> {
    println!("== Demo: cross-modal image search (gateway: IndexImages, SearchImages; bundled models)\n");
    let requests = images.iter().map(|i| IndexImagesRequest { image: Some(i.clone()), metadata: HashMap::new() }).collect::<Vec<_>>();
    let mut events = gateway.index_images(tokio_stream::iter(requests)).await?.into_inner();
    println!("{:<24} caption stored with the photo   [top labels]", "PHOTO");
    while let Some(message) = events.message().await? {
        match message.event {
            Some(index_images_response::Event::Indexed(i)) => {
                let labels: Vec<String> = i.labels.iter().take(3).map(|l| format!("{} {:.2}", l.name, l.probability)).collect();
                let name = &images[i.request_index as usize].source_name;
                let stored = if i.already_indexed { " (already indexed)" } else { "" };
                println!("{name:<24} {}{stored}   [{}]", i.caption, labels.join(", "));
            }
            Some(index_images_response::Event::Failure(f)) => bail!("indexing {} failed: {} {}", f.source_name, f.code, f.message),
            Some(index_images_response::Event::Summary(s)) => {
                println!("({} indexed, {} already indexed, {} failed)", s.indexed, s.already_indexed, s.failed)
            }
            _ => {}
        }
    }
    println!("\n{:<30} best photos (fused cosine score: image vector and caption vector)", "QUERY");
    let mut queries: Vec<(String, Query)> = QUERIES.iter().map(|q| (format!("\"{q}\""), Query::Text(q.to_string()))).collect();
    if let Some(cat) = images.iter().find(|i| i.source_name.starts_with("cat")) {
        queries.push((format!("[photo {}]", cat.source_name), Query::Image(cat.clone())));
    }
    for (label, query) in queries {
        let request = SearchImagesRequest { query: Some(query), top_k: 2, score_threshold: -1.0, metadata_filter: HashMap::new() };
        let hits = gateway.search_images(request).await?.into_inner().hits;
        let top: Vec<String> = hits.iter().map(|h| format!("{} {:.2}", h.image.as_ref().map_or("", |i| i.source_name.as_str()), h.score)).collect();
        println!("{label:<30} {}", top.join("   then "));
    }
    Ok(())
}

/// Alt text and a detailed description for each photo (DescribeImage: EncodeImage ->
/// Caption inside the cluster).
async fn describe_demo(gateway: &mut Gateway, images: &[Image]) -> anyhow::Result<()> {
    println!("\n== Demo: image descriptions for accessibility (gateway: DescribeImage; bundled SmolLM2 decoder)\n");
    for image in images {
        let modes = vec![CaptionMode::AltText as i32, CaptionMode::Detailed as i32];
        let described = gateway.describe_image(DescribeImageRequest { image: Some(image.clone()), modes }).await?.into_inner();
        println!("{}", image.source_name);
        for (c, name) in described.captions.iter().zip(["alt text", "detailed"]) {
            let source = if c.from_template { "label template" } else { "language model" };
            println!("  {name:<9} {}  [confidence {:.2}, {source}, {} decode(s)]", c.text, c.confidence, c.attempts);
        }
    }
    Ok(())
}

/// Summarizes a meeting through the gateway and asks it questions.
async fn meeting_demo(gateway: &mut Gateway, recording: Option<PathBuf>) -> anyhow::Result<()> {
    println!("\n== Demo: meeting summarization (gateway: SummarizeMeeting, AskMeeting; Whisper tiny.en, MiniLM, SmolLM2)\n");
    let audio = match recording {
        Some(path) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        None => match crate::speak::speak(&SPOKEN_MEETING, 150, 600)? {
            Some(wav) => wav,
            None => {
                println!("(skipped: espeak-ng is not installed to speak the demo meeting; pass --meeting FILE)");
                return Ok(());
            }
        },
    };
    let config = MeetingConfig {
        title: "Weekly planning".into(),
        transcription: Some(TranscribeConfig { language: "en".into(), ..Default::default() }),
        participants: vec!["Sarah".into(), "David".into(), "Maria".into()],
        ..Default::default()
    };
    let mut requests = vec![SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::Config(config)) }];
    requests.extend(
        audio.chunks(64 * 1024).map(|c| SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::AudioChunk(c.to_vec())) }),
    );
    let mut events = gateway.summarize_meeting(tokio_stream::iter(requests)).await?.into_inner();
    let mut segments = Vec::new();
    let mut summary = None;
    while let Some(message) = events.message().await? {
        match message.event {
            Some(summarize_meeting_response::Event::Segment(s)) => {
                println!("  [{:>5.1} s] {}", s.start_ms as f64 / 1000.0, s.text.trim());
                segments.push(s);
            }
            Some(summarize_meeting_response::Event::Summary(s)) => summary = Some(s),
            _ => {}
        }
    }
    let summary = summary.context("the meeting stream ended without a summary")?;
    let at = |ids: &[u32]| {
        ids.iter()
            .filter_map(|id| segments.iter().find(|s| s.id == *id))
            .map(|s| format!("{:.1} s", s.start_ms as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\nSummary: {}", summary.summary);
    println!("Decisions:");
    for d in &summary.decisions {
        println!("  - {}  [at {}]", d.text, at(&d.segment_ids));
    }
    println!("Action items:");
    for a in &summary.action_items {
        let item = a.item.clone().unwrap_or_default();
        let owner = if a.owner.is_empty() { "(no owner stated)" } else { a.owner.as_str() };
        let due = if a.due.is_empty() { String::new() } else { format!(", due {}", a.due) };
        println!("  - {owner}: {}{due}  [at {}]", item.text, at(&item.segment_ids));
    }
    println!("(meeting {}; prompts {})\n", summary.meeting_id, summary.prompt_version);
    for question in MEETING_QUESTIONS {
        let request = AskMeetingRequest { meeting_id: summary.meeting_id.clone(), question: question.into(), top_k: 0 };
        let answer = gateway.ask_meeting(request).await?.into_inner();
        let cited: Vec<String> = answer.citations.iter().map(|c| format!("{:.1} s", c.start_ms as f64 / 1000.0)).collect();
        let cited = if cited.is_empty() { String::new() } else { format!("  [cites {}]", cited.join(", ")) };
        println!("Q: {question}\nA: {}{cited}", answer.answer);
    }
    Ok(())
}

/// Schema of the demo's meeting notes (what the gateway's summarizer asks for, smaller).
const NOTES_SCHEMA: &str = r#"{"type": "object", "properties": {
  "decisions": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
  "action_items": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
    "owner": {"type": "string", "maxLength": 20}, "task": {"type": "string", "maxLength": 60},
    "due": {"type": ["string", "null"], "maxLength": 20}}, "required": ["owner", "task", "due"],
    "additionalProperties": false}}},
  "required": ["decisions", "action_items"], "additionalProperties": false}"#;

const MEETING: &str =
    "Alice: The launch moves to Monday.\nBob: Agreed. I will update the release notes by Friday.\nCarol: I will tell the support team tomorrow.";

/// Streams one chat answer token by token, then asks for meeting notes under a JSON Schema.
async fn textgen_demo(endpoint: &str) -> anyhow::Result<()> {
    let mut textgen = TextGenServiceClient::new(connect(endpoint).await?);
    let user = |text: &str| vec![ChatMessage { role: Role::User as i32, content: text.to_string() }];
    println!("\n== Demo: text generation (textgen service, bundled SmolLM2-135M-Instruct)\n");

    let question = "Give one tip for running a good meeting.";
    println!("Q: {question}");
    print!("A: ");
    let options = GenerationOptions { max_tokens: 60, ..Default::default() };
    let mut stream = textgen.chat(ChatRequest { messages: user(question), options: Some(options) }).await?.into_inner();
    while let Some(msg) = stream.message().await? {
        match msg.event {
            Some(Event::Token(t)) => {
                print!("{}", t.text);
                std::io::stdout().flush()?;
            }
            Some(Event::Summary(s)) => println!(
                "\n   ({} prompt + {} generated tokens, first token after {:.0} ms, {:.1} tokens/s)",
                s.prompt_tokens, s.completion_tokens, s.time_to_first_token_ms, s.tokens_per_second
            ),
            None => {}
        }
    }

    println!("\nMeeting:\n  {}", MEETING.replace('\n', "\n  "));
    let options = GenerationOptions { max_tokens: 300, json_schema: NOTES_SCHEMA.into(), ..Default::default() };
    let prompt = format!("List the decisions and action items of this meeting.\n{MEETING}");
    let mut stream = textgen.chat(ChatRequest { messages: user(&prompt), options: Some(options) }).await?.into_inner();
    while let Some(msg) = stream.message().await? {
        if let Some(Event::Summary(s)) = msg.event {
            println!("Notes (JSON constrained by a schema; a 135M model's reading, not checked here):\n  {}", s.text);
        }
    }
    Ok(())
}
