//! `mmc-embed-bench`: texts/s of the bundled text encoder (all-MiniLM-L6-v2) and images/s
//! of the bundled classifier (EfficientNet-Lite0), engine level, with the inputs, batch
//! sizes and thread count of a PyTorch run on the same weights, printed as ratios against
//! it. A command, not a test; `tests/bench/embed.sh` runs both sides in one go.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use candle_core::Device;
use clap::Parser;
use mmc_embed::engine::{
    efficientnet::{EfficientNetLite0, IMAGE_SIZE},
    text::TextEncoder,
};

#[derive(Parser, Debug)]
#[command(name = "mmc-embed-bench", about = "Texts/s and images/s of the latent service's engines vs a PyTorch run.")]
struct Args {
    /// Models directory.
    #[arg(long)]
    models_dir: PathBuf,
    /// Texts to embed, one per line (the PyTorch run writes them).
    #[arg(long)]
    texts: PathBuf,
    /// The PyTorch run's JSON line (texts_per_s, images_per_s, batch sizes, counts).
    #[arg(long)]
    reference: PathBuf,
    /// Timed passes; the best is reported (as the PyTorch side does).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Items per second of the best of `rounds` timed runs, after one warm-up run.
fn best_rate(items: usize, rounds: usize, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    run()?;
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        run()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(items as f64 / best)
}

/// The reference's synthetic image: pixel(x, y, c) = (7x + 13y + 50c) mod 256, RGB bytes.
fn synthetic_image() -> Vec<u8> {
    let mut out = Vec::with_capacity(IMAGE_SIZE * IMAGE_SIZE * 3);
    for y in 0..IMAGE_SIZE {
        for x in 0..IMAGE_SIZE {
            for c in 0..3 {
                out.push(((7 * x + 13 * y + 50 * c) % 256) as u8);
            }
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    // The heap as the service runs it.
    mmc_runtime::memory::retain_freed_memory();
    let args = Args::parse();
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&args.reference)?)?;
    let get = |k: &str| reference[k].as_f64().with_context(|| format!("reference lacks {k}"));
    let texts: Vec<String> = std::fs::read_to_string(&args.texts)?.lines().map(str::to_string).collect();
    let (text_batch, image_batch, images) = (get("text_batch")? as usize, get("image_batch")? as usize, get("images")? as usize);
    let threads = candle_core::utils::get_num_threads();

    let device = Device::Cpu;
    let encoder = TextEncoder::load(&args.models_dir.join("all-minilm-l6-v2"), "all-minilm-l6-v2", "bundled", 256, &device)?;
    let texts_per_s = best_rate(texts.len(), args.rounds, || {
        for chunk in texts.chunks(text_batch) {
            encoder.embed(chunk)?;
        }
        Ok(())
    })?;

    let classifier = EfficientNetLite0::load_file(&args.models_dir.join("efficientnet-lite0/model.safetensors"), &device)?;
    let batch = vec![synthetic_image(); image_batch];
    let images_per_s = best_rate(images, args.rounds, || {
        for _ in 0..images / image_batch {
            classifier.classify(&batch)?;
        }
        Ok(())
    })?;

    println!(
        "latent service engines vs PyTorch {} (transformers {}), {threads} threads, same weights and inputs:",
        reference["torch"].as_str().unwrap_or("?"),
        reference["transformers"].as_str().unwrap_or("?")
    );
    println!("| workload | ours | PyTorch | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| all-MiniLM-L6-v2, {} texts, batches of {text_batch} | {texts_per_s:.1} texts/s | {:.1} texts/s | {:.2}x | ≥ 1.5x |",
        texts.len(),
        get("texts_per_s")?,
        texts_per_s / get("texts_per_s")?
    );
    println!(
        "| EfficientNet-Lite0, {images} images 224x224, batches of {image_batch} | {images_per_s:.1} images/s | {:.1} images/s | {:.2}x | ≥ 1.5x |",
        get("images_per_s")?,
        images_per_s / get("images_per_s")?
    );
    Ok(())
}
