//! Token usage, read from the response bytes as they pass through.
//!
//! Every format reports what a call used in an object of a known name, once per reply or in a
//! few stream events:
//!
//! | format | where | fields |
//! |---|---|---|
//! | OpenAI chat, completions, embeddings | `usage` (a stream's last chunk, with `stream_options.include_usage`) | `prompt_tokens`, `completion_tokens`, `total_tokens`, `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens` |
//! | OpenAI Responses | `usage` (streams: in `response.completed`) | `input_tokens`, `output_tokens`, `total_tokens`, `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens` |
//! | Anthropic | `usage` (streams: `message_start`, then `message_delta`) | `input_tokens`, `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens` |
//! | Gemini | `usageMetadata` (streams: every chunk, cumulative) | `promptTokenCount`, `candidatesTokenCount`, `cachedContentTokenCount`, `thoughtsTokenCount`, `totalTokenCount` |
//!
//! [`UsageScanner`] finds those objects without parsing the rest: it searches each chunk for the
//! bytes `"usage` (a quote inside a JSON string is always escaped, so only a key matches),
//! copies the object that follows (at most [`MAX_OBJECT`] bytes, the only copy it makes) and
//! parses just that. A chunk without the name costs one substring search. Objects split across
//! chunks, or server-sent events split anywhere, are followed across them.
//!
//! When a reply reports usage more than once (Anthropic's start and delta, Gemini's cumulative
//! chunks), each field keeps its latest value. The figures are normalised to [`TokenUsage`]:
//! `prompt` counts every input token (Anthropic's cache reads and writes included, which its
//! `input_tokens` leaves out), `completion` every output token (Gemini's thoughts included),
//! `cached` the input tokens read from the provider's cache, `reasoning` the output tokens spent
//! thinking, and `total` the provider's total or, when it gives none, `prompt + completion`.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::usage::{TokenUsage, UsageScanner};
//!
//! let mut scanner = UsageScanner::new();
//! // An Anthropic stream, split mid-object.
//! scanner.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_");
//! scanner.feed(b"tokens\":12,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n");
//! scanner.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\n\n");
//!
//! let usage = scanner.finish().unwrap();
//! assert_eq!((usage.prompt, usage.completion, usage.cached, usage.total), (112, 30, 100, 142));
//! ```

use serde::Deserialize;

/// The largest usage object read, in bytes; a larger one is not usage and is skipped.
pub const MAX_OBJECT: usize = 4096;

/// What the search looks for: the start of the key `usage` or `usageMetadata`.
const MARKER: &[u8] = b"\"usage";

/// Tokens one call used, as its provider reported them. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUsage {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    /// Output tokens, reasoning included.
    pub completion: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached: u64,
    /// Output tokens spent on reasoning.
    pub reasoning: u64,
    /// The provider's total, or `prompt + completion`.
    pub total: u64,
}

impl TokenUsage {
    /// Usage of `prompt` input and `completion` output tokens, none cached or reasoning.
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt,
            completion,
            cached: 0,
            reasoning: 0,
            total: prompt + completion,
        }
    }

    /// With `cached` of the input tokens read from the cache.
    #[must_use]
    pub fn cached(mut self, cached: u64) -> Self {
        self.cached = cached;
        self
    }

    /// With `reasoning` of the output tokens spent on reasoning.
    #[must_use]
    pub fn reasoning(mut self, reasoning: u64) -> Self {
        self.reasoning = reasoning;
        self
    }
}

/// Finds and reads usage objects in a reply fed chunk by chunk. See the [module docs](self).
#[derive(Debug, Default)]
pub struct UsageScanner {
    state: State,
    reported: Option<Reported>,
}

#[derive(Debug, Default)]
enum State {
    /// Looking for [`MARKER`]; this many of its bytes ended the previous chunk.
    #[default]
    Searching,
    Partial(usize),
    /// After `"usage`: `"` ends the key; `Metadata"` may come first (this many bytes of it seen).
    KeyEnd {
        metadata: usize,
    },
    /// After the key: whitespace, then `:`.
    Colon,
    /// After the colon: whitespace, then `{` (anything else, `null` say, is no usage).
    Open,
    /// Inside the object.
    Object(Capture),
}

#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

const METADATA: &[u8] = b"Metadata\"";

impl UsageScanner {
    /// A scanner that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the next chunk of the reply.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            chunk = match &mut self.state {
                State::Searching => self.search(chunk),
                State::Partial(seen) => {
                    let rest = &MARKER[*seen..];
                    let n = rest.len().min(chunk.len());
                    if chunk[..n] != rest[..n] {
                        // The marker starts with its only quote, so the search resumes here.
                        self.state = State::Searching;
                        chunk
                    } else if n == rest.len() {
                        self.state = State::KeyEnd { metadata: 0 };
                        &chunk[n..]
                    } else {
                        *seen += n;
                        &chunk[n..]
                    }
                }
                State::Object(_) => self.capture(chunk),
                _ => {
                    let (&byte, rest) = chunk.split_first().expect("not empty");
                    self.step(byte);
                    rest
                }
            };
        }
    }

    /// The usage read so far, if the reply reported any.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.reported.as_ref().and_then(Reported::usage)
    }

    /// The usage the whole reply reported, if any.
    pub fn finish(self) -> Option<TokenUsage> {
        self.usage()
    }

    /// Finds the marker in `chunk`; returns what follows it, or nothing when it is absent.
    fn search<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        if let Some(at) = memchr::memmem::find(chunk, MARKER) {
            self.state = State::KeyEnd { metadata: 0 };
            return &chunk[at + MARKER.len()..];
        }
        // A marker cut by the chunk's end starts at one of its last quotes.
        let tail = &chunk[chunk.len().saturating_sub(MARKER.len() - 1)..];
        if let Some(quote) = memchr::memrchr(b'"', tail) {
            let partial = &tail[quote..];
            if MARKER.starts_with(partial) {
                self.state = State::Partial(partial.len());
            }
        }
        &[]
    }

    /// Follows the object being captured through `chunk`, copying what belongs to it at once;
    /// returns what follows the object, or nothing when it goes on past the chunk.
    fn capture<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let State::Object(capture) = &mut self.state else {
            unreachable!("called inside an object")
        };
        // Bytes the object may still take: one more than MAX_OBJECT in all gives it up.
        let room = MAX_OBJECT - capture.bytes.len();
        for (at, &byte) in chunk.iter().enumerate() {
            if at == room {
                // Longer than any usage report: given up, as a byte at a time would.
                self.state = State::Searching;
                return &chunk[at + 1..];
            }
            if capture.follow(byte) {
                capture.bytes.extend_from_slice(&chunk[..=at]);
                let object = std::mem::take(&mut capture.bytes);
                self.state = State::Searching;
                self.read(&object);
                return &chunk[at + 1..];
            }
        }
        capture.bytes.extend_from_slice(chunk);
        &[]
    }

    fn step(&mut self, byte: u8) {
        let next = match &mut self.state {
            State::Searching | State::Partial(_) => unreachable!("searched by chunk"),
            State::KeyEnd { metadata } => {
                if *metadata == 0 && byte == b'"' {
                    State::Colon
                } else if METADATA[*metadata] == byte {
                    *metadata += 1;
                    if *metadata == METADATA.len() {
                        State::Colon
                    } else {
                        return;
                    }
                } else {
                    State::Searching
                }
            }
            State::Colon => match byte {
                b':' => State::Open,
                b' ' | b'\t' | b'\r' | b'\n' => return,
                _ => State::Searching,
            },
            State::Open => match byte {
                b'{' => State::Object(Capture {
                    bytes: {
                        // Room for a usual report at once (OpenAI's with its details is ~250 bytes).
                        let mut bytes = Vec::with_capacity(256);
                        bytes.push(b'{');
                        bytes
                    },
                    depth: 1,
                    ..Capture::default()
                }),
                b' ' | b'\t' | b'\r' | b'\n' => return,
                _ => State::Searching,
            },
            State::Object(_) => unreachable!("captured by chunk"),
        };
        self.state = next;
    }

    fn read(&mut self, object: &[u8]) {
        // Not every object named `usage` is a usage report; one that does not parse is skipped.
        if let Ok(reported) = serde_json::from_slice::<Reported>(object) {
            self.reported = Some(match self.reported.take() {
                Some(earlier) => reported.over(earlier),
                None => reported,
            });
        }
    }
}

impl Capture {
    /// Follows one byte of the object (its strings and nesting); whether it closed the object.
    fn follow(&mut self, byte: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            return false;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// The union of every format's usage fields; each is kept as reported, or absent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct Reported {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Option<u64>,
    #[serde(rename = "toolUsePromptTokenCount")]
    tool_use_prompt_token_count: Option<u64>,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Option<u64>,
    #[serde(rename = "cachedContentTokenCount")]
    cached_content_token_count: Option<u64>,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: Option<u64>,
    #[serde(rename = "totalTokenCount")]
    total_token_count: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl Reported {
    /// This later report over an `earlier` one: each field's latest value.
    fn over(self, earlier: Self) -> Self {
        fn details(later: Option<Details>, earlier: Option<Details>) -> Option<Details> {
            match (later, earlier) {
                (Some(l), Some(e)) => Some(Details {
                    cached_tokens: l.cached_tokens.or(e.cached_tokens),
                    reasoning_tokens: l.reasoning_tokens.or(e.reasoning_tokens),
                }),
                (l, e) => l.or(e),
            }
        }
        Self {
            prompt_tokens: self.prompt_tokens.or(earlier.prompt_tokens),
            completion_tokens: self.completion_tokens.or(earlier.completion_tokens),
            total_tokens: self.total_tokens.or(earlier.total_tokens),
            prompt_tokens_details: details(self.prompt_tokens_details, earlier.prompt_tokens_details),
            completion_tokens_details: details(
                self.completion_tokens_details,
                earlier.completion_tokens_details,
            ),
            input_tokens: self.input_tokens.or(earlier.input_tokens),
            output_tokens: self.output_tokens.or(earlier.output_tokens),
            input_tokens_details: details(self.input_tokens_details, earlier.input_tokens_details),
            output_tokens_details: details(self.output_tokens_details, earlier.output_tokens_details),
            cache_read_input_tokens: self.cache_read_input_tokens.or(earlier.cache_read_input_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .or(earlier.cache_creation_input_tokens),
            prompt_token_count: self.prompt_token_count.or(earlier.prompt_token_count),
            tool_use_prompt_token_count: self
                .tool_use_prompt_token_count
                .or(earlier.tool_use_prompt_token_count),
            candidates_token_count: self.candidates_token_count.or(earlier.candidates_token_count),
            cached_content_token_count: self
                .cached_content_token_count
                .or(earlier.cached_content_token_count),
            thoughts_token_count: self.thoughts_token_count.or(earlier.thoughts_token_count),
            total_token_count: self.total_token_count.or(earlier.total_token_count),
        }
    }

    /// Normalised, when the report names any count.
    fn usage(&self) -> Option<TokenUsage> {
        let prompt = self.prompt_tokens.or_else(|| {
            self.input_tokens.map(|input| {
                input
                    + self.cache_read_input_tokens.unwrap_or(0)
                    + self.cache_creation_input_tokens.unwrap_or(0)
            })
        });
        let prompt = prompt.or_else(|| {
            self.prompt_token_count
                .map(|p| p + self.tool_use_prompt_token_count.unwrap_or(0))
        });
        let completion = self.completion_tokens.or(self.output_tokens).or_else(|| {
            match (self.candidates_token_count, self.thoughts_token_count) {
                (None, None) => None,
                (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
            }
        });
        let total = self.total_tokens.or(self.total_token_count);
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        let detail = |d: Option<Details>, pick: fn(Details) -> Option<u64>| d.and_then(pick);
        let cached = detail(self.prompt_tokens_details, |d| d.cached_tokens)
            .or_else(|| detail(self.input_tokens_details, |d| d.cached_tokens))
            .or(self.cache_read_input_tokens)
            .or(self.cached_content_token_count)
            .unwrap_or(0);
        let reasoning = detail(self.completion_tokens_details, |d| d.reasoning_tokens)
            .or_else(|| detail(self.output_tokens_details, |d| d.reasoning_tokens))
            .or(self.thoughts_token_count)
            .unwrap_or(0);
        Some(TokenUsage {
            prompt,
            completion,
            cached,
            reasoning,
            total: total.unwrap_or(prompt + completion),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reply` whole, then split at every byte, and in one-byte chunks: all agree.
    fn scan(reply: &str) -> Option<TokenUsage> {
        let bytes = reply.as_bytes();
        let whole = {
            let mut s = UsageScanner::new();
            s.feed(bytes);
            s.finish()
        };
        for at in 0..=bytes.len() {
            let mut s = UsageScanner::new();
            s.feed(&bytes[..at]);
            s.feed(&bytes[at..]);
            assert_eq!(s.finish(), whole, "split at {at}");
        }
        let mut s = UsageScanner::new();
        for byte in bytes {
            s.feed(std::slice::from_ref(byte));
        }
        assert_eq!(s.finish(), whole, "byte by byte");
        whole
    }

    #[test]
    fn openai_chat_whole_and_streamed() {
        let whole = r#"{"id":"c","choices":[{"message":{"content":"hi \"usage\": {\"prompt_tokens\":999}"}}],
            "usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27,
            "prompt_tokens_details":{"cached_tokens":16,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":3}}}"#;
        assert_eq!(
            scan(whole),
            Some(TokenUsage::new(20, 7).cached(16).reasoning(3)),
            "text that mentions usage is not usage"
        );
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(scan(stream), Some(TokenUsage::new(5, 2)));
        let without =
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        assert_eq!(scan(without), None, "a stream without include_usage");
    }

    #[test]
    fn openai_responses_whole_and_streamed() {
        let whole = r#"{"object":"response","output":[],"usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":10},
            "output_tokens":12,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":42}}"#;
        assert_eq!(scan(whole), Some(TokenUsage::new(30, 12).cached(10).reasoning(4)));
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"content\":[{\"text\":\"}{\"}]}],",
            "\"usage\":{\"input_tokens\":8,\"output_tokens\":3,\"total_tokens\":11}}}\n\n",
        );
        assert_eq!(scan(stream), Some(TokenUsage::new(8, 3)));
    }

    #[test]
    fn anthropic_whole_and_streamed() {
        let whole = r#"{"type":"message","content":[{"type":"text","text":"hi"}],
            "usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":40,"output_tokens":6}}"#;
        assert_eq!(scan(whole), Some(TokenUsage::new(55, 6).cached(40)));
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":14}}\n\n",
        );
        assert_eq!(scan(stream), Some(TokenUsage::new(9, 14)));
    }

    #[test]
    fn gemini_whole_and_streamed() {
        let whole = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],
            "usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":5,"thoughtsTokenCount":2,
            "cachedContentTokenCount":4,"totalTokenCount":18}}"#;
        assert_eq!(scan(whole), Some(TokenUsage::new(11, 7).cached(4).reasoning(2)));
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"totalTokenCount\":11}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":6,\"totalTokenCount\":17}}\r\n\r\n",
        );
        assert_eq!(scan(stream), Some(TokenUsage::new(11, 6)));
        // Without `alt=sse`, a stream is one JSON array.
        let array = r#"[{"usageMetadata":{"promptTokenCount":3}},{"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}]"#;
        assert_eq!(scan(array), Some(TokenUsage::new(3, 2)));
    }

    #[test]
    fn what_is_not_usage_is_skipped() {
        assert_eq!(scan(r#"{"usage_hint":{"prompt_tokens":1}}"#), None);
        assert_eq!(scan(r#"{"usage":"free tier"}"#), None);
        assert_eq!(scan(r#"{"usage":{"note":"nothing counted"}}"#), None);
        assert_eq!(scan(r#"{"usage":{"prompt_tokens":"many"}}"#), None);
        let huge = format!(r#"{{"usage":{{"x":"{}"}}}}"#, "y".repeat(MAX_OBJECT));
        let mut s = UsageScanner::new();
        s.feed(huge.as_bytes());
        assert_eq!(s.finish(), None, "too long to be usage");
        // Embeddings report usage too.
        assert_eq!(
            scan(r#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}"#),
            Some(TokenUsage::new(4, 0))
        );
        // A key that merely starts with a quote-usage prefix at a chunk's end.
        let mut s = UsageScanner::new();
        s.feed(b"{\"us");
        s.feed(b"er\":1,\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}");
        assert_eq!(s.finish(), Some(TokenUsage::new(2, 1)));
    }

    #[test]
    fn a_report_of_at_most_max_object_bytes_is_read_however_it_is_cut() {
        let report = |len: usize| {
            let bare = r#"{"prompt_tokens":5,"completion_tokens":2,"pad":""}"#;
            let pad = "y".repeat(len - bare.len());
            format!(
                r#"{{"id":"x","usage":{{"prompt_tokens":5,"completion_tokens":2,"pad":"{pad}"}},"more":[1]}}"#
            )
        };
        for (len, expected) in [(MAX_OBJECT, Some(TokenUsage::new(5, 2))), (MAX_OBJECT + 1, None)] {
            let body = report(len);
            for cut in [1, 7, 300, body.len()] {
                let mut s = UsageScanner::new();
                for chunk in body.as_bytes().chunks(cut) {
                    s.feed(chunk);
                }
                assert_eq!(s.finish(), expected, "{len} bytes in chunks of {cut}");
            }
        }
    }
}
