//! Review commands: a person corrects what the models wrote, from the terminal.
//!
//! - `mmc review` lists the review queue (indexed images whose alt text the machine was
//!   unsure of, least confident first); `mmc review --approve IMAGE_ID` approves one as is;
//! - `mmc describe --set "text" IMAGE` replaces an indexed image's alt text (IMAGE is an
//!   image id or the image's file);
//! - `mmc meeting export MEETING_ID --format md|json|ics` prints (or writes) the notes;
//!   `mmc meeting list`, `mmc meeting delete MEETING_ID`.
//!
//! Who reviews is `--reviewer` (default: `$MMC_REVIEWER`, else `$USER`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use mmc_proto::gateway::v1::{
    ApproveImageRequest, DeleteMeetingRequest, DescribeImageRequest, ExportFormat, ExportMeetingRequest, GetImageRequest, ImageRecord,
    ListImagesRequest, ListMeetingsRequest, UpdateImageRequest,
};
use serde_json::json;

use crate::client_cmd::{gateway, read_image, GatewayOpts};

/// Who makes a change: the flag, else `$MMC_REVIEWER` (clap), else `$USER`.
fn reviewer(flag: &Option<String>) -> anyhow::Result<String> {
    flag.clone().or_else(|| std::env::var("USER").ok()).filter(|r| !r.trim().is_empty()).context("say who reviews: --reviewer NAME (or MMC_REVIEWER)")
}

#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// Approve these images' alt text as it stands (they leave the queue).
    #[arg(long = "approve", value_name = "IMAGE_ID")]
    approve: Vec<String>,
    /// Most images listed.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Who reviews.
    #[arg(long, env = "MMC_REVIEWER")]
    reviewer: Option<String>,
    #[command(flatten)]
    opts: GatewayOpts,
}

fn record_json(r: &ImageRecord) -> serde_json::Value {
    json!({
        "image_id": r.image_id, "source_name": r.source_name, "caption": r.caption, "caption_confidence": r.caption_confidence,
        "needs_review": r.needs_review, "version": r.version, "reviewed_by": r.reviewed_by,
    })
}

/// `mmc review`.
pub async fn review(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let mut client = gateway(&args.opts).await?;
    if !args.approve.is_empty() {
        let who = reviewer(&args.reviewer)?;
        for id in &args.approve {
            let r = client
                .approve_image(ApproveImageRequest { image_id: id.clone(), reviewer: who.clone(), expected_version: None })
                .await
                .with_context(|| format!("approving {id}"))?
                .into_inner();
            if args.opts.json {
                println!("{}", record_json(&r));
            } else {
                println!("approved {}\t{}", r.image_id, r.caption);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let page = client.list_images(ListImagesRequest { page_size: args.limit, needs_review: true, ..Default::default() }).await?.into_inner();
    if args.opts.json {
        println!("{}", json!({ "images": page.images.iter().map(record_json).collect::<Vec<_>>(), "more": !page.next_page_token.is_empty() }));
    } else if page.images.is_empty() {
        println!("nothing to review");
    } else {
        println!("{:<38} {:>10}  {:<24} alt text", "image id", "confidence", "file");
        for r in &page.images {
            println!("{:<38} {:>9.0}%  {:<24} {}", r.image_id, r.caption_confidence * 100.0, r.source_name, r.caption);
        }
        if !page.next_page_token.is_empty() {
            println!("(more: --limit)");
        }
        println!("\nfix one: mmc describe --set \"your text\" IMAGE_ID; keep one: mmc review --approve IMAGE_ID");
    }
    Ok(ExitCode::SUCCESS)
}

/// `mmc describe --set TEXT IMAGE`: IMAGE is an image id, or a file that is indexed.
pub async fn set_alt_text(image: &PathBuf, text: &str, who: &Option<String>, opts: &GatewayOpts) -> anyhow::Result<ExitCode> {
    let mut client = gateway(opts).await?;
    let image_id = if image.is_file() {
        let described = client.describe_image(DescribeImageRequest { image: Some(read_image(image)?), modes: vec![] }).await?.into_inner();
        anyhow::ensure!(!described.image_id.is_empty(), "{} is not indexed: index it first (mmc index {})", image.display(), image.display());
        described.image_id
    } else {
        image.to_string_lossy().into_owned()
    };
    // The change is made on the version read here: a concurrent edit is refused, not overwritten.
    let current = client.get_image(GetImageRequest { image_id: image_id.clone() }).await?.into_inner();
    let request = UpdateImageRequest {
        image_id,
        alt_text: Some(text.to_string()),
        reviewer: reviewer(who)?,
        expected_version: Some(current.version),
        ..Default::default()
    };
    let r = client.update_image(request).await?.into_inner();
    if opts.json {
        println!("{}", record_json(&r));
    } else {
        println!("{}\t{}", r.image_id, r.caption);
        if r.caption.chars().count() > 125 {
            eprintln!("note: {} characters; alt text of 125 or fewer reads best", r.caption.chars().count());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum MeetingCommand {
    /// Print (or write) a meeting's notes: Markdown, JSON, or the action items as iCalendar.
    Export(ExportArgs),
    /// List the stored meetings, newest first.
    List(ListArgs),
    /// Delete a stored meeting for good (transcript, notes, review history).
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Most meetings listed.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    opts: GatewayOpts,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The meeting's id.
    meeting_id: String,
    #[command(flatten)]
    opts: GatewayOpts,
}

/// Export formats.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Format {
    Md,
    Json,
    Ics,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The meeting's id.
    meeting_id: String,
    #[arg(long, value_enum, default_value_t = Format::Md)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    opts: GatewayOpts,
}

/// `mmc meeting ...`.
pub async fn meeting(command: MeetingCommand) -> anyhow::Result<ExitCode> {
    let args = match command {
        MeetingCommand::Export(args) => args,
        MeetingCommand::List(args) => {
            let mut client = gateway(&args.opts).await?;
            let page = client.list_meetings(ListMeetingsRequest { page_size: args.limit, page_token: String::new() }).await?.into_inner();
            if args.opts.json {
                let meetings: Vec<_> = page
                    .meetings
                    .iter()
                    .map(|m| {
                        json!({ "meeting_id": m.meeting_id, "title": m.title, "created_at_unix_ms": m.created_at_unix_ms,
                        "audio_duration_ms": m.audio_duration_ms, "notes_reviewed": m.notes_reviewed, "decisions": m.decisions,
                        "action_items": m.action_items })
                    })
                    .collect();
                println!("{}", json!({ "meetings": meetings, "more": !page.next_page_token.is_empty() }));
            } else {
                for m in &page.meetings {
                    let state = if m.notes_reviewed { "reviewed" } else { "draft" };
                    println!(
                        "{}\t{}\t{} s\t{} decisions, {} action items\t{state}",
                        m.meeting_id,
                        m.title,
                        m.audio_duration_ms / 1000,
                        m.decisions,
                        m.action_items
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        MeetingCommand::Delete(args) => {
            let mut client = gateway(&args.opts).await?;
            client.delete_meeting(DeleteMeetingRequest { meeting_id: args.meeting_id.clone() }).await?;
            if args.opts.json {
                println!("{}", json!({ "meeting_id": args.meeting_id, "deleted": true }));
            } else {
                println!("deleted {}", args.meeting_id);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let format = match args.format {
        Format::Md => ExportFormat::Markdown,
        Format::Json => ExportFormat::Json,
        Format::Ics => ExportFormat::Icalendar,
    };
    let mut client = gateway(&args.opts).await?;
    let export = client.export_meeting(ExportMeetingRequest { meeting_id: args.meeting_id.clone(), format: format as i32 }).await?.into_inner();
    match &args.output {
        Some(path) => {
            std::fs::write(path, &export.content).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({})", path.display(), export.content_type);
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&export.content)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
