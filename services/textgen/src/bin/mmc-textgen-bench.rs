//! `mmc-textgen-bench`: prefill and decode speed of our engine on a GGUF, and aggregate
//! throughput with 1, 2 and 4 concurrent streams through the scheduler; with
//! `--reference FILE` (llama.cpp's figures from `tests/scripts/llama_cpp_bench.py`, same
//! GGUF, same thread count, same run) it prints the ratios; with `--json`, one JSON line of
//! the figures instead, for a summary over several runs. `tests/bench/textgen.sh` runs both.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use candle_core::Device;
use clap::Parser;
use mmc_textgen::{
    core::{CoreConfig, Event, TextGenCore},
    engine::{Engine, GenerationParams, OverflowPolicy, Prompt},
};

#[derive(Parser, Debug)]
#[command(name = "mmc-textgen-bench", about = "Text-generation speed, optionally against llama.cpp")]
struct Args {
    /// The GGUF file.
    #[arg(long)]
    gguf: PathBuf,
    /// llama.cpp's figures (JSON from tests/scripts/llama_cpp_bench.py).
    #[arg(long)]
    reference: Option<PathBuf>,
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    decode_tokens: usize,
    /// Print one JSON line of the figures instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    // The heap as the service runs it.
    mmc_runtime::memory::retain_freed_memory();
    let args = Args::parse();
    let engine = Engine::load(&args.gguf, &Device::Cpu, 0, args.prompt_tokens)?;
    let words = engine.tokenizer.encode_plain("The quarterly planning meeting covered budgets, hiring and the launch. ")?;
    let prompt: Vec<u32> = words.iter().cycle().take(args.prompt_tokens).copied().collect();

    let (mut prefill, mut decode) = (0f64, 0f64);
    for _ in 0..3 {
        let mut instance = engine.model.instance()?;
        let t = Instant::now();
        instance.forward(&prompt, 0, &Device::Cpu)?;
        prefill = prefill.max(prompt.len() as f64 / t.elapsed().as_secs_f64());

        let params = GenerationParams { max_tokens: args.decode_tokens + 1, ..Default::default() };
        let prepared = engine.prepare(&Prompt::Raw("1, 2, 3, 4, 5, 6, 7, 8,".into()), OverflowPolicy::Reject)?;
        let mut seq = engine.start(prepared, &params, None, engine.model.instance()?)?;
        seq.step(&engine)?; // prefill + first token
        let t = Instant::now();
        let mut n = 0;
        while n < args.decode_tokens {
            let step = seq.step(&engine)?;
            n += 1;
            if step.finished.is_some() {
                break;
            }
        }
        decode = decode.max(n as f64 / t.elapsed().as_secs_f64());
    }
    drop(engine);

    let rt = tokio::runtime::Runtime::new()?;
    let mut aggregate = Vec::new();
    for streams in [1usize, 2, 4] {
        let core = TextGenCore::new(CoreConfig {
            model_path: args.gguf.clone(),
            model_id: "bench".into(),
            profile: "bench".into(),
            max_sequences: streams,
            queue_capacity: 16,
            max_context: 0,
            prefill_chunk: 256,
            default_max_tokens: 64,
            prefix_cache_entries: 0,
            device: mmc_models::DeviceSpec::Cpu,
        });
        // Best of three rounds, as for prefill and decode above (the machine is shared).
        // Two figures per round: all generated tokens over the whole wall time (prompts
        // included), and the decode phase alone (tokens after each stream's first, over
        // the time from the earliest first token to the latest last one), which is what
        // batching changes; prefilling four prompts is four times the work of one.
        let tps = rt.block_on(async {
            core.load_and_warm_up().await?;
            let (mut best, mut best_decode) = (0f64, 0f64);
            for _ in 0..3 {
                let t = Instant::now();
                let mut tasks = Vec::new();
                for i in 0..streams {
                    let prompt = Prompt::Raw(format!("{}, {}, {}, {}, {},", i + 1, i + 2, i + 3, i + 4, i + 5));
                    let mut rx = core.generate(prompt, GenerationParams { max_tokens: 64, ..Default::default() })?;
                    tasks.push(tokio::spawn(async move {
                        let (mut n, mut first, mut last) = (0usize, None, Instant::now());
                        while let Some(ev) = rx.recv().await {
                            match ev {
                                Event::Token(_) => {
                                    n += 1;
                                    last = Instant::now();
                                    first.get_or_insert(last);
                                }
                                Event::Done(_) => break,
                                Event::Failed(e) => return Err(anyhow::anyhow!(e)),
                            }
                        }
                        Ok((n, first.unwrap_or(last), last))
                    }));
                }
                let (mut total, mut after_first, mut start, mut end) = (0, 0, None::<Instant>, t);
                for task in tasks {
                    let (n, first, last) = task.await??;
                    total += n;
                    after_first += n.saturating_sub(1);
                    start = Some(start.map_or(first, |s| s.min(first)));
                    end = end.max(last);
                }
                best = best.max(total as f64 / t.elapsed().as_secs_f64());
                if let Some(start) = start {
                    best_decode = best_decode.max(after_first as f64 / (end - start).as_secs_f64());
                }
            }
            anyhow::Ok((best, best_decode))
        })?;
        aggregate.push((streams, tps));
    }

    let threads = candle_core::utils::get_num_threads();
    if args.json {
        let aggregate: Vec<serde_json::Value> = aggregate
            .iter()
            .map(|(streams, (tps, decode_tps))| serde_json::json!({ "streams": streams, "tokens_per_s": tps, "decode_tokens_per_s": decode_tps }))
            .collect();
        let line = serde_json::json!({
            "engine": "mmc-textgen",
            "threads": threads,
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s": decode,
            "aggregate": aggregate,
        });
        println!("{line}");
        return Ok(());
    }
    println!("mmc-textgen on {} ({threads} threads)", args.gguf.display());
    println!("  prefill ({} tokens)    {prefill:8.1} tokens/s", args.prompt_tokens);
    println!("  decode  (1 stream)       {decode:8.1} tokens/s");
    for (streams, (tps, decode_tps)) in &aggregate {
        let (one, one_decode) = aggregate[0].1;
        println!(
            "  aggregate, {streams} stream(s)   {tps:8.1} tokens/s  ({:.2}x one stream); decode phase {decode_tps:6.1} tokens/s ({:.2}x)",
            tps / one,
            decode_tps / one_decode
        );
    }
    if let Some(path) = args.reference {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| path.display().to_string())?)?;
        let rp = r["prefill_tokens_per_s"].as_f64().context("reference prefill")?;
        let rd = r["decode_tokens_per_s"].as_f64().context("reference decode")?;
        println!("{} ({} threads)", r["engine"].as_str().unwrap_or("reference"), r["threads"]);
        println!("  prefill                  {rp:8.1} tokens/s   ours/llama.cpp = {:.2}x", prefill / rp);
        println!("  decode  (1 stream)       {rd:8.1} tokens/s   ours/llama.cpp = {:.2}x", decode / rd);
    }
    Ok(())
}
