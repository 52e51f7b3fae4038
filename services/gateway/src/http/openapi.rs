//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Derived with utoipa from the handlers' typed requests and responses (`#[utoipa::path]`
//! on each handler, `ToSchema` on each body), so the schemas are the types. utoipa's
//! schema attributes take only literal numbers, so the limits are not written there: they
//! are set on the derived document from the constants (and the server settings) that the
//! handlers and flows enforce, in [`document`]. `tests/e2e/http_api.rs` checks that every
//! documented operation exists and that property-based requests generated from the
//! document (schemathesis) never get a 5xx.

use serde_json::{json, Value};
use utoipa::OpenApi;

use super::{
    error::ErrorBody,
    openai::{self, MAX_CHAT_CHARS, MAX_CHAT_MESSAGES, MAX_EMBEDDING_INPUTS, MAX_EMBEDDING_INPUT_CHARS},
    rest::{self, MAX_IMAGES_PER_FORM, MAX_IMAGE_BYTES},
    review,
};
use crate::flows::{
    images::THUMBNAIL_SIDE,
    limits::{MAX_ASK_TOP_K, MAX_METADATA, MAX_PAGE_SIZE, MAX_QUERY_CHARS, MAX_QUESTION_CHARS, MAX_TITLE_CHARS, MAX_TOP_K},
    meeting::people::{MAX_PARTICIPANTS, MAX_PARTICIPANT_CHARS},
};

/// `/healthz`, served by the shared runtime beside these routes.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Serving", content_type = "text/plain", body = String),
        (status = 503, description = "Loading or draining", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn health() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mmc gateway HTTP API",
        description = "OpenAI-compatible routes (/v1/models, /v1/embeddings, /v1/chat/completions, /v1/audio/transcriptions) and the gateway's own flows: image index and search, image descriptions, meeting summaries and questions. Errors: {\"error\": {message, type, param, code}}."
    ),
    paths(
        health,
        openai::models,
        openai::embeddings,
        openai::chat_completions,
        openai::transcriptions,
        rest::index_images,
        rest::list_images,
        rest::delete_image,
        rest::thumbnail,
        rest::search_images,
        rest::describe_image,
        rest::create_meeting,
        rest::get_meeting,
        rest::list_meetings,
        rest::delete_meeting,
        rest::ask_meeting,
        review::get_image,
        review::update_image,
        review::approve_image,
        review::add_decision,
        review::add_action_item,
        review::update_decision,
        review::update_action_item,
        review::mark_reviewed,
        review::export,
    ),
    // The server-sent events of POST /v1/meetings.
    components(schemas(rest::ProgressView, rest::SegmentView, rest::SummaryView, ErrorBody))
)]
struct ApiDoc;

/// Merges `limits` into the schema at `path` (object keys, from the document's root).
fn limit(doc: &mut Value, path: &[&str], limits: Value) {
    let mut node = &mut *doc;
    for key in path {
        node = node.get_mut(*key).unwrap_or_else(|| panic!("the derived document has no {}", path.join(".")));
    }
    if let (Some(node), Value::Object(limits)) = (node.as_object_mut(), limits) {
        node.extend(limits);
    }
}

/// Sets `limits` on each alternative of the `oneOf` at `path` whose `type` is `kind`.
fn limit_alternatives(doc: &mut Value, path: &[&str], kind: &str, limits: &Value) {
    let mut node = &mut *doc;
    for key in path {
        node = node.get_mut(*key).unwrap_or_else(|| panic!("the derived document has no {}", path.join(".")));
    }
    for alternative in node.get_mut("oneOf").and_then(Value::as_array_mut).into_iter().flatten() {
        if alternative.get("type").and_then(Value::as_str) == Some(kind) {
            if let (Some(a), Some(l)) = (alternative.as_object_mut(), limits.as_object()) {
                a.extend(l.clone());
            }
        }
    }
}

/// The document, with this server's limits: its largest upload (bytes) and `max_tokens`.
pub fn document(max_upload_bytes: u64, max_tokens: u32) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let schema = |name: &'static str, field: &'static str| ["components", "schemas", name, "properties", field];
    let (entries, key_chars, value_chars) = MAX_METADATA;
    let metadata = json!({ "maxProperties": entries, "propertyNames": { "minLength": 1, "maxLength": key_chars },
                           "additionalProperties": { "type": "string", "maxLength": value_chars } });

    // Images.
    limit(&mut doc, &schema("SearchBody", "query"), json!({ "minLength": 1, "maxLength": MAX_QUERY_CHARS }));
    limit(&mut doc, &schema("SearchBody", "top_k"), json!({ "minimum": 0, "maximum": MAX_TOP_K }));
    limit(&mut doc, &schema("SearchBody", "score_threshold"), json!({ "minimum": -1, "maximum": 1 }));
    limit(&mut doc, &schema("SearchBody", "filter"), metadata);
    limit(
        &mut doc,
        &schema("IndexForm", "file"),
        json!({ "minItems": 1, "maxItems": MAX_IMAGES_PER_FORM,
        "description": format!("The images (repeat the field), at most {MAX_IMAGES_PER_FORM}, each at most {MAX_IMAGE_BYTES} bytes.") }),
    );
    limit(&mut doc, &schema("DescribeForm", "file"), json!({ "description": format!("The image, at most {MAX_IMAGE_BYTES} bytes.") }));
    for param in doc["paths"]["/v1/images"]["get"]["parameters"].as_array_mut().into_iter().flatten() {
        if param["name"] == "page_size" {
            limit(param, &["schema"], json!({ "minimum": 0, "maximum": MAX_PAGE_SIZE }));
        }
    }
    limit(
        &mut doc,
        &["paths", "/v1/images/{image_id}/thumbnail", "get"],
        json!({ "summary": format!("A JPEG thumbnail of an indexed image (at most {THUMBNAIL_SIDE} pixels a side)") }),
    );

    // Meetings.
    limit(&mut doc, &schema("MeetingForm", "title"), json!({ "maxLength": MAX_TITLE_CHARS }));
    limit(
        &mut doc,
        &schema("MeetingForm", "participants"),
        json!({
        "description": format!("Attendee names, comma-separated (at most {MAX_PARTICIPANTS}, each at most {MAX_PARTICIPANT_CHARS} characters): owners are matched to them.") }),
    );
    limit(&mut doc, &schema("MeetingForm", "file"), json!({ "description": format!("The recording, at most {} bytes.", max_upload_bytes) }));
    limit(&mut doc, &schema("AskBody", "question"), json!({ "minLength": 1, "maxLength": MAX_QUESTION_CHARS }));
    limit(&mut doc, &schema("AskBody", "top_k"), json!({ "minimum": 0, "maximum": MAX_ASK_TOP_K }));

    // The OpenAI routes.
    let input = ["components", "schemas", "EmbeddingInput"];
    limit_alternatives(&mut doc, &input, "string", &json!({ "minLength": 1, "maxLength": MAX_EMBEDDING_INPUT_CHARS }));
    limit_alternatives(&mut doc, &input, "array", &json!({ "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS }));
    limit(
        &mut doc,
        &schema("ChatCompletionRequest", "messages"),
        json!({ "minItems": 1, "maxItems": MAX_CHAT_MESSAGES,
        "description": format!("At most {MAX_CHAT_MESSAGES} messages of at most {MAX_CHAT_CHARS} characters in all.") }),
    );
    for field in ["max_tokens", "max_completion_tokens"] {
        limit(&mut doc, &schema("ChatCompletionRequest", field), json!({ "minimum": 1, "maximum": max_tokens }));
    }
    limit(&mut doc, &schema("ChatCompletionRequest", "temperature"), json!({ "minimum": 0, "maximum": super::openai::MAX_TEMPERATURE }));
    for field in ["top_p", "min_p"] {
        limit(&mut doc, &schema("ChatCompletionRequest", field), json!({ "minimum": 0, "maximum": 1 }));
    }
    limit(&mut doc, &schema("TranscriptionForm", "file"), json!({ "description": format!("The recording, at most {} bytes.", max_upload_bytes) }));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_states_the_enforced_limits_and_its_references_resolve() {
        let doc = document(1234, 32);
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for route in ["/healthz", "/v1/embeddings", "/v1/chat/completions", "/v1/images", "/v1/images/search", "/v1/meetings/{meeting_id}/ask"] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["SearchBody"]["properties"]["query"]["maxLength"], MAX_QUERY_CHARS);
        assert_eq!(schemas["SearchBody"]["properties"]["top_k"]["maximum"], MAX_TOP_K);
        assert_eq!(schemas["AskBody"]["properties"]["question"]["maxLength"], MAX_QUESTION_CHARS);
        assert_eq!(schemas["ChatCompletionRequest"]["properties"]["max_tokens"]["maximum"], 32);
        assert_eq!(schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"], MAX_CHAT_MESSAGES);
        let input = schemas["EmbeddingInput"]["oneOf"].as_array().unwrap();
        assert!(input.iter().any(|a| a["maxLength"] == MAX_EMBEDDING_INPUT_CHARS), "{input:?}");
        assert!(input.iter().any(|a| a["maxItems"] == MAX_EMBEDDING_INPUTS), "{input:?}");
        let page_size = doc["paths"]["/v1/images"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "page_size").unwrap();
        assert_eq!(page_size["schema"]["maximum"], MAX_PAGE_SIZE);
        assert!(schemas["MeetingForm"]["properties"]["file"]["description"].as_str().unwrap().contains("1234 bytes"));
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(schemas.get(name).is_some(), "{r} does not resolve");
        }
    }
}
