//! The gateway's error type. Flows return it; each protocol edge maps its [`ErrorKind`]
//! once, to a gRPC status ([`crate::grpc`]) or to an HTTP status in OpenAI's error shape
//! ([`crate::http::error`]). Neither edge reads the other's codes.
//!
//! What a client reads names the stage and the reason, never an internal address: the
//! upstream endpoints go to the log line written when the error is made.

use crate::store::StoreError;

/// What kind of failure an error is: what a client can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something invalid.
    Invalid,
    /// A prompt does not fit the language model's context window.
    ContextLength,
    /// The thing asked for does not exist.
    NotFound,
    /// The request is valid but the system is not in a state to serve it (e.g. the index
    /// holds another model's vectors).
    FailedPrecondition,
    /// The thing changed since the version a change was made on (ABORTED / 409).
    Conflict,
    /// A model service is at capacity: retry later.
    Overloaded,
    /// A model service cannot be reached: retry later.
    Unavailable,
    /// The request's deadline passed.
    Timeout,
    /// The client went away.
    Cancelled,
    /// A fault of this system.
    Internal,
}

/// Why a gateway flow failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A model service call failed (after any retries). The message names the stage and
    /// the service so an operator knows where to look; the endpoint is kept for the logs.
    #[error("stage {stage} failed: the {service} service {}", stage_reason(*.kind, message))]
    Stage { stage: &'static str, service: &'static str, endpoint: String, kind: ErrorKind, message: String },
    /// The caller's deadline left no time for a stage.
    #[error("stage {stage} not started: the request's deadline has passed")]
    NoTimeLeft { stage: &'static str },
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The client went away (its stream was closed); nothing to answer.
    #[error("the client cancelled the request")]
    Cancelled,
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A change made on an outdated version.
    #[error("{0}")]
    Conflict(String),
    /// The image index failed or refused (another model's vectors).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The client-facing end of a stage error: the service's own message where it is about
/// the request (a bad image, a prompt too long), a plain reason where it is about the
/// transport (whose messages may hold addresses).
fn stage_reason(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::Unavailable => "is unavailable; retry shortly".to_string(),
        ErrorKind::Timeout => "did not answer in time".to_string(),
        ErrorKind::Cancelled => "cancelled the call".to_string(),
        ErrorKind::Internal => format!("failed: {message}"),
        _ => format!("refused the request: {message}"),
    }
}

impl GatewayError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GatewayError::Stage { kind, .. } => *kind,
            GatewayError::NoTimeLeft { .. } => ErrorKind::Timeout,
            GatewayError::Invalid(_) => ErrorKind::Invalid,
            GatewayError::Cancelled => ErrorKind::Cancelled,
            GatewayError::NotFound(_) => ErrorKind::NotFound,
            GatewayError::Store(StoreError::SpaceMismatch { .. }) => ErrorKind::FailedPrecondition,
            GatewayError::Store(StoreError::Conflict { .. }) | GatewayError::Conflict(_) => ErrorKind::Conflict,
            GatewayError::Store(StoreError::Missing(_)) => ErrorKind::NotFound,
            GatewayError::Store(StoreError::Unavailable(_)) => ErrorKind::Unavailable,
            GatewayError::Store(StoreError::Unstorable) => ErrorKind::Invalid,
            GatewayError::Store(_) => ErrorKind::Internal,
        }
    }

    /// What a client reads: the message, cut to [`MAX_MESSAGE_BYTES`] (at a character
    /// boundary) whatever it quotes, so no error overflows a gRPC trailer. Both edges
    /// answer with it.
    pub fn client_message(&self) -> String {
        let mut message = self.to_string();
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        message
    }

    /// Logs an internal failure with everything an operator needs (the edges call this
    /// once, where they map the error).
    pub fn log(&self) {
        match self {
            GatewayError::Stage { stage, service, endpoint, kind, message } => {
                tracing::warn!(stage, service, endpoint, ?kind, message, "stage failed")
            }
            e if e.kind() == ErrorKind::Internal => tracing::error!(error = %e, "gateway failure"),
            _ => {}
        }
    }
}

/// Longest error message a client reads, in bytes (gRPC carries it in a header).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Longest part of a client's value quoted back in an error message, in characters.
const SHOWN_CHARS: usize = 64;

/// A client's value as an error message quotes it: debug-quoted and cut to
/// [`SHOWN_CHARS`] characters, so a 1 MB id neither fills the log nor overflows the gRPC
/// trailer the message travels in.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} characters)", &value[..cut], value.chars().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut() {
        assert_eq!(shown("img-1"), "\"img-1\"");
        let long = "x".repeat(100_000);
        let quoted = shown(&long);
        assert!(quoted.len() < 100 && quoted.ends_with("(100000 characters)"), "{quoted}");
        assert_eq!(shown(&"é".repeat(64)), format!("{:?}", "é".repeat(64)));
        // Whatever a message quotes (an upstream service's text too), a client reads at
        // most MAX_MESSAGE_BYTES of it.
        let e = GatewayError::Invalid("é".repeat(5000));
        let m = e.client_message();
        assert!(m.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8() && m.ends_with('…'), "{}", m.len());
    }

    #[test]
    fn client_messages_name_the_stage_and_service_but_no_address() {
        let e = GatewayError::Stage {
            stage: "encode_image",
            service: "embed",
            endpoint: "http://10.0.0.7:50051".into(),
            kind: ErrorKind::Unavailable,
            message: "tcp connect error: 10.0.0.7:50051: Connection refused".into(),
        };
        let text = e.to_string();
        assert!(text.contains("stage encode_image") && text.contains("embed service"), "{text}");
        assert!(!text.contains("10.0.0.7"), "{text}");
        let e = GatewayError::Stage {
            stage: "caption",
            service: "caption",
            endpoint: String::new(),
            kind: ErrorKind::Invalid,
            message: "latents are empty".into(),
        };
        assert_eq!(e.to_string(), "stage caption failed: the caption service refused the request: latents are empty");
    }
}
