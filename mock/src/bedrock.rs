//! Amazon Bedrock runtime: `POST /model/{modelId}/converse`,
//! `/model/{modelId}/converse-stream` (binary AWS event stream) and
//! `/model/{modelId}/invoke` for the Titan and Cohere embedding models.
//!
//! The `modelId` segment is percent-decoded, so inference profiles and ARNs
//! (`us.anthropic.claude-3-5-sonnet-20241022-v2%3A0`,
//! `arn%3Aaws%3Abedrock%3A...%2F...`) resolve as the real service resolves
//! them.
//!
//! Auth is a Bedrock API key (`Authorization: Bearer`) or AWS SigV4,
//! verified with [`crate::sigv4`] against the configured key pair for
//! service `bedrock`. Errors are `{"message": "..."}` (the identity layer
//! says `{"Message": ...}`) with `x-amzn-ErrorType: Name:http://internal.amazon.com/coral/...`
//! and `x-amzn-RequestId`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::behavior::{html_response, Behavior};
use crate::body::Body;
use crate::openai::{bearer, set};
use crate::sigv4;
use crate::text::{self, count_tokens, first_chars};
use crate::{now_unix, Ctx};

/// Default accepted Bedrock API key.
pub const DEFAULT_API_KEY: &str = "mock-bedrock-key";
/// Default access key id for SigV4.
pub const DEFAULT_ACCESS_KEY_ID: &str = "AKIDMOCKEXAMPLE";
/// Default secret access key for SigV4.
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "mock/secret/EXAMPLEKEY";
/// The SigV4 service name.
pub const SIGNING_SERVICE: &str = "bedrock";
/// Host label whose region must match the credential scope.
pub const SERVICE_HOST: &str = "bedrock-runtime";
/// Tokens charged for an image or document block.
pub const MEDIA_TOKENS: u64 = 85;
/// Size of the `p` padding field in stream payloads cycles up to this.
const PAD_ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const CORAL_SERVICE: &str = "com.amazon.coral.service";
const CORAL_BEDROCK: &str = "com.amazon.bedrock";

/// Providers whose model ids are served.
const PROVIDERS: &[&str] = &[
    "anthropic",
    "amazon",
    "meta",
    "mistral",
    "cohere",
    "ai21",
    "deepseek",
    "qwen",
    "openai",
    "writer",
    "google",
    "moonshot",
    "minimax",
    "nvidia",
    "twelvelabs",
    "stability",
];
/// Geographic / global inference profile prefixes.
const PROFILE_PREFIXES: &[&str] = &["us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"];

// ---------------------------------------------------------------------------
// Errors

/// A Bedrock runtime error.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsError {
    pub status: StatusCode,
    /// Exception name, e.g. `ValidationException`.
    pub kind: &'static str,
    pub message: String,
    /// `com.amazon.bedrock` or `com.amazon.coral.service`.
    namespace: &'static str,
    /// The identity layer spells the key `Message`.
    capital: bool,
}

type R<T> = Result<T, AwsError>;

impl AwsError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            message: message.into(),
            namespace: CORAL_BEDROCK,
            capital: false,
        }
    }

    fn coral(mut self) -> Self {
        self.namespace = CORAL_SERVICE;
        self
    }

    fn capital(mut self) -> Self {
        self.capital = true;
        self
    }

    /// 400 `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", message).coral()
    }

    /// `x-amzn-ErrorType` value.
    pub fn error_type(&self) -> String {
        format!(
            "{}:http://internal.amazon.com/coral/{}/",
            self.kind, self.namespace
        )
    }

    pub fn into_response(self) -> Response<Body> {
        let key = if self.capital { "Message" } else { "message" };
        let mut body = Map::new();
        body.insert(key.into(), Value::from(self.message.as_str()));
        let mut resp = json_response(StatusCode::OK, &Value::Object(body));
        *resp.status_mut() = self.status;
        set(resp.headers_mut(), "x-amzn-errortype", &self.error_type());
        resp
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Smithy-style constraint message.
fn constraint(value: &str, path: &str, what: &str) -> AwsError {
    AwsError::validation(format!(
        "1 validation error detected: Value {value} at '{path}' failed to satisfy constraint: {what}"
    ))
}

fn throttled() -> AwsError {
    AwsError::new(
        429,
        "ThrottlingException",
        "Too many requests, please wait before trying again.",
    )
}

/// The error for `fail=STATUS`.
fn fault_error(status: u16) -> AwsError {
    match status {
        400 => AwsError::validation("The request could not be processed as sent."),
        401 | 403 => AwsError::new(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404 => AwsError::new(
            404,
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        408 => AwsError::new(
            408,
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        424 => AwsError::new(
            424,
            "ModelErrorException",
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        429 => throttled(),
        503 => AwsError::new(
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        s if s >= 500 => AwsError::new(
            s,
            "InternalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        s => AwsError::new(
            s,
            "ValidationException",
            "The request could not be processed as sent.",
        ),
    }
}

// ---------------------------------------------------------------------------
// Event stream encoding

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE 802.3, the one zlib computes), used by the event stream.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// One `application/vnd.amazon.eventstream` message: total length, headers
/// length, prelude CRC, headers (`name_len:u8 name type:u8=7 len:u16 value`),
/// payload, message CRC (over everything before it). All big-endian.
pub fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(96);
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn event_frame(event: &str, payload: &Value) -> Vec<u8> {
    encode_frame(
        &[
            (":event-type", event),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &serde_json::to_vec(payload).unwrap_or_default(),
    )
}

fn exception_frame(kind: &str, message: &str) -> Vec<u8> {
    encode_frame(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &serde_json::to_vec(&json!({ "message": message })).unwrap_or_default(),
    )
}

fn stream_exception_message(kind: &str) -> &'static str {
    match kind {
        "throttlingException" => "Too many requests, please wait before trying again. You have sent too many requests.  Wait before trying again.",
        "serviceUnavailableException" => "Bedrock is unable to process your request.",
        "validationException" => "The model returned the following errors: Input is too long for requested model.",
        "modelStreamErrorException" => "The model encountered an error processing the stream.",
        _ => "The system encountered an unexpected error during processing. Try your request again.",
    }
}

// ---------------------------------------------------------------------------
// Routes and models

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Converse,
    ConverseStream,
    Invoke,
}

/// Splits `/model/{id}/{op}`; the id is percent-decoded.
fn parse_route(sub: &str) -> Option<(String, Op)> {
    let rest = sub.strip_prefix("/model/")?;
    let (raw_id, op) = rest.rsplit_once('/')?;
    let op = match op {
        "converse" => Op::Converse,
        "converse-stream" => Op::ConverseStream,
        "invoke" => Op::Invoke,
        _ => return None,
    };
    let id = sigv4::percent_decode(raw_id);
    (!id.is_empty()).then_some((id, op))
}

/// The base model id of an id, inference profile or ARN
/// (`us.anthropic.x-v2:0` → `anthropic.x-v2:0`), when it is well formed.
fn base_model(id: &str) -> Option<String> {
    let id = if let Some(arn) = id.strip_prefix("arn:") {
        let parts: Vec<&str> = arn.splitn(5, ':').collect();
        if parts.len() != 5 || parts[1] != "bedrock" {
            return None;
        }
        let (kind, name) = parts[4].split_once('/')?;
        match kind {
            "foundation-model"
            | "inference-profile"
            | "application-inference-profile"
            | "provisioned-model"
            | "custom-model"
            | "imported-model" => {}
            _ => return None,
        }
        if !name.contains('.') {
            // Opaque ids (provisioned / application profiles): a chat model.
            return Some("anthropic.claude-custom".to_string());
        }
        name.to_string()
    } else {
        id.to_string()
    };
    let (first, rest) = id.split_once('.')?;
    let (provider, model) = if PROFILE_PREFIXES.contains(&first) {
        rest.split_once('.')?
    } else {
        (first, rest)
    };
    (PROVIDERS.contains(&provider) && !model.is_empty()).then(|| format!("{provider}.{model}"))
}

fn is_embedding(base: &str) -> bool {
    base.contains("embed")
}

fn invalid_model() -> AwsError {
    AwsError::validation("The provided model identifier is invalid.")
}

// ---------------------------------------------------------------------------
// Auth

fn check_auth(ctx: &Ctx<'_>) -> Option<AwsError> {
    let Some(value) = ctx
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Some(
            AwsError::new(
                403,
                "AccessDeniedException",
                "Authorization header is missing",
            )
            .coral()
            .capital(),
        );
    };
    let cfg = &ctx.state.config;
    if let Some(key) = bearer(ctx.headers) {
        return if cfg.bedrock_api_keys.iter().any(|k| k == key) {
            None
        } else {
            Some(
                AwsError::new(
                    403,
                    "AccessDeniedException",
                    "Authentication failed: Please make sure your API Key is valid.",
                )
                .coral()
                .capital(),
            )
        };
    }
    if !value.starts_with(sigv4::ALGORITHM) {
        return Some(
            AwsError::new(
                403,
                "IncompleteSignatureException",
                format!(
                    "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization={}",
                    value.split_whitespace().next().unwrap_or("")
                ),
            )
            .coral(),
        );
    }
    let req = sigv4::Signed {
        method: ctx.method.as_str(),
        raw_path: ctx.path,
        raw_query: ctx.query,
        headers: ctx.headers,
        authority: ctx.authority,
        body: ctx.body,
    };
    match sigv4::verify(
        &req,
        &cfg.aws_access_key_id,
        &cfg.aws_secret_access_key,
        SIGNING_SERVICE,
        SERVICE_HOST,
        now_unix(),
    ) {
        Ok(()) => None,
        Err(sigv4::Failure::Incomplete(m)) => {
            Some(AwsError::new(403, "IncompleteSignatureException", m).coral())
        }
        Err(sigv4::Failure::UnknownKey) => Some(
            AwsError::new(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
            .coral(),
        ),
        Err(sigv4::Failure::Invalid(m)) => {
            Some(AwsError::new(403, "InvalidSignatureException", m).coral())
        }
        Err(sigv4::Failure::Mismatch { canonical, sts }) => Some(
            AwsError::new(
                403,
                "InvalidSignatureException",
                format!(
                    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{sts}'\n"
                ),
            )
            .coral(),
        ),
    }
}

// ---------------------------------------------------------------------------
// Converse request

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

enum Blk<'a> {
    Text(&'a str),
    Media,
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    ToolResult {
        id: &'a str,
        text: String,
    },
    Reasoning,
    Other,
}

impl Blk<'_> {
    fn tokens(&self) -> u64 {
        match self {
            Blk::Text(t) => u64::from(count_tokens(t)),
            Blk::Media => MEDIA_TOKENS,
            Blk::ToolUse { name, input, .. } => {
                u64::from(count_tokens(name)) + u64::from(count_tokens(&input.to_string()))
            }
            Blk::ToolResult { text, .. } => u64::from(count_tokens(text)),
            Blk::Reasoning | Blk::Other => 0,
        }
    }
}

struct Message<'a> {
    role: Role,
    blocks: Vec<Blk<'a>>,
}

struct ToolSpec<'a> {
    name: &'a str,
    schema: Option<&'a Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Choice {
    Auto,
    Any,
    Tool,
}

struct Converse<'a> {
    model_id: &'a str,
    messages: Vec<Message<'a>>,
    tools: Vec<ToolSpec<'a>>,
    choice: Choice,
    choice_name: Option<&'a str>,
    max_tokens: Option<u64>,
    stop: Vec<&'a str>,
    reasoning: bool,
    input_tokens: u64,
}

const BLOCK_KEYS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "BOOLEAN_VALUE",
        Value::Number(_) => "NUMBER_VALUE",
        Value::String(_) => "STRING_VALUE",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

fn not_a(v: &Value, what: &str) -> AwsError {
    AwsError::serialization(format!("{} can not be converted to {what}", type_name(v)))
}

fn result_text(content: Option<&Value>) -> String {
    content
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|b| {
                    if let Some(t) = b.get("text").and_then(Value::as_str) {
                        t.to_string()
                    } else if let Some(j) = b.get("json") {
                        j.to_string()
                    } else {
                        String::new()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn parse_block<'a>(b: &'a Value, i: usize, j: usize) -> R<Blk<'a>> {
    let Some(o) = b.as_object() else {
        return Err(not_a(b, "ContentBlock"));
    };
    let keys: Vec<&str> = o
        .keys()
        .map(String::as_str)
        .filter(|k| BLOCK_KEYS.contains(k))
        .collect();
    if keys.len() != 1 {
        return Err(AwsError::validation(format!(
            "The ContentBlock object at messages.{i}.content.{j} must set exactly one of the following keys: {}.",
            BLOCK_KEYS.join(", ")
        )));
    }
    let v = &o[keys[0]];
    Ok(match keys[0] {
        "text" => {
            let t = v.as_str().ok_or_else(|| not_a(v, "String"))?;
            if t.trim().is_empty() {
                return Err(AwsError::validation(format!(
                    "The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
                )));
            }
            Blk::Text(t)
        }
        "image" | "document" | "video" | "audio" => Blk::Media,
        "toolUse" => {
            let id = v.get("toolUseId").and_then(Value::as_str).unwrap_or("");
            let name = v.get("name").and_then(Value::as_str).unwrap_or("");
            Blk::ToolUse {
                id,
                name,
                input: v.get("input").unwrap_or(&Value::Null),
            }
        }
        "toolResult" => {
            let id = v.get("toolUseId").and_then(Value::as_str).unwrap_or("");
            Blk::ToolResult {
                id,
                text: result_text(v.get("content")),
            }
        }
        "reasoningContent" => Blk::Reasoning,
        _ => Blk::Other,
    })
}

fn parse_messages(v: Option<&Value>) -> R<Vec<Message<'_>>> {
    let msgs = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(x) => return Err(not_a(x, "list")),
    };
    let mut out: Vec<Message<'_>> = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let Some(o) = m.as_object() else {
            return Err(not_a(m, "Message"));
        };
        let role = match o.get("role") {
            Some(Value::String(s)) if s == "user" => Role::User,
            Some(Value::String(s)) if s == "assistant" => Role::Assistant,
            None | Some(Value::Null) => {
                return Err(constraint(
                    "null",
                    &format!("messages.{}.member.role", i + 1),
                    "Member must not be null",
                ))
            }
            Some(Value::String(s)) => {
                return Err(constraint(
                    &format!("'{s}'"),
                    &format!("messages.{}.member.role", i + 1),
                    "Member must satisfy enum value set: [user, assistant]",
                ))
            }
            Some(x) => return Err(not_a(x, "ConversationRole")),
        };
        let content = match o.get("content") {
            None | Some(Value::Null) => {
                return Err(constraint(
                    "null",
                    &format!("messages.{}.member.content", i + 1),
                    "Member must not be null",
                ))
            }
            Some(Value::Array(a)) => a,
            Some(x) => return Err(not_a(x, "list")),
        };
        if i == 0 && role != Role::User {
            return Err(AwsError::validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        if i > 0 && out[i - 1].role == role {
            return Err(AwsError::validation(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            ));
        }
        if content.is_empty() {
            return Err(AwsError::validation(format!(
                "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
            )));
        }
        let mut blocks = Vec::with_capacity(content.len());
        for (j, b) in content.iter().enumerate() {
            blocks.push(parse_block(b, i, j)?);
        }
        out.push(Message { role, blocks });
    }
    if out.is_empty() {
        return Err(AwsError::validation(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    Ok(out)
}

fn check_tool_blocks(messages: &[Message<'_>], has_tools: bool) -> R<()> {
    let mut pending: Option<(usize, Vec<&str>)> = None;
    for (i, m) in messages.iter().enumerate() {
        let uses: Vec<&str> = m
            .blocks
            .iter()
            .filter_map(|b| match b {
                Blk::ToolUse { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        let results: Vec<(usize, &str)> = m
            .blocks
            .iter()
            .enumerate()
            .filter_map(|(j, b)| match b {
                Blk::ToolResult { id, .. } => Some((j, *id)),
                _ => None,
            })
            .collect();
        if (!uses.is_empty() || !results.is_empty()) && !has_tools {
            return Err(AwsError::validation(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            ));
        }
        if m.role == Role::User && !uses.is_empty() {
            return Err(AwsError::validation(format!(
                "messages.{i}.content: toolUse blocks are only allowed in assistant messages."
            )));
        }
        if m.role == Role::Assistant && !results.is_empty() {
            return Err(AwsError::validation(format!(
                "messages.{i}.content: toolResult blocks are only allowed in user messages."
            )));
        }
        if m.role == Role::User {
            let expected = pending.take().map(|(_, ids)| ids).unwrap_or_default();
            if results.len() > expected.len() {
                return Err(AwsError::validation(format!(
                    "The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of previous turn."
                )));
            }
            for (j, id) in &results {
                if !expected.contains(id) {
                    return Err(AwsError::validation(format!(
                        "The toolUseId {id} at messages.{i}.content.{j}.toolResult does not match any toolUse block of the previous turn."
                    )));
                }
            }
            let missing: Vec<&str> = expected
                .iter()
                .filter(|id| !results.iter().any(|(_, r)| r == *id))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(AwsError::validation(format!(
                    "Expected toolResult blocks at messages.{i}.content for the following Ids: {}",
                    missing.join(", ")
                )));
            }
        } else if !uses.is_empty() {
            pending = Some((i, uses));
        }
    }
    Ok(())
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn parse_converse<'a>(v: &'a Value, model_id: &'a str) -> R<Converse<'a>> {
    let Some(o) = v.as_object() else {
        return Err(not_a(v, "ConverseRequest"));
    };
    let messages = parse_messages(o.get("messages"))?;
    let mut input_tokens = 3u64;
    for m in &messages {
        input_tokens += 4 + m.blocks.iter().map(Blk::tokens).sum::<u64>();
    }
    match o.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, s) in a.iter().enumerate() {
                match s.get("text") {
                    Some(Value::String(t)) => input_tokens += u64::from(count_tokens(t)),
                    Some(x) => return Err(not_a(x, "String")),
                    None if s.get("cachePoint").is_some() || s.get("guardContent").is_some() => {}
                    None => {
                        return Err(AwsError::validation(format!(
                            "The SystemContentBlock object at system.{i} must set one of the following keys: text, guardContent, cachePoint."
                        )))
                    }
                }
            }
        }
        Some(x) => return Err(not_a(x, "list")),
    }

    let mut max_tokens = None;
    let mut stop = Vec::new();
    match o.get("inferenceConfig") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ic)) => {
            if let Some(m) = ic.get("maxTokens").filter(|x| !x.is_null()) {
                let n = m.as_i64().ok_or_else(|| not_a(m, "Integer"))?;
                if n < 1 {
                    return Err(constraint(
                        &format!("'{n}'"),
                        "inferenceConfig.maxTokens",
                        "Member must have value greater than or equal to 1",
                    ));
                }
                max_tokens = Some(n as u64);
            }
            for key in ["temperature", "topP"] {
                if let Some(t) = ic.get(key).filter(|x| !x.is_null()) {
                    let x = t.as_f64().ok_or_else(|| not_a(t, "Float"))?;
                    if x < 0.0 {
                        return Err(constraint(
                            &format!("'{x}'"),
                            &format!("inferenceConfig.{key}"),
                            "Member must have value greater than or equal to 0",
                        ));
                    }
                    if x > 1.0 {
                        return Err(constraint(
                            &format!("'{x}'"),
                            &format!("inferenceConfig.{key}"),
                            "Member must have value less than or equal to 1",
                        ));
                    }
                }
            }
            match ic.get("stopSequences") {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for s in a {
                        stop.push(s.as_str().ok_or_else(|| not_a(s, "String"))?);
                    }
                }
                Some(x) => return Err(not_a(x, "list")),
            }
        }
        Some(x) => return Err(not_a(x, "InferenceConfiguration")),
    }

    let mut tools = Vec::new();
    let mut choice = Choice::Auto;
    let mut choice_name = None;
    let has_tool_config = match o.get("toolConfig") {
        None | Some(Value::Null) => false,
        Some(Value::Object(tc)) => {
            let list = match tc.get("tools") {
                Some(Value::Array(a)) => a,
                None | Some(Value::Null) => {
                    return Err(constraint(
                        "null",
                        "toolConfig.tools",
                        "Member must not be null",
                    ))
                }
                Some(x) => return Err(not_a(x, "list")),
            };
            if list.is_empty() {
                return Err(constraint(
                    "'[]'",
                    "toolConfig.tools",
                    "Member must have length greater than or equal to 1",
                ));
            }
            for (i, t) in list.iter().enumerate() {
                if t.get("cachePoint").is_some() {
                    continue;
                }
                let Some(spec) = t.get("toolSpec") else {
                    return Err(AwsError::validation(format!(
                        "The Tool object at toolConfig.tools.{i} must set one of the following keys: toolSpec, systemTool, cachePoint."
                    )));
                };
                let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
                if !valid_tool_name(name) {
                    return Err(constraint(
                        &format!("'{name}'"),
                        &format!("toolConfig.tools.{}.member.toolSpec.name", i + 1),
                        "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+",
                    ));
                }
                let Some(schema) = spec.get("inputSchema") else {
                    return Err(constraint(
                        "null",
                        &format!("toolConfig.tools.{}.member.toolSpec.inputSchema", i + 1),
                        "Member must not be null",
                    ));
                };
                let Some(json_schema) = schema.get("json") else {
                    return Err(AwsError::validation(format!(
                        "The ToolInputSchema object at toolConfig.tools.{i}.toolSpec.inputSchema must set one of the following keys: json."
                    )));
                };
                input_tokens += u64::from(count_tokens(name))
                    + spec
                        .get("description")
                        .and_then(Value::as_str)
                        .map_or(0, |d| u64::from(count_tokens(d)))
                    + u64::from(count_tokens(&json_schema.to_string()));
                tools.push(ToolSpec {
                    name,
                    schema: Some(json_schema),
                });
            }
            match tc.get("toolChoice") {
                None | Some(Value::Null) => {}
                Some(Value::Object(c)) => {
                    if c.contains_key("any") {
                        choice = Choice::Any;
                    } else if let Some(t) = c.get("tool") {
                        choice = Choice::Tool;
                        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                        if !tools.iter().any(|s| s.name == name) {
                            return Err(AwsError::validation(format!(
                                "The tool {name} specified in toolChoice is not defined in toolConfig.tools."
                            )));
                        }
                        choice_name = Some(name);
                    } else if !c.contains_key("auto") {
                        return Err(AwsError::validation(
                            "The ToolChoice object at toolConfig.toolChoice must set one of the following keys: auto, any, tool.",
                        ));
                    }
                }
                Some(x) => return Err(not_a(x, "ToolChoice")),
            }
            true
        }
        Some(x) => return Err(not_a(x, "ToolConfiguration")),
    };
    check_tool_blocks(&messages, has_tool_config)?;

    let extra = o.get("additionalModelRequestFields");
    let enabled = |v: Option<&Value>| {
        v.and_then(|t| t.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "enabled" || t == "adaptive")
    };
    let reasoning = extra.is_some_and(|e| {
        enabled(e.get("thinking"))
            || enabled(e.get("reasoning_config"))
            || enabled(e.get("reasoningConfig"))
    });

    Ok(Converse {
        model_id,
        messages,
        tools,
        choice,
        choice_name,
        max_tokens,
        stop,
        reasoning,
        input_tokens,
    })
}

// ---------------------------------------------------------------------------
// Converse answer

enum Out {
    Reasoning {
        text: String,
        signature: String,
    },
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Out {
    fn tokens(&self) -> u64 {
        match self {
            Out::Reasoning { text, .. } | Out::Text(text) => u64::from(count_tokens(text)),
            Out::ToolUse { name, input, .. } => {
                u64::from(count_tokens(name)) + u64::from(count_tokens(&input.to_string()))
            }
        }
    }

    fn json(&self) -> Value {
        match self {
            Out::Reasoning { text, signature } => json!({
                "reasoningContent": { "reasoningText": { "text": text, "signature": signature } }
            }),
            Out::Text(t) => json!({ "text": t }),
            Out::ToolUse { id, name, input } => {
                json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } })
            }
        }
    }
}

struct Answer {
    blocks: Vec<Out>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

impl Answer {
    fn output_tokens(&self) -> u64 {
        self.blocks.iter().map(Out::tokens).sum()
    }
}

fn image_suffix(images: usize) -> String {
    match images {
        0 => String::new(),
        1 => " [1 image]".to_string(),
        n => format!(" [{n} images]"),
    }
}

fn signature(seed: u64) -> String {
    use base64::Engine as _;
    let mut rng = text::SplitMix64(seed ^ 0x6272_6472_6f63_6b21);
    let mut bytes = Vec::with_capacity(64);
    for _ in 0..8 {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn answer(c: &Converse<'_>, seed: u64, beh: &Behavior) -> Answer {
    let last_user = c.messages.iter().rev().find(|m| m.role == Role::User);
    let mut user_text = Vec::new();
    let mut results = Vec::new();
    let mut images = 0;
    for b in last_user.map(|m| m.blocks.as_slice()).unwrap_or_default() {
        match b {
            Blk::Text(t) => user_text.push(*t),
            Blk::Media => images += 1,
            Blk::ToolResult { text, .. } => results.push(text.as_str()),
            _ => {}
        }
    }
    let has_results =
        last_user.is_some_and(|m| m.blocks.iter().any(|b| matches!(b, Blk::ToolResult { .. })));
    let user_text = user_text.join(" ");
    let result_text = results.join(" ");

    let mut blocks = Vec::new();
    let mut used = 0;
    if c.reasoning {
        let about = if has_results {
            &result_text
        } else {
            &user_text
        };
        let text = format!("Mock reasoning about: {}", first_chars(about, 200));
        used += u64::from(count_tokens(&text));
        blocks.push(Out::Reasoning {
            text,
            signature: signature(seed),
        });
    }
    let call = !c.tools.is_empty()
        && match c.choice {
            Choice::Auto => !has_results,
            Choice::Any | Choice::Tool => true,
        };
    if call {
        let target = c
            .choice_name
            .and_then(|n| c.tools.iter().find(|t| t.name == n))
            .unwrap_or(&c.tools[0]);
        let input = match target.schema {
            Some(s) => crate::schema::generate(s, true),
            None => Value::Object(Map::new()),
        };
        let input = if input.is_object() {
            input
        } else {
            Value::Object(Map::new())
        };
        blocks.push(Out::ToolUse {
            id: format!("tooluse_{}", text::base62_id(seed ^ 0x746f_6f6c, 22)),
            name: target.name.to_string(),
            input,
        });
        return Answer {
            blocks,
            stop_reason: "tool_use",
            stop_sequence: None,
        };
    }
    let mut reply = match beh.bytes {
        Some(n) => text::filler(n),
        None if has_results => format!("Tool result received: {}", first_chars(&result_text, 200)),
        None => format!(
            "Hello from the mock bedrock model {}. You said: {}{}",
            c.model_id,
            first_chars(&user_text, 200),
            image_suffix(images)
        ),
    };
    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    if let Some((pos, s)) = c
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| reply.find(*s).map(|p| (p, *s)))
        .min_by_key(|(p, _)| *p)
    {
        reply.truncate(pos);
        stop_reason = "stop_sequence";
        stop_sequence = Some(s.to_string());
    }
    if let Some(max) = c.max_tokens {
        let (cut, was_cut) = text::cut_to_tokens(&reply, max.saturating_sub(used));
        if was_cut {
            reply = cut;
            stop_reason = "max_tokens";
            stop_sequence = None;
        }
    }
    if !reply.is_empty() || blocks.is_empty() {
        blocks.push(Out::Text(reply));
    }
    Answer {
        blocks,
        stop_reason,
        stop_sequence,
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({ "inputTokens": input, "outputTokens": output, "totalTokens": input + output })
}

fn converse_json(c: &Converse<'_>, ans: &Answer, latency: u64) -> Value {
    let mut m = Map::new();
    m.insert(
        "output".into(),
        json!({ "message": {
            "role": "assistant",
            "content": ans.blocks.iter().map(Out::json).collect::<Vec<_>>(),
        }}),
    );
    m.insert("stopReason".into(), Value::from(ans.stop_reason));
    if let Some(s) = &ans.stop_sequence {
        m.insert(
            "additionalModelResponseFields".into(),
            json!({ "stop_sequence": s }),
        );
    }
    m.insert("usage".into(), usage(c.input_tokens, ans.output_tokens()));
    m.insert("metrics".into(), json!({ "latencyMs": latency }));
    Value::Object(m)
}

/// Adds the `p` padding field real payloads carry (length varies).
fn padded(mut v: Value, n: usize) -> Value {
    if let Value::Object(o) = &mut v {
        let len = 1 + n % PAD_ALPHABET.len();
        o.insert("p".into(), Value::from(&PAD_ALPHABET[..len]));
    }
    v
}

fn json_fragments(json: &str, chunks: Option<usize>) -> Vec<String> {
    let chars: Vec<char> = json.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = match chunks {
        Some(n) => chars.len().div_ceil(n.max(1)),
        None => 5,
    }
    .max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn stream_response(
    c: &Converse<'_>,
    ans: &Answer,
    beh: &Behavior,
    started: Instant,
) -> Response<Body> {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut deltas: Vec<usize> = Vec::new();
    let mut n = 0usize;
    let mut push = |frames: &mut Vec<Vec<u8>>, event: &str, v: Value| {
        n += 1;
        frames.push(event_frame(event, &padded(v, n * 7)));
    };
    push(&mut frames, "messageStart", json!({ "role": "assistant" }));
    let mut output = 0u64;
    for (index, b) in ans.blocks.iter().enumerate() {
        match b {
            Out::Reasoning { text: t, signature } => {
                for w in text::split_words(t) {
                    deltas.push(frames.len());
                    push(
                        &mut frames,
                        "contentBlockDelta",
                        json!({ "contentBlockIndex": index, "delta": { "reasoningContent": { "text": w } } }),
                    );
                }
                push(
                    &mut frames,
                    "contentBlockDelta",
                    json!({ "contentBlockIndex": index, "delta": { "reasoningContent": { "signature": signature } } }),
                );
                output += b.tokens();
            }
            Out::Text(t) => {
                let pieces: Vec<String> = match beh.chunks {
                    Some(k) => text::split_into(t, k),
                    None => text::split_words(t)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                };
                output += u64::from(count_tokens(&pieces.concat()));
                for p in pieces {
                    deltas.push(frames.len());
                    push(
                        &mut frames,
                        "contentBlockDelta",
                        json!({ "contentBlockIndex": index, "delta": { "text": p } }),
                    );
                }
            }
            Out::ToolUse { id, name, input } => {
                push(
                    &mut frames,
                    "contentBlockStart",
                    json!({ "contentBlockIndex": index, "start": { "toolUse": { "toolUseId": id, "name": name } } }),
                );
                for frag in json_fragments(&input.to_string(), beh.chunks) {
                    deltas.push(frames.len());
                    push(
                        &mut frames,
                        "contentBlockDelta",
                        json!({ "contentBlockIndex": index, "delta": { "toolUse": { "input": frag } } }),
                    );
                }
                output += b.tokens();
            }
        }
        push(
            &mut frames,
            "contentBlockStop",
            json!({ "contentBlockIndex": index }),
        );
    }
    if let Some(kind) = &beh.stream_exception {
        let keep = match deltas.get(deltas.len() / 2) {
            Some(&i) => i + 1,
            None => frames.len().min(1),
        };
        frames.truncate(keep);
        frames.push(exception_frame(kind, stream_exception_message(kind)));
    } else if !beh.nodone {
        let mut stop = Map::new();
        stop.insert("stopReason".into(), Value::from(ans.stop_reason));
        if let Some(s) = &ans.stop_sequence {
            stop.insert(
                "additionalModelResponseFields".into(),
                json!({ "stop_sequence": s }),
            );
        }
        push(&mut frames, "messageStop", Value::Object(stop));
        push(
            &mut frames,
            "metadata",
            json!({
                "usage": usage(c.input_tokens, output),
                "metrics": { "latencyMs": started.elapsed().as_millis() as u64 },
            }),
        );
    }
    if beh.badcrc {
        let target = deltas.first().copied().unwrap_or(0).min(frames.len() - 1);
        if let Some(last) = frames[target].last_mut() {
            *last ^= 0xFF;
        }
    }
    let events: VecDeque<Bytes> = frames.into_iter().map(Bytes::from).collect();
    let mut resp = Response::new(Body::events(events));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    resp
}

// ---------------------------------------------------------------------------
// InvokeModel (embeddings)

fn malformed(detail: &str) -> AwsError {
    AwsError::validation(format!(
        "Malformed input request: {detail}, please reformat your input and try again."
    ))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "BigDecimal",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

fn check_keys(o: &Map<String, Value>, allowed: &[&str], required: &[&str]) -> R<()> {
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(malformed(&format!(
                "#: extraneous key [{k}] is not permitted"
            )));
        }
    }
    for k in required {
        if !o.contains_key(*k) {
            return Err(malformed(&format!("#: required key [{k}] not found")));
        }
    }
    Ok(())
}

/// The embedding of `text` scaled away from unit length (`normalize:
/// false`).
fn unnormalized(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| x * 3.0).collect()
}

fn invoke(base: &str, v: &Value, seed: u64) -> R<(Value, u64)> {
    let Some(o) = v.as_object() else {
        return Err(malformed(&format!(
            "#: expected type: JSONObject, found: {}",
            json_type(v)
        )));
    };
    if base.starts_with("amazon.titan-embed-text") || base.starts_with("amazon.titan-embed-g1-text")
    {
        let v2 = base.contains("-v2");
        let allowed: &[&str] = if v2 {
            &["inputText", "dimensions", "normalize", "embeddingTypes"]
        } else {
            &["inputText"]
        };
        check_keys(o, allowed, &["inputText"])?;
        let text_in = match &o["inputText"] {
            Value::String(s) => s.as_str(),
            x => {
                return Err(malformed(&format!(
                    "#/inputText: expected type: String, found: {}",
                    json_type(x)
                )))
            }
        };
        if text_in.is_empty() {
            return Err(malformed("#/inputText: expected minLength: 1, actual: 0"));
        }
        let dims = match o.get("dimensions") {
            None => {
                if v2 {
                    1024
                } else {
                    1536
                }
            }
            Some(d) => match d.as_u64() {
                Some(n @ (256 | 512 | 1024)) => n as usize,
                _ => {
                    return Err(malformed(&format!(
                        "#/dimensions: {d} is not a valid enum value"
                    )))
                }
            },
        };
        let normalize = match o.get("normalize") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(x) => {
                return Err(malformed(&format!(
                    "#/normalize: expected type: Boolean, found: {}",
                    json_type(x)
                )))
            }
        };
        let mut types = vec!["float"];
        if let Some(t) = o.get("embeddingTypes") {
            let Some(a) = t.as_array() else {
                return Err(malformed(&format!(
                    "#/embeddingTypes: expected type: JSONArray, found: {}",
                    json_type(t)
                )));
            };
            types.clear();
            for (i, x) in a.iter().enumerate() {
                match x.as_str() {
                    Some(s @ ("float" | "binary")) => types.push(s),
                    _ => {
                        return Err(malformed(&format!(
                            "#/embeddingTypes/{i}: {x} is not a valid enum value"
                        )))
                    }
                }
            }
        }
        let mut vec = text::embedding(text_in.as_bytes(), dims);
        if !normalize {
            vec = unnormalized(vec);
        }
        let tokens = u64::from(count_tokens(text_in));
        let mut m = Map::new();
        m.insert("embedding".into(), json!(vec));
        m.insert("inputTextTokenCount".into(), Value::from(tokens));
        if v2 {
            let mut by = Map::new();
            if types.contains(&"float") {
                by.insert("float".into(), json!(vec));
            }
            if types.contains(&"binary") {
                by.insert(
                    "binary".into(),
                    json!(vec.iter().map(|x| u8::from(*x > 0.0)).collect::<Vec<_>>()),
                );
            }
            m.insert("embeddingsByType".into(), Value::Object(by));
        }
        return Ok((Value::Object(m), tokens));
    }
    if base.starts_with("cohere.embed") {
        check_keys(
            o,
            &[
                "texts",
                "input_type",
                "truncate",
                "embedding_types",
                "images",
                "output_dimension",
                "max_tokens",
                "inputs",
            ],
            &["input_type"],
        )?;
        let texts: Vec<&str> = match o.get("texts") {
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, t) in a.iter().enumerate() {
                    out.push(t.as_str().ok_or_else(|| {
                        malformed(&format!(
                            "#/texts/{i}: expected type: String, found: {}",
                            json_type(t)
                        ))
                    })?);
                }
                out
            }
            Some(x) => {
                return Err(malformed(&format!(
                    "#/texts: expected type: JSONArray, found: {}",
                    json_type(x)
                )))
            }
            None => return Err(malformed("#: required key [texts] not found")),
        };
        if texts.len() > 96 {
            return Err(malformed(&format!(
                "#/texts: expected maximum item count: 96, found: {}",
                texts.len()
            )));
        }
        match o.get("input_type").and_then(Value::as_str) {
            Some("search_document" | "search_query" | "classification" | "clustering") => {}
            _ => {
                return Err(malformed(&format!(
                    "#/input_type: {} is not a valid enum value",
                    o["input_type"]
                )))
            }
        }
        if let Some(t) = o.get("truncate") {
            if !matches!(t.as_str(), Some("NONE" | "START" | "END")) {
                return Err(malformed(&format!(
                    "#/truncate: {t} is not a valid enum value"
                )));
            }
        }
        let dims = if base.contains("embed-v4") {
            1536
        } else {
            1024
        };
        let vectors: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| text::embedding(t.as_bytes(), dims))
            .collect();
        let tokens: u64 = texts.iter().map(|t| u64::from(count_tokens(t))).sum();
        let id = text::uuid(seed);
        let body = match o.get("embedding_types") {
            None | Some(Value::Null) => json!({
                "id": id,
                "embeddings": vectors,
                "texts": texts,
                "response_type": "embeddings_floats",
            }),
            Some(Value::Array(types)) => {
                let mut by = Map::new();
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        Some("float") => {
                            by.insert("float".into(), json!(vectors));
                        }
                        Some("int8") => {
                            by.insert(
                                "int8".into(),
                                json!(vectors
                                    .iter()
                                    .map(|v| v
                                        .iter()
                                        .map(|x| (x * 127.0).round() as i8)
                                        .collect::<Vec<_>>())
                                    .collect::<Vec<_>>()),
                            );
                        }
                        Some("uint8") => {
                            by.insert(
                                "uint8".into(),
                                json!(vectors
                                    .iter()
                                    .map(|v| v
                                        .iter()
                                        .map(|x| ((x + 1.0) * 127.5).round() as u8)
                                        .collect::<Vec<_>>())
                                    .collect::<Vec<_>>()),
                            );
                        }
                        _ => {
                            return Err(malformed(&format!(
                                "#/embedding_types/{i}: {t} is not a valid enum value"
                            )))
                        }
                    }
                }
                json!({
                    "id": id,
                    "embeddings": by,
                    "texts": texts,
                    "response_type": "embeddings_by_type",
                })
            }
            Some(x) => {
                return Err(malformed(&format!(
                    "#/embedding_types: expected type: JSONArray, found: {}",
                    json_type(x)
                )))
            }
        };
        return Ok((body, tokens));
    }
    Err(AwsError::validation(
        "The mock serves InvokeModel for the embedding models (amazon.titan-embed-*, cohere.embed-*) only; use Converse for chat models.",
    ))
}

// ---------------------------------------------------------------------------
// Handler

/// The text that may carry `[[mock:...]]` markers: the last user message
/// (text blocks and tool results), or the embedding input.
pub fn request_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(last) = v.get("messages").and_then(Value::as_array).and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }) {
        for b in last
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                out.push_str(t);
                out.push(' ');
            }
            if let Some(r) = b.get("toolResult") {
                out.push_str(&result_text(r.get("content")));
                out.push(' ');
            }
        }
    }
    if let Some(t) = v.get("inputText").and_then(Value::as_str) {
        out.push_str(t);
    }
    for t in v
        .get("texts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push_str(t);
        out.push('\n');
    }
    out
}

fn add_headers(mut resp: Response<Body>, request_id: &str) -> Response<Body> {
    set(resp.headers_mut(), "x-amzn-requestid", request_id);
    resp
}

fn unknown_operation() -> AwsError {
    AwsError::new(
        404,
        "UnknownOperationException",
        "The requested operation is not recognized by the service.",
    )
    .coral()
}

/// Serves `/model/{modelId}/{converse,converse-stream,invoke}`.
pub async fn handle(ctx: Ctx<'_>) -> Response<Body> {
    let started = Instant::now();
    let request_id = text::uuid(ctx.state.unique());
    let Some((model_id, op)) = parse_route(ctx.sub) else {
        return add_headers(unknown_operation().into_response(), &request_id);
    };
    if *ctx.method != Method::POST {
        return add_headers(unknown_operation().into_response(), &request_id);
    }
    let json: Result<Value, serde_json::Error> = serde_json::from_slice(ctx.body);
    let mut beh = ctx.behavior(Some(&model_id));
    if let Ok(v) = &json {
        if Behavior::may_contain_marker(ctx.body) {
            beh.apply_markers(&request_text(v));
        }
    }
    if let Some(d) = beh.stall {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = beh.html {
        return html_response(status);
    }
    let resp = 'resp: {
        if let Some(e) = check_auth(&ctx) {
            break 'resp e.into_response();
        }
        if beh.throttle.is_some() {
            break 'resp throttled().into_response();
        }
        if let Some(status) = beh.fail {
            break 'resp fault_error(status).into_response();
        }
        match serve(&ctx, &model_id, op, json, &beh, started) {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    };
    beh.shape(add_headers(resp, &request_id))
}

fn serve(
    ctx: &Ctx<'_>,
    model_id: &str,
    op: Op,
    json: Result<Value, serde_json::Error>,
    beh: &Behavior,
    started: Instant,
) -> R<Response<Body>> {
    let Some(base) = base_model(model_id) else {
        return Err(invalid_model());
    };
    let v = json.map_err(|e| {
        AwsError::serialization(format!("Could not parse the request body as JSON: {e}"))
    })?;
    let seed = text::fnv1a(ctx.body);
    match op {
        Op::Invoke => {
            let (body, tokens) = invoke(&base, &v, seed)?;
            let mut resp = json_response(StatusCode::OK, &body);
            let h = resp.headers_mut();
            set(h, "x-amzn-bedrock-input-token-count", &tokens.to_string());
            set(
                h,
                "x-amzn-bedrock-invocation-latency",
                &started.elapsed().as_millis().to_string(),
            );
            Ok(resp)
        }
        Op::Converse | Op::ConverseStream => {
            if is_embedding(&base) {
                return Err(AwsError::validation(
                    "This action doesn't support the model that you provided. Try again with a supported text or chat model.",
                ));
            }
            let c = parse_converse(&v, model_id)?;
            let ans = answer(&c, seed, beh);
            if op == Op::ConverseStream && !beh.badjson {
                return Ok(stream_response(&c, &ans, beh, started));
            }
            let latency = started.elapsed().as_millis() as u64;
            Ok(json_response(
                StatusCode::OK,
                &converse_json(&c, &ans, latency),
            ))
        }
    }
}

/// A decoded event-stream frame: `(headers, payload, bytes used)`.
pub type DecodedFrame = (Vec<(String, String)>, Vec<u8>, usize);

/// Decodes one event-stream frame, or fails on a bad length or CRC.
pub fn decode_frame(buf: &[u8]) -> Result<DecodedFrame, String> {
    if buf.len() < 16 {
        return Err("short frame".into());
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let hlen = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let pcrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if crc32(&buf[..8]) != pcrc {
        return Err("prelude CRC mismatch".into());
    }
    if total < 16 + hlen || buf.len() < total {
        return Err("bad lengths".into());
    }
    let mcrc = u32::from_be_bytes([
        buf[total - 4],
        buf[total - 3],
        buf[total - 2],
        buf[total - 1],
    ]);
    if crc32(&buf[..total - 4]) != mcrc {
        return Err("message CRC mismatch".into());
    }
    let mut headers = Vec::new();
    let mut i = 12;
    while i < 12 + hlen {
        let n = buf[i] as usize;
        let name = String::from_utf8_lossy(&buf[i + 1..i + 1 + n]).into_owned();
        i += 1 + n;
        if buf[i] != 7 {
            return Err(format!("unsupported header type {}", buf[i]));
        }
        let len = u16::from_be_bytes([buf[i + 1], buf[i + 2]]) as usize;
        let value = String::from_utf8_lossy(&buf[i + 3..i + 3 + len]).into_owned();
        i += 3 + len;
        headers.push((name, value));
    }
    Ok((headers, buf[12 + hlen..total - 4].to_vec(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_vectors() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn frames_roundtrip() {
        let f = event_frame("messageStart", &json!({"role": "assistant"}));
        let (h, p, used) = decode_frame(&f).unwrap();
        assert_eq!(used, f.len());
        assert_eq!(h[0], (":event-type".into(), "messageStart".into()));
        assert_eq!(p, br#"{"role":"assistant"}"#);
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode_frame(&bad).is_err());
    }

    #[test]
    fn model_ids() {
        assert_eq!(
            base_model("us.anthropic.claude-3-5-sonnet-20241022-v2:0").as_deref(),
            Some("anthropic.claude-3-5-sonnet-20241022-v2:0")
        );
        assert_eq!(
            base_model("amazon.titan-embed-text-v2:0").as_deref(),
            Some("amazon.titan-embed-text-v2:0")
        );
        assert_eq!(
            base_model("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0")
                .as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert!(base_model("gpt-4o").is_none());
        assert!(base_model("foo.bar").is_none());
        let (id, op) = parse_route("/model/us.anthropic.x-v2%3A0/converse-stream").unwrap();
        assert_eq!(
            (id.as_str(), op),
            ("us.anthropic.x-v2:0", Op::ConverseStream)
        );
        let (id, _) =
            parse_route("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.meta.llama3-v1%3A0/converse")
                .unwrap();
        assert_eq!(
            id,
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.meta.llama3-v1:0"
        );
    }
}
