//! One error type for every admin handler, and the one conversion into gpt-load's envelope
//! `{"code":"ERR_CODE","message":"…"}`. A validation failure also lists its fields one by one,
//! `"errors":[{"field":"…","message":"…"}]`, from the fields the error carries (the message is
//! made from the same list, never the other way round).
//!
//! Deliberate deviations from gpt-load (docs/API.md): validation errors are `400
//! VALIDATION_FAILED` naming the field (gpt-load answers some with 500), unknown resources `404`,
//! duplicates `409`; a bad path segment or query value, an unknown route, a wrong method and a
//! body above the limit are the envelope too (`extract.rs`, `json.rs`, `routes.rs`). Server-side
//! failures are logged with their cause and answered with a generic message.

use super::{
    envelope::{ErrorCode, Failure, InvalidField},
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
    /// One invalid field.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// Several invalid fields, each named in the message: `first: problem; second: problem`.
    #[error("{}", FieldError::join(.0))]
    Fields(Vec<FieldError>),
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

    /// Every field error of a check, with every one in the message:
    /// `first: message; second: message`. One error is [`AdminError::Validation`].
    pub(crate) fn fields(mut errors: Vec<FieldError>) -> Self {
        if errors.len() == 1
            && let Some(FieldError { field, message }) = errors.pop()
        {
            return Self::Validation { field, message };
        }
        Self::Fields(errors)
    }

    /// The invalid fields a validation failure answers in `errors`; `None` for other failures.
    fn invalid_fields(&self) -> Option<Vec<InvalidField>> {
        match self {
            Self::Validation { field, message } => Some(vec![InvalidField {
                field: field.clone(),
                message: message.clone(),
            }]),
            Self::Fields(errors) => Some(
                errors
                    .iter()
                    .map(|e| InvalidField {
                        field: e.field.clone(),
                        message: e.message.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson),
            Self::Validation { .. } | Self::Fields(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed)
            }
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
        let failure = Failure {
            code,
            message: self.to_string(),
            errors: self.invalid_fields(),
        };
        let mut res = (status, Json(failure)).into_response();
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
    use serde_json::{Value, json};

    use super::*;

    fn two_errors() -> Vec<FieldError> {
        vec![
            FieldError::new("app_url", "is required"),
            FieldError::new("max_retries", "must be at least 0"),
        ]
    }

    /// The status and the JSON body an error answers.
    async fn answer(err: AdminError) -> (StatusCode, Value) {
        let res = err.into_response();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn several_field_errors_name_each_field_once() {
        assert_eq!(
            AdminError::fields(two_errors()).to_string(),
            "app_url: is required; max_retries: must be at least 0"
        );
    }

    #[tokio::test]
    async fn several_field_errors_are_listed_one_by_one() {
        let (status, body) = answer(AdminError::fields(two_errors())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({
                "code": "VALIDATION_FAILED",
                "message": "app_url: is required; max_retries: must be at least 0",
                "errors": [
                    {"field": "app_url", "message": "is required"},
                    {"field": "max_retries", "message": "must be at least 0"},
                ],
            })
        );
    }

    #[tokio::test]
    async fn one_invalid_field_is_a_list_of_one() {
        let expected = json!({
            "code": "VALIDATION_FAILED",
            "message": "page: must be a whole number",
            "errors": [{"field": "page", "message": "must be a whole number"}],
        });
        let single = AdminError::validation("page", "must be a whole number");
        assert_eq!(answer(single).await.1, expected);
        let one = AdminError::fields(vec![FieldError::new("page", "must be a whole number")]);
        assert!(matches!(&one, AdminError::Validation { field, .. } if field == "page"));
        assert_eq!(answer(one).await.1, expected);
    }

    #[tokio::test]
    async fn other_failures_have_no_list() {
        for err in [
            AdminError::NotFound("group"),
            AdminError::BadRequest("no".to_owned()),
            AdminError::InvalidJson("expected value".to_owned()),
            AdminError::Internal(anyhow::anyhow!("boom")),
        ] {
            let (_, body) = answer(err).await;
            let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys, ["code", "message"], "{body}");
        }
    }
}
