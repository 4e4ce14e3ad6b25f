//! A whole `Converse` answer → `chat.completion`; finish reasons, statuses
//! and errors shared with the stream and the embeddings.

use super::types::{str_at, Answer, Usage};
pub use crate::error::invalid_answer;
use crate::error::{self, cut_message as cut, upstream_auth_failed as auth_failed, ApiError};
use crate::providers::anthropic::types::{FunctionCall, ThinkingBlock, ToolCall};
use crate::providers::openai_out::OneChoice;
use crate::providers::ResponseTranslator;
use crate::usage::Usage as GatewayUsage;
use serde_json::Value;

/// The response header carrying AWS's request id.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// `chatcmpl-` + AWS's request id (the Converse API gives the answer no id
/// of its own; the request id is unique and traceable in AWS's logs and
/// CloudTrail). Without one (a host that passes no headers),
/// `chatcmpl-bedrock`.
pub fn completion_id(request_id: Option<&str>) -> String {
    match request_id.filter(|r| !r.is_empty()) {
        Some(r) => format!("chatcmpl-{r}"),
        None => "chatcmpl-bedrock".to_string(),
    }
}

/// Bedrock `stopReason` → OpenAI `finish_reason`.
///
/// `tool_use` is `tool_calls` only when the client's own tools were called
/// (a call of the JSON-mode tool is the answer itself); `max_tokens` and
/// `model_context_window_exceeded` are `length`; a guardrail's
/// intervention (`guardrail_intervened`) and the model's own filter
/// (`content_filtered`) are `content_filter`. `end_turn`,
/// `stop_sequence`, the model's malformed output (`malformed_model_output`,
/// `malformed_tool_use`: OpenAI has no reason for them) and reasons added
/// later are `stop`.
pub fn finish_reason(stop_reason: Option<&str>, client_tool_calls: bool) -> &'static str {
    match stop_reason {
        Some("tool_use") if client_tool_calls => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("guardrail_intervened") | Some("content_filtered") => "content_filter",
        _ if client_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// The status the client gets for Bedrock's error status. Bedrock's
/// exceptions each have their own status (from the service model):
/// `ValidationException` and `ServiceQuotaExceededException` 400,
/// `AccessDeniedException` (and an unrecognised or expired key, the
/// `UnrecognizedClientException` / `ExpiredTokenException` of AWS's
/// front end) 403, `ResourceNotFoundException` 404,
/// `ModelTimeoutException` 408, `ModelErrorException` 424,
/// `ThrottlingException` and `ModelNotReadyException` 429,
/// `InternalServerException` 500, `ServiceUnavailableException` 503.
/// They map to: 401/403 → 502 (the gateway's credentials were refused, not
/// the caller's), 408 → 504 (the model timed out: a gateway-side timeout
/// for the client, and retried by the SDKs), 424 → 502 (the model failed),
/// the others unchanged (429 is retried by the OpenAI SDKs, and covers a
/// model that is still loading as well as throttling).
pub fn client_status(status: u16) -> u16 {
    match status {
        408 => 504,
        424 => 502,
        s => error::upstream_status(s),
    }
}

/// OpenAI `type` and `code` for a Bedrock status, refined by the exception
/// name when the body or the stream gives one.
fn kind_and_code(status: u16, exception: &str) -> (&'static str, &'static str) {
    let e = exception.to_ascii_lowercase();
    if e.contains("modelnotready") {
        return ("rate_limit_error", "model_not_ready");
    }
    if e.contains("servicequotaexceeded") {
        return ("invalid_request_error", "quota_exceeded");
    }
    if e.contains("throttling") {
        return ("rate_limit_error", "rate_limit_exceeded");
    }
    if e.contains("validation") {
        return ("invalid_request_error", "invalid_request");
    }
    if e.contains("modeltimeout") {
        return ("server_error", "upstream_timeout");
    }
    if e.contains("modelstreamerror") || e.contains("modelerror") {
        return ("server_error", "model_error");
    }
    if e.contains("serviceunavailable") {
        return ("server_error", "upstream_unavailable");
    }
    if e.contains("internalserver") {
        return ("server_error", "upstream_error");
    }
    if e.contains("resourcenotfound") {
        return ("invalid_request_error", "not_found");
    }
    match status {
        400 => ("invalid_request_error", "invalid_request"),
        404 => ("invalid_request_error", "not_found"),
        408 => ("server_error", "upstream_timeout"),
        424 => ("server_error", "model_error"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "upstream_unavailable"),
        s if s >= 500 => ("server_error", "upstream_error"),
        _ => ("invalid_request_error", "invalid_request"),
    }
}

/// An error answer in OpenAI's shape, with the status [`client_status`]
/// chose. Bedrock's body is `{"message"}`: the exception's name is in the
/// `x-amzn-errortype` response header, which the mapping does not need
/// because each exception family has its own status (see
/// [`client_status`]); a `__type` in the body refines the code.
/// Authentication and permission errors never pass Bedrock's message on.
pub fn map_error(provider: &str, status: u16, body: &[u8]) -> ApiError {
    let out = client_status(status);
    if matches!(status, 401 | 403 | 407) {
        let mut e = auth_failed(provider, &format!("HTTP {status}"));
        e.status = out;
        return e;
    }
    // Bedrock's error body: `{"message": "..."}` (some front ends say
    // `Message`; a few add `__type`).
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| str_at(v, "message").or_else(|| str_at(v, "Message")));
    match message {
        Some(m) => {
            let kind = parsed.as_ref().and_then(|v| str_at(v, "__type"));
            let (t, code) = kind_and_code(status, kind.unwrap_or(""));
            ApiError::new(out, t, cut(m)).code(code)
        }
        None => {
            // Not Bedrock's shape (a proxy's HTML page, an empty body).
            let mut e = error::map_upstream_error(provider, status, body);
            e.status = out;
            let (t, code) = kind_and_code(status, "");
            e.kind = t.into();
            e.code = Some(code.to_string());
            e
        }
    }
}

/// An exception (or error) frame inside a stream, as the OpenAI-shaped
/// error event the client gets. `exception` is the frame's
/// `:exception-type` (`throttlingException`, `validationException`,
/// `modelStreamErrorException`, `internalServerException`,
/// `serviceUnavailableException`) or `:error-code`.
pub fn stream_error(provider: &str, exception: &str, message: Option<&str>) -> ApiError {
    let lower = exception.to_ascii_lowercase();
    if lower.contains("accessdenied")
        || lower.contains("unrecognizedclient")
        || lower.contains("expiredtoken")
    {
        return auth_failed(provider, exception);
    }
    let (t, code) = kind_and_code(0, exception);
    let message = message
        .filter(|m| !m.is_empty())
        .map(cut)
        .unwrap_or_else(|| {
            format!(
                "The provider reported an error in the stream ({}).",
                error::echo(exception)
            )
        });
    ApiError::new(502, t, message).code(code)
}

/// What the answer is labelled with.
pub struct Meta<'a> {
    pub id: String,
    pub model: &'a str,
    pub created: u64,
}

/// Translate a whole answer. `json_tool` names the JSON-mode tool, if the
/// request asked for JSON; its input becomes the content.
pub fn translate(answer: &Answer<'_>, json_tool: Option<&str>, meta: Meta<'_>) -> Vec<u8> {
    let mut text = String::new();
    let mut has_text = false;
    let mut json: Option<String> = None;
    let mut reasoning = String::new();
    let mut has_reasoning = false;
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let blocks = answer
        .output
        .as_ref()
        .and_then(|o| o.message.as_ref())
        .map(|m| m.content.as_slice())
        .unwrap_or(&[]);
    for b in blocks {
        if let Some(t) = &b.text {
            has_text = true;
            text.push_str(t);
        }
        if let Some(r) = &b.reasoning_content {
            if let Some(rt) = r.get("reasoningText") {
                has_reasoning = true;
                let t = str_at(rt, "text").unwrap_or("");
                reasoning.push_str(t);
                thinking_blocks.push(ThinkingBlock::Thinking {
                    thinking: t.to_string(),
                    signature: str_at(rt, "signature").unwrap_or("").to_string(),
                });
            } else if let Some(data) = str_at(r, "redactedContent") {
                thinking_blocks.push(ThinkingBlock::RedactedThinking {
                    data: data.to_string(),
                });
            }
        }
        if let Some(tu) = &b.tool_use {
            let name = tu.name.as_deref().unwrap_or("");
            let args = tu.input.map(|r| r.get()).unwrap_or("{}");
            if json_tool == Some(name) {
                json.get_or_insert_with(String::new).push_str(args);
            } else {
                tool_calls.push(ToolCall {
                    id: tu.tool_use_id.as_deref().unwrap_or(""),
                    kind: "function",
                    function: FunctionCall {
                        name,
                        arguments: args,
                    },
                });
            }
        }
    }
    let finish_reason = finish_reason(answer.stop_reason.as_deref(), !tool_calls.is_empty());
    OneChoice {
        id: meta.id,
        created: meta.created,
        model: meta.model,
        text: has_text.then_some(text),
        json,
        reasoning: has_reasoning.then_some(reasoning),
        thinking_blocks,
        tool_calls,
        finish_reason,
        usage: answer
            .usage
            .as_ref()
            .map(Usage::from_json)
            .unwrap_or_default()
            .openai(),
    }
    .into_bytes()
}

/// Translator for a non-streamed `Converse` answer.
pub struct WholeTranslator {
    model: String,
    json_tool: Option<String>,
    request_id: Option<String>,
    usage: Option<Usage>,
    created: u64,
    status: Option<u16>,
}

impl WholeTranslator {
    pub fn new(model: &str, json_tool: Option<String>) -> Self {
        WholeTranslator {
            model: model.to_string(),
            json_tool,
            request_id: None,
            usage: None,
            created: 0,
            status: None,
        }
    }
}

impl ResponseTranslator for WholeTranslator {
    fn stream_chunk(&mut self, chunk: &[u8], _end_of_stream: bool) -> Option<Vec<u8>> {
        // Not asked for a stream: the exchange buffers the answer.
        Some(chunk.to_vec())
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let answer: Answer<'_> = match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(_) => {
                let e = invalid_answer("not a Converse JSON object");
                self.status = Some(e.status);
                return Some(e.body());
            }
        };
        self.usage = answer.usage.as_ref().map(Usage::from_json);
        Some(translate(
            &answer,
            self.json_tool.as_deref(),
            Meta {
                id: completion_id(self.request_id.as_deref()),
                model: &self.model,
                created: self.created,
            },
        ))
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

    fn response_headers(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        self.request_id = get(REQUEST_ID_HEADER);
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
        assert_eq!(
            finish_reason(Some("model_context_window_exceeded"), false),
            "length"
        );
        assert_eq!(finish_reason(Some("tool_use"), true), "tool_calls");
        assert_eq!(finish_reason(Some("tool_use"), false), "stop");
        assert_eq!(
            finish_reason(Some("guardrail_intervened"), false),
            "content_filter"
        );
        assert_eq!(
            finish_reason(Some("content_filtered"), false),
            "content_filter"
        );
        assert_eq!(finish_reason(Some("malformed_tool_use"), false), "stop");
        assert_eq!(finish_reason(None, false), "stop");
    }

    #[test]
    fn statuses_and_codes() {
        let cases: [(u16, &[u8], u16, &str, &str); 12] = [
            (
                400,
                br#"{"message":"Malformed input request"}"#,
                400,
                "invalid_request_error",
                "invalid_request",
            ),
            (
                400,
                br#"{"message":"Too many tokens","__type":"ServiceQuotaExceededException"}"#,
                400,
                "invalid_request_error",
                "quota_exceeded",
            ),
            (
                403,
                br#"{"message":"The security token included in the request is invalid."}"#,
                502,
                "server_error",
                "upstream_auth_failed",
            ),
            (401, b"", 502, "server_error", "upstream_auth_failed"),
            (
                404,
                br#"{"message":"Model not found"}"#,
                404,
                "invalid_request_error",
                "not_found",
            ),
            (
                408,
                br#"{"message":"Model has timed out"}"#,
                504,
                "server_error",
                "upstream_timeout",
            ),
            (
                424,
                br#"{"message":"The model failed"}"#,
                502,
                "server_error",
                "model_error",
            ),
            (
                429,
                br#"{"message":"Too many requests, please wait before trying again."}"#,
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            (
                429,
                br#"{"__type":"ModelNotReadyException","message":"Model is not ready"}"#,
                429,
                "rate_limit_error",
                "model_not_ready",
            ),
            (
                500,
                br#"{"Message":"Internal"}"#,
                500,
                "server_error",
                "upstream_error",
            ),
            (
                503,
                br#"{"message":"Bedrock is unable to process your request."}"#,
                503,
                "server_error",
                "upstream_unavailable",
            ),
            (
                502,
                b"<html>bad gateway</html>",
                502,
                "server_error",
                "upstream_error",
            ),
        ];
        for (status, body, out, kind, code) in cases {
            let e = map_error("b", status, body);
            assert_eq!(
                (e.status, e.kind.as_ref(), e.code.as_deref()),
                (out, kind, Some(code)),
                "{status} {}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(client_status(status), out);
        }
        let e = map_error("b", 403, br#"{"message":"key AKIAXXXX is invalid"}"#);
        assert!(!e.message.contains("AKIA"));
        let long = format!(r#"{{"message":"{}"}}"#, "é".repeat(3000));
        assert!(map_error("b", 400, long.as_bytes()).message.len() < 2100);
    }

    #[test]
    fn stream_errors() {
        let e = stream_error("b", "throttlingException", Some("slow down"));
        assert_eq!(
            (e.kind.as_ref(), e.code.as_deref()),
            ("rate_limit_error", Some("rate_limit_exceeded"))
        );
        assert_eq!(e.message, "slow down");
        let e = stream_error("b", "modelStreamErrorException", None);
        assert_eq!(e.code.as_deref(), Some("model_error"));
        let e = stream_error("b", "accessDeniedException", Some("AKIA..."));
        assert_eq!(e.code.as_deref(), Some("upstream_auth_failed"));
        assert!(!e.message.contains("AKIA"));
    }

    #[test]
    fn garbage_answers_do_not_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"output\":5}",
            b"\xff\xfe",
            b"{\"output\":{\"message\":{\"content\":[{\"toolUse\":{\"input\":[1]}},{}]}}}",
        ] {
            let mut t = WholeTranslator::new("m", None);
            let out = t.full_body(body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(v.get("error").is_some() || v.get("choices").is_some());
        }
    }

    #[test]
    fn ids_and_created() {
        assert_eq!(completion_id(Some("abc")), "chatcmpl-abc");
        assert_eq!(completion_id(Some("")), "chatcmpl-bedrock");
        assert_eq!(completion_id(None), "chatcmpl-bedrock");
        let mut t = WholeTranslator::new("m", None);
        t.set_created(1_750_000_000);
        t.response_headers(&|h| (h == REQUEST_ID_HEADER).then(|| "rid-1".to_string()));
        let out = t
            .full_body(br#"{"output":{"message":{"role":"assistant","content":[]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2}}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["created"], 1_750_000_000);
        assert_eq!(v["id"], "chatcmpl-rid-1");
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(t.usage().unwrap().total_tokens, 2);
    }
}
