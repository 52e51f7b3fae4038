//! `mmc bench models`: the model services called directly (no gateway), to compare the same
//! services on two devices. `tests/bench/gpu.sh` starts them on `--device cpu`, records
//! their outputs and figures, then starts them on `--device cuda` and compares.
//!
//! For each service given by endpoint it does two things:
//!
//! - **Outputs** on fixed inputs: text and image embeddings, greedy tokens (with their
//!   log-probabilities), a transcript. `--record FILE` writes them; `--compare FILE` checks
//!   them against such a file within the bounds below and prints each check with its
//!   measured value, its bound and whether it held (the exit status is 1 if one did not).
//! - **Throughput** at the given concurrencies, each the median of `--runs` runs:
//!   embeddings/s (texts and images), generated tokens/s, audio seconds/s.
//!
//! Bounds, and why they are not zero:
//!
//! - Embeddings: cosine similarity of each vector with its recorded one >= 0.999. Both
//!   devices compute in f32, but GPU kernels sum in other orders (and cuBLAS may use TF32
//!   where allowed); a real fault (wrong layout, wrong normalisation) gives far lower values.
//! - Greedy tokens: on CPU the text-generation engine re-quantises slow weight types to Q8_0
//!   and runs its own llama pass; on CUDA candle's kernels run the GGUF's types as stored.
//!   The arithmetic differs, so a near tie between two tokens may go either way and the
//!   texts part from there. The check: for at least 3 prompts in 4, the first 16 tokens
//!   (or all, if fewer were generated) are the same; and over the shared tokens the mean
//!   absolute difference of their log-probabilities is <= 0.25 nats.
//! - Transcript: word error rate of one device's text against the other's <= 2%. The
//!   CPU build runs whisper.cpp with our encoder kernels (bf16 AMX where present), the CUDA
//!   build runs ggml's CUDA kernels (f16): the decoder's choices may differ on a rare word.
//!
//! Prints one JSON object per line: `{"check": ...}` and `{"figure": ...}` lines.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::Args;
use mmc_proto::{
    common::v1::Image,
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedImageRequest, EmbedTextRequest},
    speech::v1::{speech_service_client::SpeechServiceClient, transcribe_request, transcribe_response, TranscribeConfig, TranscribeRequest},
    textgen::v1::{
        generate_response, text_gen_service_client::TextGenServiceClient, ChatMessage, ChatRequest, GenerationOptions, Role, SamplingParams,
    },
};
use serde_json::{json, Value};
use tokio_stream::StreamExt as _;

use crate::cli_client::Authed;

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// The embedding service's endpoint (texts and images).
    #[arg(long)]
    embed: Option<String>,
    /// The text-generation service's endpoint.
    #[arg(long)]
    textgen: Option<String>,
    /// The speech service's endpoint.
    #[arg(long)]
    speech: Option<String>,
    /// Label printed with every line (e.g. the device).
    #[arg(long, default_value = "")]
    label: String,
    /// Write the outputs on the fixed inputs to this JSON file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Compare the outputs with this file (written by `--record`); exit 1 if a check fails.
    #[arg(long, conflicts_with = "record")]
    compare: Option<PathBuf>,
    /// Photos for the image embeddings (JPEG or PNG files in this directory).
    #[arg(long, default_value = "models/test-photos")]
    photos: PathBuf,
    /// A recording for the speech service (any format it reads).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Runs per figure; the median is printed with the range.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Requests in flight at once for the embedding figures.
    #[arg(long, default_value_t = 4)]
    embed_concurrency: usize,
    /// Requests per embedding figure (texts: 32 per request; images: 8 per request).
    #[arg(long, default_value_t = 16)]
    embed_requests: usize,
    /// Streams generating at once, one figure each.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    streams: Vec<usize>,
    /// Tokens per stream for the generation figures (and at most this many for the check).
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Recordings transcribed at once, one figure each.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    speech_streams: Vec<usize>,
    /// Skip the throughput figures (outputs only).
    #[arg(long)]
    no_figures: bool,
}

/// Texts for the embedding check and figures: short and long, several topics.
const TEXTS: [&str; 8] = [
    "a dog running on the beach at sunset",
    "Quarterly revenue grew by twelve percent, driven by the new subscription plans.",
    "How do I reset my password if I no longer have access to my email?",
    "two people riding bicycles through a city street in the rain",
    "The committee agreed to postpone the vote until the budget review in March.",
    "a bowl of fresh fruit on a wooden kitchen table",
    "Whisper is a speech recognition model trained on 680,000 hours of audio.",
    "snow-covered mountains reflected in a calm lake",
];

/// Prompts for the greedy-token check and the generation figures.
const PROMPTS: [&str; 4] = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain, step by step, how a bicycle's gears make climbing a hill easier.",
    "List ten ideas for a team meeting agenda, with one sentence on each.",
    "Describe the water cycle to a ten-year-old, in detail.",
];

/// Tokens of each prompt that must agree (see the module docs).
const SHARED_TOKENS: usize = 16;

pub async fn run(args: ModelsArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.embed.is_none() && args.textgen.is_none() && args.speech.is_none() {
        bail!("name at least one service: --embed, --textgen or --speech");
    }
    if args.speech.is_some() && args.audio.is_none() {
        bail!("--speech needs --audio FILE");
    }
    let reference: Option<Value> = match &args.compare {
        Some(path) => Some(serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?),
        None => None,
    };
    let mut checks = Checks { label: args.label.clone(), failed: 0 };
    let mut outputs = serde_json::Map::new();
    if let Some(endpoint) = &args.embed {
        let client = EmbedServiceClient::new(connect(endpoint, "embedding").await?).max_decoding_message_size(64 << 20);
        let photos = photo_images(&args.photos)?;
        let out = embed_outputs(client.clone(), photos.clone()).await?;
        if let Some(r) = section(&mut checks, &reference, "embed") {
            compare_embeddings(&mut checks, r, &out);
        }
        outputs.insert("embed".into(), out);
        if !args.no_figures {
            embed_figures(client, &photos, &args).await?;
        }
    }
    if let Some(endpoint) = &args.textgen {
        let client = TextGenServiceClient::new(connect(endpoint, "text-generation").await?);
        let out = greedy_outputs(client.clone(), args.max_tokens.min(64)).await?;
        if let Some(r) = section(&mut checks, &reference, "textgen") {
            compare_tokens(&mut checks, r, &out);
        }
        outputs.insert("textgen".into(), out);
        if !args.no_figures {
            for &streams in &args.streams {
                figure(&args, "textgen", "tokens_per_s", &format!("streams: {streams}, tokens each: {}", args.max_tokens), || {
                    generate_at_once(client.clone(), streams, args.max_tokens)
                })
                .await?;
            }
        }
    }
    if let (Some(endpoint), Some(audio)) = (&args.speech, &args.audio) {
        let client = SpeechServiceClient::new(connect(endpoint, "speech").await?);
        let bytes: Arc<[u8]> = std::fs::read(audio).with_context(|| format!("reading {}", audio.display()))?.into();
        let (text, _) = transcribe(client.clone(), bytes.clone()).await?;
        let out = json!({ "text": text });
        if let Some(r) = section(&mut checks, &reference, "speech") {
            compare_transcripts(&mut checks, r, &out);
        }
        outputs.insert("speech".into(), out);
        if !args.no_figures {
            for &streams in &args.speech_streams {
                figure(&args, "speech", "audio_s_per_s", &format!("recordings at once: {streams}"), || {
                    transcribe_at_once(client.clone(), bytes.clone(), streams)
                })
                .await?;
            }
        }
    }
    if let Some(path) = &args.record {
        outputs.insert("label".into(), json!(args.label));
        std::fs::write(path, serde_json::to_vec(&Value::Object(outputs))?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if checks.failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

async fn connect(endpoint: &str, what: &str) -> anyhow::Result<Authed> {
    crate::cli_client::connect(endpoint).await.with_context(|| format!("cannot reach the {what} service at {endpoint}"))
}

/// Prints the checks and counts the failures.
struct Checks {
    label: String,
    failed: usize,
}

impl Checks {
    fn report(&mut self, service: &str, check: &str, value: f64, bound: &str, held: bool) {
        self.failed += usize::from(!held);
        println!("{}", json!({ "check": check, "service": service, "label": self.label, "value": value, "bound": bound, "held": held }));
    }
}

/// The reference's outputs of `service` when comparing; a reference without them fails a
/// check (a comparison that silently skipped a service would prove nothing).
fn section<'a>(checks: &mut Checks, reference: &'a Option<Value>, service: &str) -> Option<&'a Value> {
    let reference = reference.as_ref()?;
    let found = reference.get(service);
    if found.is_none() {
        checks.report(service, "reference_has_outputs", 0.0, "present", false);
    }
    found
}

/// Runs `measure` (which returns a count of units and its wall time) `--runs` times and
/// prints the median rate with the range.
async fn figure<F, Fut>(args: &ModelsArgs, service: &str, name: &str, case: &str, mut measure: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(f64, Duration)>>,
{
    let mut rates = Vec::with_capacity(args.runs.max(1));
    for _ in 0..args.runs.max(1) {
        let (units, wall) = measure().await?;
        rates.push(units / wall.as_secs_f64().max(1e-9));
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{}",
        json!({ "figure": name, "service": service, "case": case, "label": args.label, "median": median, "min": rates[0], "max": rates[rates.len() - 1], "runs": rates.len() })
    );
    Ok(())
}

// ---- embeddings ----

type EmbedClient = EmbedServiceClient<Authed>;

/// Each photo of `dir` once, named by its file name.
fn photo_images(dir: &std::path::Path) -> anyhow::Result<Vec<Image>> {
    crate::bench::photo_files(&[dir.to_path_buf()])?
        .iter()
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("photo").to_string();
            Ok(Image {
                data: std::fs::read(p).with_context(|| format!("reading {}", p.display()))?.into(),
                mime_type: String::new(),
                source_name: name,
            })
        })
        .collect()
}

async fn embed_outputs(mut client: EmbedClient, photos: Vec<Image>) -> anyhow::Result<Value> {
    let texts =
        client.embed_text(EmbedTextRequest { texts: TEXTS.iter().map(|t| t.to_string()).collect(), reject_overlong: false }).await?.into_inner();
    let names: Vec<String> = photos.iter().map(|p| p.source_name.clone()).collect();
    let images = client.embed_image(EmbedImageRequest { images: photos }).await?.into_inner();
    Ok(json!({
        "texts": texts.embeddings.iter().map(|e| e.values.clone()).collect::<Vec<_>>(),
        "images": names.iter().zip(&images.embeddings).map(|(n, e)| (n.clone(), json!(e.values))).collect::<serde_json::Map<_, _>>(),
    }))
}

fn vectors(v: &Value) -> Vec<(String, Vec<f32>)> {
    let as_vec = |x: &Value| x.as_array().map(|a| a.iter().filter_map(Value::as_f64).map(|f| f as f32).collect()).unwrap_or_default();
    let mut out: Vec<(String, Vec<f32>)> =
        v["texts"].as_array().into_iter().flatten().enumerate().map(|(i, x)| (format!("text {i}"), as_vec(x))).collect();
    if let Some(images) = v["images"].as_object() {
        out.extend(images.iter().map(|(k, x)| (k.clone(), as_vec(x))));
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

fn compare_embeddings(checks: &mut Checks, reference: &Value, ours: &Value) {
    let (r, o) = (vectors(reference), vectors(ours));
    let same_inputs = r.len() == o.len() && r.iter().zip(&o).all(|(a, b)| a.0 == b.0);
    let worst = if same_inputs { r.iter().zip(&o).map(|(a, b)| cosine(&a.1, &b.1)).fold(f64::INFINITY, f64::min) } else { 0.0 };
    checks.report("embed", "embedding_min_cosine", worst, ">= 0.999", same_inputs && worst >= 0.999);
}

async fn embed_figures(client: EmbedClient, photos: &[Image], args: &ModelsArgs) -> anyhow::Result<()> {
    let texts: Vec<String> = (0..32).map(|i| format!("{} ({i})", TEXTS[i % TEXTS.len()])).collect();
    let images: Vec<Image> = (0..8).map(|i| photos[i % photos.len()].clone()).collect();
    let (requests, concurrency) = (args.embed_requests.max(1), args.embed_concurrency.max(1));
    let case = |unit: &str, per: usize| format!("{per} {unit} per request, {concurrency} requests at once");
    figure(args, "embed", "texts_per_s", &case("texts", 32), || {
        let (client, texts) = (client.clone(), texts.clone());
        at_once(requests, concurrency, move |_| {
            let (mut client, texts) = (client.clone(), texts.clone());
            async move {
                let n = texts.len();
                client.embed_text(EmbedTextRequest { texts, reject_overlong: false }).await?;
                Ok(n as f64)
            }
        })
    })
    .await?;
    figure(args, "embed", "images_per_s", &case("images", images.len()), || {
        let (client, images) = (client.clone(), images.clone());
        at_once(requests, concurrency, move |_| {
            let (mut client, images) = (client.clone(), images.clone());
            async move {
                let n = images.len();
                client.embed_image(EmbedImageRequest { images }).await?;
                Ok(n as f64)
            }
        })
    })
    .await
}

/// Runs `total` calls of `call`, `concurrency` in flight at once; returns the units they
/// report and the wall time.
async fn at_once<F, Fut>(total: usize, concurrency: usize, call: F) -> anyhow::Result<(f64, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let start = Instant::now();
    let calls = futures::StreamExt::map(futures::stream::iter(0..total), call);
    let results: Vec<anyhow::Result<f64>> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(calls, concurrency.max(1))).await;
    let mut units = 0.0;
    for r in results {
        units += r?;
    }
    Ok((units, start.elapsed()))
}

// ---- text generation ----

type TextGenClient = TextGenServiceClient<Authed>;

/// One greedy answer to `prompt` as a user's chat turn (the model's template applied):
/// (token ids, their log-probabilities).
async fn generate(mut client: TextGenClient, prompt: String, max_tokens: u32) -> anyhow::Result<(Vec<u32>, Vec<f32>)> {
    let options = GenerationOptions { sampling: Some(SamplingParams { temperature: 0.0, ..Default::default() }), max_tokens, ..Default::default() };
    let messages = vec![ChatMessage { role: Role::User.into(), content: prompt }];
    let mut stream = client.chat(ChatRequest { messages, options: Some(options) }).await?.into_inner();
    let (mut ids, mut logprobs) = (Vec::new(), Vec::new());
    while let Some(message) = stream.next().await {
        if let Some(generate_response::Event::Token(t)) = message?.event {
            ids.push(t.token_id);
            logprobs.push(t.logprob);
        }
    }
    Ok((ids, logprobs))
}

async fn greedy_outputs(client: TextGenClient, max_tokens: u32) -> anyhow::Result<Value> {
    let mut prompts = Vec::new();
    for prompt in PROMPTS {
        let (ids, logprobs) = generate(client.clone(), prompt.to_string(), max_tokens).await?;
        prompts.push(json!({ "prompt": prompt, "tokens": ids, "logprobs": logprobs }));
    }
    Ok(json!({ "prompts": prompts }))
}

fn compare_tokens(checks: &mut Checks, reference: &Value, ours: &Value) {
    let list = |v: &Value| v["prompts"].as_array().cloned().unwrap_or_default();
    let (r, o) = (list(reference), list(ours));
    let numbers = |v: &Value, key: &str| v[key].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<f64>>()).unwrap_or_default();
    let (mut agreeing, mut diffs) = (0usize, Vec::new());
    for (a, b) in r.iter().zip(&o) {
        let (ta, tb) = (numbers(a, "tokens"), numbers(b, "tokens"));
        let shared = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
        if shared >= SHARED_TOKENS.min(ta.len()).min(tb.len()).max(1) || (ta.is_empty() && tb.is_empty()) {
            agreeing += 1;
        }
        let (la, lb) = (numbers(a, "logprobs"), numbers(b, "logprobs"));
        diffs.extend(la.iter().zip(&lb).take(shared).map(|(x, y)| (x - y).abs()));
    }
    let n = r.len().min(o.len());
    let fraction = if n == 0 || r.len() != o.len() { 0.0 } else { agreeing as f64 / n as f64 };
    checks.report("textgen", "prompts_sharing_first_16_greedy_tokens", fraction, ">= 0.75", fraction >= 0.75);
    let mean = if diffs.is_empty() { f64::INFINITY } else { diffs.iter().sum::<f64>() / diffs.len() as f64 };
    checks.report("textgen", "shared_tokens_mean_abs_logprob_diff", mean, "<= 0.25", mean <= 0.25);
}

/// `streams` generations at once, each of up to `max_tokens`; units are generated tokens.
async fn generate_at_once(client: TextGenClient, streams: usize, max_tokens: u32) -> anyhow::Result<(f64, Duration)> {
    at_once(streams, streams, move |i| {
        let client = client.clone();
        // A distinct prompt per stream (no shared prefix cache between them).
        let prompt = format!("{} (Version {}.)", PROMPTS[i % PROMPTS.len()], i + 1);
        async move { Ok(generate(client, prompt, max_tokens).await?.0.len() as f64) }
    })
    .await
}

// ---- speech ----

type SpeechClient = SpeechServiceClient<Authed>;

/// The transcript of `audio` and the recording's length in seconds.
async fn transcribe(mut client: SpeechClient, audio: Arc<[u8]>) -> anyhow::Result<(String, f64)> {
    let config = TranscribeConfig { language: "en".into(), total_bytes: audio.len() as u64, ..Default::default() };
    let chunks: Vec<TranscribeRequest> = std::iter::once(transcribe_request::Payload::Config(config))
        .chain(audio.chunks(1 << 20).map(|c| transcribe_request::Payload::AudioChunk(c.to_vec())))
        .map(|p| TranscribeRequest { payload: Some(p) })
        .collect();
    let mut stream = client.transcribe(tokio_stream::iter(chunks)).await?.into_inner();
    while let Some(message) = stream.next().await {
        if let Some(transcribe_response::Event::Result(r)) = message?.event {
            return Ok((r.text, r.audio_duration_ms as f64 / 1000.0));
        }
    }
    bail!("the speech service ended the stream without a result")
}

fn compare_transcripts(checks: &mut Checks, reference: &Value, ours: &Value) {
    let (errors, words) = mmc_text::word_errors(reference["text"].as_str().unwrap_or_default(), ours["text"].as_str().unwrap_or_default());
    let rate = if words == 0 { 1.0 } else { errors as f64 / words as f64 };
    checks.report("speech", "transcript_word_error_rate_vs_reference", rate, "<= 0.02", words > 0 && rate <= 0.02);
}

/// `streams` transcriptions of `audio` at once; units are seconds of audio.
async fn transcribe_at_once(client: SpeechClient, audio: Arc<[u8]>, streams: usize) -> anyhow::Result<(f64, Duration)> {
    at_once(streams, streams, move |_| {
        let (client, audio) = (client.clone(), audio.clone());
        async move { Ok(transcribe(client, audio).await?.1) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Checks {
        Checks { label: "test".into(), failed: 0 }
    }

    #[test]
    fn embeddings_pass_when_close_and_fail_when_one_vector_is_off() {
        let reference = json!({ "texts": [[0.6, 0.8], [1.0, 0.0]], "images": { "a.jpg": [0.0, 1.0] } });
        let mut c = checks();
        compare_embeddings(&mut c, &reference, &json!({ "texts": [[0.6001, 0.7999], [1.0, 0.0]], "images": { "a.jpg": [0.0, 1.0] } }));
        assert_eq!(c.failed, 0);
        // One image vector turned by ~6 degrees: cosine 0.995 < 0.999.
        compare_embeddings(&mut c, &reference, &json!({ "texts": [[0.6, 0.8], [1.0, 0.0]], "images": { "a.jpg": [0.1, 0.995] } }));
        assert_eq!(c.failed, 1);
        // Different inputs (a photo missing) cannot pass.
        compare_embeddings(&mut c, &reference, &json!({ "texts": [[0.6, 0.8], [1.0, 0.0]], "images": {} }));
        assert_eq!(c.failed, 2);
    }

    fn prompts(tokens: &[&[u32]], logprob: f32) -> Value {
        json!({ "prompts": tokens.iter().map(|t| json!({ "tokens": t, "logprobs": vec![logprob; t.len()] })).collect::<Vec<_>>() })
    }

    #[test]
    fn greedy_tokens_may_part_late_but_not_early() {
        let long: Vec<u32> = (0..40).collect();
        let late: Vec<u32> = (0..20).chain(100..120).collect(); // parts after 20 tokens
        let early: Vec<u32> = (0..3).chain(100..137).collect(); // parts after 3
        let reference = prompts(&[&long, &long, &long, &long], -0.5);
        let mut c = checks();
        compare_tokens(&mut c, &reference, &prompts(&[&long, &late, &late, &long], -0.6));
        assert_eq!(c.failed, 0, "late partings and small log-probability differences pass");
        compare_tokens(&mut c, &reference, &prompts(&[&long, &early, &early, &long], -0.5));
        assert_eq!(c.failed, 1, "two prompts in four parting early fail");
        compare_tokens(&mut c, &reference, &prompts(&[&long, &long, &long, &long], -1.5));
        assert_eq!(c.failed, 2, "the same tokens with log-probabilities 1 nat apart fail");
    }

    #[test]
    fn a_reference_without_a_services_outputs_fails() {
        let mut c = checks();
        assert!(section(&mut c, &None, "speech").is_none(), "recording, not comparing");
        assert_eq!(c.failed, 0);
        let reference = Some(json!({ "embed": {} }));
        assert!(section(&mut c, &reference, "embed").is_some());
        assert!(section(&mut c, &reference, "speech").is_none());
        assert_eq!(c.failed, 1);
    }

    #[test]
    fn transcripts_allow_a_rare_word_only() {
        let reference = json!({ "text": "one two three four five six seven eight nine ten ".repeat(10) });
        let mut c = checks();
        let one_word = reference["text"].as_str().unwrap().replacen("seven", "heaven", 1);
        compare_transcripts(&mut c, &reference, &json!({ "text": one_word }));
        assert_eq!(c.failed, 0, "1 word in 100");
        let five = reference["text"].as_str().unwrap().replacen("seven", "heaven", 5);
        compare_transcripts(&mut c, &reference, &json!({ "text": five }));
        assert_eq!(c.failed, 1, "5 words in 100");
        compare_transcripts(&mut c, &json!({ "text": "" }), &json!({ "text": "" }));
        assert_eq!(c.failed, 2, "an empty reference proves nothing");
    }
}
