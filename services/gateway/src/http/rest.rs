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
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};

use super::{
    error::ApiError,
    openai::{parse_json, HttpState},
    upload::{bad_form, read_form, spool, Form},
};
use crate::{
    domain::{
        AskRequest, Caption, CaptionMode, CitedItem, ImageRecord, ImageUpload, Label, ListRequest, Meeting, MeetingEvent, MeetingRequest,
        MeetingSummary, ModelRef, Progress, Query as SearchQuery, SearchRequest, Segment,
    },
    error::GatewayError,
    upstream::Deadline,
};

/// Largest image accepted by the image routes, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 32 * 1024 * 1024;
/// Most images in one indexing form.
pub const MAX_IMAGES_PER_FORM: usize = 64;

// JSON views of the flows' types (field names as in the protos).

fn model_json(m: &ModelRef) -> Value {
    json!({ "id": m.id, "family": m.family, "profile": m.profile, "revision": m.revision, "dimensions": m.dimensions })
}

fn label_json(l: &Label) -> Value {
    json!({ "name": l.name, "probability": l.probability, "class_index": l.class_index })
}

/// Where the web UI (or any client) fetches an indexed image's thumbnail.
fn thumbnail_url(image_id: &str) -> String {
    format!("/v1/images/{image_id}/thumbnail")
}

fn image_json(r: &ImageRecord) -> Value {
    json!({
        "image_id": r.image_id, "thumbnail_url": thumbnail_url(&r.image_id), "content_hash": r.content_hash, "source_name": r.source_name, "caption": r.caption,
        "labels": r.labels.iter().map(label_json).collect::<Vec<_>>(), "metadata": r.metadata,
        "models": r.models.iter().map(model_json).collect::<Vec<_>>(), "indexed_at_unix_ms": r.indexed_at_unix_ms,
    })
}

fn caption_json(c: &Caption) -> Value {
    json!({
        "mode": c.mode.as_str(), "text": c.text, "confidence": c.confidence, "from_template": c.from_template, "attempts": c.attempts,
        "evidence": c.evidence.iter().map(|e| json!({ "label": e.label, "probability": e.probability })).collect::<Vec<_>>(),
    })
}

fn segment_json(s: &Segment) -> Value {
    json!({ "id": s.id, "start_ms": s.start_ms, "end_ms": s.end_ms, "text": s.text.trim() })
}

fn progress_json(p: &Progress) -> Value {
    json!({ "stage": p.stage, "done_units": p.done_units, "total_units": p.total_units, "unit": p.unit,
            "fraction_done": p.fraction_done, "message": p.message })
}

fn summary_json(s: &MeetingSummary) -> Value {
    let cited = |i: &CitedItem| json!({ "text": i.text, "segment_ids": i.segment_ids, "citation_verified": i.citation_verified });
    json!({
        "meeting_id": s.meeting_id, "summary": s.summary,
        "key_points": s.key_points.iter().map(cited).collect::<Vec<_>>(),
        "decisions": s.decisions.iter().map(cited).collect::<Vec<_>>(),
        "action_items": s.action_items.iter().map(|a| {
            let mut v = cited(&a.item);
            v["owner"] = json!(a.owner);
            v["due"] = json!(a.due);
            v
        }).collect::<Vec<_>>(),
        "prompt_version": s.prompt_version,
        "models": s.models.iter().map(model_json).collect::<Vec<_>>(),
    })
}

fn meeting_json(m: &Meeting) -> Value {
    json!({
        "meeting_id": m.meeting_id, "title": m.title, "language": m.language, "audio_duration_ms": m.audio_duration_ms,
        "participants": m.participants,
        "created_at_unix_ms": m.created_at_unix_ms, "segments": m.segments.iter().map(segment_json).collect::<Vec<_>>(),
        "summary": m.summary.as_ref().map(summary_json),
    })
}

// ---------------------------------------------------------------------------------------
// Images

/// `POST /v1/images`: indexes each uploaded file (idempotent by content), in order.
pub async fn index_images(State(state): State<Arc<HttpState>>, mut form: Multipart) -> Result<Json<Value>, ApiError> {
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
                    Ok(i) => json!({ "source_name": upload.name, "already_indexed": i.already_indexed,
                                     "image": image_json(&i.record) }),
                    Err(e) => {
                        let e = ApiError::from(e);
                        json!({ "source_name": upload.name, "error": e.body()["error"] })
                    }
                });
            }
            _ => {}
        }
    }
    if results.is_empty() {
        return Err(ApiError::invalid("file", "no file was uploaded (multipart field `file`, repeatable)"));
    }
    Ok(Json(json!({ "results": results })))
}

#[derive(Deserialize)]
pub struct ListParams {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

/// `GET /v1/images`: the index, oldest first, a page at a time.
pub async fn list_images(State(state): State<Arc<HttpState>>, Query(p): Query<ListParams>) -> Result<Json<Value>, ApiError> {
    let page = state.flows.list_images(ListRequest { page_size: p.page_size, page_token: p.page_token }).await?;
    Ok(Json(json!({ "images": page.images.iter().map(image_json).collect::<Vec<_>>(), "next_page_token": page.next_page_token })))
}

/// `DELETE /v1/images/{image_id}`.
pub async fn delete_image(State(state): State<Arc<HttpState>>, Path(image_id): Path<String>) -> Result<Json<Value>, ApiError> {
    if !state.flows.delete_image(&image_id).await? {
        return Err(GatewayError::NotFound(format!("no image with id {image_id:?}")).into());
    }
    Ok(Json(json!({ "image_id": image_id, "deleted": true })))
}

/// `GET /v1/images/{image_id}/thumbnail`: a JPEG of at most
/// [`THUMBNAIL_SIDE`](crate::flows::images::THUMBNAIL_SIDE) pixels a side. Ids are
/// content hashes, so a thumbnail never changes: browsers may cache it for good.
pub async fn thumbnail(State(state): State<Arc<HttpState>>, Path(image_id): Path<String>) -> Result<Response, ApiError> {
    let jpeg = state.flows.thumbnail(&image_id).await?;
    let headers = [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")];
    Ok((headers, jpeg).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    query: Option<String>,
    image_base64: Option<String>,
    #[serde(default)]
    top_k: u32,
    /// Default: no threshold.
    score_threshold: Option<f32>,
    #[serde(default)]
    filter: BTreeMap<String, String>,
}

/// `POST /v1/images/search`: by words (`query`) or by an image (`image_base64`).
pub async fn search_images(State(state): State<Arc<HttpState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
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
    let hits: Vec<Value> = r.hits.iter().map(|h| json!({ "score": h.score, "image": image_json(&h.image) })).collect();
    Ok(Json(json!({ "hits": hits })))
}

/// `POST /v1/images/describe`: alt text and/or a detailed description of one image.
pub async fn describe_image(State(state): State<Arc<HttpState>>, mut form: Multipart) -> Result<Json<Value>, ApiError> {
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
                        other => return Err(ApiError::invalid("modes", format!("{other:?}: expected alt_text or detailed"))),
                    });
                }
            }
            _ => {}
        }
    }
    let image = image.ok_or_else(|| ApiError::invalid("file", "no file was uploaded (multipart field `file`)"))?;
    let r = state.flows.describe(&image, &modes, Deadline::after(state.request_timeout)).await?;
    Ok(Json(
        json!({ "captions": r.captions.iter().map(caption_json).collect::<Vec<_>>(), "labels": r.labels.iter().map(label_json).collect::<Vec<_>>() }),
    ))
}

// ---------------------------------------------------------------------------------------
// Meetings

/// `POST /v1/meetings`: summarizes an uploaded recording; the response is a stream of
/// server-sent events `progress`, `segment` (as the transcript is decoded), then one
/// `summary` (or `error`).
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
        MeetingEvent::Progress(p) => event("progress", progress_json(&p)),
        MeetingEvent::Segment(s) => event("segment", segment_json(&s)),
    });
    let last = ReceiverStream::new(rx).map(move |result| match result {
        Ok(summary) => event("summary", summary_json(&summary)),
        Err(e) => event("error", ApiError::from(e).body()),
    });
    Ok(Sse::new(progress.chain(last)).into_response())
}

/// `GET /v1/meetings/{meeting_id}`: transcript and summary.
pub async fn get_meeting(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let m = state.flows.get_meeting(&meeting_id).await?;
    Ok(Json(meeting_json(&m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    question: String,
    #[serde(default)]
    top_k: u32,
}

/// `POST /v1/meetings/{meeting_id}/ask`: an answer that cites the transcript, or "the
/// meeting does not say".
pub async fn ask_meeting(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: AskBody = parse_json(&body)?;
    let ask = AskRequest { meeting_id, question: b.question, top_k: b.top_k };
    let r = state.flows.ask_meeting(ask, Deadline::after(state.request_timeout)).await?;
    let citations: Vec<Value> =
        r.citations.iter().map(|c| json!({ "segment_id": c.segment_id, "start_ms": c.start_ms, "end_ms": c.end_ms, "text": c.text })).collect();
    Ok(Json(
        json!({ "answer": r.answer, "answerable": r.answerable, "citations": citations, "source": r.source.as_str(), "withheld_reason": r.withheld_reason }),
    ))
}
