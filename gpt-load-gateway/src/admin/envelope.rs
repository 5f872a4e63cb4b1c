//! gpt-load's response envelopes, typed so that the handlers' signatures name what they answer
//! and the OpenAPI document is generated from them.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::AdminResult;

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

/// Failure: `{"code":"ERR_CODE","message":"…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Failure {
    /// `INVALID_JSON`, `VALIDATION_FAILED`, `BAD_REQUEST`, `NOT_FOUND`, `DUPLICATE_RESOURCE`,
    /// `UNAUTHORIZED`, `TOO_MANY_REQUESTS`, `TASK_IN_PROGRESS`, `DATABASE_ERROR` or
    /// `INTERNAL_SERVER_ERROR`.
    pub(crate) code: &'static str,
    /// What went wrong; a validation message names the field.
    pub(crate) message: String,
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
