//! Server-sent event framing and streaming parameters.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

/// Upper bound for `x-mock-frames`, to keep a typo from exhausting memory.
const MAX_FRAMES: usize = 100_000;

/// How a streamed answer is shaped for one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamPlan {
    /// Number of text frames.
    pub(crate) frames: usize,
    /// Delay between consecutive text frames.
    pub(crate) pace: Duration,
}

impl StreamPlan {
    /// The configured defaults, overridden by `x-mock-frames` and
    /// `x-mock-pace-ms` request headers when present and valid.
    pub(crate) fn from_headers(headers: &HeaderMap, frames: usize, pace: Duration) -> Self {
        let number = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        Self {
            frames: number("x-mock-frames")
                .map_or(frames, |n| usize::try_from(n).unwrap_or(MAX_FRAMES))
                .min(MAX_FRAMES),
            pace: number("x-mock-pace-ms").map_or(pace, Duration::from_millis),
        }
    }
}

/// The text of frame `index` of a stream; the concatenation of all frames
/// starts with "hello from {model}".
pub(crate) fn piece(model: &str, index: usize) -> String {
    if index == 0 {
        format!("hello from {model}")
    } else {
        format!(" #{index}")
    }
}

/// The full text of a stream of `frames` frames.
pub(crate) fn full_text(model: &str, frames: usize) -> String {
    (0..frames).map(|index| piece(model, index)).collect()
}

/// `data: {json}\n\n`
pub(crate) fn data(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    serde_json::to_writer(&mut out, value).expect("serialising a JSON value cannot fail");
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// `event: {name}\ndata: {json}\n\n`
pub(crate) fn event(name: &str, value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut out, value).expect("serialising a JSON value cannot fail");
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// `data: [DONE]\n\n`
pub(crate) fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn framing() {
        assert_eq!(&data(&json!({"a":1}))[..], b"data: {\"a\":1}\n\n");
        assert_eq!(
            &event("ping", &json!({"type":"ping"}))[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(full_text("m", 3), "hello from m #1 #2");
    }

    #[test]
    fn header_overrides() {
        let mut headers = HeaderMap::new();
        let plan = StreamPlan::from_headers(&headers, 5, Duration::ZERO);
        assert_eq!(plan.frames, 5);
        headers.insert("x-mock-frames", "7".parse().unwrap());
        headers.insert("x-mock-pace-ms", "3".parse().unwrap());
        let plan = StreamPlan::from_headers(&headers, 5, Duration::ZERO);
        assert_eq!(plan.frames, 7);
        assert_eq!(plan.pace, Duration::from_millis(3));
    }
}
