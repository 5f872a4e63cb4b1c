//! Response builders shared by the route handlers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::body::MockBody;

/// A JSON response with the given status.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response<MockBody> {
    let bytes = serde_json::to_vec(value).expect("serialising a JSON value cannot fail");
    with_type(status, "application/json", MockBody::full(Bytes::from(bytes)))
}

/// A `200 OK` server-sent events response.
pub(crate) fn event_stream(body: MockBody) -> Response<MockBody> {
    let mut response = with_type(StatusCode::OK, "text/event-stream", body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A response with the given status, content type and body.
pub(crate) fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: MockBody,
) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
