//! OpenAI-shaped errors: every failure the gateway answers with, and the
//! mapping of provider error bodies into that shape.

use serde::Serialize;
use std::borrow::Cow;

/// An error as the OpenAI API reports it:
/// `{"error":{"message","type","param","code"}}` plus the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: Cow<'static, str>,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds for a `retry-after` header, when the client should retry later.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// Longest piece of client input echoed back in an error message.
const ECHO_MAX: usize = 256;

/// Cut client-supplied text before it is echoed in a message.
pub fn echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return s.to_string();
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind: kind.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }

    pub fn code(mut self, c: impl Into<String>) -> Self {
        self.code = Some(c.into());
        self
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    /// 400 naming the offending parameter.
    pub fn invalid_param(param: &str, code: &str, message: impl Into<String>) -> Self {
        Self::invalid(message).param(param).code(code)
    }

    pub fn missing_param(param: &str) -> Self {
        Self::invalid_param(
            param,
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
    }

    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        Self::new(401, "invalid_request_error", message).code("invalid_api_key")
    }

    /// 404 for a model that does not exist *or* that the caller may not use:
    /// the two are indistinguishable on purpose, as with OpenAI.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                echo(model)
            ),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn server(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::new(status, "server_error", message).code(code)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let env = Envelope {
            error: Body {
                message: &self.message,
                kind: &self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        serde_json::to_vec(&env).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#
                .to_vec()
        })
    }

    /// Extra response headers this error carries.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut h = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(s) = self.retry_after {
            h.push(("retry-after".to_string(), s.to_string()));
            h.push(("retry-after-ms".to_string(), (s * 1000).to_string()));
        }
        h
    }
}

/// 400 `invalid_type`: `param` is not the `expected` JSON type.
pub fn type_error(param: &str, expected: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        "invalid_type",
        format!("Invalid type for '{param}': expected {expected}."),
    )
}

/// 400 `invalid_value`.
pub fn invalid_value(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, "invalid_value", message)
}

/// 400 `unsupported_value`.
pub fn unsupported_value(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, "unsupported_value", message)
}

/// 400 `unsupported_parameter`: an OpenAI parameter `provider`'s models
/// (e.g. "Anthropic") have no equivalent for.
pub fn unsupported_param(param: &str, provider: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        "unsupported_parameter",
        format!(
            "Unsupported parameter: '{param}' is not supported with {provider} models. \
             Remove it, or set drop_unsupported_params on the model in the gateway's config."
        ),
    )
}

/// 502 `upstream_auth_failed`: the provider refused the gateway's own
/// credentials (`what`: the status or error type). The provider's message
/// is never passed on.
pub fn upstream_auth_failed(provider: &str, what: &str) -> ApiError {
    ApiError::server(
        502,
        "upstream_auth_failed",
        format!(
            "Provider `{provider}` rejected the gateway's credentials ({what}). \
             This is a gateway configuration problem, not a problem with your key."
        ),
    )
}

/// 502 `upstream_invalid_response`: the provider's answer could not be read.
pub fn invalid_answer(what: &str) -> ApiError {
    ApiError::server(
        502,
        "upstream_invalid_response",
        format!("The provider's answer could not be read: {what}."),
    )
}

/// Longest provider message passed on.
const MESSAGE_MAX: usize = 2048;

/// A provider's error message, cut to [`MESSAGE_MAX`] bytes (on a char
/// boundary, `…` marking the cut).
pub fn cut_message(s: &str) -> String {
    if s.len() <= MESSAGE_MAX {
        return s.to_string();
    }
    let mut end = MESSAGE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What the gateway tells a caller about a provider that answered with an
/// error. The provider's status is kept where it means the same thing to the
/// caller; where it is about the gateway's own credentials or setup it becomes
/// a 502, because the caller did nothing wrong, and the provider's message
/// (which may quote part of the gateway's key) is never passed on.
pub fn upstream_status(status: u16) -> u16 {
    match status {
        401 | 403 | 407 => 502,
        s if (400..600).contains(&s) => s,
        _ => 502,
    }
}

/// Turn a provider's error body into the OpenAI shape. `provider` names the
/// provider (from the config, never a key). Bodies already in the OpenAI
/// shape keep their message, type, param and code.
pub fn map_upstream_error(provider: &str, status: u16, body: &[u8]) -> ApiError {
    let out_status = upstream_status(status);
    if matches!(status, 401 | 403 | 407) {
        return ApiError::server(
            502,
            "upstream_auth_failed",
            format!(
                "Provider `{provider}` rejected the gateway's credentials (HTTP {status}). \
                 This is a gateway configuration problem, not a problem with your key."
            ),
        );
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let (message, kind, param, code) = match err {
        Some(serde_json::Value::Object(o)) => {
            let message = o
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string);
            let kind = o.get("type").and_then(|m| m.as_str()).map(str::to_string);
            let param = o.get("param").and_then(|m| m.as_str()).map(str::to_string);
            let code = match o.get("code") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            (message, kind, param, code)
        }
        // vLLM and others: {"error": "text"}; FastAPI: {"detail": ...};
        Some(serde_json::Value::String(s)) => (Some(s.clone()), None, None, None),
        _ => (
            parsed
                .as_ref()
                .and_then(|v| v.get("message").or_else(|| v.get("detail")))
                .and_then(|m| m.as_str())
                .map(str::to_string),
            None,
            None,
            None,
        ),
    };
    // OpenAI's own types are kept (its 429s say `requests` or `tokens`, which
    // tells a client which limit it hit); other servers' types (vLLM's
    // `BadRequestError`, Ollama's `api_error`) become the OpenAI type for the
    // status, so clients that match on `type` see OpenAI's vocabulary.
    let kind: &'static str = match kind.as_deref() {
        Some(k) => OPENAI_TYPES
            .iter()
            .find(|t| **t == k)
            .copied()
            .unwrap_or_else(|| default_kind(out_status)),
        None => default_kind(out_status),
    };
    let message = message.unwrap_or_else(|| {
        format!("Provider `{provider}` returned HTTP {status} without an error message.")
    });
    let mut e = ApiError::new(out_status, kind, echo_long(&message));
    e.param = param;
    e.code = code.or_else(|| Some(default_code(out_status).to_string()));
    e
}

fn echo_long(s: &str) -> String {
    if s.len() <= 2048 {
        s.to_string()
    } else {
        let mut end = 2048;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Error `type`s the OpenAI API uses.
const OPENAI_TYPES: [&str; 6] = [
    "invalid_request_error",
    "rate_limit_error",
    "requests",
    "tokens",
    "insufficient_quota",
    "server_error",
];

fn default_kind(status: u16) -> &'static str {
    match status {
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        404 => "not_found",
        408 | 504 => "upstream_timeout",
        413 => "request_too_large",
        429 => "rate_limit_exceeded",
        502 => "upstream_error",
        503 => "upstream_unavailable",
        _ if status >= 500 => "upstream_error",
        _ => "invalid_request",
    }
}

/// Envoy's own local replies (no healthy upstream, connect failure, timeout)
/// reach the filter as plain text; say what happened in the OpenAI shape.
pub fn map_envoy_local_reply(provider: &str, status: u16, body: &[u8]) -> ApiError {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let (code, what) = match status {
        503 if text.contains("no healthy upstream") => {
            ("upstream_unavailable", "no healthy upstream")
        }
        503 => ("upstream_unavailable", "the provider could not be reached"),
        504 => ("upstream_timeout", "the provider did not answer in time"),
        _ => ("upstream_error", "the provider connection failed"),
    };
    ApiError::server(
        status,
        code,
        format!("Provider `{provider}` is unavailable: {what}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_has_all_four_fields() {
        let e = ApiError::missing_param("messages");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let o = v["error"].as_object().unwrap();
        assert_eq!(o.len(), 4);
        assert_eq!(o["param"], "messages");
        assert_eq!(o["code"], "missing_required_parameter");
        assert_eq!(o["type"], "invalid_request_error");
    }

    #[test]
    fn null_param_and_code_are_present() {
        let e = ApiError::invalid("x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["error"]["param"].is_null());
        assert!(v["error"].as_object().unwrap().contains_key("code"));
    }

    #[test]
    fn provider_auth_errors_never_leak_the_message() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-moc****enai.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let e = map_upstream_error("openai", 401, body);
        assert_eq!(e.status, 502);
        assert!(!e.message.contains("sk-"));
        assert_eq!(e.code.as_deref(), Some("upstream_auth_failed"));
    }

    #[test]
    fn openai_shaped_errors_keep_their_fields() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let e = map_upstream_error("openai", 429, body);
        assert_eq!(e.status, 429);
        assert_eq!(e.kind, "requests");
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.message, "Rate limit reached");
    }

    #[test]
    fn azure_errors_get_a_type() {
        let body = br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#;
        let e = map_upstream_error("azure", 404, body);
        assert_eq!(e.status, 404);
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.code.as_deref(), Some("DeploymentNotFound"));
    }

    #[test]
    fn html_errors_become_json() {
        let e = map_upstream_error("openai", 502, b"<html><body>Bad gateway</body></html>");
        assert_eq!(e.status, 502);
        assert_eq!(e.kind, "server_error");
        assert!(e.message.contains("HTTP 502"));
    }

    #[test]
    fn foreign_types_become_openai_types() {
        let body = br#"{"error":{"message":"max_tokens must be at least 1","type":"BadRequestError","param":null,"code":400}}"#;
        let e = map_upstream_error("vllm", 400, body);
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.code.as_deref(), Some("400"));
        let e = map_upstream_error(
            "ollama",
            500,
            br#"{"error":{"message":"boom","type":"api_error"}}"#,
        );
        assert_eq!(e.kind, "server_error");
    }

    #[test]
    fn vllm_string_errors() {
        let e = map_upstream_error("vllm", 400, br#"{"error":"bad things"}"#);
        assert_eq!(e.message, "bad things");
        assert_eq!(e.status, 400);
    }

    #[test]
    fn echo_cuts_long_input_on_char_boundary() {
        let s = "é".repeat(1000);
        let out = echo(&s);
        assert!(out.len() < 300);
    }

    #[test]
    fn local_replies() {
        let e = map_envoy_local_reply("openai", 503, b"no healthy upstream");
        assert_eq!(e.code.as_deref(), Some("upstream_unavailable"));
        let e = map_envoy_local_reply("openai", 504, b"upstream request timeout");
        assert_eq!(e.code.as_deref(), Some("upstream_timeout"));
    }

    #[test]
    fn retry_after_header() {
        let mut e = ApiError::new(429, "rate_limit_error", "slow down");
        e.retry_after = Some(3);
        let h = e.headers();
        assert!(h.contains(&("retry-after".into(), "3".into())));
        assert!(h.contains(&("retry-after-ms".into(), "3000".into())));
    }
}
