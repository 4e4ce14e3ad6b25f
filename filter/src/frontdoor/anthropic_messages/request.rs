//! Messages request → chat-completions body (for OpenAI-shaped providers).
//!
//! The body is rebuilt (the shapes differ at every level), but values the
//! gateway does not need to understand — tool schemas, tool inputs,
//! sampling numbers — are copied as raw JSON, byte for byte.

use super::Target;
use crate::config::Model;
use crate::error::{echo, ApiError};
use crate::request::{ClientRequest, Endpoint};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The chat body, and what the answer translation needs to know.
pub struct Translated {
    pub body: Vec<u8>,
    /// The request's `stop_sequences`, to tell `stop_sequence` from
    /// `end_turn` when the provider says which stop string matched.
    pub stop_sequences: Vec<String>,
}

/// Parameters an OpenAI-shaped provider cannot honour.
const UNSUPPORTED: [&str; 4] = [
    "container",
    "context_management",
    "inference_geo",
    "mcp_servers",
];

/// Smallest `thinking.budget_tokens` Anthropic accepts.
const MIN_BUDGET: u64 = 1024;

/// `thinking.budget_tokens` → `reasoning_effort`.
pub fn budget_effort(budget: u64) -> &'static str {
    match budget {
        0..=4095 => "low",
        4096..=16383 => "medium",
        _ => "high",
    }
}

/// `output_config.effort` → `reasoning_effort`.
fn output_effort(effort: &str) -> Option<&'static str> {
    Some(match effort {
        "low" => "low",
        "medium" => "medium",
        "high" => "high",
        "xhigh" | "max" => "xhigh",
        _ => return None,
    })
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, "invalid_value", message)
}

fn unsupported(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, "unsupported_parameter", message)
}

fn type_error(param: &str, expected: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        "invalid_type",
        format!("{param}: Input should be {expected}."),
    )
}

fn parse<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    param: &str,
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| type_error(param, expected))
}

/// A field that is there and not `null`.
fn present<'a>(req: &ClientRequest<'a>, name: &str) -> Option<&'a RawValue> {
    req.field(name).filter(|r| r.get() != "null")
}

fn is_string(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('"')
}

// ------------------------------------------------------------------ input

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(default)]
    role: String,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// One content block, flat (a tagged enum cannot hold borrowed raw values).
#[derive(Deserialize)]
pub struct InBlock<'a> {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub source: Option<InSource>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
    #[serde(default)]
    pub tool_use_id: Option<String>,
    #[serde(default, borrow)]
    pub content: Option<&'a RawValue>,
    #[serde(default)]
    pub is_error: Option<bool>,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Deserialize)]
pub struct InSource {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Deserialize)]
struct InTool<'a> {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, borrow)]
    input_schema: Option<&'a RawValue>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct InToolChoice {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct InThinking {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    budget_tokens: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InOutputConfig<'a> {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default, borrow)]
    format: Option<InFormat<'a>>,
}

#[derive(Deserialize)]
struct InFormat<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InMetadata {
    #[serde(default)]
    user_id: Option<String>,
}

/// A `content` value: a string or blocks.
pub enum InContent<'a> {
    Text(String),
    Blocks(Vec<InBlock<'a>>),
}

pub fn content<'a>(raw: &'a RawValue, param: &str) -> Result<InContent<'a>, ApiError> {
    if is_string(raw) {
        Ok(InContent::Text(parse(raw, param, "a valid string")?))
    } else {
        Ok(InContent::Blocks(parse(
            raw,
            param,
            "a string or a list of content blocks",
        )?))
    }
}

// ----------------------------------------------------------------- output

#[derive(Serialize)]
struct ChatBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ChatTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: JsonSchema<'a>,
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: &'static str,
    schema: &'a RawValue,
}

#[derive(Serialize)]
struct ChatMessage {
    role: &'static str,
    /// `null` only on an assistant turn that is all tool calls.
    content: Option<ChatContent>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ChatToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

impl ChatMessage {
    fn new(role: &'static str, content: ChatContent) -> Self {
        ChatMessage {
            role,
            content: Some(content),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ChatContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    File { file: FilePart },
}

#[derive(Serialize)]
struct ImageUrl {
    url: String,
}

#[derive(Serialize)]
struct FilePart {
    filename: String,
    file_data: String,
}

#[derive(Serialize)]
struct ChatToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall,
}

#[derive(Serialize)]
struct FunctionCall {
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct ChatTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ChatFunction<'a>,
}

#[derive(Serialize)]
struct ChatFunction<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    parameters: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

// ------------------------------------------------------------ translation

fn image_part(source: Option<&InSource>, path: &str) -> Result<Part, ApiError> {
    let Some(s) = source else {
        return Err(ApiError::missing_param(&format!("{path}.source")));
    };
    let url = match s.kind.as_str() {
        "base64" => format!(
            "data:{};base64,{}",
            s.media_type.as_deref().unwrap_or("image/png"),
            s.data.as_deref().unwrap_or("")
        ),
        "url" => s.url.clone().unwrap_or_default(),
        other => {
            return Err(unsupported(
                &format!("{path}.source"),
                format!(
                    "{path}.source: an image source of type `{}` cannot be sent to this model's provider; \
                     use `base64` or `url`.",
                    echo(other)
                ),
            ))
        }
    };
    Ok(Part::ImageUrl {
        image_url: ImageUrl { url },
    })
}

fn document_part(b: &InBlock<'_>, path: &str, target: Target) -> Result<Part, ApiError> {
    let Some(s) = b.source.as_ref() else {
        return Err(ApiError::missing_param(&format!("{path}.source")));
    };
    match (s.kind.as_str(), s.media_type.as_deref()) {
        ("text", _) => Ok(Part::Text {
            text: s.data.clone().unwrap_or_default(),
        }),
        ("base64", Some("application/pdf")) if target.pdf() => Ok(Part::File {
            file: FilePart {
                filename: b
                    .title
                    .clone()
                    .unwrap_or_else(|| "document.pdf".to_string()),
                file_data: format!(
                    "data:application/pdf;base64,{}",
                    s.data.as_deref().unwrap_or("")
                ),
            },
        }),
        (kind, media) => Err(unsupported(
            path,
            format!(
                "{path}: this document (source `{}`{}) cannot be sent to this model's provider; \
                 plain-text documents can, and base64 PDFs to OpenAI models.",
                echo(kind),
                media.map(|m| format!(", {}", echo(m))).unwrap_or_default()
            ),
        )),
    }
}

fn text_of(b: &InBlock<'_>, path: &str) -> Result<String, ApiError> {
    b.text
        .clone()
        .ok_or_else(|| ApiError::missing_param(&format!("{path}.text")))
}

/// A `tool_result`'s content as the text of a `tool` message.
fn tool_result_text(b: &InBlock<'_>, path: &str) -> Result<String, ApiError> {
    let text = match b.content {
        None => String::new(),
        Some(raw) if raw.get() == "null" => String::new(),
        Some(raw) => match content(raw, &format!("{path}.content"))? {
            InContent::Text(t) => t,
            InContent::Blocks(blocks) => {
                let mut parts = Vec::new();
                for (k, c) in blocks.iter().enumerate() {
                    let p = format!("{path}.content.{k}");
                    match c.kind.as_str() {
                        "text" => parts.push(text_of(c, &p)?),
                        "document" if c.source.as_ref().is_some_and(|s| s.kind == "text") => parts
                            .push(
                                c.source
                                    .as_ref()
                                    .and_then(|s| s.data.clone())
                                    .unwrap_or_default(),
                            ),
                        other => {
                            return Err(unsupported(
                                &p,
                                format!(
                                    "{p}: `{}` blocks in a tool result cannot be sent to this \
                                     model's provider (tool results take text only).",
                                    echo(other)
                                ),
                            ))
                        }
                    }
                }
                parts.join("\n")
            }
        },
    };
    Ok(if b.is_error == Some(true) {
        if text.is_empty() {
            "Error".to_string()
        } else {
            format!("Error: {text}")
        }
    } else {
        text
    })
}

fn flush_user(out: &mut Vec<ChatMessage>, parts: &mut Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    let mut taken = std::mem::take(parts);
    let content = match taken.as_slice() {
        [Part::Text { .. }] => match taken.pop() {
            Some(Part::Text { text }) => ChatContent::Text(text),
            Some(other) => ChatContent::Parts(vec![other]),
            None => return,
        },
        _ => ChatContent::Parts(taken),
    };
    out.push(ChatMessage::new("user", content));
}

fn user_turn(
    out: &mut Vec<ChatMessage>,
    raw: &RawValue,
    path: &str,
    target: Target,
) -> Result<(), ApiError> {
    let blocks = match content(raw, &format!("{path}.content"))? {
        InContent::Text(t) => {
            out.push(ChatMessage::new("user", ChatContent::Text(t)));
            return Ok(());
        }
        InContent::Blocks(b) => b,
    };
    let before = out.len();
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{path}.content.{j}");
        match b.kind.as_str() {
            "text" => parts.push(Part::Text {
                text: text_of(b, &p)?,
            }),
            "image" => parts.push(image_part(b.source.as_ref(), &p)?),
            "document" => parts.push(document_part(b, &p, target)?),
            "tool_result" => {
                flush_user(out, &mut parts);
                let id = b
                    .tool_use_id
                    .clone()
                    .ok_or_else(|| ApiError::missing_param(&format!("{p}.tool_use_id")))?;
                out.push(ChatMessage {
                    role: "tool",
                    content: Some(ChatContent::Text(tool_result_text(b, &p)?)),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id),
                });
            }
            "tool_use" | "thinking" | "redacted_thinking" => {
                return Err(invalid(
                    &p,
                    format!("{p}: `{}` blocks belong in assistant messages.", b.kind),
                ))
            }
            other => {
                return Err(unsupported(
                    &p,
                    format!(
                        "{p}: `{}` blocks cannot be sent to this model's provider.",
                        echo(other)
                    ),
                ))
            }
        }
    }
    flush_user(out, &mut parts);
    if out.len() == before {
        out.push(ChatMessage::new("user", ChatContent::Text(String::new())));
    }
    Ok(())
}

fn assistant_turn(out: &mut Vec<ChatMessage>, raw: &RawValue, path: &str) -> Result<(), ApiError> {
    let blocks = match content(raw, &format!("{path}.content"))? {
        InContent::Text(t) => {
            out.push(ChatMessage::new("assistant", ChatContent::Text(t)));
            return Ok(());
        }
        InContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{path}.content.{j}");
        match b.kind.as_str() {
            "text" => text.push_str(&text_of(b, &p)?),
            "tool_use" => calls.push(ChatToolCall {
                id: b
                    .id
                    .clone()
                    .ok_or_else(|| ApiError::missing_param(&format!("{p}.id")))?,
                kind: "function",
                function: FunctionCall {
                    name: b
                        .name
                        .clone()
                        .ok_or_else(|| ApiError::missing_param(&format!("{p}.name")))?,
                    arguments: b
                        .input
                        .map(|r| r.get().to_string())
                        .unwrap_or_else(|| "{}".into()),
                },
            }),
            // OpenAI-shaped APIs take no reasoning back.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(unsupported(
                    &p,
                    format!(
                        "{p}: `{}` blocks in an assistant message cannot be sent to this \
                         model's provider.",
                        echo(other)
                    ),
                ))
            }
        }
    }
    let content = if calls.is_empty() || !text.is_empty() {
        Some(ChatContent::Text(text))
    } else {
        None
    };
    out.push(ChatMessage {
        role: "assistant",
        content,
        tool_calls: calls,
        tool_call_id: None,
    });
    Ok(())
}

fn system_messages(raw: &RawValue, out: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
    match content(raw, "system")? {
        InContent::Text(t) => {
            if !t.is_empty() {
                out.push(ChatMessage::new("system", ChatContent::Text(t)));
            }
        }
        InContent::Blocks(blocks) => {
            for (j, b) in blocks.iter().enumerate() {
                let p = format!("system.{j}");
                if b.kind != "text" {
                    return Err(invalid(
                        &p,
                        format!("{p}: system blocks must be `text` blocks."),
                    ));
                }
                out.push(ChatMessage::new(
                    "system",
                    ChatContent::Text(text_of(b, &p)?),
                ));
            }
        }
    }
    Ok(())
}

fn tools<'a>(raw: &'a RawValue) -> Result<Vec<ChatTool<'a>>, ApiError> {
    let list: Vec<InTool<'a>> = parse(raw, "tools", "a list of tools")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        let p = format!("tools.{i}");
        if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
            return Err(unsupported(
                &p,
                format!(
                    "{p}: the server tool `{}` cannot be used with this model's provider; \
                     only client tools (with `input_schema`) can.",
                    echo(kind)
                ),
            ));
        }
        let name = t
            .name
            .ok_or_else(|| ApiError::missing_param(&format!("{p}.name")))?;
        let parameters = t
            .input_schema
            .ok_or_else(|| ApiError::missing_param(&format!("{p}.input_schema")))?;
        out.push(ChatTool {
            kind: "function",
            function: ChatFunction {
                name,
                description: t.description,
                parameters,
                strict: t.strict,
            },
        });
    }
    Ok(out)
}

/// `tool_choice` → (OpenAI `tool_choice`, `parallel_tool_calls`).
fn tool_choice(raw: &RawValue) -> Result<(Value, Option<bool>), ApiError> {
    let c: InToolChoice = parse(raw, "tool_choice", "an object")?;
    let choice = match c.kind.as_str() {
        "auto" => Value::from("auto"),
        "any" => Value::from("required"),
        "none" => Value::from("none"),
        "tool" => {
            let name = c
                .name
                .ok_or_else(|| ApiError::missing_param("tool_choice.name"))?;
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!(
                    "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not '{}'.",
                    echo(other)
                ),
            ))
        }
    };
    let parallel = (c.disable_parallel_tool_use == Some(true) && c.kind != "none").then_some(false);
    Ok((choice, parallel))
}

fn thinking_effort(raw: &RawValue) -> Result<Option<&'static str>, ApiError> {
    let t: InThinking = parse(raw, "thinking", "an object")?;
    match t.kind.as_str() {
        "enabled" => {
            let budget = t
                .budget_tokens
                .ok_or_else(|| ApiError::missing_param("thinking.budget_tokens"))?;
            match budget.as_u64() {
                Some(b) if b >= MIN_BUDGET => Ok(Some(budget_effort(b))),
                _ => Err(invalid(
                    "thinking.budget_tokens",
                    format!("thinking.budget_tokens: Input should be an integer of at least {MIN_BUDGET}."),
                )),
            }
        }
        "disabled" | "adaptive" => Ok(None),
        other => Err(invalid(
            "thinking.type",
            format!(
                "thinking.type: Input should be 'enabled', 'disabled' or 'adaptive', not '{}'.",
                echo(other)
            ),
        )),
    }
}

fn json_format<'a>(f: &InFormat<'a>, param: &str) -> Result<ResponseFormat<'a>, ApiError> {
    if f.kind != "json_schema" {
        return Err(invalid(
            &format!("{param}.type"),
            format!("{param}.type: Input should be 'json_schema'."),
        ));
    }
    let schema = f
        .schema
        .ok_or_else(|| ApiError::missing_param(&format!("{param}.schema")))?;
    Ok(ResponseFormat {
        kind: "json_schema",
        json_schema: JsonSchema {
            name: "response",
            schema,
        },
    })
}

/// Translate a Messages body for an OpenAI-shaped provider.
pub fn to_chat(
    req: &ClientRequest<'_>,
    model: &Model,
    target: Target,
) -> Result<Translated, ApiError> {
    let known = Endpoint::Messages.known_params();
    for (k, _) in &req.fields {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::invalid_param(
                k,
                "unknown_parameter",
                format!("{}: Extra inputs are not permitted", echo(k)),
            ));
        }
        if UNSUPPORTED.contains(&k.as_str())
            && !model.drop_unsupported_params
            && present(req, k).is_some()
        {
            return Err(unsupported(
                k,
                format!(
                    "{k}: not supported with model `{}` (its provider is not Anthropic). \
                     Remove it, or set drop_unsupported_params on the model in the gateway's config.",
                    model.name
                ),
            ));
        }
    }

    let mut messages = Vec::new();
    if let Some(raw) = present(req, "system") {
        system_messages(raw, &mut messages)?;
    }
    let raw = req
        .field("messages")
        .ok_or_else(|| ApiError::missing_param("messages"))?;
    let turns: Vec<InMessage<'_>> = parse(raw, "messages", "a list of messages")?;
    for (i, m) in turns.iter().enumerate() {
        let path = format!("messages.{i}");
        match m.role.as_str() {
            "user" => user_turn(&mut messages, m.content, &path, target)?,
            "assistant" => assistant_turn(&mut messages, m.content, &path)?,
            _ => {
                return Err(invalid(
                    &format!("{path}.role"),
                    format!("{path}.role: Input should be 'user' or 'assistant'."),
                ))
            }
        }
    }

    let max_tokens: Option<u64> = match present(req, "max_tokens") {
        Some(raw) => Some(parse(raw, "max_tokens", "a valid integer")?),
        None => None,
    };
    if max_tokens == Some(0) {
        return Err(invalid(
            "max_tokens",
            "max_tokens: 0 (prompt-cache warm-up) is only supported with Anthropic models.",
        ));
    }
    let stop_sequences: Vec<String> = match present(req, "stop_sequences") {
        Some(raw) => parse(raw, "stop_sequences", "a list of strings")?,
        None => Vec::new(),
    };
    let user = match present(req, "metadata") {
        Some(raw) => parse::<InMetadata>(raw, "metadata", "an object")?.user_id,
        None => None,
    };
    let tools = match present(req, "tools") {
        Some(raw) => tools(raw)?,
        None => Vec::new(),
    };
    let (tool_choice, parallel_tool_calls) = match present(req, "tool_choice") {
        Some(raw) if !tools.is_empty() => {
            let (c, p) = tool_choice(raw)?;
            (Some(c), p)
        }
        Some(raw) => {
            // Checked, but without tools there is nothing to choose.
            tool_choice(raw)?;
            (None, None)
        }
        None => (None, None),
    };
    let mut reasoning_effort = match present(req, "thinking") {
        Some(raw) => thinking_effort(raw)?,
        None => None,
    };
    let mut response_format = None;
    if let Some(raw) = present(req, "output_config") {
        let oc: InOutputConfig<'_> = serde_json::from_str(raw.get()).map_err(|e| {
            invalid(
                "output_config",
                format!("output_config: {}", echo(&e.to_string())),
            )
        })?;
        if let Some(effort) = oc.effort.as_deref() {
            reasoning_effort = Some(output_effort(effort).ok_or_else(|| {
                invalid(
                    "output_config.effort",
                    "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'.",
                )
            })?);
        }
        if let Some(f) = oc.format.as_ref() {
            response_format = Some(json_format(f, "output_config.format")?);
        }
    }
    if let Some(raw) = present(req, "output_format") {
        let f: InFormat<'_> = parse(raw, "output_format", "an object")?;
        response_format = Some(json_format(&f, "output_format")?);
    }
    let service_tier = match present(req, "service_tier") {
        Some(raw) => {
            let tier: String = parse(raw, "service_tier", "'auto' or 'standard_only'")?;
            let mapped = match tier.as_str() {
                "auto" => "auto",
                "standard_only" => "default",
                _ => {
                    return Err(invalid(
                        "service_tier",
                        "service_tier: Input should be 'auto' or 'standard_only'.",
                    ))
                }
            };
            target.service_tier().then_some(mapped)
        }
        None => None,
    };

    let body = ChatBody {
        model: req.model.as_ref().map(|(m, _)| m.as_str()),
        messages,
        max_completion_tokens: max_tokens.filter(|_| target.max_completion_tokens()),
        max_tokens: max_tokens.filter(|_| !target.max_completion_tokens()),
        temperature: present(req, "temperature"),
        top_p: present(req, "top_p"),
        top_k: present(req, "top_k").filter(|_| target.top_k()),
        stop: stop_sequences.clone(),
        user,
        tools,
        tool_choice,
        parallel_tool_calls,
        reasoning_effort,
        response_format,
        service_tier,
        stream: req.stream,
        stream_options: req.stream.then_some(StreamOptions {
            include_usage: true,
        }),
    };
    let body = serde_json::to_vec(&body)
        .map_err(|_| ApiError::invalid("The request could not be translated."))?;
    Ok(Translated {
        body,
        stop_sequences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::providers::ProviderKind;
    use serde_json::json;

    fn models() -> Config {
        let doc = r#"{"providers":[{"name":"o","kind":"openai","cluster":"o"}],
            "models":[{"name":"m","provider":"o"},{"name":"lenient","provider":"o","drop_unsupported_params":true}]}"#;
        Config::parse(doc.as_bytes(), &|_| None).unwrap()
    }

    fn run(kind: ProviderKind, body: Value) -> Result<Value, ApiError> {
        run_model(kind, 0, body)
    }

    fn run_model(kind: ProviderKind, model: usize, body: Value) -> Result<Value, ApiError> {
        let c = models();
        let bytes = serde_json::to_vec(&body).unwrap();
        let req = ClientRequest::parse(Endpoint::Messages, &bytes)?;
        let t = to_chat(&req, &c.models[model], Target::new(kind))?;
        // Whatever comes out must be a valid chat request.
        ClientRequest::parse(Endpoint::ChatCompletions, &t.body).unwrap();
        Ok(serde_json::from_slice(&t.body).unwrap())
    }

    fn oai(body: Value) -> Value {
        run(ProviderKind::OpenAi, body).unwrap()
    }

    fn err(kind: ProviderKind, body: Value) -> ApiError {
        run(kind, body).err().unwrap()
    }

    #[test]
    fn basic_and_max_tokens_per_target() {
        let body =
            json!({"model":"m","max_tokens":100,"messages":[{"role":"user","content":"hi"}]});
        assert_eq!(
            oai(body.clone()),
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":100})
        );
        assert_eq!(
            run(ProviderKind::Azure, body.clone()).unwrap()["max_completion_tokens"],
            100
        );
        let c = run(ProviderKind::OpenAiCompatible, body).unwrap();
        assert_eq!(c["max_tokens"], 100);
        assert!(c.get("max_completion_tokens").is_none());
    }

    #[test]
    fn system_string_and_blocks() {
        let v = oai(json!({"model":"m","max_tokens":5,"system":"Be brief.",
            "messages":[{"role":"user","content":"hi"}]}));
        assert_eq!(
            v["messages"][0],
            json!({"role":"system","content":"Be brief."})
        );
        let v = oai(json!({"model":"m","max_tokens":5,
            "system":[{"type":"text","text":"A"},{"type":"text","text":"B","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":"hi"}]}));
        assert_eq!(
            v["messages"],
            json!([{"role":"system","content":"A"},{"role":"system","content":"B"},{"role":"user","content":"hi"}])
        );
        let e = err(
            ProviderKind::OpenAi,
            json!({"model":"m","max_tokens":5,"system":[{"type":"image"}],"messages":[{"role":"user","content":"x"}]}),
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn images_and_text_parts() {
        let v = oai(
            json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
            {"type":"text","text":"What is this?"},
            {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"QUJD"}},
            {"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}),
        );
        assert_eq!(
            v["messages"][0]["content"],
            json!([{"type":"text","text":"What is this?"},
                   {"type":"image_url","image_url":{"url":"data:image/jpeg;base64,QUJD"}},
                   {"type":"image_url","image_url":{"url":"https://x/y.png"}}])
        );
        // One text block is a plain string.
        let v = oai(
            json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}),
        );
        assert_eq!(v["messages"][0]["content"], "x");
        let e = err(
            ProviderKind::OpenAi,
            json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
                {"type":"image","source":{"type":"file","file_id":"f"}}]}]}),
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn documents() {
        let pdf = json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
            {"type":"document","title":"r.pdf","source":{"type":"base64","media_type":"application/pdf","data":"JVBE"}}]}]});
        assert_eq!(
            oai(pdf.clone())["messages"][0]["content"],
            json!([{"type":"file","file":{"filename":"r.pdf","file_data":"data:application/pdf;base64,JVBE"}}])
        );
        assert_eq!(err(ProviderKind::Azure, pdf.clone()).status, 400);
        assert_eq!(err(ProviderKind::OpenAiCompatible, pdf).status, 400);
        let txt = json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"notes"}},
            {"type":"text","text":"summarise"}]}]});
        assert_eq!(
            run(ProviderKind::OpenAiCompatible, txt).unwrap()["messages"][0]["content"],
            json!([{"type":"text","text":"notes"},{"type":"text","text":"summarise"}])
        );
    }

    #[test]
    fn tool_round_trip() {
        let v = oai(json!({"model":"m","max_tokens":5,
            "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
            "messages":[
                {"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":[
                    {"type":"thinking","thinking":"hmm","signature":"s"},
                    {"type":"text","text":"Checking."},
                    {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
                    {"type":"tool_use","id":"call_2","name":"get_weather","input":{"city":"Rome"}}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
                    {"type":"tool_result","tool_use_id":"call_2","is_error":true,"content":[{"type":"text","text":"timeout"}]},
                    {"type":"text","text":"Thanks"}]}]}));
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":"Checking.","tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
                {"role":"tool","content":"18C","tool_call_id":"call_1"},
                {"role":"tool","content":"Error: timeout","tool_call_id":"call_2"},
                {"role":"user","content":"Thanks"}])
        );
        assert_eq!(
            v["tools"],
            json!([{"type":"function","function":{"name":"get_weather","description":"Weather",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])
        );
        // Only tool calls: content null.
        let v = oai(json!({"model":"m","max_tokens":5,"messages":[
            {"role":"user","content":"x"},
            {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]}));
        assert!(v["messages"][1]["content"].is_null());
        assert_eq!(
            v["messages"][2],
            json!({"role":"tool","content":"","tool_call_id":"t"})
        );
    }

    #[test]
    fn tool_choices() {
        let base = |choice: Value| {
            json!({"model":"m","max_tokens":5,"tool_choice":choice,
                "tools":[{"name":"f","input_schema":{"type":"object"}}],
                "messages":[{"role":"user","content":"x"}]})
        };
        let v = oai(base(json!({"type":"auto"})));
        assert_eq!(v["tool_choice"], "auto");
        assert!(v.get("parallel_tool_calls").is_none());
        let v = oai(base(json!({"type":"any","disable_parallel_tool_use":true})));
        assert_eq!(
            (v["tool_choice"].clone(), v["parallel_tool_calls"].clone()),
            (json!("required"), json!(false))
        );
        let v = oai(base(json!({"type":"tool","name":"f"})));
        assert_eq!(
            v["tool_choice"],
            json!({"type":"function","function":{"name":"f"}})
        );
        let v = oai(base(json!({"type":"none"})));
        assert_eq!(v["tool_choice"], "none");
        assert_eq!(
            err(ProviderKind::OpenAi, base(json!({"type":"maybe"}))).status,
            400
        );
        assert_eq!(
            err(ProviderKind::OpenAi, base(json!({"type":"tool"}))).status,
            400
        );
        // Without tools nothing is sent.
        let v = oai(
            json!({"model":"m","max_tokens":5,"tool_choice":{"type":"any"},"messages":[{"role":"user","content":"x"}]}),
        );
        assert!(v.get("tool_choice").is_none());
        // Server tools cannot go.
        let e = err(
            ProviderKind::OpenAi,
            json!({"model":"m","max_tokens":5,
            "tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[{"role":"user","content":"x"}]}),
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn sampling_stop_user_stream() {
        let body = json!({"model":"m","max_tokens":5,"temperature":0.2,"top_p":0.9,"top_k":40,
            "stop_sequences":["END"],"metadata":{"user_id":"u-1"},"stream":true,
            "messages":[{"role":"user","content":"x"}]});
        let v = oai(body.clone());
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["top_p"], 0.9);
        assert!(v.get("top_k").is_none());
        assert_eq!(v["stop"], json!(["END"]));
        assert_eq!(v["user"], "u-1");
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"], json!({"include_usage":true}));
        let c = run(ProviderKind::OpenAiCompatible, body).unwrap();
        assert_eq!(c["top_k"], 40);
    }

    #[test]
    fn thinking_and_output_config() {
        let with = |extra: Value| {
            let mut b =
                json!({"model":"m","max_tokens":20000,"messages":[{"role":"user","content":"x"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        for (budget, effort) in [
            (1024, "low"),
            (4095, "low"),
            (4096, "medium"),
            (8192, "medium"),
            (16383, "medium"),
            (16384, "high"),
            (60000, "high"),
        ] {
            let v = oai(with(
                json!({"thinking":{"type":"enabled","budget_tokens":budget}}),
            ));
            assert_eq!(v["reasoning_effort"], effort, "{budget}");
        }
        assert!(oai(with(json!({"thinking":{"type":"disabled"}})))
            .get("reasoning_effort")
            .is_none());
        assert!(oai(with(json!({"thinking":{"type":"adaptive"}})))
            .get("reasoning_effort")
            .is_none());
        assert_eq!(
            err(
                ProviderKind::OpenAi,
                with(json!({"thinking":{"type":"enabled","budget_tokens":100}}))
            )
            .status,
            400
        );
        assert_eq!(
            err(
                ProviderKind::OpenAi,
                with(json!({"thinking":{"type":"enabled"}}))
            )
            .status,
            400
        );
        let v = oai(with(
            json!({"thinking":{"type":"enabled","budget_tokens":2000},"output_config":{"effort":"max"}}),
        ));
        assert_eq!(v["reasoning_effort"], "xhigh");
        let v = oai(with(
            json!({"output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}}}),
        ));
        assert_eq!(
            v["response_format"],
            json!({"type":"json_schema","json_schema":{"name":"response","schema":{"type":"object"}}})
        );
        let v = oai(with(
            json!({"output_format":{"type":"json_schema","schema":{"type":"object"}}}),
        ));
        assert_eq!(v["response_format"]["type"], "json_schema");
        assert_eq!(
            err(
                ProviderKind::OpenAi,
                with(json!({"output_config":{"nope":1}}))
            )
            .status,
            400
        );
    }

    #[test]
    fn service_tier_only_for_openai() {
        let body = json!({"model":"m","max_tokens":5,"service_tier":"standard_only","messages":[{"role":"user","content":"x"}]});
        assert_eq!(oai(body.clone())["service_tier"], "default");
        assert!(run(ProviderKind::Azure, body)
            .unwrap()
            .get("service_tier")
            .is_none());
    }

    #[test]
    fn unknown_and_unsupported_params() {
        let e = err(
            ProviderKind::OpenAi,
            json!({"model":"m","max_tokens":5,"n":2,"messages":[{"role":"user","content":"x"}]}),
        );
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "n: Extra inputs are not permitted")
        );
        let body = json!({"model":"m","max_tokens":5,"container":"c","messages":[{"role":"user","content":"x"}]});
        assert_eq!(err(ProviderKind::OpenAi, body.clone()).status, 400);
        let v = run_model(ProviderKind::OpenAi, 1, body).unwrap();
        assert!(v.get("container").is_none());
        // Accepted and ignored.
        let v = oai(
            json!({"model":"m","max_tokens":5,"cache_control":{"type":"ephemeral"},"messages":[{"role":"user","content":"x"}]}),
        );
        assert!(v.get("cache_control").is_none());
        assert_eq!(
            err(
                ProviderKind::OpenAi,
                json!({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})
            )
            .status,
            400
        );
    }

    #[test]
    fn bad_blocks_are_400_not_panics() {
        for content in [
            json!([{"type":"tool_use","id":"a","name":"b","input":{}}]),
            json!([{"type":"server_tool_use"}]),
            json!([{"type":"text"}]),
            json!([{"type":"tool_result"}]),
            json!([{"type":"tool_result","tool_use_id":"a","content":[{"type":"image","source":{"type":"url","url":"u"}}]}]),
            json!([{"type":"image"}]),
            json!([{"type":"document"}]),
            json!([5]),
            json!({"a":1}),
        ] {
            let e = err(
                ProviderKind::OpenAi,
                json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":content}]}),
            );
            assert_eq!(e.status, 400, "{content}");
        }
        for content in [
            json!([{"type":"image","source":{"type":"url","url":"u"}}]),
            json!([{"type":"tool_use"}]),
        ] {
            let e = err(
                ProviderKind::OpenAi,
                json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":content}]}),
            );
            assert_eq!(e.status, 400, "{content}");
        }
    }
}
