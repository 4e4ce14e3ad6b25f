//! OpenAI chat request → Anthropic Messages request.
//!
//! The body is rebuilt (Anthropic's shape differs at every level), but
//! values the gateway does not need to understand (JSON Schemas, tool
//! arguments, `cache_control`) are copied as raw JSON, byte for byte, so
//! their key order — which steers the order the model writes properties
//! in — survives.

use crate::config::Model;
use crate::error::{
    echo, invalid_value, type_error, unsupported_param, unsupported_value, ApiError,
};
use crate::providers::UnknownParams;
use crate::request::ClientRequest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// `max_tokens` when neither the client nor the model's config gives one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Smallest thinking budget Anthropic accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Name of the JSON-mode tool when the schema's own name cannot be used.
pub const JSON_TOOL: &str = "json_response";

/// `reasoning_effort` → thinking `budget_tokens`. `none` turns thinking off.
/// The budget is a ceiling, not a quota: the model often thinks less.
pub fn effort_budget(effort: &str) -> Option<Option<u64>> {
    Some(match effort {
        "none" => None,
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(16384),
        "xhigh" => Some(32768),
        _ => return None,
    })
}

/// Top-level parameters this provider takes besides OpenAI's own: the
/// `thinking` object (Anthropic's, as LiteLLM accepts it) and `top_k`.
const EXTRA_PARAMS: [&str; 2] = ["thinking", "top_k"];

/// The provider's name in `unsupported_parameter` errors.
const PROVIDER: &str = "Anthropic";

// ------------------------------------------------------------ output shape

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Content<'a>>,
    messages: Vec<OutTurn<'a>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// Unknown parameters passed on (`unknown_params: pass`), e.g. Anthropic
    /// parameters the gateway does not map.
    #[serde(flatten)]
    extra: BTreeMap<&'a str, &'a RawValue>,
}

#[derive(Serialize)]
struct Metadata {
    user_id: String,
}

#[derive(Serialize)]
struct OutTurn<'a> {
    role: &'static str,
    content: Content<'a>,
}

/// A string when the content is one plain text block, else blocks.
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(String),
    Blocks(Vec<Block<'a>>),
}

impl<'a> Content<'a> {
    fn from_blocks(mut blocks: Vec<Block<'a>>) -> Self {
        if blocks.len() == 1 {
            if let Some(Block::Text {
                cache_control: None,
                ..
            }) = blocks.first()
            {
                if let Some(Block::Text { text, .. }) = blocks.pop() {
                    return Content::Text(text);
                }
            }
        }
        Content::Blocks(blocks)
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Image {
        source: Source,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Document {
        source: Source,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Box<RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Content<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
}

impl<'a> Block<'a> {
    fn set_cache_control(&mut self, cc: &'a RawValue) {
        match self {
            Block::Text { cache_control, .. }
            | Block::Image { cache_control, .. }
            | Block::Document { cache_control, .. }
            | Block::ToolUse { cache_control, .. }
            | Block::ToolResult { cache_control, .. } => *cache_control = Some(cc),
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Serialize)]
struct OutTool<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Schema<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Schema<'a> {
    Raw(&'a RawValue),
    Value(Value),
}

#[derive(Serialize, Debug, Clone, PartialEq)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

impl ToolChoice {
    fn of(kind: &'static str) -> Self {
        ToolChoice {
            kind,
            name: None,
            disable_parallel_tool_use: None,
        }
    }
    fn tool(name: String) -> Self {
        ToolChoice {
            kind: "tool",
            name: Some(name),
            disable_parallel_tool_use: None,
        }
    }
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Thinking {
    Enabled { budget_tokens: u64 },
    Adaptive,
}

// ------------------------------------------------------------- input shape

#[derive(Deserialize)]
pub(crate) struct InMessage<'a> {
    pub(crate) role: String,
    #[serde(default, borrow)]
    pub(crate) content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) tool_calls: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) tool_call_id: Option<String>,
    #[serde(default, borrow)]
    pub(crate) thinking_blocks: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) cache_control: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) function_call: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct InPart<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) refusal: Option<String>,
    #[serde(default, borrow)]
    pub(crate) image_url: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) file: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct InImageUrl {
    pub(crate) url: String,
}

#[derive(Deserialize)]
pub(crate) struct InFile {
    #[serde(default)]
    pub(crate) file_data: Option<String>,
    #[serde(default)]
    pub(crate) file_id: Option<String>,
    /// Not used by Anthropic (documents need no name); Bedrock's do.
    #[serde(default)]
    pub(crate) filename: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct InToolCall {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) function: InFunctionCall,
}

#[derive(Deserialize)]
pub(crate) struct InFunctionCall {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) arguments: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum InThinkingBlock {
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
}

#[derive(Deserialize)]
pub(crate) struct InTool<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default, borrow)]
    pub(crate) function: Option<InFunction<'a>>,
    #[serde(default, borrow)]
    pub(crate) cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct InFunction<'a> {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default, borrow)]
    pub(crate) parameters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct InJsonSchema<'a> {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default, borrow)]
    pub(crate) schema: Option<&'a RawValue>,
}

/// The JSON-mode tool the request asks for.
pub(crate) struct JsonTool<'a> {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) schema: Option<&'a RawValue>,
}

// --------------------------------------------------------------- helpers

pub(crate) fn parse_raw<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    param: &str,
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| type_error(param, expected))
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

fn number(raw: &RawValue, param: &str) -> Result<f64, ApiError> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Number(n)) => n.as_f64().ok_or_else(|| type_error(param, "a number")),
        _ => Err(type_error(param, "a number")),
    }
}

fn uint(raw: &RawValue, param: &str) -> Result<u64, ApiError> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            invalid_value(
                param,
                format!("Invalid '{param}': must be a non-negative integer."),
            )
        }),
        _ => Err(type_error(param, "an integer")),
    }
}

/// Anthropic (and OpenAI) tool names: letters, digits, `_`, `-`, 1 to 64.
pub(crate) fn valid_tool_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// `data:<media type>;base64,<data>` → (media type, data).
pub(crate) fn data_url(url: &str) -> Option<(String, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let mut params = head.split(';');
    let media = params.next()?.trim().to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) || data.is_empty() {
        return None;
    }
    let media = if media == "image/jpg" {
        "image/jpeg".to_string()
    } else {
        media
    };
    Some((media, data))
}

// ------------------------------------------------------------ conversation

/// The turns being built: consecutive same-role messages share a turn.
#[derive(Default)]
struct Turns<'a> {
    system: Vec<Block<'a>>,
    turns: Vec<(&'static str, Vec<Block<'a>>)>,
}

impl<'a> Turns<'a> {
    fn push(&mut self, role: &'static str, blocks: Vec<Block<'a>>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }

    fn finish(self) -> (Option<Content<'a>>, Vec<OutTurn<'a>>) {
        let system = (!self.system.is_empty()).then(|| Content::from_blocks(self.system));
        let turns = self
            .turns
            .into_iter()
            .map(|(role, mut blocks)| {
                if role == "user" {
                    // Anthropic wants a user turn's tool results before
                    // anything else in it (a tool message followed by a
                    // user message is fine either way; a user message
                    // between the tool call and its results is not).
                    // Stable: the order inside each group is kept.
                    blocks.sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
                }
                OutTurn {
                    role,
                    content: Content::from_blocks(blocks),
                }
            })
            .collect();
        (system, turns)
    }
}

/// Text parts only (system, developer, tool messages): a string, or an
/// array of `text` parts.
fn text_blocks<'a>(
    raw: Option<&'a RawValue>,
    param: &str,
    role: &str,
) -> Result<Vec<Block<'a>>, ApiError> {
    let mut out = Vec::new();
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(out);
    };
    if raw.get().starts_with('"') {
        let text: String = parse_raw(raw, param, "a string or an array of content parts")?;
        if !text.is_empty() {
            out.push(Block::Text {
                text,
                cache_control: None,
            });
        }
        return Ok(out);
    }
    let parts: Vec<&RawValue> = parse_raw(raw, param, "a string or an array of content parts")?;
    for (j, p) in parts.iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let part: InPart<'_> = parse_raw(p, &pp, "a content part object")?;
        match part.kind.as_str() {
            "text" => {
                let text = part
                    .text
                    .ok_or_else(|| ApiError::missing_param(&format!("{pp}.text")))?;
                if !text.is_empty() {
                    out.push(Block::Text {
                        text,
                        cache_control: part.cache_control,
                    });
                }
            }
            other => {
                return Err(unsupported_value(
                    &pp,
                    format!(
                        "Content part type '{}' is not supported in {role} messages \
                         for Anthropic models; only 'text' is.",
                        echo(other)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// User message content: text, images, PDF files.
fn user_blocks<'a>(raw: Option<&'a RawValue>, param: &str) -> Result<Vec<Block<'a>>, ApiError> {
    let mut out = Vec::new();
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(out);
    };
    if raw.get().starts_with('"') {
        return text_blocks(Some(raw), param, "user");
    }
    let parts: Vec<&RawValue> = parse_raw(raw, param, "a string or an array of content parts")?;
    for (j, p) in parts.iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let part: InPart<'_> = parse_raw(p, &pp, "a content part object")?;
        let cache_control = part.cache_control;
        match part.kind.as_str() {
            "text" => {
                let text = part
                    .text
                    .ok_or_else(|| ApiError::missing_param(&format!("{pp}.text")))?;
                if !text.is_empty() {
                    out.push(Block::Text {
                        text,
                        cache_control,
                    });
                }
            }
            "image_url" => {
                let param = format!("{pp}.image_url");
                let raw = part
                    .image_url
                    .ok_or_else(|| ApiError::missing_param(&param))?;
                let img: InImageUrl = parse_raw(raw, &param, "an object with a 'url'")?;
                let source = if img.url.starts_with("data:") {
                    let (media_type, data) = data_url(&img.url).ok_or_else(|| {
                        invalid_value(
                            &format!("{param}.url"),
                            "Invalid image data URL: expected data:<media type>;base64,<data>.",
                        )
                    })?;
                    if !IMAGE_TYPES.contains(&media_type.as_str()) {
                        return Err(unsupported_value(
                            &format!("{param}.url"),
                            format!(
                                "Image type '{}' is not supported by Anthropic models; \
                                 use image/jpeg, image/png, image/gif or image/webp.",
                                echo(&media_type)
                            ),
                        ));
                    }
                    Source::Base64 {
                        media_type,
                        data: data.to_string(),
                    }
                } else if img.url.starts_with("https://") || img.url.starts_with("http://") {
                    Source::Url { url: img.url }
                } else {
                    return Err(invalid_value(
                        &format!("{param}.url"),
                        "Invalid image URL: expected an http(s) URL or a base64 data URL.",
                    ));
                };
                out.push(Block::Image {
                    source,
                    cache_control,
                });
            }
            "file" => {
                let param = format!("{pp}.file");
                let raw = part.file.ok_or_else(|| ApiError::missing_param(&param))?;
                let f: InFile = parse_raw(raw, &param, "an object")?;
                let pdf = f
                    .file_data
                    .as_deref()
                    .and_then(data_url)
                    .filter(|(m, _)| m == "application/pdf");
                match (pdf, f.file_id) {
                    (Some((media_type, data)), _) => out.push(Block::Document {
                        source: Source::Base64 {
                            media_type,
                            data: data.to_string(),
                        },
                        cache_control,
                    }),
                    (None, Some(_)) => {
                        return Err(unsupported_value(
                            &pp,
                            "File ids are not supported with Anthropic models: send the file \
                             inline as file_data (a base64 PDF data URL).",
                        ))
                    }
                    (None, None) => {
                        return Err(unsupported_value(
                            &pp,
                            "Only PDF files (file_data as data:application/pdf;base64,...) \
                             are supported with Anthropic models.",
                        ))
                    }
                }
            }
            other => {
                return Err(unsupported_value(
                    &pp,
                    format!(
                        "Content part type '{}' is not supported with Anthropic models.",
                        echo(other)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// An assistant message's `tool_calls` (at `p`) as `(id, name, input)`,
/// the arguments string checked to be a JSON object (`{}` when empty);
/// `provider` names the models in the errors. Shared with Bedrock.
pub(crate) fn in_tool_calls(
    raw: &RawValue,
    p: &str,
    provider: &str,
) -> Result<Vec<(String, String, Box<RawValue>)>, ApiError> {
    let calls: Vec<&RawValue> = parse_raw(raw, p, "an array of tool calls")?;
    let mut out = Vec::with_capacity(calls.len());
    for (j, c) in calls.iter().enumerate() {
        let cp = format!("{p}[{j}]");
        let call: InToolCall = parse_raw(c, &cp, "a tool call object")?;
        if call.kind.as_deref().is_some_and(|k| k != "function") {
            return Err(unsupported_value(
                &format!("{cp}.type"),
                format!("Only 'function' tool calls are supported with {provider} models."),
            ));
        }
        let id = call
            .id
            .ok_or_else(|| ApiError::missing_param(&format!("{cp}.id")))?;
        let args = call.function.arguments.unwrap_or_default();
        let args = args.trim();
        let args = if args.is_empty() { "{}" } else { args };
        let ap = format!("{cp}.function.arguments");
        let input = RawValue::from_string(args.to_string())
            .ok()
            .filter(|r| r.get().starts_with('{'))
            .ok_or_else(|| {
                invalid_value(
                    &ap,
                    format!(
                        "Invalid '{ap}': must be a JSON object encoded as a string \
                         ({provider} tool inputs are objects)."
                    ),
                )
            })?;
        out.push((id, call.function.name, input));
    }
    Ok(out)
}

fn assistant_blocks<'a>(m: &InMessage<'a>, param: &str) -> Result<Vec<Block<'a>>, ApiError> {
    let mut out = Vec::new();
    if let Some(raw) = m.thinking_blocks.filter(|r| r.get() != "null") {
        let p = format!("{param}.thinking_blocks");
        let blocks: Vec<InThinkingBlock> = parse_raw(
            raw,
            &p,
            "an array of {type: thinking, thinking, signature} or {type: redacted_thinking, data}",
        )?;
        for b in blocks {
            out.push(match b {
                InThinkingBlock::Thinking {
                    thinking,
                    signature,
                } => Block::Thinking {
                    thinking,
                    signature: signature.unwrap_or_default(),
                },
                InThinkingBlock::RedactedThinking { data } => Block::RedactedThinking { data },
            });
        }
    }
    if let Some(raw) = m.content.filter(|r| r.get() != "null") {
        let p = format!("{param}.content");
        if raw.get().starts_with('"') {
            out.extend(text_blocks(Some(raw), &p, "assistant")?);
        } else {
            let parts: Vec<&RawValue> =
                parse_raw(raw, &p, "a string or an array of content parts")?;
            for (j, part) in parts.iter().enumerate() {
                let pp = format!("{p}[{j}]");
                let part: InPart<'_> = parse_raw(part, &pp, "a content part object")?;
                let text = match part.kind.as_str() {
                    "text" => part.text,
                    "refusal" => part.refusal,
                    other => {
                        return Err(unsupported_value(
                            &pp,
                            format!(
                                "Content part type '{}' is not supported in assistant messages.",
                                echo(other)
                            ),
                        ))
                    }
                };
                let text = text.ok_or_else(|| ApiError::missing_param(&format!("{pp}.text")))?;
                if !text.is_empty() {
                    out.push(Block::Text {
                        text,
                        cache_control: part.cache_control,
                    });
                }
            }
        }
    }
    if !is_null(m.function_call) {
        return Err(unsupported_param(
            &format!("{param}.function_call"),
            PROVIDER,
        ));
    }
    if let Some(raw) = m.tool_calls.filter(|r| r.get() != "null") {
        let p = format!("{param}.tool_calls");
        for (id, name, input) in in_tool_calls(raw, &p, PROVIDER)? {
            out.push(Block::ToolUse {
                id,
                name,
                input,
                cache_control: None,
            });
        }
    }
    Ok(out)
}

fn conversation<'a>(req: &ClientRequest<'a>) -> Result<Turns<'a>, ApiError> {
    let raw = req
        .field("messages")
        .ok_or_else(|| ApiError::missing_param("messages"))?;
    let msgs: Vec<&'a RawValue> = parse_raw(raw, "messages", "an array of message objects")?;
    let mut turns = Turns::default();
    for (i, raw) in msgs.iter().enumerate() {
        let param = format!("messages[{i}]");
        let m: InMessage<'a> = parse_raw(raw, &param, "a message object")?;
        let content_param = format!("{param}.content");
        let (role, mut blocks) = match m.role.as_str() {
            "system" | "developer" => ("system", text_blocks(m.content, &content_param, "system")?),
            "user" => ("user", user_blocks(m.content, &content_param)?),
            "assistant" => ("assistant", assistant_blocks(&m, &param)?),
            "tool" => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| ApiError::missing_param(&format!("{param}.tool_call_id")))?;
                // An empty result is sent without content.
                let blocks = text_blocks(m.content, &content_param, "tool")?;
                let content = (!blocks.is_empty()).then(|| Content::from_blocks(blocks));
                (
                    "user",
                    vec![Block::ToolResult {
                        tool_use_id: id,
                        content,
                        cache_control: None,
                    }],
                )
            }
            _ => {
                return Err(unsupported_value(
                    &format!("{param}.role"),
                    "The deprecated 'function' role is not supported with Anthropic models; \
                     use tools and 'tool' messages.",
                ))
            }
        };
        // A message-level cache_control marks the message's last block.
        if let (Some(cc), Some(last)) = (m.cache_control, blocks.last_mut()) {
            if cc.get() != "null" {
                last.set_cache_control(cc);
            }
        }
        if role == "system" {
            turns.system.extend(blocks);
        } else {
            turns.push(role, blocks);
        }
    }
    if turns.turns.is_empty() {
        return Err(invalid_value(
            "messages",
            "Anthropic models need at least one non-empty user or assistant message \
             (system messages alone are not a conversation).",
        ));
    }
    Ok(turns)
}

// ------------------------------------------------------------------ tools

fn client_tools<'a>(req: &ClientRequest<'a>) -> Result<Vec<OutTool<'a>>, ApiError> {
    let Some(raw) = req.field("tools").filter(|r| r.get() != "null") else {
        return Ok(Vec::new());
    };
    let tools: Vec<&'a RawValue> = parse_raw(raw, "tools", "an array of tools")?;
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let p = format!("tools[{i}]");
        let tool: InTool<'a> = parse_raw(t, &p, "a tool object")?;
        if tool.kind != "function" {
            return Err(unsupported_value(
                &format!("{p}.type"),
                format!(
                    "Tool type '{}' is not supported with Anthropic models; only 'function' is.",
                    echo(&tool.kind)
                ),
            ));
        }
        let f = tool
            .function
            .ok_or_else(|| ApiError::missing_param(&format!("{p}.function")))?;
        out.push(OutTool {
            name: f.name,
            description: f.description,
            input_schema: match f.parameters.filter(|r| r.get() != "null") {
                Some(r) => Schema::Raw(r),
                // A function without parameters takes none.
                None => Schema::Value(serde_json::json!({"type": "object", "properties": {}})),
            },
            cache_control: tool.cache_control.filter(|r| r.get() != "null"),
        });
    }
    Ok(out)
}

/// The client's `tool_choice`, in Anthropic's terms.
fn client_tool_choice(req: &ClientRequest<'_>) -> Result<Option<ToolChoice>, ApiError> {
    let Some(raw) = req.field("tool_choice").filter(|r| r.get() != "null") else {
        return Ok(None);
    };
    let bad = || {
        invalid_value(
            "tool_choice",
            "Invalid 'tool_choice': expected 'auto', 'none', 'required' or \
             {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        )
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::of("auto"))),
            "none" => Ok(Some(ToolChoice::of("none"))),
            "required" => Ok(Some(ToolChoice::of("any"))),
            _ => Err(bad()),
        },
        Ok(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(bad());
            }
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::missing_param("tool_choice.function.name"))?;
            Ok(Some(ToolChoice::tool(name.to_string())))
        }
        _ => Err(type_error("tool_choice", "a string or an object")),
    }
}

/// Names of the client's tools, without validating the rest.
pub(crate) fn tool_names(req: &ClientRequest<'_>) -> Vec<String> {
    #[derive(Deserialize)]
    struct T {
        #[serde(default)]
        function: Option<F>,
    }
    #[derive(Deserialize)]
    struct F {
        name: String,
    }
    req.field("tools")
        .and_then(|r| serde_json::from_str::<Vec<T>>(r.get()).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| t.function.map(|f| f.name))
        .collect()
}

/// The JSON-mode tool for `response_format`, if it asks for JSON. Its name
/// is the schema's `name` when that is a valid tool name no client tool
/// uses, else `json_response`.
pub(crate) fn json_tool<'a>(req: &ClientRequest<'a>) -> Result<Option<JsonTool<'a>>, ApiError> {
    let Some(raw) = req.field("response_format").filter(|r| r.get() != "null") else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Rf<'a> {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default, borrow)]
        json_schema: Option<&'a RawValue>,
    }
    let rf: Rf<'a> = parse_raw(raw, "response_format", "an object with a 'type'")?;
    let taken = tool_names(req);
    let pick = |wanted: Option<&str>| -> Result<String, ApiError> {
        if let Some(n) = wanted.filter(|n| valid_tool_name(n) && !taken.iter().any(|t| t == n)) {
            return Ok(n.to_string());
        }
        if taken.iter().any(|t| t == JSON_TOOL) {
            return Err(unsupported_value(
                "response_format",
                format!(
                    "JSON mode uses a tool named '{JSON_TOOL}', and one of your tools \
                     already has that name."
                ),
            ));
        }
        Ok(JSON_TOOL.to_string())
    };
    const DESCRIPTION: &str = "Give your final answer by calling this tool: \
        its input is the answer, a JSON object.";
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(JsonTool {
            name: pick(None)?,
            description: DESCRIPTION.to_string(),
            schema: None,
        })),
        "json_schema" => {
            let js = rf
                .json_schema
                .ok_or_else(|| ApiError::missing_param("response_format.json_schema"))?;
            let js: InJsonSchema<'a> =
                parse_raw(js, "response_format.json_schema", "an object")?;
            Ok(Some(JsonTool {
                name: pick(js.name.as_deref())?,
                description: match js.description {
                    Some(d) => format!("{DESCRIPTION} {d}"),
                    None => DESCRIPTION.to_string(),
                },
                schema: js.schema.filter(|r| r.get() != "null"),
            }))
        }
        other => Err(invalid_value(
            "response_format.type",
            format!(
                "Invalid 'response_format.type': '{}'. Expected 'text', 'json_object' or 'json_schema'.",
                echo(other)
            ),
        )),
    }
}

/// Name of the JSON-mode tool for this request (the translator needs it to
/// turn the tool's input back into content).
pub fn json_tool_name(req: &ClientRequest<'_>) -> Option<String> {
    json_tool(req).ok().flatten().map(|j| j.name)
}

// ---------------------------------------------------------------- thinking

/// The thinking setting and the parameter it came from.
fn thinking(req: &ClientRequest<'_>) -> Result<Option<(Thinking, &'static str)>, ApiError> {
    if let Some(raw) = req.field("thinking").filter(|r| r.get() != "null") {
        let v: Value = parse_raw(raw, "thinking", "an object")?;
        return match v.get("type").and_then(Value::as_str) {
            Some("disabled") => Ok(None),
            Some("adaptive") => Ok(Some((Thinking::Adaptive, "thinking"))),
            Some("enabled") => {
                let b = v
                    .get("budget_tokens")
                    .ok_or_else(|| ApiError::missing_param("thinking.budget_tokens"))?;
                let b = b
                    .as_u64()
                    .ok_or_else(|| type_error("thinking.budget_tokens", "an integer"))?;
                if b < MIN_THINKING_BUDGET {
                    return Err(invalid_value(
                        "thinking.budget_tokens",
                        format!(
                            "Invalid 'thinking.budget_tokens': must be at least {MIN_THINKING_BUDGET}."
                        ),
                    ));
                }
                Ok(Some((Thinking::Enabled { budget_tokens: b }, "thinking")))
            }
            _ => Err(invalid_value(
                "thinking.type",
                "Invalid 'thinking.type': expected 'enabled', 'disabled' or 'adaptive'.",
            )),
        };
    }
    if let Some(raw) = req.field("reasoning_effort").filter(|r| r.get() != "null") {
        let effort: String = parse_raw(raw, "reasoning_effort", "a string")?;
        return match effort_budget(&effort) {
            Some(Some(b)) => Ok(Some((
                Thinking::Enabled { budget_tokens: b },
                "reasoning_effort",
            ))),
            Some(None) => Ok(None),
            None => Err(invalid_value(
                "reasoning_effort",
                format!(
                    "Invalid 'reasoning_effort': '{}'. Expected one of 'none', 'minimal', \
                     'low', 'medium', 'high', 'xhigh'.",
                    echo(&effort)
                ),
            )),
        };
    }
    Ok(None)
}

// ------------------------------------------------------------- translate

/// OpenAI parameters without an Anthropic equivalent, and whether a value
/// is the harmless default (accepted and ignored, as clients often send
/// `n: 1` or `presence_penalty: 0`).
fn neutral(param: &str, raw: &RawValue) -> bool {
    let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    match (param, &v) {
        (_, Value::Null) => true,
        ("n", v) => v.as_u64() == Some(1),
        ("top_logprobs", v) => v.as_u64() == Some(0),
        ("logprobs" | "store", v) => v == &Value::Bool(false),
        ("presence_penalty" | "frequency_penalty", v) => v.as_f64() == Some(0.0),
        ("logit_bias", Value::Object(o)) => o.is_empty(),
        ("modalities", Value::Array(a)) => a.iter().all(|m| m == "text"),
        ("functions", Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

const UNSUPPORTED: [&str; 15] = [
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
    "verbosity",
    "store",
];

// Accepted and ignored: `metadata` tags stored completions (`store`, which
// Anthropic does not have); `prompt_cache_key` is a routing hint for
// OpenAI's cache (Anthropic caches at `cache_control` breakpoints, which are
// passed on); `stream_options` is handled by the gateway itself.

/// Screens a request's top-level parameters. An unknown one (neither
/// OpenAI's nor in `extra_params`) is rejected, dropped or, with
/// `UnknownParams::Pass`, returned (in the request's order); then one of
/// `unsupported` that is set to something not `neutral` is rejected
/// (naming `provider`'s models) unless `drop`. Shared with Bedrock and
/// Gemini.
pub(crate) fn screen_params<'r, 'a>(
    req: &'r ClientRequest<'a>,
    extra_params: &[&str],
    unknown: UnknownParams,
    unsupported: &[&str],
    neutral: fn(&str, &RawValue) -> bool,
    drop: bool,
    provider: &str,
) -> Result<Vec<(&'r str, &'a RawValue)>, ApiError> {
    let known = req.endpoint.known_params();
    let mut passed = Vec::new();
    for (k, v) in &req.fields {
        let k = k.as_str();
        if known.contains(&k) || extra_params.contains(&k) {
            continue;
        }
        match unknown {
            UnknownParams::Reject => {
                return Err(ApiError::invalid_param(
                    k,
                    "unknown_parameter",
                    format!("Unrecognized request argument supplied: {}", echo(k)),
                ))
            }
            UnknownParams::Drop => {}
            UnknownParams::Pass => passed.push((k, *v)),
        }
    }
    for &p in unsupported {
        if let Some(raw) = req.field(p) {
            if !neutral(p, raw) && !drop {
                return Err(unsupported_param(p, provider));
            }
        }
    }
    Ok(passed)
}

/// Fields of the Anthropic body the gateway writes; a passed-on unknown
/// parameter never overrides them.
const BODY_FIELDS: [&str; 14] = [
    "model",
    "system",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "stream",
];

/// The Anthropic Messages body for `req`.
pub fn translate(
    req: &ClientRequest<'_>,
    model: &Model,
    unknown: UnknownParams,
) -> Result<Vec<u8>, ApiError> {
    let drop = model.drop_unsupported_params;
    // Parameters: unknown ones first (as OpenAI reports them), then the
    // ones Anthropic cannot honour.
    let mut extra = BTreeMap::new();
    for (k, v) in screen_params(
        req,
        &EXTRA_PARAMS,
        unknown,
        &UNSUPPORTED,
        neutral,
        drop,
        PROVIDER,
    )? {
        if !BODY_FIELDS.contains(&k) {
            extra.insert(k, v);
        }
    }

    let turns = conversation(req)?;
    let mut tools = client_tools(req)?;
    let client_choice = client_tool_choice(req)?;
    let json = json_tool(req)?;
    let thinking = thinking(req)?;

    // max_tokens (required by Anthropic).
    let requested = match req
        .field("max_completion_tokens")
        .filter(|r| r.get() != "null")
        .map(|r| (r, "max_completion_tokens"))
        .or_else(|| {
            req.field("max_tokens")
                .filter(|r| r.get() != "null")
                .map(|r| (r, "max_tokens"))
        }) {
        Some((raw, p)) => uint(raw, p)?,
        None => model
            .max_output_tokens
            .map(u64::from)
            .unwrap_or(DEFAULT_MAX_TOKENS),
    };
    let mut max_tokens = requested;
    if let Some((Thinking::Enabled { budget_tokens }, from)) = thinking {
        // Anthropic counts thinking inside max_tokens and wants the budget
        // below it; OpenAI's max_completion_tokens also counts reasoning.
        // When the requested limit leaves no room, the answer gets the
        // requested room on top of the budget (capped at the model's limit).
        if max_tokens <= budget_tokens {
            max_tokens = budget_tokens.saturating_add(requested);
            if let Some(cap) = model.max_output_tokens.map(u64::from) {
                max_tokens = max_tokens.min(cap);
            }
        }
        if budget_tokens >= max_tokens {
            return Err(invalid_value(
                from,
                format!(
                    "The thinking budget ({budget_tokens} tokens) must be below the model's \
                     output limit ({max_tokens} tokens)."
                ),
            ));
        }
    }

    // Sampling.
    let mut temperature = req.field("temperature").filter(|r| r.get() != "null");
    let mut top_p = req.field("top_p").filter(|r| r.get() != "null");
    let mut top_k = req.field("top_k").filter(|r| r.get() != "null");
    if let Some(t) = temperature {
        if number(t, "temperature")? > 1.0 {
            return Err(invalid_value(
                "temperature",
                "Invalid 'temperature': Anthropic models take 0 to 1.",
            ));
        }
    }
    if let Some(k) = top_k {
        uint(k, "top_k")?;
    }
    if let Some((_, from)) = thinking {
        // Thinking fixes sampling: temperature 1, no top_k, top_p ≥ 0.95.
        let why = |p: &str, rule: &str| {
            unsupported_value(
                p,
                format!(
                    "Unsupported value: '{p}' {rule} when extended thinking is on \
                     (set by '{from}') with Anthropic models."
                ),
            )
        };
        if let Some(t) = temperature {
            if number(t, "temperature")? != 1.0 {
                if !drop {
                    return Err(why("temperature", "must be 1 or unset"));
                }
                temperature = None;
            }
        }
        if let Some(t) = top_p {
            if number(t, "top_p")? < 0.95 {
                if !drop {
                    return Err(why("top_p", "must be at least 0.95 or unset"));
                }
                top_p = None;
            }
        }
        if top_k.is_some() {
            if !drop {
                return Err(why("top_k", "must be unset"));
            }
            top_k = None;
        }
    }

    // Tools and tool choice.
    let has_client_tools = !tools.is_empty();
    let mut choice = match (&client_choice, has_client_tools) {
        (Some(c), false) if c.kind == "any" || c.kind == "tool" => {
            return Err(invalid_value(
                "tool_choice",
                "Invalid 'tool_choice': it requires 'tools'.",
            ))
        }
        (_, false) => None,
        (c, true) => c.clone(),
    };
    if thinking.is_some()
        && choice
            .as_ref()
            .is_some_and(|c| c.kind == "any" || c.kind == "tool")
    {
        return Err(unsupported_value(
            "tool_choice",
            "Unsupported value: 'tool_choice' cannot force a tool call when extended thinking \
             is on with Anthropic models; use 'auto' or 'none'.",
        ));
    }
    if let Some(j) = json {
        // JSON mode: a tool whose input is the answer. It is forced when
        // nothing else may be called; with the client's tools the model must
        // call one of them or answer through it (`any`), or the client's
        // named tool; with thinking (which allows no forced tool) it is
        // offered with `auto`.
        choice = Some(if thinking.is_some() {
            ToolChoice::of("auto")
        } else {
            match choice {
                Some(c) if c.kind == "tool" => c,
                Some(c) if c.kind != "none" => ToolChoice::of("any"),
                None if has_client_tools => ToolChoice::of("any"),
                _ => ToolChoice::tool(j.name.clone()),
            }
        });
        tools.push(OutTool {
            name: j.name,
            description: Some(j.description),
            input_schema: match j.schema {
                Some(s) => Schema::Raw(s),
                None => Schema::Value(serde_json::json!({"type": "object"})),
            },
            cache_control: None,
        });
    }
    if !tools.is_empty() {
        if let Some(raw) = req
            .field("parallel_tool_calls")
            .filter(|r| r.get() != "null")
        {
            let parallel: bool = parse_raw(raw, "parallel_tool_calls", "a boolean")?;
            if !parallel {
                let c = choice.get_or_insert_with(|| ToolChoice::of("auto"));
                if c.kind != "none" {
                    c.disable_parallel_tool_use = Some(true);
                }
            }
        }
    }

    // Stop sequences.
    let stop_sequences = match req.field("stop").filter(|r| r.get() != "null") {
        None => Vec::new(),
        Some(raw) if raw.get().starts_with('"') => {
            vec![parse_raw::<String>(
                raw,
                "stop",
                "a string or an array of strings",
            )?]
        }
        Some(raw) => parse_raw::<Vec<String>>(raw, "stop", "a string or an array of strings")?,
    };

    // End-user id: OpenAI's `safety_identifier` (or the older `user`).
    let user = match req
        .field("safety_identifier")
        .filter(|r| r.get() != "null")
        .map(|r| (r, "safety_identifier"))
        .or_else(|| {
            req.field("user")
                .filter(|r| r.get() != "null")
                .map(|r| (r, "user"))
        }) {
        Some((raw, p)) => Some(parse_raw::<String>(raw, p, "a string")?),
        None => None,
    }
    .filter(|u| !u.is_empty());

    let service_tier = match req.field("service_tier").filter(|r| r.get() != "null") {
        None => None,
        Some(raw) => match parse_raw::<String>(raw, "service_tier", "a string")?.as_str() {
            "auto" => Some("auto"),
            "default" => Some("standard_only"),
            _ if drop => None,
            other => {
                return Err(unsupported_value(
                    "service_tier",
                    format!(
                        "Unsupported value: service tier '{}' does not exist for Anthropic \
                         models; use 'auto' or 'default'.",
                        echo(other)
                    ),
                ))
            }
        },
    };

    let (system, messages) = turns.finish();
    let body = Body {
        model: &model.upstream,
        system,
        messages,
        max_tokens,
        temperature,
        top_p,
        top_k,
        stop_sequences,
        metadata: user.map(|user_id| Metadata { user_id }),
        tools,
        tool_choice: choice,
        thinking: thinking.map(|(t, _)| t),
        service_tier,
        stream: req.stream,
        extra,
    };
    serde_json::to_vec(&body)
        .map_err(|e| ApiError::invalid(format!("The request could not be translated: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Endpoint;

    fn model(max: Option<u32>, drop: bool) -> Model {
        Model {
            name: "c".into(),
            aliases: vec![],
            provider: 0,
            upstream: "claude-x".into(),
            kind: crate::config::ModelKind::Chat,
            context_window: None,
            max_output_tokens: max,
            price: Default::default(),
            created: 0,
            drop_unsupported_params: drop,
            reserve_tokens: None,
            deployments: Vec::new(),
            strategy: Default::default(),
            fallbacks: Vec::new(),
            context_fallback: None,
        }
    }

    fn go(body: &str) -> Result<Value, ApiError> {
        go_with(body, model(None, false), UnknownParams::Reject)
    }

    fn go_with(body: &str, m: Model, u: UnknownParams) -> Result<Value, ApiError> {
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes())?;
        let out = translate(&req, &m, u)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn minimal() {
        let v = go(&format!(r#"{{"model":"c",{HI}}}"#)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"claude-x","messages":[{"role":"user","content":"hi"}],"max_tokens":4096})
        );
    }

    #[test]
    fn unknown_pass_and_drop() {
        let b = format!(r#"{{"model":"c",{HI},"top_a":1,"system":"x"}}"#);
        let e = go(&b).unwrap_err();
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref()),
            (Some("unknown_parameter"), Some("top_a"))
        );
        let v = go_with(&b, model(None, false), UnknownParams::Pass).unwrap();
        assert_eq!(v["top_a"], 1);
        assert!(v.get("system").is_none());
        let v = go_with(&b, model(None, false), UnknownParams::Drop).unwrap();
        assert!(v.get("top_a").is_none());
    }

    #[test]
    fn neutral_values_pass() {
        let v = go(&format!(
            r#"{{"model":"c",{HI},"n":1,"logprobs":false,"presence_penalty":0,"frequency_penalty":0.0,"seed":null,"modalities":["text"],"store":false,"metadata":{{"a":"b"}},"prompt_cache_key":"k"}}"#
        ))
        .unwrap();
        assert!(v.get("metadata").is_none());
        for p in [
            r#""n":2"#,
            r#""seed":1"#,
            r#""logprobs":true"#,
            r#""top_logprobs":2"#,
            r#""store":true"#,
            r#""modalities":["text","audio"]"#,
        ] {
            let e = go(&format!(r#"{{"model":"c",{HI},{p}}}"#)).unwrap_err();
            assert_eq!(e.code.as_deref(), Some("unsupported_parameter"), "{p}");
        }
    }

    #[test]
    fn thinking_budget_and_max_tokens() {
        let v = go(&format!(
            r#"{{"model":"c",{HI},"reasoning_effort":"low","max_tokens":1000}}"#
        ))
        .unwrap();
        assert_eq!(
            v["thinking"],
            serde_json::json!({"type":"enabled","budget_tokens":2048})
        );
        assert_eq!(v["max_tokens"], 3048);
        let v = go_with(
            &format!(r#"{{"model":"c",{HI},"reasoning_effort":"high"}}"#),
            model(Some(8000), false),
            UnknownParams::Reject,
        );
        assert_eq!(v.unwrap_err().param.as_deref(), Some("reasoning_effort"));
        let v = go(&format!(
            r#"{{"model":"c",{HI},"reasoning_effort":"none","temperature":0.2}}"#
        ))
        .unwrap();
        assert!(v.get("thinking").is_none());
        let e = go(&format!(
            r#"{{"model":"c",{HI},"thinking":{{"type":"enabled","budget_tokens":10}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("thinking.budget_tokens"));
        let e = go(&format!(r#"{{"model":"c",{HI},"reasoning_effort":"max"}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
        let e = go(&format!(
            r#"{{"model":"c",{HI},"reasoning_effort":"low","top_k":5}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_k"));
        let v = go_with(
            &format!(r#"{{"model":"c",{HI},"reasoning_effort":"low","top_k":5,"top_p":0.5,"temperature":1}}"#),
            model(None, true),
            UnknownParams::Reject,
        )
        .unwrap();
        assert!(v.get("top_k").is_none() && v.get("top_p").is_none());
        assert_eq!(v["temperature"], 1);
        let v = go(&format!(
            r#"{{"model":"c",{HI},"thinking":{{"type":"adaptive"}}}}"#
        ))
        .unwrap();
        assert_eq!(v["thinking"], serde_json::json!({"type":"adaptive"}));
    }

    #[test]
    fn tool_choice_rules() {
        let tools = r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}]"#;
        let v = go(&format!(
            r#"{{"model":"c",{HI},{tools},"tool_choice":"required","parallel_tool_calls":false}}"#
        ))
        .unwrap();
        assert_eq!(
            v["tool_choice"],
            serde_json::json!({"type":"any","disable_parallel_tool_use":true})
        );
        let e = go(&format!(r#"{{"model":"c",{HI},"tool_choice":"required"}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let v = go(&format!(
            r#"{{"model":"c",{HI},"tool_choice":"none","parallel_tool_calls":false}}"#
        ))
        .unwrap();
        assert!(v.get("tool_choice").is_none());
        let e = go(&format!(
            r#"{{"model":"c",{HI},{tools},"tool_choice":"required","reasoning_effort":"low"}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        // Schema key order survives.
        let body = format!(r#"{{"model":"c",{HI},{tools}}}"#);
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        let out =
            String::from_utf8(translate(&req, &model(None, false), UnknownParams::Reject).unwrap())
                .unwrap();
        assert!(
            out.contains(r#"{"type":"object","properties":{"b":{},"a":{}}}"#),
            "{out}"
        );
    }

    #[test]
    fn json_mode_with_tools_and_name_clash() {
        let tools = r#""tools":[{"type":"function","function":{"name":"answer"}}]"#;
        let v = go(&format!(
            r#"{{"model":"c",{HI},{tools},"response_format":{{"type":"json_schema","json_schema":{{"name":"answer","schema":{{"type":"object"}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(v["tools"][1]["name"], "json_response");
        assert_eq!(v["tool_choice"], serde_json::json!({"type":"any"}));
        let v = go(&format!(
            r#"{{"model":"c",{HI},"response_format":{{"type":"json_object"}},"reasoning_effort":"low"}}"#
        ))
        .unwrap();
        assert_eq!(v["tool_choice"], serde_json::json!({"type":"auto"}));
        let e = go(&format!(
            r#"{{"model":"c",{HI},"response_format":{{"type":"xml"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
    }

    #[test]
    fn message_shapes() {
        let e = go(r#"{"model":"c","messages":[{"role":"system","content":"only"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = go(r#"{"model":"c","messages":[{"role":"function","name":"f","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = go(r#"{"model":"c","messages":[{"role":"tool","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
        let e = go(r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AAAA"}}]}]}"#).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content[0].image_url.url")
        );
        let e = go(r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,AAAA"}}]}]}"#).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("invalid_value"));
        let e = go(r#"{"model":"c","messages":[{"role":"user","content":5}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = go(r#"{"model":"c","messages":[{"role":"assistant","content":"x","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        // jpg alias, empty strings skipped, message-level cache_control
        let v = go(r#"{"model":"c","messages":[{"role":"user","content":[{"type":"text","text":""},{"type":"image_url","image_url":{"url":"data:image/jpg;base64,AAAA"}}],"cache_control":{"type":"ephemeral"}}]}"#).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            serde_json::json!([{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"AAAA"},"cache_control":{"type":"ephemeral"}}])
        );
    }

    #[test]
    fn no_panic_on_odd_input() {
        let bodies = [
            r#"{"model":"c","messages":[{"role":"user","content":[null]}]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":"x"}]}]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"file","file":{}}]}]}"#,
            r#"{"model":"c","messages":[{"role":"assistant","tool_calls":[{}]}]}"#,
            r#"{"model":"c","messages":[{"role":"assistant","thinking_blocks":[{"type":"x"}]}]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function"},"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"user":5}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":-5}}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"top_k":-1}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":1,"thinking":{"type":"enabled","budget_tokens":18446744073709551615}}"#,
        ];
        for b in bodies {
            let e = go(b).unwrap_err();
            assert_eq!(e.status, 400, "{b}");
        }
    }
}
