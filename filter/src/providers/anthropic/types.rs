//! The parts of Anthropic's answers the gateway reads, and the OpenAI-shaped
//! pieces it writes. Anthropic's objects are read leniently (unknown fields
//! and block types are skipped, missing ones default), because the API adds
//! fields and block types over time.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A Messages answer (`"type": "message"`), or the `message` of a stream's
/// `message_start` event.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, borrow)]
    pub content: Vec<Block<'a>>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// One content block, flat: Anthropic tags blocks with `type`, but a tagged
/// enum cannot hold a borrowed `RawValue` (the tool input, kept byte for
/// byte so key order survives), so every field is optional here.
#[derive(Debug, Deserialize)]
pub struct Block<'a> {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
}

/// Anthropic's `usage`. In a stream, `message_start` carries the input
/// counts and `message_delta` the (cumulative) output count; newer API
/// versions repeat the input counts in `message_delta`. Fields present
/// replace earlier values.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    pub fn merge(&mut self, newer: &Usage) {
        if newer.input_tokens.is_some() {
            self.input_tokens = newer.input_tokens;
        }
        if newer.output_tokens.is_some() {
            self.output_tokens = newer.output_tokens;
        }
        if newer.cache_creation_input_tokens.is_some() {
            self.cache_creation_input_tokens = newer.cache_creation_input_tokens;
        }
        if newer.cache_read_input_tokens.is_some() {
            self.cache_read_input_tokens = newer.cache_read_input_tokens;
        }
    }

    /// OpenAI's view: every input token (uncached, read from the cache,
    /// written to the cache) is a prompt token; `cached_tokens` are the ones
    /// read from the cache.
    pub fn openai(&self) -> OutUsage {
        OutUsage::of(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        )
    }

    pub fn gateway(&self) -> crate::usage::Usage {
        self.openai().gateway()
    }
}

/// `{"type": "...", "message": "..."}` of an error answer or stream event.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The `usage` object the client gets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetails,
}

impl OutUsage {
    /// From uncached input, output, cache-read and cache-write token counts
    /// (absent: 0): every input token (uncached, read from the cache,
    /// written to it) is a prompt token; `cached_tokens` are the reads,
    /// `cache_creation_tokens` the writes. Shared with Bedrock.
    pub fn of(
        input: Option<u64>,
        output: Option<u64>,
        read: Option<u64>,
        written: Option<u64>,
    ) -> OutUsage {
        let read = read.unwrap_or(0);
        let written = written.unwrap_or(0);
        let prompt = input
            .unwrap_or(0)
            .saturating_add(read)
            .saturating_add(written);
        let completion = output.unwrap_or(0);
        OutUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: read,
                cache_creation_tokens: written,
            },
        }
    }

    /// The gateway's record of these counts (for quotas and logs).
    pub fn gateway(&self) -> crate::usage::Usage {
        crate::usage::Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cached_tokens: self.prompt_tokens_details.cached_tokens,
            reasoning_tokens: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptDetails {
    /// Read from Anthropic's prompt cache (`cache_read_input_tokens`).
    pub cached_tokens: u64,
    /// Written to the cache by this request (`cache_creation_input_tokens`,
    /// billed above the base input price); an extension of OpenAI's shape.
    pub cache_creation_tokens: u64,
}

/// A thinking block as the client sees it (`message.thinking_blocks`), and
/// sends it back on assistant messages.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    Thinking { thinking: String, signature: String },
    RedactedThinking { data: String },
}

/// An OpenAI tool call (whole, in a `chat.completion`).
#[derive(Debug, Serialize)]
pub struct ToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionCall<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}
