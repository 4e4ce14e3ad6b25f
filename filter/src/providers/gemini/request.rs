//! OpenAI chat request → Gemini `GenerateContentRequest` (the same body for
//! the Gemini API and Vertex AI; the model is in the path, not the body).
//!
//! The body is rebuilt (Gemini's shape differs at every level). Sampling
//! values are copied as raw JSON; JSON Schemas go through [`super::schema`].

use super::schema;
use crate::config::Model;
use crate::error::{
    echo, invalid_value, type_error, unsupported_param, unsupported_value, ApiError,
};
use crate::providers::anthropic::request::screen_params;
use crate::providers::UnknownParams;
use crate::request::ClientRequest;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// `reasoning_effort` → `thinkingConfig.thinkingBudget` (tokens). `none`
/// turns thinking off (budget 0; Gemini 2.5 Pro, which cannot think less
/// than 128 tokens, answers that with a 400 of its own). The same table as
/// the Anthropic provider's, so one effort costs about the same anywhere,
/// except `xhigh`: 24576 is the largest budget every Gemini 2.5 model
/// accepts (Flash's maximum; Pro's is 32768).
pub fn effort_budget(effort: &str) -> Option<u64> {
    Some(match effort {
        "none" => 0,
        "minimal" => 1024,
        "low" => 2048,
        "medium" => 8192,
        "high" => 16384,
        "xhigh" => 24576,
        _ => return None,
    })
}

/// The value Google documents for a function call replayed without its
/// thought signature (a history from another model, or a client that
/// dropped `extra_content`): Gemini 3 models then skip the signature check
/// instead of answering 400.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Top-level parameters this provider takes besides OpenAI's own:
/// Anthropic's `thinking` object (as LiteLLM accepts it), `top_k`, and
/// Gemini's `safety_settings` (passed as `safetySettings`).
const EXTRA_PARAMS: [&str; 3] = ["thinking", "top_k", "safety_settings"];

/// The provider's name in `unsupported_parameter` errors.
const PROVIDER: &str = "Gemini";

// ------------------------------------------------------------ output shape

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    contents: Vec<OutContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_settings: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
    /// Unknown parameters passed on (`unknown_params: pass`), e.g. Gemini's
    /// `cachedContent` or Vertex's `labels`.
    #[serde(flatten)]
    extra: BTreeMap<&'a str, &'a RawValue>,
}

#[derive(Serialize)]
struct SystemInstruction {
    parts: Vec<Part>,
}

#[derive(Serialize)]
struct OutContent {
    role: &'static str,
    parts: Vec<Part>,
}

/// One part. Gemini's `Part` is a `oneof`: exactly one of these fields.
#[derive(Serialize)]
#[serde(untagged)]
enum Part {
    Text {
        text: String,
    },
    Inline {
        #[serde(rename = "inlineData")]
        inline_data: Blob,
    },
    File {
        #[serde(rename = "fileData")]
        file_data: FileData,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: OutFunctionCall,
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<String>,
    },
    Response {
        #[serde(rename = "functionResponse")]
        function_response: OutFunctionResponse,
        /// Position of the answered call among the conversation's calls
        /// (`usize::MAX` when found by name only).
        #[serde(skip)]
        call: usize,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    mime_type: String,
    data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    mime_type: String,
    file_uri: String,
}

#[derive(Serialize)]
struct OutFunctionCall {
    name: String,
    args: Box<RawValue>,
}

#[derive(Serialize)]
struct OutFunctionResponse {
    name: String,
    response: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutTool {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Serialize)]
struct FunctionDeclaration {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.stop_sequences.is_empty()
            && self.response_mime_type.is_none()
            && self.response_schema.is_none()
            && self.candidate_count.is_none()
            && self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_thoughts: bool,
}

// ------------------------------------------------------------- input shape
//
// The client's messages are read as `serde_json::Value`s (the parser the
// rest of the gateway already carries: a typed struct per input shape
// would add its own deserialiser to the .wasm); tools and `response_format`
// as the schema module's ordered tree, which keeps the properties' order.

type Obj = serde_json::Map<String, Value>;

fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

fn parse_value(raw: &RawValue, param: &str, expected: &str) -> Result<Value, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| type_error(param, expected))
}

fn object<'v>(v: &'v Value, param: &str, expected: &str) -> Result<&'v Obj, ApiError> {
    v.as_object().ok_or_else(|| type_error(param, expected))
}

/// A string field: absent or null → `None`, another type → a 400.
fn opt_str<'v>(o: &'v Obj, key: &str, param: &str) -> Result<Option<&'v str>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(&format!("{param}.{key}"), "a string")),
    }
}

/// A required string field.
fn req_str<'v>(o: &'v Obj, key: &str, param: &str) -> Result<&'v str, ApiError> {
    opt_str(o, key, param)?.ok_or_else(|| ApiError::missing_param(&format!("{param}.{key}")))
}

/// A required object field.
fn req_obj<'v>(o: &'v Obj, key: &str, param: &str) -> Result<&'v Obj, ApiError> {
    let p = format!("{param}.{key}");
    match o.get(key) {
        None | Some(Value::Null) => Err(ApiError::missing_param(&p)),
        Some(v) => object(v, &p, "an object"),
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

/// `data:<media type>[;params];base64,<data>` → (media type, data).
fn data_url(url: &str) -> Option<(String, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let mut params = head.split(';');
    let media = params.next()?.trim().to_ascii_lowercase();
    if media.is_empty()
        || !params.any(|p| p.trim().eq_ignore_ascii_case("base64"))
        || data.is_empty()
    {
        return None;
    }
    let media = if media == "image/jpg" {
        "image/jpeg".to_string()
    } else {
        media
    };
    Some((media, data))
}

/// The MIME type for a file URL from its extension (query and fragment
/// ignored), if the extension is a known one.
fn mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => return None,
    })
}

fn is_file_uri(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://")
}

// ------------------------------------------------------------ conversation

/// The turns being built: consecutive same-role messages share a turn.
#[derive(Default)]
struct Turns {
    system: Vec<Part>,
    turns: Vec<(&'static str, Vec<Part>)>,
}

impl Turns {
    fn push(&mut self, role: &'static str, parts: Vec<Part>) {
        if parts.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((r, p)) if *r == role => p.extend(parts),
            _ => self.turns.push((role, parts)),
        }
    }

    /// The contents, function responses first in each user turn (a tool
    /// result must follow the call it answers; a user message the client
    /// put between them goes after). `skip_signature`: give the first
    /// function call of each model turn without any signature the value
    /// that skips Gemini 3's check.
    fn finish(self, skip_signature: bool) -> (Option<SystemInstruction>, Vec<OutContent>) {
        let system = (!self.system.is_empty()).then_some(SystemInstruction { parts: self.system });
        let contents = self
            .turns
            .into_iter()
            .map(|(role, parts)| {
                let mut parts = if role == "user" {
                    responses_first(parts)
                } else {
                    parts
                };
                let signed = parts.iter().any(|p| {
                    matches!(
                        p,
                        Part::Call {
                            thought_signature: Some(_),
                            ..
                        }
                    )
                });
                if role == "model" && skip_signature && !signed {
                    if let Some(Part::Call {
                        thought_signature, ..
                    }) = parts.iter_mut().find(|p| matches!(p, Part::Call { .. }))
                    {
                        *thought_signature = Some(SKIP_SIGNATURE.to_string());
                    }
                }
                OutContent { role, parts }
            })
            .collect();
        (system, contents)
    }
}

/// A user turn's parts with the function responses first, in the order of
/// the calls they answer (Gemini pairs calls and responses by position, and
/// clients may append parallel results as they complete), then the rest.
fn responses_first(parts: Vec<Part>) -> Vec<Part> {
    let call_of = |p: &Part| match p {
        Part::Response { call, .. } => Some(*call),
        _ => None,
    };
    let mut out: Vec<Part> = Vec::with_capacity(parts.len());
    let mut rest = Vec::new();
    for p in parts {
        match call_of(&p) {
            Some(c) => {
                // Insertion keeps equal positions in their given order.
                let at = out
                    .iter()
                    .position(|q| call_of(q).is_some_and(|d| d > c))
                    .unwrap_or(out.len());
                out.insert(at, p);
            }
            None => rest.push(p),
        }
    }
    out.extend(rest);
    out
}

/// The content parts of a message: a string is one text part.
fn content_parts<'v>(content: Option<&'v Value>, param: &str) -> Result<Vec<&'v Value>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(s @ Value::String(_)) => Ok(vec![s]),
        Some(Value::Array(a)) => Ok(a.iter().collect()),
        Some(_) => Err(type_error(param, "a string or an array of content parts")),
    }
}

/// Text parts only (system, developer, assistant and tool messages): a
/// string, or an array of `text` parts (and `refusal` parts for the
/// assistant). Empty texts are skipped (Gemini rejects them).
fn texts(content: Option<&Value>, param: &str, role: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for (j, p) in content_parts(content, param)?.into_iter().enumerate() {
        let text = match p {
            Value::String(s) => s.as_str(),
            _ => {
                let pp = format!("{param}[{j}]");
                let part = object(p, &pp, "a content part object")?;
                match req_str(part, "type", &pp)? {
                    "text" => req_str(part, "text", &pp)?,
                    "refusal" if role == "assistant" => req_str(part, "refusal", &pp)?,
                    other => {
                        return Err(unsupported_value(
                            &pp,
                            format!(
                                "Content part type '{}' is not supported in {role} messages \
                                 for Gemini models; only 'text' is.",
                                echo(other)
                            ),
                        ))
                    }
                }
            }
        };
        if !text.is_empty() {
            out.push(text.to_string());
        }
    }
    Ok(out)
}

fn text_parts(texts: Vec<String>) -> Vec<Part> {
    texts.into_iter().map(|text| Part::Text { text }).collect()
}

fn inline(mime_type: String, data: &str) -> Part {
    Part::Inline {
        inline_data: Blob {
            mime_type,
            data: data.to_string(),
        },
    }
}

/// One user content part that is not text.
fn media_part(part: &Obj, kind: &str, pp: &str) -> Result<Part, ApiError> {
    match kind {
        "image_url" => {
            let ip = format!("{pp}.image_url");
            let url = req_str(req_obj(part, "image_url", pp)?, "url", &ip)?;
            let up = format!("{ip}.url");
            if url.starts_with("data:") {
                let (mime_type, data) = data_url(url).ok_or_else(|| {
                    invalid_value(
                        &up,
                        "Invalid image data URL: expected data:<media type>;base64,<data>.",
                    )
                })?;
                Ok(inline(mime_type, data))
            } else if is_file_uri(url) {
                // Gemini wants a MIME type with every file; an image URL
                // without a known extension says only "an image".
                Ok(Part::File {
                    file_data: FileData {
                        mime_type: mime_from_url(url).unwrap_or("image/*").to_string(),
                        file_uri: url.to_string(),
                    },
                })
            } else {
                Err(invalid_value(
                    &up,
                    "Invalid image URL: expected an http(s) or gs:// URL or a base64 data URL.",
                ))
            }
        }
        "input_audio" => {
            let ap = format!("{pp}.input_audio");
            let a = req_obj(part, "input_audio", pp)?;
            let data = req_str(a, "data", &ap)?;
            let format = req_str(a, "format", &ap)?.to_ascii_lowercase();
            if format.is_empty() || !format.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid_value(
                    &format!("{ap}.format"),
                    "Invalid audio format: expected e.g. 'wav' or 'mp3'.",
                ));
            }
            Ok(inline(format!("audio/{format}"), data))
        }
        "file" => {
            let fp = format!("{pp}.file");
            let f = req_obj(part, "file", pp)?;
            if let Some(fd) = opt_str(f, "file_data", &fp)? {
                let (mime_type, data) = data_url(fd).ok_or_else(|| {
                    invalid_value(
                        &format!("{fp}.file_data"),
                        "Invalid file_data: expected data:<media type>;base64,<data>.",
                    )
                })?;
                return Ok(inline(mime_type, data));
            }
            let id = opt_str(f, "file_id", &fp)?
                .ok_or_else(|| ApiError::missing_param(&format!("{fp}.file_data")))?;
            if !is_file_uri(id) {
                return Err(unsupported_value(
                    &format!("{fp}.file_id"),
                    "OpenAI file ids cannot be used with Gemini models: send the file \
                     inline as file_data, or its Gemini File API / gs:// URI as file_id.",
                ));
            }
            // `file.format`: the MIME type, as LiteLLM takes it.
            let mime_type = match opt_str(f, "format", &fp)? {
                Some(m) => m.to_string(),
                None => mime_from_url(id).map(str::to_string).ok_or_else(|| {
                    invalid_value(
                        &format!("{fp}.format"),
                        "The file's MIME type is needed for Gemini models: \
                         give it as file.format (e.g. application/pdf).",
                    )
                })?,
            };
            Ok(Part::File {
                file_data: FileData {
                    mime_type,
                    file_uri: id.to_string(),
                },
            })
        }
        other => Err(unsupported_value(
            pp,
            format!(
                "Content part type '{}' is not supported with Gemini models.",
                echo(other)
            ),
        )),
    }
}

/// User content: text, images (data URLs inline, other URLs by URI), audio,
/// files.
fn user_parts(content: Option<&Value>, param: &str) -> Result<Vec<Part>, ApiError> {
    let mut out = Vec::new();
    for (j, p) in content_parts(content, param)?.into_iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let text = match p {
            Value::String(s) => s.as_str(),
            _ => {
                let part = object(p, &pp, "a content part object")?;
                match req_str(part, "type", &pp)? {
                    "text" => req_str(part, "text", &pp)?,
                    kind => {
                        out.push(media_part(part, kind, &pp)?);
                        continue;
                    }
                }
            }
        };
        if !text.is_empty() {
            out.push(Part::Text {
                text: text.to_string(),
            });
        }
    }
    Ok(out)
}

/// Assistant content and tool calls; records each call's id → name.
fn model_parts(
    m: &Obj,
    param: &str,
    names: &mut Vec<(String, String)>,
) -> Result<Vec<Part>, ApiError> {
    let mut out = text_parts(texts(
        m.get("content"),
        &format!("{param}.content"),
        "assistant",
    )?);
    if m.get("function_call").is_some_and(|v| !v.is_null()) {
        return Err(unsupported_param(
            &format!("{param}.function_call"),
            PROVIDER,
        ));
    }
    let p = format!("{param}.tool_calls");
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(type_error(&p, "an array of tool calls")),
    };
    for (j, c) in calls.iter().enumerate() {
        let cp = format!("{p}[{j}]");
        let call = object(c, &cp, "a tool call object")?;
        if opt_str(call, "type", &cp)?.is_some_and(|k| k != "function") {
            return Err(unsupported_value(
                &format!("{cp}.type"),
                "Only 'function' tool calls are supported with Gemini models.",
            ));
        }
        let fp = format!("{cp}.function");
        let f = req_obj(call, "function", &cp)?;
        let name = req_str(f, "name", &fp)?.to_string();
        let args = opt_str(f, "arguments", &fp)?.unwrap_or("").trim();
        let args = if args.is_empty() { "{}" } else { args };
        let ap = format!("{fp}.arguments");
        let args = RawValue::from_string(args.to_string())
            .ok()
            .filter(|r| r.get().starts_with('{'))
            .ok_or_else(|| {
                invalid_value(
                    &ap,
                    format!(
                        "Invalid '{ap}': must be a JSON object encoded as a string \
                         (Gemini function arguments are objects)."
                    ),
                )
            })?;
        if let Some(id) = opt_str(call, "id", &cp)? {
            names.push((id.to_string(), name.clone()));
        }
        let signature = call
            .get("extra_content")
            .and_then(|e| e.get("google"))
            .and_then(|g| g.get("thought_signature"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        out.push(Part::Call {
            function_call: OutFunctionCall { name, args },
            thought_signature: signature,
        });
    }
    Ok(out)
}

/// A tool result → `functionResponse`. Gemini takes a JSON object: a
/// result that is one is sent as it is; any other text is wrapped as
/// `{"content": "<text>"}`.
fn tool_part(m: &Obj, param: &str, names: &[(String, String)]) -> Result<Part, ApiError> {
    let id = req_str(m, "tool_call_id", param)?;
    let found = names.iter().rposition(|(i, _)| i == id);
    let name = match found.and_then(|at| names.get(at)) {
        Some((_, n)) => n.clone(),
        None => opt_str(m, "name", param)?
            .map(str::to_string)
            .ok_or_else(|| {
                invalid_value(
                    &format!("{param}.tool_call_id"),
                    format!(
                        "Invalid '{param}.tool_call_id': '{}' is not the id of a tool call in \
                         an earlier assistant message (Gemini needs the function's name).",
                        echo(id)
                    ),
                )
            })?,
    };
    let text = texts(m.get("content"), &format!("{param}.content"), "tool")?.concat();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::json!({ "content": text }),
    };
    Ok(Part::Response {
        function_response: OutFunctionResponse { name, response },
        call: found.unwrap_or(usize::MAX),
    })
}

fn conversation(req: &ClientRequest<'_>) -> Result<Turns, ApiError> {
    let raw = req
        .field("messages")
        .ok_or_else(|| ApiError::missing_param("messages"))?;
    let msgs: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| type_error("messages", "an array of message objects"))?;
    let mut turns = Turns::default();
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, raw) in msgs.iter().enumerate() {
        let param = format!("messages[{i}]");
        let v = parse_value(raw, &param, "a message object")?;
        let m = object(&v, &param, "a message object")?;
        let content_param = format!("{param}.content");
        match req_str(m, "role", &param)? {
            "system" | "developer" => turns.system.extend(text_parts(texts(
                m.get("content"),
                &content_param,
                "system",
            )?)),
            "user" => turns.push("user", user_parts(m.get("content"), &content_param)?),
            "assistant" => turns.push("model", model_parts(m, &param, &mut names)?),
            "tool" => turns.push("user", vec![tool_part(m, &param, &names)?]),
            _ => {
                return Err(unsupported_value(
                    &format!("{param}.role"),
                    "The deprecated 'function' role is not supported with Gemini models; \
                     use tools and 'tool' messages.",
                ))
            }
        }
    }
    if turns.turns.is_empty() {
        return Err(invalid_value(
            "messages",
            "Gemini models need at least one non-empty user or assistant message \
             (system messages alone are not a conversation).",
        ));
    }
    Ok(turns)
}

// ------------------------------------------------------------------ tools

fn tree(raw: &RawValue, param: &str, expected: &str) -> Result<schema::Tree, ApiError> {
    schema::Tree::parse(raw).ok_or_else(|| type_error(param, expected))
}

fn tools(req: &ClientRequest<'_>) -> Result<Vec<FunctionDeclaration>, ApiError> {
    let Some(raw) = present(req.field("tools")) else {
        return Ok(Vec::new());
    };
    let t = tree(raw, "tools", "an array of tools")?;
    let list = t
        .as_array()
        .ok_or_else(|| type_error("tools", "an array of tools"))?;
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let p = format!("tools[{i}]");
        let kind = tool
            .get("type")
            .and_then(schema::Tree::as_str)
            .ok_or_else(|| ApiError::missing_param(&format!("{p}.type")))?;
        if kind != "function" {
            return Err(unsupported_value(
                &format!("{p}.type"),
                format!(
                    "Tool type '{}' is not supported with Gemini models; only 'function' is.",
                    echo(kind)
                ),
            ));
        }
        let fp = format!("{p}.function");
        let f = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| ApiError::missing_param(&fp))?;
        let name = f
            .get("name")
            .and_then(schema::Tree::as_str)
            .ok_or_else(|| ApiError::missing_param(&format!("{fp}.name")))?;
        let parameters = match f.get("parameters") {
            Some(s) => schema::parameters(s, &format!("{fp}.parameters"))?,
            None => None,
        };
        out.push(FunctionDeclaration {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(schema::Tree::as_str)
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            parameters,
        });
    }
    Ok(out)
}

/// `tool_choice` → `functionCallingConfig`: auto → AUTO, none → NONE,
/// required → ANY, a named function → ANY limited to that name.
fn tool_choice(req: &ClientRequest<'_>) -> Result<Option<FunctionCallingConfig>, ApiError> {
    let Some(raw) = present(req.field("tool_choice")) else {
        return Ok(None);
    };
    let bad = || {
        invalid_value(
            "tool_choice",
            "Invalid 'tool_choice': expected 'auto', 'none', 'required' or \
             {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        )
    };
    let mode = |mode| FunctionCallingConfig {
        mode,
        allowed_function_names: Vec::new(),
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(mode("AUTO"))),
            "none" => Ok(Some(mode("NONE"))),
            "required" => Ok(Some(mode("ANY"))),
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
            Ok(Some(FunctionCallingConfig {
                mode: "ANY",
                allowed_function_names: vec![name.to_string()],
            }))
        }
        _ => Err(type_error("tool_choice", "a string or an object")),
    }
}

// ------------------------------------------------------------ JSON / thinking

/// `response_format` → (`responseMimeType`, `responseSchema`).
fn response_format(
    req: &ClientRequest<'_>,
) -> Result<(Option<&'static str>, Option<Value>), ApiError> {
    let Some(raw) = present(req.field("response_format")) else {
        return Ok((None, None));
    };
    let t = tree(raw, "response_format", "an object with a 'type'")?;
    let kind = t
        .get("type")
        .and_then(schema::Tree::as_str)
        .ok_or_else(|| ApiError::missing_param("response_format.type"))?;
    match kind {
        "text" => Ok((None, None)),
        "json_object" => Ok((Some("application/json"), None)),
        "json_schema" => {
            let js = t
                .get("json_schema")
                .filter(|j| j.is_object())
                .ok_or_else(|| ApiError::missing_param("response_format.json_schema"))?;
            let schema = match js.get("schema") {
                Some(s) => schema::convert(s, "response_format.json_schema.schema", true)?,
                None => None,
            };
            Ok((Some("application/json"), schema))
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

/// Thinking: Anthropic's `thinking` object wins over `reasoning_effort`.
/// Asking for thinking also asks for the thought summaries
/// (`includeThoughts`), which come back as `reasoning_content`; turning it
/// off sends budget 0. Neither: Gemini's default (models that think decide
/// themselves, and give no summaries).
fn thinking(req: &ClientRequest<'_>) -> Result<Option<ThinkingConfig>, ApiError> {
    let config = |budget: u64| ThinkingConfig {
        thinking_budget: budget,
        include_thoughts: budget > 0,
    };
    if let Some(raw) = present(req.field("thinking")) {
        let v = parse_value(raw, "thinking", "an object")?;
        return match v.get("type").and_then(Value::as_str) {
            Some("disabled") => Ok(Some(config(0))),
            Some("enabled") => {
                let b = v
                    .get("budget_tokens")
                    .ok_or_else(|| ApiError::missing_param("thinking.budget_tokens"))?
                    .as_u64()
                    .ok_or_else(|| type_error("thinking.budget_tokens", "an integer"))?;
                Ok(Some(config(b)))
            }
            _ => Err(invalid_value(
                "thinking.type",
                "Invalid 'thinking.type': expected 'enabled' or 'disabled'.",
            )),
        };
    }
    if let Some(raw) = present(req.field("reasoning_effort")) {
        let effort = match parse_value(raw, "reasoning_effort", "a string")? {
            Value::String(s) => s,
            _ => return Err(type_error("reasoning_effort", "a string")),
        };
        return match effort_budget(&effort) {
            Some(b) => Ok(Some(config(b))),
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

/// OpenAI parameters without a Gemini equivalent, and whether a value is
/// the harmless default (accepted and ignored).
fn neutral(param: &str, raw: &RawValue) -> bool {
    let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    match (param, &v) {
        (_, Value::Null) => true,
        ("top_logprobs", v) => v.as_u64() == Some(0),
        ("logprobs" | "store", v) => v == &Value::Bool(false),
        ("parallel_tool_calls", v) => v == &Value::Bool(true),
        ("logit_bias", Value::Object(o)) => o.is_empty(),
        ("modalities", Value::Array(a)) => a.iter().all(|m| m == "text"),
        ("functions", Value::Array(a)) => a.is_empty(),
        ("service_tier", Value::String(s)) => s == "auto" || s == "default",
        _ => false,
    }
}

const UNSUPPORTED: [&str; 13] = [
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
    "verbosity",
    "store",
    "parallel_tool_calls",
    "service_tier",
];

// Accepted and ignored: `user` / `safety_identifier` (end-user ids; Gemini
// takes none), `metadata` (tags for OpenAI's stored completions),
// `prompt_cache_key` (OpenAI's cache routing hint; Gemini caches implicitly),
// `stream_options` (the gateway's own business).

/// Fields of the Gemini body the gateway writes; a passed-on unknown
/// parameter never overrides them.
const BODY_FIELDS: [&str; 6] = [
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "generationConfig",
];

/// The `GenerateContentRequest` body for `req`.
pub fn translate(
    req: &ClientRequest<'_>,
    model: &Model,
    unknown: UnknownParams,
) -> Result<Vec<u8>, ApiError> {
    let drop = model.drop_unsupported_params;
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
    let declarations = tools(req)?;
    let mut calling = tool_choice(req)?;
    if declarations.is_empty() {
        match &calling {
            Some(c) if c.mode == "ANY" => {
                return Err(invalid_value(
                    "tool_choice",
                    "Invalid 'tool_choice': it requires 'tools'.",
                ))
            }
            _ => calling = None,
        }
    }
    let (response_mime_type, response_schema) = response_format(req)?;

    let max_output_tokens = match present(req.field("max_completion_tokens"))
        .map(|r| (r, "max_completion_tokens"))
        .or_else(|| present(req.field("max_tokens")).map(|r| (r, "max_tokens")))
    {
        Some((raw, p)) => Some(uint(raw, p)?),
        None => None,
    };
    let candidate_count = match present(req.field("n")) {
        Some(raw) => Some(uint(raw, "n")?).filter(|&n| n != 1),
        None => None,
    };
    if let Some(k) = present(req.field("top_k")) {
        uint(k, "top_k")?;
    }
    let stop_sequences = match present(req.field("stop")) {
        None => Vec::new(),
        Some(raw) => {
            let bad = || type_error("stop", "a string or an array of strings");
            match parse_value(raw, "stop", "a string or an array of strings")? {
                Value::String(s) => vec![s],
                Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(bad()),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(bad()),
            }
        }
    };
    let safety_settings = present(req.field("safety_settings"));
    if let Some(s) = safety_settings {
        if !s.get().starts_with('[') {
            return Err(type_error("safety_settings", "an array of safety settings"));
        }
    }

    let (system_instruction, contents) = turns.finish(model.upstream.starts_with("gemini-3"));
    let body = Body {
        contents,
        system_instruction,
        tools: if declarations.is_empty() {
            Vec::new()
        } else {
            vec![OutTool {
                function_declarations: declarations,
            }]
        },
        tool_config: calling.map(|c| ToolConfig {
            function_calling_config: c,
        }),
        safety_settings,
        generation_config: GenerationConfig {
            stop_sequences,
            response_mime_type,
            response_schema,
            candidate_count,
            max_output_tokens,
            temperature: present(req.field("temperature")),
            top_p: present(req.field("top_p")),
            top_k: present(req.field("top_k")),
            seed: present(req.field("seed")),
            presence_penalty: present(req.field("presence_penalty")),
            frequency_penalty: present(req.field("frequency_penalty")),
            thinking_config: thinking(req)?,
        },
        extra,
    };
    serde_json::to_vec(&body)
        .map_err(|e| ApiError::invalid(format!("The request could not be translated: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Endpoint;
    use serde_json::json;

    fn model(upstream: &str, drop: bool) -> Model {
        Model {
            name: "g".into(),
            aliases: vec![],
            provider: 0,
            upstream: upstream.into(),
            kind: crate::config::ModelKind::Chat,
            context_window: None,
            max_output_tokens: None,
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

    fn go_with(body: Value, m: Model, u: UnknownParams) -> Result<Value, ApiError> {
        let bytes = body.to_string();
        let req = ClientRequest::parse(Endpoint::ChatCompletions, bytes.as_bytes())?;
        let out = translate(&req, &m, u)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    fn go(body: Value) -> Result<Value, ApiError> {
        go_with(
            body,
            model("gemini-2.5-flash", false),
            UnknownParams::Reject,
        )
    }

    fn hi(extra: Value) -> Value {
        let mut b = json!({"model":"g","messages":[{"role":"user","content":"hi"}]});
        if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
            o.extend(e);
        }
        b
    }

    #[test]
    fn minimal() {
        assert_eq!(
            go(hi(json!({}))).unwrap(),
            json!({"contents":[{"role":"user","parts":[{"text":"hi"}]}]})
        );
    }

    #[test]
    fn parameters_and_neutral_values() {
        let v = go(hi(
            json!({"n":1,"logprobs":false,"parallel_tool_calls":true,
            "service_tier":"auto","user":"u","metadata":{"a":"b"},"seed":7,"top_k":3,
            "max_tokens":10,"max_completion_tokens":20,"stop":"END"}),
        ))
        .unwrap();
        assert_eq!(
            v["generationConfig"],
            json!({"seed":7,"topK":3,"maxOutputTokens":20,"stopSequences":["END"]})
        );
        for p in [
            json!({"logprobs":true}),
            json!({"top_logprobs":2}),
            json!({"parallel_tool_calls":false}),
            json!({"service_tier":"flex"}),
            json!({"modalities":["text","audio"]}),
        ] {
            let e = go(hi(p.clone())).unwrap_err();
            assert_eq!(e.code.as_deref(), Some("unsupported_parameter"), "{p}");
            assert!(go_with(hi(p), model("m", true), UnknownParams::Reject).is_ok());
        }
    }

    #[test]
    fn unknown_pass_and_drop() {
        let b = hi(json!({"cachedContent":"cachedContents/1","contents":[]}));
        let e = go(b.clone()).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("unknown_parameter"));
        let v = go_with(b.clone(), model("m", false), UnknownParams::Pass).unwrap();
        assert_eq!(v["cachedContent"], "cachedContents/1");
        assert_eq!(v["contents"][0]["role"], "user");
        let v = go_with(b, model("m", false), UnknownParams::Drop).unwrap();
        assert!(v.get("cachedContent").is_none());
    }

    #[test]
    fn thinking_mapping() {
        let v = go(hi(json!({"reasoning_effort":"low"}))).unwrap();
        assert_eq!(
            v["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget":2048,"includeThoughts":true})
        );
        let v = go(hi(json!({"reasoning_effort":"none"}))).unwrap();
        assert_eq!(
            v["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget":0})
        );
        let v = go(hi(
            json!({"reasoning_effort":"high","thinking":{"type":"enabled","budget_tokens":500}}),
        ))
        .unwrap();
        assert_eq!(
            v["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            500
        );
        let e = go(hi(json!({"reasoning_effort":"max"}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
    }

    #[test]
    fn tool_choice_and_signatures() {
        let tools = json!([{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}}]);
        let v = go(hi(
            json!({"tools":tools,"tool_choice":{"type":"function","function":{"name":"f"}}}),
        ))
        .unwrap();
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["f"]}})
        );
        let e = go(hi(json!({"tool_choice":"required"}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let v = go(hi(json!({"tool_choice":"none"}))).unwrap();
        assert!(v.get("toolConfig").is_none());
        let conv = json!({"model":"g","messages":[
            {"role":"user","content":"x"},
            {"role":"assistant","tool_calls":[
                {"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
                {"id":"b","type":"function","function":{"name":"f","arguments":""}}]},
            {"role":"tool","tool_call_id":"a","content":"[1]"},
            {"role":"tool","tool_call_id":"b","content":"{\"ok\":true}"}]});
        let v = go_with(
            conv.clone(),
            model("gemini-3-pro-preview", false),
            UnknownParams::Reject,
        )
        .unwrap();
        assert_eq!(
            v["contents"][1]["parts"][0]["thoughtSignature"],
            SKIP_SIGNATURE
        );
        assert!(v["contents"][1]["parts"][1]
            .get("thoughtSignature")
            .is_none());
        assert_eq!(
            v["contents"][2]["parts"],
            json!([{"functionResponse":{"name":"f","response":{"content":"[1]"}}},
                   {"functionResponse":{"name":"f","response":{"ok":true}}}])
        );
        let v = go(conv).unwrap();
        assert!(v["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none());
    }

    #[test]
    fn tool_results_follow_the_call_order() {
        let v = go(json!({"model":"g","messages":[
            {"role":"user","content":"x"},
            {"role":"assistant","tool_calls":[
                {"id":"a","type":"function","function":{"name":"f","arguments":"{\"n\":1}"}},
                {"id":"b","type":"function","function":{"name":"f","arguments":"{\"n\":2}"}}]},
            {"role":"tool","tool_call_id":"b","content":"two"},
            {"role":"user","content":"and?"},
            {"role":"tool","tool_call_id":"a","content":"one"}]}))
        .unwrap();
        assert_eq!(
            v["contents"][2]["parts"],
            json!([{"functionResponse":{"name":"f","response":{"content":"one"}}},
                   {"functionResponse":{"name":"f","response":{"content":"two"}}},
                   {"text":"and?"}])
        );
    }

    #[test]
    fn message_errors() {
        for (body, param) in [
            (
                json!({"model":"g","messages":[{"role":"system","content":"s"}]}),
                "messages",
            ),
            (
                json!({"model":"g","messages":[{"role":"tool","tool_call_id":"x","content":"r"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model":"g","messages":[{"role":"function","name":"f","content":"x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model":"g","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model":"g","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-abc"}}]}]}),
                "messages[0].content[0].file.file_id",
            ),
            (
                json!({"model":"g","messages":[{"role":"assistant","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
        ] {
            let e = go(body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
    }

    #[test]
    fn every_byte_mutated_never_panics() {
        let body = r##"{"model":"g","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]},{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"a","content":"{}"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","$defs":{"D":{"type":"string"}},"properties":{"x":{"$ref":"#/$defs/D"},"y":{"anyOf":[{"type":"null"}]}}}}}],"tool_choice":"required","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"z":{"enum":[1,null]}}}}},"stop":["x"],"reasoning_effort":"low"}"##;
        let m = model("gemini-3-pro-preview", false);
        for i in 0..body.len() {
            for b in [b'"', b'{', b'[', b'}', b'1', b'n', b' '] {
                let mut bytes = body.as_bytes().to_vec();
                bytes[i] = b;
                if let Ok(req) = ClientRequest::parse(Endpoint::ChatCompletions, &bytes) {
                    let _ = translate(&req, &m, UnknownParams::Pass);
                }
            }
        }
    }

    #[test]
    fn no_panic_on_odd_input() {
        let bodies = [
            json!({"model":"g","messages":[{"role":"user","content":[null]}]}),
            json!({"model":"g","messages":[{"role":"user","content":[{"type":"image_url"}]}]}),
            json!({"model":"g","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"../x"}}]}]}),
            json!({"model":"g","messages":[{"role":"assistant","tool_calls":[{}]}]}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":7}}]}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"stop":[1]}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":-5}}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"top_k":-1}),
            json!({"model":"g","messages":[{"role":"user","content":"x"}],"safety_settings":{}}),
        ];
        for b in bodies {
            let e = go(b.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{b}");
        }
    }
}
