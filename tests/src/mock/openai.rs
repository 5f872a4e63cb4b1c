//! OpenAI wire format: chat completions, models and the Responses API.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::answer::{Answer, CREATED};
use super::body::{Chunk, MockBody};
use super::reply;
use super::sse;

/// Model ids listed by `GET /v1/models`.
const MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini"];

/// `GET /v1/models`
pub(crate) fn models() -> Response<MockBody> {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "openai"}))
        .collect();
    reply::json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `POST /v1/chat/completions`
pub(crate) fn chat(answer: &Answer<'_>, stream: bool, include_usage: bool) -> Response<MockBody> {
    let id = format!("chatcmpl-mock-{}", answer.seq);
    if !stream {
        let output = answer.text_tokens();
        return reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": CREATED,
                "model": answer.model,
                "system_fingerprint": "fp_mock",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text(), "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": usage(answer.input_tokens, output),
            }),
        );
    }
    let chunk = |choices: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": answer.model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        })
    };
    let mut chunks = Vec::with_capacity(answer.plan.frames + 3);
    for index in 0..answer.plan.frames {
        let delta = if index == 0 {
            json!({"role": "assistant", "content": answer.piece(index)})
        } else {
            json!({"content": answer.piece(index)})
        };
        let choices = json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]);
        chunks.push(Chunk::text(sse::data(&chunk(choices))));
    }
    let last = json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]);
    chunks.push(Chunk::framing(sse::data(&chunk(last))));
    if include_usage {
        let mut tail = chunk(json!([]));
        tail["usage"] = usage(answer.input_tokens, answer.streamed_tokens());
        chunks.push(Chunk::framing(sse::data(&tail)));
    }
    chunks.push(Chunk::framing(sse::done()));
    answer.event_stream(chunks)
}

fn usage(input: u64, output: u64) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// `POST /v1/responses`
pub(crate) fn responses(answer: &Answer<'_>, stream: bool) -> Response<MockBody> {
    let ids = ResponseIds::new(answer.seq);
    if !stream {
        let body = response_object(
            answer,
            &ids,
            "completed",
            vec![message_item(&ids, "completed", &answer.text())],
            Some(answer.text_tokens()),
        );
        return reply::json(StatusCode::OK, &body);
    }
    let mut events = ResponseEvents::default();
    let text = answer.streamed_text();
    let created = response_object(answer, &ids, "in_progress", Vec::new(), None);
    events.framing("response.created", json!({"response": created}));
    events.framing("response.in_progress", json!({"response": created}));
    events.framing(
        "response.output_item.added",
        json!({"output_index": 0, "item": message_item(&ids, "in_progress", "")}),
    );
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    events.framing(
        "response.content_part.added",
        json!({"item_id": ids.message, "output_index": 0, "content_index": 0, "part": part("")}),
    );
    for index in 0..answer.plan.frames {
        events.text(
            "response.output_text.delta",
            json!({
                "item_id": ids.message,
                "output_index": 0,
                "content_index": 0,
                "delta": answer.piece(index),
                "logprobs": [],
            }),
        );
    }
    events.framing(
        "response.output_text.done",
        json!({
            "item_id": ids.message,
            "output_index": 0,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        }),
    );
    events.framing(
        "response.content_part.done",
        json!({"item_id": ids.message, "output_index": 0, "content_index": 0, "part": part(&text)}),
    );
    let item = message_item(&ids, "completed", &text);
    events.framing(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    let done = response_object(
        answer,
        &ids,
        "completed",
        vec![item],
        Some(answer.streamed_tokens()),
    );
    events.framing("response.completed", json!({"response": done}));
    answer.event_stream(events.chunks)
}

struct ResponseIds {
    response: String,
    message: String,
}

impl ResponseIds {
    fn new(seq: u64) -> Self {
        Self {
            response: format!("resp_mock_{seq}"),
            message: format!("msg_mock_{seq}"),
        }
    }
}

/// Responses API events, numbered with `sequence_number` as they are added.
#[derive(Default)]
struct ResponseEvents {
    chunks: Vec<Chunk>,
}

impl ResponseEvents {
    fn framing(&mut self, kind: &str, data: Value) {
        let bytes = self.frame(kind, data);
        self.chunks.push(Chunk::framing(bytes));
    }

    fn text(&mut self, kind: &str, data: Value) {
        let bytes = self.frame(kind, data);
        self.chunks.push(Chunk::text(bytes));
    }

    fn frame(&self, kind: &str, mut data: Value) -> bytes::Bytes {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.chunks.len());
        sse::event(kind, &data)
    }
}

fn message_item(ids: &ResponseIds, status: &str, text: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({
        "type": "message",
        "id": ids.message,
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

fn response_object(
    answer: &Answer<'_>,
    ids: &ResponseIds,
    status: &str,
    output: Vec<Value>,
    output_tokens: Option<u64>,
) -> Value {
    let usage = output_tokens.map_or(Value::Null, |output| {
        json!({
            "input_tokens": answer.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": answer.input_tokens + output,
        })
    });
    json!({
        "id": ids.response,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": answer.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "metadata": {},
        "usage": usage,
    })
}
