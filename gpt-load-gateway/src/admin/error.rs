//! One error type for every admin handler, and the one conversion into gpt-load's envelope
//! `{"code":"ERR_CODE","message":"…"}`.
//!
//! Deliberate deviations from gpt-load (docs/API.md): validation errors are `400
//! VALIDATION_FAILED` naming the field (gpt-load answers some with 500), unknown resources `404`,
//! duplicates `409`; a bad path segment or query value, an unknown route, a wrong method and a
//! body above the limit are the envelope too (`extract.rs`, `json.rs`, `routes.rs`). Server-side
//! failures are logged with their cause and answered with a generic message.

use super::{
    envelope::{ErrorCode, Failure},
    routes::BODY_LIMIT,
};
use crate::{db::DbError, settings::FieldError};
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body exceeds {BODY_LIMIT} bytes")]
    PayloadTooLarge,
    #[error("{0}")]
    Duplicate(String),
    #[error("authentication failed")]
    Unauthorized,
    #[error("too many failed attempts, retry in {0} s")]
    Throttled(u64),
    #[error("a task is already running, please wait")]
    TaskInProgress,
    #[error("database error")]
    Database(#[source] DbError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AdminError {
    pub(crate) fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The first of several field errors, with every one in the message:
    /// `first: message; second: message`.
    pub(crate) fn fields(errors: Vec<FieldError>) -> Self {
        let field = errors.first().map(|e| e.field.clone()).unwrap_or_default();
        let message = errors
            .iter()
            .enumerate()
            .map(|(i, e)| if i == 0 { e.message.clone() } else { e.to_string() })
            .collect::<Vec<_>>()
            .join("; ");
        Self::Validation { field, message }
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson),
            Self::Validation { .. } => (StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            Self::Duplicate(_) => (StatusCode::CONFLICT, ErrorCode::DuplicateResource),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests),
            Self::TaskInProgress => (StatusCode::CONFLICT, ErrorCode::TaskInProgress),
            Self::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::DatabaseError),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalServerError),
        }
    }
}

impl From<DbError> for AdminError {
    fn from(err: DbError) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            DbError::Query(Error::NotFound) => Self::NotFound("resource"),
            DbError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => {
                Self::Duplicate(format!(
                    "already exists ({})",
                    info.constraint_name().unwrap_or("unique")
                ))
            }
            other => Self::Database(other),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, "admin request failed");
        }
        let message = self.to_string();
        let mut res = (status, Json(Failure { code, message })).into_response();
        if let Self::Throttled(after) = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        res
    }
}

/// The result of every admin handler.
pub(crate) type AdminResult<T> = Result<T, AdminError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_field_errors_name_each_field_once() {
        let errors = vec![
            FieldError {
                field: "app_url".to_owned(),
                message: "is required".to_owned(),
            },
            FieldError {
                field: "max_retries".to_owned(),
                message: "must be at least 0".to_owned(),
            },
        ];
        assert_eq!(
            AdminError::fields(errors).to_string(),
            "app_url: is required; max_retries: must be at least 0"
        );
    }
}
