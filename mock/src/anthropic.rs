//! Anthropic Messages API: `POST /v1/messages` and
//! `POST /v1/messages/count_tokens` (also served below `/anthropic`).
//!
//! Mirrors the real API's auth (`x-api-key`, or `Authorization: Bearer`),
//! the required `anthropic-version` header, its pydantic-style validation
//! messages (`model: Field required`, `foo: Extra inputs are not
//! permitted`, ...), the error body
//! `{"type":"error","error":{"type","message"},"request_id"}`, the
//! `Message` object, the named-event SSE stream, extended thinking, tool
//! use and prompt caching (`cache_creation_input_tokens` /
//! `cache_read_input_tokens`, from an in-memory set of seen prefixes).
//!
//! Conversation rules, as documented for the current API:
//! * consecutive `user` (or `assistant`) messages are merged into one turn,
//!   they are not rejected;
//! * the first message may be an `assistant` message, and a final
//!   `assistant` message is a prefill that the reply continues;
//! * `tool_result` blocks must answer `tool_use` blocks of the previous
//!   (merged) assistant turn, and every `tool_use` must be answered in the
//!   next turn.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::behavior::{html_response, Behavior};
use crate::body::Body;
use crate::openai::{bearer, set, IMAGE_TOKENS};
use crate::text::{self, count_tokens, first_chars, SplitMix64};
use crate::{json_response, now_unix, Ctx, State};

/// Default accepted key.
pub const DEFAULT_KEY: &str = "sk-ant-mock";
/// Accepted `anthropic-version` values.
pub const API_VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];
/// Tokens charged for a PDF / URL / file document block.
pub const DOCUMENT_TOKENS: u64 = 85;
/// At most this many `cache_control` breakpoints per request.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;
/// At most this many parallel `tool_use` blocks in one answer.
pub const MAX_PARALLEL_TOOL_USES: usize = 4;
/// Smallest `thinking.budget_tokens`.
pub const MIN_THINKING_BUDGET: i64 = 1024;
/// How many prefixes the prompt cache remembers before it starts over.
const PROMPT_CACHE_CAPACITY: usize = 65_536;

const IMAGE_MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];
const THINKING_DOCS: &str = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking";

/// Top-level fields of `POST /v1/messages`.
const MESSAGE_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "cache_control",
    "container",
    "inference_geo",
    "metadata",
    "output_config",
    "service_tier",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];
/// Top-level fields of `POST /v1/messages/count_tokens`.
const COUNT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "cache_control",
    "output_config",
    "system",
    "thinking",
    "tool_choice",
    "tools",
];
/// Extra top-level fields accepted when an `anthropic-beta` header is sent.
const BETA_FIELDS: &[&str] = &["context_management", "mcp_servers", "output_format"];

const TEXT_FIELDS: &[&str] = &["type", "text", "cache_control", "citations"];
const IMAGE_FIELDS: &[&str] = &["type", "source", "cache_control"];
const DOCUMENT_FIELDS: &[&str] = &[
    "type",
    "source",
    "cache_control",
    "citations",
    "context",
    "title",
];
const SEARCH_RESULT_FIELDS: &[&str] = &[
    "type",
    "source",
    "title",
    "content",
    "cache_control",
    "citations",
];
const TOOL_USE_FIELDS: &[&str] = &["type", "id", "name", "input", "cache_control", "caller"];
const TOOL_RESULT_FIELDS: &[&str] = &[
    "type",
    "tool_use_id",
    "content",
    "is_error",
    "cache_control",
];
const THINKING_FIELDS: &[&str] = &["type", "thinking", "signature"];
const REDACTED_THINKING_FIELDS: &[&str] = &["type", "data"];
const CUSTOM_TOOL_FIELDS: &[&str] = &[
    "type",
    "name",
    "description",
    "input_schema",
    "cache_control",
    "strict",
    "input_examples",
    "defer_loading",
    "allowed_callers",
    "eager_input_streaming",
];

/// Block types accepted in `messages[].content`.
const BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "container_upload",
];
/// Block types accepted inside `tool_result.content`.
const TOOL_RESULT_BLOCK_TYPES: &[&str] = &["text", "image", "document", "search_result"];

// ---------------------------------------------------------------------------
// Errors

/// An Anthropic API error:
/// `{"type":"error","error":{"type","message"},"request_id"}`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

type R<T> = Result<T, AnthropicError>;

impl AnthropicError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        AnthropicError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn at(path: &str, msg: &str) -> Self {
        Self::invalid(format!("{path}: {msg}"))
    }

    fn required(path: &str) -> Self {
        Self::at(path, "Field required")
    }

    fn extra(path: &str) -> Self {
        Self::at(path, "Extra inputs are not permitted")
    }

    fn not_a(path: &str, what: &str) -> Self {
        Self::at(path, &format!("Input should be a valid {what}"))
    }

    fn bad_tag(path: &str, got: &str, expected: &[&str]) -> Self {
        Self::at(
            path,
            &format!(
                "Input tag '{got}' found using 'type' does not match any of the expected tags: {}",
                quoted(expected, ", ")
            ),
        )
    }

    fn no_tag(path: &str) -> Self {
        Self::at(path, "Unable to extract tag using discriminator 'type'")
    }

    /// 404 `not_found_error` for an unknown model.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model: {model}"),
        )
    }

    /// The JSON body.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            kind: "error",
            error: ErrorInner {
                kind: self.kind,
                message: &self.message,
            },
            request_id,
        })
        .unwrap_or_default()
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        json_response(self.status, self.body(request_id))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorInner<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// `'a', 'b' or 'c'` (with `last_sep` before the last item).
fn quoted(items: &[&str], last_sep: &str) -> String {
    match items {
        [] => String::new(),
        [a] => format!("'{a}'"),
        [init @ .., last] => {
            let head: Vec<String> = init.iter().map(|s| format!("'{s}'")).collect();
            format!("{}{last_sep}'{last}'", head.join(", "))
        }
    }
}

/// The error body for `fail=STATUS`.
pub fn fault_error(status: u16, model: &str) -> AnthropicError {
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let e = |kind, msg: &str| AnthropicError::new(st, kind, msg);
    match status {
        400 => e(
            "invalid_request_error",
            "The request could not be processed as sent.",
        ),
        401 => e("authentication_error", "invalid x-api-key"),
        402 => e("billing_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."),
        403 => e(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => AnthropicError {
            status: st,
            ..AnthropicError::model_not_found(model)
        },
        413 => e(
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => e("rate_limit_error", &rate_limit_message()),
        504 => e("timeout_error", "Request timed out"),
        529 => e("overloaded_error", "Overloaded"),
        s if s >= 500 => e("api_error", "Internal server error"),
        _ => e(
            "invalid_request_error",
            &format!(
                "Request failed: {}.",
                st.canonical_reason().unwrap_or("error")
            ),
        ),
    }
}

fn rate_limit_message() -> String {
    "This request would exceed the rate limit for your organization (00000000-0000-4000-8000-000000000000) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.".to_string()
}

/// 429 `rate_limit_error` with `retry-after` (whole seconds, rounded up).
fn rate_limited(secs: f64, request_id: &str) -> Response<Body> {
    let e = AnthropicError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        rate_limit_message(),
    );
    let mut resp = e.into_response(request_id);
    let ra = (secs.ceil().max(0.0) as u64).to_string();
    let h = resp.headers_mut();
    set(h, "retry-after", &ra);
    set(h, "anthropic-ratelimit-requests-limit", "50");
    set(h, "anthropic-ratelimit-requests-remaining", "0");
    set(
        h,
        "anthropic-ratelimit-requests-reset",
        &rfc3339(now_unix() + secs.ceil().max(0.0) as u64),
    );
    resp
}

// ---------------------------------------------------------------------------
// Prompt cache

/// Hashes of the cache prefixes written so far (per server).
#[derive(Default)]
pub struct PromptCache {
    seen: Mutex<HashSet<u64>>,
}

/// Cache tokens of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub read: u64,
    pub created_5m: u64,
    pub created_1h: u64,
}

impl CacheUse {
    pub fn created(&self) -> u64 {
        self.created_5m + self.created_1h
    }
}

impl PromptCache {
    /// Forgets every prefix; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.len();
        s.clear();
        n
    }

    /// Reads the longest known breakpoint prefix and writes the others.
    fn apply(&self, bps: &[Breakpoint]) -> CacheUse {
        let mut out = CacheUse::default();
        if bps.is_empty() {
            return out;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let hit = bps.iter().rposition(|b| seen.contains(&b.hash));
        let mut prev = 0;
        if let Some(k) = hit {
            out.read = bps[k].tokens;
            prev = bps[k].tokens;
        }
        let start = hit.map_or(0, |k| k + 1);
        for b in &bps[start..] {
            let seg = b.tokens.saturating_sub(prev);
            if b.one_hour {
                out.created_1h += seg;
            } else {
                out.created_5m += seg;
            }
            prev = prev.max(b.tokens);
        }
        if seen.len() + bps.len() > PROMPT_CACHE_CAPACITY {
            seen.clear();
        }
        seen.extend(bps.iter().map(|b| b.hash));
        out
    }
}

/// A `cache_control` breakpoint: the prefix up to and including a block.
#[derive(Clone, Copy, Debug)]
struct Breakpoint {
    hash: u64,
    tokens: u64,
    one_hour: bool,
}

/// Walks the prompt in cache order (tools, system, messages) and tracks
/// the running token count and prefix hash.
struct Prefix {
    hash: u64,
    tokens: u64,
    breakpoints: Vec<Breakpoint>,
    /// (hash, tokens) after the last cacheable block.
    last_block: Option<(u64, u64)>,
}

impl Prefix {
    fn new(model: &str) -> Self {
        Prefix {
            hash: text::fnv1a(model.as_bytes()),
            tokens: 3,
            breakpoints: Vec::new(),
            last_block: None,
        }
    }

    fn mix(&mut self, bytes: &[u8]) {
        let mut h = self.hash;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.hash = h;
    }

    /// Adds framing tokens that are not a cacheable block (message role).
    fn frame(&mut self, tag: &[u8], tokens: u64) {
        self.mix(tag);
        self.tokens += tokens;
    }

    /// Adds a cacheable block; `raw` is hashed without its `cache_control`.
    fn block(&mut self, raw: &Value, tokens: u64, cache: Option<Ttl>) {
        match raw {
            Value::Object(o) if o.contains_key("cache_control") => {
                let mut o = o.clone();
                o.remove("cache_control");
                self.mix(Value::Object(o).to_string().as_bytes());
            }
            other => self.mix(other.to_string().as_bytes()),
        }
        self.mix(b"\x1e");
        self.tokens += tokens;
        self.last_block = Some((self.hash, self.tokens));
        if let Some(ttl) = cache {
            self.breakpoints.push(Breakpoint {
                hash: self.hash,
                tokens: self.tokens,
                one_hour: ttl == Ttl::OneHour,
            });
        }
    }

    /// A top-level `cache_control` marks the last cacheable block.
    fn auto_breakpoint(&mut self, ttl: Ttl) {
        if let Some((hash, tokens)) = self.last_block {
            if self.breakpoints.last().map(|b| b.hash) != Some(hash) {
                self.breakpoints.push(Breakpoint {
                    hash,
                    tokens,
                    one_hour: ttl == Ttl::OneHour,
                });
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ttl {
    FiveMinutes,
    OneHour,
}

// ---------------------------------------------------------------------------
// Parsed request

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

enum Kind<'a> {
    Text(&'a str),
    Image,
    ToolUse {
        id: &'a str,
    },
    ToolResult {
        id: &'a str,
        text: String,
    },
    Thinking,
    /// Documents, search results and server-tool blocks.
    Other,
}

struct Block<'a> {
    /// Index of the message in the request.
    msg: usize,
    /// Index in the message's content (0 for string content).
    idx: usize,
    type_name: &'a str,
    kind: Kind<'a>,
}

struct Turn<'a> {
    role: Role,
    blocks: Vec<Block<'a>>,
}

#[derive(Clone, Debug)]
struct ToolDef<'a> {
    name: &'a str,
    schema: Option<&'a Value>,
    custom: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChoiceKind {
    Auto,
    Any,
    Tool,
    NoTools,
}

#[derive(Clone, Copy, Debug)]
struct Choice<'a> {
    kind: ChoiceKind,
    name: Option<&'a str>,
    parallel: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Thinking {
    Off,
    On { budget: Option<i64>, omitted: bool },
}

struct Parsed<'a> {
    model: &'a str,
    /// `None` on count_tokens.
    max_tokens: Option<u64>,
    stream: bool,
    stop_sequences: Vec<&'a str>,
    turns: Vec<Turn<'a>>,
    tools: Vec<ToolDef<'a>>,
    choice: Choice<'a>,
    thinking: Thinking,
    input_tokens: u64,
    breakpoints: Vec<Breakpoint>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Messages,
    CountTokens,
}

// ---------------------------------------------------------------------------
// Field helpers (pydantic-style messages)

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The value of `key` unless absent or null.
fn present<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn check_fields(o: &Map<String, Value>, allowed: &[&str], path: &str) -> R<()> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(AnthropicError::extra(&join(path, k))),
        None => Ok(()),
    }
}

fn as_dict<'a>(v: &'a Value, path: &str) -> R<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| AnthropicError::not_a(path, "dictionary"))
}

fn req_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> R<&'a str> {
    let p = join(path, key);
    match o.get(key) {
        None => Err(AnthropicError::required(&p)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(AnthropicError::not_a(&p, "string")),
    }
}

fn opt_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> R<Option<&'a str>> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AnthropicError::not_a(&join(path, key), "string")),
    }
}

fn opt_bool(o: &Map<String, Value>, key: &str, path: &str) -> R<Option<bool>> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(AnthropicError::not_a(&join(path, key), "boolean")),
    }
}

fn as_int(v: &Value, path: &str) -> R<i64> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Ok(i64::MAX)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
                    _ => Err(AnthropicError::at(
                        path,
                        "Input should be a valid integer, got a number with a fractional part",
                    )),
                }
            }
        }
        _ => Err(AnthropicError::not_a(path, "integer")),
    }
}

fn opt_number(o: &Map<String, Value>, key: &str, min: f64, max: f64) -> R<Option<f64>> {
    let Some(v) = present(o, key) else {
        return Ok(None);
    };
    let Some(x) = v.as_f64().filter(|_| v.is_number()) else {
        return Err(AnthropicError::not_a(key, "number"));
    };
    if x < min {
        return Err(AnthropicError::at(
            key,
            &format!("Input should be greater than or equal to {}", fmt_num(min)),
        ));
    }
    if x > max {
        return Err(AnthropicError::at(
            key,
            &format!("Input should be less than or equal to {}", fmt_num(max)),
        ));
    }
    Ok(Some(x))
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn cache_control(o: &Map<String, Value>, path: &str) -> R<Option<Ttl>> {
    let Some(v) = present(o, "cache_control") else {
        return Ok(None);
    };
    let p = join(path, "cache_control");
    let c = as_dict(v, &p)?;
    match c.get("type") {
        None => return Err(AnthropicError::no_tag(&p)),
        Some(Value::String(t)) if t == "ephemeral" => {}
        Some(Value::String(t)) => return Err(AnthropicError::bad_tag(&p, t, &["ephemeral"])),
        Some(_) => return Err(AnthropicError::no_tag(&p)),
    }
    let p = format!("{p}.ephemeral");
    check_fields(c, &["type", "ttl"], &p)?;
    match present(c, "ttl") {
        None => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "5m" => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "1h" => Ok(Some(Ttl::OneHour)),
        Some(_) => Err(AnthropicError::at(
            &format!("{p}.ttl"),
            "Input should be '5m' or '1h'",
        )),
    }
}

/// The `type` tag of a content block.
fn tag<'a>(o: &'a Map<String, Value>, path: &str, allowed: &[&str]) -> R<&'a str> {
    match o.get("type") {
        Some(Value::String(t)) if allowed.contains(&t.as_str()) => Ok(t),
        Some(Value::String(t)) => Err(AnthropicError::bad_tag(path, t, allowed)),
        _ => Err(AnthropicError::no_tag(path)),
    }
}

// ---------------------------------------------------------------------------
// Validation

/// The model names the mock serves: anything starting with `claude-`.
pub fn known_model(model: &str) -> bool {
    model.starts_with("claude-") && model.len() > "claude-".len()
}

/// Newer models (Opus 4.1, Sonnet/Haiku 4.5 and later) reject
/// `temperature` together with `top_p`.
pub fn exclusive_sampling(model: &str) -> bool {
    let Some(rest) = ["claude-opus-", "claude-sonnet-", "claude-haiku-"]
        .iter()
        .find_map(|p| model.strip_prefix(p))
    else {
        return false;
    };
    let mut parts = rest.split('-');
    let major: u32 = match parts.next().and_then(|s| s.parse().ok()) {
        Some(m) => m,
        None => return false,
    };
    let minor: u32 = parts
        .next()
        .filter(|s| (1..=2).contains(&s.len()))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    major > 4 || (major == 4 && minor >= 1)
}

fn parse<'a>(json: &'a Value, ep: Endpoint, beta: bool) -> R<Parsed<'a>> {
    let m = json
        .as_object()
        .ok_or_else(|| AnthropicError::invalid("Input should be a valid dictionary"))?;
    if !m.contains_key("model") {
        return Err(AnthropicError::required("model"));
    }
    if !m.contains_key("messages") {
        return Err(AnthropicError::required("messages"));
    }
    if ep == Endpoint::Messages && !m.contains_key("max_tokens") {
        return Err(AnthropicError::required("max_tokens"));
    }
    let fields = match ep {
        Endpoint::Messages => MESSAGE_FIELDS,
        Endpoint::CountTokens => COUNT_FIELDS,
    };
    for k in m.keys() {
        let known = fields.contains(&k.as_str()) || (beta && BETA_FIELDS.contains(&k.as_str()));
        if !known {
            return Err(AnthropicError::extra(k));
        }
    }
    let model = match &m["model"] {
        Value::String(s) => s.as_str(),
        _ => return Err(AnthropicError::not_a("model", "string")),
    };
    let max_tokens = match ep {
        Endpoint::Messages => {
            let n = as_int(&m["max_tokens"], "max_tokens")?;
            if n < 0 {
                return Err(AnthropicError::at(
                    "max_tokens",
                    "Input should be greater than or equal to 0",
                ));
            }
            Some(n as u64)
        }
        Endpoint::CountTokens => None,
    };
    let stream = opt_bool(m, "stream", "")?.unwrap_or(false);
    let temperature = opt_number(m, "temperature", 0.0, 1.0)?;
    let top_p = opt_number(m, "top_p", 0.0, 1.0)?;
    let top_k = match present(m, "top_k") {
        None => None,
        Some(v) => {
            let k = as_int(v, "top_k")?;
            if k < 0 {
                return Err(AnthropicError::at(
                    "top_k",
                    "Input should be greater than or equal to 0",
                ));
            }
            Some(k)
        }
    };
    let stop_sequences = match present(m, "stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .ok_or_else(|| AnthropicError::not_a(&format!("stop_sequences.{i}"), "string"))
            })
            .collect::<R<Vec<_>>>()?,
        Some(_) => return Err(AnthropicError::not_a("stop_sequences", "list")),
    };
    if let Some(v) = present(m, "metadata") {
        let md = as_dict(v, "metadata")?;
        check_fields(md, &["user_id"], "metadata")?;
        if let Some(id) = opt_str(md, "user_id", "metadata")? {
            if id.chars().count() > 256 {
                return Err(AnthropicError::at(
                    "metadata.user_id",
                    "String should have at most 256 characters",
                ));
            }
        }
    }
    if let Some(v) = present(m, "service_tier") {
        if !matches!(v.as_str(), Some("auto") | Some("standard_only")) {
            return Err(AnthropicError::at(
                "service_tier",
                "Input should be 'auto' or 'standard_only'",
            ));
        }
    }
    let top_cache = match present(m, "cache_control") {
        Some(_) => cache_control(m, "")?,
        None => None,
    };

    let mut prefix = Prefix::new(model);
    let tools = parse_tools(m, &mut prefix)?;
    let choice = parse_choice(m)?;
    parse_system(m, &mut prefix)?;
    let thinking = parse_thinking(m)?;
    let turns = parse_messages(&m["messages"], &mut prefix)?;
    if let Some(ttl) = top_cache {
        prefix.auto_breakpoint(ttl);
    }
    if prefix.breakpoints.len() > MAX_CACHE_BREAKPOINTS {
        return Err(AnthropicError::invalid(format!(
            "A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {}.",
            prefix.breakpoints.len()
        )));
    }
    check_tool_pairing(&turns)?;

    if !known_model(model) {
        return Err(AnthropicError::model_not_found(model));
    }
    if let Thinking::On { budget, .. } = thinking {
        if let (Some(budget), Some(max)) = (budget, max_tokens) {
            if budget as u64 >= max {
                return Err(AnthropicError::invalid(format!(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at {THINKING_DOCS}#max-tokens-and-context-window-size"
                )));
            }
        }
        let considerations = format!(
            "Please consult our documentation at {THINKING_DOCS}#important-considerations-when-using-extended-thinking"
        );
        if temperature.is_some_and(|t| t != 1.0) {
            return Err(AnthropicError::invalid(format!(
                "`temperature` may only be set to 1 when thinking is enabled. {considerations}"
            )));
        }
        if top_p.is_some_and(|p| p < 0.95) {
            return Err(AnthropicError::invalid(format!(
                "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. {considerations}"
            )));
        }
        if top_k.is_some() {
            return Err(AnthropicError::invalid(format!(
                "`top_k` must be unset when thinking is enabled. {considerations}"
            )));
        }
        if matches!(choice.kind, ChoiceKind::Any | ChoiceKind::Tool) && !tools.is_empty() {
            return Err(AnthropicError::invalid(
                "Thinking may not be enabled when tool_choice forces tool use.",
            ));
        }
        check_thinking_turn(&turns)?;
    }
    if temperature.is_some() && top_p.is_some() && exclusive_sampling(model) {
        return Err(AnthropicError::invalid(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
        ));
    }
    if let (ChoiceKind::Tool, Some(name)) = (choice.kind, choice.name) {
        if !tools.is_empty() && !tools.iter().any(|t| t.name == name) {
            return Err(AnthropicError::invalid(format!(
                "tool_choice: Tool '{name}' not found in tools"
            )));
        }
    }

    Ok(Parsed {
        model,
        max_tokens,
        stream,
        stop_sequences,
        turns,
        tools,
        choice,
        thinking,
        input_tokens: prefix.tokens,
        breakpoints: prefix.breakpoints,
    })
}

fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Tags listed when a tool `type` is unknown (the real list is longer).
const EXAMPLE_TOOL_TYPES: &[&str] = &[
    "custom",
    "bash_20250124",
    "code_execution_20250825",
    "computer_20250124",
    "memory_20250818",
    "text_editor_20250728",
    "web_fetch_20250910",
    "web_search_20250305",
];

/// `name_YYYYMMDD`, the shape of Anthropic-defined tool types.
fn is_versioned_tool_type(ty: &str) -> bool {
    match ty.rsplit_once('_') {
        Some((name, date)) => {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn parse_tools<'a>(m: &'a Map<String, Value>, prefix: &mut Prefix) -> R<Vec<ToolDef<'a>>> {
    let tools = match present(m, "tools") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(AnthropicError::not_a("tools", "list")),
    };
    let mut out: Vec<ToolDef<'a>> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let base = format!("tools.{i}");
        let o = as_dict(t, &base)?;
        let ty = match present(o, "type") {
            None => "custom",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(AnthropicError::not_a(&format!("{base}.type"), "string")),
        };
        let cache = cache_control(o, &base)?;
        if ty == "custom" {
            let p = format!("{base}.custom");
            check_fields(o, CUSTOM_TOOL_FIELDS, &p)?;
            let name = req_str(o, "name", &p)?;
            if !valid_tool_name(name) {
                return Err(AnthropicError::at(
                    &format!("{p}.name"),
                    "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
                ));
            }
            opt_str(o, "description", &p)?;
            let schema = match o.get("input_schema") {
                None => return Err(AnthropicError::required(&format!("{p}.input_schema"))),
                Some(s) => s,
            };
            let sp = format!("{p}.input_schema");
            let so = as_dict(schema, &sp)?;
            match so.get("type") {
                Some(Value::String(t)) if t == "object" => {}
                None => return Err(AnthropicError::required(&format!("{sp}.type"))),
                Some(_) => {
                    return Err(AnthropicError::at(
                        &format!("{sp}.type"),
                        "Input should be 'object'",
                    ))
                }
            }
            if out.iter().any(|d| d.name == name) {
                return Err(AnthropicError::invalid("tools: Tool names must be unique."));
            }
            let desc = o.get("description").and_then(Value::as_str).unwrap_or("");
            let tokens = u64::from(count_tokens(name))
                + u64::from(count_tokens(desc))
                + u64::from(count_tokens(&schema.to_string()));
            prefix.block(t, tokens, cache);
            out.push(ToolDef {
                name,
                schema: Some(schema),
                custom: true,
            });
        } else {
            // Anthropic-defined / server tools are versioned by date
            // (web_search_20250305, bash_20250124, ...) and accepted as sent.
            if !is_versioned_tool_type(ty) {
                return Err(AnthropicError::bad_tag(&base, ty, EXAMPLE_TOOL_TYPES));
            }
            let name = o.get("name").and_then(Value::as_str).unwrap_or(ty);
            if out.iter().any(|d| d.name == name) {
                return Err(AnthropicError::invalid("tools: Tool names must be unique."));
            }
            prefix.block(t, u64::from(count_tokens(&t.to_string())), cache);
            out.push(ToolDef {
                name,
                schema: None,
                custom: false,
            });
        }
    }
    Ok(out)
}

fn parse_choice(m: &Map<String, Value>) -> R<Choice<'_>> {
    let mut c = Choice {
        kind: ChoiceKind::Auto,
        name: None,
        parallel: true,
    };
    let Some(v) = present(m, "tool_choice") else {
        return Ok(c);
    };
    let o = as_dict(v, "tool_choice")?;
    let ty = tag(o, "tool_choice", &["auto", "any", "tool", "none"])?;
    let p = format!("tool_choice.{ty}");
    match ty {
        "none" => {
            check_fields(o, &["type"], &p)?;
            c.kind = ChoiceKind::NoTools;
        }
        "tool" => {
            check_fields(o, &["type", "name", "disable_parallel_tool_use"], &p)?;
            c.kind = ChoiceKind::Tool;
            c.name = Some(req_str(o, "name", &p)?);
        }
        _ => {
            check_fields(o, &["type", "disable_parallel_tool_use"], &p)?;
            c.kind = if ty == "any" {
                ChoiceKind::Any
            } else {
                ChoiceKind::Auto
            };
        }
    }
    if opt_bool(o, "disable_parallel_tool_use", &p)? == Some(true) {
        c.parallel = false;
    }
    Ok(c)
}

fn parse_system(m: &Map<String, Value>, prefix: &mut Prefix) -> R<()> {
    match present(m, "system") {
        None => Ok(()),
        Some(v @ Value::String(s)) => {
            if !s.is_empty() {
                prefix.block(v, u64::from(count_tokens(s)), None);
            }
            Ok(())
        }
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                let p = format!("system.{i}");
                let o = as_dict(b, &p)?;
                match o.get("type") {
                    Some(Value::String(t)) if t == "text" => {}
                    None => return Err(AnthropicError::required(&format!("{p}.type"))),
                    Some(_) => {
                        return Err(AnthropicError::at(
                            &format!("{p}.type"),
                            "Input should be 'text'",
                        ))
                    }
                }
                check_fields(o, TEXT_FIELDS, &p)?;
                let t = req_str(o, "text", &p)?;
                if t.is_empty() {
                    return Err(AnthropicError::invalid(
                        "system: text content blocks must be non-empty",
                    ));
                }
                let cache = cache_control(o, &p)?;
                prefix.block(b, u64::from(count_tokens(t)), cache);
            }
            Ok(())
        }
        Some(_) => Err(AnthropicError::not_a("system", "list")),
    }
}

fn parse_thinking(m: &Map<String, Value>) -> R<Thinking> {
    let Some(v) = present(m, "thinking") else {
        return Ok(Thinking::Off);
    };
    let o = as_dict(v, "thinking")?;
    let ty = tag(o, "thinking", &["enabled", "disabled", "adaptive"])?;
    let p = format!("thinking.{ty}");
    let omitted = |o: &Map<String, Value>| -> R<bool> {
        match present(o, "display") {
            None => Ok(false),
            Some(Value::String(s)) if s == "summarized" => Ok(false),
            Some(Value::String(s)) if s == "omitted" => Ok(true),
            Some(_) => Err(AnthropicError::at(
                &format!("{p}.display"),
                "Input should be 'summarized' or 'omitted'",
            )),
        }
    };
    match ty {
        "disabled" => {
            check_fields(o, &["type"], &p)?;
            Ok(Thinking::Off)
        }
        "adaptive" => {
            check_fields(o, &["type", "display"], &p)?;
            Ok(Thinking::On {
                budget: None,
                omitted: omitted(o)?,
            })
        }
        _ => {
            check_fields(o, &["type", "budget_tokens", "display"], &p)?;
            let bp = format!("{p}.budget_tokens");
            let budget = match o.get("budget_tokens") {
                None => return Err(AnthropicError::required(&bp)),
                Some(v) => as_int(v, &bp)?,
            };
            if budget < MIN_THINKING_BUDGET {
                return Err(AnthropicError::at(
                    &bp,
                    &format!("Input should be greater than or equal to {MIN_THINKING_BUDGET}"),
                ));
            }
            Ok(Thinking::On {
                budget: Some(budget),
                omitted: omitted(o)?,
            })
        }
    }
}

fn parse_messages<'a>(v: &'a Value, prefix: &mut Prefix) -> R<Vec<Turn<'a>>> {
    let msgs = match v {
        Value::Array(a) => a,
        _ => return Err(AnthropicError::not_a("messages", "list")),
    };
    if msgs.is_empty() {
        return Err(AnthropicError::invalid(
            "messages: at least one message is required",
        ));
    }
    let last = msgs.len() - 1;
    let mut turns: Vec<Turn<'a>> = Vec::new();
    for (i, msg) in msgs.iter().enumerate() {
        let p = format!("messages.{i}");
        let o = as_dict(msg, &p)?;
        let role = match o.get("role") {
            None => return Err(AnthropicError::required(&format!("{p}.role"))),
            Some(Value::String(r)) if r == "user" => Role::User,
            Some(Value::String(r)) if r == "assistant" => Role::Assistant,
            Some(_) => {
                return Err(AnthropicError::at(
                    &format!("{p}.role"),
                    "Input should be 'user' or 'assistant'",
                ))
            }
        };
        let Some(content) = o.get("content") else {
            return Err(AnthropicError::required(&format!("{p}.content")));
        };
        check_fields(o, &["role", "content"], &p)?;
        let final_assistant = i == last && role == Role::Assistant;
        prefix.frame(role.name().as_bytes(), 4);
        let mut blocks = Vec::new();
        match content {
            Value::String(s) => {
                if s.is_empty() && !final_assistant {
                    return Err(empty_content(i));
                }
                if final_assistant && s.ends_with(char::is_whitespace) {
                    return Err(trailing_whitespace());
                }
                if !s.is_empty() {
                    prefix.block(content, u64::from(count_tokens(s)), None);
                    blocks.push(Block {
                        msg: i,
                        idx: 0,
                        type_name: "text",
                        kind: Kind::Text(s),
                    });
                }
            }
            Value::Array(parts) => {
                if parts.is_empty() && !final_assistant {
                    return Err(empty_content(i));
                }
                for (j, part) in parts.iter().enumerate() {
                    let bp = format!("{p}.content.{j}");
                    let (block, tokens, cache) = parse_block(part, &bp, BLOCK_TYPES)?;
                    check_block_role(role, &block, i, j)?;
                    if let Kind::Text(t) = block.kind {
                        if t.is_empty() {
                            return Err(AnthropicError::invalid(
                                "messages: text content blocks must be non-empty",
                            ));
                        }
                        if t.trim().is_empty() {
                            return Err(AnthropicError::invalid(
                                "messages: text content blocks must contain non-whitespace text",
                            ));
                        }
                        if final_assistant
                            && j + 1 == parts.len()
                            && t.ends_with(char::is_whitespace)
                        {
                            return Err(trailing_whitespace());
                        }
                    }
                    prefix.block(part, tokens, cache);
                    blocks.push(Block {
                        msg: i,
                        idx: j,
                        ..block
                    });
                }
            }
            _ => return Err(AnthropicError::not_a(&format!("{p}.content"), "list")),
        }
        match turns.last_mut() {
            Some(t) if t.role == role => t.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    Ok(turns)
}

fn empty_content(i: usize) -> AnthropicError {
    AnthropicError::invalid(format!(
        "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
    ))
}

fn trailing_whitespace() -> AnthropicError {
    AnthropicError::invalid("messages: final assistant content cannot end with trailing whitespace")
}

fn check_block_role(role: Role, b: &Block<'_>, i: usize, j: usize) -> R<()> {
    let assistant_only = matches!(b.kind, Kind::ToolUse { .. } | Kind::Thinking);
    let user_only = matches!(b.kind, Kind::ToolResult { .. });
    if (assistant_only && role == Role::User) || (user_only && role == Role::Assistant) {
        let allowed = if assistant_only { "assistant" } else { "user" };
        return Err(AnthropicError::invalid(format!(
            "messages.{i}.content.{j}: `{}` blocks are only allowed in `{allowed}` messages",
            b.type_name
        )));
    }
    Ok(())
}

/// Validates one content block; returns it (with placeholder indices), its
/// input tokens and its cache breakpoint.
fn parse_block<'a>(v: &'a Value, path: &str, allowed: &[&str]) -> R<(Block<'a>, u64, Option<Ttl>)> {
    let o = as_dict(v, path)?;
    let ty = tag(o, path, allowed)?;
    let p = format!("{path}.{ty}");
    let block = |kind| Block {
        msg: 0,
        idx: 0,
        type_name: ty,
        kind,
    };
    let (b, tokens) = match ty {
        "text" => {
            check_fields(o, TEXT_FIELDS, &p)?;
            let t = req_str(o, "text", &p)?;
            (block(Kind::Text(t)), u64::from(count_tokens(t)))
        }
        "image" => {
            check_fields(o, IMAGE_FIELDS, &p)?;
            let sp = format!("{p}.source");
            let Some(src) = o.get("source") else {
                return Err(AnthropicError::required(&sp));
            };
            let so = as_dict(src, &sp)?;
            let st = tag(so, &sp, &["base64", "url", "file"])?;
            let sp = format!("{sp}.{st}");
            match st {
                "base64" => {
                    check_fields(so, &["type", "media_type", "data"], &sp)?;
                    match so.get("media_type") {
                        None => return Err(AnthropicError::required(&format!("{sp}.media_type"))),
                        Some(Value::String(mt)) if IMAGE_MEDIA_TYPES.contains(&mt.as_str()) => {}
                        Some(_) => {
                            return Err(AnthropicError::at(
                                &format!("{sp}.media_type"),
                                &format!("Input should be {}", quoted(IMAGE_MEDIA_TYPES, " or ")),
                            ))
                        }
                    }
                    req_str(so, "data", &sp)?;
                }
                "url" => {
                    check_fields(so, &["type", "url"], &sp)?;
                    req_str(so, "url", &sp)?;
                }
                _ => {
                    check_fields(so, &["type", "file_id"], &sp)?;
                    req_str(so, "file_id", &sp)?;
                }
            }
            (block(Kind::Image), IMAGE_TOKENS)
        }
        "document" => {
            check_fields(o, DOCUMENT_FIELDS, &p)?;
            let sp = format!("{p}.source");
            let Some(src) = o.get("source") else {
                return Err(AnthropicError::required(&sp));
            };
            let so = as_dict(src, &sp)?;
            let st = tag(so, &sp, &["base64", "text", "content", "url", "file"])?;
            let tokens = match st {
                "text" => u64::from(count_tokens(req_str(so, "data", &format!("{sp}.text"))?)),
                "content" => u64::from(count_tokens(&nested_text(so.get("content")))),
                _ => DOCUMENT_TOKENS,
            };
            (block(Kind::Other), tokens)
        }
        "search_result" => {
            check_fields(o, SEARCH_RESULT_FIELDS, &p)?;
            req_str(o, "source", &p)?;
            req_str(o, "title", &p)?;
            (
                block(Kind::Other),
                u64::from(count_tokens(&nested_text(o.get("content")))),
            )
        }
        "thinking" => {
            check_fields(o, THINKING_FIELDS, &p)?;
            req_str(o, "thinking", &p)?;
            let sig = req_str(o, "signature", &p)?;
            if sig.trim().is_empty() {
                return Err(AnthropicError::invalid(format!(
                    "{path}: Invalid `signature` in `thinking` block"
                )));
            }
            // Thinking from earlier turns is stripped from the context and
            // costs no input tokens.
            (block(Kind::Thinking), 0)
        }
        "redacted_thinking" => {
            check_fields(o, REDACTED_THINKING_FIELDS, &p)?;
            req_str(o, "data", &p)?;
            (block(Kind::Thinking), 0)
        }
        "tool_use" => {
            check_fields(o, TOOL_USE_FIELDS, &p)?;
            let id = req_str(o, "id", &p)?;
            let name = req_str(o, "name", &p)?;
            let input = match o.get("input") {
                None => return Err(AnthropicError::required(&format!("{p}.input"))),
                Some(i) => i,
            };
            as_dict(input, &format!("{p}.input"))?;
            let tokens =
                u64::from(count_tokens(name)) + u64::from(count_tokens(&input.to_string()));
            (block(Kind::ToolUse { id }), tokens)
        }
        "tool_result" => {
            check_fields(o, TOOL_RESULT_FIELDS, &p)?;
            let id = req_str(o, "tool_use_id", &p)?;
            opt_bool(o, "is_error", &p)?;
            let mut tokens = 0;
            let mut texts: Vec<&str> = Vec::new();
            match present(o, "content") {
                None => {}
                Some(Value::String(s)) => {
                    texts.push(s);
                    tokens += u64::from(count_tokens(s));
                }
                Some(Value::Array(parts)) => {
                    for (k, part) in parts.iter().enumerate() {
                        let cp = format!("{p}.content.{k}");
                        let (b, t, _) = parse_block(part, &cp, TOOL_RESULT_BLOCK_TYPES)?;
                        if let Kind::Text(s) = b.kind {
                            texts.push(s);
                        }
                        tokens += t;
                    }
                }
                Some(_) => return Err(AnthropicError::not_a(&format!("{p}.content"), "list")),
            }
            let text = texts.join(" ");
            (block(Kind::ToolResult { id, text }), tokens)
        }
        // Server-tool blocks replayed from earlier responses.
        _ => (block(Kind::Other), u64::from(count_tokens(&v.to_string()))),
    };
    let cache = cache_control(o, &p)?;
    Ok((b, tokens, cache))
}

/// Text of a string or a list of text blocks.
fn nested_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// `tool_result` blocks answer the `tool_use` blocks of the previous turn,
/// and every `tool_use` is answered in the next turn.
fn check_tool_pairing(turns: &[Turn<'_>]) -> R<()> {
    for (t, turn) in turns.iter().enumerate() {
        match turn.role {
            Role::User => {
                let prev: Vec<&str> = match t.checked_sub(1).map(|p| &turns[p]) {
                    Some(p) => p
                        .blocks
                        .iter()
                        .filter_map(|b| match b.kind {
                            Kind::ToolUse { id } => Some(id),
                            _ => None,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                for b in &turn.blocks {
                    if let Kind::ToolResult { id, .. } = b.kind {
                        if !prev.contains(&id) {
                            return Err(AnthropicError::invalid(format!(
                                "messages.{}.content.{}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                                b.msg, b.idx
                            )));
                        }
                    }
                }
            }
            Role::Assistant => {
                let Some(next) = turns.get(t + 1) else {
                    continue;
                };
                let answered: Vec<&str> = next
                    .blocks
                    .iter()
                    .filter_map(|b| match b.kind {
                        Kind::ToolResult { id, .. } => Some(id),
                        _ => None,
                    })
                    .collect();
                let missing: Vec<(&str, usize)> = turn
                    .blocks
                    .iter()
                    .filter_map(|b| match b.kind {
                        Kind::ToolUse { id } if !answered.contains(&id) => Some((id, b.msg)),
                        _ => None,
                    })
                    .collect();
                if let Some((_, msg)) = missing.first() {
                    let ids: Vec<&str> = missing.iter().map(|(id, _)| *id).collect();
                    return Err(AnthropicError::invalid(format!(
                        "messages.{msg}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                        ids.join(", ")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// With thinking on, the assistant turn the reply continues (a final
/// prefill, or the tool-use turn before a final tool-result turn) must
/// start with a thinking block.
fn check_thinking_turn(turns: &[Turn<'_>]) -> R<()> {
    let Some(last) = turns.last() else {
        return Ok(());
    };
    let turn = match last.role {
        Role::Assistant => last,
        Role::User => {
            let has_results = last
                .blocks
                .iter()
                .any(|b| matches!(b.kind, Kind::ToolResult { .. }));
            match turns.len().checked_sub(2).map(|i| &turns[i]) {
                Some(prev) if has_results => prev,
                _ => return Ok(()),
            }
        }
    };
    let Some(first) = turn.blocks.first() else {
        return Ok(());
    };
    if matches!(first.kind, Kind::Thinking) {
        return Ok(());
    }
    Err(AnthropicError::invalid(format!(
        "messages.{}.content.{}.type: Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at {THINKING_DOCS}",
        first.msg, first.idx, first.type_name
    )))
}

// ---------------------------------------------------------------------------
// Answer

enum OutBlock {
    Thinking {
        text: String,
        signature: String,
        tokens: u64,
    },
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
        json: String,
    },
}

impl OutBlock {
    fn tokens(&self) -> u64 {
        match self {
            OutBlock::Thinking { tokens, .. } => *tokens,
            OutBlock::Text(t) => u64::from(count_tokens(t)),
            OutBlock::ToolUse { name, json, .. } => {
                u64::from(count_tokens(name)) + u64::from(count_tokens(json))
            }
        }
    }

    fn json(&self) -> BlockOut<'_> {
        match self {
            OutBlock::Thinking {
                text, signature, ..
            } => BlockOut::Thinking {
                thinking: text,
                signature,
            },
            OutBlock::Text(t) => BlockOut::Text { text: t },
            OutBlock::ToolUse {
                id, name, input, ..
            } => BlockOut::ToolUse { id, name, input },
        }
    }
}

struct Answer {
    blocks: Vec<OutBlock>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

impl Answer {
    fn output_tokens(&self) -> u64 {
        self.blocks.iter().map(OutBlock::tokens).sum()
    }
}

fn image_suffix(images: usize) -> String {
    match images {
        0 => String::new(),
        1 => " [1 image]".to_string(),
        n => format!(" [{n} images]"),
    }
}

/// A deterministic, base64-looking thinking signature.
fn signature(seed: u64) -> String {
    let mut rng = SplitMix64(seed ^ 0x7369_676e_6174_7572);
    let mut bytes = Vec::with_capacity(96);
    bytes.extend_from_slice(&[0x12, 0x5a]);
    for _ in 0..11 {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn answer(p: &Parsed<'_>, seed: u64, beh: &Behavior) -> Answer {
    if p.max_tokens == Some(0) {
        return Answer {
            blocks: Vec::new(),
            stop_reason: "max_tokens",
            stop_sequence: None,
        };
    }
    let last_user = p.turns.iter().rev().find(|t| t.role == Role::User);
    let mut user_text: Vec<&str> = Vec::new();
    let mut result_text: Vec<&str> = Vec::new();
    let mut images = 0;
    for b in last_user.map(|t| t.blocks.as_slice()).unwrap_or_default() {
        match &b.kind {
            Kind::Text(t) => user_text.push(t),
            Kind::Image => images += 1,
            Kind::ToolResult { text, .. } => result_text.push(text),
            _ => {}
        }
    }
    let user_text = user_text.join(" ");
    let result_text = result_text.join(" ");
    let has_results = last_user.is_some_and(|t| {
        t.blocks
            .iter()
            .any(|b| matches!(b.kind, Kind::ToolResult { .. }))
    });

    let mut blocks = Vec::new();
    let mut used = 0;
    if let Thinking::On { omitted, .. } = p.thinking {
        let about = if has_results {
            &result_text
        } else {
            &user_text
        };
        let text = format!("Mock reasoning about: {}", first_chars(about, 200));
        let tokens = u64::from(count_tokens(&text));
        used += tokens;
        blocks.push(OutBlock::Thinking {
            text: if omitted { String::new() } else { text },
            signature: signature(seed),
            tokens,
        });
    }

    let custom: Vec<&ToolDef<'_>> = p.tools.iter().filter(|t| t.custom).collect();
    let call = !custom.is_empty()
        && match p.choice.kind {
            ChoiceKind::NoTools => false,
            ChoiceKind::Auto => !has_results,
            ChoiceKind::Any | ChoiceKind::Tool => true,
        };
    let forced = p.choice.kind == ChoiceKind::Tool;
    let targets: Vec<&ToolDef<'_>> = match p.choice.name.filter(|_| forced) {
        _ if !call => Vec::new(),
        Some(name) => custom.into_iter().filter(|t| t.name == name).collect(),
        None if p.choice.parallel => custom.into_iter().take(MAX_PARALLEL_TOOL_USES).collect(),
        None => custom.into_iter().take(1).collect(),
    };
    if !targets.is_empty() {
        for (k, t) in targets.iter().enumerate() {
            let schema = t.schema.unwrap_or(&Value::Null);
            let full = forced
                && schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| !p.is_empty());
            let input = match t.schema {
                Some(s) => crate::schema::generate(s, !full),
                None => Value::Object(Map::new()),
            };
            let input = if input.is_object() {
                input
            } else {
                Value::Object(Map::new())
            };
            blocks.push(OutBlock::ToolUse {
                id: format!(
                    "toolu_01{}",
                    text::base62_id(seed ^ (k as u64 + 1).wrapping_mul(0x51_7cc1_b727_220a), 22)
                ),
                name: t.name.to_string(),
                json: input.to_string(),
                input,
            });
        }
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
            "Hello from the mock anthropic model {}. You said: {}{}",
            p.model,
            first_chars(&user_text, 200),
            image_suffix(images)
        ),
    };
    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    if let Some((pos, s)) = p
        .stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| reply.find(*s).map(|pos| (pos, *s)))
        .min_by_key(|(pos, _)| *pos)
    {
        reply.truncate(pos);
        stop_reason = "stop_sequence";
        stop_sequence = Some(s.to_string());
    }
    if let Some(max) = p.max_tokens {
        let (cut, was_cut) = text::cut_to_tokens(&reply, max.saturating_sub(used));
        if was_cut {
            reply = cut;
            stop_reason = "max_tokens";
            stop_sequence = None;
        }
    }
    if !reply.is_empty() || blocks.is_empty() {
        blocks.push(OutBlock::Text(reply));
    }
    Answer {
        blocks,
        stop_reason,
        stop_sequence,
    }
}

// ---------------------------------------------------------------------------
// Response JSON

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

#[derive(Serialize, Clone, Copy)]
struct CacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: CacheCreation,
    output_tokens: u64,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct DeltaUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockOut<'a>>,
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageOut<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockOut<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: StopDelta<'a>,
        usage: DeltaUsage,
    },
    MessageStop,
    Error {
        error: ErrorInner<'a>,
    },
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Error { .. } => "error",
        }
    }
}

/// `event: NAME\ndata: {json}\n\n`
fn sse(ev: &Event<'_>) -> Bytes {
    let mut buf = Vec::with_capacity(160);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(ev.name().as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // Serialising plain structs to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, ev);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// Splits tool input JSON into fragments that cut through tokens.
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

fn text_pieces(text: &str, chunks: Option<usize>) -> Vec<String> {
    match chunks {
        Some(n) => text::split_into(text, n),
        None => text::split_words(text)
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

fn usage(input: u64, cache: CacheUse, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cache_creation_input_tokens: cache.created(),
        cache_read_input_tokens: cache.read,
        cache_creation: CacheCreation {
            ephemeral_5m_input_tokens: cache.created_5m,
            ephemeral_1h_input_tokens: cache.created_1h,
        },
        output_tokens: output,
        service_tier: "standard",
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_response(
    id: &str,
    model: &str,
    mut ans: Answer,
    input: u64,
    cache: CacheUse,
    beh: &Behavior,
    request_id: &str,
) -> Response<Body> {
    // `chunks` may pad the text: report what is actually sent.
    let mut pieces: Vec<Vec<String>> = Vec::with_capacity(ans.blocks.len());
    for b in ans.blocks.iter_mut() {
        match b {
            OutBlock::Thinking { text, .. } => pieces.push(text_pieces(text, None)),
            OutBlock::Text(t) => {
                let p = text_pieces(t, beh.chunks);
                *t = p.concat();
                pieces.push(p);
            }
            OutBlock::ToolUse { json, .. } => pieces.push(json_fragments(json, beh.chunks)),
        }
    }
    let output = ans.output_tokens();
    let mut events: VecDeque<Bytes> =
        VecDeque::with_capacity(pieces.iter().map(Vec::len).sum::<usize>() + 8);
    let mut deltas: Vec<usize> = Vec::new();
    events.push_back(sse(&Event::MessageStart {
        message: MessageOut {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: usage(input, cache, 1),
        },
    }));
    if ans.blocks.is_empty() {
        events.push_back(sse(&Event::Ping));
    }
    let empty = Value::Object(Map::new());
    for (index, (b, parts)) in ans.blocks.iter().zip(&pieces).enumerate() {
        let start = match b {
            OutBlock::Thinking { .. } => BlockOut::Thinking {
                thinking: "",
                signature: "",
            },
            OutBlock::Text(_) => BlockOut::Text { text: "" },
            OutBlock::ToolUse { id, name, .. } => BlockOut::ToolUse {
                id,
                name,
                input: &empty,
            },
        };
        events.push_back(sse(&Event::ContentBlockStart {
            index,
            content_block: start,
        }));
        if index == 0 {
            events.push_back(sse(&Event::Ping));
        }
        for part in parts {
            let delta = match b {
                OutBlock::Thinking { .. } => Delta::Thinking { thinking: part },
                OutBlock::Text(_) => Delta::Text { text: part },
                OutBlock::ToolUse { .. } => Delta::InputJson { partial_json: part },
            };
            deltas.push(events.len());
            events.push_back(sse(&Event::ContentBlockDelta { index, delta }));
        }
        if let OutBlock::Thinking { signature, .. } = b {
            events.push_back(sse(&Event::ContentBlockDelta {
                index,
                delta: Delta::Signature { signature },
            }));
        }
        events.push_back(sse(&Event::ContentBlockStop { index }));
    }
    if beh.sse_error {
        // Overloaded mid-stream: the stream ends right after the error.
        let keep = match deltas.get(deltas.len() / 2) {
            Some(&i) => i + 1,
            None => events.len().min(2),
        };
        events.truncate(keep);
        events.push_back(sse(&Event::Error {
            error: ErrorInner {
                kind: "overloaded_error",
                message: "Overloaded",
            },
        }));
    } else {
        events.push_back(sse(&Event::MessageDelta {
            delta: StopDelta {
                stop_reason: ans.stop_reason,
                stop_sequence: ans.stop_sequence.as_deref(),
            },
            usage: DeltaUsage {
                input_tokens: input,
                cache_creation_input_tokens: cache.created(),
                cache_read_input_tokens: cache.read,
                output_tokens: output,
            },
        }));
        if !beh.nodone {
            events.push_back(sse(&Event::MessageStop));
        }
    }
    let mut resp = Response::new(Body::events(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set(h, "request-id", request_id);
    resp
}

// ---------------------------------------------------------------------------
// Handler

/// The text that may carry `[[mock:...]]` markers: the last user message
/// (string content, text blocks and tool results).
pub fn request_text(v: &Value) -> String {
    let Some(msgs) = v.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(last_user) = msgs
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last_user.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some("tool_result") => nested_text(b.get("content")),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The API key sent with `x-api-key`, else with `Authorization: Bearer`.
fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| bearer(headers))
        .filter(|k| !k.is_empty())
}

fn check_auth(state: &State, headers: &HeaderMap) -> Option<AnthropicError> {
    match api_key(headers) {
        None => Some(AnthropicError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        )),
        Some(k) if state.config.anthropic_keys.iter().any(|x| x == k) => None,
        Some(_) => Some(AnthropicError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        )),
    }
}

fn check_version(headers: &HeaderMap) -> Option<AnthropicError> {
    let values: Vec<&str> = headers
        .get_all("anthropic-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return Some(AnthropicError::invalid(
            "anthropic-version: header is required",
        ));
    }
    let v = values.join(", ");
    if API_VERSIONS.contains(&v.trim()) {
        None
    } else {
        Some(AnthropicError::invalid(format!(
            "anthropic-version: \"{v}\" is not a valid version"
        )))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn set_default(h: &mut HeaderMap, name: &'static str, value: &str) {
    if !h.contains_key(name) {
        set(h, name, value);
    }
}

fn add_headers(mut resp: Response<Body>, request_id: &str) -> Response<Body> {
    let reset = rfc3339(now_unix() + 1);
    let h = resp.headers_mut();
    set(h, "request-id", request_id);
    set(
        h,
        "anthropic-organization-id",
        "00000000-0000-4000-8000-000000000000",
    );
    set_default(h, "anthropic-ratelimit-requests-limit", "4000");
    set_default(h, "anthropic-ratelimit-requests-remaining", "3999");
    set_default(h, "anthropic-ratelimit-requests-reset", &reset);
    set_default(h, "anthropic-ratelimit-input-tokens-limit", "2000000");
    set_default(h, "anthropic-ratelimit-input-tokens-remaining", "2000000");
    set_default(h, "anthropic-ratelimit-input-tokens-reset", &reset);
    set_default(h, "anthropic-ratelimit-output-tokens-limit", "400000");
    set_default(h, "anthropic-ratelimit-output-tokens-remaining", "400000");
    set_default(h, "anthropic-ratelimit-output-tokens-reset", &reset);
    set_default(h, "anthropic-ratelimit-tokens-limit", "2400000");
    set_default(h, "anthropic-ratelimit-tokens-remaining", "2400000");
    set_default(h, "anthropic-ratelimit-tokens-reset", &reset);
    resp
}

/// Serves `/v1/messages` and `/v1/messages/count_tokens` (`ctx.sub` is the
/// path below the provider prefix).
pub async fn handle(ctx: Ctx<'_>) -> Response<Body> {
    let request_id = format!("req_011C{}", text::base62_id(ctx.state.unique(), 20));
    let ep = match ctx.sub {
        "/v1/messages" => Endpoint::Messages,
        "/v1/messages/count_tokens" => Endpoint::CountTokens,
        _ => {
            let e = AnthropicError::new(StatusCode::NOT_FOUND, "not_found_error", "Not Found");
            return add_headers(e.into_response(&request_id), &request_id);
        }
    };
    if *ctx.method != Method::POST {
        let e = AnthropicError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method Not Allowed",
        );
        let mut resp = e.into_response(&request_id);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return add_headers(resp, &request_id);
    }
    let json: Result<Value, serde_json::Error> = serde_json::from_slice(ctx.body);
    let mut beh = ctx.behavior(
        json.as_ref()
            .ok()
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str),
    );
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
        if let Some(e) = check_auth(ctx.state, ctx.headers) {
            break 'resp e.into_response(&request_id);
        }
        if let Some(e) = check_version(ctx.headers) {
            break 'resp e.into_response(&request_id);
        }
        let model = json
            .as_ref()
            .ok()
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str)
            .unwrap_or("claude-sonnet-4-5");
        if let Some(secs) = beh.throttle {
            break 'resp rate_limited(secs, &request_id);
        }
        if let Some(status) = beh.fail {
            let mut resp = fault_error(status, model).into_response(&request_id);
            if status == 429 {
                set(resp.headers_mut(), "retry-after", "1");
            }
            break 'resp resp;
        }
        let json = match &json {
            Ok(v) => v,
            Err(e) => {
                break 'resp AnthropicError::invalid(format!(
                    "The request body is not valid JSON: {e}"
                ))
                .into_response(&request_id)
            }
        };
        let beta = ctx.headers.contains_key("anthropic-beta");
        let p = match parse(json, ep, beta) {
            Ok(p) => p,
            Err(e) => break 'resp e.into_response(&request_id),
        };
        if ep == Endpoint::CountTokens {
            break 'resp crate::json_value_response(
                StatusCode::OK,
                &serde_json::json!({ "input_tokens": p.input_tokens }),
            );
        }
        let seed = text::fnv1a(ctx.body);
        let cache = ctx.state.prompt_cache.apply(&p.breakpoints);
        let input = p.input_tokens.saturating_sub(cache.read + cache.created());
        let ans = answer(&p, seed, &beh);
        let id = format!("msg_01{}", text::base62_id(seed, 22));
        if p.stream && !beh.badjson {
            break 'resp stream_response(&id, p.model, ans, input, cache, &beh, &request_id);
        }
        let body = MessageOut {
            id: &id,
            kind: "message",
            role: "assistant",
            model: p.model,
            content: ans.blocks.iter().map(OutBlock::json).collect(),
            stop_reason: Some(ans.stop_reason),
            stop_sequence: ans.stop_sequence.as_deref(),
            usage: usage(input, cache, ans.output_tokens()),
        };
        crate::json_value_response(StatusCode::OK, &body)
    };
    let resp = add_headers(resp, &request_id);
    beh.shape(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn sampling_exclusive_models() {
        for m in [
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1-20250805",
            "claude-haiku-4-5",
            "claude-opus-4-6",
            "claude-opus-5",
        ] {
            assert!(exclusive_sampling(m), "{m}");
        }
        for m in [
            "claude-sonnet-4-20250514",
            "claude-opus-4-0",
            "claude-3-7-sonnet-20250219",
            "claude-3-5-haiku-latest",
        ] {
            assert!(!exclusive_sampling(m), "{m}");
        }
    }

    #[test]
    fn cache_reads_longest_prefix() {
        let c = PromptCache::default();
        let bp = |hash, tokens| Breakpoint {
            hash,
            tokens,
            one_hour: false,
        };
        let u = c.apply(&[bp(1, 10), bp(2, 25)]);
        assert_eq!((u.read, u.created()), (0, 25));
        let u = c.apply(&[bp(1, 10), bp(3, 40)]);
        assert_eq!((u.read, u.created()), (10, 30));
        let u = c.apply(&[bp(1, 10), bp(3, 40)]);
        assert_eq!((u.read, u.created()), (40, 0));
        assert_eq!(c.clear(), 3);
    }

    #[test]
    fn quoting() {
        assert_eq!(
            quoted(IMAGE_MEDIA_TYPES, " or "),
            "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        );
    }
}
