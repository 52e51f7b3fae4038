//! `mmc bench jobs`: the three user jobs through a running gateway, each timed in total and
//! per stage, with the gateway's own cost of each hop to a model service (the stage's time
//! minus the time the model service reports for the call). `tests/bench/jobs.sh` starts the
//! cluster, loads the store to each size for search, runs every part and draws the plot.
//!
//! Prints one JSON object per measurement (one line each), for the script to gather:
//!
//! ```json
//! {"job": "search", "case": "1000 images, 16 at once", "n": 200, "p50_ms": 9.1, "p95_ms": 14.0,
//!  "rate_per_s": 180.2, "stages": {"embed_query": {"mean_ms": 6.0, "p50_ms": 5.8, "p95_ms": 9.9}},
//!  "hops": {"embed_query": {"mean_ms": 0.4, "p50_ms": 0.3, "p95_ms": 0.9}}}
//! ```
//!
//! Where the answer carries no per-request timings (indexing), the stage means come from
//! the gateway's Prometheus histograms, read before and after (`--gateway-metrics`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use mmc_proto::{
    common::v1::{Image, StageTiming},
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response, search_images_request::Query, summarize_meeting_request,
        summarize_meeting_response, AskMeetingRequest, DescribeImageRequest, IndexImagesRequest, MeetingConfig, SearchImagesRequest,
        SummarizeMeetingRequest,
    },
    speech::v1::TranscribeConfig,
};
use serde_json::{json, Value};
use tokio_stream::StreamExt as _;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the user jobs end to end through a running gateway (see tests/bench/jobs.sh).
    Jobs(JobsArgs),
    /// Call the model services directly: record or compare their outputs, time them (see
    /// tests/bench/gpu.sh, which compares CPU and CUDA).
    Models(crate::bench_models::ModelsArgs),
}

/// One part of the jobs bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Index photos (captions included), then describe some.
    Index,
    /// Search by words at each `--concurrency` (the store's size is the caller's doing).
    Search,
    /// Summarize recordings of each `--minutes`, then ask questions about the last.
    Meeting,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Gateway endpoint.
    #[arg(long, env = "MMC_GATEWAY_ENDPOINT", default_value = "http://127.0.0.1:50055")]
    gateway: String,
    /// The gateway's metrics address (`host:port`), read for the stage means of indexing.
    #[arg(long)]
    gateway_metrics: Option<String>,
    /// What to measure.
    #[arg(long, value_enum)]
    part: Part,
    /// Label of the measurement's case (e.g. the store's size), printed with it.
    #[arg(long, default_value = "")]
    case: String,
    /// Directories of photos to index and describe. Past the distinct photos, copies with
    /// a few bytes after the image's end (same pixels, new content hash) make up the count.
    #[arg(long = "photos", default_values_os_t = [PathBuf::from("models/test-photos"), PathBuf::from("models/retrieval-gallery")])]
    photos: Vec<PathBuf>,
    /// Photos to index.
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Describe calls, one at a time.
    #[arg(long, default_value_t = 20)]
    describes: usize,
    /// Searches per concurrency.
    #[arg(long, default_value_t = 200)]
    searches: usize,
    /// Searches in flight at once, one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    concurrency: Vec<usize>,
    /// Recording lengths to summarize, in minutes (spoken by espeak-ng from the evaluation
    /// set's lines, in order and again from the start).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0f64, 10.0, 45.0])]
    minutes: Vec<f64>,
    /// Questions asked about the last meeting (the evaluation set's, in order).
    #[arg(long, default_value_t = 20)]
    questions: usize,
    /// The meeting evaluation set.
    #[arg(long, default_value = "tests/fixtures/meetings")]
    fixtures: PathBuf,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    let args = match cmd {
        BenchCommand::Jobs(args) => args,
        BenchCommand::Models(args) => return crate::bench_models::run(args).await,
    };
    let channel = crate::cli_client::connect(&args.gateway).await.with_context(|| format!("cannot reach the gateway at {}", args.gateway))?;
    let client = GatewayServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    match args.part {
        Part::Index => index_and_describe(client, &args).await?,
        Part::Search => search(client, &args).await?,
        Part::Meeting => meetings(client, &args).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

type Client = GatewayServiceClient<crate::cli_client::Authed>;

/// The `p` quantile (0..=1) of `values`, nearest rank; 0 when empty.
fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(values: &[f64]) -> Value {
    let mean = if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
    json!({ "mean_ms": mean, "p50_ms": quantile(values, 0.5), "p95_ms": quantile(values, 0.95) })
}

/// Per-stage and per-hop samples gathered from answers' timings.
#[derive(Default)]
struct Stages {
    stages: BTreeMap<String, Vec<f64>>,
    hops: BTreeMap<String, Vec<f64>>,
}

impl Stages {
    fn add(&mut self, timings: &[StageTiming]) {
        for t in timings {
            self.stages.entry(t.stage.clone()).or_default().push(t.duration_ms);
            if t.upstream_ms > 0.0 {
                self.hops.entry(t.stage.clone()).or_default().push((t.duration_ms - t.upstream_ms).max(0.0));
            }
        }
    }

    fn json(&self) -> (Value, Value) {
        let map = |m: &BTreeMap<String, Vec<f64>>| Value::Object(m.iter().map(|(k, v)| (k.clone(), summary(v))).collect());
        (map(&self.stages), map(&self.hops))
    }
}

/// Prints one measurement.
fn report(job: &str, case: String, wall_ms: &[f64], total: Duration, stages: Value, hops: Value, extra: Value) {
    let mut line = json!({
        "job": job,
        "case": case,
        "n": wall_ms.len(),
        "p50_ms": quantile(wall_ms, 0.5),
        "p95_ms": quantile(wall_ms, 0.95),
        "rate_per_s": wall_ms.len() as f64 / total.as_secs_f64().max(1e-9),
        "stages": stages,
        "hops": hops,
    });
    if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
        line.extend(extra);
    }
    println!("{line}");
}

/// The JPEG and PNG files in `dirs`, sorted; an error naming the fetch command when none.
pub(crate) fn photo_files(dirs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
            if ["jpg", "jpeg", "png"].contains(&ext.as_str()) {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no photos in {dirs:?} (run `mmc models fetch --profile test-assets`)");
    }
    Ok(files)
}

/// `count` photos: each file of `dirs` once, then again with `#n` appended after the
/// image's end (decoders stop at the end marker, the content hash differs).
fn photos(dirs: &[PathBuf], count: usize) -> anyhow::Result<Vec<Image>> {
    let files = photo_files(dirs)?;
    let mut images = Vec::with_capacity(count);
    for i in 0..count {
        let path = &files[i % files.len()];
        let mut data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let copy = i / files.len();
        if copy > 0 {
            data.extend_from_slice(format!("#{copy}").as_bytes());
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("photo").to_string();
        images.push(Image { data: data.into(), mime_type: String::new(), source_name: format!("{copy}-{name}") });
    }
    Ok(images)
}

async fn index_and_describe(mut client: Client, args: &JobsArgs) -> anyhow::Result<()> {
    let images = photos(&args.photos, args.images)?;
    let before = match &args.gateway_metrics {
        Some(addr) => Some(scrape(addr)?),
        None => None,
    };
    let started = Instant::now();
    let requests = tokio_stream::iter(images.clone()).map(|image| IndexImagesRequest { image: Some(image), metadata: Default::default() });
    let mut events = client.index_images(requests).await?.into_inner();
    let (mut indexed, mut already) = (0, 0);
    while let Some(event) = events.message().await? {
        match event.event {
            Some(index_images_response::Event::Indexed(i)) if i.already_indexed => already += 1,
            Some(index_images_response::Event::Indexed(_)) => indexed += 1,
            Some(index_images_response::Event::Failure(f)) => bail!("image {} not indexed: {} {}", f.source_name, f.code, f.message),
            _ => {}
        }
    }
    let total = started.elapsed();
    let (stages, hops) = match (&args.gateway_metrics, before) {
        (Some(addr), Some(before)) => {
            let after = scrape(addr)?;
            (
                histogram_means(&before, &after, "mmc_gateway_stage_duration_seconds"),
                histogram_means(&before, &after, "mmc_gateway_hop_overhead_seconds"),
            )
        }
        _ => (json!({}), json!({})),
    };
    let per_image = vec![total.as_secs_f64() * 1e3 / images.len().max(1) as f64; images.len()];
    report("index", format!("{} photos", images.len()), &per_image, total, stages, hops, json!({ "indexed": indexed, "already_indexed": already }));

    let mut wall = Vec::new();
    let mut stages = Stages::default();
    let started = Instant::now();
    for i in 0..args.describes {
        let image = images[i % images.len()].clone();
        let t = Instant::now();
        let described = client.describe_image(DescribeImageRequest { image: Some(image), modes: vec![] }).await?.into_inner();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        stages.add(&described.timings);
    }
    let (s, h) = stages.json();
    report("describe", "one at a time".into(), &wall, started.elapsed(), s, h, json!({}));
    Ok(())
}

const QUERIES: [&str; 10] = [
    "a cat on a sofa",
    "an astronaut in space",
    "a cup of coffee",
    "a red motorcycle",
    "a rocket launch",
    "galaxies in the night sky",
    "a bicycle on the street",
    "a horse in a field",
    "a page of printed text",
    "a robot",
];

async fn search(client: Client, args: &JobsArgs) -> anyhow::Result<()> {
    for &concurrency in &args.concurrency {
        let concurrency = concurrency.max(1);
        let started = Instant::now();
        let workers = (0..concurrency).map(|w| {
            let mut client = client.clone();
            let n = args.searches / concurrency + usize::from(w < args.searches % concurrency);
            async move {
                let mut out = Vec::new();
                for i in 0..n {
                    let text = format!("{} {}", QUERIES[(w + i * concurrency) % QUERIES.len()], i % 7);
                    let request = SearchImagesRequest { query: Some(Query::Text(text)), top_k: 10, ..Default::default() };
                    let t = Instant::now();
                    let response = client.search_images(request).await?.into_inner();
                    out.push((t.elapsed().as_secs_f64() * 1e3, response.timings));
                }
                anyhow::Ok(out)
            }
        });
        let mut wall = Vec::new();
        let mut stages = Stages::default();
        for worker in futures::future::join_all(workers).await {
            for (ms, timings) in worker? {
                wall.push(ms);
                stages.add(&timings);
            }
        }
        let (s, h) = stages.json();
        let case = if args.case.is_empty() { format!("{concurrency} at once") } else { format!("{}, {concurrency} at once", args.case) };
        report("search", case, &wall, started.elapsed(), s, h, json!({ "concurrency": concurrency }));
    }
    Ok(())
}

async fn meetings(mut client: Client, args: &JobsArgs) -> anyhow::Result<()> {
    let set = crate::eval::fixtures::load(&args.fixtures, &[])?;
    let lines: Vec<&str> = set.iter().flat_map(|m| m.lines.iter().map(String::as_str)).collect();
    let questions: Vec<&str> = set.iter().flat_map(|m| m.questions.iter().map(|q| q.q.as_str())).collect();
    anyhow::ensure!(!lines.is_empty(), "no meeting lines in {}", args.fixtures.display());
    let mut last_meeting = None;
    for &minutes in &args.minutes {
        // 150 words a minute and a 0.6 s pause after each line.
        let mut chosen = Vec::new();
        let mut seconds = 0.0;
        while seconds < minutes * 60.0 {
            let line = lines[chosen.len() % lines.len()];
            seconds += line.split_whitespace().count() as f64 / 150.0 * 60.0 + 0.6;
            chosen.push(("en-us", line));
        }
        let audio = crate::speak::speak(&chosen, 150, 600)?.context("espeak-ng is not installed (deploy/setup.sh installs it)")?;
        let audio_s = (audio.len() - 44) as f64 / (22050.0 * 2.0);
        let config = MeetingConfig {
            title: format!("Bench, {minutes} min"),
            transcription: Some(TranscribeConfig { total_bytes: audio.len() as u64, ..Default::default() }),
            ..Default::default()
        };
        let chunks: Vec<Vec<u8>> = audio.chunks(256 * 1024).map(<[u8]>::to_vec).collect();
        let requests = tokio_stream::once(SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::Config(config)) })
            .chain(tokio_stream::iter(chunks).map(|c| SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::AudioChunk(c)) }));
        let started = Instant::now();
        let mut events = client.summarize_meeting(requests).await?.into_inner();
        let mut summary = None;
        while let Some(event) = events.message().await? {
            if let Some(summarize_meeting_response::Event::Summary(s)) = event.event {
                summary = Some(s);
            }
        }
        let total = started.elapsed();
        let summary = summary.context("the meeting stream ended without a summary")?;
        let mut stages = Stages::default();
        stages.add(&summary.timings);
        let (s, h) = stages.json();
        let per_audio_minute = total.as_secs_f64() / (audio_s / 60.0);
        report(
            "meeting",
            format!("{:.1} min of audio", audio_s / 60.0),
            &[total.as_secs_f64() * 1e3],
            total,
            s,
            h,
            json!({ "audio_s": audio_s, "seconds_per_audio_minute": per_audio_minute }),
        );
        last_meeting = Some(summary.meeting_id);
    }
    let Some(meeting_id) = last_meeting else { return Ok(()) };
    let mut wall = Vec::new();
    let started = Instant::now();
    for i in 0..args.questions.min(questions.len().max(1)) {
        let question = questions.get(i).copied().unwrap_or("What was decided?").to_string();
        let t = Instant::now();
        client.ask_meeting(AskMeetingRequest { meeting_id: meeting_id.clone(), question, top_k: 0 }).await?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("ask", "about the last meeting".into(), &wall, started.elapsed(), json!({}), json!({}), json!({}));
    Ok(())
}

/// The Prometheus text of the metrics endpoint `addr` (`host:port`).
fn scrape(addr: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| format!("reading the metrics at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// Per `stage` label of histogram `name`: the mean (ms) of what was recorded between the
/// scrapes `before` and `after` (`_sum` and `_count` differences).
fn histogram_means(before: &str, after: &str, name: &str) -> Value {
    let read = |text: &str, suffix: &str| -> BTreeMap<String, f64> {
        let metric = format!("{name}{suffix}{{");
        text.lines()
            .filter_map(|l| l.strip_prefix(&metric))
            .filter_map(|rest| {
                let (labels, value) = rest.rsplit_once(' ')?;
                let stage = labels.split("stage=\"").nth(1)?.split('"').next()?.to_string();
                Some((stage, value.parse().ok()?))
            })
            .collect()
    };
    let (sum0, count0, sum1, count1) = (read(before, "_sum"), read(before, "_count"), read(after, "_sum"), read(after, "_count"));
    let mut out = serde_json::Map::new();
    for (stage, sum) in &sum1 {
        let count = count1.get(stage).copied().unwrap_or(0.0) - count0.get(stage).copied().unwrap_or(0.0);
        if count > 0.0 {
            let mean_ms = (sum - sum0.get(stage).copied().unwrap_or(0.0)) / count * 1e3;
            out.insert(stage.clone(), json!({ "mean_ms": mean_ms, "calls": count }));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_means_are_differences_of_sum_over_count() {
        let before = "mmc_gateway_stage_duration_seconds_sum{stage=\"caption\",service=\"mmc-gateway\"} 1.0\n\
                      mmc_gateway_stage_duration_seconds_count{stage=\"caption\",service=\"mmc-gateway\"} 2\n";
        let after = "mmc_gateway_stage_duration_seconds_sum{stage=\"caption\",service=\"mmc-gateway\"} 1.5\n\
                     mmc_gateway_stage_duration_seconds_count{stage=\"caption\",service=\"mmc-gateway\"} 7\n\
                     mmc_gateway_stage_duration_seconds_sum{stage=\"encode_image\",service=\"mmc-gateway\"} 0.2\n\
                     mmc_gateway_stage_duration_seconds_count{stage=\"encode_image\",service=\"mmc-gateway\"} 4\n";
        let means = histogram_means(before, after, "mmc_gateway_stage_duration_seconds");
        assert!((means["caption"]["mean_ms"].as_f64().unwrap() - 100.0).abs() < 1e-9, "{means}");
        assert!((means["encode_image"]["mean_ms"].as_f64().unwrap() - 50.0).abs() < 1e-9, "{means}");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn hops_are_stage_time_minus_the_services_own_time() {
        let mut s = Stages::default();
        s.add(&[
            StageTiming { stage: "caption".into(), duration_ms: 40.0, upstream_ms: 39.25 },
            StageTiming { stage: "search".into(), duration_ms: 2.0, upstream_ms: 0.0 },
        ]);
        let (stages, hops) = s.json();
        assert_eq!(stages["search"]["p50_ms"], 2.0);
        assert_eq!(hops["caption"]["p50_ms"], 0.75);
        assert!(hops.get("search").is_none(), "a stage without a model service has no hop: {hops}");
    }
}
