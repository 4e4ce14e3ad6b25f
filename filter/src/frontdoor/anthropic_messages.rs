//! Anthropic's Messages API as a front door: `POST {prefix}/messages` and
//! `POST {prefix}/messages/count_tokens` (e.g. `/v1/messages`), for clients
//! such as the `anthropic` SDKs, with the same callers, keys (`x-api-key` or
//! `Authorization: Bearer`), model names, aliases and allow-lists as the
//! OpenAI routes. Only chat models are served.
//!
//! # How a request travels
//!
//! - **Anthropic provider: pass-through** ([`native`]). The body goes as the
//!   client wrote it, with only the model renamed (a splice at its byte
//!   span, like [`ClientRequest::rewrite`]); unknown or beta parameters are
//!   Anthropic's to judge. Path `{base_path}/messages` (or
//!   `/messages/count_tokens`); the caller's key headers are removed by the
//!   glue and the provider's credential comes from the provider config. The
//!   client's `anthropic-version` (default `2023-06-01` when it sent none)
//!   and `anthropic-beta` are set on the upstream request. The answer passes
//!   unchanged, streamed or whole; usage for quotas is read from the body or
//!   from the stream's `message_start` / `message_delta` events, and a stream
//!   that ends without `message_stop` (or an `error` event) gets an Anthropic
//!   `event: error` appended.
//! - **Any other provider (OpenAI-shaped): translation.** [`request`] turns
//!   the Messages body into a chat-completions body, which is parsed as a
//!   [`ClientRequest`] and given to the provider's own `build_request`, so
//!   the provider's rules (path, deployment, key, `unknown_params`) apply as
//!   on `/chat/completions`. The answer goes through the provider's own
//!   response translator (whose output is OpenAI-shaped), then through
//!   [`response`] (whole answers) or [`stream`] (event streams) into
//!   Anthropic's shape: [`Chain`] joins the two, so quotas still read the
//!   provider translator's usage.
//! - **`count_tokens` to a provider that is not Anthropic** is answered by
//!   the gateway: `{"input_tokens": N}` with `x-llm-token-count: estimate`
//!   (see [`count`]).
//!
//! # Choices
//!
//! - **Errors** are Anthropic's shape, `{"type":"error","error":{"type",
//!   "message"}}`, on every failure of these routes: the gateway's own
//!   (authentication, unknown model, bad body, size, content type, method),
//!   provider errors (the provider's mapping runs first, as on the OpenAI
//!   routes, and its result is converted) and Envoy's local replies.
//!   Statuses are the ones the OpenAI routes use (the `anthropic` SDK picks
//!   its exception class from the status): 400 → `invalid_request_error`
//!   (also 405, 415 and other 4xx, as Anthropic does), 401 →
//!   `authentication_error`, 403 → `permission_error`, 404 →
//!   `not_found_error`, 413 → `request_too_large` (Anthropic's documented
//!   type for 413), 429 → `rate_limit_error`, a provider overload
//!   (Anthropic's 529, reported as 503 like on the OpenAI routes; code
//!   `upstream_overloaded`) or a 529 → `overloaded_error`, other 5xx (the
//!   provider rejecting the gateway's key is a 502) → `api_error`. Inside a
//!   stream an error is `event: error` with the same body.
//! - **`max_tokens`** becomes `max_completion_tokens` for `openai` and
//!   `azure` (the current parameter; it also bounds reasoning tokens, as
//!   Anthropic's `max_tokens` bounds thinking) and `max_tokens` for
//!   OpenAI-compatible servers (Ollama, vLLM, older servers do not all know
//!   `max_completion_tokens`). `max_tokens: 0` (Anthropic's prompt-cache
//!   warm-up) is a 400 there.
//! - **Sampling.** `temperature`, `top_p` as given; `top_k` is dropped for
//!   `openai`/`azure` (they have none) and passed to compatible servers
//!   (vLLM, Ollama take it; the provider's `unknown_params` still applies);
//!   `stop_sequences` → `stop`; `metadata.user_id` → `user`;
//!   `service_tier` auto/standard_only → OpenAI's auto/default for `openai`,
//!   dropped for the others.
//! - **Thinking** → `reasoning_effort`: `thinking.type: enabled` with
//!   `budget_tokens` (≥ 1024, as Anthropic requires) 1024–4095 → `low`,
//!   4096–16383 → `medium`, ≥ 16384 → `high` (the inverse of the Anthropic
//!   provider's effort → budget table: low 2048, medium 8192, high 16384);
//!   `disabled` and `adaptive` send none (the provider's default).
//!   `output_config.effort` low/medium/high/xhigh map to the same name and
//!   `max` to `xhigh`; it wins over `thinking`. `output_config.format` (and
//!   the beta `output_format`) `json_schema` → `response_format`
//!   `json_schema` named `response` (not `strict`: OpenAI's strict mode has
//!   schema rules Anthropic's structured outputs do not share).
//! - **Streams** ask for `stream_options.include_usage`, so the last
//!   `message_delta` carries the real `output_tokens` (and `input_tokens`,
//!   unknown when `message_start` goes out, where they are 0).
//! - **Content.** `system` (string or text blocks) → one system message per
//!   block; text → text; image base64 → a `data:` URL, image url → its URL;
//!   a `text` document → text; a base64 PDF document → a `file` part for
//!   `openai` only (a 400 for the others, which cannot take it); `tool_use`
//!   → assistant `tool_calls` (input as the arguments string); each
//!   `tool_result` → its own `tool` message, in order, text joined by
//!   newlines, `is_error: true` written as an `Error: ` prefix; text between
//!   or after results becomes a user message at its place. Thinking blocks
//!   sent back on assistant turns are dropped (OpenAI-shaped APIs take no
//!   reasoning back); `cache_control` is ignored (OpenAI caches prefixes by
//!   itself). Other blocks (images in tool results, files by id, server
//!   tools' blocks, search results, …) are a 400 naming the block.
//! - **Tools** → functions (`input_schema` → `parameters`, byte for byte);
//!   server tools (a `type` other than `custom`) are a 400. `tool_choice`
//!   auto/any/tool/none → auto/required/named function/none;
//!   `disable_parallel_tool_use: true` → `parallel_tool_calls: false`.
//!   Without tools, neither is sent.
//! - **Parameters.** Unknown top-level fields are a 400 (`x: Extra inputs
//!   are not permitted`, as Anthropic says). `container`, `mcp_servers`,
//!   `context_management` and `inference_geo` cannot be honoured by an
//!   OpenAI-shaped provider: a 400, or dropped when the model has
//!   `drop_unsupported_params`. Top-level `cache_control` is ignored.
//! - **Answers.** `id` is `msg_` + the chat completion id without its
//!   `chatcmpl-` prefix; `model` is the one the provider reports. Content:
//!   a `thinking` block from `reasoning_content` (or `reasoning`; its
//!   `signature` is empty: there is none to give), a `text` block, then one
//!   `tool_use` block per tool call with the arguments parsed into `input`
//!   (`{}` when they are not a JSON object). `stop_reason`: stop →
//!   `end_turn` (`stop_sequence`, with the sequence, when the provider says
//!   which one matched, as vLLM's `stop_reason` does), length →
//!   `max_tokens`, tool_calls (or any tool call) → `tool_use`,
//!   content_filter or a `refusal` → `refusal`. Usage: `input_tokens` =
//!   prompt tokens − cached, `cache_read_input_tokens` = cached,
//!   `cache_creation_input_tokens` = 0, `output_tokens` = completion tokens.
//! - **Stream events.** `message_start`, then per block
//!   `content_block_start` / `content_block_delta` (`text_delta`,
//!   `thinking_delta`, `input_json_delta` with the argument fragments) /
//!   `content_block_stop` — one block per tool call index — then
//!   `message_delta` (stop reason, usage) and `message_stop` once `[DONE]`
//!   arrives. No `ping`s, no `signature_delta`. An OpenAI error event becomes
//!   `event: error`; a stream that ends without `[DONE]` gets one too.
//!
//! # Not done
//!
//! Citations, search results, server tools and files by id have no
//! OpenAI-shaped counterpart (a 400). The client's `anthropic-version` and
//! `anthropic-beta` headers are removed from every forwarded request and set
//! again only for an Anthropic provider (`gateway::STRIP_REQUEST_HEADERS`).

pub mod count;
pub mod native;
pub mod request;
pub mod response;
pub mod stream;

use super::ErrorShape;
use crate::config::Config;
use crate::error::ApiError;
use crate::gateway::{Exchange, Forward, Pending, Reply};
use crate::providers::openai_shaped::credential_headers;
use crate::providers::{ProviderKind, ResponseTranslator, UpstreamRequest};
use crate::request::{ClientRequest, Endpoint};
use crate::usage::Usage;
use serde::Serialize;

/// `anthropic-version` sent to an Anthropic provider when the client sent none.
pub const DEFAULT_VERSION: &str = crate::providers::anthropic::API_VERSION;

/// Client headers an Anthropic provider gets as the client sent them.
pub const CLIENT_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The Anthropic error `type` for a gateway error.
pub fn error_type(e: &ApiError) -> &'static str {
    if e.code.as_deref() == Some("upstream_overloaded") || e.status == 529 {
        return "overloaded_error";
    }
    match e.status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// `{"type":"error","error":{"type","message"}}` for `e`.
pub fn error_body(e: &ApiError) -> Vec<u8> {
    let env = ErrorEnvelope {
        kind: "error",
        error: ErrorInner {
            kind: error_type(e),
            message: &e.message,
        },
    };
    serde_json::to_vec(&env).unwrap_or_else(|_| {
        br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#.to_vec()
    })
}

/// `event: error` with the body of `e`.
pub fn error_event(e: &ApiError) -> Vec<u8> {
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(&error_body(e));
    out.extend_from_slice(b"\n\n");
    out
}

/// The error a stream ends with when the provider stopped too early.
pub fn incomplete_stream() -> ApiError {
    ApiError::server(
        502,
        "upstream_stream_incomplete",
        "The provider ended the stream before it was complete.",
    )
}

/// Whether the provider speaks the Messages API itself.
fn native_messages(kind: ProviderKind) -> bool {
    kind == ProviderKind::Anthropic
}

/// What an OpenAI-shaped provider takes; decided by its kind.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    kind: ProviderKind,
}

impl Target {
    pub fn new(kind: ProviderKind) -> Self {
        Target { kind }
    }

    fn openai_proper(self) -> bool {
        matches!(self.kind, ProviderKind::OpenAi | ProviderKind::Azure)
    }

    /// `max_completion_tokens` for OpenAI and Azure, `max_tokens` elsewhere.
    fn max_completion_tokens(self) -> bool {
        self.openai_proper()
    }

    /// `top_k` passed (compatible servers) or dropped (OpenAI, Azure).
    fn top_k(self) -> bool {
        !self.openai_proper()
    }

    /// PDF `file` parts.
    fn pdf(self) -> bool {
        self.kind == ProviderKind::OpenAi
    }

    /// OpenAI's `service_tier`.
    fn service_tier(self) -> bool {
        self.kind == ProviderKind::OpenAi
    }
}

/// Route a parsed Messages / count_tokens request to the model's provider.
/// `Err` is a local reply (an error in Anthropic's shape, or the
/// count_tokens estimate).
pub fn forward(
    cfg: &Config,
    pending: &Pending,
    req: &ClientRequest<'_>,
    model_idx: usize,
    model: &crate::config::Model,
) -> Result<Forward, Reply> {
    let shape = ErrorShape::Anthropic;
    let provider = cfg.provider(model);
    let common = provider.common();
    let exchange = |translator: Box<dyn ResponseTranslator>, stream: bool| {
        Exchange::new(
            model.provider,
            model_idx,
            pending.caller,
            stream,
            translator,
            shape,
        )
    };
    if native_messages(common.kind) {
        let mut headers = credential_headers(common);
        let client = |name: &str| {
            pending
                .client_headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        headers.push((
            "anthropic-version".to_string(),
            client("anthropic-version").unwrap_or_else(|| DEFAULT_VERSION.to_string()),
        ));
        if let Some(beta) = client("anthropic-beta") {
            headers.push(("anthropic-beta".to_string(), beta));
        }
        headers.push(("content-type".to_string(), "application/json".to_string()));
        let upstream = UpstreamRequest {
            path: format!("{}{}", common.base_path, pending.endpoint.suffix()),
            authority: common.host.clone(),
            headers,
            body: req.rewrite(&model.upstream, &[]),
        };
        let counting = pending.endpoint == Endpoint::CountTokens;
        return Ok(Forward {
            cluster: common.cluster.clone(),
            upstream,
            bearer_from_shared: cfg.bearer_key(model.provider),
            exchange: exchange(Box::new(native::Native::new(counting)), req.stream),
            reserve: None,
            routed: false,
        });
    }
    if pending.endpoint == Endpoint::CountTokens {
        let n = count::estimate(req).map_err(|e| shape.reply(e))?;
        let body = serde_json::to_vec(&serde_json::json!({ "input_tokens": n }))
            .unwrap_or_else(|_| b"{}".to_vec());
        return Err(Reply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-llm-token-count".into(), "estimate".into()),
                ("x-llm-provider".into(), common.name.clone()),
                ("x-llm-provider-kind".into(), common.kind.as_str().into()),
                ("x-llm-model".into(), model.upstream.clone()),
            ],
            body,
        });
    }
    let target = Target::new(common.kind);
    let chat = request::to_chat(req, model, target).map_err(|e| shape.reply(e))?;
    let chat_req =
        ClientRequest::parse(Endpoint::ChatCompletions, &chat.body).map_err(|e| shape.reply(e))?;
    let upstream = provider
        .build_request(&chat_req, model)
        .map_err(|e| shape.reply(e))?;
    let inner = provider.response_translator(&chat_req);
    let outer: Box<dyn ResponseTranslator> = if req.stream {
        Box::new(stream::StreamOut::new(chat.stop_sequences))
    } else {
        Box::new(response::WholeOut::new(chat.stop_sequences))
    };
    Ok(Forward {
        cluster: common.cluster.clone(),
        upstream,
        bearer_from_shared: cfg.bearer_key(model.provider),
        exchange: exchange(Box::new(Chain { inner, outer }), req.stream),
        reserve: None,
        routed: false,
    })
}

/// Two translators in a row: the provider's (its output is OpenAI-shaped)
/// and the OpenAI → Anthropic one. Usage is the provider translator's (what
/// the OpenAI routes count), else the outer one's.
pub struct Chain {
    pub inner: Box<dyn ResponseTranslator>,
    pub outer: Box<dyn ResponseTranslator>,
}

impl ResponseTranslator for Chain {
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mid = self.inner.stream_chunk(chunk, end_of_stream);
        let bytes = mid.as_deref().unwrap_or(chunk);
        Some(
            self.outer
                .stream_chunk(bytes, end_of_stream)
                .unwrap_or_else(|| bytes.to_vec()),
        )
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let mid = self.inner.full_body(body);
        let bytes = mid.as_deref().unwrap_or(body);
        match self.outer.full_body(bytes) {
            Some(out) => Some(out),
            None => mid,
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage().or_else(|| self.outer.usage())
    }

    fn status(&self) -> Option<u16> {
        self.inner.status().or_else(|| self.outer.status())
    }

    fn set_created(&mut self, unix_seconds: u64) {
        self.inner.set_created(unix_seconds);
        self.outer.set_created(unix_seconds);
    }

    fn response_headers(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        self.inner.response_headers(get);
    }

    /// The outer translator's format, else the inner one's (a Bedrock event
    /// stream becomes SSE in both cases).
    fn content_type(&self) -> Option<&'static str> {
        self.outer
            .content_type()
            .or_else(|| self.inner.content_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn shape_of(status: u16, code: Option<&str>) -> Value {
        let mut e = ApiError::new(status, "x", "m");
        e.code = code.map(str::to_string);
        serde_json::from_slice(&error_body(&e)).unwrap()
    }

    #[test]
    fn error_shapes() {
        for (status, code, kind) in [
            (400, None, "invalid_request_error"),
            (405, None, "invalid_request_error"),
            (415, None, "invalid_request_error"),
            (401, Some("invalid_api_key"), "authentication_error"),
            (403, None, "permission_error"),
            (404, Some("model_not_found"), "not_found_error"),
            (413, None, "request_too_large"),
            (429, None, "rate_limit_error"),
            (500, None, "api_error"),
            (502, Some("upstream_auth_failed"), "api_error"),
            (503, Some("upstream_overloaded"), "overloaded_error"),
            (503, Some("upstream_unavailable"), "api_error"),
            (529, None, "overloaded_error"),
            (504, None, "api_error"),
        ] {
            assert_eq!(
                shape_of(status, code),
                json!({"type":"error","error":{"type":kind,"message":"m"}}),
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn error_event_is_named() {
        let ev = error_event(&incomplete_stream());
        let s = String::from_utf8(ev).unwrap();
        assert!(
            s.starts_with("event: error\ndata: {\"type\":\"error\""),
            "{s}"
        );
        assert!(s.ends_with("}\n\n"));
        assert!(s.contains("\"api_error\""));
    }

    #[test]
    fn reply_keeps_retry_after() {
        let mut e = ApiError::new(429, "rate_limit_error", "slow");
        e.retry_after = Some(2);
        let r = ErrorShape::Anthropic.reply(e);
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after".into(), "2".into())));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }

    mod gateway_routes {
        use crate::auth::{self, RequestView};
        use crate::config::Config;
        use crate::gateway::{self, Head, Reply};
        use serde_json::Value;
        use std::collections::HashMap;

        struct View(HashMap<String, String>);
        impl RequestView for View {
            fn header(&self, n: &str) -> Option<String> {
                self.0.get(n).cloned()
            }
            fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
                None
            }
        }

        fn hex(d: [u8; 32]) -> String {
            d.iter().map(|b| format!("{b:02x}")).collect()
        }

        fn cfg() -> Config {
            let doc = format!(
                r#"{{"providers":[{{"name":"oai","kind":"openai","cluster":"openai"}},
                    {{"name":"claude","kind":"anthropic","cluster":"anthropic"}}],
                "models":[{{"name":"gpt","provider":"oai"}},{{"name":"c","provider":"claude","upstream_model":"claude-x"}}],
                "callers":[{{"id":"a","key_sha256":"{}"}}]}}"#,
                hex(auth::key_digest("k"))
            );
            Config::parse(doc.as_bytes(), &|_| None).unwrap()
        }

        fn view(pairs: &[(&str, &str)]) -> View {
            View(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }

        fn reply(h: Head) -> Reply {
            match h {
                Head::Reply(r) => r,
                other => panic!("expected a reply, got {other:?}"),
            }
        }

        fn anthropic_type(r: &Reply) -> String {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["type"], "error", "{v}");
            v["error"]["type"].as_str().unwrap().to_string()
        }

        #[test]
        fn head_errors_in_anthropic_shape() {
            let c = cfg();
            let key = view(&[("x-api-key", "k")]);
            let r = reply(gateway::on_request_head(
                &c,
                &key,
                "GET",
                "/v1/messages",
                true,
            ));
            assert_eq!(
                (r.status, anthropic_type(&r)),
                (405, "invalid_request_error".into())
            );
            assert!(r.headers.contains(&("allow".into(), "POST".into())));
            let r = reply(gateway::on_request_head(
                &c,
                &key,
                "POST",
                "/v1/messages/batches",
                false,
            ));
            assert_eq!(
                (r.status, anthropic_type(&r)),
                (404, "not_found_error".into())
            );
            let r = reply(gateway::on_request_head(
                &c,
                &view(&[]),
                "POST",
                "/v1/messages",
                false,
            ));
            assert_eq!(
                (r.status, anthropic_type(&r)),
                (401, "authentication_error".into())
            );
            let r = reply(gateway::on_request_head(
                &c,
                &view(&[("x-api-key", "k"), ("content-type", "text/plain")]),
                "POST",
                "/v1/messages/count_tokens",
                false,
            ));
            assert_eq!(
                (r.status, anthropic_type(&r)),
                (415, "invalid_request_error".into())
            );
            let r = reply(gateway::on_request_head(
                &c,
                &view(&[("x-api-key", "k"), ("content-length", "999999999")]),
                "POST",
                "/v1/messages",
                false,
            ));
            assert_eq!(
                (r.status, anthropic_type(&r)),
                (413, "request_too_large".into())
            );
            let r = reply(gateway::on_request_head(
                &c,
                &key,
                "POST",
                "/v1/messages",
                true,
            ));
            assert_eq!(
                (r.status, anthropic_type(&r)),
                (400, "invalid_request_error".into())
            );
            let r = gateway::too_large_for(&c, crate::request::Endpoint::Messages);
            assert_eq!(anthropic_type(&r), "request_too_large");
            // The OpenAI routes keep OpenAI's shape.
            let r = reply(gateway::on_request_head(
                &c,
                &view(&[]),
                "POST",
                "/v1/chat/completions",
                false,
            ));
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"]["code"], "invalid_api_key");
        }

        fn pending(c: &Config, headers: &[(&str, &str)], path: &str) -> gateway::Pending {
            match gateway::on_request_head(c, &view(headers), "POST", path, false) {
                Head::NeedBody(p) => p,
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn anthropic_headers_and_errors_of_the_exchange() {
            let c = cfg();
            let p = pending(
                &c,
                &[("x-api-key", "k"), ("anthropic-beta", "b1,b2")],
                "/v1/messages",
            );
            assert_eq!(
                p.client_headers,
                vec![("anthropic-beta".to_string(), "b1,b2".to_string())]
            );
            let Ok(mut f) = gateway::on_request_body(
                &c,
                &p,
                br#"{"model":"c","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#,
            ) else {
                panic!("forward expected")
            };
            let h = &f.upstream.headers;
            assert!(h.contains(&("anthropic-version".into(), "2023-06-01".into())));
            assert!(h.contains(&("anthropic-beta".into(), "b1,b2".into())));
            assert_eq!(f.upstream.path, "/v1/messages");
            // Envoy's own reply, in Anthropic's shape.
            let head = f.exchange.on_response_head(&c, 503, false);
            assert!(head.buffer);
            let body = f.exchange.on_full_body(&c, b"no healthy upstream").unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["type"], "api_error");
            // A provider 429 from OpenAI.
            let p = pending(&c, &[("authorization", "Bearer k")], "/v1/messages");
            let Ok(mut f) = gateway::on_request_body(
                &c,
                &p,
                br#"{"model":"gpt","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#,
            ) else {
                panic!("forward expected")
            };
            assert_eq!(f.exchange.on_response_head(&c, 429, true).status, None);
            let body = f
                .exchange
                .on_full_body(
                    &c,
                    br#"{"error":{"message":"slow","type":"tokens","code":"rate_limit_exceeded"}}"#,
                )
                .unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"slow"}})
            );
        }

        #[test]
        fn mangled_bodies_and_answers_never_panic() {
            let c = cfg();
            let body = br#"{"model":"gpt","max_tokens":9,"system":[{"type":"text","text":"s"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"},"thinking":{"type":"enabled","budget_tokens":2048},"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"x":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"r"}]}]}"#;
            for model in ["gpt", "c"] {
                let body =
                    String::from_utf8_lossy(body).replace("\"gpt\"", &format!("\"{model}\""));
                let body = body.as_bytes();
                for path in ["/v1/messages", "/v1/messages/count_tokens"] {
                    let p = pending(&c, &[("x-api-key", "k")], path);
                    for i in 0..body.len() {
                        let _ = gateway::on_request_body(&c, &p, &body[..i]);
                        let mut m = body.to_vec();
                        m[i] = b"{}[]\",:0a\\"[i % 10];
                        let _ = gateway::on_request_body(&c, &p, &m);
                    }
                    assert!(
                        gateway::on_request_body(&c, &p, body).is_ok()
                            || path.ends_with("count_tokens")
                    );
                }
            }
            let p = pending(&c, &[("x-api-key", "k")], "/v1/messages");
            let answer = br#"{"id":"chatcmpl-1","model":"g","choices":[{"index":0,"message":{"content":"x","reasoning_content":"r","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
            for i in 0..answer.len() {
                let Ok(mut f) = gateway::on_request_body(
                    &c,
                    &p,
                    br#"{"model":"gpt","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#,
                ) else {
                    panic!("forward expected")
                };
                f.exchange.on_response_head(&c, 200, true);
                let out = f.exchange.on_full_body(&c, &answer[..i]).unwrap();
                let v: Value = serde_json::from_slice(&out).unwrap();
                assert!(v["type"] == "error" || v["type"] == "message");
            }
        }

        #[test]
        fn chained_stream_at_every_split_with_usage() {
            let c = cfg();
            let p = pending(&c, &[("x-api-key", "k")], "/v1/messages");
            let body = br#"{"model":"gpt","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
            let stream: &[u8] = b"data: {\"id\":\"chatcmpl-z\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"chatcmpl-z\",\"model\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
            let run = |chunks: &[&[u8]]| {
                let Ok(mut f) = gateway::on_request_body(&c, &p, body) else {
                    panic!("forward expected")
                };
                assert!(!f.exchange.on_response_head(&c, 200, true).buffer);
                let mut out = Vec::new();
                for ch in chunks {
                    out.extend(
                        f.exchange
                            .on_stream_chunk(ch, false)
                            .unwrap_or_else(|| ch.to_vec()),
                    );
                }
                out.extend(f.exchange.on_stream_chunk(b"", true).unwrap_or_default());
                let total = f.exchange.usage().map(|u| u.total_tokens);
                (String::from_utf8(out).unwrap(), total)
            };
            let (whole, total) = run(&[stream]);
            assert_eq!(total, Some(4));
            assert!(
                whole.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
                "{whole}"
            );
            for i in 0..=stream.len() {
                let (a, b) = stream.split_at(i);
                assert_eq!(run(&[a, b]), (whole.clone(), Some(4)), "split at {i}");
            }
            // Cut: the provider translator's error event, in Anthropic's shape, once.
            let (cut, _) = run(&[&stream[..100]]);
            assert_eq!(cut.matches("event: error").count(), 1, "{cut}");
        }
    }

    #[test]
    fn targets() {
        let o = Target::new(ProviderKind::OpenAi);
        assert!(o.max_completion_tokens() && !o.top_k() && o.pdf() && o.service_tier());
        let a = Target::new(ProviderKind::Azure);
        assert!(a.max_completion_tokens() && !a.top_k() && !a.pdf() && !a.service_tier());
        let c = Target::new(ProviderKind::OpenAiCompatible);
        assert!(!c.max_completion_tokens() && c.top_k() && !c.pdf() && !c.service_tier());
    }
}
