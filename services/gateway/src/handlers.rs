//! Protocol edge of the gateway: request validation, proto <-> flow types, and the one
//! place where [`GatewayError`]s become statuses.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::{ModelInfo, Progress},
    embed::v1::Label,
    gateway::v1::{
        gateway_service_server::GatewayService, index_images_response::Event, search_images_request, summarize_meeting_request,
        summarize_meeting_response, AskMeetingRequest, AskMeetingResponse, DeleteImageRequest, DeleteImageResponse, DescribeImageRequest,
        DescribeImageResponse, GetMeetingRequest, ImageRecord as ProtoRecord, IndexFailure, IndexImagesRequest, IndexImagesResponse, IndexSummary,
        IndexedImage, ListImagesRequest, ListImagesResponse, Meeting, SearchHit, SearchImagesRequest, SearchImagesResponse, SummarizeMeetingRequest,
        SummarizeMeetingResponse,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    error::GatewayError,
    flows::{
        images::{Query, SearchParams},
        Flows,
    },
    store::ImageRecord,
    upstream::Deadline,
};

/// Largest `top_k` of a search.
pub const MAX_TOP_K: u32 = 100;
/// Largest ListImages page.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Longest text query, in characters (the text model truncates far earlier; this bounds work).
pub const MAX_QUERY_CHARS: usize = 2000;
/// Metadata bounds per image: entries, key length, value length.
pub const MAX_METADATA: (usize, usize, usize) = (32, 128, 1024);

/// tonic's `BoxStream` for IndexImages' server stream.
type IndexStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<IndexImagesResponse, Status>> + Send>>;
/// tonic's `BoxStream` for SummarizeMeeting's server stream.
type MeetingStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<SummarizeMeetingResponse, Status>> + Send>>;

/// Longest meeting title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest AskMeeting question, in characters.
pub const MAX_QUESTION_CHARS: usize = 1000;
/// Most transcript passages AskMeeting may retrieve.
pub const MAX_ASK_TOP_K: u32 = 20;

/// gRPC handlers over the [`Flows`]. The HTTP edge calls them in-process for the routes
/// that mirror an RPC, so both protocols share one validation.
#[derive(Clone)]
pub struct GatewayHandlers {
    flows: Arc<Flows>,
    /// Deadline of a request that sets none (the server's request timeout).
    default_timeout: Duration,
}

impl GatewayHandlers {
    pub fn new(flows: Arc<Flows>, default_timeout: Duration) -> Self {
        Self { flows, default_timeout }
    }

    /// Checks a SummarizeMeeting config before any audio is read.
    pub fn check_meeting_config(&self, config: &mmc_proto::gateway::v1::MeetingConfig) -> Result<(), Status> {
        if config.title.chars().count() > MAX_TITLE_CHARS {
            return Err(Status::invalid_argument(format!("title is over {MAX_TITLE_CHARS} characters")));
        }
        self.flows.prompts.resolve(&config.prompt_version).map_err(|e| Status::invalid_argument(e.to_string()))?;
        crate::flows::meeting::people::check_participants(&config.participants).map_err(Status::invalid_argument)?;
        Ok(())
    }
}

/// `ResourceExhausted` -> `RESOURCE_EXHAUSTED`: the canonical gRPC code name.
pub fn code_name(code: Code) -> String {
    let debug = format!("{code:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Bounds on user metadata (entries, key and value lengths).
pub fn check_metadata(metadata: &BTreeMap<String, String>, field: &str) -> Result<(), GatewayError> {
    let (entries, key_len, value_len) = MAX_METADATA;
    if metadata.len() > entries {
        return Err(GatewayError::Invalid(format!("{field} has {} entries; the limit is {entries}", metadata.len())));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.chars().count() > key_len || v.chars().count() > value_len {
            return Err(GatewayError::Invalid(format!("{field} key {k:?}: keys must be 1..={key_len} characters and values at most {value_len}")));
        }
    }
    Ok(())
}

/// A stored record as the contract's `ImageRecord` (what every route shows of an image).
pub fn to_proto(record: ImageRecord) -> ProtoRecord {
    ProtoRecord {
        image_id: record.image_id,
        content_hash: record.content_hash,
        source_name: record.source_name,
        caption: record.caption,
        labels: record.labels.into_iter().map(|l| Label { name: l.name, probability: l.probability, class_index: l.class_index }).collect(),
        metadata: record.metadata.into_iter().collect(),
        models: record
            .models
            .into_iter()
            .map(|m| ModelInfo { id: m.id, family: m.family, profile: m.profile, revision: m.revision, dimensions: m.dimensions })
            .collect(),
        indexed_at_unix_ms: record.indexed_at_unix_ms,
    }
}

fn caption_modes(modes: &[i32]) -> Result<Vec<CaptionMode>, GatewayError> {
    if modes.len() > 4 {
        return Err(GatewayError::Invalid(format!("{} modes requested; at most 4", modes.len())));
    }
    if modes.is_empty() {
        return Ok(vec![CaptionMode::AltText]);
    }
    modes
        .iter()
        .map(|m| match CaptionMode::try_from(*m) {
            Ok(CaptionMode::Unspecified) => Ok(CaptionMode::AltText),
            Ok(mode) => Ok(mode),
            Err(_) => Err(GatewayError::Invalid(format!("unknown caption mode {m}"))),
        })
        .collect()
}

/// Indexes the images of one IndexImages stream, one after another, sending an event per
/// image, progress, and the totals. Stops early when the client goes away.
async fn index_stream(
    flows: Arc<Flows>,
    mut input: Streaming<IndexImagesRequest>,
    deadline: Deadline,
    tx: mpsc::Sender<Result<IndexImagesResponse, Status>>,
) {
    let mut summary = IndexSummary::default();
    let mut index = 0u32;
    let send = |event: Event| {
        let tx = tx.clone();
        async move { tx.send(Ok(IndexImagesResponse { event: Some(event) })).await.is_ok() }
    };
    loop {
        let message = match input.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let image = message.image.unwrap_or_default();
        let source_name = image.source_name.clone();
        let metadata: BTreeMap<String, String> = message.metadata.into_iter().collect();
        let result = match check_metadata(&metadata, "metadata") {
            Ok(()) => flows.index_image(image, metadata, deadline).await,
            Err(e) => Err(e),
        };
        let event = match result {
            Ok(indexed) => {
                if indexed.already_indexed {
                    summary.already_indexed += 1;
                } else {
                    summary.indexed += 1;
                }
                let record = to_proto(indexed.record);
                Event::Indexed(IndexedImage {
                    image_id: record.image_id,
                    content_hash: record.content_hash,
                    caption: record.caption,
                    labels: record.labels,
                    already_indexed: indexed.already_indexed,
                    request_index: index,
                })
            }
            Err(e) => {
                summary.failed += 1;
                let status = e.into_status();
                tracing::warn!(request_index = index, source_name, code = ?status.code(), message = status.message(), "image not indexed");
                Event::Failure(IndexFailure {
                    request_index: index,
                    source_name,
                    code: code_name(status.code()),
                    message: status.message().to_string(),
                })
            }
        };
        index += 1;
        let progress = Event::Progress(Progress {
            stage: "index".into(),
            done_units: u64::from(index),
            total_units: 0,
            unit: "images".into(),
            fraction_done: 0.0,
            message: format!("{} indexed, {} already indexed, {} failed", summary.indexed, summary.already_indexed, summary.failed),
        });
        if !send(event).await || !send(progress).await {
            return;
        }
    }
    let _ = send(Event::Summary(summary)).await;
}

/// Feeds the audio chunks of a SummarizeMeeting stream to `audio`. Returns only if the
/// upload fails (a client error, or a second config); a clean end closes `audio` and waits
/// forever, so the caller can race this against the flow.
async fn forward_audio(mut input: Streaming<SummarizeMeetingRequest>, audio: mpsc::Sender<Vec<u8>>) -> Status {
    let error = loop {
        match input.message().await {
            Ok(Some(SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::AudioChunk(bytes)) })) => {
                if audio.send(bytes).await.is_err() {
                    break None;
                }
            }
            Ok(Some(SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::Config(_)) })) => {
                break Some(Status::invalid_argument("config may only be the first message of the stream"))
            }
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    drop(audio);
    match error {
        Some(status) => status,
        None => std::future::pending().await,
    }
}

#[tonic::async_trait]
impl GatewayService for GatewayHandlers {
    async fn index_images(&self, request: Request<Streaming<IndexImagesRequest>>) -> Result<Response<IndexStream>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.default_timeout);
        let (tx, rx) = mpsc::channel(16);
        // The task keeps the request's span, so its stages join the caller's trace.
        tokio::spawn(index_stream(self.flows.clone(), request.into_inner(), deadline, tx).instrument(tracing::Span::current()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn search_images(&self, request: Request<SearchImagesRequest>) -> Result<Response<SearchImagesResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.default_timeout);
        let req = request.into_inner();
        let query = match req.query {
            Some(search_images_request::Query::Text(text)) => {
                let text = text.trim().to_string();
                if text.is_empty() {
                    return Err(Status::invalid_argument("query text is empty"));
                }
                if text.chars().count() > MAX_QUERY_CHARS {
                    return Err(Status::invalid_argument(format!("query text is over {MAX_QUERY_CHARS} characters")));
                }
                Query::Text(text)
            }
            Some(search_images_request::Query::Image(image)) if !image.data.is_empty() => Query::Image(image),
            Some(search_images_request::Query::Image(_)) => return Err(Status::invalid_argument("query image has no data")),
            None => return Err(Status::invalid_argument("set query.text or query.image")),
        };
        let top_k = match req.top_k {
            0 => 10,
            k if k > MAX_TOP_K => return Err(Status::invalid_argument(format!("top_k {k} is over the limit of {MAX_TOP_K}"))),
            k => k,
        };
        if !(-1.0..=1.0).contains(&req.score_threshold) {
            return Err(Status::invalid_argument("score_threshold must be a cosine similarity in [-1, 1]"));
        }
        let metadata_filter: BTreeMap<String, String> = req.metadata_filter.into_iter().collect();
        check_metadata(&metadata_filter, "metadata_filter").map_err(GatewayError::into_status)?;
        let params = SearchParams { top_k: top_k as usize, score_threshold: req.score_threshold, metadata_filter };
        let (hits, timings) = self.flows.search(query, params, deadline).await.map_err(GatewayError::into_status)?;
        Ok(Response::new(SearchImagesResponse {
            hits: hits.into_iter().map(|(record, score)| SearchHit { image: Some(to_proto(record)), score }).collect(),
            timings,
        }))
    }

    async fn delete_image(&self, request: Request<DeleteImageRequest>) -> Result<Response<DeleteImageResponse>, Status> {
        let id = request.into_inner().image_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("image_id is empty"));
        }
        let deleted = self.flows.delete_image(&id).await.map_err(GatewayError::into_status)?;
        Ok(Response::new(DeleteImageResponse { deleted }))
    }

    async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let req = request.into_inner();
        let size = match req.page_size {
            0 => 50,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match req.page_token.as_str() {
            "" => 0,
            token => token.parse::<u64>().map_err(|_| Status::invalid_argument("page_token is not one this server issued"))?,
        };
        let page = self.flows.store.list(after, size as usize).await.map_err(|e| GatewayError::from(e).into_status())?;
        Ok(Response::new(ListImagesResponse {
            images: page.images.into_iter().map(to_proto).collect(),
            next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn describe_image(&self, request: Request<DescribeImageRequest>) -> Result<Response<DescribeImageResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.default_timeout);
        let req = request.into_inner();
        let image = req.image.filter(|i| !i.data.is_empty()).ok_or_else(|| Status::invalid_argument("image with data is required"))?;
        let modes = caption_modes(&req.modes).map_err(GatewayError::into_status)?;
        let description = self.flows.describe(&image, &modes, deadline).await.map_err(GatewayError::into_status)?;
        Ok(Response::new(DescribeImageResponse { captions: description.captions, labels: description.labels, timings: description.timings }))
    }

    async fn summarize_meeting(&self, request: Request<Streaming<SummarizeMeetingRequest>>) -> Result<Response<MeetingStream>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.default_timeout);
        let mut input = request.into_inner();
        let config = match input.message().await? {
            Some(SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::Config(c)) }) => c,
            Some(_) => return Err(Status::invalid_argument("the first message must be config (then audio chunks)")),
            None => return Err(Status::invalid_argument("empty stream: send config, then the recording")),
        };
        self.check_meeting_config(&config)?;
        let (tx, rx) = mpsc::channel(64);
        let (audio_tx, audio_rx) = mpsc::channel(8);
        let flows = self.flows.clone();
        tokio::spawn(
            async move {
                let result = tokio::select! {
                    result = flows.summarize_meeting(config, audio_rx, deadline, &tx) => result.map_err(GatewayError::into_status),
                    status = forward_audio(input, audio_tx) => Err(status),
                };
                let message = result.map(|summary| SummarizeMeetingResponse { event: Some(summarize_meeting_response::Event::Summary(summary)) });
                let _ = tx.send(message).await;
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_meeting(&self, request: Request<GetMeetingRequest>) -> Result<Response<Meeting>, Status> {
        let id = request.into_inner().meeting_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("meeting_id is empty"));
        }
        match self.flows.meetings.get(&id).await.map_err(|e| GatewayError::from(e).into_status())? {
            Some(stored) => Ok(Response::new(stored.meeting)),
            None => Err(Status::not_found(format!("no meeting with id {id:?}"))),
        }
    }

    async fn ask_meeting(&self, request: Request<AskMeetingRequest>) -> Result<Response<AskMeetingResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.default_timeout);
        let req = request.into_inner();
        if req.meeting_id.is_empty() {
            return Err(Status::invalid_argument("meeting_id is empty"));
        }
        let question = req.question.trim();
        if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
            return Err(Status::invalid_argument(format!("question must be 1..={MAX_QUESTION_CHARS} characters")));
        }
        let top_k = match req.top_k {
            0 => 5,
            k if k > MAX_ASK_TOP_K => return Err(Status::invalid_argument(format!("top_k {k} is over the limit of {MAX_ASK_TOP_K}"))),
            k => k,
        };
        let answer = self.flows.ask_meeting(&req.meeting_id, question, top_k as usize, deadline).await.map_err(GatewayError::into_status)?;
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn modes_default_to_alt_text_and_unknown_ones_are_refused() {
        assert_eq!(caption_modes(&[]).unwrap(), vec![CaptionMode::AltText]);
        assert_eq!(caption_modes(&[0, 2]).unwrap(), vec![CaptionMode::AltText, CaptionMode::Detailed]);
        assert!(caption_modes(&[7]).is_err());
        assert!(caption_modes(&[1; 5]).is_err());
    }
}
