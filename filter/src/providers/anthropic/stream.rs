//! Anthropic's Messages event stream → OpenAI `chat.completion.chunk` SSE.
//!
//! Anthropic: `message_start`, then per content block `content_block_start`,
//! `content_block_delta`s (`text_delta`, `input_json_delta`,
//! `thinking_delta`, `signature_delta`, …), `content_block_stop`; then
//! `message_delta` (stop reason, output usage) and `message_stop`; `ping`s
//! anywhere; an `error` event instead of the rest when something fails.
//!
//! The client gets: a first chunk with `role: assistant` and `content: ""`;
//! `content` deltas; `reasoning_content` deltas, and each thinking block
//! whole with its signature once it ends (`thinking_blocks: [{index, type,
//! thinking, signature}]`, what a client sends back on the next turn;
//! redacted blocks as `{index, type: redacted_thinking, data}`); tool-call deltas (`index` counts the
//! client's tools, the first delta of each has `id`, `type`, `name` and
//! `arguments: ""`, then argument fragments); a chunk with `finish_reason`;
//! the usage chunk (`choices: []`) when `stream_options.include_usage` was
//! asked; `data: [DONE]`. An `error` event becomes `data: {"error":{...}}`
//! (no `[DONE]` after it), and a stream that ends without `message_stop`
//! gets the gateway's `upstream_stream_incomplete` error event.
//!
//! Every upstream chunk is replaced by what its complete events produce
//! (possibly nothing), so any split of the bytes gives the same output.

use super::response::{completion_id, finish_reason, invalid_answer, stream_error};
use super::types::{ErrorBody, Message, Usage};
use crate::error::ApiError;
use crate::providers::openai_out::{write_data, ChoiceStream, Delta, DONE};
use crate::providers::openai_shaped::incomplete_stream_event;
use crate::providers::ResponseTranslator;
use crate::sse::{SseEvent, SseParser};
use crate::usage::Usage as GatewayUsage;
use serde::Deserialize;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    content_block: Option<super::types::Block<'a>>,
    #[serde(default)]
    delta: Option<EventDelta>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct EventDelta {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// A content block between its start and stop.
enum Open {
    Text,
    Thinking {
        text: String,
        signature: String,
    },
    /// A client tool call: its OpenAI `index`, whether any argument bytes
    /// were sent.
    Tool {
        index: usize,
        args: bool,
    },
    /// The JSON-mode tool: its input is streamed as `content`.
    Json {
        any: bool,
    },
    Ignored,
}

pub struct StreamTranslator {
    provider: String,
    chunks: ChoiceStream,
    json_tool: Option<String>,
    sse: SseParser,
    events: Vec<SseEvent>,
    finish_sent: bool,
    /// `message_stop` or an error: nothing more is written.
    ended: bool,
    blocks: Vec<(u64, Open)>,
    next_tool: usize,
    /// Text held back in JSON mode until it is known whether the JSON tool
    /// answers (then the text is dropped, as in a whole answer).
    held: String,
    json_used: bool,
    stop_reason: Option<String>,
    usage: Usage,
    saw_usage: bool,
}

impl StreamTranslator {
    pub fn new(provider: &str, include_usage: bool, json_tool: Option<String>) -> Self {
        StreamTranslator {
            provider: provider.to_string(),
            chunks: ChoiceStream::new(completion_id(""), String::new(), include_usage),
            json_tool,
            sse: SseParser::new(),
            events: Vec::new(),
            finish_sent: false,
            ended: false,
            blocks: Vec::new(),
            next_tool: 0,
            held: String::new(),
            json_used: false,
            stop_reason: None,
            usage: Usage::default(),
            saw_usage: false,
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: ApiError) {
        write_data(out, &e.body());
        self.ended = true;
    }

    fn flush_held(&mut self, out: &mut Vec<u8>) {
        if !self.json_used && !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.chunks.content(out, &held);
        }
        self.held.clear();
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_held(out);
        if self.finish_sent {
            return;
        }
        self.chunks.start(out);
        self.finish_sent = true;
        let reason = finish_reason(self.stop_reason.as_deref(), self.next_tool > 0);
        self.chunks.write(out, Delta::default(), Some(reason));
    }

    fn block(&mut self, index: u64) -> Option<&mut Open> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>, at_end: bool) {
        if self.ended {
            return;
        }
        let parsed: Event<'_> = match serde_json::from_str(&ev.data) {
            Ok(e) => e,
            // A cut-off last event: reported as an incomplete stream below.
            Err(_) if at_end => return,
            Err(_) => {
                return self.fail(out, invalid_answer("an event is not JSON"));
            }
        };
        let index = parsed.index.unwrap_or(0);
        match parsed.kind.as_str() {
            "message_start" => {
                if let Some(m) = parsed.message {
                    if !self.chunks.started {
                        self.chunks.id = completion_id(m.id.as_deref().unwrap_or(""));
                        self.chunks.model = m.model.unwrap_or_default();
                    }
                    if let Some(u) = m.usage {
                        self.usage.merge(&u);
                        self.saw_usage = true;
                    }
                }
                self.chunks.start(out);
            }
            "content_block_start" => {
                self.chunks.start(out);
                let Some(b) = parsed.content_block else {
                    return;
                };
                let open = match b.kind.as_str() {
                    "text" => {
                        let t = b.text.unwrap_or_default();
                        if self.json_tool.is_some() {
                            self.held.push_str(&t);
                        } else {
                            self.chunks.content(out, &t);
                        }
                        Open::Text
                    }
                    "thinking" => {
                        let text = b.thinking.unwrap_or_default();
                        if !text.is_empty() {
                            self.chunks.write(
                                out,
                                Delta {
                                    reasoning_content: Some(&text),
                                    ..Delta::default()
                                },
                                None,
                            );
                        }
                        Open::Thinking {
                            text,
                            signature: b.signature.unwrap_or_default(),
                        }
                    }
                    "redacted_thinking" => {
                        let data = b.data.unwrap_or_default();
                        self.chunks.redacted_thinking(out, &data);
                        Open::Ignored
                    }
                    "tool_use" => {
                        let name = b.name.unwrap_or_default();
                        if self.json_tool.as_deref() == Some(name.as_str()) {
                            self.json_used = true;
                            self.held.clear();
                            Open::Json { any: false }
                        } else {
                            let i = self.next_tool;
                            self.next_tool += 1;
                            let id = b.id.unwrap_or_default();
                            self.chunks.tool_start(out, i, &id, &name);
                            Open::Tool {
                                index: i,
                                args: false,
                            }
                        }
                    }
                    _ => Open::Ignored,
                };
                self.blocks.retain(|(i, _)| *i != index);
                self.blocks.push((index, open));
            }
            "content_block_delta" => {
                let Some(d) = parsed.delta else {
                    return;
                };
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        let t = d.text.unwrap_or_default();
                        if self.json_tool.is_some() {
                            if !self.json_used {
                                self.held.push_str(&t);
                            }
                        } else {
                            self.chunks.content(out, &t);
                        }
                    }
                    Some("input_json_delta") => {
                        let part = d.partial_json.unwrap_or_default();
                        if part.is_empty() {
                            return;
                        }
                        match self.block(index) {
                            Some(Open::Tool { index: i, args }) => {
                                *args = true;
                                let i = *i;
                                self.chunks.tool_args(out, i, &part);
                            }
                            Some(Open::Json { any }) => {
                                *any = true;
                                self.chunks.content(out, &part);
                            }
                            _ => {}
                        }
                    }
                    Some("thinking_delta") => {
                        let t = d.thinking.unwrap_or_default();
                        if let Some(Open::Thinking { text, .. }) = self.block(index) {
                            text.push_str(&t);
                        }
                        if !t.is_empty() {
                            self.chunks.start(out);
                            self.chunks.write(
                                out,
                                Delta {
                                    reasoning_content: Some(&t),
                                    ..Delta::default()
                                },
                                None,
                            );
                        }
                    }
                    Some("signature_delta") => {
                        if let Some(Open::Thinking { signature, .. }) = self.block(index) {
                            signature.push_str(d.signature.as_deref().unwrap_or(""));
                        }
                    }
                    // citations_delta and future delta types
                    _ => {}
                }
            }
            "content_block_stop" => {
                let pos = self.blocks.iter().position(|(i, _)| *i == index);
                let Some((_, open)) = pos.map(|p| self.blocks.remove(p)) else {
                    return;
                };
                match open {
                    Open::Tool {
                        index: i,
                        args: false,
                    } => self.chunks.tool_args(out, i, "{}"),
                    Open::Json { any: false } => self.chunks.content(out, "{}"),
                    Open::Thinking { text, signature } => {
                        self.chunks.thinking(out, &text, &signature)
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = parsed.usage {
                    self.usage.merge(&u);
                    self.saw_usage = true;
                }
                if let Some(r) = parsed.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(r);
                    self.finish(out);
                }
            }
            "message_stop" => {
                self.finish(out);
                if self.chunks.include_usage {
                    self.chunks.head().write_usage(out, self.usage.openai());
                }
                out.extend_from_slice(DONE);
                self.ended = true;
            }
            "error" => {
                let e = stream_error(&self.provider, &parsed.error.unwrap_or_default());
                self.fail(out, e);
            }
            // ping, and event types added later
            _ => {}
        }
    }
}

impl ResponseTranslator for StreamTranslator {
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.sse.feed(chunk, &mut self.events);
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            self.on_event(ev, &mut out, false);
        }
        if end_of_stream {
            self.sse.finish(&mut self.events);
            let events = std::mem::take(&mut self.events);
            for ev in &events {
                self.on_event(ev, &mut out, true);
            }
            if !self.ended {
                out.extend_from_slice(&incomplete_stream_event());
                self.ended = true;
            }
        }
        Some(out)
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        // Asked for a stream but the answer was buffered (not done by the
        // gateway for 2xx streams): translate it as a stream all the same.
        self.stream_chunk(body, true)
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.saw_usage.then(|| self.usage.gateway())
    }

    fn set_created(&mut self, unix_seconds: u64) {
        self.chunks.created = unix_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: &[u8], include_usage: bool) -> String {
        let mut t = StreamTranslator::new("claude", include_usage, None);
        let mut out = t.stream_chunk(stream, false).unwrap();
        out.extend(t.stream_chunk(b"", true).unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let inputs: [&[u8]; 7] = [
            b"",
            b"data: {\n\n",
            b"data: [1,2]\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":99,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n",
            b"data: {\"type\":\"content_block_stop\",\"index\":18446744073709551615}\n\n",
            b"data: {\"type\":\"message_start\",\"message\":{\"content\":\"x\"}}\n\n",
            b"\xff\xfe\x00data: \xff\n\n",
        ];
        for i in inputs {
            let s = run(i, true);
            assert!(s.contains("\"error\""), "{s}");
        }
    }

    const FULL: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"h\\u00e9\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn full_stream_at_every_split_and_every_cut() {
        let whole = run(FULL, true);
        assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
        assert!(
            whole.contains("\"finish_reason\":\"tool_calls\""),
            "{whole}"
        );
        assert!(whole.contains("\"signature\":\"sig\""), "{whole}");
        assert!(whole.contains("\"arguments\":\"{\\\"a\\\":1}\""), "{whole}");
        for i in 0..=FULL.len() {
            let mut t = StreamTranslator::new("claude", true, None);
            let mut out = t.stream_chunk(&FULL[..i], false).unwrap();
            out.extend(t.stream_chunk(&FULL[i..], false).unwrap());
            out.extend(t.stream_chunk(b"", true).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), whole, "split at {i}");
            // Cut at i: the client always sees an end, [DONE] or an error.
            let mut t = StreamTranslator::new("claude", true, None);
            let mut out = t.stream_chunk(&FULL[..i], false).unwrap();
            out.extend(t.stream_chunk(b"", true).unwrap());
            let s = String::from_utf8(out).unwrap();
            assert!(
                s.ends_with("data: [DONE]\n\n") || s.contains("upstream_stream_incomplete"),
                "cut at {i}: {s}"
            );
        }
    }

    #[test]
    fn events_after_the_end_are_ignored() {
        let s = run(
            b"data: {\"type\":\"message_stop\"}\n\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"late\"}}\n\n",
            false,
        );
        assert!(!s.contains("late"));
        assert!(s.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn usage_without_include_usage_is_still_recorded() {
        let mut t = StreamTranslator::new("claude", false, None);
        t.stream_chunk(
            b"data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
            false,
        );
        let u = t.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (7, 7, 2)
        );
    }
}
