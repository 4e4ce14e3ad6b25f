//! OpenAI-shaped APIs: chat completions, legacy completions, embeddings and
//! models, with the real API's validation, error bodies, response objects,
//! SSE streaming and headers.
//!
//! The same code serves OpenAI (`/v1`), Ollama (`/ollama/v1`), vLLM
//! (`/vllm/v1`) and, through [`crate::azure`], Azure OpenAI; the
//! [`Dialect`] decides the provider-specific details (strict parameter
//! checking, model catalog, auth, error shape, extra response fields).

use std::collections::VecDeque;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::behavior::{html_response, Behavior};
use crate::body::Body;
use crate::text::{self, count_tokens, first_chars};
use crate::{json_response, json_value_response, now_unix, Ctx, Provider, State};

/// Model served by `/vllm/v1` when the request names none.
pub const VLLM_DEFAULT_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
/// Default embedding size for Ollama and vLLM.
pub const COMPAT_EMBEDDING_DIMS: usize = 768;

/// Fixed list returned by `GET /v1/models`.
pub const OPENAI_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4-turbo",
    "gpt-4",
    "gpt-3.5-turbo",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "chatgpt-4o-latest",
    "gpt-3.5-turbo-instruct",
    "davinci-002",
    "babbage-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
];

const OLLAMA_MODELS: &[&str] = &["llama3.2:latest", "qwen2.5:0.5b", "nomic-embed-text:latest"];

/// Top-level parameters OpenAI accepts on `/v1/chat/completions`.
pub const CHAT_PARAMS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "reasoning_effort",
    "response_format",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

/// Top-level parameters OpenAI accepts on `/v1/completions`.
pub const COMPLETION_PARAMS: &[&str] = &[
    "model",
    "prompt",
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
];

/// Top-level parameters OpenAI accepts on `/v1/embeddings`.
pub const EMBEDDING_PARAMS: &[&str] = &["model", "input", "dimensions", "encoding_format", "user"];

/// Extra chat parameters Azure OpenAI accepts.
pub const AZURE_CHAT_EXTRA: &[&str] = &["data_sources", "user_security_context"];

const VALID_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

// ---------------------------------------------------------------------------
// Errors

/// An OpenAI-shaped API error:
/// `{"error":{"message","type","param","code"}}`.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Value,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        message: impl Into<String>,
        kind: &'static str,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: param.map(str::to_string),
            code: code.map(Value::from).unwrap_or(Value::Null),
        }
    }

    /// 400 `invalid_request_error`.
    pub fn bad(message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            message,
            "invalid_request_error",
            param,
            code,
        )
    }

    pub fn parse_error() -> Self {
        Self::bad(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            None,
            None,
        )
    }

    pub fn missing(param: &str) -> Self {
        Self::bad(
            format!("Missing required parameter: '{param}'."),
            Some(param),
            Some("missing_required_parameter"),
        )
    }

    pub fn unrecognized(name: &str) -> Self {
        Self::bad(
            format!("Unrecognized request argument supplied: {name}"),
            None,
            None,
        )
    }

    pub fn invalid_type(param: &str, expected: &str, got: &Value) -> Self {
        Self::bad(
            format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                kind_of(got)
            ),
            Some(param),
            Some("invalid_type"),
        )
    }

    pub fn invalid_value(param: &str, got: &str, supported: &[&str]) -> Self {
        Self::bad(
            format!(
                "Invalid value: '{got}'. Supported values are: {}.",
                list_quoted(supported)
            ),
            Some(param),
            Some("invalid_value"),
        )
    }

    pub fn empty_array(param: &str) -> Self {
        Self::bad(
            format!("Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."),
            Some(param),
            Some("empty_array"),
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        )
    }

    /// The error as JSON in the OpenAI shape.
    pub fn openai_json(&self) -> Value {
        serde_json::to_value(self.body(self.kind, &self.code)).unwrap_or(Value::Null)
    }

    fn body<'a>(&'a self, kind: &'a str, code: &'a Value) -> ErrorBody<'a> {
        ErrorBody {
            error: ErrorInner {
                message: &self.message,
                kind,
                param: self.param.as_deref(),
                code,
            },
        }
    }

    /// The error rendered the way `provider` renders errors.
    pub fn into_response(self, provider: Provider) -> Response<Body> {
        match provider {
            Provider::Vllm => {
                let code = Value::from(self.status.as_u16());
                json_value_response(self.status, &self.body(vllm_error_type(self.status), &code))
            }
            _ => json_value_response(self.status, &self.body(self.kind, &self.code)),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a Value,
}

fn vllm_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        501 => "NotImplementedError",
        503 => "ServiceUnavailableError",
        s if s >= 500 => "InternalServerError",
        _ => "BadRequestError",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `'a', 'b', and 'c'` like OpenAI's messages.
fn list_quoted(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [a] => format!("'{a}'"),
        [a, b] => format!("'{a}' and '{b}'"),
        [init @ .., last] => {
            let head: Vec<String> = init.iter().map(|s| format!("'{s}'")).collect();
            format!("{}, and '{last}'", head.join(", "))
        }
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

// ---------------------------------------------------------------------------
// Dialect

/// Provider-specific behaviour of the OpenAI-shaped handlers.
#[derive(Clone, Copy, Debug)]
pub struct Dialect<'a> {
    pub provider: Provider,
    /// Azure deployment (reported as the model).
    pub deployment: Option<&'a str>,
}

impl Dialect<'_> {
    pub fn new(provider: Provider) -> Self {
        Dialect {
            provider,
            deployment: None,
        }
    }

    /// Unknown top-level parameters are rejected (OpenAI, Azure).
    fn strict(&self) -> bool {
        matches!(self.provider, Provider::OpenAi | Provider::Azure)
    }

    fn openai_like(&self) -> bool {
        matches!(self.provider, Provider::OpenAi | Provider::Azure)
    }

    fn azure(&self) -> bool {
        self.provider == Provider::Azure
    }

    fn model(&self, m: &Map<String, Value>) -> Result<String, ApiError> {
        if let Some(dep) = self.deployment {
            if let Some(v) = m.get("model") {
                if !v.is_string() && !v.is_null() {
                    return Err(ApiError::invalid_type("model", "a string", v));
                }
            }
            return Ok(dep.to_string());
        }
        match m.get("model") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            None | Some(Value::Null) | Some(Value::String(_)) => match self.provider {
                Provider::Vllm => Ok(VLLM_DEFAULT_MODEL.to_string()),
                Provider::Ollama => Err(ApiError::bad("model is required", None, None)),
                _ => Err(ApiError::missing("model")),
            },
            Some(v) => Err(ApiError::invalid_type("model", "a string", v)),
        }
    }

    fn fingerprint(&self, model: &str) -> Option<String> {
        match self.provider {
            Provider::OpenAi | Provider::Azure => Some(format!(
                "fp_{}",
                text::hex_id(text::fnv1a(model.as_bytes()), 10)
            )),
            Provider::Ollama => Some("fp_ollama".to_string()),
            Provider::Vllm
            | Provider::Anthropic
            | Provider::Gemini
            | Provider::Vertex
            | Provider::Bedrock
            | Provider::GceMetadata => None,
        }
    }

    fn usage(&self, prompt: u64, completion: u64, details: bool) -> Usage {
        let openai_like = self.openai_like() && details;
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: match self.provider {
                _ if openai_like => Some(PROMPT_DETAILS),
                Provider::Vllm => Some(None),
                _ => None,
            },
            completion_tokens_details: openai_like.then_some(COMPLETION_DETAILS),
        }
    }
}

// ---------------------------------------------------------------------------
// Model catalog

/// What an OpenAI model can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Chat,
    Completion,
    Embedding,
}

/// Classifies an OpenAI model name (`None`: unknown model).
pub fn openai_model_kind(model: &str) -> Option<ModelKind> {
    // Fine-tuned models: ft:BASE:org::id
    let base = match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    };
    if base.starts_with("gpt-3.5-turbo-instruct") || base == "davinci-002" || base == "babbage-002"
    {
        return Some(ModelKind::Completion);
    }
    if openai_embedding_dims(base).is_some() {
        return Some(ModelKind::Embedding);
    }
    const CHAT_PREFIXES: [&str; 7] = [
        "gpt-4",
        "gpt-5",
        "gpt-3.5-turbo",
        "o1",
        "o3",
        "o4",
        "chatgpt-",
    ];
    if CHAT_PREFIXES.iter().any(|p| base.starts_with(p)) {
        return Some(ModelKind::Chat);
    }
    None
}

/// Default vector size of an OpenAI embedding model.
pub fn openai_embedding_dims(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// Reasoning models reject `max_tokens` and non-default sampling.
fn is_reasoning_model(model: &str) -> bool {
    ["o1", "o3", "o4"].iter().any(|p| model.starts_with(p))
        || (model.starts_with("gpt-5") && !model.starts_with("gpt-5-chat"))
}

// ---------------------------------------------------------------------------
// Request plumbing

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Models,
    Model,
}

fn match_endpoint(sub: &str) -> Option<Endpoint> {
    Some(match sub {
        "/v1/chat/completions" => Endpoint::Chat,
        "/v1/completions" => Endpoint::Completions,
        "/v1/embeddings" => Endpoint::Embeddings,
        "/v1/models" => Endpoint::Models,
        s if s.starts_with("/v1/models/") && s.len() > "/v1/models/".len() => Endpoint::Model,
        _ => return None,
    })
}

/// Serves an OpenAI, Ollama or vLLM request.
pub async fn handle(ctx: Ctx<'_>, provider: Provider) -> Response<Body> {
    let started = Instant::now();
    let Some(ep) = match_endpoint(ctx.sub) else {
        return not_found(provider, ctx.method, ctx.path);
    };
    let post = matches!(
        ep,
        Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings
    );
    let allowed = if post { Method::POST } else { Method::GET };
    if *ctx.method != allowed && !(allowed == Method::GET && *ctx.method == Method::HEAD) {
        return method_not_allowed(provider, ctx.method, ctx.path, allowed);
    }
    let json = if post { parse_body(ctx.body) } else { None };
    let model = match ep {
        Endpoint::Model => Some(&ctx.sub["/v1/models/".len()..]),
        _ => json
            .as_ref()
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str),
    };
    let mut beh = ctx.behavior(model);
    if let Some(v) = &json {
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
        if let Some(resp) = check_auth(ctx.state, provider, ctx.headers) {
            break 'resp resp;
        }
        let model = json
            .as_ref()
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str)
            .unwrap_or("gpt-4o-mini");
        if let Some(secs) = beh.throttle {
            break 'resp throttle_response(provider, secs, model);
        }
        if let Some(status) = beh.fail {
            break 'resp fault_error(status, model).into_response(provider);
        }
        let d = Dialect::new(provider);
        let json = json.as_ref();
        let result = match ep {
            Endpoint::Chat => chat(&d, json, &beh),
            Endpoint::Completions => completions(&d, json, &beh),
            Endpoint::Embeddings => embeddings(&d, json, &beh),
            Endpoint::Models => Ok(list_models(provider)),
            Endpoint::Model => {
                let id = &ctx.sub["/v1/models/".len()..];
                get_model(provider, id)
            }
        };
        result.unwrap_or_else(|e| e.into_response(provider))
    };
    let resp = add_headers(provider, ctx.state, resp, started);
    beh.shape(resp)
}

/// Parses a request body; `None` when it is not JSON.
pub fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// The text that may carry `[[mock:...]]` markers: the last user message,
/// the prompt(s) or the embedding input(s).
pub fn request_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
        if let Some(last_user) = msgs
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        {
            if let Some(c) = last_user.get("content") {
                out.push_str(&content_text(c).0);
            }
        }
    }
    for key in ["prompt", "input"] {
        match v.get(key) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(a)) => {
                for s in a.iter().filter_map(Value::as_str) {
                    out.push_str(s);
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
    out
}

fn check_auth(state: &State, provider: Provider, headers: &HeaderMap) -> Option<Response<Body>> {
    match provider {
        Provider::OpenAi => {
            let key = bearer(headers).unwrap_or("");
            if key.is_empty() {
                return Some(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    None,
                    None,
                )
                .into_response(provider));
            }
            if !state.config.openai_keys.iter().any(|k| k == key) {
                return Some(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.", mask_key(key)),
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                )
                .into_response(provider));
            }
            None
        }
        Provider::Vllm => {
            let keys = &state.config.vllm_keys;
            if keys.is_empty() {
                return None;
            }
            match bearer(headers) {
                Some(k) if keys.iter().any(|x| x == k) => None,
                _ => Some(json_response(
                    StatusCode::UNAUTHORIZED,
                    br#"{"error":"Unauthorized"}"#.to_vec(),
                )),
            }
        }
        // Ollama has no auth; the others have their own modules.
        _ => None,
    }
}

/// The bearer token of the `Authorization` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Masks a key like OpenAI does in its 401 message: first 6 characters,
/// one `*` per hidden character, last 4 characters.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 10 {
        let shown = chars.len().min(2);
        let mut s: String = chars[..shown].iter().collect();
        s.extend(std::iter::repeat_n('*', chars.len() - shown));
        return s;
    }
    let mut s: String = chars[..6].iter().collect();
    s.extend(std::iter::repeat_n('*', chars.len() - 10));
    s.extend(&chars[chars.len() - 4..]);
    s
}

fn not_found(provider: Provider, method: &Method, path: &str) -> Response<Body> {
    match provider {
        Provider::Ollama => crate::text_response(StatusCode::NOT_FOUND, "404 page not found"),
        Provider::Vllm => {
            json_response(StatusCode::NOT_FOUND, br#"{"detail":"Not Found"}"#.to_vec())
        }
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        )
        .into_response(Provider::OpenAi),
    }
}

/// 405 for a known path with the wrong method.
pub fn method_not_allowed(
    provider: Provider,
    method: &Method,
    path: &str,
    allowed: Method,
) -> Response<Body> {
    let mut resp = match provider {
        Provider::Vllm => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            br#"{"detail":"Method Not Allowed"}"#.to_vec(),
        ),
        _ => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Invalid method for URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        )
        .into_response(Provider::OpenAi),
    };
    if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// The error body for `fail=STATUS`.
pub fn fault_error(status: u16, model: &str) -> ApiError {
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let e = |msg: &str, kind: &'static str, code: Option<&str>| {
        ApiError::new(st, msg.to_string(), kind, None, code)
    };
    match status {
        400 => e(
            "Invalid request: the request could not be processed as sent.",
            "invalid_request_error",
            None,
        ),
        401 => e(
            "Incorrect API key provided: sk-****. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => e(
            "Country, region, or territory not supported",
            "request_forbidden",
            Some("unsupported_country_region_territory"),
        ),
        404 => ApiError {
            status: st,
            ..ApiError::model_not_found(model)
        },
        408 => e("Request timed out.", "timeout", None),
        409 => e(
            "The request conflicted with another request. Please try again.",
            "invalid_request_error",
            None,
        ),
        413 => e("Request too large.", "invalid_request_error", None),
        429 => e(
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        500 => e(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        502 => ApiError {
            code: Value::from(502),
            ..e("Bad gateway.", "cf_bad_gateway", None)
        },
        503 => e(
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
        504 => ApiError {
            code: Value::from(504),
            ..e("Gateway timeout.", "cf_gateway_timeout", None)
        },
        s if s >= 500 => e(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        _ => e(
            &format!(
                "Request failed: {}.",
                st.canonical_reason().unwrap_or("error")
            ),
            "invalid_request_error",
            None,
        ),
    }
}

/// `Retry-After` style values for a throttle of `secs` seconds.
pub fn retry_after_values(secs: f64) -> (String, String) {
    (
        format!("{}", secs.ceil() as u64),
        format!("{}", (secs * 1000.0).round() as u64),
    )
}

/// 429 rate-limit response for `throttle=SECONDS`.
pub fn throttle_response(provider: Provider, secs: f64, model: &str) -> Response<Body> {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in {}s. Visit https://platform.openai.com/account/rate-limits to learn more.",
            fmt_num(secs)
        ),
        "requests",
        None,
        Some("rate_limit_exceeded"),
    )
    .into_response(provider);
    let (ra, ra_ms) = retry_after_values(secs);
    let h = resp.headers_mut();
    set(h, "retry-after", &ra);
    set(h, "retry-after-ms", &ra_ms);
    set(h, "x-ratelimit-limit-requests", "10000");
    set(h, "x-ratelimit-remaining-requests", "0");
    set(
        h,
        "x-ratelimit-reset-requests",
        &format!("{}s", fmt_num(secs)),
    );
    resp
}

pub(crate) fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn set_default(h: &mut HeaderMap, name: &'static str, value: &str) {
    if !h.contains_key(name) {
        set(h, name, value);
    }
}

fn add_headers(
    provider: Provider,
    state: &State,
    mut resp: Response<Body>,
    started: Instant,
) -> Response<Body> {
    let h = resp.headers_mut();
    match provider {
        Provider::OpenAi => {
            set(
                h,
                "x-request-id",
                &format!("req_{}", text::hex_id(state.unique(), 32)),
            );
            set(
                h,
                "openai-processing-ms",
                &started.elapsed().as_millis().to_string(),
            );
            set(h, "openai-version", "2020-10-01");
            set(h, "openai-organization", "user-mock");
            set(h, "openai-project", "proj_mock");
            set_default(h, "x-ratelimit-limit-requests", "10000");
            set_default(h, "x-ratelimit-limit-tokens", "30000000");
            set_default(h, "x-ratelimit-remaining-requests", "9999");
            set_default(h, "x-ratelimit-remaining-tokens", "29999000");
            set_default(h, "x-ratelimit-reset-requests", "6ms");
            set_default(h, "x-ratelimit-reset-tokens", "0s");
        }
        Provider::Vllm => {
            set(h, "server", "uvicorn");
        }
        _ => {}
    }
    resp
}

fn list_models(provider: Provider) -> Response<Body> {
    let (names, owner): (&[&str], &str) = match provider {
        Provider::Ollama => (OLLAMA_MODELS, "library"),
        Provider::Vllm => (&[VLLM_DEFAULT_MODEL], "vllm"),
        _ => (OPENAI_MODELS, "system"),
    };
    let data: Vec<Value> = names
        .iter()
        .map(|n| model_object(provider, n, owner))
        .collect();
    json_value_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn model_object(provider: Provider, id: &str, owner: &str) -> Value {
    let mut v =
        json!({"id": id, "object": "model", "created": 1_686_935_002u64, "owned_by": owner});
    if provider == Provider::Vllm {
        v["root"] = Value::from(id);
        v["parent"] = Value::Null;
        v["max_model_len"] = Value::from(131_072);
    }
    v
}

fn get_model(provider: Provider, id: &str) -> Result<Response<Body>, ApiError> {
    let known = match provider {
        Provider::Ollama | Provider::Vllm => true,
        _ => openai_model_kind(id).is_some(),
    };
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("The model '{id}' does not exist"),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        ));
    }
    let owner = match provider {
        Provider::Ollama => "library",
        Provider::Vllm => "vllm",
        _ => "system",
    };
    Ok(json_value_response(
        StatusCode::OK,
        &model_object(provider, id, owner),
    ))
}

// ---------------------------------------------------------------------------
// Parameter validation helpers

fn as_object(json: Option<&Value>) -> Result<&Map<String, Value>, ApiError> {
    json.and_then(Value::as_object)
        .ok_or_else(ApiError::parse_error)
}

fn check_unknown(m: &Map<String, Value>, known: &[&[&str]]) -> Result<(), ApiError> {
    for k in m.keys() {
        if !known.iter().any(|list| list.contains(&k.as_str())) {
            return Err(ApiError::unrecognized(k));
        }
    }
    Ok(())
}

fn present<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn opt_number(
    m: &Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    let Some(v) = present(m, key) else {
        return Ok(None);
    };
    let Some(x) = v.as_f64().filter(|_| v.is_number()) else {
        return Err(ApiError::invalid_type(key, "a decimal", v));
    };
    if x < min {
        return Err(ApiError::bad(
            format!(
                "Invalid '{key}': decimal below minimum value. Expected a value >= {}, but got {} instead.",
                fmt_num(min),
                v
            ),
            Some(key),
            Some("decimal_below_min_value"),
        ));
    }
    if x > max {
        return Err(ApiError::bad(
            format!(
                "Invalid '{key}': decimal above maximum value. Expected a value <= {}, but got {} instead.",
                fmt_num(max),
                v
            ),
            Some(key),
            Some("decimal_above_max_value"),
        ));
    }
    Ok(Some(x))
}

fn opt_int(
    m: &Map<String, Value>,
    key: &str,
    min: i64,
    max: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let Some(v) = present(m, key) else {
        return Ok(None);
    };
    let x = match v {
        Value::Number(n) if n.is_i64() => n.as_i64().unwrap_or(0),
        Value::Number(n) if n.is_u64() => i64::MAX,
        _ => return Err(ApiError::invalid_type(key, "an integer", v)),
    };
    if x < min {
        return Err(ApiError::bad(
            format!(
                "Invalid '{key}': integer below minimum value. Expected a value >= {min}, but got {v} instead."
            ),
            Some(key),
            Some("integer_below_min_value"),
        ));
    }
    if let Some(max) = max {
        if x > max {
            return Err(ApiError::bad(
                format!(
                    "Invalid '{key}': integer above maximum value. Expected a value <= {max}, but got {v} instead."
                ),
                Some(key),
                Some("integer_above_max_value"),
            ));
        }
    }
    Ok(Some(x))
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match present(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::invalid_type(key, "a boolean", v)),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match present(m, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ApiError::invalid_type(key, "a string", v)),
    }
}

fn opt_object<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match present(m, key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(v) => Err(ApiError::invalid_type(key, "an object", v)),
    }
}

/// Validates `stream` and `stream_options`; returns (stream, include_usage).
fn stream_params(m: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = opt_bool(m, "stream")?.unwrap_or(false);
    let mut include_usage = false;
    if let Some(opts) = present(m, "stream_options") {
        if !stream {
            return Err(ApiError::bad(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                Some("stream_options"),
                None,
            ));
        }
        let Value::Object(o) = opts else {
            return Err(ApiError::invalid_type("stream_options", "an object", opts));
        };
        match present(o, "include_usage") {
            None => {}
            Some(Value::Bool(b)) => include_usage = *b,
            Some(v) => {
                return Err(ApiError::invalid_type(
                    "stream_options.include_usage",
                    "a boolean",
                    v,
                ))
            }
        }
    }
    Ok((stream, include_usage))
}

fn stop_param(m: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match present(m, "stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => {
            if a.len() > 4 {
                return Err(ApiError::bad(
                    format!("Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {} instead.", a.len()),
                    Some("stop"),
                    Some("array_above_max_length"),
                ));
            }
            a.iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::invalid_type(&format!("stop[{i}]"), "a string", v)),
                })
                .collect()
        }
        Some(v) => Err(ApiError::invalid_type(
            "stop",
            "one of a string or array of strings",
            v,
        )),
    }
}

/// Common sampling parameters shared by chat and completions.
fn sampling_params(m: &Map<String, Value>) -> Result<(), ApiError> {
    opt_number(m, "temperature", 0.0, 2.0)?;
    opt_number(m, "top_p", 0.0, 1.0)?;
    opt_number(m, "frequency_penalty", -2.0, 2.0)?;
    opt_number(m, "presence_penalty", -2.0, 2.0)?;
    opt_int(m, "seed", i64::MIN, None)?;
    opt_str(m, "user")?;
    opt_object(m, "logit_bias")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Message helpers

/// Text of a message `content` (string or array of parts) and the number
/// of image parts.
pub fn content_text(content: &Value) -> (String, usize) {
    match content {
        Value::String(s) => (s.clone(), 0),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut images = 0;
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") | Some("refusal") => {
                        let t = p
                            .get("text")
                            .or_else(|| p.get("refusal"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if !text.is_empty() && !t.is_empty() {
                            text.push(' ');
                        }
                        text.push_str(t);
                    }
                    Some("image_url") | Some("input_image") | Some("image") => images += 1,
                    _ => {}
                }
            }
            (text, images)
        }
        _ => (String::new(), 0),
    }
}

/// Tokens charged for one image part.
pub const IMAGE_TOKENS: u64 = 85;

fn content_tokens(content: Option<&Value>) -> u64 {
    match content {
        Some(c) => {
            let (t, images) = content_text(c);
            u64::from(count_tokens(&t)) + images as u64 * IMAGE_TOKENS
        }
        None => 0,
    }
}

/// `prompt_tokens` of a chat request: sum over messages of
/// (content tokens + 4) + 3, where content tokens are [`count_tokens`] of
/// the text parts, [`IMAGE_TOKENS`] per image, and for assistant tool calls
/// the tokens of the function names and arguments.
pub fn chat_prompt_tokens(messages: &[Value]) -> u64 {
    let mut total = 3;
    for msg in messages {
        let mut t = content_tokens(msg.get("content")) + 4;
        if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let f = c.get("function");
                for k in ["name", "arguments"] {
                    if let Some(s) = f.and_then(|f| f.get(k)).and_then(Value::as_str) {
                        t += u64::from(count_tokens(s));
                    }
                }
            }
        }
        total += t;
    }
    total
}

fn image_suffix(images: usize) -> String {
    match images {
        0 => String::new(),
        1 => " [1 image]".to_string(),
        n => format!(" [{n} images]"),
    }
}

fn validate_messages(v: Option<&Value>) -> Result<&Vec<Value>, ApiError> {
    let msgs = match v {
        None | Some(Value::Null) => return Err(ApiError::missing("messages")),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ApiError::invalid_type(
                "messages",
                "an array of objects",
                other,
            ))
        }
    };
    if msgs.is_empty() {
        return Err(ApiError::bad(
            "'messages' must contain at least 1 element",
            Some("messages"),
            Some("empty_array"),
        ));
    }
    for (i, msg) in msgs.iter().enumerate() {
        let Value::Object(o) = msg else {
            return Err(ApiError::invalid_type(
                &format!("messages[{i}]"),
                "an object",
                msg,
            ));
        };
        let role_param = format!("messages[{i}].role");
        let role = match o.get("role") {
            None | Some(Value::Null) => return Err(ApiError::missing(&role_param)),
            Some(Value::String(r)) if VALID_ROLES.contains(&r.as_str()) => r.as_str(),
            Some(Value::String(r)) => {
                return Err(ApiError::invalid_value(
                    &role_param,
                    r,
                    &[
                        "system",
                        "assistant",
                        "user",
                        "function",
                        "tool",
                        "developer",
                    ],
                ))
            }
            Some(other) => return Err(ApiError::invalid_type(&role_param, "a string", other)),
        };
        let content_param = format!("messages[{i}].content");
        let has_calls = present(o, "tool_calls").is_some() || present(o, "function_call").is_some();
        match present(o, "content") {
            None => {
                let optional = role == "assistant"
                    && (has_calls
                        || present(o, "refusal").is_some()
                        || present(o, "audio").is_some());
                if !optional && role != "function" {
                    return Err(ApiError::missing(&content_param));
                }
            }
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                if parts.is_empty() && role == "user" {
                    return Err(ApiError::empty_array(&content_param));
                }
                validate_parts(role, i, parts)?;
            }
            Some(other) => {
                return Err(ApiError::invalid_type(
                    &content_param,
                    "one of a string or array of objects",
                    other,
                ))
            }
        }
        if role == "tool" {
            let p = format!("messages[{i}].tool_call_id");
            match o.get("tool_call_id") {
                Some(Value::String(_)) => {}
                None | Some(Value::Null) => return Err(ApiError::missing(&p)),
                Some(v) => return Err(ApiError::invalid_type(&p, "a string", v)),
            }
        }
        if role == "function" && opt_str(o, "name")?.is_none() {
            return Err(ApiError::missing(&format!("messages[{i}].name")));
        }
        if role == "assistant" {
            if let Some(calls) = present(o, "tool_calls") {
                let Value::Array(calls) = calls else {
                    return Err(ApiError::invalid_type(
                        &format!("messages[{i}].tool_calls"),
                        "an array",
                        calls,
                    ));
                };
                for (j, c) in calls.iter().enumerate() {
                    let base = format!("messages[{i}].tool_calls[{j}]");
                    if c.get("id").and_then(Value::as_str).is_none() {
                        return Err(ApiError::missing(&format!("{base}.id")));
                    }
                    if c.get("function").and_then(Value::as_object).is_none()
                        && c.get("custom").and_then(Value::as_object).is_none()
                    {
                        return Err(ApiError::missing(&format!("{base}.function")));
                    }
                }
            }
        }
    }
    Ok(msgs)
}

fn validate_parts(role: &str, i: usize, parts: &[Value]) -> Result<(), ApiError> {
    const TYPES: &[&str] = &[
        "text",
        "image_url",
        "input_audio",
        "refusal",
        "audio",
        "file",
    ];
    for (j, part) in parts.iter().enumerate() {
        let base = format!("messages[{i}].content[{j}]");
        let Value::Object(p) = part else {
            return Err(ApiError::invalid_type(&base, "an object", part));
        };
        let ty_param = format!("{base}.type");
        let ty = match p.get("type") {
            Some(Value::String(t)) if TYPES.contains(&t.as_str()) => t.as_str(),
            Some(Value::String(t)) => return Err(ApiError::invalid_value(&ty_param, t, TYPES)),
            None | Some(Value::Null) => return Err(ApiError::missing(&ty_param)),
            Some(v) => return Err(ApiError::invalid_type(&ty_param, "a string", v)),
        };
        match ty {
            "text" => match p.get("text") {
                Some(Value::String(_)) => {}
                None | Some(Value::Null) => return Err(ApiError::missing(&format!("{base}.text"))),
                Some(v) => {
                    return Err(ApiError::invalid_type(
                        &format!("{base}.text"),
                        "a string",
                        v,
                    ))
                }
            },
            "image_url" => {
                if role != "user" {
                    return Err(ApiError::bad(
                        format!("Invalid 'messages[{i}]'. Image URLs are only allowed for messages with role 'user', but this message with role '{role}' contains an image URL."),
                        Some(&format!("messages[{i}]")),
                        Some("invalid_value"),
                    ));
                }
                let url = p.get("image_url").and_then(|u| u.get("url"));
                if !matches!(url, Some(Value::String(_))) {
                    return Err(ApiError::missing(&format!("{base}.image_url.url")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The real API's rule: every assistant message with `tool_calls` must be
/// followed by one `tool` message per call id, and every `tool` message
/// must answer such a call.
fn check_tool_sequence(msgs: &[Value]) -> Result<(), ApiError> {
    let mut open: Vec<&str> = Vec::new();
    let mut open_at = 0;
    let unanswered = |open: &[&str], at: usize| {
        ApiError::bad(
            format!("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}", open.join(", ")),
            Some(&format!("messages.[{at}].role")),
            None,
        )
    };
    for (i, msg) in msgs.iter().enumerate() {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or("");
        if role == "tool" {
            let id = msg
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            match open.iter().position(|x| *x == id) {
                Some(pos) => {
                    open.remove(pos);
                }
                None => {
                    return Err(ApiError::bad(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        Some(&format!("messages.[{i}].role")),
                        None,
                    ))
                }
            }
            continue;
        }
        if !open.is_empty() {
            return Err(unanswered(&open, open_at));
        }
        if role == "assistant" {
            if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
                open = calls
                    .iter()
                    .filter_map(|c| c.get("id").and_then(Value::as_str))
                    .collect();
                open_at = i;
            }
        }
    }
    if !open.is_empty() {
        return Err(unanswered(&open, open_at));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Tools

#[derive(Clone, Debug)]
struct ToolSpec<'a> {
    name: &'a str,
    params: Option<&'a Value>,
    custom: bool,
}

#[derive(Clone, Debug)]
enum ToolPlan<'a> {
    /// `tools` → `message.tool_calls`.
    Tool(ToolSpec<'a>),
    /// legacy `functions` → `message.function_call`.
    Function(ToolSpec<'a>),
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_tools(m: &Map<String, Value>) -> Result<Vec<ToolSpec<'_>>, ApiError> {
    let tools = match present(m, "tools") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(ApiError::invalid_type("tools", "an array", v)),
    };
    if tools.is_empty() {
        return Err(ApiError::empty_array("tools"));
    }
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let base = format!("tools[{i}]");
        let Value::Object(o) = t else {
            return Err(ApiError::invalid_type(&base, "an object", t));
        };
        let ty = match o.get("type") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => return Err(ApiError::missing(&format!("{base}.type"))),
            Some(v) => {
                return Err(ApiError::invalid_type(
                    &format!("{base}.type"),
                    "a string",
                    v,
                ))
            }
        };
        let (key, custom) = match ty {
            "function" => ("function", false),
            "custom" => ("custom", true),
            other => {
                return Err(ApiError::invalid_value(
                    &format!("{base}.type"),
                    other,
                    &["function", "custom"],
                ))
            }
        };
        let Some(f) = o.get(key).and_then(Value::as_object) else {
            return Err(ApiError::missing(&format!("{base}.{key}")));
        };
        let name = match f.get("name") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(ApiError::missing(&format!("{base}.{key}.name"))),
        };
        if !valid_tool_name(name) {
            return Err(ApiError::bad(
                format!("Invalid '{base}.{key}.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."),
                Some(&format!("{base}.{key}.name")),
                Some("invalid_value"),
            ));
        }
        let params = present(f, "parameters");
        if let Some(p) = params {
            if !p.is_object() {
                return Err(ApiError::invalid_type(
                    &format!("{base}.function.parameters"),
                    "an object",
                    p,
                ));
            }
        }
        out.push(ToolSpec {
            name,
            params,
            custom,
        });
    }
    Ok(out)
}

fn parse_functions(m: &Map<String, Value>) -> Result<Vec<ToolSpec<'_>>, ApiError> {
    let funcs = match present(m, "functions") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(ApiError::invalid_type("functions", "an array", v)),
    };
    if funcs.is_empty() {
        return Err(ApiError::empty_array("functions"));
    }
    funcs
        .iter()
        .enumerate()
        .map(|(i, f)| match f.get("name") {
            Some(Value::String(name)) => Ok(ToolSpec {
                name,
                params: f.get("parameters").filter(|p| !p.is_null()),
                custom: false,
            }),
            _ => Err(ApiError::missing(&format!("functions[{i}].name"))),
        })
        .collect()
}

/// Parsed `tool_choice` / `function_call`.
enum Choice<'a> {
    Auto,
    NoTool,
    Required,
    Named(&'a str),
}

fn parse_choice<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    have_tools: bool,
    legacy: bool,
) -> Result<Choice<'a>, ApiError> {
    let Some(v) = present(m, key) else {
        return Ok(Choice::Auto);
    };
    if !have_tools {
        return Err(ApiError::bad(
            if legacy {
                "Invalid value for 'function_call': 'function_call' is only allowed when 'functions' are specified.".to_string()
            } else {
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".to_string()
            },
            Some(key),
            None,
        ));
    }
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Choice::Auto),
            "none" => Ok(Choice::NoTool),
            "required" if !legacy => Ok(Choice::Required),
            other => Err(ApiError::invalid_value(
                key,
                other,
                if legacy {
                    &["none", "auto"]
                } else {
                    &["none", "auto", "required"]
                },
            )),
        },
        Value::Object(o) => {
            if legacy {
                return match o.get("name") {
                    Some(Value::String(n)) => Ok(Choice::Named(n)),
                    _ => Err(ApiError::missing("function_call.name")),
                };
            }
            match o.get("type").and_then(Value::as_str) {
                Some("function") | Some("custom") => {
                    let ty = o.get("type").and_then(Value::as_str).unwrap_or("function");
                    match o
                        .get(ty)
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                    {
                        Some(n) => Ok(Choice::Named(n)),
                        None => Err(ApiError::missing(&format!("tool_choice.{ty}.name"))),
                    }
                }
                Some("allowed_tools") => Ok(Choice::Auto),
                Some(other) => Err(ApiError::invalid_value(
                    "tool_choice.type",
                    other,
                    &["function", "custom", "allowed_tools"],
                )),
                None => Err(ApiError::missing("tool_choice.type")),
            }
        }
        other => Err(ApiError::invalid_type(
            key,
            "one of a string or object",
            other,
        )),
    }
}

fn plan_tools<'a>(
    m: &'a Map<String, Value>,
    msgs: &[Value],
) -> Result<Option<ToolPlan<'a>>, ApiError> {
    let last_role = msgs
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tools = parse_tools(m)?;
    let tool_choice = parse_choice(m, "tool_choice", !tools.is_empty(), false)?;
    let funcs = parse_functions(m)?;
    let function_call = parse_choice(m, "function_call", !funcs.is_empty(), true)?;

    let pick = |specs: &[ToolSpec<'a>],
                choice: &Choice<'a>,
                what: &str|
     -> Result<Option<ToolSpec<'a>>, ApiError> {
        match choice {
            Choice::NoTool => Ok(None),
            Choice::Named(n) => match specs.iter().find(|t| t.name == *n) {
                Some(t) => Ok(Some(t.clone())),
                None => Err(ApiError::bad(
                    format!(
                        "Invalid value for '{what}': function '{n}' not found in '{}'.",
                        if what == "tool_choice" {
                            "tools"
                        } else {
                            "functions"
                        }
                    ),
                    Some(what),
                    None,
                )),
            },
            Choice::Required => Ok(specs.first().cloned()),
            Choice::Auto => Ok(if last_role == "user" {
                specs.first().cloned()
            } else {
                None
            }),
        }
    };
    if !tools.is_empty() {
        return Ok(pick(&tools, &tool_choice, "tool_choice")?.map(ToolPlan::Tool));
    }
    if !funcs.is_empty() {
        return Ok(pick(&funcs, &function_call, "function_call")?.map(ToolPlan::Function));
    }
    Ok(None)
}

fn tool_arguments(spec: &ToolSpec<'_>) -> String {
    if spec.custom {
        return "mock".to_string();
    }
    match spec.params {
        Some(p) => crate::schema::generate(p, true).to_string(),
        None => "{}".to_string(),
    }
}

// ---------------------------------------------------------------------------
// response_format

enum Format<'a> {
    Text,
    JsonObject,
    JsonSchema(&'a Value),
}

fn parse_format(m: &Map<String, Value>) -> Result<Format<'_>, ApiError> {
    let Some(rf) = opt_object(m, "response_format")? else {
        return Ok(Format::Text);
    };
    match rf.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "text" => Ok(Format::Text),
            "json_object" => Ok(Format::JsonObject),
            "json_schema" => {
                let Some(js) = rf.get("json_schema").and_then(Value::as_object) else {
                    return Err(ApiError::missing("response_format.json_schema"));
                };
                if !matches!(js.get("name"), Some(Value::String(_))) {
                    return Err(ApiError::missing("response_format.json_schema.name"));
                }
                static EMPTY: Value = Value::Null;
                Ok(Format::JsonSchema(js.get("schema").unwrap_or(&EMPTY)))
            }
            other => Err(ApiError::invalid_value(
                "response_format.type",
                other,
                &["json_object", "json_schema", "text"],
            )),
        },
        None | Some(Value::Null) => Err(ApiError::missing("response_format.type")),
        Some(v) => Err(ApiError::invalid_type(
            "response_format.type",
            "a string",
            v,
        )),
    }
}

// ---------------------------------------------------------------------------
// Output types

/// `usage` of a chat or text completion.
#[derive(Serialize, Clone, Debug)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `Some(None)` serialises as `null` (vLLM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Option<PromptDetails>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Serialize, Clone, Copy, Debug)]
pub struct PromptDetails {
    pub cached_tokens: u64,
    pub audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy, Debug)]
pub struct CompletionDetails {
    pub reasoning_tokens: u64,
    pub audio_tokens: u64,
    pub accepted_prediction_tokens: u64,
    pub rejected_prediction_tokens: u64,
}

const PROMPT_DETAILS: Option<PromptDetails> = Some(PromptDetails {
    cached_tokens: 0,
    audio_tokens: 0,
});

const COMPLETION_DETAILS: CompletionDetails = CompletionDetails {
    reasoning_tokens: 0,
    audio_tokens: 0,
    accepted_prediction_tokens: 0,
    rejected_prediction_tokens: 0,
};

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut<'a>>,
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_filter_results: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_logprobs: Option<Value>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: usize,
    message: MessageOut<'a>,
    logprobs: Value,
    finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<Value>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FnJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Value>,
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<FnJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom: Option<CustomJson<'a>>,
}

#[derive(Serialize)]
struct FnJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct CustomJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    input: &'a str,
}

impl<'a> ToolCallJson<'a> {
    /// A tool call (or a streamed fragment of one: `id`/`name` only in the
    /// first fragment, `index` only when streaming).
    fn new(
        index: Option<u32>,
        id: Option<&'a str>,
        name: Option<&'a str>,
        args: &'a str,
        custom: bool,
    ) -> Self {
        let kind = id.map(|_| if custom { "custom" } else { "function" });
        if custom {
            ToolCallJson {
                index,
                id,
                kind,
                function: None,
                custom: Some(CustomJson { name, input: args }),
            }
        } else {
            ToolCallJson {
                index,
                id,
                kind,
                function: Some(FnJson {
                    name,
                    arguments: args,
                }),
                custom: None,
            }
        }
    }
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` serialises as `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FnJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallJson<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Value>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Value,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<Value>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// `data: {json}\n\n`
fn sse(v: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    // Serialising plain structs/values to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, v);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

const DONE: &[u8] = b"data: [DONE]\n\n";

fn sse_response(events: VecDeque<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::events(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A generated assistant turn for one choice.
struct Generated {
    content: Option<String>,
    call: Option<(String, String, String, bool)>, // (id, name, arguments, custom)
    legacy_function: bool,
    finish: &'static str,
}

impl Generated {
    fn completion_tokens(&self) -> u64 {
        let mut t = 0;
        if let Some(c) = &self.content {
            t += u64::from(count_tokens(c));
        }
        if let Some((_, name, args, _)) = &self.call {
            t += u64::from(count_tokens(name)) + u64::from(count_tokens(args));
        }
        t
    }

    fn tool_calls_json(&self) -> Option<Vec<ToolCallJson<'_>>> {
        let (id, name, args, custom) = self.call.as_ref()?;
        if self.legacy_function {
            return None;
        }
        Some(vec![ToolCallJson::new(
            None,
            Some(id),
            Some(name),
            args,
            *custom,
        )])
    }

    fn function_call_json(&self) -> Option<FnJson<'_>> {
        let (_, name, args, _) = self.call.as_ref()?;
        self.legacy_function.then_some(FnJson {
            name: Some(name),
            arguments: args,
        })
    }
}

/// Applies `stop` then `max_tokens` to a reply; returns it and its finish reason.
fn finish_text(
    mut reply: String,
    stop: &[String],
    max_tokens: Option<u64>,
) -> (String, &'static str) {
    let mut finish = "stop";
    if let Some(pos) = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| reply.find(s.as_str()))
        .min()
    {
        reply.truncate(pos);
    }
    if let Some(max) = max_tokens {
        let (cut, was_cut) = text::cut_to_tokens(&reply, max);
        if was_cut {
            reply = cut;
            finish = "length";
        }
    }
    (reply, finish)
}

/// Deterministic id suffix from the request body.
fn body_seed(json: &Value) -> u64 {
    text::fnv1a(json.to_string().as_bytes())
}

// ---------------------------------------------------------------------------
// Chat completions

/// `POST /v1/chat/completions` (and the Azure / compatible equivalents).
pub fn chat(
    d: &Dialect<'_>,
    json: Option<&Value>,
    beh: &Behavior,
) -> Result<Response<Body>, ApiError> {
    let m = as_object(json)?;
    if d.strict() {
        let extra: &[&str] = if d.azure() { AZURE_CHAT_EXTRA } else { &[] };
        check_unknown(m, &[CHAT_PARAMS, extra])?;
    }
    let model = d.model(m)?;
    let msgs = validate_messages(m.get("messages"))?;
    sampling_params(m)?;
    let n = opt_int(m, "n", 1, Some(128))?.unwrap_or(1) as usize;
    let max_tokens = opt_int(m, "max_tokens", 1, None)?;
    let max_completion_tokens = opt_int(m, "max_completion_tokens", 1, None)?;
    let (stream, include_usage) = stream_params(m)?;
    let stop = stop_param(m)?;
    let logprobs = opt_bool(m, "logprobs")?.unwrap_or(false);
    if opt_int(m, "top_logprobs", 0, Some(20))?.is_some() && !logprobs {
        return Err(ApiError::bad(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is set.",
            Some("top_logprobs"),
            None,
        ));
    }
    opt_bool(m, "parallel_tool_calls")?;
    opt_bool(m, "store")?;
    opt_object(m, "metadata")?;
    opt_str(m, "reasoning_effort")?;
    opt_str(m, "service_tier")?;
    let format = parse_format(m)?;
    let plan = plan_tools(m, msgs)?;
    check_tool_sequence(msgs)?;

    if d.provider == Provider::OpenAi {
        match openai_model_kind(&model) {
            Some(ModelKind::Chat) => {}
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "This is not a chat model and thus not supported in the v1/chat/completions endpoint. Did you mean to use v1/completions?",
                    "invalid_request_error",
                    Some("model"),
                    None,
                ))
            }
            None => return Err(ApiError::model_not_found(&model)),
        }
        if is_reasoning_model(&model) {
            if max_tokens.is_some() {
                return Err(ApiError::bad(
                    "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                    Some("max_tokens"),
                    Some("unsupported_parameter"),
                ));
            }
            if let Some(t) = opt_number(m, "temperature", 0.0, 2.0)? {
                if t != 1.0 {
                    return Err(ApiError::bad(
                        format!("Unsupported value: 'temperature' does not support {} with this model. Only the default (1) value is supported.", fmt_num(t)),
                        Some("temperature"),
                        Some("unsupported_value"),
                    ));
                }
            }
        }
    }
    let limit = max_completion_tokens
        .or(max_tokens)
        .map(|x| x.max(0) as u64);

    // Build the reply of every choice.
    let seed = json.map(body_seed).unwrap_or(0);
    let last = msgs.last().and_then(Value::as_object);
    let last_role = last
        .and_then(|o| o.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let base_reply = if last_role == "tool" || last_role == "function" {
        let (t, _) = content_text(last.and_then(|o| o.get("content")).unwrap_or(&Value::Null));
        format!("Tool result received: {}", first_chars(&t, 200))
    } else {
        let (t, images) = msgs
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .map(content_text)
            .unwrap_or_default();
        format!(
            "Hello from the mock {} model {}. You said: {}{}",
            d.provider.name(),
            model,
            first_chars(&t, 200),
            image_suffix(images)
        )
    };
    let mut choices = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(plan) = &plan {
            let (spec, legacy) = match plan {
                ToolPlan::Tool(s) => (s, false),
                ToolPlan::Function(s) => (s, true),
            };
            let id = format!(
                "call_{}",
                text::base62_id(seed ^ (i as u64 + 1).wrapping_mul(0x51_7cc1_b727_220a), 24)
            );
            choices.push(Generated {
                content: None,
                call: Some((id, spec.name.to_string(), tool_arguments(spec), spec.custom)),
                legacy_function: legacy,
                finish: if legacy {
                    "function_call"
                } else {
                    "tool_calls"
                },
            });
            continue;
        }
        let reply = match beh.bytes {
            Some(b) => text::filler(b),
            None if n > 1 => format!("{base_reply} (choice {i})"),
            None => base_reply.clone(),
        };
        let reply = match &format {
            Format::Text => reply,
            Format::JsonObject => json!({ "reply": reply }).to_string(),
            Format::JsonSchema(schema) => crate::schema::generate(schema, false).to_string(),
        };
        let (content, finish) = finish_text(reply, &stop, limit);
        choices.push(Generated {
            content: Some(content),
            call: None,
            legacy_function: false,
            finish,
        });
    }

    let prompt_tokens = chat_prompt_tokens(msgs);
    let id = format!("chatcmpl-{}", text::base62_id(seed, 29));
    let fingerprint = d.fingerprint(&model);
    let created = now_unix();

    if stream && !beh.badjson {
        return Ok(chat_stream(
            d,
            &id,
            created,
            &model,
            fingerprint.as_deref(),
            choices,
            prompt_tokens,
            include_usage,
            beh.chunks,
        ));
    }

    let completion_tokens: u64 = choices.iter().map(Generated::completion_tokens).sum();
    let openai_like = d.openai_like();
    let out_choices = choices
        .iter()
        .enumerate()
        .map(|(i, g)| ChoiceOut {
            index: i,
            message: MessageOut {
                role: "assistant",
                content: g.content.as_deref(),
                refusal: openai_like.then_some(Value::Null),
                tool_calls: match (g.tool_calls_json(), d.provider) {
                    (Some(c), _) => Some(c),
                    (None, Provider::Vllm) => Some(Vec::new()),
                    (None, _) => None,
                },
                function_call: g.function_call_json(),
                annotations: openai_like.then(|| json!([])),
                reasoning_content: (d.provider == Provider::Vllm).then_some(Value::Null),
            },
            logprobs: if logprobs {
                logprobs_json(g.content.as_deref().unwrap_or(""))
            } else {
                Value::Null
            },
            finish_reason: g.finish,
            stop_reason: (d.provider == Provider::Vllm).then_some(Value::Null),
            content_filter_results: d.azure().then(crate::azure::choice_filter_results),
        })
        .collect();
    let body = ChatCompletion {
        id: &id,
        object: "chat.completion",
        created,
        model: &model,
        choices: out_choices,
        usage: d.usage(prompt_tokens, completion_tokens, true),
        service_tier: (d.provider == Provider::OpenAi).then_some("default"),
        system_fingerprint: fingerprint.as_deref(),
        prompt_filter_results: d.azure().then(|| crate::azure::prompt_filter_results(1)),
        prompt_logprobs: (d.provider == Provider::Vllm).then_some(Value::Null),
    };
    Ok(json_value_response(StatusCode::OK, &body))
}

/// Deterministic `logprobs` object: one entry per word piece.
fn logprobs_json(content: &str) -> Value {
    let entries: Vec<Value> = text::split_words(content)
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let lp = -((i % 7) as f64 + 1.0) * 0.0125;
            json!({"token": w, "logprob": lp, "bytes": w.as_bytes(), "top_logprobs": []})
        })
        .collect();
    json!({"content": entries, "refusal": null})
}

/// Splits tool-call arguments into stream fragments.
fn argument_fragments(args: &str, chunks: Option<usize>) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
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

#[allow(clippy::too_many_arguments)]
fn chat_stream(
    d: &Dialect<'_>,
    id: &str,
    created: u64,
    model: &str,
    fingerprint: Option<&str>,
    mut choices: Vec<Generated>,
    prompt_tokens: u64,
    include_usage: bool,
    chunks: Option<usize>,
) -> Response<Body> {
    let openai_like = d.openai_like();
    let azure = d.azure();
    let vllm = d.provider == Provider::Vllm;
    let usage_field = include_usage.then_some(None);
    let chunk = |choices| Chunk {
        id,
        object: "chat.completion.chunk",
        created,
        model,
        service_tier: (d.provider == Provider::OpenAi).then_some("default"),
        system_fingerprint: fingerprint,
        choices,
        usage: usage_field.clone(),
    };
    let choice = |index: usize, delta, finish: Option<&'static str>, cfr: bool| ChunkChoice {
        index,
        delta,
        logprobs: Value::Null,
        finish_reason: finish,
        stop_reason: vllm.then_some(Value::Null),
        content_filter_results: azure.then(|| {
            if cfr {
                crate::azure::choice_filter_results()
            } else {
                json!({})
            }
        }),
    };

    // Content pieces per choice.
    let mut pieces: Vec<Vec<String>> = Vec::with_capacity(choices.len());
    for g in choices.iter_mut() {
        if let Some((_, _, args, _)) = &g.call {
            pieces.push(argument_fragments(args, chunks));
        } else {
            let content = g.content.clone().unwrap_or_default();
            let p: Vec<String> = match chunks {
                Some(n) => text::split_into(&content, n),
                None => text::split_words(&content)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            };
            // `chunks` may pad the content: report what is actually sent.
            g.content = Some(p.concat());
            pieces.push(p);
        }
    }

    let mut events = VecDeque::with_capacity(pieces.iter().map(Vec::len).sum::<usize>() + 8);
    if azure {
        events.push_back(sse(&json!({
            "choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": crate::azure::prompt_filter_results(1),
        })));
    }
    // Role chunks.
    for (i, g) in choices.iter().enumerate() {
        let refusal = openai_like.then_some(Value::Null);
        let delta = if let Some((cid, name, _, custom)) = &g.call {
            let mut d = Delta {
                role: Some("assistant"),
                content: Some(None),
                refusal,
                ..Delta::default()
            };
            if g.legacy_function {
                d.function_call = Some(FnJson {
                    name: Some(name),
                    arguments: "",
                });
            } else {
                d.tool_calls = Some([ToolCallJson::new(
                    Some(0),
                    Some(cid),
                    Some(name),
                    "",
                    *custom,
                )]);
            }
            d
        } else {
            Delta {
                role: Some("assistant"),
                content: Some(Some("")),
                refusal,
                ..Delta::default()
            }
        };
        events.push_back(sse(&chunk(vec![choice(i, delta, None, false)])));
    }
    // Content chunks, interleaved by choice index.
    let steps = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..steps {
        for (i, g) in choices.iter().enumerate() {
            let Some(piece) = pieces[i].get(step) else {
                continue;
            };
            let delta = match &g.call {
                Some(_) if g.legacy_function => Delta {
                    function_call: Some(FnJson {
                        name: None,
                        arguments: piece,
                    }),
                    ..Delta::default()
                },
                Some((_, _, _, custom)) => Delta {
                    tool_calls: Some([ToolCallJson::new(Some(0), None, None, piece, *custom)]),
                    ..Delta::default()
                },
                None => Delta {
                    content: Some(Some(piece)),
                    ..Delta::default()
                },
            };
            events.push_back(sse(&chunk(vec![choice(i, delta, None, true)])));
        }
    }
    // Finish chunks.
    for (i, g) in choices.iter().enumerate() {
        events.push_back(sse(&chunk(vec![choice(
            i,
            Delta::default(),
            Some(g.finish),
            false,
        )])));
    }
    if include_usage {
        let completion: u64 = choices.iter().map(Generated::completion_tokens).sum();
        let mut c = chunk(Vec::new());
        c.usage = Some(Some(d.usage(prompt_tokens, completion, true)));
        events.push_back(sse(&c));
    }
    events.push_back(Bytes::from_static(DONE));
    sse_response(events)
}

// ---------------------------------------------------------------------------
// Legacy completions

enum Prompt {
    Text(String),
    Tokens(usize, String),
}

impl Prompt {
    fn tokens(&self) -> u64 {
        match self {
            Prompt::Text(t) => u64::from(count_tokens(t)),
            Prompt::Tokens(n, _) => *n as u64,
        }
    }
}

fn parse_prompt(v: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let invalid = |v: &Value| {
        ApiError::invalid_type(
            "prompt",
            "one of a string, array of strings, array of integers, or array of arrays of integers",
            v,
        )
    };
    let tokens_of = |a: &Vec<Value>| -> Option<Prompt> {
        a.iter()
            .all(|x| x.is_u64())
            .then(|| Prompt::Tokens(a.len(), Value::Array(a.clone()).to_string()))
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::missing("prompt")),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(a)) if a.is_empty() => Err(ApiError::empty_array("prompt")),
        Some(v @ Value::Array(a)) => {
            if a.iter().all(Value::is_string) {
                Ok(a.iter()
                    .map(|s| Prompt::Text(s.as_str().unwrap_or("").to_string()))
                    .collect())
            } else if let Some(p) = tokens_of(a) {
                Ok(vec![p])
            } else {
                a.iter()
                    .map(|x| match x {
                        Value::Array(inner) if !inner.is_empty() => {
                            tokens_of(inner).ok_or_else(|| invalid(v))
                        }
                        _ => Err(invalid(v)),
                    })
                    .collect()
            }
        }
        Some(v) => Err(invalid(v)),
    }
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_filter_results: Option<Value>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: usize,
    logprobs: Value,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<Value>,
}

/// `POST /v1/completions`.
pub fn completions(
    d: &Dialect<'_>,
    json: Option<&Value>,
    beh: &Behavior,
) -> Result<Response<Body>, ApiError> {
    let m = as_object(json)?;
    if d.strict() {
        check_unknown(m, &[COMPLETION_PARAMS])?;
    }
    let model = d.model(m)?;
    let prompts = parse_prompt(m.get("prompt"))?;
    sampling_params(m)?;
    let n = opt_int(m, "n", 1, Some(128))?.unwrap_or(1) as usize;
    let best_of = opt_int(m, "best_of", 1, Some(20))?;
    if let Some(b) = best_of {
        if (b as usize) < n {
            return Err(ApiError::bad(
                "best_of must be greater than or equal to n.",
                Some("best_of"),
                None,
            ));
        }
    }
    let max_tokens = opt_int(m, "max_tokens", 0, None)?.map(|x| x as u64);
    let echo = opt_bool(m, "echo")?.unwrap_or(false);
    opt_int(m, "logprobs", 0, Some(5))?;
    opt_str(m, "suffix")?;
    let (stream, include_usage) = stream_params(m)?;
    let stop = stop_param(m)?;

    if d.provider == Provider::OpenAi {
        match openai_model_kind(&model) {
            Some(ModelKind::Completion) => {}
            Some(ModelKind::Chat) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "This is a chat model and not supported in the v1/completions endpoint. Did you mean to use v1/chat/completions?",
                    "invalid_request_error",
                    Some("model"),
                    None,
                ))
            }
            Some(ModelKind::Embedding) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "This is not a completions model and thus not supported in the v1/completions endpoint.",
                    "invalid_request_error",
                    Some("model"),
                    None,
                ))
            }
            None => return Err(ApiError::model_not_found(&model)),
        }
    }

    let seed = json.map(body_seed).unwrap_or(0);
    let id = format!("cmpl-{}", text::base62_id(seed, 29));
    let created = now_unix();
    let mut texts: Vec<(String, &'static str)> = Vec::with_capacity(prompts.len() * n);
    for p in &prompts {
        let said = match p {
            Prompt::Text(t) => first_chars(t, 200).to_string(),
            Prompt::Tokens(_, t) => first_chars(t, 200).to_string(),
        };
        for i in 0..n {
            let reply = match beh.bytes {
                Some(b) => text::filler(b),
                None => {
                    let mut r = format!(
                        "Hello from the mock {} model {}. You said: {}",
                        d.provider.name(),
                        model,
                        said
                    );
                    if n > 1 {
                        r.push_str(&format!(" (choice {i})"));
                    }
                    r
                }
            };
            let (mut reply, finish) = finish_text(reply, &stop, max_tokens);
            if echo {
                if let Prompt::Text(t) = p {
                    reply = format!("{t}{reply}");
                }
            }
            texts.push((reply, finish));
        }
    }
    let prompt_tokens: u64 = prompts.iter().map(Prompt::tokens).sum();
    let fingerprint = d.fingerprint(&model);
    let cfr = || d.azure().then(crate::azure::choice_filter_results);

    if stream && !beh.badjson {
        let mut pieces: Vec<Vec<String>> = Vec::with_capacity(texts.len());
        for (t, _) in texts.iter_mut() {
            let p: Vec<String> = match beh.chunks {
                Some(n) => text::split_into(t, n),
                None => text::split_words(t)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            };
            *t = p.concat();
            pieces.push(p);
        }
        let usage_field = include_usage.then_some(None);
        let chunk = |choices| TextCompletion {
            id: &id,
            object: "text_completion",
            created,
            model: &model,
            choices,
            usage: usage_field.clone(),
            system_fingerprint: fingerprint.as_deref(),
            prompt_filter_results: None,
        };
        let choice = |index: usize, text, finish: Option<&'static str>| TextChoice {
            text,
            index,
            logprobs: Value::Null,
            finish_reason: finish,
            content_filter_results: cfr().map(|f| if finish.is_none() { f } else { json!({}) }),
        };
        let mut events = VecDeque::new();
        if d.azure() {
            events.push_back(sse(&json!({
                "choices": [], "created": 0, "id": "", "model": "", "object": "",
                "prompt_filter_results": crate::azure::prompt_filter_results(prompts.len()),
            })));
        }
        let steps = pieces.iter().map(Vec::len).max().unwrap_or(0);
        for step in 0..steps {
            for (i, p) in pieces.iter().enumerate() {
                if let Some(piece) = p.get(step) {
                    events.push_back(sse(&chunk(vec![choice(i, piece, None)])));
                }
            }
        }
        for (i, (_, finish)) in texts.iter().enumerate() {
            events.push_back(sse(&chunk(vec![choice(i, "", Some(finish))])));
        }
        if include_usage {
            let completion: u64 = texts.iter().map(|(t, _)| u64::from(count_tokens(t))).sum();
            let mut c = chunk(Vec::new());
            c.usage = Some(Some(d.usage(prompt_tokens, completion, false)));
            events.push_back(sse(&c));
        }
        events.push_back(Bytes::from_static(DONE));
        return Ok(sse_response(events));
    }

    let completion_tokens: u64 = texts.iter().map(|(t, _)| u64::from(count_tokens(t))).sum();
    let choices = texts
        .iter()
        .enumerate()
        .map(|(i, (t, finish))| TextChoice {
            text: t,
            index: i,
            logprobs: Value::Null,
            finish_reason: Some(finish),
            content_filter_results: cfr(),
        })
        .collect();
    let body = TextCompletion {
        id: &id,
        object: "text_completion",
        created,
        model: &model,
        choices,
        usage: Some(Some(d.usage(prompt_tokens, completion_tokens, false))),
        system_fingerprint: fingerprint.as_deref(),
        prompt_filter_results: d
            .azure()
            .then(|| crate::azure::prompt_filter_results(prompts.len())),
    };
    Ok(json_value_response(StatusCode::OK, &body))
}

// ---------------------------------------------------------------------------
// Embeddings

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

fn invalid_input() -> ApiError {
    ApiError::bad(
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        None,
        None,
    )
}

fn parse_input(v: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let tokens_of = |a: &Vec<Value>| -> Option<Prompt> {
        (!a.is_empty() && a.iter().all(|x| x.is_u64()))
            .then(|| Prompt::Tokens(a.len(), Value::Array(a.clone()).to_string()))
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::missing("input")),
        Some(Value::String(s)) if s.is_empty() => Err(invalid_input()),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(a)) if a.is_empty() || a.len() > 2048 => Err(invalid_input()),
        Some(Value::Array(a)) => {
            if a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) {
                Ok(a.iter()
                    .map(|s| Prompt::Text(s.as_str().unwrap_or("").to_string()))
                    .collect())
            } else if let Some(p) = tokens_of(a) {
                Ok(vec![p])
            } else {
                a.iter()
                    .map(|x| match x {
                        Value::Array(inner) => tokens_of(inner).ok_or_else(invalid_input),
                        _ => Err(invalid_input()),
                    })
                    .collect()
            }
        }
        Some(_) => Err(invalid_input()),
    }
}

/// `POST /v1/embeddings`.
pub fn embeddings(
    d: &Dialect<'_>,
    json: Option<&Value>,
    _beh: &Behavior,
) -> Result<Response<Body>, ApiError> {
    let m = as_object(json)?;
    if d.strict() {
        check_unknown(m, &[EMBEDDING_PARAMS])?;
    }
    let model = d.model(m)?;
    let inputs = parse_input(m.get("input"))?;
    opt_str(m, "user")?;
    let base64 = match present(m, "encoding_format") {
        None => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(Value::String(s)) => {
            return Err(ApiError::invalid_value(
                "encoding_format",
                s,
                &["float", "base64"],
            ))
        }
        Some(v) => return Err(ApiError::invalid_type("encoding_format", "a string", v)),
    };
    let (default_dims, supports_dims) = match d.provider {
        Provider::OpenAi => match openai_model_kind(&model) {
            Some(ModelKind::Embedding) => (
                openai_embedding_dims(&model).unwrap_or(1536),
                model.starts_with("text-embedding-3"),
            ),
            Some(_) => {
                return Err(ApiError::bad(
                    "You are not allowed to generate embeddings from this model",
                    None,
                    None,
                ))
            }
            None => return Err(ApiError::model_not_found(&model)),
        },
        Provider::Azure => (
            if model.contains("3-large") {
                3072
            } else {
                1536
            },
            model.contains("text-embedding-3"),
        ),
        _ => (COMPAT_EMBEDDING_DIMS, true),
    };
    let dims = match present(m, "dimensions") {
        None => default_dims,
        Some(_) if !supports_dims => {
            return Err(ApiError::bad(
                "This model does not support specifying dimensions.",
                None,
                None,
            ))
        }
        Some(_) => {
            let v = opt_int(m, "dimensions", 1, None)?.unwrap_or(1) as usize;
            if v > default_dims {
                return Err(ApiError::bad(
                    format!("Invalid value for 'dimensions' = {v}. Must be less than or equal to {default_dims}."),
                    Some("dimensions"),
                    Some("invalid_value"),
                ));
            }
            v
        }
    };
    let data = inputs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let seed_text = match p {
                Prompt::Text(t) => t.as_bytes(),
                Prompt::Tokens(_, t) => t.as_bytes(),
            };
            let v = text::embedding(seed_text, dims);
            let embedding = if base64 {
                let mut bytes = Vec::with_capacity(v.len() * 4);
                for x in &v {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(v)
            };
            EmbeddingItem {
                object: "embedding",
                index: i,
                embedding,
            }
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(Prompt::tokens).sum();
    let body = EmbeddingList {
        object: "list",
        data,
        model: &model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    Ok(json_value_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_openai() {
        assert_eq!(mask_key("sk-mock-wrong-key-enai"), "sk-moc************enai");
        assert_eq!(mask_key("short"), "sh***");
    }

    #[test]
    fn model_kinds() {
        assert_eq!(openai_model_kind("gpt-4o-mini"), Some(ModelKind::Chat));
        assert_eq!(openai_model_kind("gpt-3.5-turbo"), Some(ModelKind::Chat));
        assert_eq!(
            openai_model_kind("gpt-3.5-turbo-instruct"),
            Some(ModelKind::Completion)
        );
        assert_eq!(
            openai_model_kind("text-embedding-3-large"),
            Some(ModelKind::Embedding)
        );
        assert_eq!(
            openai_model_kind("ft:gpt-4o-mini:org::abc"),
            Some(ModelKind::Chat)
        );
        assert_eq!(openai_model_kind("llama3"), None);
    }

    #[test]
    fn quoted_lists() {
        assert_eq!(list_quoted(&["a", "b"]), "'a' and 'b'");
        assert_eq!(list_quoted(&["a", "b", "c"]), "'a', 'b', and 'c'");
    }
}
