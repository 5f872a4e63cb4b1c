//! Empty and cut-off replies: a `2xx` generation whose body carries no content (no choices, no
//! candidates, no content blocks, no output), or a stream that ends or breaks before its first
//! content frame, is a failed attempt that another key may answer.
//!
//! The check is a bounded peek made before the response head goes on, so nothing has reached
//! the client when the attempt is retried: a JSON reply is read whole up to [`PEEK_LIMIT`]; a
//! stream is read frame by frame until the first event that carries content (usually the first
//! or second). Past the limit the reply is taken to have content and passes on, what was peeked
//! first. The peeked frames are handed on unchanged, as one frame.

use std::{borrow::Cow, collections::VecDeque, fmt};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

/// The most a reply is read ahead of the client: 64 KiB.
pub(crate) const PEEK_LIMIT: usize = 64 * 1024;

/// What kind of reply is peeked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// One JSON document.
    Json,
    /// Server-sent events.
    EventStream,
}

/// What the peek found.
#[derive(Debug)]
pub(crate) struct Peeked<E> {
    /// Whether the reply carries content (or was too long to tell).
    pub(crate) has_content: bool,
    /// The frames read, in order.
    pub(crate) prefix: VecDeque<Frame<Bytes>>,
    /// The error that ended the body during the peek, if one did.
    pub(crate) error: Option<E>,
    /// Whether the body ended during the peek.
    pub(crate) ended: bool,
}

/// Reads `body` ahead until it is known whether it carries content.
pub(crate) async fn peek<B>(body: &mut B, kind: ReplyKind) -> Peeked<B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut prefix = VecDeque::new();
    let mut read = 0usize;
    let mut events = EventScanner::default();
    // A JSON reply is judged whole; its frames are kept until the end.
    let mut json_frames: Vec<Bytes> = Vec::new();
    loop {
        if read > PEEK_LIMIT {
            return Peeked {
                has_content: true,
                prefix,
                error: None,
                ended: false,
            };
        }
        match body.frame().await {
            None => {
                let has_content = match kind {
                    ReplyKind::Json => json_has_content(&json_frames),
                    ReplyKind::EventStream => events.finish(),
                };
                return Peeked {
                    has_content,
                    prefix,
                    error: None,
                    ended: true,
                };
            }
            Some(Err(error)) => {
                return Peeked {
                    has_content: false,
                    prefix,
                    error: Some(error),
                    ended: true,
                };
            }
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref().cloned() else {
                    // Trailers end the body: judge what came before them.
                    prefix.push_back(frame);
                    let has_content = match kind {
                        ReplyKind::Json => json_has_content(&json_frames),
                        ReplyKind::EventStream => events.finish(),
                    };
                    return Peeked {
                        has_content,
                        prefix,
                        error: None,
                        ended: true,
                    };
                };
                read += data.len();
                prefix.push_back(frame);
                match kind {
                    ReplyKind::Json => json_frames.push(data),
                    ReplyKind::EventStream => {
                        if events.feed(&data) {
                            return Peeked {
                                has_content: true,
                                prefix,
                                error: None,
                                ended: false,
                            };
                        }
                    }
                }
            }
        }
    }
}

fn json_has_content(frames: &[Bytes]) -> bool {
    let joined;
    let bytes: &[u8] = match frames {
        [one] => one,
        _ => {
            joined = frames.concat();
            &joined
        }
    };
    choice_has_text(bytes) || parsed_has_content(bytes)
}

/// The judgment of [`json_has_content`], from the reply parsed whole.
fn parsed_has_content(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Reply<'_>>(bytes) {
        Ok(reply) => reply.has_content(),
        // A Gemini stream read as JSON is an array of replies; anything else unreadable is not
        // ours to judge.
        Err(_) => match serde_json::from_slice::<Vec<Reply<'_>>>(bytes) {
            Ok(replies) => replies.is_empty() || replies.iter().any(Reply::has_content),
            Err(_) => true,
        },
    }
}

/// The common reply read without parsing it whole: whether `$.choices[i]` has a non-empty
/// `message.content`, `delta.content` or `text` string. `true` is final, because a reply with
/// such a choice has content, and one that does not parse is not judged (see
/// [`json_has_content`]); `false` only means "not found this way" (another shape, an escaped
/// key, a list of parts, anything unexpected), and the reply is then parsed whole.
fn choice_has_text(json: &[u8]) -> bool {
    let mut scan = Scan { json, at: 0 };
    scan.object(|scan, key| match key {
        b"choices" => scan.array(|scan| {
            scan.object(|scan, key| match key {
                b"message" | b"delta" => scan.object(|scan, key| match key {
                    b"content" => Step::from(scan.non_empty_string()),
                    _ => scan.skip_value(),
                }),
                b"text" => Step::from(scan.non_empty_string()),
                _ => scan.skip_value(),
            })
        }),
        _ => scan.skip_value(),
    }) == Step::Found
}

/// How a step of [`choice_has_text`] ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The text was found: stop.
    Found,
    /// The value was read; go on.
    Next,
    /// Not what the scan reads: give up.
    GiveUp,
}

impl From<Option<bool>> for Step {
    /// A string read: non-empty is found, empty goes on; not a string gives up.
    fn from(non_empty: Option<bool>) -> Self {
        match non_empty {
            Some(true) => Self::Found,
            Some(false) => Self::Next,
            None => Self::GiveUp,
        }
    }
}

/// A cursor over JSON that reads only structure: keys without escapes, strings, and values
/// skipped by their brackets.
struct Scan<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.json.get(self.at) {
            if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, byte: u8) -> bool {
        let here = self.peek() == Some(byte);
        self.at += usize::from(here);
        here
    }

    /// An object: `field` reads each value after its key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Step) -> Step {
        if !self.eat(b'{') {
            return Step::GiveUp;
        }
        if self.eat(b'}') {
            return Step::Next;
        }
        loop {
            let Some(key) = self.plain_key() else {
                return Step::GiveUp;
            };
            if !self.eat(b':') {
                return Step::GiveUp;
            }
            match field(self, key) {
                Step::Next => {}
                done => return done,
            }
            if self.eat(b'}') {
                return Step::Next;
            }
            if !self.eat(b',') {
                return Step::GiveUp;
            }
        }
    }

    /// An array: `item` reads each element.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Step) -> Step {
        if !self.eat(b'[') {
            return Step::GiveUp;
        }
        if self.eat(b']') {
            return Step::Next;
        }
        loop {
            match item(self) {
                Step::Next => {}
                done => return done,
            }
            if self.eat(b']') {
                return Step::Next;
            }
            if !self.eat(b',') {
                return Step::GiveUp;
            }
        }
    }

    /// A key with no escape in it (an escaped key gives up: it may spell a field's name).
    fn plain_key(&mut self) -> Option<&'a [u8]> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.at + 1;
        let end = start + memchr::memchr2(b'"', b'\\', &self.json[start..])?;
        if self.json[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        Some(&self.json[start..end])
    }

    /// A string: whether it is non-empty, or `None` when the value is not a string.
    fn non_empty_string(&mut self) -> Option<bool> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let non_empty = self.json.get(self.at + 1) != Some(&b'"');
        self.skip_string().then_some(non_empty)
    }

    /// Moves past the string at the cursor; `false` when it does not end.
    fn skip_string(&mut self) -> bool {
        let mut at = self.at + 1;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.json[at.min(self.json.len())..]) {
                Some(offset) if self.json[at + offset] == b'"' => {
                    self.at = at + offset + 1;
                    return true;
                }
                Some(offset) => at += offset + 2,
                None => return false,
            }
        }
    }

    /// Moves past one value of any kind.
    fn skip_value(&mut self) -> Step {
        let mut depth = 0usize;
        loop {
            let Some(byte) = self.peek() else {
                return Step::GiveUp;
            };
            match byte {
                b'"' => {
                    if !self.skip_string() {
                        return Step::GiveUp;
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    let Some(outer) = depth.checked_sub(1) else {
                        return Step::GiveUp;
                    };
                    depth = outer;
                    self.at += 1;
                }
                b',' | b':' if depth > 0 => self.at += 1,
                b',' | b':' => return Step::GiveUp,
                _ => {
                    // A number or a literal: up to the next delimiter.
                    let rest = &self.json[self.at..];
                    let end = rest
                        .iter()
                        .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                        .unwrap_or(rest.len());
                    self.at += end.max(1);
                }
            }
            if depth == 0 {
                return Step::Next;
            }
        }
    }
}

/// Splits server-sent events and asks each one whether it carries content.
#[derive(Default)]
struct EventScanner {
    pending: BytesMut,
    data: Vec<u8>,
    event: Option<String>,
}

impl EventScanner {
    /// Feeds bytes; whether an event with content has been seen.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line = self.pending.split_to(end + 1);
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.dispatch() {
                    return true;
                }
            } else if let Some(value) = field(line, b"data") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            } else if let Some(value) = field(line, b"event") {
                self.event = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        false
    }

    /// The end of the stream: a last event without its blank line still counts.
    fn finish(&mut self) -> bool {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            if self.feed(&rest) {
                return true;
            }
            if self.feed(b"\n") {
                return true;
            }
        }
        self.dispatch()
    }

    fn dispatch(&mut self) -> bool {
        let data = std::mem::take(&mut self.data);
        let event = self.event.take();
        if data.is_empty() || data == b"[DONE]" {
            return false;
        }
        let Ok(reply) = serde_json::from_slice::<Reply<'_>>(&data) else {
            return false;
        };
        reply.is_content_event(event.as_deref())
    }
}

/// `name: value` (one optional space after the colon), for the field `name`.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// The parts of a reply (or of one streamed event) that say whether it has content; every other
/// field is skipped while parsing, and no text is copied: only whether it is empty is kept.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Reply<'a> {
    /// OpenAI chat and completions.
    choices: Option<Vec<Choice>>,
    /// Gemini.
    candidates: Option<Vec<Candidate>>,
    /// Gemini, when the prompt itself was blocked.
    #[serde(rename = "promptFeedback")]
    prompt_feedback: Option<IgnoredAny>,
    /// Anthropic messages: `message`; OpenAI Responses: `response`; stream event types.
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    /// Anthropic's content blocks.
    content: Option<Vec<IgnoredAny>>,
    /// OpenAI Responses' output items.
    output: Option<Vec<IgnoredAny>>,
    /// OpenAI Responses' stream events carry the response.
    #[serde(borrow)]
    response: Option<Box<Reply<'a>>>,
    /// OpenAI Responses' text delta.
    delta: Option<TextOrAny>,
    /// OpenAI Responses' `object`.
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Choice {
    message: Option<Message>,
    delta: Option<Message>,
    text: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Message {
    content: Option<TextOrAny>,
    tool_calls: Option<Vec<IgnoredAny>>,
    function_call: Option<IgnoredAny>,
    refusal: Option<Text>,
    reasoning_content: Option<Text>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Candidate {
    content: Option<CandidateContent>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CandidateContent {
    parts: Option<Vec<Part>>,
}

/// A string, kept only as whether it is empty; any other value is an error, as for a `String`.
struct Text {
    present: bool,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl Visitor<'_> for Visit {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text, E> {
                Ok(Text {
                    present: !text.is_empty(),
                })
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// Text, a list (of content parts), or anything else, kept only as whether it has content: a
/// non-empty string or a non-empty list.
struct TextOrAny {
    present: bool,
}

impl<'de> Deserialize<'de> for TextOrAny {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let present = deserializer.deserialize_any(AnyValue { lists_count: true })?;
        Ok(Self { present })
    }
}

/// Reads any value and says whether it has content: a non-empty string, or (when
/// `lists_count`) a non-empty list. Nothing is kept.
struct AnyValue {
    lists_count: bool,
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<bool, E> {
        Ok(!text.is_empty())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<bool, A::Error> {
        let first = items.next_element::<IgnoredAny>()?.is_some();
        while items.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first && self.lists_count)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<bool, A::Error> {
        while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// One of a Gemini candidate's parts, kept only as whether it has content: a non-empty `text`,
/// or any field but the thoughts.
struct Part {
    present: bool,
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// What a part's field is, by its name.
        enum Field {
            Text,
            Thought,
            Other,
        }

        impl<'de> Deserialize<'de> for Field {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visit;
                impl Visitor<'_> for Visit {
                    type Value = Field;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }

                    fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                        Ok(match name {
                            "text" => Field::Text,
                            "thought" | "thoughtSignature" => Field::Thought,
                            _ => Field::Other,
                        })
                    }
                }
                deserializer.deserialize_identifier(Visit)
            }
        }

        /// A `text` value: a non-empty string has content, anything else has not.
        struct PartText(bool);

        impl<'de> Deserialize<'de> for PartText {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer
                    .deserialize_any(AnyValue { lists_count: false })
                    .map(Self)
            }
        }

        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = bool;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a part object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<bool, A::Error> {
                let mut present = false;
                while let Some(field) = fields.next_key::<Field>()? {
                    present |= match field {
                        Field::Text => fields.next_value::<PartText>()?.0,
                        Field::Thought => fields.next_value::<IgnoredAny>().map(|_| false)?,
                        Field::Other => fields.next_value::<IgnoredAny>().map(|_| true)?,
                    };
                }
                Ok(present)
            }
        }
        deserializer
            .deserialize_map(Visit)
            .map(|present| Self { present })
    }
}

impl Message {
    fn has_content(&self) -> bool {
        self.content.as_ref().is_some_and(|c| c.present)
            || self.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
            || self.function_call.is_some()
            || self.refusal.as_ref().is_some_and(|r| r.present)
            || self.reasoning_content.as_ref().is_some_and(|r| r.present)
    }
}

impl Choice {
    fn has_content(&self) -> bool {
        self.message.as_ref().is_some_and(Message::has_content)
            || self.delta.as_ref().is_some_and(Message::has_content)
            || self.text.as_ref().is_some_and(|t| t.present)
    }
}

impl Candidate {
    fn has_content(&self) -> bool {
        let parts = self.content.as_ref().and_then(|c| c.parts.as_ref());
        parts.is_some_and(|parts| parts.iter().any(|part| part.present))
    }
}

impl Reply<'_> {
    /// A whole reply: whether it has content. A body of no known generation shape (embeddings,
    /// a model list, a count of tokens) is not judged: it has content.
    fn has_content(&self) -> bool {
        if let Some(choices) = &self.choices {
            return choices.iter().any(Choice::has_content);
        }
        if self.candidates.is_some() || self.prompt_feedback.is_some() {
            return self.candidates.iter().flatten().any(Candidate::has_content);
        }
        if self.kind.as_deref() == Some("message") {
            return self.content.as_ref().is_some_and(|c| !c.is_empty());
        }
        if self.object.as_deref() == Some("response") {
            return self.output.as_ref().is_some_and(|o| !o.is_empty());
        }
        true
    }

    /// One streamed event: whether it carries content. Events that only open the stream (a
    /// role, `message_start`, `response.created`), keep it alive or carry usage do not.
    fn is_content_event(&self, event: Option<&str>) -> bool {
        if let Some(choices) = &self.choices {
            return choices.iter().any(Choice::has_content);
        }
        if let Some(candidates) = &self.candidates {
            return candidates.iter().any(Candidate::has_content);
        }
        let kind = self.kind.as_deref().or(event).unwrap_or("");
        match kind {
            // Anthropic.
            "content_block_start" | "content_block_delta" => true,
            // OpenAI Responses.
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_summary_text.delta" => self.delta.as_ref().is_some_and(|d| d.present),
            "response.output_item.added" | "response.function_call_arguments.delta" => true,
            "response.completed" => self.response.as_ref().is_some_and(|r| r.has_content()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::test_util::Chunks;

    fn json(body: &str) -> bool {
        json_has_content(&[Bytes::copy_from_slice(body.as_bytes())])
    }

    /// Replies with content (`WITH`) and without (`WITHOUT`), as whole JSON documents.
    const WITH: &[&str] = &[
        r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#,
        r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c"}]}}]}"#,
        r#"{"choices":[{"text":"hi"}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f"}}]}}]}"#,
        r#"{"type":"message","content":[{"type":"text","text":"hi"}]}"#,
        r#"{"object":"response","output":[{"type":"message"}]}"#,
        r#"{"data":[{"embedding":[0.1]}]}"#,
        r#"[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}]"#,
        "not json at all",
        // Escaped strings, content as a list of parts, other ways of answering.
        r#"{"choices":[{"message":{"content":"\u00e9\n"}}]}"#,
        r#"{"choices":[{"message":{"content":[{"type":"text","text":"hi"}]}}]}"#,
        r#"{"choices":[{"message":{"content":"","refusal":"no"}}]}"#,
        r#"{"choices":[{"message":{"content":null,"reasoning_content":"think"}}]}"#,
        r#"{"choices":[{"message":{"function_call":{"name":"f"}}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"thought":true,"text":"x"}]}}]}"#,
        r#"{"type":"\u006dessage","content":[{"type":"text"}]}"#,
        // A field of the wrong type makes the reply unreadable, and so not ours to judge.
        r#"{"choices":[{"text":42}]}"#,
    ];
    const WITHOUT: &[&str] = &[
        r#"{"choices":[]}"#,
        r#"{"choices":[{"message":{"role":"assistant","content":""}}]}"#,
        r#"{"candidates":[{"content":{"parts":[]},"finishReason":"SAFETY"}]}"#,
        r#"{"candidates":[]}"#,
        r#"{"promptFeedback":{"blockReason":"OTHER"}}"#,
        r#"{"type":"message","content":[]}"#,
        r#"{"object":"response","output":[]}"#,
        r#"[{"candidates":[{"content":{"parts":[{"text":""}]}}]}]"#,
        r#"{"choices":[{"message":{"content":[]}}]}"#,
        r#"{"choices":[{"message":{"content":{"text":"a map is not content"}}}]}"#,
        r#"{"choices":[{"message":{"content":"","refusal":"","tool_calls":[]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"thought":true},{"thoughtSignature":"s"}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":7}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":["a"]}]}}]}"#,
    ];

    #[test]
    fn whole_replies_are_judged_by_their_shape() {
        for body in WITH {
            assert!(json(body), "{body}");
        }
        for body in WITHOUT {
            assert!(!json(body), "{body}");
        }
    }

    /// A realistic OpenAI reply: other fields first, escapes, nesting, numbers and literals.
    const OPENAI: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "meta": {"note": "a \"quoted\" word, a \\ and a \u00e9", "list": [1, -2.5e+3, true, null, {"a": []}]},
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 0}}
}"#;

    #[test]
    fn common_replies_are_judged_without_a_full_parse() {
        assert!(choice_has_text(OPENAI.as_bytes()));
        for body in [
            r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#,
            r#"{"choices":[{"index":0,"message":{"content":""}},{"message":{"content":"b"}}]}"#,
            r#"{"choices":[{"text":"hi"}]}"#,
            r#"{"choices":[{"delta":{"content":"\n"}}]}"#,
        ] {
            assert!(choice_has_text(body.as_bytes()), "{body}");
        }
        // Other shapes are left to the full parse.
        for body in [
            r#"{"type":"message","content":[{"type":"text","text":"hi"}]}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"hi"}]}}]}"#,
            r#"{"choi\u0063es":[{"message":{"content":"hi"}}]}"#,
            r#"[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}]"#,
        ] {
            assert!(!choice_has_text(body.as_bytes()), "{body}");
        }
    }

    /// The shortcut only ever says what the full parse would: on every reply above, every cut of
    /// it and every one-byte change to it, content found without the full parse is content found
    /// with it.
    #[test]
    fn the_shortcut_never_contradicts_the_full_parse() {
        let mut checked = 0;
        for body in WITH.iter().chain(WITHOUT).chain([&OPENAI]) {
            let body = body.as_bytes();
            let mut variants: Vec<Vec<u8>> = (0..=body.len()).map(|end| body[..end].to_vec()).collect();
            for at in 0..body.len() {
                for byte in *b"\"\\{}[],: x0" {
                    let mut changed = body.to_vec();
                    changed[at] = byte;
                    variants.push(changed);
                }
            }
            for variant in variants {
                if choice_has_text(&variant) {
                    assert!(
                        parsed_has_content(&variant),
                        "{}",
                        String::from_utf8_lossy(&variant)
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    fn events(chunks: &[&str]) -> bool {
        let mut scanner = EventScanner::default();
        chunks.iter().any(|c| scanner.feed(c.as_bytes())) || scanner.finish()
    }

    #[test]
    fn a_stream_has_content_once_an_event_carries_some() {
        let role = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        assert!(events(&[role, text]));
        assert!(!events(&[role, "data: [DONE]\n\n"]), "a role and nothing else");
        // Split anywhere, CRLF or not.
        assert!(events(&[
            "data: {\"choices\":[{\"delta\":{\"con",
            "tent\":\"x\"}}]}\r\n\r\n"
        ]));
        // A last event without its blank line.
        assert!(events(&["data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}"]));
        let start =
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n";
        let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
        let block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0}\n\n";
        assert!(events(&[start, ping, block]));
        assert!(!events(&[
            start,
            ping,
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ]));
        let created =
            "data: {\"type\":\"response.created\",\"response\":{\"object\":\"response\",\"output\":[]}}\n\n";
        let delta = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n";
        assert!(events(&[created, delta]));
        assert!(!events(&[created]));
        let gemini = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}\r\n\r\n";
        assert!(events(&[gemini]));
    }

    #[tokio::test]
    async fn the_peek_stops_at_the_first_content_and_keeps_what_it_read() {
        let frames = [
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
        ];
        let mut body = Chunks::new(frames);
        let peeked = peek(&mut body, ReplyKind::EventStream).await;
        assert!(peeked.has_content && !peeked.ended);
        assert_eq!(peeked.prefix.len(), 2, "read up to the first content frame");
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, frames[2]);

        let mut empty = Full::new(Bytes::from_static(br#"{"choices":[]}"#));
        let peeked = peek(&mut empty, ReplyKind::Json).await;
        assert!(!peeked.has_content && peeked.ended);

        let mut broken = Chunks::failing();
        let peeked = peek(&mut broken, ReplyKind::EventStream).await;
        assert!(
            !peeked.has_content && peeked.error.is_some(),
            "cut off before any content"
        );

        let big = format!("data: {{\"x\":\"{}\"}}\n\n", "y".repeat(PEEK_LIMIT + 1));
        let mut long = Full::new(Bytes::from(big));
        assert!(
            peek(&mut long, ReplyKind::EventStream).await.has_content,
            "past the limit"
        );
    }
}
