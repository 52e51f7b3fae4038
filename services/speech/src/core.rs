//! Inference core of the speech service: a pool of decoder states over one model, a
//! bounded queue in front of it, and the job that turns one uploaded recording into a
//! stream of segments.
//!
//! Concurrency: `max_concurrent` states, each serving one request at a time on its own
//! blocking thread with `threads_per_request` whisper.cpp threads. While no request waits,
//! a job whose own state is busy borrows idle ones and transcribes chunks side by side
//! (see [`SpeechCore::run`]), so one long recording can use the whole machine; a recording
//! of one chunk borrows their threads instead, so a short clip can too. A request
//! beyond the states waits in a queue of `queue_capacity`; beyond that it is refused at once
//! (RESOURCE_EXHAUSTED at the edge) rather than piling up. A request's job ends early when
//! its client goes away: the event channel closes, the abort flag is raised, and
//! whisper.cpp stops at its next step.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Instant,
};

use tokio::sync::{mpsc, Semaphore};
use whisper_rs::WhisperState;

use crate::engine::{
    audio::{self, AudioError, AudioInput},
    chunker::{Chunk, Chunker, ChunkerConfig},
    whisper::{DecodeOptions, EncoderWindow, Language, LanguageDetector, Segment, WhisperModel},
    EngineError,
};

/// How the core is set up.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The whisper.cpp ggml model file.
    pub model_path: PathBuf,
    pub model_id: String,
    pub profile: String,
    /// Requests decoded at once (decoder states in the pool).
    pub max_concurrent: usize,
    /// Requests that may wait for a state.
    pub queue_capacity: usize,
    /// whisper.cpp threads per request.
    pub threads_per_request: usize,
    /// 1 = greedy decoding; more = beam search of that width.
    pub beam_size: usize,
    /// How much audio the encoder reads per chunk (Whisper's 30 s, or the chunk's length).
    pub encoder_window: EncoderWindow,
    /// Longest recording accepted, in milliseconds.
    pub max_audio_ms: u64,
    /// Where chunks are cut and what counts as speech.
    pub chunker: ChunkerConfig,
    /// Device whisper.cpp runs on.
    pub device: mmc_models::DeviceSpec,
    /// Whether a request whose own state is busy may borrow idle ones (see
    /// [`SpeechCore::transcribe`]); off gives each request exactly one state.
    pub lend_idle_states: bool,
}

/// One transcription request, as the core sees it.
pub struct Job {
    /// The spooled upload (deleted when the job is dropped).
    pub audio: tempfile::TempPath,
    pub input: AudioInput,
    pub options: DecodeOptions,
    /// The language found before the job (by [`crate::router`], on another model), with
    /// its probability: used as the job's language and reported. `options.language` holds
    /// its code.
    pub detected: Option<Language>,
}

/// What a job reports, in order: segments and progress, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Segment(Segment),
    Progress { done_ms: u64, total_ms: Option<u64> },
    Done(Summary),
    Failed(CoreError),
}

/// End-of-job facts.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Language used (detected or forced); `None` when nothing was spoken and none forced.
    pub language: Option<Language>,
    pub audio_duration_ms: u64,
    /// Time waiting for a decoder state.
    pub queue_ms: f64,
    /// Time inside whisper.cpp (language detection and decoding).
    pub transcribe_ms: f64,
    /// Time decoding and resampling the upload (the rest of the job).
    pub decode_audio_ms: f64,
    /// Segments dropped by the guards, by reason.
    pub suppressed: Vec<(&'static str, usize)>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the model is still loading")]
    NotReady,
    #[error("model {asked:?} is not loaded here (this service runs {loaded:?})")]
    UnknownModel { asked: String, loaded: Vec<String> },
    #[error("{0} requests are already waiting; try again later")]
    QueueFull(usize),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("the recording is longer than the limit of {limit_s} s")]
    TooLong { limit_s: u64 },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Device(#[from] mmc_models::device::DeviceError),
}

/// The core: model, state pool, queue.
pub struct SpeechCore {
    config: CoreConfig,
    model: OnceLock<Arc<WhisperModel>>,
    states: Mutex<Vec<WhisperState>>,
    permits: Arc<Semaphore>,
    /// Requests waiting for a state.
    waiting: AtomicUsize,
    /// One wake-up channel per lent state's worker (see [`SpeechCore::recall_lent`]).
    recalls: Mutex<Vec<crossbeam_channel::Sender<()>>>,
    /// States lent to another request's job (they come back before that job's next chunk
    /// once a request waits, so they count as free when deciding to queue or refuse).
    lent: AtomicUsize,
    /// Detects the language before a request is routed (multilingual models only; see
    /// [`WhisperModel::new_detector`]).
    detector: Arc<tokio::sync::Mutex<Option<LanguageDetector>>>,
}

impl SpeechCore {
    pub fn new(config: CoreConfig) -> Arc<Self> {
        let max = config.max_concurrent.max(1);
        Arc::new(SpeechCore {
            config,
            model: OnceLock::new(),
            states: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max)),
            waiting: AtomicUsize::new(0),
            recalls: Mutex::new(Vec::new()),
            lent: AtomicUsize::new(0),
            detector: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Loads the model, creates the decoder states and runs one decode so the first request
    /// does not pay for page faults. The service reports SERVING only after this.
    pub async fn load_and_warm_up(self: &Arc<Self>) -> Result<(), CoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || -> Result<(), CoreError> {
            let c = &me.config;
            let started = Instant::now();
            // whisper.cpp, not candle, runs here: whether it has CUDA is this crate's own
            // `cuda` feature (which does not pull candle's kernels in).
            let gpu = c.device.gpu_ordinal();
            if gpu.is_some() && !cfg!(feature = "cuda") {
                return Err(mmc_models::device::DeviceError::NotCompiled(c.device).into());
            }
            let model = WhisperModel::load(&c.model_path, &c.model_id, &c.profile, c.beam_size, c.encoder_window, gpu)?;
            let mut states = (0..c.max_concurrent.max(1)).map(|_| model.new_state()).collect::<Result<Vec<_>, _>>()?;
            let tone: Vec<f32> = (0..audio::SAMPLE_RATE).map(|i| (i as f32 * 0.05).sin() * 0.01).collect();
            let options = DecodeOptions { language: Some("en".into()), ..Default::default() };
            model.transcribe(&mut states[0], &tone, 0, &options, c.threads_per_request, &Arc::new(AtomicBool::new(false)))?;
            if model.meta().multilingual {
                *me.detector.blocking_lock() = Some(model.new_detector(DETECT_WINDOW_MS)?);
            }
            tracing::info!(
                model = %model.meta().id, size = %model.meta().size, multilingual = model.meta().multilingual,
                states = states.len(), threads_per_request = c.threads_per_request,
                elapsed_ms = started.elapsed().as_millis() as u64, "whisper model loaded and warmed up"
            );
            *me.states.lock().expect("state pool lock") = states;
            me.model.set(Arc::new(model)).map_err(|_| CoreError::Internal("model loaded twice".into()))
        })
        .await
        .map_err(|e| CoreError::Internal(e.to_string()))?
    }

    /// The loaded model.
    pub fn model(&self) -> Result<&Arc<WhisperModel>, CoreError> {
        self.model.get().ok_or(CoreError::NotReady)
    }

    /// Queues a job; its events arrive on the returned channel. Dropping the receiver
    /// cancels the job.
    pub fn transcribe(self: &Arc<Self>, job: Job) -> Result<mpsc::Receiver<Event>, CoreError> {
        let model = self.model()?.clone();
        if let Some(language) = &job.options.language {
            model.check_language(language)?;
        }
        if job.options.translate && !model.meta().multilingual {
            return Err(EngineError::BadOption(format!("model {} is English-only and cannot translate", model.meta().id)).into());
        }
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
        let free = self.permits.available_permits() + self.lent.load(Ordering::SeqCst);
        if waiting >= self.config.queue_capacity && free == 0 {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!("mmc_speech_rejected_total", "reason" => "queue_full").increment(1);
            return Err(CoreError::QueueFull(waiting));
        }
        self.recall_lent();
        metrics::gauge!("mmc_speech_queue_depth").set(self.waiting.load(Ordering::SeqCst) as f64);
        // A small buffer: a slow client slows its own job instead of growing memory.
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let queued = Instant::now();
            let cancel = Arc::new(AtomicBool::new(false));
            let permit = tokio::select! {
                p = me.permits.clone().acquire_owned() => p,
                _ = tx.closed() => {
                    me.waiting.fetch_sub(1, Ordering::SeqCst);
                    metrics::counter!("mmc_speech_cancelled_total").increment(1);
                    return;
                }
            };
            me.waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::gauge!("mmc_speech_queue_depth").set(me.waiting.load(Ordering::SeqCst) as f64);
            let Ok(_permit) = permit else { return };
            let state = me.states.lock().expect("state pool lock").pop();
            let Some(state) = state else {
                let _ = tx.send(Event::Failed(CoreError::Internal("no free decoder state".into()))).await;
                return;
            };
            // Client gone -> raise the abort flag so whisper.cpp stops mid-decode.
            let watcher = {
                let (tx, cancel) = (tx.clone(), cancel.clone());
                tokio::spawn(async move {
                    tx.closed().await;
                    cancel.store(true, Ordering::Relaxed);
                })
            };
            metrics::gauge!("mmc_speech_active_requests").increment(1.0);
            let queue_ms = queued.elapsed().as_secs_f64() * 1000.0;
            let runner = me.clone();
            let (cancel_job, tx_job) = (cancel.clone(), tx.clone());
            let joined = tokio::task::spawn_blocking(move || {
                let mut state = state;
                let result = runner.run(&model, &mut state, job, queue_ms, &cancel_job, &tx_job);
                (state, result)
            })
            .await;
            metrics::gauge!("mmc_speech_active_requests").decrement(1.0);
            watcher.abort();
            match joined {
                Ok((state, result)) => {
                    me.states.lock().expect("state pool lock").push(state);
                    let event = match result {
                        Ok(summary) => Event::Done(summary),
                        Err(CoreError::Engine(EngineError::Cancelled)) => {
                            metrics::counter!("mmc_speech_cancelled_total").increment(1);
                            return;
                        }
                        Err(e) => Event::Failed(e),
                    };
                    let _ = tx.send(event).await;
                }
                Err(e) => {
                    // whisper.cpp panicked through the bindings: the state is lost; make a new one.
                    tracing::error!(error = %e, "transcription job panicked");
                    if let Ok(model) = me.model() {
                        if let Ok(s) = model.new_state() {
                            me.states.lock().expect("state pool lock").push(s);
                        }
                    }
                    let _ = tx.send(Event::Failed(CoreError::Internal("transcription failed unexpectedly".into()))).await;
                }
            }
        });
        Ok(rx)
    }

    /// The job, on a blocking thread: decode -> chunk -> (detect language) -> transcribe,
    /// sending segments and progress as they come.
    ///
    /// Chunks are decoded with no context from the ones before, so they are independent:
    /// when a chunk is ready, the job's workers are all busy and another decoder state
    /// sits idle, the job borrows it and transcribes several chunks at once (what whisper.cpp's `--processors` and faster-whisper's batched
    /// pipeline do). A lone request then uses the whole machine rather than the
    /// `threads_per_request` threads its own state has. Results are put back in recording
    /// order before the guards and the client see them. A borrowed state goes back to the
    /// pool before its next chunk as soon as another request is waiting for one. A
    /// recording that is a single chunk cannot be spread over states: idle states lend it
    /// their threads instead (its one worker decodes with all of them), given back at the
    /// end of the job or as soon as another request waits.
    fn run(
        &self,
        model: &WhisperModel,
        state: &mut WhisperState,
        job: Job,
        queue_ms: f64,
        cancel: &Arc<AtomicBool>,
        tx: &mpsc::Sender<Event>,
    ) -> Result<Summary, CoreError> {
        let started = Instant::now();
        let c = &self.config;
        let total_ms = audio::probe_duration_ms(&job.audio, job.input);
        if let Some(ms) = total_ms {
            if ms > c.max_audio_ms {
                return Err(CoreError::TooLong { limit_s: c.max_audio_ms / 1000 });
            }
        }
        let forced = job.detected.clone().or_else(|| job.options.language.clone().map(|code| Language { code, probability: 1.0 }));
        let language = LanguageSlot::new(forced);
        let transcribe_us = AtomicU64::new(0);
        let max_samples = c.max_audio_ms * audio::SAMPLE_RATE as u64 / 1000;

        // Chunks go to the workers by hand-over (a channel of capacity 0): a send succeeds
        // at once only if a worker is idle, which is how the dispatcher knows they are all
        // busy. Memory stays bounded: one chunk per worker and one being cut. Results come
        // back tagged with their place in the recording.
        // The queue is multi-consumer (crossbeam): idle workers block in `recv` and are
        // woken by a chunk, by the queue closing, or (a lent worker) by a recall.
        let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(0);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Chunk, Result<Vec<Segment>, CoreError>)>();
        // Threads lent by idle states to a recording that is one chunk (see `lend_threads`
        // below): added to `threads_per_request` for each chunk a worker starts. `closed`
        // never carries a message; it disconnects once the job's workers are done, ending
        // the loans.
        let lent_threads = AtomicUsize::new(0);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded::<()>(0);
        // One worker per decoder state. The request's own worker runs until the queue closes;
        // a lent one ends as soon as another request waits for a state: `recall` wakes it
        // (see `SpeechCore::recall_lent`), and it returns before taking another chunk.
        let worker = |state: &mut WhisperState,
                      recall: Option<crossbeam_channel::Receiver<()>>,
                      work_rx: crossbeam_channel::Receiver<Work>,
                      done_tx: std::sync::mpsc::Sender<_>| {
            let lent = recall.is_some();
            let recall = recall.unwrap_or_else(crossbeam_channel::never);
            loop {
                if lent && self.waiting.load(Ordering::SeqCst) > 0 {
                    return;
                }
                let work = crossbeam_channel::select! {
                    recv(work_rx) -> work => match work {
                        Ok(work) => work,
                        Err(_) => return,
                    },
                    recv(recall) -> _ => continue,
                };
                // After a failure or cancellation the queue is still drained (so the dispatcher
                // never blocks on it), but nothing more is transcribed.
                let result = if cancel.load(Ordering::Relaxed) {
                    Err(EngineError::Cancelled.into())
                } else {
                    let threads = c.threads_per_request + lent_threads.load(Ordering::SeqCst);
                    self.transcribe_chunk(model, state, &work, &language, &job.options, threads, cancel, &transcribe_us)
                };
                if work.detect {
                    // Wakes the workers waiting for the language, whether it was found or not.
                    language.detection_over();
                }
                let _ = done_tx.send((work.seq, work.chunk, result));
            }
        };
        let worker = &worker;
        // An idle state lent for its threads: it decodes nothing, and the job's worker runs
        // with its threads as well until another request waits (recall) or the job's workers
        // are done; then the state goes back to the pool.
        let lend_threads = |lent: Borrowed<'_>, closed: crossbeam_channel::Receiver<()>| {
            while self.waiting.load(Ordering::SeqCst) == 0 {
                crossbeam_channel::select! {
                    recv(lent.recall) -> _ => {}
                    recv(closed) -> _ => break,
                }
            }
            lent_threads.fetch_sub(c.threads_per_request, Ordering::SeqCst);
            drop(lent);
        };
        let lend_threads = &lend_threads;
        let send = |event: Event| -> Result<(), CoreError> {
            tx.blocking_send(event).map_err(|_| {
                cancel.store(true, Ordering::Relaxed);
                CoreError::Engine(EngineError::Cancelled)
            })
        };
        // In recording order: guards, then segments and progress to the client.
        let emit = move || -> Result<Guards, CoreError> {
            let mut guard = Guards::default();
            let mut pending = std::collections::BTreeMap::new();
            let mut next = 0usize;
            for (seq, chunk, result) in done_rx {
                pending.insert(seq, (chunk, result));
                while let Some((chunk, result)) = pending.remove(&next) {
                    next += 1;
                    let segments = result.inspect_err(|_| cancel.store(true, Ordering::Relaxed))?;
                    for mut segment in segments {
                        fit_to_speech(&mut segment, &chunk, c.chunker.speech_rms);
                        if guard.keep(&segment) {
                            metrics::counter!("mmc_speech_segments_total").increment(1);
                            send(Event::Segment(segment))?;
                        }
                    }
                    send(Event::Progress { done_ms: (chunk.offset_ms() + chunk.duration_ms()) as u64, total_ms })?;
                }
            }
            Ok(guard)
        };

        let (decoded, workers_ok, emitted) = std::thread::scope(|s| {
            // Moved in, so that dropping them below closes the queue and the results.
            let (work_tx, done_tx, closed_tx) = (work_tx, done_tx, closed_tx);
            // Set once the audio has ended: a chunk cut then with nothing before it is the
            // whole recording.
            let finishing = std::cell::Cell::new(false);
            let mut lenders = Vec::new();
            let emitter = s.spawn(emit);
            let mut workers = vec![{
                let (done_tx, work_rx) = (done_tx.clone(), work_rx.clone());
                s.spawn(move || worker(state, None, work_rx, done_tx))
            }];
            let mut failure: Option<CoreError> = None;
            let mut received = 0u64;
            let mut seq = 0usize;
            let mut detect_pending = job.options.language.is_none();
            let mut process = |chunk: Chunk| -> Result<(), CoreError> {
                if cancel.load(Ordering::Relaxed) {
                    return Err(EngineError::Cancelled.into());
                }
                // The language is detected on the first chunk with speech, in recording
                // order, whichever worker gets it: the same input gives the same result.
                let detect = detect_pending && chunk.has_speech;
                detect_pending &= !detect;
                if seq == 0 && finishing.get() {
                    // The whole recording is this one chunk, so idle states cannot take
                    // chunks of it: they lend their threads instead (a 13 s clip: 1.6x
                    // faster on tiny.en, 2x on base, docs/speech.md).
                    while let Some(lent) = self.borrow_idle_state() {
                        lent_threads.fetch_add(c.threads_per_request, Ordering::SeqCst);
                        let closed = closed_rx.clone();
                        lenders.push(s.spawn(move || lend_threads(lent, closed)));
                    }
                }
                let work = Work { seq, chunk, detect };
                seq += 1;
                let stopped = |_| CoreError::Internal("the transcription workers stopped".into());
                let work = match work_tx.try_send(work) {
                    Ok(()) => return Ok(()),
                    Err(crossbeam_channel::TrySendError::Full(work)) => work,
                    Err(crossbeam_channel::TrySendError::Disconnected(work)) => return Err(stopped(work)),
                };
                // Every worker is busy: take an idle state into this job if no other
                // request needs it. Chunks are decoded with no context from the ones
                // before, so they are independent (what whisper.cpp's `--processors` and
                // faster-whisper's batched pipeline rely on too).
                if let Some(mut lent) = self.borrow_idle_state() {
                    let (done_tx, work_rx) = (done_tx.clone(), work_rx.clone());
                    let recall = lent.recall.clone();
                    workers.push(s.spawn(move || worker(lent.state.as_mut().expect("a borrowed state"), Some(recall), work_rx, done_tx)));
                }
                work_tx.send(work).map_err(|e| stopped(e.0))
            };
            let mut chunker = Chunker::new(c.chunker);
            let decoded = audio::decode_file(&job.audio, job.input, &mut |samples: &[f32]| {
                received += samples.len() as u64;
                if received > max_samples {
                    failure = Some(CoreError::TooLong { limit_s: c.max_audio_ms / 1000 });
                    return Err("too long".into());
                }
                chunker.push(samples, &mut process).map_err(|e| {
                    failure = Some(e);
                    "stopped".to_string()
                })
            });
            let decoded = match decoded {
                Ok(info) => {
                    finishing.set(true);
                    chunker.finish(&mut process).map(|()| info)
                }
                Err(AudioError::Stopped(_)) => Err(failure.unwrap_or(CoreError::Internal("decoding stopped".into()))),
                Err(e) => Err(e.into()),
            };
            if decoded.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            // Close the queue (the workers end once it is empty) and the dispatcher's end
            // of the results (the emitter ends once the workers have).
            drop((work_tx, work_rx, done_tx));
            // Every worker joined (no short circuit), then checked; then the lent threads
            // are given back (their loans last as long as the work).
            let workers_ok = workers.into_iter().map(|w| w.join()).filter(Result::is_err).count() == 0;
            drop((closed_tx, closed_rx));
            let workers_ok = lenders.into_iter().map(|w| w.join()).filter(Result::is_err).count() == 0 && workers_ok;
            let emitted = emitter.join().unwrap_or_else(|_| Err(CoreError::Internal("emitting results failed".into())));
            (decoded, workers_ok, emitted)
        });
        // The first cause wins: a bad or too long upload, then a failed chunk (the emitter
        // reports the earliest in recording order; the decoding side then only saw the
        // cancellation it raised), then a crashed worker.
        let (info, guard) = match (decoded, emitted) {
            (Err(CoreError::Engine(EngineError::Cancelled)), Err(e)) => return Err(e),
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
            (Ok(info), Ok(guard)) => (info, guard),
        };
        if !workers_ok {
            return Err(CoreError::Internal("transcription failed unexpectedly".into()));
        }
        if info.skipped_packets > 0 {
            tracing::warn!(skipped = info.skipped_packets, codec = %info.codec, "damaged audio packets skipped");
        }
        let audio_duration_ms = info.samples * 1000 / audio::SAMPLE_RATE as u64;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let transcribe_ms = transcribe_us.load(Ordering::Relaxed) as f64 / 1000.0;
        metrics::counter!("mmc_speech_audio_seconds_total").increment(audio_duration_ms / 1000);
        if audio_duration_ms > 0 {
            metrics::histogram!("mmc_speech_real_time_factor").record(elapsed_ms / audio_duration_ms as f64);
        }
        for (reason, n) in guard.suppressed() {
            metrics::counter!("mmc_speech_suppressed_segments_total", "reason" => reason).increment(n as u64);
        }
        Ok(Summary {
            language: language.into_inner(),
            audio_duration_ms,
            queue_ms,
            transcribe_ms,
            // Chunks may run side by side: the time inside whisper.cpp can exceed the
            // job's wall time, so this is what the job took beyond it, if anything.
            decode_audio_ms: (elapsed_ms - transcribe_ms).max(0.0),
            suppressed: guard.suppressed(),
        })
    }

    /// One chunk through whisper.cpp on `state`: the language settled first if the chunk
    /// is the one to detect it on (workers with later chunks wait for it), then only the
    /// speech in the chunk, with 300 ms of margin: trailing silence would make whisper.cpp
    /// run a second, empty 30 s window on the chunk.
    #[allow(clippy::too_many_arguments)]
    fn transcribe_chunk(
        &self,
        model: &WhisperModel,
        state: &mut WhisperState,
        work: &Work,
        language: &LanguageSlot,
        options: &DecodeOptions,
        threads: usize,
        cancel: &Arc<AtomicBool>,
        spent_us: &AtomicU64,
    ) -> Result<Vec<Segment>, CoreError> {
        let chunk = &work.chunk;
        if !chunk.has_speech {
            return Ok(Vec::new());
        }
        let c = &self.config;
        let t = Instant::now();
        let mut options = options.clone();
        options.language = if work.detect {
            // On Whisper's full window, whatever window the chunks are decoded with: the
            // model answers for the language it will transcribe.
            let detected = model.detect_language(state, &chunk.samples, 0, threads)?;
            let code = detected.code.clone();
            language.set(detected);
            Some(code)
        } else {
            language.wait(cancel)?
        };
        let margin = audio::SAMPLE_RATE as usize * 3 / 10;
        let (from, to) = crate::engine::chunker::speech_bounds(&chunk.samples, c.chunker.speech_rms)
            .map(|(a, b)| (a.saturating_sub(margin), (b + margin).min(chunk.samples.len())))
            .unwrap_or((0, chunk.samples.len()));
        let offset_ms = chunk.offset_ms() + (from * 1000 / audio::SAMPLE_RATE as usize) as i64;
        let segments = model.transcribe(state, &chunk.samples[from..to], offset_ms, &options, threads, cancel)?;
        spent_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(
            offset_ms = chunk.offset_ms(),
            sent_ms = (to - from) * 1000 / audio::SAMPLE_RATE as usize,
            segments = segments.len(),
            elapsed_ms = t.elapsed().as_millis() as u64,
            "chunk transcribed"
        );
        Ok(segments)
    }

    /// The language of a spooled recording, detected on the first chunk with speech (the
    /// one a job would detect it on) by the core's language detector, or `None` when the
    /// first [`DETECT_SCAN_MS`] of the recording hold no speech. Decodes only the head of
    /// the file; one detection runs at a time, beside the transcriptions (it holds no
    /// decoder state of the pool). The English-only model always answers English.
    pub async fn detect_language(self: &Arc<Self>, path: &std::path::Path, input: AudioInput) -> Result<Option<Language>, CoreError> {
        let model = self.model()?.clone();
        let mut detector = self.detector.clone().lock_owned().await;
        let (me, path) = (self.clone(), path.to_path_buf());
        // A request waits for this pass before anything else can start: it gets every
        // core, not one request's share.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(self.config.threads_per_request);
        tokio::task::spawn_blocking(move || {
            let Some(chunk) = me.first_speech_chunk(&path, input)? else { return Ok(None) };
            let from = crate::engine::chunker::speech_bounds(&chunk.samples, me.config.chunker.speech_rms)
                .map_or(0, |(a, _)| a.saturating_sub(audio::SAMPLE_RATE as usize * 3 / 10));
            let language = match detector.as_mut() {
                Some(d) => d.detect(&model, &chunk.samples[from..], threads)?,
                None => Language { code: "en".into(), probability: 1.0 },
            };
            Ok(Some(language))
        })
        .await
        .map_err(|e| CoreError::Internal(format!("language detection failed unexpectedly: {e}")))?
    }

    /// The recording's first chunk with speech within its first [`DETECT_SCAN_MS`], cut as
    /// a job cuts it; decoding stops there.
    fn first_speech_chunk(&self, path: &std::path::Path, input: AudioInput) -> Result<Option<Chunk>, CoreError> {
        let mut chunker = Chunker::new(self.config.chunker);
        let mut found: Option<Chunk> = None;
        let mut scanned = 0u64;
        let limit = DETECT_SCAN_MS * audio::SAMPLE_RATE as u64 / 1000;
        let mut keep = |chunk: Chunk| -> Result<(), ()> {
            if chunk.has_speech {
                found = Some(chunk);
                return Err(());
            }
            Ok(())
        };
        let decoded = audio::decode_file(path, input, &mut |samples: &[f32]| {
            scanned += samples.len() as u64;
            if scanned > limit {
                return Err("scanned enough".into());
            }
            chunker.push(samples, &mut keep).map_err(|()| "found".to_string())
        });
        match decoded {
            Ok(_) => {
                let _ = chunker.finish(&mut keep);
            }
            Err(AudioError::Stopped(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(found)
    }

    /// An idle decoder state this job may use too, if no other request waits for one.
    fn borrow_idle_state(&self) -> Option<Borrowed<'_>> {
        if !self.config.lend_idle_states || self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let state = self.states.lock().expect("state pool lock").pop()?;
        self.lent.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("mmc_speech_borrowed_states_total").increment(1);
        let (recall_tx, recall) = crossbeam_channel::bounded(1);
        self.recalls.lock().expect("recall lock").push(recall_tx);
        Some(Borrowed { core: self, state: Some(state), recall, _permit: permit })
    }

    /// Wakes every worker on a lent state, so each hands its state back before its next
    /// chunk (a request now waits for one). Recalls of workers that have ended are dropped.
    fn recall_lent(&self) {
        self.recalls.lock().expect("recall lock").retain(|tx| !matches!(tx.try_send(()), Err(crossbeam_channel::TrySendError::Disconnected(()))));
    }
}

/// How much of a recording [`SpeechCore::detect_language`] decodes looking for speech.
pub const DETECT_SCAN_MS: u64 = 10 * 60 * 1000;

/// How much speech the language detector's encoder reads (from where speech starts).
pub const DETECT_WINDOW_MS: u32 = 10_000;

/// One chunk handed to a worker.
struct Work {
    /// Place in the recording (0, 1, ...), to put the results back in order.
    seq: usize,
    chunk: Chunk,
    /// Detect the language on this chunk (the first with speech, when none is forced).
    detect: bool,
}

/// The job's language: forced, or detected on one chunk while workers with later chunks
/// wait for it (woken when the detecting worker is done with its chunk, found or not).
struct LanguageSlot {
    /// The language, and whether detection is over (so a waiter stops waiting).
    value: Mutex<(Option<Language>, bool)>,
    ready: std::sync::Condvar,
}

impl LanguageSlot {
    fn new(forced: Option<Language>) -> Self {
        let over = forced.is_some();
        LanguageSlot { value: Mutex::new((forced, over)), ready: std::sync::Condvar::new() }
    }

    fn set(&self, language: Language) {
        self.value.lock().expect("language lock").0 = Some(language);
        self.detection_over();
    }

    /// The detecting worker is done with its chunk (it may have failed or been cancelled).
    fn detection_over(&self) {
        self.value.lock().expect("language lock").1 = true;
        self.ready.notify_all();
    }

    /// The language code, once known. Gives up when detection ended without one (it failed
    /// or the job was cancelled: the job's error says which).
    fn wait(&self, cancel: &AtomicBool) -> Result<Option<String>, CoreError> {
        let value = self.value.lock().expect("language lock");
        let value = self.ready.wait_while(value, |(language, over)| language.is_none() && !*over).expect("language lock");
        match &value.0 {
            Some(l) if !cancel.load(Ordering::Relaxed) => Ok(Some(l.code.clone())),
            _ => Err(EngineError::Cancelled.into()),
        }
    }

    fn into_inner(self) -> Option<Language> {
        self.value.into_inner().expect("language lock").0
    }
}

/// A decoder state lent to another request's job. Dropping it puts the state back in the
/// pool first and then frees its permit, so a request woken by the permit finds the state.
struct Borrowed<'a> {
    core: &'a SpeechCore,
    state: Option<WhisperState>,
    /// Wakes the worker on this state when another request starts waiting for one.
    recall: crossbeam_channel::Receiver<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.core.states.lock().expect("state pool lock").push(state);
        }
        self.core.lent.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Moves a segment's start and end onto the speech inside it (see
/// [`chunker::speech_bounds`](crate::engine::chunker::speech_bounds)); word times stay
/// inside the new bounds.
fn fit_to_speech(segment: &mut Segment, chunk: &Chunk, speech_rms: f32) {
    let to_sample = |ms: i64| (((ms - chunk.offset_ms()).max(0) as usize) * audio::SAMPLE_RATE as usize / 1000).min(chunk.samples.len());
    let (a, b) = (to_sample(segment.start_ms), to_sample(segment.end_ms));
    if b <= a {
        return;
    }
    let Some((first, last)) = crate::engine::chunker::speech_bounds(&chunk.samples[a..b], speech_rms) else { return };
    let to_ms = |sample: usize| chunk.offset_ms() + ((a + sample) * 1000 / audio::SAMPLE_RATE as usize) as i64;
    let (start, end) = (to_ms(first), to_ms(last));
    if end > start {
        segment.start_ms = start;
        segment.end_ms = end;
        for w in &mut segment.words {
            w.start_ms = w.start_ms.clamp(start, end);
            w.end_ms = w.end_ms.clamp(w.start_ms, end);
        }
    }
}

/// Drops segments that are Whisper's known failure modes rather than speech.
#[derive(Default)]
struct Guards {
    previous: Option<String>,
    repeats: usize,
    loops: usize,
    silence: usize,
}

impl Guards {
    /// faster-whisper's thresholds: compression ratio above 2.4 = a repetition loop;
    /// no-speech probability above 0.6 with mean log-probability below -1 = text invented
    /// over silence. Plus: the same text as the segment before (a loop across windows).
    fn keep(&mut self, s: &Segment) -> bool {
        let normalized: String = s.text.chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect::<String>().to_lowercase();
        let normalized = normalized.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.compression_ratio > 2.4 {
            self.loops += 1;
            return false;
        }
        if s.no_speech_prob > 0.6 && s.avg_logprob < -1.0 {
            self.silence += 1;
            return false;
        }
        if !normalized.is_empty() && self.previous.as_deref() == Some(normalized.as_str()) {
            self.repeats += 1;
            return false;
        }
        self.previous = Some(normalized);
        true
    }

    fn suppressed(&self) -> Vec<(&'static str, usize)> {
        [("repeat", self.repeats), ("loop", self.loops), ("no_speech", self.silence)].into_iter().filter(|(_, n)| *n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str) -> Segment {
        Segment {
            start_ms: 0,
            end_ms: 1000,
            text: text.into(),
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            compression_ratio: crate::engine::whisper::compression_ratio(text),
            words: vec![],
        }
    }

    #[test]
    fn guards_drop_repeats_loops_and_invented_text() {
        let mut g = Guards::default();
        assert!(g.keep(&seg("We agreed to ship on Friday.")));
        assert!(!g.keep(&seg("we agreed to ship on friday")));
        assert!(g.keep(&seg("Next item: the budget.")));
        assert!(!g.keep(&seg(&"Thank you. ".repeat(30))));
        assert!(!g.keep(&Segment { no_speech_prob: 0.9, avg_logprob: -1.5, ..seg("Thanks for watching!") }));
        assert!(g.keep(&Segment { no_speech_prob: 0.9, avg_logprob: -0.3, ..seg("Quiet but confident speech.") }));
        assert_eq!(g.suppressed(), vec![("repeat", 1), ("loop", 1), ("no_speech", 1)]);
    }
}
