//! A whole Messages answer → `chat.completion`; finish reasons, statuses
//! and errors shared with the stream.

use super::types::{ErrorBody, FunctionCall, Message, ThinkingBlock, ToolCall, Usage};
pub use crate::error::invalid_answer;
use crate::error::{self, cut_message as cut, upstream_auth_failed as auth_failed, ApiError};
use crate::providers::openai_out::OneChoice;
use crate::providers::ResponseTranslator;
use crate::usage::Usage as GatewayUsage;

/// `chatcmpl-` + Anthropic's message id: stable, and traceable to the
/// provider's logs.
pub fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
///
/// `tool_use` is `tool_calls` only when the client's own tools were called;
/// a call of the JSON-mode tool is the answer itself, so `stop`.
/// `pause_turn` (a server tool's long turn paused; the gateway offers no
/// server tools) and an absent reason are `stop`; `refusal` is
/// `content_filter`; `max_tokens` and `model_context_window_exceeded` are
/// `length`.
pub fn finish_reason(stop_reason: Option<&str>, client_tool_calls: bool) -> &'static str {
    match stop_reason {
        Some("tool_use") if client_tool_calls => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        _ if client_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// The status the client gets for Anthropic's error status: 529
/// (`overloaded_error`, not a registered HTTP status) becomes 503, which is
/// what OpenAI answers when overloaded; the OpenAI SDKs retry both. Others
/// as for every provider (401/403 → 502, …).
pub fn client_status(status: u16) -> u16 {
    match status {
        529 => 503,
        s => error::upstream_status(s),
    }
}

/// OpenAI `type` and `code` for an Anthropic error type.
fn kind_and_code(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "invalid_request_error" => ("invalid_request_error", "invalid_request"),
        "not_found_error" => ("invalid_request_error", "not_found"),
        "request_too_large" => ("invalid_request_error", "request_too_large"),
        "rate_limit_error" => ("rate_limit_error", "rate_limit_exceeded"),
        "api_error" => ("server_error", "upstream_error"),
        "overloaded_error" => ("server_error", "upstream_overloaded"),
        "timeout_error" => ("server_error", "upstream_timeout"),
        "billing_error" => ("server_error", "upstream_billing_error"),
        _ => return None,
    })
}

/// An error answer (`{"type":"error","error":{"type","message"}}`) in
/// OpenAI's shape, with the status [`client_status`] chose. Authentication
/// and permission errors never pass the provider's message on.
pub fn map_error(provider: &str, status: u16, body: &[u8]) -> ApiError {
    let out = client_status(status);
    let parsed: Option<Message<'_>> = serde_json::from_slice(body).ok();
    let err = parsed.and_then(|m| m.error);
    let kind = err.as_ref().and_then(|e| e.kind.as_deref());
    if matches!(status, 401 | 403 | 407)
        || matches!(kind, Some("authentication_error" | "permission_error"))
    {
        let mut e = auth_failed(provider, &format!("HTTP {status}"));
        e.status = out;
        return e;
    }
    match (err.as_ref(), kind.and_then(kind_and_code)) {
        (Some(ErrorBody { message, .. }), Some((kind, code))) => {
            let message = message.as_deref().map(cut).unwrap_or_else(|| {
                format!("Provider `{provider}` returned HTTP {status} without an error message.")
            });
            ApiError::new(out, kind, message).code(code)
        }
        (
            Some(ErrorBody {
                message: Some(m), ..
            }),
            None,
        ) => {
            let fallback = error::map_upstream_error(provider, status, b"");
            ApiError::new(out, fallback.kind, cut(m)).code(
                fallback
                    .code
                    .unwrap_or_else(|| "upstream_error".to_string()),
            )
        }
        _ => {
            // Not Anthropic's shape (a proxy's HTML page, an empty body).
            let mut e = error::map_upstream_error(provider, status, body);
            e.status = out;
            if status == 529 {
                e.kind = "server_error".into();
                e.code = Some("upstream_overloaded".to_string());
            }
            e
        }
    }
}

/// An `error` event inside a stream, as the OpenAI-shaped event the client
/// gets (`data: {"error":{...}}`).
pub fn stream_error(provider: &str, err: &ErrorBody) -> ApiError {
    let kind = err.kind.as_deref().unwrap_or("");
    if matches!(kind, "authentication_error" | "permission_error") {
        return auth_failed(provider, kind);
    }
    let (t, code) = kind_and_code(kind).unwrap_or(("server_error", "upstream_error"));
    let message = err
        .message
        .as_deref()
        .map(cut)
        .unwrap_or_else(|| "The provider reported an error in the stream.".to_string());
    ApiError::new(502, t, message).code(code)
}

/// Translate a whole answer. `json_tool` names the JSON-mode tool, if the
/// request asked for JSON; its input becomes the content.
pub fn translate(msg: &Message<'_>, json_tool: Option<&str>, created: u64) -> Vec<u8> {
    let mut text = String::new();
    let mut has_text = false;
    let mut json: Option<String> = None;
    let mut reasoning = String::new();
    let mut has_reasoning = false;
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for b in &msg.content {
        match b.kind.as_str() {
            "text" => {
                has_text = true;
                text.push_str(b.text.as_deref().unwrap_or(""));
            }
            "thinking" => {
                has_reasoning = true;
                let t = b.thinking.clone().unwrap_or_default();
                reasoning.push_str(&t);
                thinking_blocks.push(ThinkingBlock::Thinking {
                    thinking: t,
                    signature: b.signature.clone().unwrap_or_default(),
                });
            }
            "redacted_thinking" => thinking_blocks.push(ThinkingBlock::RedactedThinking {
                data: b.data.clone().unwrap_or_default(),
            }),
            "tool_use" => {
                let name = b.name.as_deref().unwrap_or("");
                let args = b.input.map(|r| r.get()).unwrap_or("{}");
                if json_tool == Some(name) {
                    json.get_or_insert_with(String::new).push_str(args);
                } else {
                    tool_calls.push(ToolCall {
                        id: b.id.as_deref().unwrap_or(""),
                        kind: "function",
                        function: FunctionCall {
                            name,
                            arguments: args,
                        },
                    });
                }
            }
            // server tools, citations' companions, future block types
            _ => {}
        }
    }
    let finish_reason = finish_reason(msg.stop_reason.as_deref(), !tool_calls.is_empty());
    OneChoice {
        id: completion_id(msg.id.as_deref().unwrap_or("")),
        created,
        model: msg.model.as_deref().unwrap_or(""),
        text: has_text.then_some(text),
        json,
        reasoning: has_reasoning.then_some(reasoning),
        thinking_blocks,
        tool_calls,
        finish_reason,
        usage: msg.usage.unwrap_or_default().openai(),
    }
    .into_bytes()
}

/// Translator for a non-streamed answer.
pub struct WholeTranslator {
    provider: String,
    json_tool: Option<String>,
    usage: Option<Usage>,
    created: u64,
    status: Option<u16>,
}

impl WholeTranslator {
    pub fn new(provider: &str, json_tool: Option<String>) -> Self {
        WholeTranslator {
            provider: provider.to_string(),
            json_tool,
            usage: None,
            created: 0,
            status: None,
        }
    }

    fn error(&mut self, e: ApiError) -> Option<Vec<u8>> {
        self.status = Some(e.status);
        Some(e.body())
    }
}

impl ResponseTranslator for WholeTranslator {
    fn stream_chunk(&mut self, chunk: &[u8], _end_of_stream: bool) -> Option<Vec<u8>> {
        // Not asked for a stream: the exchange buffers the answer; nothing
        // reaches here, but pass bytes unchanged if it ever does.
        Some(chunk.to_vec())
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let msg: Message<'_> = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(_) => return self.error(invalid_answer("not a Messages API JSON object")),
        };
        if msg.kind.as_deref() == Some("error") {
            let e = msg.error.unwrap_or_default();
            let e = stream_error(&self.provider, &e);
            return self.error(e);
        }
        self.usage = msg.usage;
        Some(translate(&msg, self.json_tool.as_deref(), self.created))
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.usage.map(|u| u.gateway())
    }

    fn status(&self) -> Option<u16> {
        self.status
    }

    fn set_created(&mut self, unix_seconds: u64) {
        self.created = unix_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("end_turn"), false), "stop");
        assert_eq!(finish_reason(Some("stop_sequence"), false), "stop");
        assert_eq!(finish_reason(Some("max_tokens"), false), "length");
        assert_eq!(finish_reason(Some("tool_use"), true), "tool_calls");
        assert_eq!(finish_reason(Some("tool_use"), false), "stop");
        assert_eq!(finish_reason(Some("refusal"), false), "content_filter");
        assert_eq!(finish_reason(Some("pause_turn"), false), "stop");
        assert_eq!(finish_reason(None, false), "stop");
        assert_eq!(finish_reason(Some("something_new"), false), "stop");
    }

    #[test]
    fn error_mapping() {
        let e = map_error(
            "a",
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-123"}}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (502, Some("upstream_auth_failed"))
        );
        assert!(!e.message.contains("sk-ant"));
        let e = map_error(
            "a",
            403,
            br#"{"type":"error","error":{"type":"permission_error","message":"no"}}"#,
        );
        assert_eq!(e.status, 502);
        let e = map_error(
            "a",
            404,
            br#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#,
        );
        assert_eq!((e.status, e.kind.as_ref()), (404, "invalid_request_error"));
        let e = map_error(
            "a",
            500,
            br#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
        );
        assert_eq!(
            (e.status, e.kind.as_ref(), e.code.as_deref()),
            (500, "server_error", Some("upstream_error"))
        );
        let e = map_error("a", 529, b"<html>overloaded</html>");
        assert_eq!(
            (e.status, e.code.as_deref()),
            (503, Some("upstream_overloaded"))
        );
        let e = map_error("a", 502, b"");
        assert_eq!(e.status, 502);
        let e = map_error(
            "a",
            400,
            br#"{"type":"error","error":{"type":"brand_new_error","message":"m"}}"#,
        );
        assert_eq!((e.status, e.message.as_str()), (400, "m"));
        let long = format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"{}"}}}}"#,
            "x".repeat(5000)
        );
        assert!(map_error("a", 400, long.as_bytes()).message.len() < 2100);
    }

    #[test]
    fn garbage_answers_do_not_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"content\":5}",
            b"\xff\xfe",
            b"{\"content\":[{\"type\":1}]}",
        ] {
            let mut t = WholeTranslator::new("a", None);
            let out = t.full_body(body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(v.get("error").is_some() || v.get("choices").is_some());
        }
    }

    #[test]
    fn created_can_be_set() {
        let mut t = WholeTranslator::new("a", None);
        t.set_created(1_750_000_000);
        let out = t
            .full_body(br#"{"id":"msg_1","type":"message","model":"m","content":[],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["created"], 1_750_000_000);
        assert!(v["choices"][0]["message"]["content"].is_null());
    }
}
