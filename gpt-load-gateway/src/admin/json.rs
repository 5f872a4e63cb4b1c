//! A JSON body extractor whose rejection is the admin envelope: a malformed body is
//! `400 INVALID_JSON`, a body above the admin limit `413 PAYLOAD_TOO_LARGE`.

use axum::{
    extract::{
        FromRequest,
        rejection::{BytesRejection, JsonRejection},
    },
    http::StatusCode,
};

use super::error::AdminError;

/// Like `axum::Json`, rejecting with the admin envelope.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(AdminError))]
pub(crate) struct AdminJson<T>(pub(crate) T);

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(bytes) => bytes.into(),
            // gpt-load's binder answers a body of the wrong type or syntax, or without a JSON
            // content type, with 400 INVALID_JSON and the binder's text.
            other => Self::InvalidJson(other.body_text()),
        }
    }
}

impl From<BytesRejection> for AdminError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}
