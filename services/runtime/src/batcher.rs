//! Dynamic batching: concurrent requests are coalesced into one model call.
//!
//! A model forward pass over 16 inputs costs far less than 16 passes over one, so the
//! inference core of a service queues the items of every request and a single worker
//! runs them together: it takes what is queued, waits at most `max_wait` for more until
//! `max_batch` items are gathered, runs the engine once (on a blocking thread, so the
//! async runtime keeps serving), and hands each request its own slice of the results.
//!
//! - The queue is bounded: when it is full, [`Batcher::submit`] fails at once with
//!   [`BatchError::QueueFull`] (the edge answers RESOURCE_EXHAUSTED).
//! - A request whose caller went away before its turn is dropped unrun.
//! - Metrics (label `batcher`): `mmc_batch_size` (items per engine call),
//!   `mmc_batch_queue_seconds` (time a request waited), `mmc_batch_compute_seconds`
//!   (engine time per call), `mmc_batch_queue_depth` (requests waiting).

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

/// Batching settings.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Metric label naming this batcher (e.g. "embed_text").
    pub name: &'static str,
    /// Most items per engine call.
    pub max_batch: usize,
    /// Longest a first item waits for company.
    pub max_wait: Duration,
    /// Requests that may wait; more are refused.
    pub queue_capacity: usize,
}

/// Why a submission produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError<E> {
    #[error("the {name} queue is full ({capacity} requests waiting)")]
    QueueFull { name: &'static str, capacity: usize },
    #[error("the {0} worker stopped")]
    Stopped(&'static str),
    #[error(transparent)]
    Engine(E),
}

struct Job<I, O, E> {
    items: Vec<I>,
    reply: oneshot::Sender<Result<Vec<O>, E>>,
    enqueued: Instant,
}

/// Handle to a batching worker; cheap to clone.
pub struct Batcher<I, O, E> {
    tx: mpsc::Sender<Job<I, O, E>>,
    config: Arc<BatcherConfig>,
}

impl<I, O, E> Clone for Batcher<I, O, E> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), config: self.config.clone() }
    }
}

impl<I, O, E> Batcher<I, O, E>
where
    I: Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
{
    /// Starts the worker on the current Tokio runtime. `run` is the engine call: it gets
    /// up to `max_batch` items and must return one output per item, in order.
    pub fn spawn<F>(config: BatcherConfig, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Result<Vec<O>, E> + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let config = Arc::new(config);
        tokio::spawn(worker(rx, config.clone(), Arc::new(run)));
        Self { tx, config }
    }

    /// Queues `items` and waits for their outputs (in order).
    pub async fn submit(&self, items: Vec<I>) -> Result<Vec<O>, BatchError<E>> {
        let (reply, rx) = oneshot::channel();
        let job = Job { items, reply, enqueued: Instant::now() };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BatchError::QueueFull { name: self.config.name, capacity: self.config.queue_capacity },
            mpsc::error::TrySendError::Closed(_) => BatchError::Stopped(self.config.name),
        })?;
        metrics::gauge!("mmc_batch_queue_depth", "batcher" => self.config.name).increment(1.0);
        match rx.await {
            Ok(result) => result.map_err(BatchError::Engine),
            Err(_) => Err(BatchError::Stopped(self.config.name)),
        }
    }
}

async fn worker<I, O, E, F>(mut rx: mpsc::Receiver<Job<I, O, E>>, config: Arc<BatcherConfig>, run: Arc<F>)
where
    I: Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
    F: Fn(Vec<I>) -> Result<Vec<O>, E> + Send + Sync + 'static,
{
    let name = config.name;
    while let Some(first) = rx.recv().await {
        // Gather: what is queued now, then wait up to max_wait for more.
        let deadline = Instant::now() + config.max_wait;
        let mut jobs = vec![first];
        let mut count = jobs[0].items.len();
        while count < config.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => {
                    count += job.items.len();
                    jobs.push(job);
                }
                _ => break,
            }
        }
        metrics::gauge!("mmc_batch_queue_depth", "batcher" => name).decrement(jobs.len() as f64);
        // Callers that gave up are not worth computing for.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        for job in &jobs {
            metrics::histogram!("mmc_batch_queue_seconds", "batcher" => name).record(job.enqueued.elapsed().as_secs_f64());
        }

        let sizes: Vec<usize> = jobs.iter().map(|j| j.items.len()).collect();
        let (replies, items): (Vec<_>, Vec<Vec<I>>) = jobs.into_iter().map(|j| (j.reply, j.items)).unzip();
        let items: Vec<I> = items.into_iter().flatten().collect();
        let run = run.clone();
        let max_batch = config.max_batch.max(1);
        let outputs = tokio::task::spawn_blocking(move || {
            // One engine call per max_batch items (a single large request is split).
            let mut outputs = Vec::with_capacity(items.len());
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let chunk: Vec<I> = items.by_ref().take(max_batch).collect();
                let n = chunk.len();
                let started = std::time::Instant::now();
                let result = run(chunk);
                metrics::histogram!("mmc_batch_size", "batcher" => name).record(n as f64);
                metrics::histogram!("mmc_batch_compute_seconds", "batcher" => name).record(started.elapsed().as_secs_f64());
                match result {
                    Ok(out) if out.len() == n => outputs.extend(out),
                    Ok(_) => panic!("{name} engine returned the wrong number of outputs"),
                    Err(e) => return Err(e),
                }
            }
            Ok(outputs)
        })
        .await;

        match outputs {
            Ok(Ok(outputs)) => {
                let mut outputs = outputs.into_iter();
                for (reply, n) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Ok(outputs.by_ref().take(n).collect()));
                }
            }
            Ok(Err(e)) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(join_error) => {
                // The engine panicked: the callers get Stopped (their sender is dropped),
                // the worker carries on with the next batch.
                tracing::error!(batcher = name, error = %join_error, "engine call panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_batch: usize, queue: usize) -> BatcherConfig {
        BatcherConfig { name: "test", max_batch, max_wait: Duration::from_millis(50), queue_capacity: queue }
    }

    #[tokio::test]
    async fn concurrent_requests_share_engine_calls_and_get_their_own_outputs() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let batcher = Batcher::spawn(config(64, 64), move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            Ok::<_, String>(items.iter().map(|i| i * 10).collect())
        });
        let tasks: Vec<_> = (0..8u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(vec![i, i + 100]).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let i = i as u32;
            assert_eq!(t.await.unwrap().unwrap(), vec![i * 10, (i + 100) * 10]);
        }
        let calls = calls.lock().unwrap();
        assert_eq!(calls.iter().sum::<usize>(), 16);
        assert!(calls.len() < 8, "requests were coalesced: {calls:?}");
    }

    #[tokio::test]
    async fn large_requests_are_split_into_max_batch_calls() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let batcher = Batcher::spawn(config(4, 8), move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            Ok::<_, String>(items)
        });
        let out = batcher.submit((0..10).collect()).await.unwrap();
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        assert_eq!(*calls.lock().unwrap(), vec![4, 4, 2]);
    }

    #[tokio::test]
    async fn engine_errors_reach_every_caller_of_the_batch() {
        let batcher = Batcher::spawn(config(8, 8), |_items: Vec<u32>| Err::<Vec<u32>, _>("boom".to_string()));
        assert_eq!(batcher.submit(vec![1]).await, Err(BatchError::Engine("boom".to_string())));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let batcher = Batcher::spawn(config(1, 1), move |items: Vec<u32>| {
            let _ = release_rx.lock().unwrap().recv();
            Ok::<_, String>(items)
        });
        // One call runs (blocked in the engine), one waits in the queue, the next is refused.
        let b1 = batcher.clone();
        let running = tokio::spawn(async move { b1.submit(vec![1]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b2 = batcher.clone();
        let queued = tokio::spawn(async move { b2.submit(vec![2]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = batcher.submit(vec![3]).await;
        assert!(matches!(refused, Err(BatchError::QueueFull { .. })), "{refused:?}");
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), vec![1]);
        assert_eq!(queued.await.unwrap().unwrap(), vec![2]);
    }
}
