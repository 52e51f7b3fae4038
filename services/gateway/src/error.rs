//! The gateway's error type, mapped to a gRPC status in one place ([`GatewayError::into_status`]).

use tonic::{Code, Status};

use crate::store::StoreError;

/// Why a gateway flow failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A model service call failed (after any retries). Names the stage and the service so
    /// an operator knows where to look; keeps the upstream code (UNAVAILABLE,
    /// INVALID_ARGUMENT for a bad image...).
    #[error("stage {stage} failed: {service} service at {endpoint} answered {code:?}: {message}")]
    Stage { stage: &'static str, service: &'static str, endpoint: String, code: Code, message: String },
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
    /// The image index failed or refused (another model's vectors).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GatewayError {
    /// The gRPC code of this error (the HTTP edge maps it on to an HTTP status).
    pub fn code(&self) -> Code {
        match self {
            GatewayError::Stage { code, .. } => *code,
            GatewayError::NoTimeLeft { .. } => Code::DeadlineExceeded,
            GatewayError::Invalid(_) => Code::InvalidArgument,
            GatewayError::Cancelled => Code::Cancelled,
            GatewayError::NotFound(_) => Code::NotFound,
            GatewayError::Store(StoreError::SpaceMismatch { .. }) => Code::FailedPrecondition,
            GatewayError::Store(_) => Code::Internal,
        }
    }

    /// The status a client sees.
    pub fn into_status(self) -> Status {
        let code = self.code();
        if code == Code::Internal {
            tracing::error!(error = %self, "gateway failure");
        }
        Status::new(code, self.to_string())
    }
}
