//! OpenAI chat request → Bedrock `Converse` / `ConverseStream` body.
//!
//! The body is rebuilt (Converse's shape differs at every level: content
//! blocks are unions such as `{"text": ...}` and `{"toolUse": {...}}`,
//! sampling lives in `inferenceConfig`, tools in `toolConfig`), but values
//! the gateway does not need to understand (JSON Schemas, tool arguments,
//! image bytes) are copied as they came, so key order survives. The model
//! id and whether to stream are in the path, not the body.
//!
//! The OpenAI input shapes (`In*`), the JSON-mode tool and the
//! `reasoning_effort` budgets are the Anthropic provider's
//! ([`crate::providers::anthropic::request`]): both providers read a chat
//! request alike, and the `.wasm` holds one copy of that code.

use crate::config::Model;
use crate::error::{
    echo, invalid_value, type_error, unsupported_param, unsupported_value, ApiError,
};
use crate::providers::anthropic::request::{
    data_url, effort_budget, in_tool_calls, json_tool, json_tool_name as anthropic_json_tool_name,
    parse_raw, screen_params, InFile, InImageUrl, InMessage, InPart, InThinkingBlock, InTool,
};
use crate::providers::UnknownParams;
use crate::request::ClientRequest;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// `maxTokens` with thinking on when neither the client nor the model's
/// config gives a limit (thinking needs one above the budget).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Smallest thinking budget Claude accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Top-level parameters this provider takes besides OpenAI's own, both
/// passed in `additionalModelRequestFields`: Anthropic's `thinking` object
/// and `top_k` (Claude's and Mistral's name for it on Bedrock).
const EXTRA_PARAMS: [&str; 2] = ["thinking", "top_k"];

/// The provider's name in `unsupported_parameter` errors.
const PROVIDER: &str = "Bedrock";

// ------------------------------------------------------------ output shape

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    inference_config: InferenceConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail_config: Option<&'a Value>,
    #[serde(skip_serializing_if = "Fields::is_empty")]
    additional_model_request_fields: Fields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<ServiceTier>,
}

/// A JSON object built in order (keys are unique: the client's top-level
/// keys are, and the gateway's own are never among the passed ones).
#[derive(Default)]
pub(super) struct Fields<'a>(pub(super) Vec<(&'a str, Extra<'a>)>);

impl Fields<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Extra<'a> {
    Raw(&'a RawValue),
    Value(Value),
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
struct ServiceTier {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Turn {
    role: &'static str,
    content: Vec<Block>,
}

/// A Converse content block (a union: exactly one member is set).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block {
    Text(String),
    Image(Image),
    Document(Document),
    ToolUse(ToolUse),
    ToolResult(ToolResult),
    ReasoningContent(Reasoning),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
struct Image {
    format: String,
    source: Source,
}

#[derive(Serialize)]
struct Document {
    format: &'static str,
    name: String,
    source: Source,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Source {
    /// Base64 of the bytes (the JSON form of Bedrock's blob).
    Bytes(String),
    S3Location {
        uri: String,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    input: Box<RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult {
    tool_use_id: String,
    content: Vec<ResultText>,
}

#[derive(Serialize)]
struct ResultText {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Reasoning {
    ReasoningText {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    RedactedContent(String),
}

#[derive(Serialize)]
struct CachePoint {
    #[serde(rename = "type")]
    kind: &'static str,
}

fn cache_point() -> Block {
    Block::CachePoint(CachePoint { kind: "default" })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum OutTool<'a> {
    ToolSpec(ToolSpec<'a>),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
struct InputSchema<'a> {
    json: Extra<'a>,
}

/// Converse's tool choice union; `none` has no member (see [`translate`]).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
enum ToolChoice {
    Auto {},
    Any {},
    Tool { name: String },
}

// --------------------------------------------------------------- helpers

fn is_set(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
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

/// Converse's image `format` for a media type (`image/jpg` taken as jpeg).
fn image_format(media: &str) -> Option<&'static str> {
    Some(match media {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    })
}

/// The image format an `s3://` object's extension names.
fn s3_image_format(uri: &str) -> Option<&'static str> {
    let ext = uri.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "png",
        "jpg" | "jpeg" => "jpeg",
        "gif" => "gif",
        "webp" => "webp",
        _ => return None,
    })
}

/// A document name Bedrock accepts (letters, digits, single spaces,
/// hyphens, parentheses, square brackets; at most 200 characters): other
/// characters become `-`, `.` included (Bedrock reads a dot as an
/// extension and refuses it).
fn document_name(filename: Option<&str>, n: usize) -> String {
    let base = filename
        .map(|f| f.rsplit_once('.').map(|(b, _)| b).unwrap_or(f))
        .unwrap_or("");
    let mut out = String::new();
    for c in base.chars() {
        let c = if c.is_ascii_alphanumeric() || "-()[]".contains(c) {
            c
        } else if c == ' ' {
            if out.ends_with(' ') {
                continue;
            }
            ' '
        } else {
            '-'
        };
        if out.len() < 200 {
            out.push(c);
        }
    }
    let out = out.trim().to_string();
    if out.is_empty() {
        format!("document-{n}")
    } else {
        out
    }
}

// ------------------------------------------------------------ conversation

/// The turns being built: consecutive same-role messages share a turn.
#[derive(Default)]
struct Turns {
    system: Vec<Block>,
    turns: Vec<(&'static str, Vec<Block>)>,
    /// Tool calls or results appear (Bedrock then needs `toolConfig`).
    tool_blocks: bool,
    documents: usize,
}

impl Turns {
    fn push(&mut self, role: &'static str, blocks: Vec<Block>) {
        if blocks.iter().all(|b| matches!(b, Block::CachePoint(_))) {
            return;
        }
        match self.turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }

    fn finish(self) -> (Vec<Block>, Vec<Turn>) {
        let turns = self
            .turns
            .into_iter()
            .map(|(role, blocks)| {
                // Tool results first in a user turn (Claude requires it; a
                // tool message followed by a user message is fine either
                // way), the order inside each group kept.
                let (mut content, rest): (Vec<Block>, Vec<Block>) = blocks
                    .into_iter()
                    .partition(|b| matches!(b, Block::ToolResult(_)));
                content.extend(rest);
                Turn { role, content }
            })
            .collect();
        (self.system, turns)
    }
}

/// `cache_control` on a part or a message (`{"type": "ephemeral"}`, as
/// Anthropic's API and LiteLLM take it) → a `cachePoint` after it.
fn wants_cache(cc: Option<&RawValue>) -> bool {
    is_set(cc).is_some()
}

/// Text parts only (system, developer, tool messages): a string, or an
/// array of `text` parts.
fn text_blocks(raw: Option<&RawValue>, param: &str, role: &str) -> Result<Vec<Block>, ApiError> {
    let mut out = Vec::new();
    let Some(raw) = is_set(raw) else {
        return Ok(out);
    };
    if raw.get().starts_with('"') {
        let text: String = parse_raw(raw, param, "a string or an array of content parts")?;
        if !text.is_empty() {
            out.push(Block::Text(text));
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
                    out.push(Block::Text(text));
                    if wants_cache(part.cache_control) {
                        out.push(cache_point());
                    }
                }
            }
            other => {
                return Err(unsupported_value(
                    &pp,
                    format!(
                        "Content part type '{}' is not supported in {role} messages \
                         for Bedrock models; only 'text' is.",
                        echo(other)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// One `image_url` part.
fn image_block(raw: Option<&RawValue>, param: &str) -> Result<Block, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::missing_param(param))?;
    let img: InImageUrl = parse_raw(raw, param, "an object with a 'url'")?;
    let up = format!("{param}.url");
    if img.url.starts_with("data:") {
        let (media, data) = data_url(&img.url).ok_or_else(|| {
            invalid_value(
                &up,
                "Invalid image data URL: expected data:<media type>;base64,<data>.",
            )
        })?;
        let format = image_format(&media).ok_or_else(|| {
            unsupported_value(
                &up,
                format!(
                    "Image type '{}' is not supported by Bedrock models; use image/jpeg, \
                     image/png, image/gif or image/webp.",
                    echo(&media)
                ),
            )
        })?;
        return Ok(Block::Image(Image {
            format: format.to_string(),
            source: Source::Bytes(data.to_string()),
        }));
    }
    if img.url.starts_with("s3://") {
        let format = s3_image_format(&img.url).ok_or_else(|| {
            unsupported_value(
                &up,
                "The image format of an s3:// URL is read from its extension: use .png, \
                 .jpg, .jpeg, .gif or .webp.",
            )
        })?;
        return Ok(Block::Image(Image {
            format: format.to_string(),
            source: Source::S3Location { uri: img.url },
        }));
    }
    if img.url.starts_with("https://") || img.url.starts_with("http://") {
        return Err(unsupported_value(
            &up,
            "Image URLs are not supported by Bedrock models, which take the image's bytes \
             or an S3 object: send a base64 data URL (data:image/png;base64,...) or an \
             s3:// URL.",
        ));
    }
    Err(invalid_value(
        &up,
        "Invalid image URL: expected a base64 data URL or an s3:// URL.",
    ))
}

/// User message content: text, images, PDF files.
fn user_blocks(
    raw: Option<&RawValue>,
    param: &str,
    documents: &mut usize,
) -> Result<Vec<Block>, ApiError> {
    let Some(raw) = is_set(raw) else {
        return Ok(Vec::new());
    };
    if raw.get().starts_with('"') {
        return text_blocks(Some(raw), param, "user");
    }
    let mut out = Vec::new();
    let parts: Vec<&RawValue> = parse_raw(raw, param, "a string or an array of content parts")?;
    for (j, p) in parts.iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let part: InPart<'_> = parse_raw(p, &pp, "a content part object")?;
        let block = match part.kind.as_str() {
            "text" => {
                let text = part
                    .text
                    .ok_or_else(|| ApiError::missing_param(&format!("{pp}.text")))?;
                if text.is_empty() {
                    continue;
                }
                Block::Text(text)
            }
            "image_url" => image_block(part.image_url, &format!("{pp}.image_url"))?,
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
                    (Some((_, data)), _) => {
                        *documents += 1;
                        Block::Document(Document {
                            format: "pdf",
                            name: document_name(f.filename.as_deref(), *documents),
                            source: Source::Bytes(data.to_string()),
                        })
                    }
                    (None, Some(_)) => {
                        return Err(unsupported_value(
                            &pp,
                            "File ids are not supported with Bedrock models: send the file \
                             inline as file_data (a base64 PDF data URL).",
                        ))
                    }
                    (None, None) => {
                        return Err(unsupported_value(
                            &pp,
                            "Only PDF files (file_data as data:application/pdf;base64,...) \
                             are supported with Bedrock models.",
                        ))
                    }
                }
            }
            other => {
                return Err(unsupported_value(
                    &pp,
                    format!(
                        "Content part type '{}' is not supported with Bedrock models.",
                        echo(other)
                    ),
                ))
            }
        };
        out.push(block);
        if wants_cache(part.cache_control) {
            out.push(cache_point());
        }
    }
    Ok(out)
}

fn assistant_blocks(m: &InMessage<'_>, param: &str) -> Result<Vec<Block>, ApiError> {
    let mut out = Vec::new();
    if let Some(raw) = is_set(m.thinking_blocks) {
        let p = format!("{param}.thinking_blocks");
        let blocks: Vec<InThinkingBlock> = parse_raw(
            raw,
            &p,
            "an array of {type: thinking, thinking, signature} or {type: redacted_thinking, data}",
        )?;
        for b in blocks {
            out.push(Block::ReasoningContent(match b {
                InThinkingBlock::Thinking {
                    thinking,
                    signature,
                } => Reasoning::ReasoningText {
                    text: thinking,
                    signature: signature.filter(|s| !s.is_empty()),
                },
                InThinkingBlock::RedactedThinking { data } => Reasoning::RedactedContent(data),
            }));
        }
    }
    if let Some(raw) = is_set(m.content) {
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
                    out.push(Block::Text(text));
                    if wants_cache(part.cache_control) {
                        out.push(cache_point());
                    }
                }
            }
        }
    }
    if is_set(m.function_call).is_some() {
        return Err(unsupported_param(
            &format!("{param}.function_call"),
            PROVIDER,
        ));
    }
    if let Some(raw) = is_set(m.tool_calls) {
        let p = format!("{param}.tool_calls");
        for (id, name, input) in in_tool_calls(raw, &p, PROVIDER)? {
            out.push(Block::ToolUse(ToolUse {
                tool_use_id: id,
                name,
                input,
            }));
        }
    }
    Ok(out)
}

fn conversation(req: &ClientRequest<'_>) -> Result<Turns, ApiError> {
    let raw = req
        .field("messages")
        .ok_or_else(|| ApiError::missing_param("messages"))?;
    let msgs: Vec<&RawValue> = parse_raw(raw, "messages", "an array of message objects")?;
    let mut turns = Turns::default();
    for (i, raw) in msgs.iter().enumerate() {
        let param = format!("messages[{i}]");
        let m: InMessage<'_> = parse_raw(raw, &param, "a message object")?;
        let content_param = format!("{param}.content");
        let (role, mut blocks) = match m.role.as_str() {
            "system" | "developer" => ("system", text_blocks(m.content, &content_param, "system")?),
            "user" => (
                "user",
                user_blocks(m.content, &content_param, &mut turns.documents)?,
            ),
            "assistant" => ("assistant", assistant_blocks(&m, &param)?),
            "tool" => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| ApiError::missing_param(&format!("{param}.tool_call_id")))?;
                // The result's text, as the client wrote it (an empty
                // result is an empty content list).
                let content = text_blocks(m.content, &content_param, "tool")?
                    .into_iter()
                    .filter_map(|b| match b {
                        Block::Text(text) => Some(ResultText { text }),
                        _ => None,
                    })
                    .collect();
                (
                    "user",
                    vec![Block::ToolResult(ToolResult {
                        tool_use_id: id,
                        content,
                    })],
                )
            }
            _ => {
                return Err(unsupported_value(
                    &format!("{param}.role"),
                    "The deprecated 'function' role is not supported with Bedrock models; \
                     use tools and 'tool' messages.",
                ))
            }
        };
        if blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse(_) | Block::ToolResult(_)))
        {
            turns.tool_blocks = true;
        }
        // A message-level cache_control marks the end of the message.
        if wants_cache(m.cache_control)
            && !blocks.is_empty()
            && !matches!(blocks.last(), Some(Block::CachePoint(_)))
        {
            blocks.push(cache_point());
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
            "Bedrock models need at least one non-empty user or assistant message \
             (system messages alone are not a conversation).",
        ));
    }
    Ok(turns)
}

// ------------------------------------------------------------------ tools

fn client_tools<'a>(req: &ClientRequest<'a>) -> Result<Vec<OutTool<'a>>, ApiError> {
    let Some(raw) = is_set(req.field("tools")) else {
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
                    "Tool type '{}' is not supported with Bedrock models; only 'function' is.",
                    echo(&tool.kind)
                ),
            ));
        }
        let f = tool
            .function
            .ok_or_else(|| ApiError::missing_param(&format!("{p}.function")))?;
        out.push(OutTool::ToolSpec(ToolSpec {
            name: f.name,
            // Bedrock refuses an empty description.
            description: f.description.filter(|d| !d.is_empty()),
            input_schema: InputSchema {
                json: match is_set(f.parameters) {
                    Some(r) => Extra::Raw(r),
                    // A function without parameters takes none.
                    None => Extra::Value(serde_json::json!({"type": "object", "properties": {}})),
                },
            },
        }));
        if wants_cache(tool.cache_control) {
            out.push(OutTool::CachePoint(CachePoint { kind: "default" }));
        }
    }
    Ok(out)
}

/// The client's `tool_choice`: `None` when absent, `Some(None)` for
/// `none`.
fn client_tool_choice(req: &ClientRequest<'_>) -> Result<Option<Option<ToolChoice>>, ApiError> {
    let Some(raw) = is_set(req.field("tool_choice")) else {
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
            "auto" => Ok(Some(Some(ToolChoice::Auto {}))),
            "none" => Ok(Some(None)),
            "required" => Ok(Some(Some(ToolChoice::Any {}))),
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
            Ok(Some(Some(ToolChoice::Tool {
                name: name.to_string(),
            })))
        }
        _ => Err(type_error("tool_choice", "a string or an object")),
    }
}

/// Name of the JSON-mode tool for this request (the translator needs it to
/// turn the tool's input back into content): the Anthropic provider's rule.
pub fn json_tool_name(req: &ClientRequest<'_>) -> Option<String> {
    anthropic_json_tool_name(req)
}

// ---------------------------------------------------------------- thinking

/// Whether the upstream model id names an Anthropic Claude model (a
/// foundation model id, a cross-region profile such as
/// `us.anthropic.claude-…`, or an ARN that contains one).
fn is_claude(model_id: &str) -> bool {
    let id = model_id.to_ascii_lowercase();
    id.contains("anthropic.") || id.contains("claude")
}

/// Claude's `thinking` object for `additionalModelRequestFields`, its
/// budget (0 when it sets none) and the parameter it came from.
fn thinking(
    req: &ClientRequest<'_>,
    model: &Model,
) -> Result<Option<(Value, u64, &'static str)>, ApiError> {
    if let Some(raw) = is_set(req.field("thinking")) {
        let v: Value = parse_raw(raw, "thinking", "an object")?;
        return match v.get("type").and_then(Value::as_str) {
            Some("disabled") => Ok(Some((v.clone(), 0, "thinking"))),
            Some("adaptive") => Ok(Some((v.clone(), 0, "thinking"))),
            Some("enabled") => {
                let b = v
                    .get("budget_tokens")
                    .ok_or_else(|| ApiError::missing_param("thinking.budget_tokens"))?
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
                Ok(Some((
                    serde_json::json!({"type": "enabled", "budget_tokens": b}),
                    b,
                    "thinking",
                )))
            }
            _ => Err(invalid_value(
                "thinking.type",
                "Invalid 'thinking.type': expected 'enabled', 'disabled' or 'adaptive'.",
            )),
        };
    }
    if let Some(raw) = is_set(req.field("reasoning_effort")) {
        let effort: String = parse_raw(raw, "reasoning_effort", "a string")?;
        let budget = effort_budget(&effort).ok_or_else(|| {
            invalid_value(
                "reasoning_effort",
                format!(
                    "Invalid 'reasoning_effort': '{}'. Expected one of 'none', 'minimal', \
                     'low', 'medium', 'high', 'xhigh'.",
                    echo(&effort)
                ),
            )
        })?;
        let Some(b) = budget else {
            return Ok(None);
        };
        if !is_claude(&model.upstream) {
            if model.drop_unsupported_params {
                return Ok(None);
            }
            return Err(unsupported_value(
                "reasoning_effort",
                "Unsupported value: the gateway maps 'reasoning_effort' to Claude's thinking \
                 on Bedrock, and this model is not a Claude model id. Remove it, or set \
                 drop_unsupported_params on the model in the gateway's config.",
            ));
        }
        return Ok(Some((
            serde_json::json!({"type": "enabled", "budget_tokens": b}),
            b,
            "reasoning_effort",
        )));
    }
    Ok(None)
}

// ------------------------------------------------------------- translate

/// OpenAI parameters without a Converse equivalent, and whether a value is
/// the harmless default (accepted and ignored, as clients often send `n: 1`
/// or `presence_penalty: 0`).
fn neutral(param: &str, raw: &RawValue) -> bool {
    let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    match (param, &v) {
        (_, Value::Null) => true,
        ("n", v) => v.as_u64() == Some(1),
        ("top_logprobs", v) => v.as_u64() == Some(0),
        ("logprobs" | "store", v) => v == &Value::Bool(false),
        ("parallel_tool_calls", v) => v == &Value::Bool(true),
        ("presence_penalty" | "frequency_penalty", v) => v.as_f64() == Some(0.0),
        ("logit_bias", Value::Object(o)) => o.is_empty(),
        ("modalities", Value::Array(a)) => a.iter().all(|m| m == "text"),
        ("functions", Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

const UNSUPPORTED: [&str; 16] = [
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
    "parallel_tool_calls",
];

// Accepted and ignored: `metadata` (tags for OpenAI's stored completions),
// `prompt_cache_key` (OpenAI's cache routing hint; Bedrock caches at
// `cachePoint`s, which `cache_control` sets), `user` / `safety_identifier`
// (Converse has no end-user field; `requestMetadata` is for invocation
// logs and takes a restricted character set), `stream_options` (the
// gateway's own).

/// The `Converse` body for `req`. `guardrail` is the provider's
/// `guardrailConfig`, if it has one.
pub fn translate(
    req: &ClientRequest<'_>,
    model: &Model,
    unknown: UnknownParams,
    guardrail: Option<&Value>,
) -> Result<Vec<u8>, ApiError> {
    let drop = model.drop_unsupported_params;
    // Parameters: unknown ones first (as OpenAI reports them), then the
    // ones Bedrock cannot honour. `pass` sends unknown ones to the model
    // in `additionalModelRequestFields`.
    let mut extra = Fields::default();
    for (k, v) in screen_params(
        req,
        &EXTRA_PARAMS,
        unknown,
        &UNSUPPORTED,
        neutral,
        drop,
        PROVIDER,
    )? {
        extra.0.push((k, Extra::Raw(v)));
    }

    let turns = conversation(req)?;
    let mut tools = client_tools(req)?;
    let client_choice = client_tool_choice(req)?;
    let json = json_tool(req)?;
    let (thinking, budget, thinking_from) = match thinking(req, model)? {
        Some((t, b, from)) => (Some(t), b, from),
        None => (None, 0, "thinking"),
    };

    // maxTokens: the client's, else the model's configured limit, else
    // Bedrock's default for the model. With a thinking budget it must be
    // above the budget (both count thinking, like OpenAI's
    // max_completion_tokens): when it is not, it becomes budget + the
    // requested value, capped at the model's max_output_tokens.
    let requested = match is_set(req.field("max_completion_tokens"))
        .map(|r| (r, "max_completion_tokens"))
        .or_else(|| is_set(req.field("max_tokens")).map(|r| (r, "max_tokens")))
    {
        Some((raw, p)) => Some(uint(raw, p)?),
        None => model.max_output_tokens.map(u64::from),
    };
    let mut max_tokens = requested;
    if budget > 0 {
        let from = thinking_from;
        let want = requested.unwrap_or(DEFAULT_MAX_TOKENS);
        let mut m = want;
        if m <= budget {
            m = budget.saturating_add(want);
            if let Some(cap) = model.max_output_tokens.map(u64::from) {
                m = m.min(cap);
            }
        }
        if budget >= m {
            return Err(invalid_value(
                from,
                format!(
                    "The thinking budget ({budget} tokens) must be below the model's \
                     output limit ({m} tokens)."
                ),
            ));
        }
        max_tokens = Some(m);
    }

    // Sampling: Bedrock takes temperature 0 to 1.
    let temperature = is_set(req.field("temperature"));
    if let Some(t) = temperature {
        if number(t, "temperature")? > 1.0 {
            return Err(invalid_value(
                "temperature",
                "Invalid 'temperature': Bedrock models take 0 to 1.",
            ));
        }
    }
    let top_p = is_set(req.field("top_p"));
    if let Some(k) = is_set(req.field("top_k")) {
        uint(k, "top_k")?;
        extra.0.push(("top_k", Extra::Raw(k)));
    }

    // Tools and tool choice. Converse has no `none`: without tool calls in
    // the conversation the tools are left out; with them Bedrock requires
    // `toolConfig`, so the tools stay, without a choice (the model decides:
    // best effort).
    let has_client_tools = !tools.is_empty();
    let none = matches!(client_choice, Some(None));
    let mut choice = match (&client_choice, has_client_tools) {
        (Some(Some(ToolChoice::Any {} | ToolChoice::Tool { .. })), false) => {
            return Err(invalid_value(
                "tool_choice",
                "Invalid 'tool_choice': it requires 'tools'.",
            ))
        }
        (_, false) | (Some(None), true) => None,
        (Some(Some(c)), true) => Some(c.clone()),
        (None, true) => None,
    };
    let forcing =
        |c: &Option<ToolChoice>| matches!(c, Some(ToolChoice::Any {} | ToolChoice::Tool { .. }));
    if budget > 0 && forcing(&choice) {
        return Err(unsupported_value(
            "tool_choice",
            "Unsupported value: 'tool_choice' cannot force a tool call when extended thinking \
             is on with Claude models; use 'auto' or 'none'.",
        ));
    }
    if none && !turns.tool_blocks {
        tools.clear();
    }
    if let Some(j) = json {
        // JSON mode: a tool whose input is the answer. It is forced when
        // nothing else may be called; with the client's tools the model must
        // call one of them or answer through it (`any`), or the client's
        // named tool; with thinking (which allows no forced tool) it is
        // offered with `auto`.
        choice = Some(if budget > 0 {
            ToolChoice::Auto {}
        } else {
            match choice {
                Some(c @ ToolChoice::Tool { .. }) => c,
                Some(_) => ToolChoice::Any {},
                None if has_client_tools && !none => ToolChoice::Any {},
                None => ToolChoice::Tool {
                    name: j.name.clone(),
                },
            }
        });
        tools.push(OutTool::ToolSpec(ToolSpec {
            name: j.name,
            description: Some(j.description),
            input_schema: InputSchema {
                json: match j.schema {
                    Some(s) => Extra::Raw(s),
                    None => Extra::Value(serde_json::json!({"type": "object"})),
                },
            },
        }));
    }
    if turns.tool_blocks && tools.is_empty() {
        return Err(invalid_value(
            "tools",
            "This conversation has tool calls or tool results, and Bedrock then needs the \
             tools' definitions: send 'tools' with the request.",
        ));
    }
    if let Some(t) = thinking {
        extra.0.push(("thinking", Extra::Value(t)));
    }
    let tool_config = (!tools.is_empty()).then_some(ToolConfig {
        tools,
        tool_choice: choice,
    });

    // Stop sequences.
    let stop_sequences = match is_set(req.field("stop")) {
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

    let service_tier = match is_set(req.field("service_tier")) {
        None => None,
        Some(raw) => match parse_raw::<String>(raw, "service_tier", "a string")?.as_str() {
            "auto" => None,
            "default" => Some(ServiceTier { kind: "default" }),
            "flex" => Some(ServiceTier { kind: "flex" }),
            "priority" => Some(ServiceTier { kind: "priority" }),
            _ if drop => None,
            other => {
                return Err(unsupported_value(
                    "service_tier",
                    format!(
                        "Unsupported value: service tier '{}' does not exist on Bedrock; use \
                         'auto', 'default', 'flex' or 'priority'.",
                        echo(other)
                    ),
                ))
            }
        },
    };

    let (system, messages) = turns.finish();
    let body = Body {
        messages,
        system,
        inference_config: InferenceConfig {
            max_tokens,
            temperature,
            top_p,
            stop_sequences,
        },
        tool_config,
        guardrail_config: guardrail,
        additional_model_request_fields: extra,
        service_tier,
    };
    serde_json::to_vec(&body)
        .map_err(|e| ApiError::invalid(format!("The request could not be translated: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Endpoint;

    fn model(upstream: &str, max: Option<u32>, drop: bool) -> Model {
        Model {
            name: "c".into(),
            aliases: vec![],
            provider: 0,
            upstream: upstream.into(),
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

    const CLAUDE: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

    fn go(body: &str) -> Result<Value, ApiError> {
        go_with(body, model(CLAUDE, None, false), UnknownParams::Reject)
    }

    fn go_with(body: &str, m: Model, u: UnknownParams) -> Result<Value, ApiError> {
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes())?;
        let out = translate(&req, &m, u, None)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn minimal() {
        let v = go(&format!(r#"{{"model":"c",{HI}}}"#)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"messages":[{"role":"user","content":[{"text":"hi"}]}]})
        );
        let v = go_with(
            &format!(
                r#"{{"model":"c",{HI},"max_tokens":5,"temperature":0.5,"top_p":0.9,"stop":"x"}}"#
            ),
            model("meta.llama3", Some(100), false),
            UnknownParams::Reject,
        )
        .unwrap();
        assert_eq!(
            v["inferenceConfig"],
            serde_json::json!({"maxTokens":5,"temperature":0.5,"topP":0.9,"stopSequences":["x"]})
        );
        let v = go_with(
            &format!(r#"{{"model":"c",{HI}}}"#),
            model("meta.llama3", Some(100), false),
            UnknownParams::Reject,
        )
        .unwrap();
        assert_eq!(v["inferenceConfig"], serde_json::json!({"maxTokens":100}));
    }

    #[test]
    fn unknown_pass_drop_and_extensions() {
        let b = format!(r#"{{"model":"c",{HI},"top_a":1}}"#);
        let e = go(&b).unwrap_err();
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref()),
            (Some("unknown_parameter"), Some("top_a"))
        );
        let v = go_with(&b, model(CLAUDE, None, false), UnknownParams::Pass).unwrap();
        assert_eq!(v["additionalModelRequestFields"]["top_a"], 1);
        let v = go_with(&b, model(CLAUDE, None, false), UnknownParams::Drop).unwrap();
        assert!(v.get("additionalModelRequestFields").is_none());
        let v = go(&format!(r#"{{"model":"c",{HI},"top_k":5}}"#)).unwrap();
        assert_eq!(
            v["additionalModelRequestFields"],
            serde_json::json!({"top_k":5})
        );
        let e = go(&format!(r#"{{"model":"c",{HI},"temperature":1.5}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }

    #[test]
    fn unsupported_and_neutral() {
        go(&format!(
            r#"{{"model":"c",{HI},"n":1,"logprobs":false,"presence_penalty":0,"seed":null,"parallel_tool_calls":true,"store":false,"metadata":{{"a":"b"}},"user":"u","prompt_cache_key":"k"}}"#
        ))
        .unwrap();
        for p in [
            r#""n":2"#,
            r#""seed":1"#,
            r#""logprobs":true"#,
            r#""parallel_tool_calls":false"#,
            r#""store":true"#,
        ] {
            let e = go(&format!(r#"{{"model":"c",{HI},{p}}}"#)).unwrap_err();
            assert_eq!(e.code.as_deref(), Some("unsupported_parameter"), "{p}");
        }
        let v = go_with(
            &format!(r#"{{"model":"c",{HI},"seed":1,"service_tier":"scale"}}"#),
            model(CLAUDE, None, true),
            UnknownParams::Reject,
        )
        .unwrap();
        assert!(v.get("serviceTier").is_none());
        let v = go(&format!(r#"{{"model":"c",{HI},"service_tier":"flex"}}"#)).unwrap();
        assert_eq!(v["serviceTier"], serde_json::json!({"type":"flex"}));
    }

    #[test]
    fn thinking_budget_and_max_tokens() {
        let v = go(&format!(
            r#"{{"model":"c",{HI},"reasoning_effort":"low","max_tokens":1000}}"#
        ))
        .unwrap();
        assert_eq!(
            v["additionalModelRequestFields"]["thinking"],
            serde_json::json!({"type":"enabled","budget_tokens":2048})
        );
        assert_eq!(v["inferenceConfig"]["maxTokens"], 3048);
        let v = go(&format!(
            r#"{{"model":"c",{HI},"reasoning_effort":"medium"}}"#
        ))
        .unwrap();
        assert_eq!(v["inferenceConfig"]["maxTokens"], 12288);
        let e = go_with(
            &format!(r#"{{"model":"c",{HI},"reasoning_effort":"high"}}"#),
            model(CLAUDE, Some(8000), false),
            UnknownParams::Reject,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
        let e = go_with(
            &format!(r#"{{"model":"c",{HI},"reasoning_effort":"low"}}"#),
            model("amazon.nova-pro-v1:0", None, false),
            UnknownParams::Reject,
        )
        .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("unsupported_value"));
        let v = go_with(
            &format!(r#"{{"model":"c",{HI},"reasoning_effort":"low"}}"#),
            model("amazon.nova-pro-v1:0", None, true),
            UnknownParams::Reject,
        )
        .unwrap();
        assert!(v.get("additionalModelRequestFields").is_none());
        let v = go(&format!(
            r#"{{"model":"c",{HI},"reasoning_effort":"none"}}"#
        ))
        .unwrap();
        assert!(v.get("additionalModelRequestFields").is_none());
        let v = go(&format!(
            r#"{{"model":"c",{HI},"thinking":{{"type":"adaptive"}}}}"#
        ))
        .unwrap();
        assert_eq!(
            v["additionalModelRequestFields"]["thinking"],
            serde_json::json!({"type":"adaptive"})
        );
        let e = go(&format!(
            r#"{{"model":"c",{HI},"thinking":{{"type":"enabled","budget_tokens":10}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("thinking.budget_tokens"));
    }

    const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"f","description":"","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}]"#;

    #[test]
    fn tools_and_choices() {
        let v = go(&format!(
            r#"{{"model":"c",{HI},{TOOLS},"tool_choice":"required"}}"#
        ))
        .unwrap();
        assert_eq!(
            v["toolConfig"],
            serde_json::json!({"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object","properties":{"b":{},"a":{}}}}}}],"toolChoice":{"any":{}}})
        );
        let v = go(&format!(
            r#"{{"model":"c",{HI},{TOOLS},"tool_choice":{{"type":"function","function":{{"name":"f"}}}}}}"#
        ))
        .unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"tool":{"name":"f"}})
        );
        let v = go(&format!(
            r#"{{"model":"c",{HI},{TOOLS},"tool_choice":"none"}}"#
        ))
        .unwrap();
        assert!(v.get("toolConfig").is_none());
        let e = go(&format!(r#"{{"model":"c",{HI},"tool_choice":"required"}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = go(&format!(
            r#"{{"model":"c",{HI},{TOOLS},"tool_choice":"required","reasoning_effort":"low"}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        // Key order of the schema survives.
        let body = format!(r#"{{"model":"c",{HI},{TOOLS}}}"#);
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        let out = String::from_utf8(
            translate(
                &req,
                &model(CLAUDE, None, false),
                UnknownParams::Reject,
                None,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(
            out.contains(r#"{"type":"object","properties":{"b":{},"a":{}}}"#),
            "{out}"
        );
    }

    #[test]
    fn none_with_tool_history_keeps_the_tools() {
        let msgs = r#""messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"t1","content":"42"}]"#;
        let v = go(&format!(
            r#"{{"model":"c",{msgs},{TOOLS},"tool_choice":"none"}}"#
        ))
        .unwrap();
        assert!(v["toolConfig"].get("toolChoice").is_none());
        assert_eq!(v["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
        let e = go(&format!(r#"{{"model":"c",{msgs}}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
    }

    #[test]
    fn json_mode() {
        let v = go(&format!(
            r#"{{"model":"c",{HI},"response_format":{{"type":"json_schema","json_schema":{{"name":"answer","schema":{{"type":"object"}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"tool":{"name":"answer"}})
        );
        let v = go(&format!(
            r#"{{"model":"c",{HI},{TOOLS},"response_format":{{"type":"json_object"}}}}"#
        ))
        .unwrap();
        assert_eq!(v["toolConfig"]["toolChoice"], serde_json::json!({"any":{}}));
        assert_eq!(
            v["toolConfig"]["tools"][1]["toolSpec"]["name"],
            "json_response"
        );
        let v = go(&format!(
            r#"{{"model":"c",{HI},{TOOLS},"tool_choice":"none","response_format":{{"type":"json_object"}}}}"#
        ))
        .unwrap();
        assert_eq!(v["toolConfig"]["tools"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"tool":{"name":"json_response"}})
        );
        let v = go(&format!(
            r#"{{"model":"c",{HI},"response_format":{{"type":"json_object"}},"reasoning_effort":"low"}}"#
        ))
        .unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"auto":{}})
        );
        let e = go(&format!(
            r#"{{"model":"c",{HI},"response_format":{{"type":"xml"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
    }

    #[test]
    fn message_shapes() {
        let v = go(r#"{"model":"c","messages":[{"role":"system","content":"s","cache_control":{"type":"ephemeral"}},{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"type":"image_url","image_url":{"url":"data:image/jpg;base64,AAAA"}},{"type":"image_url","image_url":{"url":"s3://b/k.PNG"}},{"type":"file","file":{"filename":"report 2024.pdf","file_data":"data:application/pdf;base64,JVBE"}}]},{"role":"user","content":"b"},{"role":"assistant","content":"c","thinking_blocks":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"redacted_thinking","data":"r"}]}]}"#).unwrap();
        assert_eq!(
            v["system"],
            serde_json::json!([{"text":"s"},{"cachePoint":{"type":"default"}}])
        );
        assert_eq!(
            v["messages"],
            serde_json::json!([
                {"role":"user","content":[
                    {"text":"a"},{"cachePoint":{"type":"default"}},
                    {"image":{"format":"jpeg","source":{"bytes":"AAAA"}}},
                    {"image":{"format":"png","source":{"s3Location":{"uri":"s3://b/k.PNG"}}}},
                    {"document":{"format":"pdf","name":"report 2024","source":{"bytes":"JVBE"}}},
                    {"text":"b"}]},
                {"role":"assistant","content":[
                    {"reasoningContent":{"reasoningText":{"text":"t","signature":"s"}}},
                    {"reasoningContent":{"redactedContent":"r"}},
                    {"text":"c"}]}
            ])
        );
        for (body, param) in [
            (
                r#"{"model":"c","messages":[{"role":"system","content":"only"}]}"#,
                "messages",
            ),
            (
                r#"{"model":"c","messages":[{"role":"function","name":"f","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"c","messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
                "messages[0].content[0].image_url.url",
            ),
            (
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AA"}}]}]}"#,
                "messages[0].content[0].image_url.url",
            ),
            (
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"s3://b/k"}}]}]}"#,
                "messages[0].content[0].image_url.url",
            ),
            (
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#,
                "messages[0].content[0]",
            ),
            (
                r#"{"model":"c","messages":[{"role":"assistant","content":"x","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#,
                "messages[0].tool_calls[0].function.arguments",
            ),
        ] {
            let e = go(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn tool_results_first_and_merged() {
        let v = go(&format!(
            r#"{{"model":"c",{TOOLS},"messages":[{{"role":"user","content":"q"}},{{"role":"assistant","content":"","tool_calls":[{{"id":"a","type":"function","function":{{"name":"f","arguments":""}}}},{{"id":"b","type":"function","function":{{"name":"f","arguments":"{{\"x\":1}}"}}}}]}},{{"role":"tool","tool_call_id":"a","content":"1"}},{{"role":"user","content":"and?"}},{{"role":"tool","tool_call_id":"b","content":""}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            v["messages"],
            serde_json::json!([
                {"role":"user","content":[{"text":"q"}]},
                {"role":"assistant","content":[
                    {"toolUse":{"toolUseId":"a","name":"f","input":{}}},
                    {"toolUse":{"toolUseId":"b","name":"f","input":{"x":1}}}]},
                {"role":"user","content":[
                    {"toolResult":{"toolUseId":"a","content":[{"text":"1"}]}},
                    {"toolResult":{"toolUseId":"b","content":[]}},
                    {"text":"and?"}]}
            ])
        );
    }

    #[test]
    fn guardrail_is_sent() {
        let g = serde_json::json!({"guardrailIdentifier":"gr1","guardrailVersion":"1"});
        let body = format!(r#"{{"model":"c",{HI}}}"#);
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(
            &translate(
                &req,
                &model(CLAUDE, None, false),
                UnknownParams::Reject,
                Some(&g),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(v["guardrailConfig"], g);
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
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":-5}}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"top_k":-1}"#,
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":1,"thinking":{"type":"enabled","budget_tokens":18446744073709551615}}"#,
        ];
        for b in bodies {
            let e = go(b).unwrap_err();
            assert_eq!(e.status, 400, "{b}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(document_name(Some("a.b.pdf"), 1), "a-b");
        assert_eq!(document_name(Some("  "), 2), "document-2");
        assert_eq!(document_name(None, 3), "document-3");
        assert_eq!(document_name(Some("x  y_z"), 1), "x y-z");
        assert!(is_claude(
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2"
        ));
        assert!(!is_claude("amazon.nova-lite-v1:0"));
    }
}
