//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`. Written next
//! to the routes it describes; every limit it states is the constant (or the server
//! setting) the handlers and flows enforce, so the two cannot drift apart.
//! `tests/e2e/http_api.rs` checks that every documented operation exists and that
//! property-based requests generated from it (schemathesis) never get a 5xx.

use serde_json::{json, Value};

use super::{
    openai::{HttpState, MAX_CHAT_CHARS, MAX_CHAT_MESSAGES, MAX_EMBEDDING_INPUTS, MAX_EMBEDDING_INPUT_CHARS},
    rest::{MAX_IMAGES_PER_FORM, MAX_IMAGE_BYTES},
};
use crate::flows::{
    images::THUMBNAIL_SIDE,
    limits::{MAX_ASK_TOP_K, MAX_METADATA, MAX_PAGE_SIZE, MAX_QUERY_CHARS, MAX_QUESTION_CHARS, MAX_TITLE_CHARS, MAX_TOP_K},
    meeting::people::{MAX_PARTICIPANTS, MAX_PARTICIPANT_CHARS},
};

fn error_responses() -> Value {
    json!({
        "400": { "description": "Invalid request", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        "404": { "description": "Not found", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        "413": { "description": "Upload too large", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        "429": { "description": "A model service is saturated; retry with backoff", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        "503": { "description": "A model service is unavailable", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        "504": { "description": "The request's deadline passed", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
    })
}

/// A JSON response with `schema`, plus the error responses.
fn responses(description: &str, content_type: &str, schema: Value) -> Value {
    let mut r = error_responses();
    r["200"] = json!({ "description": description, "content": { content_type: { "schema": schema } } });
    r
}

fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn form_body(properties: Value, required: &[&str]) -> Value {
    json!({ "required": true, "content": { "multipart/form-data": { "schema": {
        "type": "object", "properties": properties, "required": required } } } })
}

fn op(id: &str, summary: &str, tag: &str, body: Option<Value>, responses: Value) -> Value {
    let mut o = json!({ "operationId": id, "summary": summary, "tags": [tag], "responses": responses });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn path_param(name: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 128 } }])
}

/// The document, with the limits of this server (`state`: its upload and token limits).
pub fn document(state: &HttpState) -> Value {
    let r = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    // (Sizes in words: JSON Schema's maxLength counts characters, not bytes.)
    let image_file = json!({ "type": "string", "format": "binary", "description": format!("at most {MAX_IMAGE_BYTES} bytes") });
    let upload_file = json!({ "type": "string", "format": "binary", "description": format!("at most {} bytes", state.max_upload_bytes) });
    let (entries, key_chars, value_chars) = MAX_METADATA;
    let metadata = json!({ "type": "object", "propertyNames": { "minLength": 1, "maxLength": key_chars },
                           "additionalProperties": { "type": "string", "maxLength": value_chars }, "maxProperties": entries });
    let max_tokens = state.max_tokens;
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mmc gateway HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OpenAI-compatible routes (/v1/models, /v1/embeddings, /v1/chat/completions, /v1/audio/transcriptions) and the gateway's own flows: image index and search, image descriptions, meeting summaries and questions. Errors: {\"error\": {message, type, param, code}}.",
        },
        "paths": {
            "/healthz": { "get": op("health", "200 once serving, 503 while loading or draining", "operations", None,
                json!({ "200": { "description": "Serving", "content": { "text/plain": { "schema": { "type": "string" } } } },
                        "503": { "description": "Not serving", "content": { "text/plain": { "schema": { "type": "string" } } } } })) },
            "/v1/models": { "get": op("listModels", "The loaded models", "openai", None, responses("Models", "application/json", r("ModelList"))) },
            "/v1/embeddings": { "post": op("createEmbeddings", "Text embeddings", "openai", Some(json_body(json!({
                "type": "object", "required": ["input"], "properties": {
                    "input": { "oneOf": [
                        { "type": "string", "minLength": 1, "maxLength": MAX_EMBEDDING_INPUT_CHARS },
                        { "type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS, "items": { "type": "string", "minLength": 1, "maxLength": MAX_EMBEDDING_INPUT_CHARS } } ] },
                    "model": { "type": "string", "maxLength": 128 },
                    "encoding_format": { "type": "string", "enum": ["float", "base64"] },
                    "dimensions": { "type": "integer", "minimum": 1, "maximum": 4096 } } }))),
                responses("Embeddings", "application/json", r("EmbeddingList"))) },
            "/v1/chat/completions": { "post": op("createChatCompletion", "Chat completion (stream: server-sent events)", "openai", Some(json_body(json!({
                "type": "object", "required": ["messages"], "properties": {
                    "messages": { "type": "array", "minItems": 1, "maxItems": MAX_CHAT_MESSAGES, "items": { "type": "object", "required": ["role", "content"], "properties": {
                        "role": { "type": "string", "enum": ["system", "developer", "user", "assistant"] },
                        "content": { "type": "string", "maxLength": MAX_CHAT_CHARS } } } },
                    "model": { "type": "string", "maxLength": 128 },
                    "temperature": { "type": "number", "minimum": 0, "maximum": 2 },
                    "top_p": { "type": "number", "exclusiveMinimum": 0, "maximum": 1 },
                    "max_tokens": { "type": "integer", "minimum": 1, "maximum": max_tokens },
                    "max_completion_tokens": { "type": "integer", "minimum": 1, "maximum": max_tokens },
                    "stop": { "oneOf": [ { "type": "string", "minLength": 1, "maxLength": 32 },
                                         { "type": "array", "maxItems": 4, "items": { "type": "string", "minLength": 1, "maxLength": 32 } } ] },
                    "seed": { "type": "integer", "minimum": 0 },
                    "stream": { "type": "boolean" },
                    "response_format": { "type": "object", "required": ["type"], "properties": {
                        "type": { "type": "string", "enum": ["text", "json_object", "json_schema"] },
                        "json_schema": { "type": "object", "properties": { "name": { "type": "string" }, "schema": { "type": "object" }, "strict": { "type": "boolean" } } } } } } }))),
                responses("Completion", "application/json", r("ChatCompletion"))) },
            "/v1/audio/transcriptions": { "post": op("createTranscription", "Speech to text", "openai", Some(form_body(json!({
                    "file": upload_file, "model": { "type": "string" }, "language": { "type": "string", "maxLength": 8 },
                    "prompt": { "type": "string", "maxLength": 500 },
                    "response_format": { "type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"] },
                    "timestamp_granularities[]": { "type": "array", "items": { "type": "string", "enum": ["word", "segment"] } } }), &["file"])),
                responses("Transcript (json, verbose_json; text/plain for text and srt; text/vtt)", "application/json", json!({ "type": "object" }))) },
            "/v1/images": {
                "post": op("indexImages", "Index images (caption, labels, vectors); idempotent by content", "images", Some(form_body(json!({
                    "file": { "type": "array", "items": image_file, "minItems": 1, "maxItems": MAX_IMAGES_PER_FORM }, "metadata": { "type": "string", "description": "JSON object of strings" } }), &["file"])),
                    responses("One result per file", "application/json", json!({ "type": "object", "properties": { "results": { "type": "array" } } }))),
                "get": {
                    "operationId": "listImages", "summary": "The index, oldest first", "tags": ["images"],
                    "parameters": [
                        { "name": "page_size", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE } },
                        { "name": "page_token", "in": "query", "schema": { "type": "string", "maxLength": 64 } } ],
                    "responses": responses("A page", "application/json", json!({ "type": "object", "properties": {
                        "images": { "type": "array", "items": r("Image") }, "next_page_token": { "type": "string" } } })),
                },
            },
            "/v1/images/{image_id}": { "delete": {
                "operationId": "deleteImage", "summary": "Remove an image from the index", "tags": ["images"],
                "parameters": path_param("image_id"),
                "responses": responses("Deleted", "application/json", json!({ "type": "object" })) } },
            "/v1/images/{image_id}/thumbnail": { "get": {
                "operationId": "imageThumbnail", "summary": format!("A JPEG thumbnail of an indexed image (at most {THUMBNAIL_SIDE} pixels a side)"), "tags": ["images"],
                "parameters": path_param("image_id"),
                "responses": responses("The thumbnail", "image/jpeg", json!({ "type": "string", "contentMediaType": "image/jpeg" })) } },
            "/v1/images/search": { "post": op("searchImages", "Search by words or by an image", "images", Some(json_body(json!({
                "type": "object", "additionalProperties": false,
                "oneOf": [ { "required": ["query"] }, { "required": ["image_base64"] } ],
                "properties": {
                    "query": { "type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS },
                    "image_base64": { "type": "string", "contentEncoding": "base64" },
                    "top_k": { "type": "integer", "minimum": 0, "maximum": MAX_TOP_K },
                    "score_threshold": { "type": "number", "minimum": -1, "maximum": 1 },
                    "filter": metadata } }))),
                responses("Hits, best first", "application/json", json!({ "type": "object", "properties": { "hits": { "type": "array", "items": {
                    "type": "object", "properties": { "score": { "type": "number" }, "image": r("Image") } } } } }))) },
            "/v1/images/describe": { "post": op("describeImage", "Alt text and a detailed description", "images", Some(form_body(json!({
                    "file": image_file, "modes": { "type": "string", "description": "comma-separated: alt_text, detailed" } }), &["file"])),
                responses("Captions", "application/json", json!({ "type": "object", "properties": {
                    "captions": { "type": "array", "items": r("Caption") }, "labels": { "type": "array" } } }))) },
            "/v1/meetings": { "post": op("createMeeting", "Summarize a recording (progress as server-sent events)", "meetings", Some(form_body(json!({
                    "file": upload_file, "title": { "type": "string", "maxLength": MAX_TITLE_CHARS }, "language": { "type": "string", "maxLength": 8 },
                    "prompt_version": { "type": "string", "maxLength": 32 },
                    "participants": { "type": "string", "description": format!("attendee names, comma-separated (at most {MAX_PARTICIPANTS}, each at most {MAX_PARTICIPANT_CHARS} characters)") } }), &["file"])),
                responses("Events: progress, segment, then summary or error", "text/event-stream", json!({ "type": "string" }))) },
            "/v1/meetings/{meeting_id}": { "get": {
                "operationId": "getMeeting", "summary": "A stored meeting: transcript and summary", "tags": ["meetings"],
                "parameters": path_param("meeting_id"),
                "responses": responses("The meeting", "application/json", r("Meeting")) } },
            "/v1/meetings/{meeting_id}/ask": { "post": {
                "operationId": "askMeeting", "summary": "A cited answer, or \"the meeting does not say\"", "tags": ["meetings"],
                "parameters": path_param("meeting_id"),
                "requestBody": json_body(json!({ "type": "object", "required": ["question"], "additionalProperties": false, "properties": {
                    "question": { "type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS }, "top_k": { "type": "integer", "minimum": 0, "maximum": MAX_ASK_TOP_K } } })),
                "responses": responses("The answer", "application/json", json!({ "type": "object", "properties": {
                    "answer": { "type": "string" }, "answerable": { "type": "boolean" }, "citations": { "type": "array" },
                    "source": { "type": "string", "enum": ["model", "extractive", "none", "unspecified"] }, "withheld_reason": { "type": "string" } } })) } },
        },
        "components": { "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["message", "type"], "properties": {
                "message": { "type": "string" }, "type": { "type": "string" },
                "param": { "type": ["string", "null"] }, "code": { "type": ["string", "null"] } } } } },
            "ModelList": { "type": "object", "properties": { "object": { "const": "list" }, "data": { "type": "array", "items": { "type": "object", "properties": {
                "id": { "type": "string" }, "object": { "const": "model" }, "owned_by": { "type": "string" } } } } } },
            "EmbeddingList": { "type": "object", "properties": { "data": { "type": "array", "items": { "type": "object", "properties": {
                "index": { "type": "integer" }, "embedding": { "oneOf": [ { "type": "array", "items": { "type": "number" } }, { "type": "string" } ] } } } },
                "model": { "type": "string" }, "usage": { "type": "object" } } },
            "ChatCompletion": { "type": "object", "properties": { "id": { "type": "string" }, "choices": { "type": "array" }, "usage": { "type": "object" } } },
            "Image": { "type": "object", "properties": { "image_id": { "type": "string" }, "thumbnail_url": { "type": "string" }, "source_name": { "type": "string" }, "caption": { "type": "string" },
                "labels": { "type": "array" }, "metadata": { "type": "object" } } },
            "Caption": { "type": "object", "properties": { "mode": { "type": "string", "enum": ["alt_text", "detailed"] }, "text": { "type": "string" },
                "confidence": { "type": "number" }, "from_template": { "type": "boolean" } } },
            "Meeting": { "type": "object", "properties": { "meeting_id": { "type": "string" }, "title": { "type": "string" },
                "segments": { "type": "array" }, "summary": { "type": ["object", "null"] } } },
        } },
    })
}
