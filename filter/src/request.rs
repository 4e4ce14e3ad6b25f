//! The client's request body: parsed once, top level only.
//!
//! The body is read as a JSON object whose values stay raw (`RawValue`
//! slices into the original bytes). Only the fields the gateway needs are
//! decoded; the model is replaced by a targeted splice at its byte span, so
//! a 100 KB prompt is never re-serialised.

use crate::error::{type_error, ApiError};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's Messages API (`POST {prefix}/messages`), see
    /// [`crate::frontdoor::anthropic_messages`].
    Messages,
    /// Anthropic's token counting (`POST {prefix}/messages/count_tokens`).
    CountTokens,
}

impl Endpoint {
    /// Path below the API prefix, e.g. `/chat/completions`.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
        }
    }

    /// The endpoint whose [`suffix`](Self::suffix) this is.
    pub fn from_suffix(s: &str) -> Option<Endpoint> {
        [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Messages,
            Endpoint::CountTokens,
        ]
        .into_iter()
        .find(|e| e.suffix() == s)
    }

    /// The client speaks Anthropic's API on this endpoint (its errors are in
    /// Anthropic's shape).
    pub fn is_anthropic(self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::CountTokens)
    }

    /// Top-level parameters the client's API knows for this endpoint: the
    /// OpenAI API's for the OpenAI endpoints (used by providers that reject
    /// unknown parameters the way OpenAI does), Anthropic's for `Messages`
    /// and `CountTokens` (including the beta ones an `anthropic-beta` header
    /// unlocks).
    pub fn known_params(self) -> &'static [&'static str] {
        match self {
            Endpoint::ChatCompletions => &[
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
            ],
            Endpoint::Completions => &[
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
            ],
            Endpoint::Embeddings => &["model", "input", "dimensions", "encoding_format", "user"],
            Endpoint::Messages => &[
                "model",
                "messages",
                "max_tokens",
                "cache_control",
                "container",
                "context_management",
                "inference_geo",
                "mcp_servers",
                "metadata",
                "output_config",
                "output_format",
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
            ],
            Endpoint::CountTokens => &[
                "model",
                "messages",
                "cache_control",
                "context_management",
                "mcp_servers",
                "output_config",
                "output_format",
                "system",
                "thinking",
                "tool_choice",
                "tools",
            ],
        }
    }
}

/// Top-level fields in document order, values raw.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    if v.iter().any(|(e, _)| *e == k) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate key '{}'",
                            crate::error::echo(&k)
                        )));
                    }
                    let val: &'de RawValue = m.next_value()?;
                    v.push((k, val));
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug)]
pub struct ClientRequest<'a> {
    pub endpoint: Endpoint,
    pub body: &'a [u8],
    pub fields: Vec<(String, &'a RawValue)>,
    /// The `model` string and the byte span of its JSON value in `body`.
    pub model: Option<(String, Range<usize>)>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
}

/// A missing field, worded as Anthropic words it (`max_tokens: Field required`).
fn anthropic_missing(param: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        "missing_required_parameter",
        format!("{param}: Field required"),
    )
}

fn as_json(raw: &RawValue) -> Option<serde_json::Value> {
    serde_json::from_str(raw.get()).ok()
}

impl<'a> ClientRequest<'a> {
    /// Parse and validate a client body for `endpoint`. Never panics on any input.
    pub fn parse(endpoint: Endpoint, body: &'a [u8]) -> Result<Self, ApiError> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(
                ApiError::invalid("The request body is empty: send a JSON object.")
                    .code("invalid_json"),
            );
        }
        let fields = match serde_json::from_slice::<Fields<'a>>(body) {
            Ok(f) => f.0,
            Err(e) => {
                return Err(ApiError::invalid(format!(
                    "We could not parse the JSON body of your request: {}. \
                     The body must be a JSON object (UTF-8).",
                    e
                ))
                .code("invalid_json"))
            }
        };
        let mut req = ClientRequest {
            endpoint,
            body,
            fields,
            model: None,
            stream: false,
            include_usage: false,
        };
        req.validate()?;
        Ok(req)
    }

    pub fn field(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    fn span_of(&self, raw: &RawValue) -> Option<Range<usize>> {
        let s = raw.get();
        let start = (s.as_ptr() as usize).checked_sub(self.body.as_ptr() as usize)?;
        let end = start.checked_add(s.len())?;
        (self.body.get(start..end)? == s.as_bytes()).then_some(start..end)
    }

    fn validate(&mut self) -> Result<(), ApiError> {
        if let Some(raw) = self.field("model") {
            let m: String = match serde_json::from_str(raw.get()) {
                Ok(serde_json::Value::String(s)) => s,
                Ok(serde_json::Value::Null) => String::new(),
                _ => return Err(type_error("model", "a string")),
            };
            if !m.is_empty() {
                let span = self
                    .span_of(raw)
                    .ok_or_else(|| ApiError::invalid("Could not locate 'model' in the body."))?;
                self.model = Some((m, span));
            }
        }
        if let Some(raw) = self.field("stream") {
            match raw.get() {
                "true" => self.stream = true,
                "false" | "null" => {}
                _ => return Err(type_error("stream", "a boolean")),
            }
        }
        if self.endpoint.is_anthropic() {
            return self.validate_anthropic();
        }
        if let Some(raw) = self.field("stream_options") {
            match as_json(raw) {
                Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Object(o)) => {
                    if !self.stream {
                        return Err(ApiError::invalid_param(
                            "stream_options",
                            "invalid_value",
                            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        ));
                    }
                    match o.get("include_usage") {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::Bool(b)) => self.include_usage = *b,
                        _ => return Err(type_error("stream_options.include_usage", "a boolean")),
                    }
                }
                _ => return Err(type_error("stream_options", "an object")),
            }
        }
        self.check_number("temperature", 0.0, 2.0)?;
        self.check_number("top_p", 0.0, 1.0)?;
        self.check_number("frequency_penalty", -2.0, 2.0)?;
        self.check_number("presence_penalty", -2.0, 2.0)?;
        self.check_int("n", 1, 128)?;
        self.check_int("max_tokens", 1, u32::MAX as u64)?;
        self.check_int("max_completion_tokens", 1, u32::MAX as u64)?;
        match self.endpoint {
            Endpoint::ChatCompletions => self.validate_messages(),
            Endpoint::Completions => self.validate_prompt(),
            Endpoint::Embeddings => self.validate_input(),
            Endpoint::Messages | Endpoint::CountTokens => self.validate_anthropic(),
        }
    }

    /// Anthropic's Messages (and count_tokens) body: the checks the gateway
    /// needs before it routes (the provider, or the translation, checks the
    /// rest). Ranges are Anthropic's: temperature and top_p 0–1, top_k ≥ 0,
    /// max_tokens ≥ 0 (0 only warms the prompt cache) and required on
    /// `Messages`, roles `user`/`assistant` only.
    fn validate_anthropic(&self) -> Result<(), ApiError> {
        self.check_number("temperature", 0.0, 1.0)?;
        self.check_number("top_p", 0.0, 1.0)?;
        self.check_int("top_k", 0, u32::MAX as u64)?;
        if self.endpoint == Endpoint::Messages {
            if self.field("max_tokens").is_none() {
                return Err(anthropic_missing("max_tokens"));
            }
            self.check_int("max_tokens", 0, u32::MAX as u64)?;
        }
        let raw = self
            .field("messages")
            .ok_or_else(|| anthropic_missing("messages"))?;
        let msgs: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| type_error("messages", "an array of message objects"))?;
        if msgs.is_empty() {
            return Err(ApiError::invalid_param(
                "messages",
                "empty_array",
                "messages: at least one message is required.",
            ));
        }
        #[derive(serde::Deserialize)]
        struct Msg<'a> {
            role: Option<serde_json::Value>,
            #[serde(borrow)]
            content: Option<&'a RawValue>,
        }
        for (i, m) in msgs.iter().enumerate() {
            let msg: Msg<'_> = serde_json::from_str(m.get())
                .map_err(|_| type_error(&format!("messages[{i}]"), "an object"))?;
            match msg.role {
                Some(serde_json::Value::String(r)) if r == "user" || r == "assistant" => {}
                Some(_) => {
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}].role"),
                        "invalid_value",
                        format!("messages.{i}.role: Input should be 'user' or 'assistant'."),
                    ))
                }
                None => return Err(anthropic_missing(&format!("messages.{i}.role"))),
            }
            match msg
                .content
                .map(|c| c.get().trim_start().as_bytes().first().copied())
            {
                Some(Some(b'"')) | Some(Some(b'[')) => {}
                Some(_) => {
                    return Err(type_error(
                        &format!("messages[{i}].content"),
                        "a string or an array of content blocks",
                    ))
                }
                None => return Err(anthropic_missing(&format!("messages.{i}.content"))),
            }
        }
        Ok(())
    }

    fn check_number(&self, name: &str, lo: f64, hi: f64) -> Result<(), ApiError> {
        let Some(raw) = self.field(name) else {
            return Ok(());
        };
        match as_json(raw) {
            Some(serde_json::Value::Null) => Ok(()),
            Some(serde_json::Value::Number(n)) => match n.as_f64() {
                Some(x) if x >= lo && x <= hi => Ok(()),
                _ => Err(ApiError::invalid_param(
                    name,
                    "invalid_value",
                    format!("Invalid '{name}': must be a number between {lo} and {hi}."),
                )),
            },
            _ => Err(type_error(name, "a number")),
        }
    }

    fn check_int(&self, name: &str, lo: u64, hi: u64) -> Result<(), ApiError> {
        let Some(raw) = self.field(name) else {
            return Ok(());
        };
        match as_json(raw) {
            Some(serde_json::Value::Null) => Ok(()),
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(x) if x >= lo && x <= hi => Ok(()),
                _ => Err(ApiError::invalid_param(
                    name,
                    "invalid_value",
                    format!("Invalid '{name}': must be an integer between {lo} and {hi}."),
                )),
            },
            _ => Err(type_error(name, "an integer")),
        }
    }

    fn validate_messages(&self) -> Result<(), ApiError> {
        let raw = self
            .field("messages")
            .ok_or_else(|| ApiError::missing_param("messages"))?;
        let msgs: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| type_error("messages", "an array of message objects"))?;
        if msgs.is_empty() {
            return Err(ApiError::invalid_param(
                "messages",
                "empty_array",
                "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            ));
        }
        #[derive(serde::Deserialize)]
        struct Msg {
            role: Option<serde_json::Value>,
        }
        for (i, m) in msgs.iter().enumerate() {
            let msg: Msg = serde_json::from_str(m.get())
                .map_err(|_| type_error(&format!("messages[{i}]"), "an object"))?;
            match msg.role {
                Some(serde_json::Value::String(r))
                    if matches!(
                        r.as_str(),
                        "system" | "developer" | "user" | "assistant" | "tool" | "function"
                    ) => {}
                Some(serde_json::Value::String(r)) => {
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}].role"),
                        "invalid_value",
                        format!(
                            "Invalid value: '{}'. Supported values are: 'system', 'developer', \
                             'user', 'assistant', 'tool', and 'function'.",
                            crate::error::echo(&r)
                        ),
                    ))
                }
                Some(_) => return Err(type_error(&format!("messages[{i}].role"), "a string")),
                None => return Err(ApiError::missing_param(&format!("messages[{i}].role"))),
            }
        }
        Ok(())
    }

    fn validate_prompt(&self) -> Result<(), ApiError> {
        let raw = self
            .field("prompt")
            .ok_or_else(|| ApiError::missing_param("prompt"))?;
        match as_json(raw) {
            Some(serde_json::Value::String(_)) | Some(serde_json::Value::Array(_)) => Ok(()),
            _ => Err(type_error("prompt", "a string or an array")),
        }
    }

    fn validate_input(&self) -> Result<(), ApiError> {
        let raw = self
            .field("input")
            .ok_or_else(|| ApiError::missing_param("input"))?;
        let empty = || {
            ApiError::invalid_param(
                "input",
                "invalid_value",
                "'input' cannot be an empty string or an empty array.",
            )
        };
        match as_json(raw) {
            Some(serde_json::Value::String(s)) if s.is_empty() => Err(empty()),
            Some(serde_json::Value::String(_)) => Ok(()),
            Some(serde_json::Value::Array(a)) if a.is_empty() => Err(empty()),
            Some(serde_json::Value::Array(a)) => {
                let ok = a.iter().all(|v| match v {
                    serde_json::Value::String(s) => !s.is_empty(),
                    serde_json::Value::Number(n) => n.is_u64(),
                    serde_json::Value::Array(t) => !t.is_empty() && t.iter().all(|x| x.is_u64()),
                    _ => false,
                });
                if ok {
                    Ok(())
                } else {
                    Err(type_error(
                        "input",
                        "a string, an array of strings, or an array of token arrays",
                    ))
                }
            }
            _ => Err(type_error(
                "input",
                "a string, an array of strings, or an array of token arrays",
            )),
        }
    }

    /// The first top-level parameter not in `known`, if any.
    pub fn unknown_param(&self, known: &[&str]) -> Option<&str> {
        self.fields
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !known.contains(k))
    }

    /// The body with `model` set to `upstream` (a targeted edit; the rest of
    /// the bytes are kept as they are) and, when `drop` is given, those
    /// top-level fields removed.
    pub fn rewrite(&self, upstream: &str, drop: &[&str]) -> Vec<u8> {
        let quoted = serde_json::to_string(upstream).unwrap_or_else(|_| "\"\"".to_string());
        let mut out = Vec::with_capacity(self.body.len() + quoted.len() + 16);
        if drop.is_empty() {
            if let Some((_, span)) = &self.model {
                out.extend_from_slice(&self.body[..span.start]);
                out.extend_from_slice(quoted.as_bytes());
                out.extend_from_slice(&self.body[span.end..]);
                return out;
            }
        }
        // Rebuild the top level from the raw values (values are still not
        // re-serialised), putting the model first.
        out.extend_from_slice(b"{\"model\":");
        out.extend_from_slice(quoted.as_bytes());
        for (k, v) in &self.fields {
            if k == "model" || drop.contains(&k.as_str()) {
                continue;
            }
            out.push(b',');
            let key = serde_json::to_string(k).unwrap_or_else(|_| "\"\"".to_string());
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ClientRequest<'_>, ApiError> {
        ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes())
    }

    #[test]
    fn parses_model_and_stream() {
        let r = chat(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(r.model.as_ref().unwrap().0, "gpt-4o");
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn model_splice_keeps_the_rest_byte_for_byte() {
        let body = r#"{ "messages" : [{"role":"user","content":"a \"model\": x"}], "model" : "gpt-4o" , "n":1}"#;
        let r = chat(body).unwrap();
        let out = String::from_utf8(r.rewrite("gpt-4o-2024-08-06", &[])).unwrap();
        assert_eq!(out, body.replace("\"gpt-4o\"", "\"gpt-4o-2024-08-06\""));
    }

    #[test]
    fn model_escaped_and_inserted() {
        let r =
            chat(r#"{"model":"gpt\u002d4o","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(r.model.as_ref().unwrap().0, "gpt-4o");
        let r = chat(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(r.model.is_none());
        let out: serde_json::Value = serde_json::from_slice(&r.rewrite("m\"x", &[])).unwrap();
        assert_eq!(out["model"], "m\"x");
        assert_eq!(out["messages"][0]["content"], "x");
    }

    #[test]
    fn drop_fields() {
        let r =
            chat(r#"{"model":"a","messages":[{"role":"user","content":"x"}],"top_k":3}"#).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&r.rewrite("b", &["top_k"])).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"model":"b","messages":[{"role":"user","content":"x"}]})
        );
    }

    #[test]
    fn errors_name_the_param() {
        let cases = [
            ("", "invalid_json", None),
            ("   ", "invalid_json", None),
            ("[1]", "invalid_json", None),
            ("{\"model\":", "invalid_json", None),
            ("{\"model\":\"a\",\"model\":\"b\",\"messages\":[]}", "invalid_json", None),
            ("{\"model\":1,\"messages\":[]}", "invalid_type", Some("model")),
            ("{\"model\":\"a\"}", "missing_required_parameter", Some("messages")),
            ("{\"model\":\"a\",\"messages\":[]}", "empty_array", Some("messages")),
            ("{\"model\":\"a\",\"messages\":\"hi\"}", "invalid_type", Some("messages")),
            ("{\"model\":\"a\",\"messages\":[{\"role\":\"bot\"}]}", "invalid_value", Some("messages[0].role")),
            ("{\"model\":\"a\",\"messages\":[{\"content\":\"x\"}]}", "missing_required_parameter", Some("messages[0].role")),
            ("{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":\"yes\"}", "invalid_type", Some("stream")),
            ("{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"temperature\":5}", "invalid_value", Some("temperature")),
            ("{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"n\":0}", "invalid_value", Some("n")),
            ("{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"max_tokens\":\"9\"}", "invalid_type", Some("max_tokens")),
            ("{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream_options\":{\"include_usage\":true}}", "invalid_value", Some("stream_options")),
        ];
        for (body, code, param) in cases {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.code.as_deref(), Some(code), "{body}");
            assert_eq!(e.param.as_deref(), param, "{body}");
        }
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_errors() {
        let e =
            ClientRequest::parse(Endpoint::ChatCompletions, b"{\"model\":\"\xff\"}").unwrap_err();
        assert_eq!(e.status, 400);
        let deep = format!(
            "{{\"model\":\"a\",\"messages\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let e = chat(&deep).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn embeddings_input() {
        fn p(b: &str) -> Result<ClientRequest<'_>, ApiError> {
            ClientRequest::parse(Endpoint::Embeddings, b.as_bytes())
        }
        assert!(p(r#"{"model":"e","input":"hi"}"#).is_ok());
        assert!(p(r#"{"model":"e","input":["a","b"]}"#).is_ok());
        assert!(p(r#"{"model":"e","input":[[1,2],[3]]}"#).is_ok());
        assert_eq!(
            p(r#"{"model":"e"}"#).unwrap_err().param.as_deref(),
            Some("input")
        );
        assert_eq!(
            p(r#"{"model":"e","input":""}"#)
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_value")
        );
        assert_eq!(
            p(r#"{"model":"e","input":[]}"#)
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_value")
        );
        assert_eq!(
            p(r#"{"model":"e","input":{"a":1}}"#)
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_type")
        );
    }

    #[test]
    fn completions_prompt() {
        fn p(b: &str) -> Result<ClientRequest<'_>, ApiError> {
            ClientRequest::parse(Endpoint::Completions, b.as_bytes())
        }
        assert!(p(r#"{"model":"c","prompt":"hi"}"#).is_ok());
        assert_eq!(
            p(r#"{"model":"c"}"#).unwrap_err().param.as_deref(),
            Some("prompt")
        );
    }

    #[test]
    fn unknown_params() {
        let r = chat(r#"{"model":"a","messages":[{"role":"user"}],"top_k":1}"#).unwrap();
        assert_eq!(
            r.unknown_param(Endpoint::ChatCompletions.known_params()),
            Some("top_k")
        );
    }
}
