//! `mmc demo`: the user flows that are available so far, run against a live cluster and
//! printed for a person to read. Today: cross-modal image search on the latent service
//! (photos classified, photos and sentences embedded in one space, each sentence's best
//! photo), image descriptions for accessibility (EncodeImage chained into Caption: alt
//! text and a detailed description per photo), and the text-generation service (a streamed
//! answer, then meeting notes as schema-valid JSON). It grows as the gateway flows land.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use mmc_proto::{
    caption::v1::{caption_service_client::CaptionServiceClient, CaptionMode, CaptionRequest},
    common::v1::Image,
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedImageRequest, EmbedTextRequest, EncodeImageRequest},
    textgen::v1::{
        generate_response::Event, text_gen_service_client::TextGenServiceClient, ChatMessage, ChatRequest,
        GenerationOptions, Role,
    },
};
use std::io::Write;

use crate::cli_client::connect;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Latent (embed) service endpoint.
    #[arg(long, env = "MMC_EMBED_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    embed: String,
    /// Caption service endpoint.
    #[arg(long, env = "MMC_CAPTION_ENDPOINT", default_value = "http://127.0.0.1:50052")]
    caption: String,
    /// Text-generation service endpoint.
    #[arg(long, env = "MMC_TEXTGEN_ENDPOINT", default_value = "http://127.0.0.1:50054")]
    textgen: String,
    /// Directory of photos (default: the test-assets profile's photos).
    #[arg(long)]
    photos: Option<PathBuf>,
}

const QUERIES: [&str; 5] =
    ["a cat lying on a blanket", "a cup of coffee", "a rocket on the launch pad", "a motorbike", "stars and galaxies"];

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
    let mut embed = EmbedServiceClient::new(connect(&args.embed).await?);

    println!("== Demo: cross-modal image search (latent service, bundled models)\n");
    println!("{:<24} what the image encoder sees (EncodeImage, top 3)", "PHOTO");
    for image in &images {
        let latents = embed
            .encode_image(EncodeImageRequest { image: Some(image.clone()), top_k: 3 })
            .await?
            .into_inner()
            .latents
            .context("no latents")?;
        let labels: Vec<String> =
            latents.labels.iter().map(|l| format!("{} {:.2}", l.name, l.probability)).collect();
        println!("{:<24} {}", image.source_name, labels.join(", "));
    }

    let photos = embed.embed_image(EmbedImageRequest { images: images.clone() }).await?.into_inner();
    let texts = embed
        .embed_text(EmbedTextRequest { texts: QUERIES.iter().map(|q| q.to_string()).collect(), reject_overlong: false })
        .await?
        .into_inner();
    let space = texts.model.map(|m| format!("{} ({}-d)", m.id, m.dimensions)).unwrap_or_default();
    println!("\n{:<30} best photo (cosine similarity in the {space} space)", "QUERY");
    for (query, q) in QUERIES.iter().zip(&texts.embeddings) {
        let mut scored: Vec<(f32, &str)> = photos
            .embeddings
            .iter()
            .zip(&names)
            .map(|(p, n)| (p.values.iter().zip(&q.values).map(|(a, b)| a * b).sum(), n.as_str()))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<String> = scored.iter().take(2).map(|(s, n)| format!("{n} {s:.2}")).collect();
        println!("{:<30} {}", format!("\"{query}\""), top.join("   then "));
    }
    caption_demo(&mut embed, &args.caption, &images).await?;
    textgen_demo(&args.textgen).await?;
    println!("\n(Meeting summaries and Q&A join this demo as the gateway flows land.)");
    Ok(ExitCode::SUCCESS)
}

/// Alt text and a detailed description for each photo: the encoder's latents chained into
/// the caption service, as the gateway's DescribeImage will do.
async fn caption_demo(
    embed: &mut EmbedServiceClient<tonic::transport::Channel>,
    endpoint: &str,
    images: &[Image],
) -> anyhow::Result<()> {
    let mut caption = CaptionServiceClient::new(connect(endpoint).await?);
    println!("\n== Demo: image descriptions for accessibility (EncodeImage -> Caption, bundled SmolLM2 decoder)\n");
    for image in images {
        let latents = embed
            .encode_image(EncodeImageRequest { image: Some(image.clone()), top_k: 5 })
            .await?
            .into_inner()
            .latents
            .context("no latents")?;
        println!("{}", image.source_name);
        for (mode, name) in [(CaptionMode::AltText, "alt text"), (CaptionMode::Detailed, "detailed")] {
            let c = caption
                .caption(CaptionRequest { latents: Some(latents.clone()), mode: mode as i32, max_chars: 0 })
                .await?
                .into_inner();
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
