//! Reading Gemini's answers (`GenerateContentResponse`, whole or one stream
//! event; Google's error envelope) and the OpenAI-shaped pieces the gateway
//! writes. Answers are read as `serde_json::Value`s (the parser the gateway
//! already carries; derived deserialisers for each of Google's objects
//! would add tens of KB to the .wasm), leniently: unknown fields and part
//! kinds are skipped and missing ones default, because the API adds fields
//! over time and proto3 JSON leaves out zero values (a candidate's
//! `index: 0`, a `thought: false`).

use serde::Serialize;
use serde_json::Value;

/// `v[key]` as a string.
pub fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// `v[key]` as an array (empty when absent or not an array).
pub fn list_at<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Gemini's `usageMetadata`. In a stream each event carries the counts so
/// far; the last one is final. `promptTokenCount` includes the cached
/// tokens; `thoughtsTokenCount` is not in `candidatesTokenCount`.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageMetadata {
    pub prompt_token_count: u64,
    pub candidates_token_count: u64,
    pub thoughts_token_count: u64,
    pub cached_content_token_count: u64,
}

impl UsageMetadata {
    /// The `usageMetadata` of an answer or event, if it has one.
    pub fn of(answer: &Value) -> Option<Self> {
        let u = answer.get("usageMetadata")?.as_object()?;
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(UsageMetadata {
            prompt_token_count: n("promptTokenCount"),
            candidates_token_count: n("candidatesTokenCount"),
            thoughts_token_count: n("thoughtsTokenCount"),
            cached_content_token_count: n("cachedContentTokenCount"),
        })
    }

    /// OpenAI's view: `completion_tokens` counts the answer and the thinking
    /// (as OpenAI counts reasoning tokens), `reasoning_tokens` the thinking,
    /// `cached_tokens` the prompt tokens served from Gemini's context cache.
    pub fn openai(&self) -> OutUsage {
        let prompt = self.prompt_token_count;
        let thoughts = self.thoughts_token_count;
        let completion = self.candidates_token_count.saturating_add(thoughts);
        OutUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: self.cached_content_token_count,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: thoughts,
            },
        }
    }

    pub fn gateway(&self) -> crate::usage::Usage {
        let o = self.openai();
        crate::usage::Usage {
            prompt_tokens: o.prompt_tokens,
            completion_tokens: o.completion_tokens,
            total_tokens: o.total_tokens,
            cached_tokens: o.prompt_tokens_details.cached_tokens,
            reasoning_tokens: o.completion_tokens_details.reasoning_tokens,
        }
    }
}

/// Google's error body: `{"error": {"code": 400, "message": "...",
/// "status": "INVALID_ARGUMENT", "details": [...]}}`. Of `details`, only
/// `google.rpc.ErrorInfo`'s `reason` is read (`API_KEY_INVALID` tells a
/// rejected key apart from a bad request).
#[derive(Debug, Default)]
pub struct GoogleError {
    pub code: Option<u16>,
    pub message: Option<String>,
    pub status: Option<String>,
    pub reasons: Vec<String>,
    /// `RetryInfo.retryDelay` ("3s", "2.5s"), rounded up to whole seconds.
    pub retry_delay_secs: Option<u64>,
}

/// Seconds of a protobuf JSON duration such as `"3s"` or `"0.250s"`,
/// rounded up (a client must not retry early).
pub fn duration_secs(s: &str) -> Option<u64> {
    let n = s.strip_suffix('s')?;
    let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    Some(whole + u64::from(frac.bytes().any(|b| b != b'0')))
}

impl GoogleError {
    /// The `error` object of an envelope, if it has one.
    pub fn of(envelope: &Value) -> Option<Self> {
        let e = envelope.get("error")?.as_object()?;
        let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
        Some(GoogleError {
            code: e
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok()),
            message: s("message"),
            status: s("status"),
            reasons: e
                .get("details")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| str_at(d, "reason").map(str::to_string))
                .collect(),
            retry_delay_secs: e
                .get("details")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|d| str_at(d, "retryDelay").and_then(duration_secs)),
        })
    }
}

/// The `usage` object the client gets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetails,
    pub completion_tokens_details: CompletionDetails,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CompletionDetails {
    pub reasoning_tokens: u64,
}

/// `extra_content: {"google": {"thought_signature": "..."}}` on a tool call:
/// the field Google's own OpenAI-compatible endpoint uses to hand a
/// function call's thought signature to the client, which sends it back on
/// the assistant message (see the module docs of [`super`]).
#[derive(Debug, Clone, Serialize)]
pub struct ExtraContent<'a> {
    pub google: GoogleExtra<'a>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GoogleExtra<'a> {
    pub thought_signature: &'a str,
}

impl<'a> ExtraContent<'a> {
    pub fn signature(sig: Option<&'a str>) -> Option<Self> {
        sig.filter(|s| !s.is_empty()).map(|s| ExtraContent {
            google: GoogleExtra {
                thought_signature: s,
            },
        })
    }
}

/// An OpenAI tool call (whole, in a `chat.completion`).
#[derive(Debug, Serialize)]
pub struct ToolCall<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<ExtraContent<'a>>,
}

#[derive(Debug, Serialize)]
pub struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: String,
}

/// A function call's arguments as OpenAI's `arguments` string: the JSON
/// object, compact, `{}` when Gemini sent none.
pub fn arguments(args: Option<&Value>) -> String {
    match args {
        Some(a @ Value::Object(_)) => serde_json::to_string(a).unwrap_or_else(|_| "{}".into()),
        _ => "{}".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_thoughts_as_completion() {
        let u = UsageMetadata::of(&serde_json::json!({"usageMetadata":
            {"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":7,"cachedContentTokenCount":4,"totalTokenCount":22}}))
        .unwrap();
        let o = u.openai();
        assert_eq!(
            (o.prompt_tokens, o.completion_tokens, o.total_tokens),
            (10, 12, 22)
        );
        assert_eq!(o.prompt_tokens_details.cached_tokens, 4);
        assert_eq!(u.gateway().reasoning_tokens, 7);
    }
}
