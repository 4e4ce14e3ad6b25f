//! `count_tokens` answered by the gateway (providers that are not Anthropic
//! have no such endpoint): an estimate, flagged with the response header
//! `x-llm-token-count: estimate`.
//!
//! `input_tokens` = ceil(text bytes / 4) + 4 per message (+ 4 for a system
//! prompt) + 1,600 per image or non-text document. Text bytes are the UTF-8
//! bytes of: the system prompt; text blocks; thinking text; `tool_use` names
//! and inputs (as JSON); `tool_result` contents (the same rules, nested);
//! plain-text documents; each tool definition as JSON; `tool_choice` as JSON.
//! Four bytes per token is the usual rule of thumb for English text with
//! GPT- and Claude-family tokenizers (it undercounts code and most other
//! scripts); 1,600 is about what Anthropic charges for an image of
//! ~1.15 megapixels, the size it scales larger images down to. Good enough to
//! decide whether a prompt fits; not a bill.

use super::request::{content, InBlock, InContent};
use crate::error::ApiError;
use crate::request::{ClientRequest, Endpoint};
use serde_json::value::RawValue;

/// Tokens counted for an image or a non-text document.
pub const MEDIA_TOKENS: u64 = 1600;
/// Tokens counted per message for its role and separators.
pub const MESSAGE_OVERHEAD: u64 = 4;

#[derive(Default)]
struct Tally {
    bytes: u64,
    media: u64,
}

impl Tally {
    fn text(&mut self, s: &str) {
        self.bytes = self.bytes.saturating_add(s.len() as u64);
    }

    fn blocks(&mut self, blocks: &[InBlock<'_>], depth: u8) {
        for b in blocks {
            match b.kind.as_str() {
                "text" => self.text(b.text.as_deref().unwrap_or("")),
                "thinking" => self.text(b.thinking.as_deref().unwrap_or("")),
                "redacted_thinking" => self.text(b.data.as_deref().unwrap_or("")),
                "image" => self.media = self.media.saturating_add(1),
                "document" => match b.source.as_ref() {
                    Some(s) if s.kind == "text" => self.text(s.data.as_deref().unwrap_or("")),
                    _ => self.media = self.media.saturating_add(1),
                },
                "tool_use" => {
                    self.text(b.name.as_deref().unwrap_or(""));
                    self.text(b.input.map(|r| r.get()).unwrap_or(""));
                }
                "tool_result" => match b.content {
                    Some(raw) if depth < 2 => self.content(raw, depth + 1),
                    Some(raw) => self.text(raw.get()),
                    None => {}
                },
                // Anything else counts as its JSON (block shapes the
                // gateway does not read are still input).
                _ => {
                    self.text(b.text.as_deref().unwrap_or(""));
                    self.text(b.content.map(|r| r.get()).unwrap_or(""));
                }
            }
        }
    }

    fn content(&mut self, raw: &RawValue, depth: u8) {
        match content(raw, "content") {
            Ok(InContent::Text(t)) => self.text(&t),
            Ok(InContent::Blocks(b)) => self.blocks(&b, depth),
            Err(_) => self.text(raw.get()),
        }
    }
}

#[derive(serde::Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    content: &'a RawValue,
}

/// Estimate the input tokens of a count_tokens body (already validated by
/// [`ClientRequest::parse`]). Unknown top-level fields are a 400, as
/// Anthropic answers.
pub fn estimate(req: &ClientRequest<'_>) -> Result<u64, ApiError> {
    let known = Endpoint::CountTokens.known_params();
    if let Some(k) = req.unknown_param(known) {
        return Err(ApiError::invalid_param(
            k,
            "unknown_parameter",
            format!("{}: Extra inputs are not permitted", crate::error::echo(k)),
        ));
    }
    let mut t = Tally::default();
    let mut messages = 0u64;
    if let Some(raw) = req.field("system").filter(|r| r.get() != "null") {
        messages = messages.saturating_add(1);
        t.content(raw, 0);
    }
    if let Some(raw) = req.field("messages") {
        let turns: Vec<Turn<'_>> = serde_json::from_str(raw.get()).map_err(|_| {
            ApiError::invalid_param(
                "messages",
                "invalid_type",
                "messages: Input should be a list of messages.",
            )
        })?;
        for turn in &turns {
            messages = messages.saturating_add(1);
            t.content(turn.content, 0);
        }
    }
    for name in ["tools", "tool_choice"] {
        if let Some(raw) = req.field(name).filter(|r| r.get() != "null") {
            t.text(raw.get());
        }
    }
    Ok(t.bytes
        .div_ceil(4)
        .saturating_add(messages.saturating_mul(MESSAGE_OVERHEAD))
        .saturating_add(t.media.saturating_mul(MEDIA_TOKENS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn est(body: serde_json::Value) -> Result<u64, ApiError> {
        let bytes = serde_json::to_vec(&body).unwrap();
        let req = ClientRequest::parse(Endpoint::CountTokens, &bytes)?;
        estimate(&req)
    }

    #[test]
    fn text_messages() {
        // "Hello, world" = 12 bytes → 3 tokens, + 4 for the message.
        assert_eq!(
            est(json!({"model":"m","messages":[{"role":"user","content":"Hello, world"}]}))
                .unwrap(),
            7
        );
        // 13 bytes round up to 4 tokens; system adds its text and 4.
        assert_eq!(
            est(json!({"model":"m","system":"abcd","messages":[{"role":"user","content":[{"type":"text","text":"Hello, world!"}]}]}))
                .unwrap(),
            1 + 4 + 4 + 4
        );
    }

    #[test]
    fn media_tools_and_results() {
        let n = est(json!({"model":"m",
            "tools":[{"name":"f","input_schema":{"type":"object"}}],
            "messages":[
                {"role":"user","content":[{"type":"image","source":{"type":"url","url":"u"}},{"type":"text","text":"abcd"}]},
                {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":1}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"abcdefgh"}]}]}]}))
        .unwrap();
        let tools = r#"[{"name":"f","input_schema":{"type":"object"}}]"#.len() as u64;
        let bytes = 4 + 1 + r#"{"a":1}"#.len() as u64 + 8 + tools;
        assert_eq!(n, bytes.div_ceil(4) + 3 * 4 + 1600);
    }

    #[test]
    fn unknown_fields_rejected() {
        let e = est(json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}))
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("max_tokens"));
    }
}
