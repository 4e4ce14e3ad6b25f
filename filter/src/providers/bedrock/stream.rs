//! `ConverseStream`'s binary event stream → OpenAI `chat.completion.chunk`
//! SSE.
//!
//! Bedrock sends [event-stream frames](super::eventstream) whose
//! `:message-type` is `event` (`:event-type` names it, the payload is
//! JSON), `exception` (`:exception-type`, payload `{"message"}`) or `error`
//! (`:error-code`, `:error-message` headers). Events: `messageStart`
//! (role), then per content block an optional `contentBlockStart` (tool
//! calls only: `toolUseId`, `name`), `contentBlockDelta`s (`text`,
//! `toolUse.input` fragments, `reasoningContent` `text` / `signature` /
//! `redactedContent`) and `contentBlockStop`; `messageStop` (stop reason);
//! `metadata` (usage, metrics) last.
//!
//! The client gets what the Anthropic translator gives (same chunk shapes):
//! a first chunk with `role: assistant` and `content: ""`; `content`
//! deltas; `reasoning_content` deltas and each reasoning block whole with
//! its signature once it ends (`thinking_blocks`); tool-call deltas (first
//! with `id`, `type`, `name`, `arguments: ""`, then argument fragments); a
//! chunk with `finish_reason` at `messageStop`; at `metadata` the usage
//! chunk (`choices: []`) when `stream_options.include_usage` was asked, and
//! `data: [DONE]`. A stream that stops without `metadata` ends at its end
//! (no usage chunk: there are no counts to give). Exceptions become
//! `data: {"error":{...}}` (no `[DONE]`); a frame that fails its CRC or is
//! malformed ends the stream with an `upstream_invalid_response` error
//! event; a stream that ends before `messageStop` (or inside a frame) gets
//! `upstream_stream_incomplete`.
//!
//! Every upstream chunk is replaced by what its complete frames produce
//! (possibly nothing), so any split of the bytes gives the same output.

use super::eventstream::{Decoder, Frame};
use super::response::{
    completion_id, finish_reason, invalid_answer, stream_error, REQUEST_ID_HEADER,
};
use super::types::{str_at, Usage};
use crate::error::ApiError;
use crate::providers::openai_out::{write_data, ChoiceStream, Delta, DONE};
use crate::providers::openai_shaped::incomplete_stream_event;
use crate::providers::ResponseTranslator;
use crate::usage::Usage as GatewayUsage;
use serde_json::Value;

/// A content block between its first event and its stop.
enum Open {
    Text,
    Thinking {
        text: String,
        signature: String,
    },
    Redacted {
        data: String,
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
    decoder: Decoder,
    frames: Vec<Frame>,
    /// `messageStop` arrived (and the finish chunk went out).
    stopped: bool,
    /// `[DONE]`, an error event or a failed decode: nothing more is written.
    ended: bool,
    blocks: Vec<(u64, Open)>,
    next_tool: usize,
    /// Text held back in JSON mode until it is known whether the JSON tool
    /// answers (then the text is dropped, as in a whole answer).
    held: String,
    json_used: bool,
    usage: Usage,
    saw_usage: bool,
}

impl StreamTranslator {
    pub fn new(
        provider: &str,
        model: &str,
        include_usage: bool,
        json_tool: Option<String>,
    ) -> Self {
        StreamTranslator {
            provider: provider.to_string(),
            chunks: ChoiceStream::new(completion_id(None), model.to_string(), include_usage),
            json_tool,
            decoder: Decoder::new(),
            frames: Vec::new(),
            stopped: false,
            ended: false,
            blocks: Vec::new(),
            next_tool: 0,
            held: String::new(),
            json_used: false,
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

    /// The usage chunk (when asked for) and `[DONE]`.
    fn done(&mut self, out: &mut Vec<u8>) {
        if self.chunks.include_usage && self.saw_usage {
            self.chunks.head().write_usage(out, self.usage.openai());
        }
        out.extend_from_slice(DONE);
        self.ended = true;
    }

    fn block(&mut self, index: u64) -> Option<&mut Open> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    /// The block at `index`, opened as `make()` gives when it is new (text
    /// and reasoning blocks have no start event).
    fn block_or(&mut self, index: u64, make: impl FnOnce() -> Open) -> Option<&mut Open> {
        if self.block(index).is_none() {
            self.blocks.push((index, make()));
        }
        self.block(index)
    }

    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match frame.header(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let kind = frame.header(":exception-type").unwrap_or("exception");
                let payload = serde_json::from_slice::<Value>(&frame.payload).ok();
                let msg = payload.as_ref().and_then(|p| str_at(p, "message"));
                let e = stream_error(&self.provider, kind, msg);
                return self.fail(out, e);
            }
            Some("error") => {
                let kind = frame.header(":error-code").unwrap_or("error");
                let e = stream_error(&self.provider, kind, frame.header(":error-message"));
                return self.fail(out, e);
            }
            // Other message types (none today) carry no answer.
            _ => return,
        }
        let ev: Value = match serde_json::from_slice(&frame.payload) {
            Ok(e @ Value::Object(_)) => e,
            _ => return self.fail(out, invalid_answer("an event is not a JSON object")),
        };
        let index = ev
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match frame.header(":event-type").unwrap_or("") {
            "messageStart" => self.chunks.start(out),
            "contentBlockStart" => {
                self.chunks.start(out);
                let Some(tool) = ev.pointer("/start/toolUse") else {
                    self.blocks.retain(|(i, _)| *i != index);
                    self.blocks.push((index, Open::Ignored));
                    return;
                };
                let name = str_at(tool, "name").unwrap_or("");
                let open = if self.json_tool.as_deref() == Some(name) {
                    self.json_used = true;
                    self.held.clear();
                    Open::Json { any: false }
                } else {
                    let i = self.next_tool;
                    self.next_tool += 1;
                    let id = str_at(tool, "toolUseId").unwrap_or("");
                    self.chunks.tool_start(out, i, id, name);
                    Open::Tool {
                        index: i,
                        args: false,
                    }
                };
                self.blocks.retain(|(i, _)| *i != index);
                self.blocks.push((index, open));
            }
            "contentBlockDelta" => {
                let Some(d) = ev.get("delta") else {
                    return;
                };
                if let Some(t) = str_at(d, "text") {
                    if !matches!(self.block_or(index, || Open::Text), Some(Open::Text)) {
                        return;
                    }
                    if self.json_tool.is_some() {
                        if !self.json_used {
                            self.held.push_str(t);
                        }
                    } else {
                        self.chunks.content(out, t);
                    }
                } else if let Some(part) = d.pointer("/toolUse/input").and_then(Value::as_str) {
                    if part.is_empty() {
                        return;
                    }
                    match self.block(index) {
                        Some(Open::Tool { index: i, args }) => {
                            *args = true;
                            let i = *i;
                            self.chunks.tool_args(out, i, part);
                        }
                        Some(Open::Json { any }) => {
                            *any = true;
                            self.chunks.content(out, part);
                        }
                        _ => {}
                    }
                } else if let Some(r) = d.get("reasoningContent") {
                    if let Some(data) = str_at(r, "redactedContent") {
                        if let Some(Open::Redacted { data: d }) =
                            self.block_or(index, || Open::Redacted {
                                data: String::new(),
                            })
                        {
                            d.push_str(data);
                        }
                        return;
                    }
                    let text = str_at(r, "text").unwrap_or("");
                    let signature = str_at(r, "signature").unwrap_or("");
                    match self.block_or(index, || Open::Thinking {
                        text: String::new(),
                        signature: String::new(),
                    }) {
                        Some(Open::Thinking {
                            text: t,
                            signature: s,
                        }) => {
                            t.push_str(text);
                            s.push_str(signature);
                        }
                        _ => return,
                    }
                    if !text.is_empty() {
                        self.chunks.start(out);
                        self.chunks.write(
                            out,
                            Delta {
                                reasoning_content: Some(text),
                                ..Delta::default()
                            },
                            None,
                        );
                    }
                }
                // citations, images, tool results: not mapped
            }
            "contentBlockStop" => {
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
                    Open::Redacted { data } => self.chunks.redacted_thinking(out, &data),
                    _ => {}
                }
            }
            "messageStop" => {
                if self.stopped {
                    return;
                }
                self.flush_held(out);
                self.chunks.start(out);
                self.stopped = true;
                let reason = finish_reason(str_at(&ev, "stopReason"), self.next_tool > 0);
                self.chunks.write(out, Delta::default(), Some(reason));
                if self.saw_usage {
                    self.done(out);
                }
            }
            "metadata" => {
                if let Some(u) = ev.get("usage") {
                    self.usage = Usage::from_json(u);
                    self.saw_usage = true;
                }
                if self.stopped {
                    self.done(out);
                }
            }
            // Event types added later.
            _ => {}
        }
    }
}

impl ResponseTranslator for StreamTranslator {
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if !self.ended {
            let decoded = self.decoder.feed(chunk, &mut self.frames);
            let frames = std::mem::take(&mut self.frames);
            for f in &frames {
                self.on_frame(f, &mut out);
            }
            if let Err(e) = decoded {
                if !self.ended {
                    let e = invalid_answer(&format!("the event stream is corrupt ({e})"));
                    self.fail(&mut out, e);
                }
            }
        }
        if end_of_stream && !self.ended {
            if self.stopped && self.decoder.pending() == 0 {
                self.done(&mut out);
            } else {
                out.extend_from_slice(&incomplete_stream_event());
                self.ended = true;
            }
        }
        Some(out)
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        // Asked for a stream but the answer was buffered: translate it as a
        // stream all the same.
        self.stream_chunk(body, true)
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.saw_usage.then(|| self.usage.gateway())
    }

    fn set_created(&mut self, unix_seconds: u64) {
        self.chunks.created = unix_seconds;
    }

    fn response_headers(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        // The id the chunks get (set before the first one goes out).
        if !self.chunks.started {
            self.chunks.id = completion_id(get(REQUEST_ID_HEADER).as_deref());
        }
    }

    fn content_type(&self) -> Option<&'static str> {
        Some("text/event-stream")
    }
}

#[cfg(test)]
mod tests {
    use super::super::eventstream::encode;
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn full() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(event("messageStart", r#"{"p":"abcd","role":"assistant"}"#));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"h\u00e9"}},"p":"x"}"#,
        ));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"sig"}}}"#,
        ));
        s.extend(event("contentBlockStop", r#"{"contentBlockIndex":0}"#));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"text":"Hi"}}"#,
        ));
        s.extend(event("contentBlockStop", r#"{"contentBlockIndex":1}"#));
        s.extend(event(
            "contentBlockStart",
            r#"{"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"t1","name":"f"}}}"#,
        ));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"a\":"}}}"#,
        ));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"1}"}}}"#,
        ));
        s.extend(event("contentBlockStop", r#"{"contentBlockIndex":2}"#));
        s.extend(event("messageStop", r#"{"stopReason":"tool_use"}"#));
        s.extend(event(
            "metadata",
            r#"{"usage":{"inputTokens":5,"outputTokens":7,"totalTokens":12},"metrics":{"latencyMs":9}}"#,
        ));
        s
    }

    fn run(stream: &[u8], include_usage: bool) -> String {
        let mut t = StreamTranslator::new("b", "m", include_usage, None);
        let mut out = t.stream_chunk(stream, false).unwrap();
        out.extend(t.stream_chunk(b"", true).unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn full_stream_at_every_split_and_every_cut() {
        let stream = full();
        let whole = run(&stream, true);
        assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
        assert!(
            whole.contains("\"finish_reason\":\"tool_calls\""),
            "{whole}"
        );
        assert!(whole.contains("\"signature\":\"sig\""), "{whole}");
        assert!(whole.contains("\"reasoning_content\":\"hé\""), "{whole}");
        assert!(whole.contains("\"arguments\":\"1}\""), "{whole}");
        assert!(whole.contains("\"total_tokens\":12"), "{whole}");
        for i in 0..=stream.len() {
            let mut t = StreamTranslator::new("b", "m", true, None);
            let mut out = t.stream_chunk(&stream[..i], false).unwrap();
            out.extend(t.stream_chunk(&stream[i..], false).unwrap());
            out.extend(t.stream_chunk(b"", true).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), whole, "split at {i}");
            // Cut at i: the client always sees an end, [DONE] or an error.
            let mut t = StreamTranslator::new("b", "m", true, None);
            let mut out = t.stream_chunk(&stream[..i], false).unwrap();
            out.extend(t.stream_chunk(b"", true).unwrap());
            let s = String::from_utf8(out).unwrap();
            assert!(
                s.ends_with("data: [DONE]\n\n") || s.contains("upstream_stream_incomplete"),
                "cut at {i}: {s}"
            );
        }
        assert_eq!(
            StreamTranslator::new("b", "m", true, None).content_type(),
            Some("text/event-stream")
        );
    }

    #[test]
    fn corrupt_frames_end_the_stream_with_an_error() {
        let stream = full();
        for i in 0..stream.len() {
            let mut bad = stream.clone();
            bad[i] ^= 0x20;
            let s = run(&bad, false);
            assert!(
                s.contains("\"error\"") && !s.contains("[DONE]"),
                "flip at {i}: {s}"
            );
        }
    }

    #[test]
    fn exceptions_and_errors() {
        let mut s = event("messageStart", r#"{"role":"assistant"}"#);
        s.extend(encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many tokens, please wait before trying again."}"#,
        ));
        s.extend(event("messageStop", r#"{"stopReason":"end_turn"}"#));
        let out = run(&s, false);
        assert!(out.contains("rate_limit_exceeded"), "{out}");
        assert!(
            !out.contains("[DONE]") && !out.contains("finish_reason\":\"stop"),
            "{out}"
        );
        let s = encode(
            &[
                (":message-type", "error"),
                (":error-code", "InternalFailure"),
                (":error-message", "boom"),
            ],
            b"",
        );
        let out = run(&s, false);
        assert!(out.contains("\"message\":\"boom\""), "{out}");
    }

    #[test]
    fn stop_without_metadata_still_ends() {
        let mut s = event("messageStart", r#"{"role":"assistant"}"#);
        s.extend(event("contentBlockDelta", r#"{"delta":{"text":"a"}}"#));
        s.extend(event("messageStop", r#"{"stopReason":"max_tokens"}"#));
        let mut t = StreamTranslator::new("b", "m", true, None);
        let out = String::from_utf8(t.stream_chunk(&s, true).unwrap()).unwrap();
        assert!(out.contains("\"finish_reason\":\"length\""), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(!out.contains("\"choices\":[]"), "{out}");
        assert!(t.usage().is_none());
    }

    #[test]
    fn json_mode_streams_the_tool_input_as_content() {
        let mut s = event("messageStart", r#"{"role":"assistant"}"#);
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Sure:"}}"#,
        ));
        s.extend(event(
            "contentBlockStart",
            r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t","name":"json_response"}}}"#,
        ));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"x\":1}"}}}"#,
        ));
        s.extend(event("contentBlockStop", r#"{"contentBlockIndex":1}"#));
        s.extend(event("messageStop", r#"{"stopReason":"tool_use"}"#));
        let mut t = StreamTranslator::new("b", "m", false, Some("json_response".into()));
        let out = String::from_utf8(t.stream_chunk(&s, true).unwrap()).unwrap();
        assert!(!out.contains("Sure"), "{out}");
        assert!(out.contains("\"content\":\"{\\\"x\\\":1}\""), "{out}");
        assert!(out.contains("\"finish_reason\":\"stop\""), "{out}");
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"data: {}\n\n".to_vec(),
            vec![0xff; 64],
            event("contentBlockDelta", "not json"),
            event(
                "contentBlockStop",
                r#"{"contentBlockIndex":18446744073709551615}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":3,"delta":{"toolUse":{"input":"x"}}}"#,
            ),
            encode(&[(":message-type", "surprise")], b"{}"),
        ];
        for i in inputs {
            let s = run(&i, true);
            assert!(s.contains("\"error\""), "{s}");
        }
    }
}
