//! `mmc-index-bench`: measures the embedded image index (redb + exact in-memory search) on
//! random unit vectors of the bundled space's shape (384 dimensions, two per image).
//!
//! For each size: bulk load (one transaction), reopen (what a gateway restart costs),
//! search latency p50/p95 (top 10, fused scores), and single durable inserts (what
//! IndexImages pays per image). Prints a table; timings are of this machine, this run.
//!
//!     cargo run --release -p mmc-gateway --bin mmc-index-bench -- 1000 10000 50000

use std::{collections::BTreeMap, time::Instant};

use mmc_gateway::store::{embedded::EmbeddedStore, Fusion, ImageRecord, ImageStore, ImageVectors, SearchQuery, Space};
use rand::{Rng, SeedableRng};

const DIMS: usize = 384;

fn unit(rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| rng.random::<f32>() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() { vec![1_000, 10_000, 50_000] } else { sizes };
    let space = Space { model_id: "bench".into(), dimensions: DIMS as u32 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    println!(
        "{:>8} {:>12} {:>10} {:>11} {:>11} {:>14} {:>10}",
        "images", "bulk load s", "reopen s", "search p50", "search p95", "insert p50 ms", "file MiB"
    );
    for n in sizes {
        let dir = tempfile::tempdir()?;
        let store = EmbeddedStore::open(dir.path())?;
        let items: Vec<(ImageRecord, ImageVectors)> =
            (0..n).map(|i| (record(i), ImageVectors { image: unit(&mut rng), caption: unit(&mut rng) })).collect();
        let started = Instant::now();
        for chunk in items.chunks(5_000) {
            store.insert_many(chunk.to_vec(), space.clone()).await?;
        }
        let bulk = started.elapsed().as_secs_f64();
        drop(store);
        let started = Instant::now();
        let store = EmbeddedStore::open(dir.path())?;
        let reopen = started.elapsed().as_secs_f64();
        assert_eq!(store.count(), n);
        let mut search_ms = Vec::new();
        for _ in 0..200 {
            let query = SearchQuery {
                vector: unit(&mut rng),
                space: space.clone(),
                top_k: 10,
                score_threshold: -1.0,
                metadata_filter: BTreeMap::new(),
                fusion: Fusion { image_weight: 0.5 },
            };
            let started = Instant::now();
            store.search(query).await?;
            search_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        search_ms.sort_by(f64::total_cmp);
        let mut insert_ms = Vec::new();
        for i in 0..100 {
            let item = (record(n + i), ImageVectors { image: unit(&mut rng), caption: unit(&mut rng) });
            let started = Instant::now();
            store.insert(item.0, item.1, space.clone()).await?;
            insert_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        insert_ms.sort_by(f64::total_cmp);
        let size = std::fs::metadata(store.path())?.len() as f64 / (1024.0 * 1024.0);
        println!(
            "{n:>8} {bulk:>12.2} {reopen:>10.2} {:>9.2}ms {:>9.2}ms {:>14.2} {size:>10.1}",
            percentile(&search_ms, 0.5),
            percentile(&search_ms, 0.95),
            percentile(&insert_ms, 0.5)
        );
    }
    Ok(())
}
