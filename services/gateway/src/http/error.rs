//! Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//! HTTP status OpenAI uses for the same condition; mapped once from [`GatewayError`]'s kind, so
//! OpenAI clients raise their usual exception types (`BadRequestError`, `RateLimitError`...).

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ErrorKind, GatewayError};
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

/// Every error response: `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, in OpenAI's shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// For people: names the stage and the reason.
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// Machine-readable detail, e.g. `context_length_exceeded`, `unsupported_parameter`.
    pub code: Option<&'static str>,
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: invalid_request_error, not_found_error, rate_limit_error, server_error...
    pub kind: &'static str,
    /// Machine-readable detail (e.g. `context_length_exceeded`, `unsupported_parameter`).
    pub code: Option<&'static str>,
    /// The request field at fault.
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed or asks for something invalid.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: Some(param.to_string()),
            message: message.into(),
        }
    }

    /// 400: a parameter this server does not implement (rather than silently ignoring it).
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        ApiError { code: Some("unsupported_parameter"), ..Self::invalid(param, message) }
    }

    /// What went wrong, as the body's `error` object.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail { message: self.message.clone(), kind: self.kind, param: self.param.clone(), code: self.code }
    }

    /// The JSON body (also sent as an SSE event when a stream fails mid-way).
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody { error: self.detail() }).expect("errors serialize")
    }
}

impl From<GatewayError> for ApiError {
    /// The one mapping of flow errors for HTTP clients, by the error's kind.
    fn from(e: GatewayError) -> Self {
        e.log();
        let (status, kind, detail) = match e.kind() {
            ErrorKind::Invalid | ErrorKind::FailedPrecondition => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            ErrorKind::ContextLength => (StatusCode::BAD_REQUEST, "invalid_request_error", Some("context_length_exceeded")),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found_error", None),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict_error", Some("version_conflict")),
            ErrorKind::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("overloaded")),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("service_unavailable")),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error", Some("timeout")),
            ErrorKind::Cancelled => (StatusCode::REQUEST_TIMEOUT, "server_error", Some("cancelled")),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        ApiError { status, kind, code: detail, param: None, message: e.client_message() }
    }
}

impl ApiError {
    /// 404 for a route that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, kind: "not_found_error", code: None, param: None, message: message.into() }
    }

    /// 500: a fault of this system (logged).
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "HTTP request failed");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "server_error", code: None, param: None, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
