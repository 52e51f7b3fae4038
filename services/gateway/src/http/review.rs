//! REST routes of human review: correcting and approving images' texts, reviewing a
//! meeting's decisions and action items, and exporting the notes.
//!
//! | route | RPC |
//! |---|---|
//! | `GET /v1/images/{image_id}` (ETag) | GetImage |
//! | `PATCH /v1/images/{image_id}` (JSON: `alt_text`, `description`, `metadata`, `reviewer`, `version`; or `If-Match`) | UpdateImage |
//! | `POST /v1/images/{image_id}/approve` (JSON: `reviewer`, `version`) | ApproveImage |
//! | `POST /v1/meetings/{meeting_id}/decisions`, `.../action_items` (JSON: `text`, `segment_ids`, `owner`, `due`, `reviewer`) | UpdateMeetingItem (add) |
//! | `PATCH /v1/meetings/{meeting_id}/decisions/{index}`, `.../action_items/{index}` (JSON: `text`, `owner`, `due`, `segment_ids`, `status`, `reviewer`, `version`) | UpdateMeetingItem |
//! | `POST /v1/meetings/{meeting_id}/review` (JSON: `reviewer`, `version`; or `If-Match`) | MarkMeetingReviewed |
//! | `GET /v1/meetings/{meeting_id}/export?format=md\|json\|ics` | ExportMeeting |
//!
//! Versions: every image and meeting response carries an `ETag` (`"v3"`), and every item
//! its `review.version`. A change sent with the version it was made on (`version` in the
//! body, or `If-Match` for images and the notes) is refused with 409 `version_conflict`
//! when someone changed the thing since; a change without one is applied unconditionally.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{ApiError, ErrorBody},
    openai::{parse_json, HttpState},
    rest::{ImageView, MeetingView},
};
use crate::{
    domain::{ExportFormat, ImageEdit, ItemEdit, ItemKind, ReviewStatus},
    upstream::Deadline,
};

/// `"v3"` for version 3.
fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"v{version}\"")).expect("ASCII")
}

/// The version in `If-Match` (`"v3"` or `W/"v3"`), when given.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.strip_prefix('v')
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::invalid("If-Match", "If-Match must be an ETag this server issued, such as \"v3\""))
}

/// The version a change was made on: the body's, else `If-Match`'s, else none (no check).
fn expected(body: Option<u64>, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    Ok(body.or(if_match(headers)?))
}

fn image_response(record: &crate::domain::ImageRecord) -> Response {
    ([(header::ETAG, etag(record.review.version))], Json(ImageView::from(record))).into_response()
}

fn meeting_response(meeting: &crate::domain::Meeting) -> Response {
    ([(header::ETAG, etag(meeting.review.version))], Json(MeetingView::from(meeting))).into_response()
}

/// `GET /v1/images/{image_id}`: one indexed image, with its review state and history.
#[utoipa::path(get, path = "/v1/images/{image_id}", tag = "review", params(("image_id" = String, Path)),
    responses((status = 200, description = "The image (ETag: its version)", body = ImageView), (status = "4XX", body = ErrorBody)))]
pub async fn get_image(State(state): State<Arc<HttpState>>, Path(image_id): Path<String>) -> Result<Response, ApiError> {
    Ok(image_response(&state.flows.get_image(&image_id).await?))
}

/// A person's correction of an image.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageEditBody {
    /// New alt text (at most 1000 characters; 125 or fewer is the guidance).
    alt_text: Option<String>,
    /// New longer description (at most 4000 characters; empty removes it).
    description: Option<String>,
    /// New user metadata, replacing the old.
    metadata: Option<BTreeMap<String, String>>,
    /// Who makes the change.
    reviewer: String,
    /// The image's version the change was made on (or send `If-Match`).
    version: Option<u64>,
}

/// `PATCH /v1/images/{image_id}`: a person's alt text, description or metadata. A new alt
/// text replaces the machine's everywhere and is searchable at once; the machine draft
/// stays in `history`.
#[utoipa::path(patch, path = "/v1/images/{image_id}", tag = "review", params(("image_id" = String, Path)), request_body = ImageEditBody,
    responses((status = 200, description = "The image as stored", body = ImageView),
        (status = 409, description = "Changed since `version`", body = ErrorBody), (status = "4XX", body = ErrorBody)))]
pub async fn update_image(
    State(state): State<Arc<HttpState>>,
    Path(image_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ImageEditBody = parse_json(&body)?;
    let edit = ImageEdit {
        image_id,
        alt_text: b.alt_text,
        description: b.description,
        metadata: b.metadata,
        reviewer: b.reviewer,
        expected_version: expected(b.version, &headers)?,
    };
    Ok(image_response(&state.flows.update_image(edit, Deadline::after(state.request_timeout)).await?))
}

/// A person's sign-off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Who approves.
    reviewer: String,
    /// The version the approval was made on (or send `If-Match`).
    version: Option<u64>,
}

/// `POST /v1/images/{image_id}/approve`: the alt text is right as it stands; the image
/// leaves the review queue.
#[utoipa::path(post, path = "/v1/images/{image_id}/approve", tag = "review", params(("image_id" = String, Path)), request_body = ApproveBody,
    responses((status = 200, description = "The image as stored", body = ImageView),
        (status = 409, description = "Changed since `version`", body = ErrorBody), (status = "4XX", body = ErrorBody)))]
pub async fn approve_image(
    State(state): State<Arc<HttpState>>,
    Path(image_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ApproveBody = parse_json(&body)?;
    let version = expected(b.version, &headers)?;
    Ok(image_response(&state.flows.approve_image(&image_id, &b.reviewer, version).await?))
}

/// A person's change to a decision or action item, or a new one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    /// New text (required for a new item).
    text: Option<String>,
    /// Action items: the owner (empty = nobody).
    owner: Option<String>,
    /// Action items: the due date ("2026-12-11", or the meeting's words; empty = none).
    due: Option<String>,
    /// Transcript segments the item rests on (required for a new item).
    #[serde(default)]
    segment_ids: Vec<u32>,
    /// `approved`, `rejected` or `pending`; default: `approved` when anything else changed.
    status: Option<String>,
    /// Who makes the change.
    reviewer: String,
    /// The item's `review.version` the change was made on.
    version: Option<u32>,
}

fn item_edit(meeting_id: String, kind: ItemKind, index: Option<u32>, b: ItemBody) -> Result<ItemEdit, ApiError> {
    let status = match b.status.as_deref() {
        None => None,
        Some("approved") => Some(ReviewStatus::Approved),
        Some("rejected") => Some(ReviewStatus::Rejected),
        Some("pending") => Some(ReviewStatus::Pending),
        Some(_) => return Err(ApiError::invalid("status", "status must be approved, rejected or pending")),
    };
    Ok(ItemEdit {
        meeting_id,
        kind,
        index,
        text: b.text,
        owner: b.owner,
        due: b.due,
        segment_ids: b.segment_ids,
        status,
        reviewer: b.reviewer,
        expected_version: b.version,
    })
}

/// Adds an item of `kind`, or changes the one at `index`, and answers with the stored meeting.
async fn item(state: &HttpState, meeting_id: String, kind: ItemKind, index: Option<&str>, body: &Bytes) -> Result<Response, ApiError> {
    let index = index
        .map(|i| i.parse::<u32>().map_err(|_| ApiError::invalid("index", "index must be the item's position in its list, from 0")))
        .transpose()?;
    let edit = item_edit(meeting_id, kind, index, parse_json(body)?)?;
    Ok(meeting_response(&state.flows.update_meeting_item(edit).await?))
}

/// `POST /v1/meetings/{meeting_id}/decisions`: adds a decision cited to the segments the
/// reviewer picked.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/decisions", tag = "review", params(("meeting_id" = String, Path)), request_body = ItemBody,
    responses((status = 200, description = "The meeting as stored", body = MeetingView), (status = "4XX", body = ErrorBody)))]
pub async fn add_decision(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    item(&state, meeting_id, ItemKind::Decision, None, &body).await
}

/// `POST /v1/meetings/{meeting_id}/action_items`: adds an action item cited to the segments
/// the reviewer picked.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/action_items", tag = "review", params(("meeting_id" = String, Path)), request_body = ItemBody,
    responses((status = 200, description = "The meeting as stored", body = MeetingView), (status = "4XX", body = ErrorBody)))]
pub async fn add_action_item(State(state): State<Arc<HttpState>>, Path(meeting_id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    item(&state, meeting_id, ItemKind::ActionItem, None, &body).await
}

/// `PATCH /v1/meetings/{meeting_id}/decisions/{index}`: edits, approves or rejects a decision.
#[utoipa::path(patch, path = "/v1/meetings/{meeting_id}/decisions/{index}", tag = "review",
    params(("meeting_id" = String, Path), ("index" = u32, Path, description = "position in the list, from 0")), request_body = ItemBody,
    responses((status = 200, description = "The meeting as stored", body = MeetingView),
        (status = 409, description = "The item changed since `version`", body = ErrorBody), (status = "4XX", body = ErrorBody)))]
pub async fn update_decision(
    State(state): State<Arc<HttpState>>,
    Path((meeting_id, index)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    item(&state, meeting_id, ItemKind::Decision, Some(&index), &body).await
}

/// `PATCH /v1/meetings/{meeting_id}/action_items/{index}`: edits, approves or rejects an
/// action item, reassigns its owner or sets its due date.
#[utoipa::path(patch, path = "/v1/meetings/{meeting_id}/action_items/{index}", tag = "review",
    params(("meeting_id" = String, Path), ("index" = u32, Path, description = "position in the list, from 0")), request_body = ItemBody,
    responses((status = 200, description = "The meeting as stored", body = MeetingView),
        (status = 409, description = "The item changed since `version`", body = ErrorBody), (status = "4XX", body = ErrorBody)))]
pub async fn update_action_item(
    State(state): State<Arc<HttpState>>,
    Path((meeting_id, index)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    item(&state, meeting_id, ItemKind::ActionItem, Some(&index), &body).await
}

/// `POST /v1/meetings/{meeting_id}/review`: the notes are reviewed; every item not
/// rejected counts as approved.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/review", tag = "review", params(("meeting_id" = String, Path)), request_body = ApproveBody,
    responses((status = 200, description = "The meeting as stored", body = MeetingView),
        (status = 409, description = "Changed since `version`", body = ErrorBody), (status = "4XX", body = ErrorBody)))]
pub async fn mark_reviewed(
    State(state): State<Arc<HttpState>>,
    Path(meeting_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ApproveBody = parse_json(&body)?;
    let version = expected(b.version, &headers)?;
    Ok(meeting_response(&state.flows.mark_meeting_reviewed(&meeting_id, &b.reviewer, version).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `md` (default), `json` or `ics`.
    #[serde(default)]
    format: String,
}

/// `GET /v1/meetings/{meeting_id}/export`: the notes as Markdown, JSON, or the action items
/// as an iCalendar to-do list (a download).
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/export", tag = "review", params(("meeting_id" = String, Path), ExportParams),
    responses((status = 200, description = "The document", body = String), (status = "4XX", body = ErrorBody)))]
pub async fn export(
    State(state): State<Arc<HttpState>>,
    Path(meeting_id): Path<String>,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let format = match p.format.as_str() {
        "" | "md" | "markdown" => ExportFormat::Markdown,
        "json" => ExportFormat::Json,
        "ics" | "ical" | "icalendar" => ExportFormat::ICalendar,
        _ => return Err(ApiError::invalid("format", "format must be md, json or ics")),
    };
    let e = state.flows.export_meeting(&meeting_id, format).await?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", e.file_name.replace(['"', '\\', '\r', '\n'], "_")))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(e.content_type)), (header::CONTENT_DISPOSITION, disposition)], e.content).into_response())
}
