//! A whole `GenerateContentResponse` → `chat.completion`; the pieces the
//! stream shares (ids, finish reasons, blocked prompts) and Google's error
//! mapping.

use super::types::{
    arguments, list_at, str_at, ExtraContent, FunctionOut, GoogleError, ToolCall, UsageMetadata,
};
pub use crate::error::invalid_answer;
use crate::error::{self, cut_message as cut, upstream_auth_failed as auth_failed, ApiError};
use crate::providers::openai_out::{self, Completion, OutMessage};
use crate::providers::ResponseTranslator;
use crate::usage::Usage as GatewayUsage;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `chatcmpl-` + Gemini's `responseId` (the same for every event of a
/// stream), like the Anthropic provider's `chatcmpl-` + message id.
pub fn completion_id(response_id: &str) -> String {
    format!("chatcmpl-{response_id}")
}

/// A tool call's id. Gemini's function calls have none (it matches results
/// by name and order), unless the model gave one (`functionCall.id`), which
/// is then used. Otherwise `call_` + 24 hex digits of SHA-256 over the
/// response id, the candidate index and the call's position in the
/// candidate: the same id whether the answer is streamed or whole, and
/// distinct across answers and parallel calls.
pub fn tool_call_id(
    given: Option<&str>,
    response_id: &str,
    candidate: u32,
    index: usize,
) -> String {
    if let Some(id) = given.filter(|s| !s.is_empty()) {
        return id.to_string();
    }
    let digest = Sha256::digest(format!("{response_id}/{candidate}/{index}").as_bytes());
    let mut out = String::from("call_");
    for b in digest.iter().take(12) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
///
/// - `MAX_TOKENS` → `length`.
/// - The answer was withheld or cut by a filter: `SAFETY`, `RECITATION`,
///   `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `LANGUAGE` (unsupported
///   language), `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`,
///   `IMAGE_RECITATION` → `content_filter`.
/// - `STOP` and everything else (`OTHER`, `FINISH_REASON_UNSPECIFIED`,
///   `MALFORMED_FUNCTION_CALL`, `UNEXPECTED_TOOL_CALL`,
///   `TOO_MANY_TOOL_CALLS`, `MISSING_THOUGHT_SIGNATURE`, values added
///   later) → `tool_calls` when the answer has function calls, else `stop`:
///   OpenAI's vocabulary has nothing closer, and the content is what the
///   model wrote.
pub fn finish_reason(reason: Option<&str>, tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "LANGUAGE"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        _ if tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A prompt Gemini refused to answer (`promptFeedback.blockReason`, no
/// candidates): OpenAI's content-filter error.
pub fn prompt_blocked(reason: &str, message: Option<&str>) -> ApiError {
    let mut text = format!(
        "The prompt was blocked by the provider's content filter (blockReason: {}).",
        error::echo(reason)
    );
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        text.push(' ');
        text.push_str(&cut(m));
    }
    ApiError::invalid(text).code("content_filter")
}

/// The status the client gets for a Gemini error status: as for every
/// provider (401/403 → 502, others kept).
pub fn client_status(status: u16) -> u16 {
    error::upstream_status(status)
}

/// OpenAI `type` and `code` for a Google RPC status.
fn kind_and_code(status: &str) -> Option<(&'static str, &'static str)> {
    Some(match status {
        "INVALID_ARGUMENT" | "OUT_OF_RANGE" => ("invalid_request_error", "invalid_request"),
        "FAILED_PRECONDITION" => ("invalid_request_error", "failed_precondition"),
        "NOT_FOUND" => ("invalid_request_error", "not_found"),
        "RESOURCE_EXHAUSTED" => ("rate_limit_error", "rate_limit_exceeded"),
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "ABORTED" | "CANCELLED" | "UNIMPLEMENTED" => {
            ("server_error", "upstream_error")
        }
        "UNAVAILABLE" => ("server_error", "upstream_unavailable"),
        "DEADLINE_EXCEEDED" => ("server_error", "upstream_timeout"),
        _ => return None,
    })
}

/// Whether the error is about the gateway's own credentials: an
/// authentication or permission status, or the Gemini API's
/// `400 INVALID_ARGUMENT` for a bad key (`ErrorInfo.reason`
/// `API_KEY_INVALID`, "API key not valid").
fn is_auth(e: &GoogleError) -> bool {
    matches!(
        e.status.as_deref(),
        Some("UNAUTHENTICATED" | "PERMISSION_DENIED")
    ) || e
        .reasons
        .iter()
        .any(|r| r.starts_with("API_KEY_") || r.starts_with("ACCESS_TOKEN_"))
}

/// Google's error body, as an object or (Vertex, some stream errors) a
/// one-element array.
fn parse_error(body: &[u8]) -> Option<GoogleError> {
    let v: Value = serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
    match &v {
        Value::Array(a) => GoogleError::of(a.first()?),
        _ => GoogleError::of(&v),
    }
}

/// A Google error answer in OpenAI's shape, with the status
/// [`client_status`] chose. Authentication and permission errors (and a
/// rejected API key, which the Gemini API reports as a 400) never pass the
/// provider's message on; the 400 keeps its status (decided from the
/// headers) but gets `upstream_auth_failed`.
pub fn map_error(provider: &str, status: u16, body: &[u8]) -> ApiError {
    let out = client_status(status);
    let err = parse_error(body);
    if matches!(status, 401 | 403 | 407) || err.as_ref().is_some_and(is_auth) {
        // 502 whatever Google's status (its bad-key answer is a 400): the
        // caller's request was fine. The glue holds error headers until the
        // body is read, so this status reaches the client.
        return auth_failed(provider, &format!("HTTP {status}"));
    }
    let Some(err) = err else {
        // Not Google's shape (a proxy's HTML page, an empty body).
        return error::map_upstream_error(provider, status, body);
    };
    let fallback = error::map_upstream_error(provider, status, b"");
    let (kind, code) = match err.status.as_deref().and_then(kind_and_code) {
        Some((k, c)) => (k.into(), c.to_string()),
        None => (
            fallback.kind,
            fallback
                .code
                .unwrap_or_else(|| "upstream_error".to_string()),
        ),
    };
    let message = match err.message.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => cut(m),
        None => format!("Provider `{provider}` returned HTTP {status} without an error message."),
    };
    let mut e = ApiError::new(out, kind, message).code(code);
    // Google says when to retry only in the body (RetryInfo).
    e.retry_after = err.retry_delay_secs;
    e
}

/// An error inside a stream (`data: {"error": {...}}`), as the event the
/// client gets.
pub fn stream_error(provider: &str, err: &GoogleError) -> ApiError {
    if is_auth(err) {
        return auth_failed(provider, err.status.as_deref().unwrap_or("in stream"));
    }
    let (kind, code) = err
        .status
        .as_deref()
        .and_then(kind_and_code)
        .unwrap_or(("server_error", "upstream_error"));
    let message = err
        .message
        .as_deref()
        .map(cut)
        .unwrap_or_else(|| "The provider reported an error in the stream.".to_string());
    ApiError::new(err.code.unwrap_or(502), kind, message).code(code)
}

/// A candidate's index: Gemini's (left out for 0), else its position.
pub fn candidate_index(c: &Value, position: usize) -> u32 {
    c.get("index")
        .and_then(Value::as_u64)
        .or(Some(position as u64))
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(u32::MAX)
}

/// A candidate's content parts.
pub fn parts(c: &Value) -> &[Value] {
    c.get("content")
        .map_or(&[], |content| list_at(content, "parts"))
}

/// The error a candidate-less answer stands for: a blocked prompt, or an
/// unreadable answer.
pub fn no_candidates(answer: &Value) -> ApiError {
    let feedback = answer.get("promptFeedback");
    match feedback.and_then(|f| str_at(f, "blockReason")) {
        Some(reason) => prompt_blocked(
            reason,
            feedback.and_then(|f| str_at(f, "blockReasonMessage")),
        ),
        None => invalid_answer("it has no candidates"),
    }
}

type Choice<'a> = openai_out::Choice<ToolCall<'a>>;

fn choice<'a>(c: &'a Value, index: u32, response_id: &str) -> Choice<'a> {
    let mut text = String::new();
    let mut has_text = false;
    let mut reasoning = String::new();
    let mut has_reasoning = false;
    let mut tool_calls = Vec::new();
    for p in parts(c) {
        if let Some(f) = p.get("functionCall") {
            tool_calls.push(ToolCall {
                id: tool_call_id(str_at(f, "id"), response_id, index, tool_calls.len()),
                kind: "function",
                function: FunctionOut {
                    name: str_at(f, "name").unwrap_or(""),
                    arguments: arguments(f.get("args")),
                },
                extra_content: ExtraContent::signature(str_at(p, "thoughtSignature")),
            });
        } else if let Some(t) = str_at(p, "text") {
            if p.get("thought") == Some(&Value::Bool(true)) {
                has_reasoning = true;
                reasoning.push_str(t);
            } else {
                has_text = true;
                text.push_str(t);
            }
        }
        // inlineData, executableCode, codeExecutionResult, …: not mapped.
    }
    let finish = finish_reason(str_at(c, "finishReason"), !tool_calls.is_empty());
    Choice {
        index,
        message: OutMessage {
            role: "assistant",
            content: has_text.then_some(text),
            refusal: None,
            reasoning_content: has_reasoning.then_some(reasoning),
            thinking_blocks: Vec::new(),
            tool_calls,
        },
        logprobs: None,
        finish_reason: finish,
    }
}

/// Translate a whole answer, or the error it stands for.
pub fn translate(r: &Value, created: u64) -> Result<Vec<u8>, ApiError> {
    let candidates = list_at(r, "candidates");
    if candidates.is_empty() {
        return Err(no_candidates(r));
    }
    let response_id = str_at(r, "responseId").unwrap_or("");
    // In Gemini's order, which is the candidates' index order.
    let choices: Vec<Choice<'_>> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| choice(c, candidate_index(c, i), response_id))
        .collect();
    let out = Completion {
        id: completion_id(response_id),
        object: "chat.completion",
        created,
        model: str_at(r, "modelVersion").unwrap_or(""),
        choices,
        usage: UsageMetadata::of(r).unwrap_or_default().openai(),
    };
    serde_json::to_vec(&out).map_err(|_| invalid_answer("serialisation"))
}

/// Translator for a non-streamed answer.
pub struct WholeTranslator {
    provider: String,
    usage: Option<UsageMetadata>,
    created: u64,
    status: Option<u16>,
}

impl WholeTranslator {
    pub fn new(provider: &str) -> Self {
        WholeTranslator {
            provider: provider.to_string(),
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
        let parsed = std::str::from_utf8(body)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .filter(Value::is_object);
        let Some(r) = parsed else {
            return self.error(invalid_answer("not a GenerateContentResponse"));
        };
        if let Some(e) = GoogleError::of(&r) {
            let e = stream_error(&self.provider, &e);
            return self.error(e);
        }
        self.usage = UsageMetadata::of(&r);
        match translate(&r, self.created) {
            Ok(out) => Some(out),
            Err(e) => self.error(e),
        }
    }

    fn status(&self) -> Option<u16> {
        self.status
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

    #[test]
    fn blocked_prompt_sets_the_status() {
        let mut t = WholeTranslator::new("gemini");
        let out = t
            .full_body(br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#)
            .unwrap();
        assert_eq!(t.status(), Some(400));
        assert!(String::from_utf8(out).unwrap().contains("content_filter"));
        let mut t = WholeTranslator::new("gemini");
        t.full_body(b"{not json").unwrap();
        assert_eq!(t.status(), Some(502));
        let mut t = WholeTranslator::new("gemini");
        t.full_body(br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}]}"#);
        assert_eq!(t.status(), None);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false), "stop");
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(Some(r), false), "content_filter");
        }
        assert_eq!(
            finish_reason(Some("MALFORMED_FUNCTION_CALL"), false),
            "stop"
        );
        assert_eq!(finish_reason(Some("OTHER"), false), "stop");
        assert_eq!(finish_reason(None, false), "stop");
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = tool_call_id(None, "r1", 0, 0);
        assert_eq!(a, tool_call_id(None, "r1", 0, 0));
        assert_eq!(a.len(), 5 + 24);
        assert_ne!(a, tool_call_id(None, "r1", 0, 1));
        assert_ne!(a, tool_call_id(None, "r1", 1, 0));
        assert_ne!(a, tool_call_id(None, "r2", 0, 0));
        assert_eq!(tool_call_id(Some("x"), "r1", 0, 0), "x");
    }

    #[test]
    fn retry_delay_becomes_retry_after() {
        let body = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2.5s"}]}}"#;
        let e = map_error("g", 429, body);
        assert_eq!((e.status, e.retry_after), (429, Some(3)));
        assert_eq!(
            crate::providers::gemini::types::duration_secs("3s"),
            Some(3)
        );
        assert_eq!(
            crate::providers::gemini::types::duration_secs("0.000s"),
            Some(0)
        );
        assert_eq!(crate::providers::gemini::types::duration_secs("x"), None);
        assert_eq!(crate::providers::gemini::types::duration_secs("1.ys"), None);
    }

    #[test]
    fn error_mapping() {
        let e = map_error(
            "g",
            400,
            br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (502, Some("upstream_auth_failed"))
        );
        assert!(!e.message.contains("API key not valid"));
        let e = map_error(
            "g",
            403,
            br#"{"error":{"code":403,"message":"Permission denied on key AIza123","status":"PERMISSION_DENIED"}}"#,
        );
        assert_eq!(e.status, 502);
        assert!(!e.message.contains("AIza"));
        for (status, s, kind, code) in [
            (404, "NOT_FOUND", "invalid_request_error", "not_found"),
            (
                429,
                "RESOURCE_EXHAUSTED",
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            (500, "INTERNAL", "server_error", "upstream_error"),
            (503, "UNAVAILABLE", "server_error", "upstream_unavailable"),
            (504, "DEADLINE_EXCEEDED", "server_error", "upstream_timeout"),
        ] {
            let body = format!(r#"[{{"error":{{"code":{status},"message":"m","status":"{s}"}}}}]"#);
            let e = map_error("g", status, body.as_bytes());
            assert_eq!(
                (
                    e.status,
                    e.kind.as_ref(),
                    e.code.as_deref(),
                    e.message.as_str()
                ),
                (status, kind, Some(code), "m"),
                "{s}"
            );
        }
        let e = map_error("g", 502, b"<html>bad gateway</html>");
        assert_eq!(e.status, 502);
        let e = map_error(
            "g",
            400,
            br#"{"error":{"message":"m","status":"NEW_THING"}}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("invalid_request"))
        );
    }

    #[test]
    fn every_byte_mutated_never_panics() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"a","thought":true},{"text":"b"},{"functionCall":{"name":"f","args":{"k":[1]}},"thoughtSignature":"s"}]},"finishReason":"STOP","index":1}],"promptFeedback":{"blockReason":"X"},"usageMetadata":{"promptTokenCount":1,"thoughtsTokenCount":2},"responseId":"r","modelVersion":"m","error":null}"#;
        for i in 0..body.len() {
            for b in [b'"', b'{', b'[', b'}', b'1', b'n', 0xff] {
                let mut input = body.to_vec();
                input[i] = b;
                let out = WholeTranslator::new("g").full_body(&input).unwrap();
                assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
                let _ = map_error("g", 400, &input);
            }
        }
    }

    #[test]
    fn garbage_answers_do_not_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"candidates\":5}",
            b"\xff\xfe",
            b"{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":7}}]}}]}",
            b"{}",
        ] {
            let mut t = WholeTranslator::new("g");
            let out = t.full_body(body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(v.get("error").is_some() || v.get("choices").is_some());
        }
    }
}
