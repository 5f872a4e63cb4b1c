//! Anthropic wire format: `POST /v1/messages`.

use http::{Response, StatusCode};
use serde_json::json;

use super::answer::Answer;
use super::body::{Chunk, MockBody};
use super::reply;
use super::sse;

/// Model ids listed by `GET /v1/models` with an `anthropic-version` header.
const MODELS: &[(&str, &str)] = &[
    ("claude-sonnet-4-20250514", "Claude Sonnet 4"),
    ("claude-opus-4-20250514", "Claude Opus 4"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5"),
];

/// `GET /v1/models` in Anthropic's format.
pub(crate) fn models() -> Response<MockBody> {
    let data: Vec<serde_json::Value> = MODELS
        .iter()
        .map(|(id, name)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": "2025-01-01T00:00:00Z"})
        })
        .collect();
    let first = MODELS.first().map(|(id, _)| *id);
    let last = MODELS.last().map(|(id, _)| *id);
    reply::json(
        StatusCode::OK,
        &json!({"data": data, "has_more": false, "first_id": first, "last_id": last}),
    )
}

/// `POST /v1/messages`, streamed when the body has `"stream": true`.
pub(crate) fn messages(answer: &Answer<'_>, stream: bool) -> Response<MockBody> {
    let id = format!("msg_mock_{}", answer.seq);
    if !stream {
        return reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [{"type": "text", "text": answer.text()}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.text_tokens()},
            }),
        );
    }
    let framing = |name: &str, data: serde_json::Value| Chunk::framing(sse::event(name, &data));
    let mut chunks = Vec::with_capacity(answer.plan.frames + 6);
    chunks.push(framing(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": answer.input_tokens, "output_tokens": 1},
            },
        }),
    ));
    chunks.push(framing(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    chunks.push(framing("ping", json!({"type": "ping"})));
    for index in 0..answer.plan.frames {
        let delta = json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": answer.piece(index)},
        });
        chunks.push(Chunk::text(sse::event("content_block_delta", &delta)));
    }
    chunks.push(framing(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    chunks.push(framing(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": answer.streamed_tokens()},
        }),
    ));
    chunks.push(framing("message_stop", json!({"type": "message_stop"})));
    answer.event_stream(chunks)
}
