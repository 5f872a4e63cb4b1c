//! Gemini wire format: `generateContent`, `streamGenerateContent` and models.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::answer::Answer;
use super::body::Chunk;
use super::body::MockBody;
use super::reply;
use super::sse;

/// Model names listed by `GET /v1beta/models`.
const MODELS: &[(&str, &str)] = &[
    ("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini-2.0-flash", "Gemini 2.0 Flash"),
];

/// `GET /v1beta/models`
pub(crate) fn models() -> Response<MockBody> {
    let models: Vec<Value> = MODELS
        .iter()
        .map(|(name, display)| {
            json!({
                "name": format!("models/{name}"),
                "displayName": display,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            })
        })
        .collect();
    reply::json(StatusCode::OK, &json!({"models": models}))
}

/// `POST /v1beta/models/{model}:generateContent`
pub(crate) fn generate(answer: &Answer<'_>) -> Response<MockBody> {
    let body = candidate(answer, &answer.text(), true, answer.text_tokens());
    reply::json(StatusCode::OK, &body)
}

/// `POST /v1beta/models/{model}:streamGenerateContent`: server-sent events
/// with `alt=sse`, otherwise a JSON array delivered element by element.
pub(crate) fn stream(answer: &Answer<'_>, sse_format: bool) -> Response<MockBody> {
    let frames = answer.plan.frames;
    let mut chunks = Vec::with_capacity(frames + 1);
    for index in 0..frames {
        let tokens = index as u64 + 1;
        let value = candidate(answer, &answer.piece(index), index + 1 == frames, tokens);
        let bytes = if sse_format {
            sse::data(&value)
        } else {
            let mut out = if index == 0 {
                b"[".to_vec()
            } else {
                b",\r\n".to_vec()
            };
            serde_json::to_writer(&mut out, &value).expect("serialising a JSON value cannot fail");
            Bytes::from(out)
        };
        chunks.push(Chunk::text(bytes));
    }
    if sse_format {
        return answer.event_stream(chunks);
    }
    let tail: &'static [u8] = if frames == 0 { b"[]" } else { b"]" };
    chunks.push(Chunk::framing(Bytes::from_static(tail)));
    reply::with_type(StatusCode::OK, "application/json", answer.stream_body(chunks))
}

fn candidate(answer: &Answer<'_>, text: &str, last: bool, output_tokens: u64) -> Value {
    let mut candidate = json!({
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    });
    if last {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": answer.input_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": answer.input_tokens + output_tokens,
        },
        "modelVersion": answer.model,
        "responseId": format!("mock-{}", answer.seq),
    })
}
