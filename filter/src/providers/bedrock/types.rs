//! The parts of Bedrock's answers the gateway reads. Read leniently, like
//! Anthropic's: unknown fields (Bedrock pads stream events with a random
//! `p` field) and unknown content blocks are skipped, missing fields
//! default, because the Converse API grows new members over time. Whole
//! answers are read into these types (tool inputs stay raw JSON, so their
//! key order survives); stream events and small objects are navigated as
//! [`Value`]s, which costs the `.wasm` no deserializer of its own.

use crate::providers::anthropic::types::OutUsage;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A `Converse` answer, or an error body (`{"message": ...}`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer<'a> {
    #[serde(default, borrow)]
    pub output: Option<Output<'a>>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Output<'a> {
    #[serde(default, borrow)]
    pub message: Option<Message<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Message<'a> {
    #[serde(default, borrow)]
    pub content: Vec<Block<'a>>,
}

/// One content block. Converse blocks are unions (`{"text": ...}`,
/// `{"toolUse": {...}}`, …); every member is optional here and blocks of
/// other kinds (citations, images, tool results) have none of them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block<'a> {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default, borrow)]
    pub tool_use: Option<ToolUse<'a>>,
    /// `{"reasoningText": {"text", "signature"}}` or
    /// `{"redactedContent": base64}`.
    #[serde(default)]
    pub reasoning_content: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse<'a> {
    #[serde(default)]
    pub tool_use_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Kept byte for byte (key order), as the tool call's `arguments`.
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
}

/// A string member of a JSON object, if it is one.
pub fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// Bedrock's `usage`. `inputTokens` excludes the tokens read from or
/// written to the prompt cache (they are counted apart, as Anthropic
/// does; `totalTokens` is the sum of all four).
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_write_input_tokens: Option<u64>,
}

impl Usage {
    /// Read from the `usage` object (read by hand: the stream's events are
    /// navigated as JSON values, and one reader serves both).
    pub fn from_json(v: &Value) -> Usage {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        Usage {
            input_tokens: n("inputTokens"),
            output_tokens: n("outputTokens"),
            cache_read_input_tokens: n("cacheReadInputTokens"),
            cache_write_input_tokens: n("cacheWriteInputTokens"),
        }
    }

    /// OpenAI's view: every input token (uncached, read from the cache,
    /// written to it) is a prompt token; `cached_tokens` are the reads,
    /// `cache_creation_tokens` (an extension) the writes.
    pub fn openai(&self) -> OutUsage {
        OutUsage::of(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_write_input_tokens,
        )
    }

    pub fn gateway(&self) -> crate::usage::Usage {
        self.openai().gateway()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_cache_tokens_as_prompt_tokens() {
        let u = Usage::from_json(&serde_json::json!(
            {"inputTokens":4,"outputTokens":10,"totalTokens":1510,"cacheReadInputTokens":0,"cacheWriteInputTokens":1496}
        ));
        let o = u.openai();
        assert_eq!(
            (o.prompt_tokens, o.completion_tokens, o.total_tokens),
            (1500, 10, 1510)
        );
        assert_eq!(o.prompt_tokens_details.cache_creation_tokens, 1496);
        let g = Usage {
            input_tokens: Some(u64::MAX),
            output_tokens: Some(1),
            cache_read_input_tokens: Some(5),
            cache_write_input_tokens: None,
        }
        .gateway();
        assert_eq!((g.total_tokens, g.cached_tokens), (u64::MAX, 5));
    }
}
