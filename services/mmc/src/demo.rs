//! `mmc demo`: the user flows that are available so far, run against a live cluster and
//! printed for a person to read. Today, through the gateway: cross-modal image search
//! (the photos indexed with IndexImages, each sentence's best photos from SearchImages, a
//! photo used as the query) and image descriptions for accessibility (DescribeImage: alt
//! text and a detailed description per photo); then the text-generation service directly
//! (a streamed answer, then meeting notes as schema-valid JSON). It grows as the meeting
//! flows land.

use std::{collections::HashMap, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::Args;
use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::Image,
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response, search_images_request::Query,
        DescribeImageRequest, IndexImagesRequest, SearchImagesRequest,
    },
    textgen::v1::{
        generate_response::Event, text_gen_service_client::TextGenServiceClient, ChatMessage, ChatRequest,
        GenerationOptions, Role,
    },
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
}

const QUERIES: [&str; 5] =
    ["a cat lying on a blanket", "a cup of coffee", "a rocket on the launch pad", "a motorbike", "stars and galaxies"];

type Gateway = GatewayServiceClient<tonic::transport::Channel>;

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
        .map(|n| Ok(Image { data: std::fs::read(dir.join(n))?, mime_type: String::new(), source_name: n.clone() }))
        .collect::<std::io::Result<_>>()?;
    let mut gateway = GatewayServiceClient::new(connect(&args.gateway).await?);
    search_demo(&mut gateway, &images).await?;
    describe_demo(&mut gateway, &images).await?;
    textgen_demo(&args.textgen).await?;
    println!("\n(Meeting summaries and Q&A join this demo as the gateway's meeting flows land.)");
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

/// Schema of the demo's meeting notes (what the gateway's summarizer asks for, smaller).
const NOTES_SCHEMA: &str = r#"{"type": "object", "properties": {
  "decisions": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
  "action_items": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
    "owner": {"type": "string", "maxLength": 20}, "task": {"type": "string", "maxLength": 60},
    "due": {"type": ["string", "null"], "maxLength": 20}}, "required": ["owner", "task", "due"],
    "additionalProperties": false}}},
  "required": ["decisions", "action_items"], "additionalProperties": false}"#;

const MEETING: &str = "Alice: The launch moves to Monday.\nBob: Agreed. I will update the release notes by Friday.\nCarol: I will tell the support team tomorrow.";

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
