#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of every provider translator (openai, azure,
//! openai_compatible, anthropic, gemini, vertex, bedrock) and of the
//! Anthropic `/v1/messages` front door, driven through the pipeline as the
//! glue drives it (`gateway::on_request_body` → `Exchange`), on
//! testdata/config.json:
//!
//! - requests: the texts, tool calls (ids, names, arguments) and tool
//!   results of any conversation survive the translation to the provider;
//! - whole answers in each provider's format: text, tool calls and usage
//!   come back in OpenAI's shape;
//! - streams in each provider's wire format (SSE, Bedrock's binary event
//!   stream): any byte split (empty chunks included) gives exactly the
//!   output of the whole stream, and that output carries the text, the
//!   tool calls, the usage and ends with `[DONE]`;
//! - any bytes as a provider answer, under any status, whole or streamed:
//!   no panic; errors are OpenAI-shaped, translated output is JSON.

mod prop_common;

use llm_gateway::config::Config;
use llm_gateway::gateway::Exchange;
use prop_common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn cfg() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(fixture_config)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

/// (model in testdata/config.json, its provider's wire format).
const CHAT_MODELS: &[(&str, Wire)] = &[
    ("gpt-4o-mini", Wire::OpenAi),
    ("azure-gpt-4o", Wire::OpenAi),
    ("llama3.2", Wire::OpenAi),
    ("qwen2.5-7b", Wire::OpenAi),
    ("claude-sonnet-4-5", Wire::Anthropic),
    ("claude-opus-env", Wire::Anthropic),
    ("gemini-2.5-flash", Wire::Gemini),
    ("vertex-gemini-2.5-flash", Wire::Gemini),
    ("bedrock-claude-sonnet", Wire::Bedrock),
    ("bedrock-nova-lite", Wire::Bedrock),
];

fn chat_model() -> impl Strategy<Value = (&'static str, Wire)> {
    prop::sample::select(CHAT_MODELS)
}

// ---------------------------------------------------------------- conversations

#[derive(Debug, Clone)]
struct Call {
    id: String,
    name: String,
    args: Value,
}

#[derive(Debug, Clone)]
enum Reply {
    Text(String),
    Calls(Vec<(Call, String)>), // each call and its tool result
}

#[derive(Debug, Clone)]
struct Conversation {
    system: Option<String>,
    rounds: Vec<(String, Option<Reply>)>,
    last: String,
}

fn calls(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec((tool_name(), args()), n).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (name, args))| Call {
                id: format!("call_{i}x{}", name.len()),
                name,
                args,
            })
            .collect()
    })
}

fn conversation() -> impl Strategy<Value = Conversation> {
    let reply = prop_oneof![
        text().prop_map(Reply::Text),
        (calls(1..3), prop::collection::vec(text(), 2)).prop_map(|(cs, rs)| {
            Reply::Calls(cs.into_iter().zip(rs.into_iter().cycle()).collect())
        }),
    ];
    (
        prop::option::of(text()),
        prop::collection::vec((text(), prop::option::of(reply)), 0..3),
        text(),
    )
        .prop_map(|(system, rounds, last)| Conversation {
            system,
            rounds,
            last,
        })
}

impl Conversation {
    /// Unique call ids across the conversation.
    fn calls(&self) -> Vec<&Call> {
        self.rounds
            .iter()
            .filter_map(|(_, r)| match r {
                Some(Reply::Calls(cs)) => Some(cs.iter().map(|(c, _)| c)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn texts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.system.iter().map(String::as_str).collect();
        for (u, r) in &self.rounds {
            out.push(u);
            match r {
                Some(Reply::Text(t)) => out.push(t),
                Some(Reply::Calls(cs)) => out.extend(cs.iter().map(|(_, r)| r.as_str())),
                None => {}
            }
        }
        out.push(&self.last);
        out
    }

    fn openai(&self, model: &str) -> Value {
        let mut msgs = vec![];
        if let Some(s) = &self.system {
            msgs.push(json!({"role": "system", "content": s}));
        }
        let mut n = 0;
        for (u, r) in &self.rounds {
            msgs.push(json!({"role": "user", "content": u}));
            match r {
                Some(Reply::Text(t)) => msgs.push(json!({"role": "assistant", "content": t})),
                Some(Reply::Calls(cs)) => {
                    let tc: Vec<Value> = cs
                        .iter()
                        .map(|(c, _)| {
                            n += 1;
                            json!({"id": format!("{}_{n}", c.id), "type": "function",
                                   "function": {"name": c.name, "arguments": c.args.to_string()}})
                        })
                        .collect();
                    let ids: Vec<Value> = tc.iter().map(|c| c["id"].clone()).collect();
                    msgs.push(json!({"role": "assistant", "content": null, "tool_calls": tc}));
                    for ((_, res), id) in cs.iter().zip(ids) {
                        msgs.push(json!({"role": "tool", "tool_call_id": id, "content": res}));
                    }
                }
                None => {}
            }
        }
        msgs.push(json!({"role": "user", "content": self.last}));
        let mut body = json!({"model": model, "messages": msgs});
        let tools = self.tools();
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools);
        }
        body
    }

    fn tools(&self) -> Vec<Value> {
        let mut names: Vec<&str> = self.calls().iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(tool_def).collect()
    }

    /// The same conversation as an Anthropic Messages request.
    fn anthropic(&self, model: &str) -> Value {
        let mut msgs = vec![];
        let mut n = 0;
        let mut pending_results: Vec<Value> = vec![];
        for (u, r) in &self.rounds {
            let mut content = std::mem::take(&mut pending_results);
            content.push(json!({"type": "text", "text": u}));
            msgs.push(json!({"role": "user", "content": content}));
            match r {
                Some(Reply::Text(t)) => msgs
                    .push(json!({"role": "assistant", "content": [{"type": "text", "text": t}]})),
                Some(Reply::Calls(cs)) => {
                    let mut blocks = vec![];
                    for (c, res) in cs {
                        n += 1;
                        let id = format!("toolu_{}_{n}", c.id);
                        blocks.push(json!({"type": "tool_use", "id": id, "name": c.name,
                                           "input": c.args}));
                        pending_results.push(json!({"type": "tool_result", "tool_use_id": id,
                                                    "content": res}));
                    }
                    msgs.push(json!({"role": "assistant", "content": blocks}));
                }
                None => {}
            }
        }
        let mut content = pending_results;
        content.push(json!({"type": "text", "text": self.last}));
        msgs.push(json!({"role": "user", "content": content}));
        let mut body = json!({"model": model, "max_tokens": 256, "messages": msgs});
        if let Some(s) = &self.system {
            body["system"] = json!(s);
        }
        let tools: Vec<Value> = self
            .tools()
            .iter()
            .map(|t| {
                json!({"name": t["function"]["name"], "description": "a tool",
                       "input_schema": {"type": "object", "properties": {}}})
            })
            .collect();
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools);
        }
        body
    }
}

/// The texts, tool names and arguments of `conv` are all in `upstream`.
fn check_carried(conv: &Conversation, upstream: &Value, ids: bool) -> Result<(), TestCaseError> {
    let mut all = vec![];
    strings(upstream, &mut all);
    for t in conv.texts() {
        prop_assert!(
            all.iter().any(|s| s.contains(t)),
            "text {t:?} lost in {upstream}"
        );
    }
    for c in conv.calls() {
        prop_assert!(
            all.iter().any(|s| s == &c.name),
            "tool {} lost in {upstream}",
            c.name
        );
        prop_assert!(
            contains_value(upstream, &c.args),
            "arguments {} lost in {upstream}",
            c.args
        );
        if ids {
            prop_assert!(
                all.iter().any(|s| s.contains(&c.id)),
                "call id {} lost in {upstream}",
                c.id
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- answers

#[derive(Debug, Clone)]
struct Answer {
    text: Vec<String>, // pieces (a whole answer joins them)
    calls: Vec<Call>,
    prompt: u64,
    completion: u64,
    /// Pieces each call's argument text is streamed in.
    frags: usize,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop::collection::vec(text(), 0..4),
        calls(0..3),
        0u64..100_000,
        1u64..100_000,
        1usize..4,
    )
        .prop_filter("something to say", |(t, c, ..)| {
            !t.is_empty() || !c.is_empty()
        })
        .prop_map(|(text, calls, prompt, completion, frags)| Answer {
            text,
            calls,
            prompt,
            completion,
            frags,
        })
}

impl Answer {
    fn joined(&self) -> String {
        self.text.concat()
    }

    fn finish(&self) -> &'static str {
        if self.calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
    }

    /// The whole answer in `wire`'s format.
    fn whole(&self, wire: Wire, model: &str) -> Value {
        let text = self.joined();
        match wire {
            Wire::OpenAi => {
                let tc: Vec<Value> = self
                    .calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.args.to_string()}})
                    })
                    .collect();
                let mut msg = json!({"role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !tc.is_empty() {
                    msg["tool_calls"] = Value::Array(tc);
                }
                json!({"id": "chatcmpl-prop", "object": "chat.completion", "created": 1,
                       "model": model, "choices": [{"index": 0, "message": msg,
                       "logprobs": null, "finish_reason": self.finish()}],
                       "usage": {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                                 "total_tokens": self.prompt + self.completion}})
            }
            Wire::Anthropic => {
                let mut content = vec![];
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for c in &self.calls {
                    content.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}),
                    );
                }
                json!({"id": "msg_prop", "type": "message", "role": "assistant", "model": model,
                       "content": content,
                       "stop_reason": if self.calls.is_empty() { "end_turn" } else { "tool_use" },
                       "stop_sequence": null,
                       "usage": {"input_tokens": self.prompt, "output_tokens": self.completion}})
            }
            Wire::Gemini => {
                let mut parts = vec![];
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for c in &self.calls {
                    parts.push(json!({"functionCall": {"name": c.name, "args": c.args}}));
                }
                json!({"candidates": [{"content": {"role": "model", "parts": parts},
                                       "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": self.prompt,
                                         "candidatesTokenCount": self.completion,
                                         "totalTokenCount": self.prompt + self.completion},
                       "modelVersion": model, "responseId": "prop"})
            }
            Wire::Bedrock => {
                let mut content = vec![];
                if !text.is_empty() {
                    content.push(json!({"text": text}));
                }
                for c in &self.calls {
                    content.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name,
                                                    "input": c.args}}));
                }
                json!({"output": {"message": {"role": "assistant", "content": content}},
                       "stopReason": if self.calls.is_empty() { "end_turn" } else { "tool_use" },
                       "usage": {"inputTokens": self.prompt, "outputTokens": self.completion,
                                 "totalTokens": self.prompt + self.completion},
                       "metrics": {"latencyMs": 1}})
            }
        }
    }

    /// Argument text of call `c` in `self.frags` pieces.
    fn arg_pieces(&self, c: &Call) -> Vec<String> {
        let s = c.args.to_string();
        let chars: Vec<char> = s.chars().collect();
        let size = chars.len().div_ceil(self.frags).max(1);
        chars.chunks(size).map(|p| p.iter().collect()).collect()
    }

    /// The answer as a stream in `wire`'s format.
    fn stream(&self, wire: Wire, model: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let sse = |out: &mut Vec<u8>, event: Option<&str>, data: &Value| {
            if let Some(e) = event {
                out.extend_from_slice(format!("event: {e}\n").as_bytes());
            }
            out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
        };
        match wire {
            Wire::OpenAi => {
                let chunk = |delta: Value, finish: Value| {
                    json!({"id": "chatcmpl-prop", "object": "chat.completion.chunk",
                           "created": 1, "model": model,
                           "choices": [{"index": 0, "delta": delta, "logprobs": null,
                                        "finish_reason": finish}]})
                };
                sse(
                    &mut out,
                    None,
                    &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                );
                for t in &self.text {
                    sse(&mut out, None, &chunk(json!({"content": t}), Value::Null));
                }
                for (i, c) in self.calls.iter().enumerate() {
                    sse(
                        &mut out,
                        None,
                        &chunk(
                            json!({"tool_calls": [{"index": i, "id": c.id,
                        "type": "function", "function": {"name": c.name, "arguments": ""}}]}),
                            Value::Null,
                        ),
                    );
                    for p in self.arg_pieces(c) {
                        sse(
                            &mut out,
                            None,
                            &chunk(
                                json!({"tool_calls": [{"index": i,
                            "function": {"arguments": p}}]}),
                                Value::Null,
                            ),
                        );
                    }
                }
                sse(&mut out, None, &chunk(json!({}), json!(self.finish())));
                sse(
                    &mut out,
                    None,
                    &json!({"id": "chatcmpl-prop", "object": "chat.completion.chunk",
                    "created": 1, "model": model, "choices": [],
                    "usage": {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                              "total_tokens": self.prompt + self.completion}}),
                );
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Wire::Anthropic => {
                sse(
                    &mut out,
                    Some("message_start"),
                    &json!({"type": "message_start", "message": {
                    "id": "msg_prop", "type": "message", "role": "assistant", "content": [],
                    "model": model, "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": self.prompt, "output_tokens": 1}}}),
                );
                // One content block: its start, its deltas, its stop.
                let block = |out: &mut Vec<u8>,
                             idx: usize,
                             content_block: Value,
                             deltas: Vec<Value>| {
                    sse(
                        out,
                        Some("content_block_start"),
                        &json!({"type": "content_block_start",
                        "index": idx, "content_block": content_block}),
                    );
                    for delta in deltas {
                        sse(
                            out,
                            Some("content_block_delta"),
                            &json!({"type": "content_block_delta", "index": idx, "delta": delta}),
                        );
                    }
                    sse(
                        out,
                        Some("content_block_stop"),
                        &json!({"type": "content_block_stop", "index": idx}),
                    );
                };
                let mut idx = 0;
                if !self.text.is_empty() {
                    let deltas = self
                        .text
                        .iter()
                        .map(|t| json!({"type": "text_delta", "text": t}))
                        .collect();
                    block(&mut out, idx, json!({"type": "text", "text": ""}), deltas);
                    idx += 1;
                }
                sse(&mut out, Some("ping"), &json!({"type": "ping"}));
                for c in &self.calls {
                    let deltas = self
                        .arg_pieces(c)
                        .into_iter()
                        .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                        .collect();
                    let start =
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": {}});
                    block(&mut out, idx, start, deltas);
                    idx += 1;
                }
                sse(
                    &mut out,
                    Some("message_delta"),
                    &json!({"type": "message_delta",
                    "delta": {"stop_reason": if self.calls.is_empty() { "end_turn" } else { "tool_use" },
                              "stop_sequence": null},
                    "usage": {"output_tokens": self.completion}}),
                );
                sse(
                    &mut out,
                    Some("message_stop"),
                    &json!({"type": "message_stop"}),
                );
            }
            Wire::Gemini => {
                let usage = json!({"promptTokenCount": self.prompt});
                for t in &self.text {
                    sse(
                        &mut out,
                        None,
                        &json!({"candidates": [{"content": {"role": "model",
                        "parts": [{"text": t}]}, "index": 0}], "usageMetadata": usage,
                        "modelVersion": model, "responseId": "prop"}),
                    );
                }
                if !self.calls.is_empty() {
                    let parts: Vec<Value> = self
                        .calls
                        .iter()
                        .map(|c| json!({"functionCall": {"name": c.name, "args": c.args}}))
                        .collect();
                    sse(
                        &mut out,
                        None,
                        &json!({"candidates": [{"content": {"role": "model",
                        "parts": parts}, "index": 0}], "usageMetadata": usage,
                        "modelVersion": model, "responseId": "prop"}),
                    );
                }
                sse(
                    &mut out,
                    None,
                    &json!({"candidates": [{"content": {"role": "model",
                    "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": self.prompt,
                        "candidatesTokenCount": self.completion,
                        "totalTokenCount": self.prompt + self.completion},
                    "modelVersion": model, "responseId": "prop"}),
                );
            }
            Wire::Bedrock => {
                let mut frame = |event: &str, payload: Value| {
                    out.extend_from_slice(&eventstream_frame(event, &payload));
                };
                frame("messageStart", json!({"role": "assistant"}));
                let mut idx = 0;
                if !self.text.is_empty() {
                    for t in &self.text {
                        frame(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": idx, "delta": {"text": t}}),
                        );
                    }
                    frame("contentBlockStop", json!({"contentBlockIndex": idx}));
                    idx += 1;
                }
                for c in &self.calls {
                    frame(
                        "contentBlockStart",
                        json!({"contentBlockIndex": idx,
                        "start": {"toolUse": {"toolUseId": c.id, "name": c.name}}}),
                    );
                    for p in self.arg_pieces(c) {
                        frame(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": idx,
                            "delta": {"toolUse": {"input": p}}}),
                        );
                    }
                    frame("contentBlockStop", json!({"contentBlockIndex": idx}));
                    idx += 1;
                }
                frame(
                    "messageStop",
                    json!({"stopReason":
                    if self.calls.is_empty() { "end_turn" } else { "tool_use" }}),
                );
                frame(
                    "metadata",
                    json!({"usage": {"inputTokens": self.prompt,
                    "outputTokens": self.completion, "totalTokens": self.prompt + self.completion},
                    "metrics": {"latencyMs": 1}}),
                );
            }
        }
        out
    }
}

/// CRC-32 (IEEE), as AWS event streams use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One AWS event-stream message (`:event-type`, JSON payload).
fn eventstream_frame(event: &str, payload: &Value) -> Vec<u8> {
    let mut headers = Vec::new();
    for (k, v) in [
        (":event-type", event),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ] {
        headers.push(k.len() as u8);
        headers.extend_from_slice(k.as_bytes());
        headers.push(7);
        headers.extend_from_slice(&(v.len() as u16).to_be_bytes());
        headers.extend_from_slice(v.as_bytes());
    }
    let payload = payload.to_string().into_bytes();
    let total = (16 + headers.len() + payload.len()) as u32;
    let mut msg = Vec::new();
    msg.extend_from_slice(&total.to_be_bytes());
    msg.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&msg);
    msg.extend_from_slice(&prelude_crc.to_be_bytes());
    msg.extend_from_slice(&headers);
    msg.extend_from_slice(&payload);
    let crc = crc32(&msg);
    msg.extend_from_slice(&crc.to_be_bytes());
    msg
}

/// Feed a stream answer to a fresh exchange, in `chunks`.
fn feed(ex: &mut Exchange, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![];
    for c in chunks {
        out.extend(ex.on_stream_chunk(c, false).unwrap_or_else(|| c.to_vec()));
    }
    out.extend(ex.on_stream_chunk(b"", true).unwrap_or_default());
    out
}

fn stream_exchange(model: &str, include_usage: bool) -> Exchange {
    let mut ex = exchange(
        cfg(),
        "/v1/chat/completions",
        &json!({"model": model, "stream": true, "stream_options": {"include_usage": include_usage},
                "messages": [{"role": "user", "content": "hi"}]}),
    );
    let head = ex.on_response_head(cfg(), 200, true);
    assert!(!head.buffer);
    ex
}

/// What an OpenAI chat stream says: text, tool calls (id, name, args
/// text) by index, finish reasons, usage; and whether it ended with [DONE].
#[derive(Debug, Default, PartialEq)]
struct Said {
    text: String,
    calls: Vec<(String, String, String)>,
    finish: Vec<String>,
    usage: Option<(u64, u64)>,
    done: bool,
}

fn read_openai_stream(out: &[u8]) -> Result<Said, String> {
    let mut s = Said::default();
    let data = sse_data(out);
    for (i, d) in data.iter().enumerate() {
        if d == "[DONE]" {
            if i + 1 != data.len() {
                return Err("[DONE] is not last".into());
            }
            s.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(d).map_err(|e| format!("{e}: {d}"))?;
        if v.get("error").is_some() {
            return Err(format!("error event: {d}"));
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            s.usage = Some((
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
            ));
        }
        for ch in v["choices"].as_array().ok_or(format!("no choices: {d}"))? {
            let delta = &ch["delta"];
            if let Some(t) = delta["content"].as_str() {
                s.text.push_str(t);
            }
            for tc in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                while s.calls.len() <= i {
                    s.calls.push(Default::default());
                }
                if let Some(id) = tc["id"].as_str() {
                    s.calls[i].0 = id.to_string();
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    s.calls[i].1.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    s.calls[i].2.push_str(a);
                }
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                s.finish.push(f.to_string());
            }
        }
    }
    Ok(s)
}

fn check_said(s: &Said, a: &Answer, wire: Wire, include_usage: bool) -> Result<(), TestCaseError> {
    prop_assert!(s.done, "no [DONE]");
    prop_assert_eq!(&s.text, &a.joined());
    prop_assert_eq!(s.calls.len(), a.calls.len(), "calls {:?}", s.calls);
    for (got, want) in s.calls.iter().zip(&a.calls) {
        if wire != Wire::Gemini {
            prop_assert_eq!(&got.0, &want.id);
        } else {
            prop_assert!(!got.0.is_empty());
        }
        prop_assert_eq!(&got.1, &want.name);
        let args: Value = serde_json::from_str(&got.2)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", got.2)))?;
        prop_assert_eq!(&args, &want.args);
    }
    prop_assert_eq!(s.finish.clone(), vec![a.finish().to_string()]);
    // The usage chunk only for a client that asked (the gateway asks
    // OpenAI-shaped providers for it anyway, and hides it otherwise).
    let want = include_usage.then_some((a.prompt, a.completion));
    prop_assert_eq!(s.usage, want);
    Ok(())
}

// ---------------------------------------------------------------- the properties

proptest! {
    #![proptest_config(prop_common::config(300))]

    /// OpenAI chat → every provider: texts, tool calls and results survive.
    #[test]
    fn requests_keep_the_conversation(conv in conversation(), (model, wire) in chat_model(),
                                      stream in any::<bool>()) {
        let mut body = conv.openai(model);
        body["stream"] = json!(stream);
        let p = pending(cfg(), CALLER_KEY, "/v1/chat/completions");
        let bytes = serde_json::to_vec(&body).unwrap();
        let f = llm_gateway::gateway::on_request_body(cfg(), &p, &bytes)
            .map_err(|r| TestCaseError::fail(format!("{model}: {} {}", r.status, String::from_utf8_lossy(&r.body))))?;
        let up: Value = serde_json::from_slice(&f.upstream.body).unwrap();
        check_carried(&conv, &up, wire != Wire::Gemini)?;
    }

    /// Anthropic Messages (the front door) → every provider kind.
    #[test]
    fn front_door_requests_keep_the_conversation(conv in conversation(), (model, wire) in chat_model()) {
        let body = conv.anthropic(model);
        let p = pending(cfg(), CALLER_KEY, "/v1/messages");
        let bytes = serde_json::to_vec(&body).unwrap();
        let f = llm_gateway::gateway::on_request_body(cfg(), &p, &bytes)
            .map_err(|r| TestCaseError::fail(format!("{model}: {} {}", r.status, String::from_utf8_lossy(&r.body))))?;
        let up: Value = serde_json::from_slice(&f.upstream.body).unwrap();
        check_carried(&conv, &up, wire != Wire::Gemini)?;
    }

    /// A whole answer in each provider's format comes back as OpenAI's.
    #[test]
    fn whole_answers_keep_text_calls_and_usage(a in answer(), (model, wire) in chat_model()) {
        let mut ex = exchange(cfg(), "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
        let body = serde_json::to_vec(&a.whole(wire, model)).unwrap();
        let head = ex.on_response_head(cfg(), 200, true);
        let out = if head.buffer {
            ex.on_full_body(cfg(), &body).unwrap_or_else(|| body.clone())
        } else {
            prop_assert_eq!(ex.on_stream_chunk(&body, false), None);
            prop_assert_eq!(ex.on_stream_chunk(b"", true), None);
            body.clone()
        };
        prop_assert_eq!(ex.status_override(), None);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let msg = &v["choices"][0]["message"];
        let text = msg["content"].as_str().unwrap_or("");
        let want = a.joined();
        prop_assert_eq!(text, want.as_str(), "{}", v);
        let tcs = msg["tool_calls"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(tcs.len(), a.calls.len(), "{}", v);
        for (got, want) in tcs.iter().zip(&a.calls) {
            if wire != Wire::Gemini {
                prop_assert_eq!(got["id"].as_str(), Some(want.id.as_str()));
            }
            prop_assert_eq!(got["function"]["name"].as_str(), Some(want.name.as_str()));
            let args: Value = serde_json::from_str(got["function"]["arguments"].as_str().unwrap()).unwrap();
            prop_assert_eq!(&args, &want.args);
        }
        prop_assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some(a.finish()));
        prop_assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(a.prompt));
        prop_assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(a.completion));
        let u = ex.usage().unwrap();
        prop_assert_eq!((u.prompt_tokens, u.completion_tokens), (a.prompt, a.completion));
    }

    /// A stream in each provider's wire format, whole and cut anywhere
    /// (empty chunks included): the same bytes out, and the right ones.
    #[test]
    fn streams_any_split_same_output(a in answer(), (model, wire) in chat_model(),
                                     include_usage in any::<bool>(),
                                     cuts in prop::collection::vec(any::<usize>(), 1..12)) {
        let stream = a.stream(wire, model);
        let mut ex = stream_exchange(model, include_usage);
        let whole = feed(&mut ex, &[&stream]);
        let s = read_openai_stream(&whole).map_err(TestCaseError::fail)?;
        check_said(&s, &a, wire, include_usage)?;
        let u = ex.usage().unwrap();
        prop_assert_eq!((u.prompt_tokens, u.completion_tokens), (a.prompt, a.completion));
        let mut ex2 = stream_exchange(model, include_usage);
        let parts = split(&stream, &cuts);
        let got = feed(&mut ex2, &parts);
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&whole), "cuts {:?}", cuts);
        prop_assert_eq!(ex2.usage(), ex.usage());
    }

    /// The front door's own stream: any non-Anthropic provider's stream
    /// (through its own translator) becomes Anthropic's events, the same
    /// for any split.
    #[test]
    fn front_door_streams_any_split(a in answer(),
                                    (model, wire) in chat_model().prop_filter("translated", |(_, w)| *w != Wire::Anthropic),
                                    cuts in prop::collection::vec(any::<usize>(), 1..12)) {
        let stream = a.stream(wire, model);
        let body = json!({"model": model, "max_tokens": 64, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
        let run = |chunks: &[&[u8]]| {
            let mut ex = exchange(cfg(), "/v1/messages", &body);
            ex.on_response_head(cfg(), 200, true);
            feed(&mut ex, chunks)
        };
        let whole = run(&[&stream]);
        let parts = split(&stream, &cuts);
        let got = run(&parts);
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&whole));
        let events = sse_data(&whole);
        let mut text = String::new();
        let mut inputs: Vec<String> = vec![];
        let mut names: Vec<String> = vec![];
        let mut last = String::new();
        let mut out_tokens = None;
        for d in &events {
            let v: Value = serde_json::from_str(d).unwrap();
            last = v["type"].as_str().unwrap_or("").to_string();
            match last.as_str() {
                "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                    names.push(v["content_block"]["name"].as_str().unwrap().to_string());
                    inputs.push(String::new());
                }
                "content_block_delta" => match v["delta"]["type"].as_str() {
                    Some("text_delta") => text.push_str(v["delta"]["text"].as_str().unwrap()),
                    Some("input_json_delta") => inputs.last_mut().unwrap().push_str(v["delta"]["partial_json"].as_str().unwrap()),
                    _ => {}
                },
                "message_delta" => out_tokens = v["usage"]["output_tokens"].as_u64(),
                "error" => prop_assert!(false, "error event {d}"),
                _ => {}
            }
        }
        prop_assert_eq!(out_tokens, Some(a.completion));
        prop_assert_eq!(last, "message_stop");
        prop_assert_eq!(text, a.joined());
        prop_assert_eq!(names, a.calls.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
        for (got, want) in inputs.iter().zip(&a.calls) {
            prop_assert_eq!(&serde_json::from_str::<Value>(got).unwrap(), &want.args);
        }
    }

    /// The front door's whole answers from an OpenAI-shaped provider.
    #[test]
    fn front_door_whole_answers(a in answer(), model in prop::sample::select(&["gpt-4o-mini", "qwen2.5-7b", "gemini-2.5-flash", "bedrock-nova-lite"][..])) {
        let wire = CHAT_MODELS.iter().find(|(m, _)| *m == model).unwrap().1;
        let mut ex = exchange(cfg(), "/v1/messages",
            &json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}));
        let head = ex.on_response_head(cfg(), 200, true);
        prop_assert!(head.buffer);
        let out = ex.on_full_body(cfg(), &serde_json::to_vec(&a.whole(wire, model)).unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&v["type"], "message", "{}", v);
        let mut text = String::new();
        let mut calls = vec![];
        for b in v["content"].as_array().unwrap() {
            match b["type"].as_str() {
                Some("text") => text.push_str(b["text"].as_str().unwrap()),
                Some("tool_use") => calls.push((b["name"].as_str().unwrap().to_string(), b["input"].clone())),
                _ => {}
            }
        }
        prop_assert_eq!(text, a.joined());
        prop_assert_eq!(calls, a.calls.iter().map(|c| (c.name.clone(), c.args.clone())).collect::<Vec<_>>());
        prop_assert_eq!(v["usage"]["input_tokens"].as_u64(), Some(a.prompt));
        prop_assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(a.completion));
    }
}

const STATUSES: &[u16] = &[
    200, 200, 200, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 529,
];

/// Bytes a provider might send: anything, or a valid answer broken.
fn answer_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (any_json()).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (
            answer(),
            prop::sample::select(CHAT_MODELS),
            any::<bool>(),
            any::<usize>(),
            any::<(usize, u8)>()
        )
            .prop_map(|(a, (m, w), stream, cut, flip)| {
                let mut b = if stream {
                    a.stream(w, m)
                } else {
                    serde_json::to_vec(&a.whole(w, m)).unwrap()
                };
                let at = flip.0 % b.len();
                b[at] ^= flip.1;
                b.truncate(cut % (b.len() + 1));
                b
            }),
    ]
}

proptest! {
    #![proptest_config(prop_common::config(1000))]

    /// Any bytes under any status, whole or streamed, from every provider
    /// kind and through the front door: no panic; errors OpenAI-shaped
    /// (Anthropic-shaped on /v1/messages); translated output is JSON.
    #[test]
    fn any_provider_bytes(bytes in answer_bytes(), (model, wire) in chat_model(),
                          status in prop::sample::select(STATUSES), stream in any::<bool>(),
                          front_door in any::<bool>(),
                          cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let path = if front_door { "/v1/messages" } else { "/v1/chat/completions" };
        let body = json!({"model": model, "max_tokens": 64, "stream": stream,
                          "messages": [{"role": "user", "content": "hi"}]});
        let mk = || {
            let mut ex = exchange(cfg(), path, &body);
            let head = ex.on_response_head(cfg(), status, true);
            (ex, head)
        };
        let (mut ex, head) = mk();
        let shape_ok = |b: &[u8]| if front_door { anthropic_error(b) } else { openai_error(b).map(|_| ()) };
        if head.buffer {
            let out = ex.on_full_body(cfg(), &bytes);
            let final_status = ex.status_override().or(head.status).unwrap_or(status);
            if status >= 400 {
                let out = out.unwrap();
                shape_ok(&out).map_err(|e| TestCaseError::fail(format!("{status} {model}: {e}")))?;
                prop_assert!(final_status >= 400, "{final_status}");
            } else if let Some(out) = out {
                // (None: a pass-through provider's answer, forwarded as is.)
                if final_status >= 400 {
                    shape_ok(&out).map_err(|e| TestCaseError::fail(format!("{model}: {e}")))?;
                } else {
                    let v: Value = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(format!("{model} {wire:?}: translated answer not JSON: {e}")))?;
                    prop_assert!(v.is_object());
                }
            }
        } else {
            prop_assert!(status < 400);
            let whole = feed(&mut ex, &[&bytes]);
            let (mut ex2, _) = mk();
            let got = feed(&mut ex2, &split(&bytes, &cuts));
            // Any stream: the same output for any split.
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&whole));
            let pass_through = if front_door { wire == Wire::Anthropic } else { wire == Wire::OpenAi };
            if stream && !pass_through {
                // A translated stream: every event the gateway wrote is
                // JSON (pass-through streams forward the provider's bytes).
                for d in sse_data(&whole) {
                    if d != "[DONE]" {
                        prop_assert!(serde_json::from_str::<Value>(&d).is_ok(), "{d}");
                    }
                }
            }
        }
    }
}
