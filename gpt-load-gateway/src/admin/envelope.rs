//! gpt-load's response envelopes, typed so that the handlers' signatures name what they answer
//! and the OpenAPI document is generated from them.

use axum::{
    Json,
    body::Body,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AdminError, AdminResult};

/// Success with data: `{"code":0,"message":"…","data":…}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Envelope<T> {
    /// Always `0`.
    code: u8,
    /// A human-readable message, English or Chinese by `Accept-Language`.
    message: String,
    data: T,
}

/// Success without data: `{"code":0,"message":"…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ack {
    /// Always `0`.
    code: u8,
    /// A human-readable message, English or Chinese by `Accept-Language`.
    message: String,
}

/// Failure: `{"code":"ERR_CODE","message":"…"}`; a validation failure adds every invalid field:
/// `"errors":[{"field":"…","message":"…"}]`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    /// What went wrong; a validation message starts with the field it names, and lists every
    /// invalid field as `field: problem; other: problem`.
    pub(crate) message: String,
    /// `VALIDATION_FAILED` only, and always there: each invalid field with its problem, in the
    /// order of `message` (one element when one field is at fault). Absent for other codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) errors: Option<Vec<InvalidField>>,
}

/// One invalid field of a `VALIDATION_FAILED` failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct InvalidField {
    /// The body field, query parameter, path segment or setting at fault, as the request names
    /// it; a group's config override is named by its setting key.
    pub(crate) field: String,
    /// What is wrong with it, without the field's name.
    pub(crate) message: String,
}

/// The stable `code` of a failure; the HTTP status says its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ErrorCode {
    /// 400: the body is not valid JSON for the route.
    InvalidJson,
    /// 400: a path segment, query parameter or body field is invalid; the message starts with
    /// its name and `errors` lists every invalid field.
    ValidationFailed,
    /// 400: the request cannot be served as asked.
    BadRequest,
    /// 401: missing or wrong admin key.
    Unauthorized,
    /// 404: no such resource, or no such route under `/api`.
    NotFound,
    /// 405: the route exists, the method does not; `Allow` lists the methods.
    MethodNotAllowed,
    /// 409: a unique name is taken.
    DuplicateResource,
    /// 409: another background task is running.
    TaskInProgress,
    /// 413: the body is larger than the admin API accepts.
    PayloadTooLarge,
    /// 429: too many failed authentications from this address; `Retry-After` says when to retry.
    TooManyRequests,
    /// 500: the database failed.
    DatabaseError,
    /// 500: any other server-side failure.
    InternalServerError,
}

/// What a handler answering with data returns.
pub(crate) type Reply<T> = AdminResult<Json<Envelope<T>>>;

/// What a handler answering with a message only returns.
pub(crate) type AckReply = AdminResult<Json<Ack>>;

/// The success envelope around `data`.
pub(crate) fn ok<T>(message: &str, data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        code: 0,
        message: message.to_owned(),
        data,
    })
}

/// The success envelope without data.
pub(crate) fn ack(message: &str) -> Json<Ack> {
    Json(Ack {
        code: 0,
        message: message.to_owned(),
    })
}

/// One CSV field, quoted when it contains a comma, a quote or a line break.
pub(crate) fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// A download: `body` of `content_type`, saved by browsers as `filename`.
pub(crate) fn attachment(
    content_type: &'static str,
    filename: &str,
    body: impl Into<Body>,
) -> AdminResult<Response> {
    let disposition = HeaderValue::from_str(&format!("attachment; filename={filename}"))
        .map_err(|e| AdminError::Internal(e.into()))?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, body.into()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("sk-plain"), "sk-plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
