//! Protocol edge of the speech service: the client-streamed upload is validated and spooled
//! to a temporary file (so no recording size is bounded by a gRPC message, and memory stays
//! flat), core events become `TranscribeResponse`s, the requested formats are rendered at the
//! end, and core errors become gRPC statuses here and only here.

use std::{io::Write, path::PathBuf, pin::Pin, sync::Arc, time::Instant};

use mmc_proto::{
    common::v1::{AudioEncoding, ModelInfo, Progress, StageTiming},
    speech::v1::{
        speech_service_server::SpeechService, transcribe_request::Payload, transcribe_response::Event as PbEvent, GetModelInfoRequest,
        GetModelInfoResponse, OutputFormat, RenderedTranscript, Segment as PbSegment, Task, TranscribeConfig, TranscribeRequest, TranscribeResponse,
        TranscriptionResult, Word as PbWord,
    },
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    core::{CoreError, Event, Job},
    engine::{
        audio::{AudioError, AudioInput, RawSample},
        whisper::{DecodeOptions, Segment},
        EngineError,
    },
    render,
    router::{Routed, SpeechRouter},
};

/// Limits checked at the edge.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest upload, in bytes (the whole recording, all chunks together).
    pub max_upload_bytes: u64,
    /// Longest `initial_prompt`, in bytes.
    pub max_prompt_bytes: usize,
    /// Where uploads are spooled (files named `upload-*`); `None` = the system temporary
    /// directory. The binary gives each service its own (see [`prepare_spool_dir`]).
    pub spool_dir: Option<PathBuf>,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_upload_bytes: 2 << 30, max_prompt_bytes: 4096, spool_dir: None }
    }
}

/// gRPC handlers over the [`SpeechRouter`] (the loaded models).
pub struct SpeechHandlers {
    router: Arc<SpeechRouter>,
    limits: RequestLimits,
}

impl SpeechHandlers {
    pub fn new(router: Arc<SpeechRouter>, limits: RequestLimits) -> Self {
        Self { router, limits }
    }

    /// Receives the chunks after the config into a temporary file.
    async fn spool(&self, stream: &mut Streaming<TranscribeRequest>) -> Result<(tempfile::TempPath, u64), Status> {
        let spooled = tempfile::Builder::new().prefix(SPOOL_PREFIX).to_owned();
        let file = match &self.limits.spool_dir {
            Some(dir) => spooled.tempfile_in(dir),
            None => spooled.tempfile(),
        }
        .map_err(|e| Status::internal(format!("cannot spool the upload: {e}")))?;
        let (file, path) = file.into_parts();
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut bytes = 0u64;
        while let Some(message) = stream.message().await? {
            match message.payload {
                Some(Payload::AudioChunk(chunk)) => {
                    bytes += chunk.len() as u64;
                    if bytes > self.limits.max_upload_bytes {
                        metrics::counter!("mmc_speech_rejected_total", "reason" => "upload_too_large").increment(1);
                        return Err(Status::invalid_argument(format!("the upload exceeds the limit of {} bytes", self.limits.max_upload_bytes)));
                    }
                    file.write_all(&chunk).map_err(|e| Status::internal(format!("spooling the upload: {e}")))?;
                }
                Some(Payload::Config(_)) => return Err(Status::invalid_argument("a second config message: send config once, first")),
                None => return Err(Status::invalid_argument("a request message without payload")),
            }
        }
        file.flush().map_err(|e| Status::internal(format!("spooling the upload: {e}")))?;
        Ok((path, bytes))
    }
}

/// Name prefix of spooled uploads.
const SPOOL_PREFIX: &str = "upload-";

/// The service's own spool directory, `<base>/mmc-speech-<uid>-<port>` on Unix (one per
/// user and listener, so replicas on one host never share one, and a directory another user's
/// run left in a shared `/tmp` is never in the way: tmux names its socket directory the same
/// way), created private (0700) and emptied of uploads a crashed run left behind. A path of
/// that name that is not a directory of this process's user (a symlink planted in `/tmp`, a
/// directory someone else made) is refused rather than used. Returns the directory and how
/// many files were removed.
pub fn prepare_spool_dir(base: &std::path::Path, port: u16) -> std::io::Result<(PathBuf, usize)> {
    let dir = base.join(spool_dir_name(port));
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(&dir)?;
        let uid = current_uid();
        if !meta.is_dir() || meta.uid() != uid {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is not a directory owned by this process's uid {uid}", dir.display()),
            ));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(SPOOL_PREFIX) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok((dir, removed))
}

/// `mmc-speech-<uid>-<port>` on Unix, `mmc-speech-<port>` elsewhere.
pub fn spool_dir_name(port: u16) -> String {
    #[cfg(unix)]
    return format!("mmc-speech-{}-{port}", current_uid());
    #[cfg(not(unix))]
    return format!("mmc-speech-{port}");
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What the handler needs from the config beyond the decode options.
struct Validated {
    input: AudioInput,
    options: DecodeOptions,
    formats: Vec<OutputFormat>,
    task: &'static str,
    /// The model asked for by id (empty: the router picks).
    model_id: String,
}

fn validate(config: TranscribeConfig, limits: &RequestLimits) -> Result<Validated, Status> {
    let bad = |m: String| Err(Status::invalid_argument(m));
    if config.model_id.len() > 256 {
        return bad("model_id is longer than 256 bytes".into());
    }
    let format = config.format.unwrap_or_default();
    let input = match AudioEncoding::try_from(format.encoding) {
        Ok(AudioEncoding::Auto) => AudioInput::Container,
        Ok(raw @ (AudioEncoding::PcmS16le | AudioEncoding::PcmF32le)) => {
            if format.sample_rate_hz == 0 || format.channels == 0 {
                return bad("raw PCM needs format.sample_rate_hz and format.channels".into());
            }
            let channels = u16::try_from(format.channels).map_err(|_| Status::invalid_argument("format.channels is too large"))?;
            let sample = if raw == AudioEncoding::PcmS16le { RawSample::S16Le } else { RawSample::F32Le };
            AudioInput::Raw { sample, sample_rate_hz: format.sample_rate_hz, channels }
        }
        Err(_) => return bad(format!("unknown audio encoding {}", format.encoding)),
    };
    let translate = match Task::try_from(config.task) {
        Ok(Task::Transcribe) => false,
        Ok(Task::Translate) => true,
        Err(_) => return bad(format!("unknown task {}", config.task)),
    };
    if config.initial_prompt.len() > limits.max_prompt_bytes {
        return bad(format!("initial_prompt is {} bytes; the limit is {}", config.initial_prompt.len(), limits.max_prompt_bytes));
    }
    let mut formats = Vec::new();
    for f in &config.formats {
        match OutputFormat::try_from(*f) {
            Ok(OutputFormat::Unspecified) => formats.push(OutputFormat::Text),
            Ok(f) => formats.push(f),
            Err(_) => return bad(format!("unknown output format {f}")),
        }
    }
    formats.dedup();
    let language = config.language.trim().to_lowercase();
    Ok(Validated {
        input,
        options: DecodeOptions {
            language: (!language.is_empty() && language != "auto").then_some(language),
            translate,
            word_timestamps: config.word_timestamps,
            initial_prompt: (!config.initial_prompt.trim().is_empty()).then_some(config.initial_prompt),
        },
        formats,
        task: if translate { "translate" } else { "transcribe" },
        model_id: config.model_id,
    })
}

/// tonic's `BoxStream` for the server-streamed responses.
type ResponseStream = Pin<Box<dyn Stream<Item = Result<TranscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SpeechService for SpeechHandlers {
    async fn transcribe(&self, request: Request<Streaming<TranscribeRequest>>) -> Result<Response<ResponseStream>, Status> {
        let started = Instant::now();
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty request stream: send a config first"))?;
        let Some(Payload::Config(config)) = first.payload else {
            return Err(Status::invalid_argument("the first message must be the config (then audio_chunk messages)"));
        };
        let request = validate(config, &self.limits)?;
        // Refuses what no loaded model can do before the upload is received.
        self.router.choose(&request.model_id, request.options.language.as_deref(), request.options.translate).map_err(to_status)?;
        let (audio, bytes) = self.spool(&mut stream).await?;
        if bytes == 0 {
            return Err(to_status(CoreError::Audio(AudioError::Empty)));
        }
        let upload_ms = started.elapsed().as_secs_f64() * 1000.0;
        let job = Job { audio, input: request.input, options: request.options.clone(), detected: None };
        let Routed { model, mut events, detect_ms } = self.router.transcribe(&request.model_id, job).await.map_err(to_status)?;
        let model = model_info(&model);

        let (tx, rx) = mpsc::channel::<Result<TranscribeResponse, Status>>(64);
        tokio::spawn(async move {
            let mut segments: Vec<Segment> = Vec::new();
            while let Some(event) = events.recv().await {
                let response = match event {
                    Event::Segment(s) => {
                        let pb = segment_pb(segments.len() as u32, &s);
                        segments.push(s);
                        Ok(PbEvent::Segment(pb))
                    }
                    Event::Progress { done_ms, total_ms } => Ok(PbEvent::Progress(Progress {
                        stage: "transcribe".into(),
                        done_units: done_ms,
                        total_units: total_ms.unwrap_or(0),
                        unit: "audio_ms".into(),
                        fraction_done: total_ms.filter(|t| *t > 0).map(|t| (done_ms as f64 / t as f64).min(1.0)).unwrap_or(0.0),
                        message: String::new(),
                    })),
                    Event::Done(summary) => {
                        let language = summary.language.clone();
                        let code = language.as_ref().map(|l| l.code.clone()).unwrap_or_default();
                        let rendered = request
                            .formats
                            .iter()
                            .map(|f| RenderedTranscript {
                                format: *f as i32,
                                content: match f {
                                    OutputFormat::Srt => render::srt(&segments),
                                    OutputFormat::Vtt => render::vtt(&segments),
                                    OutputFormat::VerboseJson => render::verbose_json(&segments, &code, summary.audio_duration_ms, request.task),
                                    _ => render::text(&segments),
                                },
                            })
                            .collect();
                        let stage = |stage: &str, ms: f64| StageTiming { stage: stage.into(), duration_ms: ms, upstream_ms: 0.0 };
                        Ok(PbEvent::Result(TranscriptionResult {
                            language: code,
                            language_probability: language.map(|l| l.probability).unwrap_or(0.0),
                            text: segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" "),
                            audio_duration_ms: summary.audio_duration_ms as i64,
                            segment_count: segments.len() as u32,
                            rendered,
                            model: Some(model.clone()),
                            timings: vec![
                                stage("upload", upload_ms),
                                stage("detect_language", detect_ms),
                                stage("queue", summary.queue_ms),
                                stage("decode_audio", summary.decode_audio_ms),
                                stage("transcribe", summary.transcribe_ms),
                            ],
                        }))
                    }
                    Event::Failed(e) => Err(to_status(e)),
                };
                let message = response.map(|event| TranscribeResponse { event: Some(event) });
                let last = message.is_err();
                // The client is gone: dropping `events` cancels the job.
                if tx.send(message).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as ResponseStream))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<GetModelInfoResponse>, Status> {
        let models = self.router.models().map_err(to_status)?;
        Ok(Response::new(GetModelInfoResponse {
            models: models.iter().map(model_info).collect(),
            max_audio_duration_ms: self.router.max_audio_ms() as i64,
        }))
    }
}

fn model_info(m: &crate::engine::whisper::ModelMeta) -> ModelInfo {
    ModelInfo { id: m.id.clone(), family: "whisper".into(), profile: m.profile.clone(), revision: m.revision.clone(), dimensions: 0 }
}

fn segment_pb(id: u32, s: &Segment) -> PbSegment {
    PbSegment {
        id,
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        text: s.text.clone(),
        avg_logprob: s.avg_logprob,
        no_speech_prob: s.no_speech_prob,
        compression_ratio: s.compression_ratio,
        words: s.words.iter().map(|w| PbWord { text: w.text.clone(), start_ms: w.start_ms, end_ms: w.end_ms, probability: w.probability }).collect(),
    }
}

/// The one mapping from core errors to gRPC statuses.
pub fn to_status(e: CoreError) -> Status {
    match &e {
        CoreError::NotReady => Status::unavailable(e.to_string()),
        CoreError::UnknownModel { .. } => Status::not_found(e.to_string()),
        CoreError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
        CoreError::Audio(AudioError::Io(_)) => Status::internal(e.to_string()),
        CoreError::Audio(_) | CoreError::TooLong { .. } => Status::invalid_argument(e.to_string()),
        CoreError::Engine(EngineError::BadOption(_)) => Status::invalid_argument(e.to_string()),
        CoreError::Engine(EngineError::Load(_)) | CoreError::Device(_) => Status::failed_precondition(e.to_string()),
        CoreError::Engine(EngineError::Cancelled) => Status::cancelled(e.to_string()),
        CoreError::Engine(EngineError::Whisper(_)) | CoreError::Internal(_) => Status::internal(e.to_string()),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_spool_directory_is_private_and_named_for_the_user_and_port() {
        let base = tempfile::tempdir().unwrap();
        let (dir, removed) = prepare_spool_dir(base.path(), 4321).unwrap();
        assert_eq!(removed, 0);
        assert_eq!(dir, base.path().join(format!("mmc-speech-{}-4321", current_uid())));
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        // Prepared again (a restart): the same directory, still fine.
        assert_eq!(prepare_spool_dir(base.path(), 4321).unwrap().0, dir);
    }

    #[test]
    fn a_symlink_planted_at_the_spool_directorys_name_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join(spool_dir_name(4322))).unwrap();
        let err = prepare_spool_dir(base.path(), 4322).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("not a directory owned by"), "{err}");
    }
}
