//! Path and query extractors whose rejections are the admin envelope: a value that does not
//! parse is `400 VALIDATION_FAILED` naming the path segment or query parameter, never axum's
//! plain-text `Invalid URL: …`.

use axum::{
    extract::{
        FromRequestParts, Path, Query, RawPathParams,
        path::ErrorKind,
        rejection::{PathRejection, QueryRejection},
    },
    http::request::Parts,
};
use chrono::{DateTime, NaiveDateTime};
use serde::de::DeserializeOwned;

use super::error::{AdminError, AdminResult};

/// Like `axum::extract::Path`, rejecting with the admin envelope.
#[derive(Debug)]
pub(crate) struct AdminPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for AdminPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => {
                // A single value or a tuple is parsed by position; the raw parameters name it.
                let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|raw| raw.iter().map(|(name, _)| name.to_owned()).collect())
                    .unwrap_or_default();
                Err(path_error(rejection, &names))
            }
        }
    }
}

/// Like `axum::extract::Query`, rejecting with the admin envelope.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(AdminError))]
pub(crate) struct AdminQuery<T>(pub(crate) T);

/// The envelope for a path that does not fit the handler's type; `names` are the route's
/// parameters in order.
fn path_error(rejection: PathRejection, names: &[String]) -> AdminError {
    let PathRejection::FailedToDeserializePathParams(failure) = &rejection else {
        // No parameters captured at all: a route wired to the wrong extractor.
        return AdminError::Internal(anyhow::anyhow!(rejection.body_text()));
    };
    let name = |index: usize| names.get(index).map_or("path", String::as_str).to_owned();
    match failure.kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => AdminError::validation(key, not_a(value, expected_type)),
        ErrorKind::ParseError { value, expected_type } => {
            AdminError::validation(name(0), not_a(value, expected_type))
        }
        ErrorKind::ParseErrorAtIndex {
            index,
            value,
            expected_type,
        } => AdminError::validation(name(*index), not_a(value, expected_type)),
        ErrorKind::InvalidUtf8InPathParam { key } => AdminError::validation(key, "is not valid UTF-8"),
        ErrorKind::DeserializeError { key, message, .. } => AdminError::validation(key, message),
        // The route and the handler's parameter type disagree: a server bug, not bad input.
        ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. } => {
            AdminError::Internal(anyhow::anyhow!(failure.body_text()))
        }
        other => AdminError::validation(name(0), other.to_string()),
    }
}

fn not_a(value: &str, expected_type: &str) -> String {
    if value.is_empty() {
        return "is required".to_owned();
    }
    format!("`{value}` is not a valid {expected_type}")
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        match query_error(&rejection) {
            Some(error) => {
                let field = error.path().to_string();
                // The root (`.`) is where whole-query errors such as a duplicate field land.
                let field = if field == "." { "query".to_owned() } else { field };
                Self::validation(field, error.inner().to_string())
            }
            None => Self::validation("query", rejection.body_text()),
        }
    }
}

/// The deserializer's error under axum's rejection: it knows which parameter failed.
fn query_error(
    rejection: &QueryRejection,
) -> Option<&serde_path_to_error::Error<serde_urlencoded::de::Error>> {
    let mut source = std::error::Error::source(rejection);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref() {
            return Some(found);
        }
        source = error.source();
    }
    None
}

/// A query parameter's text, trimmed; `None` when absent or empty (forms send empty values).
pub(crate) fn present(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A query parameter holding an RFC 3339 time, as UTC.
pub(crate) fn parse_time(field: &str, value: Option<&String>) -> AdminResult<Option<NaiveDateTime>> {
    present(value)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.naive_utc())
                .map_err(|_| AdminError::validation(field, "must be an RFC 3339 time"))
        })
        .transpose()
}
