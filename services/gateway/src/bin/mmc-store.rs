//! `mmc-store`: the gateway's stores from the command line (`mmc db …` runs it).
//!
//!     mmc-store migrate --store postgres://…          # apply the schema ahead of a rollout
//!     mmc-store copy --from redb:data --to postgres://…   # move everything, no model runs
//!     mmc-store bench [--store postgres://…] 10000 100000 # tests/bench/store.sh runs it
//!     mmc-store fill --store redb:data --count 10000      # tests/bench/jobs.sh runs it

use std::{collections::BTreeMap, io::Write as _, sync::Arc, time::Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mmc_gateway::store::{copy::copy, postgres, Fusion, ImageRecord, ImageStore, ImageVectors, Location, SearchIndex, SearchQuery, Space, Stores};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(name = "mmc-store", version, about = "Migrate, copy and measure the gateway's stores.")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Applies the PostgreSQL schema's migrations (the gateway also does at start).
    Migrate {
        /// The database: postgres://USER:PASSWORD@HOST/DB.
        #[arg(long, env = "MMC_STORE_URL", hide_env_values = true)]
        store: String,
    },
    /// Copies images (records, vectors, captions, thumbnails) and meetings from one store
    /// into another without running any model. Resumable: run it again to finish an
    /// interrupted copy (what the target holds is skipped).
    Copy {
        /// Source: `redb:DIR` (a gateway's --data-dir) or `postgres://…`.
        #[arg(long)]
        from: String,
        /// Target, as `--from`.
        #[arg(long)]
        to: String,
        /// How the target's gateways will search (their `--search-index`): with `scan`, a
        /// PostgreSQL target gets no HNSW index at the end of the copy (the gateways' codes
        /// replace it; at a million images its build takes an hour on two cores).
        #[arg(long, env = "MMC_SEARCH_INDEX", default_value_t = SearchIndex::Graph)]
        search_index: SearchIndex,
    },
    /// Measures a store on random unit vectors of the bundled space's shape (384
    /// dimensions, two per image), loaded up to each size in turn.
    Bench {
        /// The store to fill: `postgres://…` (an empty scratch database: the bench writes
        /// to it) or empty for an embedded store in a temporary directory.
        #[arg(long, default_value = "")]
        store: String,
        /// Searches per measurement.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// How the vectors are drawn.
        #[arg(long, value_enum, default_value_t = Data::Random)]
        data: Data,
        /// Search breadths to measure recall and latency at (the gateway's
        /// `--search-breadth`), e.g. `400,800,1600`: one row each per size.
        #[arg(long, value_delimiter = ',', default_values_t = [mmc_gateway::store::DEFAULT_SEARCH_BREADTH])]
        breadth: Vec<usize>,
        /// How the store searches (the gateway's `--search-index`): graph or scan.
        #[arg(long, default_value_t = SearchIndex::Graph)]
        index: SearchIndex,
        /// Vectors from a file instead of `--data`: your own embeddings, little-endian f32,
        /// 384 per vector. Image i is vectors 2i (image) and 2i+1 (caption); the last
        /// `--queries` vectors are the queries and are never loaded as images.
        #[arg(long)]
        vectors: Option<std::path::PathBuf>,
        /// Index sizes, ascending.
        #[arg(default_values_t = [10_000, 100_000])]
        sizes: Vec<usize>,
    },
    /// Adds images of random unit vectors in the store's own embedding space (two per
    /// image) until it holds `--count`: a library of a given size for measuring search
    /// through the gateway, or for timing `copy`. The space is the one the store recorded
    /// (an indexed image fixes it), else `--dimensions`. No gateway may have it open.
    Fill {
        /// `redb:DIR` (a gateway's --data-dir) or `postgres://…`.
        #[arg(long)]
        store: String,
        /// Images the store holds afterwards.
        #[arg(long)]
        count: u64,
        /// For a store without a space yet: the vectors' dimensions (model id "bench").
        #[arg(long)]
        dimensions: Option<u32>,
    },
}

fn location(s: &str) -> anyhow::Result<Location> {
    let location = Location::parse(s, std::path::Path::new(""));
    match &location {
        Location::Embedded(dir) if dir.as_os_str().is_empty() => anyhow::bail!("{s:?}: give redb:DIR or postgres://…"),
        _ => Ok(location),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The stores log the cause of a failure (a refused certificate, a reset connection)
    // and return a short error; on the command line the log is where it shows.
    let _telemetry = mmc_runtime::telemetry::init_with("store", mmc_runtime::config::LogFormat::Text, None)?;
    match args.command {
        Command::Migrate { store } => {
            let pool = postgres::connect(&store)?;
            postgres::migrate(&pool).await.with_context(|| format!("migrating {}", postgres::redact(&store)))?;
            println!("{}: schema up to date", postgres::redact(&store));
        }
        Command::Copy { from, to, search_index } => {
            let (from, to) = (location(&from)?, location(&to)?);
            anyhow::ensure!(from != to, "--from and --to are the same store");
            let source = Stores::open(&from).await.with_context(|| format!("opening {}", from.redacted()))?;
            let target = Stores::open_with(&to, search_index).await.with_context(|| format!("opening {}", to.redacted()))?;
            let started = Instant::now();
            let done = copy(&source, &target, |p| {
                let images = p.images_copied + p.images_skipped;
                let percent = (images * 100).checked_div(p.images_total).unwrap_or(100);
                eprint!(
                    "\rimages {images}/{} ({percent}%, {} already there), meetings {}/{}   ",
                    p.images_total,
                    p.images_skipped,
                    p.meetings_copied + p.meetings_skipped,
                    p.meetings_total
                );
                let _ = std::io::stderr().flush();
            })
            .await?;
            eprintln!();
            println!(
                "copied {} images and {} meetings from {} to {} in {:.1} s ({} images and {} meetings were there already)",
                done.images_copied,
                done.meetings_copied,
                from.redacted(),
                to.redacted(),
                started.elapsed().as_secs_f64(),
                done.images_skipped,
                done.meetings_skipped
            );
        }
        Command::Bench { store, queries, data, breadth, index, vectors, sizes } => {
            let draw = match &vectors {
                Some(path) => Draw::from_file(path, queries).with_context(|| format!("reading {}", path.display()))?,
                None => Draw::new(data, 7),
            };
            bench(&store, queries, draw, &breadth, index, &sizes).await?
        }
        Command::Fill { store, count, dimensions } => fill(&store, count, dimensions).await?,
    }
    Ok(())
}

const DIMS: usize = 384;

fn unit(rng: &mut rand::rngs::StdRng, dims: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// The benchmark's vectors.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Data {
    /// Independent unit vectors: no structure at all, approximate search's worst case
    /// (every point about equally far from every other).
    Random,
    /// Photos of 1 000 subjects: each image vector near one of 1 000 random centres
    /// (cosine about 0.8), its caption vector near the image's (about 0.9), queries near
    /// a centre. Real embeddings have such structure (far fewer effective dimensions than
    /// 384); a stand-in for them, not a measurement of them.
    Clustered,
}

/// Draws vectors as [`Data`] says, or reads them from a file.
struct Draw {
    rng: rand::rngs::StdRng,
    centres: Vec<Vec<f32>>,
    file: Option<FileVectors>,
    /// What the vectors are, for the report.
    about: String,
}

/// Vectors read from a file (see `bench --vectors`).
struct FileVectors {
    images: Vec<ImageVectors>,
    queries: Vec<Vec<f32>>,
    next_image: usize,
    next_query: usize,
}

impl Draw {
    fn new(data: Data, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let centres = match data {
            Data::Random => vec![],
            Data::Clustered => (0..1000).map(|_| unit(&mut rng, DIMS)).collect(),
        };
        let about = match data {
            Data::Random => "random unit vectors",
            Data::Clustered => "clustered vectors (1 000 centres)",
        };
        Self { rng, centres, file: None, about: about.into() }
    }

    fn from_file(path: &std::path::Path, queries: usize) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)?;
        anyhow::ensure!(bytes.len() % (4 * DIMS) == 0, "{} bytes is not a whole number of {DIMS}-float vectors", bytes.len());
        let mut vectors: Vec<Vec<f32>> = mmc_gateway::store::bytes_to_vectors(&bytes, DIMS);
        anyhow::ensure!(vectors.len() > queries + 1, "{} vectors: fewer than --queries ({queries}) and one image", vectors.len());
        let queries = vectors.split_off(vectors.len() - queries);
        let images = vectors.chunks_exact(2).map(|pair| ImageVectors { image: pair[0].clone(), caption: pair[1].clone() }).collect();
        let file = FileVectors { images, queries, next_image: 0, next_query: 0 };
        let about = format!("vectors of {}", path.display());
        Ok(Self { rng: rand::rngs::StdRng::seed_from_u64(7), centres: vec![], file: Some(file), about })
    }

    /// Images the file holds (`None`: drawn without end).
    fn capacity(&self) -> Option<usize> {
        self.file.as_ref().map(|f| f.images.len())
    }

    /// `v` plus Gaussian noise of `sigma` per dimension, normalized: cosine to `v` about
    /// `1 / sqrt(1 + sigma² · DIMS)`.
    fn near(&mut self, v: &[f32], sigma: f32) -> Vec<f32> {
        let noisy: Vec<f32> = v.iter().map(|x| x + sigma * gaussian(&mut self.rng)).collect();
        let norm = noisy.iter().map(|x| x * x).sum::<f32>().sqrt();
        noisy.into_iter().map(|x| x / norm).collect()
    }

    fn centre(&mut self) -> Vec<f32> {
        let i = self.rng.random_range(0..self.centres.len());
        self.centres[i].clone()
    }

    fn image(&mut self) -> ImageVectors {
        if let Some(file) = &mut self.file {
            // `bench` checks the file holds enough before it starts.
            file.next_image += 1;
            return file.images[file.next_image - 1].clone();
        }
        if self.centres.is_empty() {
            return ImageVectors { image: unit(&mut self.rng, DIMS), caption: unit(&mut self.rng, DIMS) };
        }
        let centre = self.centre();
        let image = self.near(&centre, 0.038);
        let caption = self.near(&image, 0.025);
        ImageVectors { image, caption }
    }

    fn query(&mut self) -> Vec<f32> {
        if let Some(file) = &mut self.file {
            // The same queries again at each size.
            file.next_query += 1;
            return file.queries[(file.next_query - 1) % file.queries.len()].clone();
        }
        if self.centres.is_empty() {
            return unit(&mut self.rng, DIMS);
        }
        let centre = self.centre();
        self.near(&centre, 0.038)
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut rand::rngs::StdRng) -> f32 {
    let (u, v) = (rng.random::<f32>().max(f32::MIN_POSITIVE), rng.random::<f32>());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn record(i: usize) -> ImageRecord {
    ImageRecord {
        image_id: format!("img-{i:08}"),
        content_hash: format!("{i:064x}"),
        source_name: format!("photo-{i}.jpg"),
        caption: "A tabby cat on a sofa.".into(),
        labels: vec![],
        metadata: BTreeMap::from([("album".to_string(), (i % 10).to_string())]),
        models: vec![],
        indexed_at_unix_ms: 0,
        seq: 0,
        review: Default::default(),
    }
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    sorted_ms[((sorted_ms.len() - 1) as f64 * p).round() as usize]
}

fn query(vector: Vec<f32>, space: &Space, breadth: usize) -> SearchQuery {
    SearchQuery {
        vector,
        space: space.clone(),
        top_k: 10,
        score_threshold: -1.0,
        metadata_filter: BTreeMap::new(),
        fusion: Fusion { image_weight: 0.5 },
        breadth: Some(breadth),
    }
}

/// The exact top 10 ids for `q` over `all` (the recall reference).
fn exact_top10(all: &[(String, ImageVectors)], q: &[f32]) -> Vec<String> {
    let mut scored: Vec<(f32, &String)> =
        all.iter().map(|(id, v)| (0.5 * mmc_gateway::store::dot(q, &v.image) + 0.5 * mmc_gateway::store::dot(q, &v.caption), id)).collect();
    scored.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(10);
    scored.into_iter().map(|(_, id)| id.clone()).collect()
}

/// Latencies (ms, sorted) of `queries` searches at `concurrency`.
async fn latencies(store: &Arc<dyn ImageStore>, space: &Space, queries: &[Vec<f32>], breadth: usize, concurrency: usize) -> anyhow::Result<Vec<f64>> {
    let chunks: Vec<Vec<Vec<f32>>> = queries.chunks(queries.len().div_ceil(concurrency)).map(<[_]>::to_vec).collect();
    let tasks = chunks.into_iter().map(|chunk| {
        let (store, space) = (store.clone(), space.clone());
        tokio::spawn(async move {
            let mut ms = Vec::new();
            for q in chunk {
                let started = Instant::now();
                store.search(query(q, &space, breadth)).await?;
                ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(ms)
        })
    });
    let mut all = Vec::new();
    for task in futures::future::join_all(tasks).await {
        all.extend(task??);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

async fn fill(store: &str, count: u64, dimensions: Option<u32>) -> anyhow::Result<()> {
    let location = location(store)?;
    let images = Stores::open(&location).await.with_context(|| format!("opening {}", location.redacted()))?.images;
    let space = match (images.space().await?, dimensions) {
        (Some(space), _) => space,
        (None, Some(dimensions)) => Space { model_id: "bench".into(), dimensions },
        (None, None) => anyhow::bail!("{} holds no image yet: index one first (it fixes the space), or give --dimensions", location.redacted()),
    };
    let dims = space.dimensions as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let started = Instant::now();
    let mut held = images.count().await?;
    let first = held;
    // One bulk load: the embedded graph or the PostgreSQL index is built once at the end.
    images.begin_bulk_load().await?;
    while held < count {
        let batch: Vec<(ImageRecord, ImageVectors)> = (held..count.min(held + 2_000))
            .map(|i| {
                let vectors = ImageVectors { image: unit(&mut rng, dims), caption: unit(&mut rng, dims) };
                (record(1_000_000_000 + i as usize), vectors)
            })
            .collect();
        held += batch.len() as u64;
        images.insert_many(batch, space.clone()).await?;
    }
    // Builds the search index (the embedded graph is saved with it).
    images.end_bulk_load().await?;
    println!("{}: {held} images ({} added in {:.1} s)", location.redacted(), held - first, started.elapsed().as_secs_f64());
    Ok(())
}

async fn bench(store: &str, queries: usize, mut draw: Draw, breadths: &[usize], index: SearchIndex, sizes: &[usize]) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let location = if store.is_empty() { Location::Embedded(scratch.path().to_path_buf()) } else { location(store)? };
    let open = || async { Stores::open_with(&location, index).await.with_context(|| format!("opening {}", location.redacted())) };
    let mut images = open().await?.images;
    anyhow::ensure!(images.count().await? == 0, "{} is not empty: the bench needs a scratch store", location.redacted());
    let space = Space { model_id: "bench".into(), dimensions: DIMS as u32 };
    // Each size adds 20 single inserts (timed) after its bulk load.
    let needed = sizes.iter().max().copied().unwrap_or(0) + 20 * sizes.len();
    if let Some(capacity) = draw.capacity() {
        anyhow::ensure!(capacity >= needed, "the vectors file holds {capacity} images; these sizes need {needed}");
    }
    let mut all: Vec<(String, ImageVectors)> = Vec::new();
    let vectors = draw.about.clone();
    let searched = match location {
        Location::Embedded(_) => format!("search index: {index}"),
        Location::Postgres(_) if index == SearchIndex::Graph => "search index: pgvector HNSW".to_string(),
        Location::Postgres(_) => "search index: scan (codes in this process, exact scores in SQL)".to_string(),
    };
    println!("store: {}; {searched}; {vectors}, {DIMS} dimensions, two per image", location.redacted());
    println!(
        "{:>9} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "images", "load img/s", "breadth", "p50 c=1", "p99 c=1", "p50 c=16", "p99 c=16", "recall@10", "insert p50", "reopen"
    );
    for &n in sizes {
        let started = Instant::now();
        let added = n.saturating_sub(all.len());
        // The bulk path (`mmc db copy`, `fill`): the search index is built once, at the end.
        images.begin_bulk_load().await?;
        while all.len() < n {
            let batch: Vec<(ImageRecord, ImageVectors)> = (all.len()..n.min(all.len() + 2_000)).map(|i| (record(i), draw.image())).collect();
            all.extend(batch.iter().map(|(r, v)| (r.image_id.clone(), v.clone())));
            images.insert_many(batch, space.clone()).await?;
        }
        images.end_bulk_load().await?;
        images.wait_for_index().await?;
        let load_rate = added as f64 / started.elapsed().as_secs_f64();
        let qs: Vec<Vec<f32>> = (0..queries).map(|_| draw.query()).collect();
        let wanted: Vec<Vec<String>> = qs.iter().take(100).map(|q| exact_top10(&all, q)).collect();
        // Per breadth: recall@10 against exact search, latencies at concurrency 1 and 16.
        let mut rows = Vec::new();
        for &breadth in breadths {
            let mut hits = 0;
            for (q, want) in qs.iter().zip(&wanted) {
                let got: Vec<String> = images.search(query(q.clone(), &space, breadth)).await?.into_iter().map(|(r, _)| r.image_id).collect();
                hits += want.iter().filter(|id| got.contains(id)).count();
            }
            let recall = hits as f64 / (wanted.len() * 10) as f64;
            let one = latencies(&images, &space, &qs, breadth, 1).await?;
            let sixteen = latencies(&images, &space, &qs, breadth, 16).await?;
            rows.push(format!(
                "{breadth:>8} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {recall:>10.3}",
                percentile(&one, 0.5),
                percentile(&one, 0.99),
                percentile(&sixteen, 0.5),
                percentile(&sixteen, 0.99)
            ));
        }
        let mut insert_ms = Vec::new();
        for i in 0..20 {
            let item = (record(10_000_000 + n + i), draw.image());
            all.push((item.0.image_id.clone(), item.1.clone()));
            let started = Instant::now();
            images.insert(item.0, item.1, space.clone()).await?;
            insert_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        insert_ms.sort_by(f64::total_cmp);
        // A gateway's stop and start: what it saves on the way down, then open until the
        // search index answers (the embedded graph loaded from its file).
        images.persist().await?;
        drop(images);
        let started = Instant::now();
        images = open().await?.images;
        images.wait_for_index().await?;
        let reopen_s = started.elapsed().as_secs_f64();
        for (i, row) in rows.iter().enumerate() {
            if i == 0 {
                println!("{n:>9} {load_rate:>11.0} {row} {:>8.2}ms {reopen_s:>8.2}s", percentile(&insert_ms, 0.5));
            } else {
                println!("{:>9} {:>11} {row}", "", "");
            }
        }
    }
    Ok(())
}
