//! OpenAI `chat.completion.chunk` SSE → Anthropic Messages events.
//!
//! The first chunk opens the message (`message_start`, usage 0: OpenAI
//! reports usage at the end). Deltas open content blocks as they come — a
//! `thinking` block for `reasoning_content` (or `reasoning`), a `text`
//! block for `content` (and `refusal`), one `tool_use` block per tool call
//! index — each closed (`content_block_stop`) when a block of another kind
//! or another tool call starts, or when the finish reason arrives. `[DONE]`
//! ends the message: `message_delta` with the stop reason and the usage of
//! the final chunk (`stream_options.include_usage` is always asked for),
//! then `message_stop`.
//!
//! An OpenAI error event becomes `event: error`, and so does the end of a
//! stream that never said `[DONE]`; nothing follows an error. Arguments of
//! a tool call whose block was already closed (a provider interleaving
//! calls) are still sent, as deltas of that call's block.
//!
//! Each chunk is replaced by what its complete events produce, so any split
//! of the bytes gives the same output.

use super::response::{
    matched_stop, message_id, openai_error, stop_reason, ChatAnswer, ChatMessage, OutUsage,
};
use super::{error_event, incomplete_stream};
use crate::providers::ResponseTranslator;
use crate::sse::{SseEvent, SseParser};
use crate::usage::Usage as GatewayUsage;
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Tool(u64),
}

pub struct StreamOut {
    stop_sequences: Vec<String>,
    sse: SseParser,
    events: Vec<SseEvent>,
    id: String,
    started: bool,
    /// `message_stop` or an error went out: nothing more is written.
    ended: bool,
    /// The open block: its index and kind.
    open: Option<(usize, Kind)>,
    next_index: usize,
    /// OpenAI tool call index → block index.
    tools: Vec<(u64, usize)>,
    finish: Option<String>,
    matched: Option<String>,
    refusal: bool,
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct Start<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [(); 0],
    model: &'a str,
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text {
        text: &'static str,
    },
    Thinking {
        thinking: &'static str,
        signature: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: Delta<'a>,
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: OutUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

#[derive(Serialize)]
struct Stop {
    #[serde(rename = "type")]
    kind: &'static str,
}

fn emit<T: Serialize>(out: &mut Vec<u8>, name: &str, v: &T) {
    if let Ok(bytes) = serde_json::to_vec(v) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&bytes);
        out.extend_from_slice(b"\n\n");
    }
}

const EMPTY_INPUT: &str = "{}";

impl StreamOut {
    pub fn new(stop_sequences: Vec<String>) -> Self {
        StreamOut {
            stop_sequences,
            sse: SseParser::new(),
            events: Vec::new(),
            id: message_id(""),
            started: false,
            ended: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish: None,
            matched: None,
            refusal: false,
            usage: None,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, id: Option<&str>, model: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = message_id(id.unwrap_or(""));
        emit(
            out,
            "message_start",
            &Start {
                kind: "message_start",
                message: StartMessage {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    content: [],
                    model: model.unwrap_or(""),
                    stop_reason: None,
                    stop_sequence: None,
                    usage: OutUsage::default(),
                },
            },
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            emit(
                out,
                "content_block_stop",
                &BlockStop {
                    kind: "content_block_stop",
                    index,
                },
            );
        }
    }

    /// Make a block of `kind` the open one (closing another), returning its
    /// index; `tool` gives a new tool block its id and name.
    fn open(&mut self, out: &mut Vec<u8>, kind: Kind, tool: Option<(&str, &str)>) -> usize {
        if let Some((index, k)) = self.open {
            if k == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        let empty = RawValue::from_string(EMPTY_INPUT.to_string()).ok();
        let content_block = match (kind, tool, empty.as_deref()) {
            (Kind::Text, _, _) => StartBlock::Text { text: "" },
            (Kind::Thinking, _, _) => StartBlock::Thinking {
                thinking: "",
                signature: "",
            },
            (Kind::Tool(_), Some((id, name)), Some(input)) => {
                StartBlock::ToolUse { id, name, input }
            }
            (Kind::Tool(_), _, _) => StartBlock::Text { text: "" },
        };
        emit(
            out,
            "content_block_start",
            &BlockStart {
                kind: "content_block_start",
                index,
                content_block,
            },
        );
        index
    }

    fn delta(&self, out: &mut Vec<u8>, index: usize, delta: Delta<'_>) {
        emit(
            out,
            "content_block_delta",
            &BlockDelta {
                kind: "content_block_delta",
                index,
                delta,
            },
        );
    }

    fn deltas(&mut self, out: &mut Vec<u8>, d: &ChatMessage) {
        if let Some(r) = d.reasoning() {
            let i = self.open(out, Kind::Thinking, None);
            self.delta(out, i, Delta::Thinking { thinking: r });
        }
        for text in [d.content.as_deref(), d.refusal.as_deref()]
            .into_iter()
            .flatten()
        {
            if text.is_empty() {
                continue;
            }
            let i = self.open(out, Kind::Text, None);
            self.delta(out, i, Delta::Text { text });
        }
        if d.refusal.as_deref().is_some_and(|r| !r.is_empty()) {
            self.refusal = true;
        }
        for (pos, call) in d.tool_calls.as_deref().unwrap_or(&[]).iter().enumerate() {
            let tool = call.index.unwrap_or(pos as u64);
            let args = call
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_deref())
                .unwrap_or("");
            let known = self
                .tools
                .iter()
                .find(|(t, _)| *t == tool)
                .map(|&(_, block)| block);
            let index = match known {
                Some(block) => block,
                None => {
                    let id = call.id.clone().unwrap_or_else(|| {
                        format!("toolu_{}_{tool}", self.id.trim_start_matches("msg_"))
                    });
                    let name = call
                        .function
                        .as_ref()
                        .and_then(|f| f.name.clone())
                        .unwrap_or_default();
                    let block = self.open(out, Kind::Tool(tool), Some((&id, &name)));
                    self.tools.push((tool, block));
                    block
                }
            };
            if !args.is_empty() {
                self.delta(out, index, Delta::InputJson { partial_json: args });
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out, None, None);
        self.close(out);
        let (reason, seq) = stop_reason(
            self.finish.as_deref(),
            !self.tools.is_empty(),
            self.refusal,
            self.matched.take(),
        );
        emit(
            out,
            "message_delta",
            &MessageDelta {
                kind: "message_delta",
                delta: StopDelta {
                    stop_reason: reason,
                    stop_sequence: seq,
                },
                usage: self.usage.unwrap_or_default(),
            },
        );
        emit(
            out,
            "message_stop",
            &Stop {
                kind: "message_stop",
            },
        );
        self.ended = true;
    }

    fn event(&mut self, out: &mut Vec<u8>, data: &str) {
        if self.ended {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.finish(out);
            return;
        }
        if !data.starts_with('{') {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<ChatAnswer>(data) else {
            // Not a chunk (a keep-alive payload, say): nothing to say.
            return;
        };
        if let Some(err) = chunk.error.as_ref() {
            let e = if err.is_object() {
                openai_error(err)
            } else {
                incomplete_stream()
            };
            out.extend_from_slice(&error_event(&e));
            self.ended = true;
            return;
        }
        if chunk.choice().is_none() && chunk.usage.is_none() {
            // Nothing for the client yet (Azure opens its streams with a
            // `prompt_filter_results` chunk that has no choices, id or
            // model): `message_start` waits for a chunk that has them.
            return;
        }
        self.start(out, chunk.id.as_deref(), chunk.model.as_deref());
        if let Some(choice) = chunk.choice() {
            if let Some(d) = choice.delta.as_ref().or(choice.message.as_ref()) {
                self.deltas(out, d);
            }
            if let Some(f) = choice.finish_reason.as_deref() {
                self.finish = Some(f.to_string());
                self.close(out);
            }
            if let Some(m) = matched_stop(choice, &self.stop_sequences) {
                self.matched = Some(m);
            }
        }
        if let Some(u) = chunk.usage.as_ref() {
            self.usage = Some(OutUsage::from_chat(u));
        }
    }
}

impl ResponseTranslator for StreamOut {
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        self.sse.feed(chunk, &mut self.events);
        if end_of_stream {
            self.sse.finish(&mut self.events);
        }
        let mut out = Vec::new();
        for ev in std::mem::take(&mut self.events) {
            self.event(&mut out, &ev.data);
        }
        if end_of_stream && !self.ended {
            out.extend_from_slice(&error_event(&incomplete_stream()));
            self.ended = true;
        }
        Some(out)
    }

    fn full_body(&mut self, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.usage.map(|u| u.gateway())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_split(stream: &[u8], chunks: &[&[u8]]) -> String {
        let _ = stream;
        let mut t = StreamOut::new(vec!["END".into()]);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(t.stream_chunk(c, false).unwrap());
        }
        out.extend(t.stream_chunk(b"", true).unwrap());
        String::from_utf8(out).unwrap()
    }

    fn every_split(stream: &[u8]) -> String {
        let whole = run_split(stream, &[stream]);
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(run_split(stream, &[a, b]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run_split(stream, &bytes), whole, "byte by byte");
        whole
    }

    const TEXT: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn text_stream_at_every_split() {
        let out = every_split(TEXT);
        let want = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"gpt-4o-mini\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":0}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":9,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(out, want);
    }

    const TOOLS: &[u8] = b"data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Let me\"}}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\" look.\"}}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn thinking_and_tool_calls_at_every_split() {
        let out = every_split(TOOLS);
        let events: Vec<serde_json::Value> = out
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.split("data: ").nth(1).unwrap();
                serde_json::from_str(data).unwrap()
            })
            .collect();
        let kinds: Vec<String> = events
            .iter()
            .map(|e| {
                let t = e["type"].as_str().unwrap();
                match t {
                    "content_block_start" => {
                        format!("start:{}", e["content_block"]["type"].as_str().unwrap())
                    }
                    "content_block_delta" => format!(
                        "delta{}:{}",
                        e["index"],
                        e["delta"]["type"].as_str().unwrap()
                    ),
                    "content_block_stop" => format!("stop{}", e["index"]),
                    t => t.to_string(),
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "start:thinking",
                "delta0:thinking_delta",
                "delta0:thinking_delta",
                "stop0",
                "start:tool_use",
                "delta1:input_json_delta",
                "delta1:input_json_delta",
                "stop1",
                "start:tool_use",
                "delta2:input_json_delta",
                "stop2",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            events[5]["content_block"],
            serde_json::json!({"type":"tool_use","id":"call_a","name":"f","input":{}})
        );
        assert_eq!(
            events[1]["content_block"],
            serde_json::json!({"type":"thinking","thinking":"","signature":""})
        );
        assert_eq!(events[6]["delta"]["partial_json"], "{\"x\":");
        assert_eq!(events[12]["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            events[12]["usage"],
            serde_json::json!({"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":10,"output_tokens":12})
        );
    }

    #[test]
    fn cut_stream_and_error_events() {
        let cut = &TEXT[..400];
        let out = every_split(cut);
        assert!(out.starts_with("event: message_start"));
        assert!(out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The provider ended the stream before it was complete.\"}}\n\n"), "{out}");
        let err = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"server_error\",\"code\":\"upstream_overloaded\"}}\n\n";
        let out = every_split(err);
        assert!(out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"), "{out}");
        assert_eq!(out.matches("event: error").count(), 1);
        // Nothing at all: just the error.
        assert!(run_split(b"", &[b""]).starts_with("event: error"));
        // [DONE] alone still makes a whole (empty) message.
        let out = run_split(b"", &[b"data: [DONE]\n\n"]);
        assert!(
            out.contains("message_start") && out.contains("message_stop"),
            "{out}"
        );
    }

    #[test]
    fn stop_sequence_from_vllm() {
        let s = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\",\"stop_reason\":\"END\"}]}\n\ndata: [DONE]\n\n";
        let out = every_split(s);
        assert!(
            out.contains("\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\""),
            "{out}"
        );
    }

    #[test]
    fn usage_is_readable() {
        let mut t = StreamOut::new(vec![]);
        t.stream_chunk(TEXT, true);
        assert_eq!(t.usage().unwrap().total_tokens, 11);
    }
}
