//! The gateway's gRPC edge: `gateway.v1.GatewayService`. Each handler turns its protobuf
//! request into the flow's own types ([`convert`]), calls the flow (which validates), and
//! maps the result back, errors once through [`convert::status`]. The HTTP edge
//! ([`crate::http`]) is its sibling over the same flows; neither calls the other.

pub mod convert;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use mmc_proto::{
    common::v1::Progress,
    gateway::v1::{
        gateway_service_server::GatewayService, index_images_response::Event, search_images_request, summarize_meeting_request,
        summarize_meeting_response, ApproveImageRequest, AskMeetingRequest, AskMeetingResponse, DeleteImageRequest, DeleteImageResponse,
        DeleteMeetingRequest, DeleteMeetingResponse, DescribeImageRequest, DescribeImageResponse, ExportMeetingRequest, ExportMeetingResponse,
        GetImageRequest, GetMeetingRequest, ImageRecord, IndexFailure, IndexImagesRequest, IndexImagesResponse, IndexSummary, IndexedImage,
        ListImagesRequest, ListImagesResponse, ListMeetingsRequest, ListMeetingsResponse, MarkMeetingReviewedRequest, Meeting, MeetingListing,
        SearchHit, SearchImagesRequest, SearchImagesResponse, SummarizeMeetingRequest, SummarizeMeetingResponse, UpdateImageRequest,
        UpdateMeetingItemRequest,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{metadata::MetadataMap, Request, Response, Status, Streaming};
use tracing::Instrument;

use self::convert::{code_name, status};
use crate::{
    domain::{AskRequest, CaptionMode, ListRequest, MeetingRequest, Query, SearchRequest, TextSource},
    flows::Flows,
    upstream::Deadline,
};

/// tonic's `BoxStream` for IndexImages' server stream.
type IndexStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<IndexImagesResponse, Status>> + Send>>;
/// tonic's `BoxStream` for SummarizeMeeting's server stream.
type MeetingStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<SummarizeMeetingResponse, Status>> + Send>>;

/// gRPC handlers over the [`Flows`].
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

    /// The request's `grpc-timeout`, capped by the server's request timeout.
    fn deadline(&self, metadata: &MetadataMap) -> Deadline {
        let headers = metadata.clone().into_headers();
        let timeout = mmc_runtime::policy::parse_grpc_timeout(&headers).map_or(self.default_timeout, |t| t.min(self.default_timeout));
        Deadline::after(timeout)
    }
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
        let image = convert::image(message.image.unwrap_or_default());
        let source_name = image.source_name.clone();
        let metadata: BTreeMap<String, String> = message.metadata.into_iter().collect();
        let event = match flows.index_image(image, metadata, deadline).await {
            Ok(indexed) => {
                if indexed.already_indexed {
                    summary.already_indexed += 1;
                } else {
                    summary.indexed += 1;
                }
                let record = convert::record(indexed.record);
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
                let status = status(e);
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
        let deadline = self.deadline(request.metadata());
        let (tx, rx) = mpsc::channel(16);
        // The task keeps the request's span, so its stages join the caller's trace.
        tokio::spawn(index_stream(self.flows.clone(), request.into_inner(), deadline, tx).instrument(tracing::Span::current()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn search_images(&self, request: Request<SearchImagesRequest>) -> Result<Response<SearchImagesResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let req = request.into_inner();
        let query = match req.query {
            Some(search_images_request::Query::Text(text)) => Query::Text(text),
            Some(search_images_request::Query::Image(image)) => Query::Image(convert::image(image)),
            None => return Err(Status::invalid_argument("set query.text or query.image")),
        };
        let search = SearchRequest {
            query,
            top_k: req.top_k,
            score_threshold: req.score_threshold,
            metadata_filter: req.metadata_filter.into_iter().collect(),
        };
        let results = self.flows.search(search, deadline).await.map_err(status)?;
        Ok(Response::new(SearchImagesResponse {
            hits: results.hits.into_iter().map(|h| SearchHit { image: Some(convert::record(h.image)), score: h.score }).collect(),
            timings: results.timings.into_iter().map(convert::timing).collect(),
        }))
    }

    async fn delete_image(&self, request: Request<DeleteImageRequest>) -> Result<Response<DeleteImageResponse>, Status> {
        let deleted = self.flows.delete_image(&request.into_inner().image_id).await.map_err(status)?;
        Ok(Response::new(DeleteImageResponse { deleted }))
    }

    async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let req = request.into_inner();
        let list = ListRequest { page_size: req.page_size, page_token: req.page_token, needs_review: req.needs_review };
        let page = self.flows.list_images(list).await.map_err(status)?;
        Ok(Response::new(ListImagesResponse {
            images: page.images.into_iter().map(convert::record).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn describe_image(&self, request: Request<DescribeImageRequest>) -> Result<Response<DescribeImageResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let req = request.into_inner();
        let image = req.image.map(convert::image).unwrap_or_default();
        let modes = convert::caption_modes(&req.modes).map_err(status)?;
        let description = self.flows.describe(&image, &modes, deadline).await.map_err(status)?;
        let alt_source = description.captions.iter().find(|c| c.mode == CaptionMode::AltText).map_or(TextSource::Machine, |c| c.source);
        Ok(Response::new(DescribeImageResponse {
            captions: description.captions.into_iter().map(convert::caption).collect(),
            labels: description.labels.into_iter().map(convert::label).collect(),
            timings: description.timings.into_iter().map(convert::timing).collect(),
            needs_review: description.needs_review,
            source: convert::source(alt_source) as i32,
            image_id: description.image_id.unwrap_or_default(),
        }))
    }

    async fn get_image(&self, request: Request<GetImageRequest>) -> Result<Response<ImageRecord>, Status> {
        let record = self.flows.get_image(&request.into_inner().image_id).await.map_err(status)?;
        Ok(Response::new(convert::record(record)))
    }

    async fn update_image(&self, request: Request<UpdateImageRequest>) -> Result<Response<ImageRecord>, Status> {
        let deadline = self.deadline(request.metadata());
        let record = self.flows.update_image(convert::image_edit(request.into_inner()), deadline).await.map_err(status)?;
        Ok(Response::new(convert::record(record)))
    }

    async fn approve_image(&self, request: Request<ApproveImageRequest>) -> Result<Response<ImageRecord>, Status> {
        let req = request.into_inner();
        let record = self.flows.approve_image(&req.image_id, &req.reviewer, req.expected_version).await.map_err(status)?;
        Ok(Response::new(convert::record(record)))
    }

    async fn summarize_meeting(&self, request: Request<Streaming<SummarizeMeetingRequest>>) -> Result<Response<MeetingStream>, Status> {
        let deadline = self.deadline(request.metadata());
        let mut input = request.into_inner();
        let config = match input.message().await? {
            Some(SummarizeMeetingRequest { payload: Some(summarize_meeting_request::Payload::Config(c)) }) => c,
            Some(_) => return Err(Status::invalid_argument("the first message must be config (then audio chunks)")),
            None => return Err(Status::invalid_argument("empty stream: send config, then the recording")),
        };
        let meeting = MeetingRequest {
            title: config.title,
            prompt_version: config.prompt_version,
            participants: config.participants,
            transcription: convert::transcribe_options(config.transcription.unwrap_or_default()).map_err(status)?,
        };
        self.flows.check_meeting(&meeting).map_err(status)?;
        let (tx, rx) = mpsc::channel(64);
        let (events_tx, events_rx) = mpsc::channel(64);
        let (audio_tx, audio_rx) = mpsc::channel(8);
        let flows = self.flows.clone();
        tokio::spawn(
            async move {
                let result = tokio::select! {
                    result = flows.summarize_meeting(meeting, audio_rx, deadline, &events_tx) => result.map_err(status),
                    status = forward_audio(input, audio_tx) => Err(status),
                };
                drop(events_tx);
                let message = result
                    .map(|summary| SummarizeMeetingResponse { event: Some(summarize_meeting_response::Event::Summary(convert::summary(summary))) });
                let _ = tx.send(message).await;
            }
            .instrument(tracing::Span::current()),
        );
        // The flow's events first (its channel closes when it returns), then the result.
        let events = ReceiverStream::new(events_rx).map(|e| Ok(SummarizeMeetingResponse { event: Some(convert::meeting_event(e)) }));
        Ok(Response::new(Box::pin(events.chain(ReceiverStream::new(rx)))))
    }

    async fn get_meeting(&self, request: Request<GetMeetingRequest>) -> Result<Response<Meeting>, Status> {
        let meeting = self.flows.get_meeting(&request.into_inner().meeting_id).await.map_err(status)?;
        Ok(Response::new(convert::meeting(meeting)))
    }

    async fn ask_meeting(&self, request: Request<AskMeetingRequest>) -> Result<Response<AskMeetingResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let req = request.into_inner();
        let ask = AskRequest { meeting_id: req.meeting_id, question: req.question, top_k: req.top_k };
        let answer = self.flows.ask_meeting(ask, deadline).await.map_err(status)?;
        Ok(Response::new(convert::answer(answer)))
    }

    async fn list_meetings(&self, request: Request<ListMeetingsRequest>) -> Result<Response<ListMeetingsResponse>, Status> {
        let req = request.into_inner();
        let page = self.flows.list_meetings(req.page_size, &req.page_token).await.map_err(status)?;
        Ok(Response::new(ListMeetingsResponse {
            meetings: page
                .meetings
                .into_iter()
                .map(|m| MeetingListing {
                    meeting_id: m.meeting_id,
                    title: m.title,
                    created_at_unix_ms: m.created_at_unix_ms,
                    audio_duration_ms: m.audio_duration_ms,
                    notes_reviewed: m.notes_reviewed,
                    decisions: m.decisions,
                    action_items: m.action_items,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_meeting(&self, request: Request<DeleteMeetingRequest>) -> Result<Response<DeleteMeetingResponse>, Status> {
        self.flows.delete_meeting(&request.into_inner().meeting_id).await.map_err(status)?;
        Ok(Response::new(DeleteMeetingResponse { deleted: true }))
    }

    async fn update_meeting_item(&self, request: Request<UpdateMeetingItemRequest>) -> Result<Response<Meeting>, Status> {
        let edit = convert::item_edit(request.into_inner()).map_err(status)?;
        let meeting = self.flows.update_meeting_item(edit).await.map_err(status)?;
        Ok(Response::new(convert::meeting(meeting)))
    }

    async fn mark_meeting_reviewed(&self, request: Request<MarkMeetingReviewedRequest>) -> Result<Response<Meeting>, Status> {
        let req = request.into_inner();
        let meeting = self.flows.mark_meeting_reviewed(&req.meeting_id, &req.reviewer, req.expected_version).await.map_err(status)?;
        Ok(Response::new(convert::meeting(meeting)))
    }

    async fn export_meeting(&self, request: Request<ExportMeetingRequest>) -> Result<Response<ExportMeetingResponse>, Status> {
        let req = request.into_inner();
        let format = convert::export_format(req.format).map_err(status)?;
        let export = self.flows.export_meeting(&req.meeting_id, format).await.map_err(status)?;
        Ok(Response::new(ExportMeetingResponse { content: export.content, content_type: export.content_type.into(), file_name: export.file_name }))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::convert::*;
    use crate::domain::CaptionMode;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn modes_default_to_alt_text_and_unknown_ones_are_refused() {
        assert_eq!(caption_modes(&[0, 2]).unwrap(), vec![CaptionMode::AltText, CaptionMode::Detailed]);
        assert!(caption_modes(&[7]).is_err());
    }
}
