//! `mmc-caption-bench`: throughput and latency of the bundled description chain
//! (embed.v1.EncodeImage -> caption.v1.Caption, alt text) against running services, with 1
//! and N concurrent clients on the same photos. A command, not a test;
//! `tests/bench/caption.sh` starts the services and runs it.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use clap::Parser;
use mmc_proto::{
    caption::v1::{caption_service_client::CaptionServiceClient, CaptionMode, CaptionRequest},
    common::v1::Image,
    embed::v1::{embed_service_client::EmbedServiceClient, EncodeImageRequest},
};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(name = "mmc-caption-bench", about = "Captions/s and latency of EncodeImage -> Caption.")]
struct Args {
    /// Latent (embed) service endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    embed: String,
    /// Caption service endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    caption: String,
    /// Directory of photos.
    #[arg(long)]
    photos: PathBuf,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    clients: Vec<usize>,
    /// Passes over the photos per client.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// One chain call: (encode ms, caption ms, from template).
async fn describe(
    embed: &mut EmbedServiceClient<Channel>,
    caption: &mut CaptionServiceClient<Channel>,
    image: &Image,
) -> anyhow::Result<(f64, f64, bool)> {
    let t = Instant::now();
    let latents =
        embed.encode_image(EncodeImageRequest { image: Some(image.clone()), top_k: 5, include_embedding: false }).await?.into_inner().latents;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let c = caption.caption(CaptionRequest { latents, mode: CaptionMode::AltText as i32, max_chars: 0 }).await?.into_inner();
    Ok((encode_ms, t.elapsed().as_secs_f64() * 1e3, c.from_template))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut names: Vec<String> = std::fs::read_dir(&args.photos)
        .with_context(|| format!("reading {}", args.photos.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jpg") || n.ends_with(".png"))
        .collect();
    names.sort();
    let images: Vec<Image> = names
        .iter()
        .map(|n| Ok(Image { data: std::fs::read(args.photos.join(n))?.into(), mime_type: String::new(), source_name: n.clone() }))
        .collect::<std::io::Result<_>>()?;
    let embed_ch = Channel::from_shared(args.embed.clone())?.connect().await.context("connecting to the embed service")?;
    let caption_ch = Channel::from_shared(args.caption.clone())?.connect().await.context("connecting to the caption service")?;
    // Warm-up: every photo once.
    for image in &images {
        describe(&mut EmbedServiceClient::new(embed_ch.clone()), &mut CaptionServiceClient::new(caption_ch.clone()), image).await?;
    }
    println!("{} photos, alt text, {} round(s) per client", images.len(), args.rounds);
    println!("{:>7} {:>11} {:>9} {:>9} {:>11} {:>12} {:>9}", "clients", "captions/s", "p50 ms", "p95 ms", "encode p50", "caption p50", "template");
    let mut single = None;
    for &clients in &args.clients {
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (embed_ch, caption_ch, images) = (embed_ch.clone(), caption_ch.clone(), images.clone());
                let rounds = args.rounds;
                tokio::spawn(async move {
                    let (mut embed, mut caption) = (EmbedServiceClient::new(embed_ch), CaptionServiceClient::new(caption_ch));
                    let mut out = Vec::new();
                    for r in 0..rounds {
                        // Clients start at different photos so they do not move in lockstep.
                        for i in 0..images.len() {
                            let image = &images[(i + c + r) % images.len()];
                            let t = Instant::now();
                            let (e, k, template) = describe(&mut embed, &mut caption, image).await?;
                            out.push((t.elapsed().as_secs_f64() * 1e3, e, k, template));
                        }
                    }
                    anyhow::Ok(out)
                })
            })
            .collect();
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await??);
        }
        let wall = started.elapsed().as_secs_f64();
        let sorted = |f: fn(&(f64, f64, f64, bool)) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (total, encode, caption) = (sorted(|s| s.0), sorted(|s| s.1), sorted(|s| s.2));
        let rate = samples.len() as f64 / wall;
        let templates = samples.iter().filter(|s| s.3).count();
        println!(
            "{clients:>7} {rate:>11.2} {:>9.0} {:>9.0} {:>11.0} {:>12.0} {:>5}/{:<3}",
            percentile(&total, 0.5),
            percentile(&total, 0.95),
            percentile(&encode, 0.5),
            percentile(&caption, 0.5),
            templates,
            samples.len()
        );
        match single {
            None => single = Some(rate),
            Some(one) => println!("        {clients} clients / 1 client throughput: {:.2}x", rate / one),
        }
    }
    Ok(())
}
