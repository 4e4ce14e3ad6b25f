//! Gemini's stream (`:streamGenerateContent?alt=sse`: one
//! `data: {GenerateContentResponse}` event per piece, text as increments,
//! `usageMetadata` growing, `finishReason` on a candidate's last piece, and
//! no end marker: the HTTP body just ends) → OpenAI `chat.completion.chunk`
//! SSE.
//!
//! The client gets, per choice (Gemini candidate): a first chunk with
//! `role: assistant` and `content: ""`; `reasoning_content` deltas for
//! thought summaries; `content` deltas; for each function call (Gemini
//! sends them whole) a delta with `index`, `id`, `type`, `name` and
//! `arguments: ""` (and the thought signature in `extra_content`, as
//! Google's OpenAI-compatible endpoint streams it), then one with the whole
//! `arguments`; a chunk with `finish_reason`. When the body ends: the usage
//! chunk (`choices: []`) if `stream_options.include_usage` was asked (the
//! usage is recorded for quotas either way), then `data: [DONE]`.
//!
//! A stream that ends before every choice it started has a
//! `finishReason` (or that never started) gets the gateway's
//! `upstream_stream_incomplete` error event instead of `[DONE]`. An error
//! event from Google becomes `data: {"error":{...}}`, a blocked prompt the
//! `content_filter` error; nothing follows either.
//!
//! Every upstream chunk is replaced by what its complete events produce
//! (possibly nothing), so any split of the bytes gives the same output.

use super::response::{
    candidate_index, completion_id, finish_reason, invalid_answer, no_candidates, parts,
    stream_error, tool_call_id,
};
use super::types::{arguments, list_at, str_at, ExtraContent, GoogleError, UsageMetadata};
use crate::error::ApiError;
use crate::providers::openai_out::{self, write_data, ChunkHead, FunctionDelta, ToolDelta, DONE};
use crate::providers::openai_shaped::incomplete_stream_event;
use crate::providers::ResponseTranslator;
use crate::sse::{SseEvent, SseParser};
use crate::usage::Usage as GatewayUsage;
use serde_json::Value;

type Delta<'a> = openai_out::Delta<'a, ExtraContent<'a>>;

/// One choice's progress.
struct ChoiceState {
    index: u32,
    tool_calls: usize,
    finished: bool,
}

pub struct StreamTranslator {
    provider: String,
    include_usage: bool,
    sse: SseParser,
    events: Vec<SseEvent>,
    /// Set from the first event.
    response_id: Option<String>,
    id: String,
    model: String,
    created: u64,
    choices: Vec<ChoiceState>,
    /// `[DONE]` or an error went out: nothing more is written.
    ended: bool,
    usage: Option<UsageMetadata>,
}

impl StreamTranslator {
    pub fn new(provider: &str, include_usage: bool) -> Self {
        StreamTranslator {
            provider: provider.to_string(),
            include_usage,
            sse: SseParser::new(),
            events: Vec::new(),
            response_id: None,
            id: completion_id(""),
            model: String::new(),
            created: 0,
            choices: Vec::new(),
            ended: false,
            usage: None,
        }
    }

    fn head(&self) -> ChunkHead<'_> {
        ChunkHead {
            id: &self.id,
            created: self.created,
            model: &self.model,
            include_usage: self.include_usage,
        }
    }

    fn write(&self, out: &mut Vec<u8>, index: u32, delta: Delta<'_>, finish: Option<&'static str>) {
        self.head().write(out, index, delta, finish);
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: ApiError) {
        write_data(out, &e.body());
        self.ended = true;
    }

    /// The state of choice `index`, its role chunk written when new.
    fn choice(&mut self, out: &mut Vec<u8>, index: u32) -> usize {
        if let Some(pos) = self.choices.iter().position(|c| c.index == index) {
            return pos;
        }
        self.write(
            out,
            index,
            Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            },
            None,
        );
        self.choices.push(ChoiceState {
            index,
            tool_calls: 0,
            finished: false,
        });
        self.choices.len() - 1
    }

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>, at_end: bool) {
        if self.ended {
            return;
        }
        let data = ev.data.trim();
        if data.is_empty() {
            return;
        }
        let r: Value = match serde_json::from_str(data) {
            Ok(r @ Value::Object(_)) => r,
            // A cut-off last event: reported as an incomplete stream.
            Err(_) if at_end => return,
            _ => return self.fail(out, invalid_answer("an event is not a JSON object")),
        };
        if let Some(e) = GoogleError::of(&r) {
            let e = stream_error(&self.provider, &e);
            return self.fail(out, e);
        }
        if self.response_id.is_none() {
            let rid = str_at(&r, "responseId").unwrap_or("").to_string();
            self.id = completion_id(&rid);
            self.model = str_at(&r, "modelVersion").unwrap_or("").to_string();
            self.response_id = Some(rid);
        }
        if let Some(u) = UsageMetadata::of(&r) {
            self.usage = Some(u);
        }
        let candidates = list_at(&r, "candidates");
        if candidates.is_empty() {
            if r.get("promptFeedback").is_some() {
                return self.fail(out, no_candidates(&r));
            }
            return;
        }
        let rid = self.response_id.clone().unwrap_or_default();
        for (position, c) in candidates.iter().enumerate() {
            let index = candidate_index(c, position);
            let pos = self.choice(out, index);
            if self.choices[pos].finished {
                continue;
            }
            for p in parts(c) {
                if let Some(f) = p.get("functionCall") {
                    let i = self.choices[pos].tool_calls;
                    self.choices[pos].tool_calls += 1;
                    let id = tool_call_id(str_at(f, "id"), &rid, index, i);
                    self.write(
                        out,
                        index,
                        Delta {
                            tool_calls: Some([ToolDelta {
                                index: i,
                                id: Some(&id),
                                kind: Some("function"),
                                function: FunctionDelta {
                                    name: Some(str_at(f, "name").unwrap_or("")),
                                    arguments: "",
                                },
                                extra_content: ExtraContent::signature(str_at(
                                    p,
                                    "thoughtSignature",
                                )),
                            }]),
                            ..Delta::default()
                        },
                        None,
                    );
                    let args = arguments(f.get("args"));
                    self.write(
                        out,
                        index,
                        Delta {
                            tool_calls: Some([ToolDelta {
                                index: i,
                                id: None,
                                kind: None,
                                function: FunctionDelta {
                                    name: None,
                                    arguments: &args,
                                },
                                extra_content: None,
                            }]),
                            ..Delta::default()
                        },
                        None,
                    );
                } else if let Some(t) = str_at(p, "text").filter(|t| !t.is_empty()) {
                    let delta = if p.get("thought") == Some(&Value::Bool(true)) {
                        Delta {
                            reasoning_content: Some(t),
                            ..Delta::default()
                        }
                    } else {
                        Delta {
                            content: Some(t),
                            ..Delta::default()
                        }
                    };
                    self.write(out, index, delta, None);
                }
            }
            if let Some(reason) = str_at(c, "finishReason") {
                let state = &mut self.choices[pos];
                state.finished = true;
                let finish = finish_reason(Some(reason), state.tool_calls > 0);
                self.write(out, index, Delta::default(), Some(finish));
            }
        }
    }

    /// The body ended: close the stream, or report it incomplete.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let complete = !self.choices.is_empty() && self.choices.iter().all(|c| c.finished);
        if !complete {
            out.extend_from_slice(&incomplete_stream_event());
            self.ended = true;
            return;
        }
        if self.include_usage {
            self.head()
                .write_usage(out, self.usage.unwrap_or_default().openai());
        }
        out.extend_from_slice(DONE);
        self.ended = true;
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
            // A last event the body ended without its blank line: only
            // dispatched when it parses (a cut JSON is an incomplete stream).
            self.sse.finish(&mut self.events);
            let events = std::mem::take(&mut self.events);
            for ev in &events {
                self.on_event(ev, &mut out, true);
            }
            self.end(&mut out);
        }
        Some(out)
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        // Asked for a stream but the answer was buffered (not done by the
        // gateway for 2xx streams): translate it as a stream all the same.
        self.stream_chunk(body, true)
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.usage.map(|u| u.gateway())
    }

    fn set_created(&mut self, unix_seconds: u64) {
        self.created = unix_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: &[u8], include_usage: bool) -> String {
        let mut t = StreamTranslator::new("gemini", include_usage);
        let mut out = t.stream_chunk(stream, false).unwrap();
        out.extend(t.stream_chunk(b"", true).unwrap());
        String::from_utf8(out).unwrap()
    }

    const FULL: &[u8] = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Thinking \\u00e9\",\"thought\": true}],\"role\": \"model\"}}],\"usageMetadata\": {\"promptTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"}}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\",\"args\": {\"a\": 1}},\"thoughtSignature\": \"c2ln\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 5,\"candidatesTokenCount\": 3,\"thoughtsTokenCount\": 4},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n";

    #[test]
    fn full_stream_at_every_split_and_every_cut() {
        let whole = run(FULL, true);
        assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
        assert!(
            whole.contains("\"finish_reason\":\"tool_calls\""),
            "{whole}"
        );
        assert!(
            whole.contains("\"reasoning_content\":\"Thinking é\""),
            "{whole}"
        );
        assert!(whole.contains("\"arguments\":\"{\\\"a\\\":1}\""), "{whole}");
        assert!(whole.contains("\"thought_signature\":\"c2ln\""), "{whole}");
        assert!(whole.contains("\"completion_tokens\":7"), "{whole}");
        for i in 0..=FULL.len() {
            let mut t = StreamTranslator::new("gemini", true);
            let mut out = t.stream_chunk(&FULL[..i], false).unwrap();
            out.extend(t.stream_chunk(&FULL[i..], false).unwrap());
            out.extend(t.stream_chunk(b"", true).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), whole, "split at {i}");
            let mut t = StreamTranslator::new("gemini", true);
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
    fn garbage_and_truncation_never_panic() {
        for input in [
            &b""[..],
            b"data: {\n\n",
            b"data: [1,2]\n\n",
            b"data: {\"candidates\":[{\"index\":4294967295}]}\n\n",
            b"\xff\xfe\x00data: \xff\n\n",
            b"data: {\"promptFeedback\":{\"blockReason\":\"OTHER\"}}\n\n",
            b"data: {\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\"}}\n\n",
        ] {
            let s = run(input, true);
            assert!(s.contains("\"error\""), "{s}");
        }
    }

    #[test]
    fn every_byte_mutated_never_panics() {
        for i in 0..FULL.len() {
            for b in [b'"', b'{', b']', b'\n', 0xff, b'0'] {
                let mut input = FULL.to_vec();
                input[i] = b;
                let s = run(&input, true);
                assert!(
                    s.ends_with("data: [DONE]\n\n") || s.contains("\"error\""),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn usage_without_include_usage_is_recorded() {
        let mut t = StreamTranslator::new("gemini", false);
        let out = t.stream_chunk(FULL, true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("\"usage\""), "{s}");
        let u = t.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (5, 7, 4)
        );
    }

    #[test]
    fn events_after_a_finish_are_ignored() {
        let s = run(
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"STOP\"}]}\n\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"late\"}]}}]}\n\n",
            false,
        );
        assert!(!s.contains("late"));
        assert!(s.ends_with("data: [DONE]\n\n"));
    }
}
