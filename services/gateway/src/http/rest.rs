//! The project's own REST routes: the gateway's flows for browsers, `curl` and the web UI.
//! Each route turns its JSON or form into the flow's own types and calls the flow, which
//! validates (so gRPC and REST give the same messages); uploads come as multipart forms
//! and are spooled like transcriptions; meeting progress is streamed as server-sent events.
//!
//! | route | RPC |
//! |---|---|
//! | `POST /v1/images` (multipart `file`..., `metadata` JSON object) | IndexImages |
//! | `GET /v1/images?page_size&page_token` | ListImages |
//! | `DELETE /v1/images/{image_id}` | DeleteImage |
//! | `GET /v1/images/{image_id}/thumbnail` (JPEG) | none: the gateway's thumbnail store |
//! | `POST /v1/images/search` (JSON: `query` or `image_base64`, `top_k`, `score_threshold`, `filter`) | SearchImages |
//! | `POST /v1/images/describe` (multipart `file`, `modes`) | DescribeImage |
//! | `POST /v1/meetings` (multipart `file`, `title`, `language`, `prompt_version`, `participants` comma-separated) → SSE | SummarizeMeeting |
//! | `GET /v1/meetings/{meeting_id}` | GetMeeting |
//! | `GET /v1/meetings?page_size&page_token` | ListMeetings |
//! | `DELETE /v1/meetings/{meeting_id}` | DeleteMeeting |
//! | `POST /v1/meetings/{meeting_id}/ask` (JSON: `question`, `top_k`) | AskMeeting |

use std::{collections::BTreeMap, convert::Infallible, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Multipart, Path, Query, State},
    http::header,
    response::{
        sse::{Event as SseEvent, Sse},
        IntoResponse, Response,
    },
    Json,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{ApiError, ErrorBody, ErrorDetail},
    openai::{parse_json, HttpState},
    upload::{bad_form, read_form, spool, Form},
};
use crate::{
    domain::{
        AskRequest, Caption, CaptionMode, CitedItem, ImageRecord, ImageUpload, ItemReview, Label, ListRequest, Meeting, MeetingEvent, MeetingRequest,
        MeetingSummary, ModelRef, Progress, Query as SearchQuery, SearchRequest, Segment, TextRevision,
    },
    error::{shown, GatewayError},
    upstream::Deadline,
};

/// Largest image accepted by the image routes, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 32 * 1024 * 1024;
/// Most images in one indexing form.
pub const MAX_IMAGES_PER_FORM: usize = 64;

// JSON views of the flows' types (field names as in the protos). They are the response
// bodies, and their `ToSchema` derivations are the OpenAPI document's schemas.

/// A model that contributed to a result.
#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub id: String,
    pub family: String,
    pub profile: String,
    /// First 12 hex digits of the weights' sha256.
    pub revision: String,
    /// Vector dimension (embedding models), else 0.
    pub dimensions: u32,
}

impl From<&ModelRef> for ModelView {
    fn from(m: &ModelRef) -> Self {
        ModelView { id: m.id.clone(), family: m.family.clone(), profile: m.profile.clone(), revision: m.revision.clone(), dimensions: m.dimensions }
    }
}

/// An encoder label.
#[derive(Serialize, ToSchema)]
pub struct LabelView {
    pub name: String,
    pub probability: f32,
    pub class_index: u32,
}

impl From<&Label> for LabelView {
    fn from(l: &Label) -> Self {
        LabelView { name: l.name.clone(), probability: l.probability, class_index: l.class_index }
    }
}

/// Where the web UI (or any client) fetches an indexed image's thumbnail.
fn thumbnail_url(image_id: &str) -> String {
    format!("/v1/images/{image_id}/thumbnail")
}

/// An indexed image.
#[derive(Serialize, ToSchema)]
pub struct ImageView {
    pub image_id: String,
    /// `GET` it for a JPEG thumbnail.
    pub thumbnail_url: String,
    /// sha256 of the uploaded bytes, hex.
    pub content_hash: String,
    pub source_name: String,
    /// Alt text written at indexing.
    pub caption: String,
    pub labels: Vec<LabelView>,
    pub metadata: BTreeMap<String, String>,
    pub models: Vec<ModelView>,
    pub indexed_at_unix_ms: i64,
    /// Confidence of the machine caption's main subject, in [0, 1].
    pub caption_confidence: f32,
    /// The machine was unsure and no person has approved or corrected the alt text yet.
    pub needs_review: bool,
    /// Who wrote `caption`: `machine` or `human`.
    pub caption_source: &'static str,
    /// A longer description a person wrote (empty when none).
    pub description: String,
    /// Increases with every change; send it back (or the ETag in `If-Match`) with a change.
    pub version: u64,
    pub reviewed_by: String,
    pub reviewed_at_unix_ms: i64,
    /// Earlier texts, oldest first (the machine draft stays here once replaced).
    pub history: Vec<RevisionView>,
}

/// An earlier text of a field.
#[derive(Serialize, ToSchema)]
pub struct RevisionView {
    /// `alt_text`, `description`, or a meeting item's `text`, `owner`, `due`.
    pub field: String,
    pub text: String,
    /// `machine` or `human`.
    pub source: &'static str,
    pub replaced_by: String,
    pub replaced_at_unix_ms: i64,
}

impl From<&TextRevision> for RevisionView {
    fn from(r: &TextRevision) -> Self {
        RevisionView {
            field: r.field.clone(),
            text: r.text.clone(),
            source: r.source.as_str(),
            replaced_by: r.replaced_by.clone(),
            replaced_at_unix_ms: r.replaced_at_unix_ms,
        }
    }
}

impl From<&ImageRecord> for ImageView {
    fn from(r: &ImageRecord) -> Self {
        ImageView {
            image_id: r.image_id.clone(),
            thumbnail_url: thumbnail_url(&r.image_id),
            content_hash: r.content_hash.clone(),
            source_name: r.source_name.clone(),
            caption: r.caption.clone(),
            labels: r.labels.iter().map(LabelView::from).collect(),
            metadata: r.metadata.clone(),
            models: r.models.iter().map(ModelView::from).collect(),
            indexed_at_unix_ms: r.indexed_at_unix_ms,
            caption_confidence: r.review.caption_confidence,
            needs_review: r.review.needs_review,
            caption_source: r.review.caption_source.as_str(),
            description: r.review.description.clone(),
            version: r.review.version,
            reviewed_by: r.review.reviewed_by.clone(),
            reviewed_at_unix_ms: r.review.reviewed_at_unix_ms,
            history: r.review.history.iter().map(RevisionView::from).collect(),
        }
    }
}

/// One encoder label a caption rests on.
#[derive(Serialize, ToSchema)]
pub struct EvidenceView {
    pub label: String,
    pub probability: f32,
}

/// A caption of one mode.
#[derive(Serialize, ToSchema)]
pub struct CaptionView {
    /// `alt_text` or `detailed`.
    pub mode: &'static str,
    pub text: String,
    pub confidence: f32,
    /// The text is the template, not the decoder's.
    pub from_template: bool,
    /// The decoder is unsure of the subject and the text says so.
    pub uncertain: bool,
    /// `machine`, or `human` when a person's text for this (indexed) image is returned.
    pub source: &'static str,
    pub attempts: u32,
    pub evidence: Vec<EvidenceView>,
}

impl From<&Caption> for CaptionView {
    fn from(c: &Caption) -> Self {
        CaptionView {
            mode: c.mode.as_str(),
            text: c.text.clone(),
            confidence: c.confidence,
            from_template: c.from_template,
            uncertain: c.uncertain,
            source: c.source.as_str(),
            attempts: c.attempts,
            evidence: c.evidence.iter().map(|e| EvidenceView { label: e.label.clone(), probability: e.probability }).collect(),
        }
    }
}

/// A transcript segment.
#[derive(Serialize, ToSchema)]
pub struct SegmentView {
    pub id: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

impl From<&Segment> for SegmentView {
    fn from(s: &Segment) -> Self {
        SegmentView { id: s.id, start_ms: s.start_ms, end_ms: s.end_ms, text: s.text.trim().to_string() }
    }
}

/// Progress of a meeting summary.
#[derive(Serialize, ToSchema)]
pub struct ProgressView {
    pub stage: String,
    pub done_units: u64,
    pub total_units: u64,
    pub unit: String,
    pub fraction_done: f64,
    pub message: String,
}

impl From<&Progress> for ProgressView {
    fn from(p: &Progress) -> Self {
        ProgressView {
            stage: p.stage.clone(),
            done_units: p.done_units,
            total_units: p.total_units,
            unit: p.unit.clone(),
            fraction_done: p.fraction_done,
            message: p.message.clone(),
        }
    }
}

/// Where a decision or action item stands in a person's review.
#[derive(Serialize, ToSchema)]
pub struct ItemReviewView {
    /// `pending`, `approved` or `rejected`.
    pub status: &'static str,
    /// Who wrote the current text: `machine` or `human`.
    pub source: &'static str,
    pub reviewed_by: String,
    pub reviewed_at_unix_ms: i64,
    /// Send it back as `version` with a change of the item.
    pub version: u32,
    pub history: Vec<RevisionView>,
}

impl From<&ItemReview> for ItemReviewView {
    fn from(r: &ItemReview) -> Self {
        ItemReviewView {
            status: r.status.as_str(),
            source: r.source.as_str(),
            reviewed_by: r.reviewed_by.clone(),
            reviewed_at_unix_ms: r.reviewed_at_unix_ms,
            version: r.version,
            history: r.history.iter().map(RevisionView::from).collect(),
        }
    }
}

/// A note with the transcript segments it rests on.
#[derive(Serialize, ToSchema)]
pub struct CitedView {
    pub text: String,
    pub segment_ids: Vec<u32>,
    pub citation_verified: bool,
    /// Decisions only (key points are not reviewed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<ItemReviewView>,
}

impl CitedView {
    fn of(i: &CitedItem, reviewed: bool) -> Self {
        CitedView {
            text: i.text.clone(),
            segment_ids: i.segment_ids.clone(),
            citation_verified: i.citation_verified,
            review: reviewed.then(|| ItemReviewView::from(&i.review)),
        }
    }
}

/// An action item: the cited line, its owner and due date (empty when none).
#[derive(Serialize, ToSchema)]
pub struct ActionItemView {
    pub text: String,
    pub segment_ids: Vec<u32>,
    pub citation_verified: bool,
    pub owner: String,
    pub due: String,
    pub review: ItemReviewView,
}

/// The notes of a meeting.
#[derive(Serialize, ToSchema)]
pub struct SummaryView {
    pub meeting_id: String,
    pub summary: String,
    pub key_points: Vec<CitedView>,
    pub decisions: Vec<CitedView>,
    pub action_items: Vec<ActionItemView>,
    pub prompt_version: String,
    pub models: Vec<ModelView>,
    /// The meeting's language (ISO 639-1); notes are made for English only.
    pub language: String,
}

impl From<&MeetingSummary> for SummaryView {
    fn from(s: &MeetingSummary) -> Self {
        SummaryView {
            meeting_id: s.meeting_id.clone(),
            summary: s.summary.clone(),
            key_points: s.key_points.iter().map(|i| CitedView::of(i, false)).collect(),
            decisions: s.decisions.iter().map(|i| CitedView::of(i, true)).collect(),
            action_items: s
                .action_items
                .iter()
                .map(|a| ActionItemView {
                    text: a.item.text.clone(),
                    segment_ids: a.item.segment_ids.clone(),
                    citation_verified: a.item.citation_verified,
                    owner: a.owner.clone(),
                    due: a.due.clone(),
                    review: ItemReviewView::from(&a.item.review),
                })
                .collect(),
            prompt_version: s.prompt_version.clone(),
            models: s.models.iter().map(ModelView::from).collect(),
            language: s.language.clone(),
        }
    }
}

/// A stored meeting: transcript and notes.
#[derive(Serialize, ToSchema)]
pub struct MeetingView {
    pub meeting_id: String,
    pub title: String,
    pub language: String,
    pub audio_duration_ms: i64,
    pub participants: Vec<String>,
    pub created_at_unix_ms: i64,
    pub segments: Vec<SegmentView>,
    pub summary: Option<SummaryView>,
    /// Increases with every review change (also the ETag).
    pub version: u64,
    /// A person marked the notes reviewed.
    pub notes_reviewed: bool,
    pub notes_reviewed_by: String,
    pub notes_reviewed_at_unix_ms: i64,
}

impl From<&Meeting> for MeetingView {
    fn from(m: &Meeting) -> Self {
        MeetingView {
            meeting_id: m.meeting_id.clone(),
            title: m.title.clone(),
            language: m.language.clone(),
            audio_duration_ms: m.audio_duration_ms,
            participants: m.participants.clone(),
            created_at_unix_ms: m.created_at_unix_ms,
            segments: m.segments.iter().map(SegmentView::from).collect(),
            summary: m.summary.as_ref().map(SummaryView::from),
            version: m.review.version,
            notes_reviewed: m.review.reviewed,
            notes_reviewed_by: m.review.reviewed_by.clone(),
            notes_reviewed_at_unix_ms: m.review.reviewed_at_unix_ms,
        }
    }
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("views serialize")
}

// ---------------------------------------------------------------------------------------
// Images

/// One uploaded file's result: the image, or why it was not indexed.
#[derive(Serialize, ToSchema)]
pub struct IndexResult {
    pub source_name: String,
    /// The same content was indexed before (the id is the content's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_indexed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// One result per uploaded file, in upload order.
#[derive(Serialize, ToSchema)]
pub struct IndexResponse {
    pub results: Vec<IndexResult>,
}

/// `POST /v1/images`'s form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct IndexForm {
    /// The images (repeat the field); each at most 32 MiB.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
    /// A JSON object of strings, stored with every image of the form.
    metadata: Option<String>,
}

/// `POST /v1/images`: indexes each uploaded file (idempotent by content), in order.
#[utoipa::path(post, path = "/v1/images", tag = "images", request_body(content = IndexForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "One result per file (a corrupt file fails alone)", body = IndexResponse), (status = "4XX", body = ErrorBody)))]
pub async fn index_images(State(state): State<Arc<HttpState>>, mut form: Multipart) -> Result<Json<IndexResponse>, ApiError> {
    let mut metadata = BTreeMap::new();
    let mut results = Vec::new();
    let deadline = Deadline::after(state.request_timeout);
    while let Some(field) = form.next_field().await.map_err(bad_form)? {
        match field.name().unwrap_or_default() {
            "metadata" => {
                let text = field.text().await.map_err(bad_form)?;
                metadata = serde_json::from_str(&text)
                    .map_err(|e| ApiError::invalid("metadata", format!("metadata must be a JSON object of strings: {e}")))?;
                crate::flows::images::check_metadata(&metadata, "metadata")?;
            }
            "file" => {
                if results.len() == MAX_IMAGES_PER_FORM {
                    return Err(ApiError::invalid("file", format!("at most {MAX_IMAGES_PER_FORM} images per request")));
                }
                let upload = spool(field, MAX_IMAGE_BYTES).await?;
                let image = ImageUpload { data: upload.read_all().await?.into(), source_name: upload.name.clone() };
                // One image's failure (corrupt, too large) is reported and the rest go on.
                results.push(match state.flows.index_image(image, metadata.clone(), deadline).await {
                    Ok(i) => IndexResult {
                        source_name: upload.name,
                        already_indexed: Some(i.already_indexed),
                        image: Some(ImageView::from(&i.record)),
                        error: None,
                    },
                    Err(e) => IndexResult { source_name: upload.name, already_indexed: None, image: None, error: Some(ApiError::from(e).detail()) },
                });
            }
            _ => {}
        }
    }
    if results.is_empty() {
        return Err(ApiError::invalid("file", "no file was uploaded (multipart field `file`, repeatable)"));
    }
    Ok(Json(IndexResponse { results }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Images per page; 0 = 50.
    #[serde(default)]
    page_size: u32,
    /// Empty for the first page, else the previous page's `next_page_token`.
    #[serde(default)]
    page_token: String,
    /// Only the review queue: images whose alt text the machine was unsure of and nobody
    /// reviewed, least confident first.
    #[serde(default)]
    needs_review: bool,
}

/// A page of the index.
#[derive(Serialize, ToSchema)]
pub struct ImagePageView {
    pub images: Vec<ImageView>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// `GET /v1/images`: the index, oldest first, a page at a time; with `needs_review=true`,
/// the review queue, least confident first.
#[utoipa::path(get, path = "/v1/images", tag = "images", params(ListParams),
    responses((status = 200, description = "A page", body = ImagePageView), (status = "4XX", body = ErrorBody)))]
pub async fn list_images(State(state): State<Arc<HttpState>>, Query(p): Query<ListParams>) -> Result<Json<ImagePageView>, ApiError> {
    let page = state.flows.list_images(ListRequest { page_size: p.page_size, page_token: p.page_token, needs_review: p.needs_review }).await?;
    Ok(Json(ImagePageView { images: page.images.iter().map(ImageView::from).collect(), next_page_token: page.next_page_token }))
}

/// What was deleted.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub image_id: String,
    pub deleted: bool,
}

/// `DELETE /v1/images/{image_id}` (404 when absent; the thumbnail goes too).
#[utoipa::path(delete, path = "/v1/images/{image_id}", tag = "images", params(("image_id" = String, Path)),
    responses((status = 200, description = "Deleted", body = Deleted), (status = "4XX", body = ErrorBody)))]
pub async fn delete_image(State(state): State<Arc<HttpState>>, Path(image_id): Path<String>) -> Result<Json<Deleted>, ApiError> {
    if !state.flows.delete_image(&image_id).await? {
        return Err(GatewayError::NotFound(format!("no image with id {}", shown(&image_id))).into());
    }
    Ok(Json(Deleted { image_id, deleted: true }))
}

/// `GET /v1/images/{image_id}/thumbnail`: a JPEG of at most
/// [`THUMBNAIL_SIDE`](crate::flows::images::THUMBNAIL_SIDE) pixels a side. Ids are
/// content hashes, so a thumbnail never changes: browsers may cache it for good.
#[utoipa::path(get, path = "/v1/images/{image_id}/thumbnail", tag = "images", params(("image_id" = String, Path)),
    responses((status = 200, description = "The thumbnail", content_type = "image/jpeg", body = Vec<u8>), (status = "4XX", body = ErrorBody)))]
pub async fn thumbnail(State(state): State<Arc<HttpState>>, Path(image_id): Path<String>) -> Result<Response, ApiError> {
    let jpeg = state.flows.thumbnail(&image_id).await?;
    let headers = [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")];
    Ok((headers, jpeg).into_response())
}

/// A search: exactly one of `query` and `image_base64`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Words to search by.
    query: Option<String>,
    /// An image to search by (its encoded bytes, base64).
    #[schema(content_encoding = "base64")]
    image_base64: Option<String>,
    /// Hits wanted; 0 = 10.
    #[serde(default)]
    top_k: u32,
    /// Hits scoring below this cosine are dropped. Default: none.
    score_threshold: Option<f32>,
    /// Every pair must be in an image's metadata.
    #[serde(default)]
    filter: BTreeMap<String, String>,
}

/// One hit.
#[derive(Serialize, ToSchema)]
pub struct SearchHitView {
    pub score: f32,
    pub image: ImageView,
}

/// Hits, best first.
#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<SearchHitView>,
}

/// `POST /v1/images/search`: by words (`query`) or by an image (`image_base64`).
#[utoipa::path(post, path = "/v1/images/search", tag = "images", request_body = SearchBody,
    responses((status = 200, description = "Hits, best first", body = SearchResponse), (status = "4XX", body = ErrorBody)))]
pub async fn search_images(State(state): State<Arc<HttpState>>, body: Bytes) -> Result<Json<SearchResponse>, ApiError> {
    let b: SearchBody = parse_json(&body)?;
    let query = match (b.query, b.image_base64) {
        (Some(q), None) => SearchQuery::Text(q),
        (None, Some(data)) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| ApiError::invalid("image_base64", format!("not base64: {e}")))?;
            SearchQuery::Image(ImageUpload { data: data.into(), source_name: "query".into() })
        }
        _ => return Err(ApiError::invalid("query", "give exactly one of query (words) and image_base64")),
    };
    let request = SearchRequest { query, top_k: b.top_k, score_threshold: b.score_threshold.unwrap_or(-1.0), metadata_filter: b.filter };
    let r = state.flows.search(request, Deadline::after(state.request_timeout)).await?;
    Ok(Json(SearchResponse { hits: r.hits.iter().map(|h| SearchHitView { score: h.score, image: ImageView::from(&h.image) }).collect() }))
}

/// `POST /v1/images/describe`'s form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DescribeForm {
    /// The image, at most 32 MiB.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Comma-separated: `alt_text`, `detailed` (default: alt_text).
    modes: Option<String>,
}

/// The captions of one image.
#[derive(Serialize, ToSchema)]
pub struct DescribeResponse {
    /// One per requested mode, in order.
    pub captions: Vec<CaptionView>,
    /// The encoder labels the captions rest on.
    pub labels: Vec<LabelView>,
    /// A caption is uncertain and no person has reviewed this image.
    pub needs_review: bool,
    /// Id of the indexed image with the same content (empty when not indexed).
    pub image_id: String,
}

/// `POST /v1/images/describe`: alt text and/or a detailed description of one image.
#[utoipa::path(post, path = "/v1/images/describe", tag = "images", request_body(content = DescribeForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Captions", body = DescribeResponse), (status = "4XX", body = ErrorBody)))]
pub async fn describe_image(State(state): State<Arc<HttpState>>, mut form: Multipart) -> Result<Json<DescribeResponse>, ApiError> {
    let mut image = None;
    let mut modes = Vec::new();
    while let Some(field) = form.next_field().await.map_err(bad_form)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let upload = spool(field, MAX_IMAGE_BYTES).await?;
                image = Some(ImageUpload { data: upload.read_all().await?.into(), source_name: upload.name });
            }
            "modes" | "modes[]" | "mode" => {
                for m in field.text().await.map_err(bad_form)?.split(',') {
                    modes.push(match m.trim() {
                        "alt_text" => CaptionMode::AltText,
                        "detailed" => CaptionMode::Detailed,
                        other => return Err(ApiError::invalid("modes", format!("{}: expected alt_text or detailed", shown(other)))),
                    });
                }
            }
            _ => {}
        }
    }
    let image = image.ok_or_else(|| ApiError::invalid("file", "no file was uploaded (multipart field `file`)"))?;
    let r = state.flows.describe(&image, &modes, Deadline::after(state.request_timeout)).await?;
    Ok(Json(DescribeResponse {
        captions: r.captions.iter().map(CaptionView::from).collect(),
        labels: r.labels.iter().map(LabelView::from).collect(),
        needs_review: r.needs_review,
        image_id: r.image_id.unwrap_or_default(),
    }))
}

// ---------------------------------------------------------------------------------------
// Meetings

/// `POST /v1/meetings`' form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MeetingForm {
    /// The recording (WAV, FLAC, MP3, OGG, M4A).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    title: Option<String>,
    /// ISO 639-1 code; empty to detect.
    language: Option<String>,
    prompt_version: Option<String>,
    /// Attendee names, comma-separated: owners are matched to them.
    participants: Option<String>,
}

/// `POST /v1/meetings`: summarizes an uploaded recording; the response is a stream of
/// server-sent events `progress`, `segment` (as the transcript is decoded), then one
/// `summary` (or `error`).
#[utoipa::path(post, path = "/v1/meetings", tag = "meetings", request_body(content = MeetingForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Events: progress (ProgressView), segment (SegmentView), then summary (SummaryView) or error (ErrorBody)",
        content_type = "text/event-stream", body = String), (status = "4XX", body = ErrorBody)))]
pub async fn create_meeting(State(state): State<Arc<HttpState>>, form: Multipart) -> Result<Response, ApiError> {
    let mut config = MeetingRequest::default();
    let Form { file: upload, fields } = read_form(form, state.max_upload_bytes, "recording").await?;
    for (name, value) in fields {
        match name.as_str() {
            "title" => config.title = value,
            "prompt_version" => config.prompt_version = value,
            "participants" => config.participants.extend(value.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty())),
            "language" => config.transcription.language = value,
            _ => {}
        }
    }
    state.flows.check_meeting(&config)?;
    config.transcription.total_bytes = upload.size;
    let audio = upload.stream()?;
    // The flow sends progress and segments into `tx`, then its result follows; when the
    // client leaves, the stream is dropped, the flow's next send fails and it stops.
    let (events_tx, events_rx) = mpsc::channel(64);
    let (tx, rx) = mpsc::channel(1);
    let flows = state.flows.clone();
    let deadline = Deadline::after(state.request_timeout);
    tokio::spawn(async move {
        let result = flows.summarize_meeting(config, audio, deadline, &events_tx).await;
        drop(events_tx);
        let _ = tx.send(result).await;
    });
    let event = |name: &str, v: Value| Ok::<_, Infallible>(SseEvent::default().event(name).data(v.to_string()));
    let progress = ReceiverStream::new(events_rx).map(move |e| match e {
        MeetingEvent::Progress(p) => event("progress", to_value(ProgressView::from(&p))),
        MeetingEvent::Segment(s) => event("segment", to_value(SegmentView::from(&s))),
    });
    let last = ReceiverStream::new(rx).map(move |result| match result {
        Ok(summary) => event("summary", to_value(SummaryView::from(&summary))),
        Err(e) => event("error", ApiError::from(e).body()),
    });
    Ok(Sse::new(progress.chain(last)).into_response())
}

/// `GET /v1/meetings/{meeting_id}`: transcript and summary.
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}", tag = "meetings", params(("meeting_id" = String, Path)),
    responses((status = 200, description = "The meeting", body = MeetingView), (status = "4XX", body = ErrorBody)))]
pub async fn get_meeting(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>) -> Result<Json<MeetingView>, ApiError> {
    let m = state.flows.get_meeting(&meeting_id).await?;
    Ok(Json(MeetingView::from(&m)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MeetingListParams {
    /// Meetings per page; 0 = 50.
    #[serde(default)]
    page_size: u32,
    /// Empty for the first page, else the previous page's `next_page_token`.
    #[serde(default)]
    page_token: String,
}

/// One stored meeting in a list.
#[derive(Serialize, ToSchema)]
pub struct MeetingListingView {
    pub meeting_id: String,
    pub title: String,
    pub created_at_unix_ms: i64,
    pub audio_duration_ms: i64,
    pub notes_reviewed: bool,
    pub decisions: u32,
    pub action_items: u32,
}

/// A page of stored meetings, newest first.
#[derive(Serialize, ToSchema)]
pub struct MeetingPageView {
    pub meetings: Vec<MeetingListingView>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// `GET /v1/meetings`: the stored meetings, newest first.
#[utoipa::path(get, path = "/v1/meetings", tag = "meetings", params(MeetingListParams),
    responses((status = 200, description = "A page", body = MeetingPageView), (status = "4XX", body = ErrorBody)))]
pub async fn list_meetings(State(state): State<Arc<HttpState>>, Query(p): Query<MeetingListParams>) -> Result<Json<MeetingPageView>, ApiError> {
    let page = state.flows.list_meetings(p.page_size, &p.page_token).await?;
    let meetings = page
        .meetings
        .into_iter()
        .map(|m| MeetingListingView {
            meeting_id: m.meeting_id,
            title: m.title,
            created_at_unix_ms: m.created_at_unix_ms,
            audio_duration_ms: m.audio_duration_ms,
            notes_reviewed: m.notes_reviewed,
            decisions: m.decisions,
            action_items: m.action_items,
        })
        .collect();
    Ok(Json(MeetingPageView { meetings, next_page_token: page.next_page_token }))
}

/// What was deleted.
#[derive(Serialize, ToSchema)]
pub struct MeetingDeleted {
    pub meeting_id: String,
    pub deleted: bool,
}

/// `DELETE /v1/meetings/{meeting_id}`: transcript, notes and vectors, for good (404 when absent).
#[utoipa::path(delete, path = "/v1/meetings/{meeting_id}", tag = "meetings", params(("meeting_id" = String, Path)),
    responses((status = 200, description = "Deleted", body = MeetingDeleted), (status = "4XX", body = ErrorBody)))]
pub async fn delete_meeting(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>) -> Result<Json<MeetingDeleted>, ApiError> {
    state.flows.delete_meeting(&meeting_id).await?;
    Ok(Json(MeetingDeleted { meeting_id, deleted: true }))
}

/// A question about a meeting.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    question: String,
    /// Transcript passages to retrieve; 0 = 5.
    #[serde(default)]
    top_k: u32,
}

/// A transcript passage an answer cites.
#[derive(Serialize, ToSchema)]
pub struct CitationView {
    pub segment_id: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

/// An answer that cites the transcript.
#[derive(Serialize, ToSchema)]
pub struct AnswerView {
    pub answer: String,
    /// The meeting answers the question.
    pub answerable: bool,
    pub citations: Vec<CitationView>,
    /// `model` (the model's checked answer), `extractive` (a transcript line quoted) or
    /// `none` ("The meeting does not say.").
    pub source: &'static str,
    /// Why the model's answer was withheld, when `source` is `extractive`.
    pub withheld_reason: String,
}

/// `POST /v1/meetings/{meeting_id}/ask`: an answer that cites the transcript, or "the
/// meeting does not say".
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/ask", tag = "meetings", params(("meeting_id" = String, Path)), request_body = AskBody,
    responses((status = 200, description = "The answer", body = AnswerView), (status = "4XX", body = ErrorBody)))]
pub async fn ask_meeting(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>, body: Bytes) -> Result<Json<AnswerView>, ApiError> {
    let b: AskBody = parse_json(&body)?;
    let ask = AskRequest { meeting_id, question: b.question, top_k: b.top_k };
    let r = state.flows.ask_meeting(ask, Deadline::after(state.request_timeout)).await?;
    Ok(Json(AnswerView {
        answer: r.answer,
        answerable: r.answerable,
        citations: r
            .citations
            .into_iter()
            .map(|c| CitationView { segment_id: c.segment_id, start_ms: c.start_ms, end_ms: c.end_ms, text: c.text })
            .collect(),
        source: r.source.as_str(),
        withheld_reason: r.withheld_reason,
    }))
}
