//! The gateway's HTTP edge, served beside gRPC on `--http-listen` by the shared runtime
//! (which adds `/healthz` and drains it with the gRPC server):
//! - [`openai`]: the OpenAI-compatible API, over the same upstream calls as the flows;
//! - [`rest`]: the gateway's own flows (images, meetings), called directly: this edge is
//!   the gRPC edge's sibling, not its client;
//! - [`openapi`]: the document of both, at `GET /openapi.json`;
//! - [`upload`]: multipart files spooled to disk and streamed on;
//! - [`ui`]: the web UI (search, describe, meetings pages) over the REST routes;
//! - [`guard`]: no DNS rebinding, no cross-site requests that change state.
//!
//! Every error is answered in OpenAI's shape ([`error::ApiError`]); every request is
//! counted and timed by route and status (`mmc_http_requests_total`,
//! `mmc_http_request_duration_seconds`) and runs in a span, so its upstream calls join
//! one trace; the span carries the request id the answer returns as `x-request-id`.

pub mod error;
pub mod guard;
pub mod openai;
pub mod openapi;
pub mod rest;
pub mod review;
pub mod ui;
pub mod upload;

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::Next,
    response::Response,
    routing::{get, post},
    Router,
};
use tracing::Instrument;

use self::{error::ApiError, openai::HttpState};

/// Largest JSON request body, in bytes (embedding batches, long chats).
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// Routes that take an upload (multipart) rather than a JSON body.
const UPLOAD_ROUTES: [&str; 4] = ["/v1/audio/transcriptions", "/v1/images", "/v1/images/describe", "/v1/meetings"];

/// Room for the multipart framing and small fields around an upload.
const FORM_OVERHEAD_BYTES: u64 = 64 * 1024;

/// The largest body `method path` takes, in bytes: the upload limit plus the form's framing
/// for the upload routes, [`MAX_JSON_BYTES`] for the rest. The router enforces it while
/// reading; [`guard`] refuses a larger declared `Content-Length` before reading.
pub fn body_limit(method: &axum::http::Method, path: &str, max_upload_bytes: u64) -> u64 {
    if method == axum::http::Method::POST && UPLOAD_ROUTES.contains(&path) {
        max_upload_bytes.saturating_add(FORM_OVERHEAD_BYTES)
    } else {
        MAX_JSON_BYTES as u64
    }
}

/// The HTTP routes.
pub fn router(state: Arc<HttpState>) -> Router {
    let upload_limit = usize::try_from(body_limit(&axum::http::Method::POST, UPLOAD_ROUTES[0], state.max_upload_bytes)).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/audio/transcriptions", post(openai::transcriptions).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/v1/images", post(rest::index_images).get(rest::list_images).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/v1/images/{image_id}", axum::routing::delete(rest::delete_image).get(review::get_image).patch(review::update_image))
        .route("/v1/images/{image_id}/approve", post(review::approve_image))
        .route("/v1/images/{image_id}/thumbnail", get(rest::thumbnail))
        .route("/v1/images/search", post(rest::search_images))
        .route("/v1/images/describe", post(rest::describe_image).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/v1/meetings", post(rest::create_meeting).get(rest::list_meetings).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/v1/meetings/{meeting_id}", get(rest::get_meeting).delete(rest::delete_meeting))
        .route("/v1/meetings/{meeting_id}/ask", post(rest::ask_meeting))
        .route("/v1/meetings/{meeting_id}/review", post(review::mark_reviewed))
        .route("/v1/meetings/{meeting_id}/export", get(review::export))
        .route("/v1/meetings/{meeting_id}/decisions", post(review::add_decision))
        .route("/v1/meetings/{meeting_id}/action_items", post(review::add_action_item))
        .route("/v1/meetings/{meeting_id}/decisions/{index}", axum::routing::patch(review::update_decision))
        .route("/v1/meetings/{meeting_id}/action_items/{index}", axum::routing::patch(review::update_action_item))
        .route("/openapi.json", {
            // Built once: it depends only on the server's settings.
            let document = Arc::new(openapi::document(state.max_upload_bytes, state.max_tokens));
            get(move || async move { axum::Json(document.as_ref().clone()) })
        })
        .merge(ui::routes())
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Span, request count and latency per route.
async fn observe(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    // Set by the runtime's HTTP server, which also returns it as `x-request-id`.
    let request_id =
        request.extensions().get::<mmc_runtime::request_id::RequestId>().cloned().unwrap_or_else(mmc_runtime::request_id::RequestId::random);
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.method = %method,
        http.route = %route,
        request_id = %request_id,
    );
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("mmc_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("mmc_http_request_duration_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}
