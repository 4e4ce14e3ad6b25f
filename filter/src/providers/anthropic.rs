//! Anthropic (`api.anthropic.com`, Messages API): the OpenAI chat request is
//! translated into `POST {base_path}/messages`, and the answer (whole or
//! streamed) back into OpenAI's `chat.completion` / `chat.completion.chunk`.
//!
//! - [`request`]: OpenAI chat body → Messages body (system, turns, tools,
//!   thinking, JSON mode, parameter checks).
//! - [`response`]: a whole Messages answer → `chat.completion`, and the parts
//!   the stream shares (finish reason, usage, error mapping).
//! - [`stream`]: Messages SSE events → `chat.completion.chunk` SSE, fed any
//!   split of the bytes.
//!
//! Choices (each also explained where it is made):
//! - **First turn.** It may be `assistant`: the current Messages API accepts
//!   that (its reference dropped "the first message must always use the user
//!   role"; consecutive same-role turns are combined), so turns go as the
//!   client wrote them, consecutive same-role messages merged into one turn
//!   and `tool` results into the user turn, tool results first in it.
//!   System/developer messages, wherever they are, become the top-level
//!   `system` text blocks in their order. A conversation with no user or
//!   assistant content is a 400 from the gateway.
//! - **`max_tokens`** (required by Anthropic): the client's
//!   `max_completion_tokens`/`max_tokens`, else the model's
//!   `max_output_tokens` from the config, else
//!   [`request::DEFAULT_MAX_TOKENS`] (4096).
//! - **Thinking.** `reasoning_effort` minimal/low/medium/high/xhigh →
//!   `budget_tokens` 1024/2048/8192/16384/32768 ([`request::effort_budget`]),
//!   `none` → off; an explicit Anthropic-style `thinking` object wins
//!   (`enabled` with `budget_tokens` ≥ 1024, `disabled`, `adaptive`). The
//!   budget must be below `max_tokens` (both count thinking, like OpenAI's
//!   `max_completion_tokens`): when it is not, `max_tokens` becomes
//!   budget + the requested value, capped at the model's `max_output_tokens`
//!   (a 400 if the budget still does not fit). With thinking on, Anthropic
//!   allows temperature 1 only, top_p ≥ 0.95, no top_k and no forced tool:
//!   other values are a 400 `unsupported_value`, or dropped when the model
//!   has `drop_unsupported_params`; a forcing `tool_choice` is always a 400.
//!   Answers carry `reasoning_content` and `thinking_blocks` (with
//!   signatures, and redacted blocks), which assistant messages may send back.
//! - **JSON mode.** `response_format` json_object/json_schema adds a tool
//!   (named after the schema when that name is free, else `json_response`)
//!   whose `input_schema` is the schema; it is forced (`tool_choice: tool`),
//!   or with the client's own tools `any` (call one of them or answer
//!   through it). Its input becomes `message.content` (a JSON string) with
//!   `finish_reason: stop`, whole or streamed. With thinking, which forbids
//!   forcing a tool, it is offered with `auto` (best effort).
//! - **Parameters.** Unknown ones follow the provider's `unknown_params`
//!   (default reject, 400 `unknown_parameter`; `pass` copies them into the
//!   Anthropic body). OpenAI ones Anthropic cannot honour — `n` > 1,
//!   `logprobs`, `top_logprobs`, `logit_bias`, presence/frequency penalties,
//!   `seed`, `audio`, non-text `modalities`, `prediction`,
//!   `web_search_options`, `functions`/`function_call`, `verbosity`,
//!   `store: true` — are a 400 `unsupported_parameter` unless the model has
//!   `drop_unsupported_params`; their neutral values (`n: 1`, penalties 0,
//!   `logprobs: false`…) pass. `metadata` (tags for OpenAI's stored
//!   completions) and `prompt_cache_key` (OpenAI's cache routing hint) are
//!   accepted and ignored; Anthropic's caching is driven by `cache_control`
//!   on content parts, messages and tools, which is passed on.
//!   `user`/`safety_identifier` → `metadata.user_id`; `service_tier`
//!   auto/default → auto/standard_only; `top_k` is taken as an extension.
//! - **Content parts.** Text; `image_url` as a base64 data URL (jpeg, png,
//!   gif, webp) or an http(s) URL; `file` with a base64 PDF → `document`;
//!   other parts (`input_audio`, file ids) are a 400 naming the part.
//! - **Errors.** Anthropic's 529 `overloaded_error` reaches the client as
//!   503 (what OpenAI answers when overloaded; the SDKs retry both);
//!   authentication/permission errors become 502 `upstream_auth_failed`
//!   without the provider's message; the others keep their status, with
//!   OpenAI's `type` and a code (`invalid_request`, `not_found`,
//!   `rate_limit_exceeded`, `upstream_error`, `upstream_overloaded`, …).
//! - **Answers.** `id` is `chatcmpl-` + Anthropic's message id, `model` the
//!   model Anthropic reports. `created` is 0 unless the host calls
//!   [`ResponseTranslator::set_created`] (the Messages API gives no
//!   timestamp, and the pure core has no clock). Usage: `prompt_tokens` =
//!   input + cache reads + cache writes, `prompt_tokens_details.cached_tokens`
//!   = cache reads, `prompt_tokens_details.cache_creation_tokens` = cache
//!   writes (an extension). `stop_reason` end_turn/stop_sequence/pause_turn →
//!   stop, max_tokens/model_context_window_exceeded → length, tool_use →
//!   tool_calls, refusal → content_filter.
//! - **Not mapped.** Citations, server tools (web search, code execution)
//!   and their blocks are skipped in answers; the per-TTL cache-write split
//!   (`cache_creation.ephemeral_1h_input_tokens`) is folded into
//!   `cache_creation_tokens`; Anthropic's own `request-id` is a response
//!   header the client already gets.

/// Also read by Bedrock's translator: the OpenAI input shapes, the JSON-mode
/// tool and the `reasoning_effort` budgets are the same for Claude there.
pub(crate) mod request;
mod response;
mod stream;
/// Shared with the Messages front door ([`crate::frontdoor::anthropic_messages`]).
pub(crate) mod types;

use super::openai_shaped;
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, UnknownParams, UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: Some("api.anthropic.com"),
    base_path: "/v1",
    auth_header: "x-api-key",
    auth_prefix: "",
    unknown_params: UnknownParams::Reject,
};

/// The `anthropic-version` header every request carries.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic {
    common: ProviderCommon,
}

pub fn build(
    common: ProviderCommon,
    options: Option<&serde_json::Value>,
    path: &str,
) -> Result<Box<dyn Provider>, ConfigError> {
    openai_shaped::no_options(options, path)?;
    Ok(Box::new(Anthropic { common }))
}

impl Provider for Anthropic {
    fn common(&self) -> &ProviderCommon {
        &self.common
    }

    /// The Messages API is chat only: no legacy completions, no embeddings.
    fn supports(&self, kind: ModelKind) -> bool {
        kind == ModelKind::Chat
    }

    fn build_request(
        &self,
        req: &ClientRequest<'_>,
        model: &Model,
    ) -> Result<UpstreamRequest, ApiError> {
        let body = request::translate(req, model, self.common.unknown_params)?;
        let mut headers = vec![
            ("anthropic-version".to_string(), API_VERSION.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        headers.extend(openai_shaped::credential_headers(&self.common));
        Ok(UpstreamRequest {
            path: format!("{}/messages", self.common.base_path),
            authority: self.common.host.clone(),
            headers,
            body,
        })
    }

    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator> {
        let json_tool = request::json_tool_name(req);
        if req.stream {
            Box::new(stream::StreamTranslator::new(
                &self.common.name,
                req.include_usage,
                json_tool,
            ))
        } else {
            Box::new(response::WholeTranslator::new(&self.common.name, json_tool))
        }
    }

    fn response_status(&self, status: u16) -> u16 {
        response::client_status(status)
    }

    fn map_error(&self, status: u16, body: &[u8]) -> ApiError {
        response::map_error(&self.common.name, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::request::Endpoint;

    fn cfg() -> Config {
        let doc = r#"{"providers":[{"name":"claude","kind":"anthropic","cluster":"anthropic"},
              {"name":"claude-env","kind":"anthropic","cluster":"anthropic","auth":{"from":"env","env":"K"}}],
            "models":[{"name":"c","provider":"claude","upstream_model":"claude-x"},
                      {"name":"d","provider":"claude-env","max_output_tokens":1000}]}"#;
        Config::parse(doc.as_bytes(), &|n| {
            (n == "K").then(|| "sk-ant".to_string())
        })
        .unwrap()
    }

    #[test]
    fn defaults_and_headers() {
        let c = cfg();
        let p = c.provider(&c.models[0]);
        assert_eq!(p.common().host, "api.anthropic.com");
        assert!(p.supports(ModelKind::Chat));
        assert!(!p.supports(ModelKind::Completion));
        assert!(!p.supports(ModelKind::Embedding));
        let body = br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#;
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        let up = p.build_request(&req, &c.models[0]).unwrap();
        assert_eq!(up.path, "/v1/messages");
        assert!(up
            .headers
            .contains(&("anthropic-version".into(), "2023-06-01".into())));
        assert!(!up.headers.iter().any(|(k, _)| k == "x-api-key"));
        let p = c.provider(&c.models[1]);
        let up = p.build_request(&req, &c.models[1]).unwrap();
        assert!(up.headers.contains(&("x-api-key".into(), "sk-ant".into())));
        let v: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["max_tokens"], 1000);
    }

    #[test]
    fn overloaded_becomes_503_and_others_keep_their_status() {
        let c = cfg();
        let p = c.provider(&c.models[0]);
        assert_eq!(p.response_status(529), 503);
        assert_eq!(p.response_status(429), 429);
        assert_eq!(p.response_status(401), 502);
        assert_eq!(p.response_status(500), 500);
        let e = p.map_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status, 503);
        assert_eq!(e.code.as_deref(), Some("upstream_overloaded"));
    }

    #[test]
    fn other_providers_keep_529() {
        let doc = r#"{"providers":[{"name":"o","kind":"openai","cluster":"openai"}],
            "models":[{"name":"g","provider":"o"}]}"#;
        let c = Config::parse(doc.as_bytes(), &|_| None).unwrap();
        assert_eq!(c.provider(&c.models[0]).response_status(529), 529);
    }

    #[test]
    fn gateway_uses_the_provider_status() {
        use crate::auth::Via;
        use crate::gateway::{on_request_body, Pending};
        let doc = r#"{"providers":[{"name":"claude","kind":"anthropic","cluster":"anthropic"}],
            "models":[{"name":"c","provider":"claude"}],
            "callers":[{"id":"a","principals":["spiffe://x"]}]}"#;
        let c = Config::parse(doc.as_bytes(), &|_| None).unwrap();
        let pending = Pending {
            caller: 0,
            via: Via::Key,
            endpoint: Endpoint::ChatCompletions,
            client_headers: Vec::new(),
        };
        let Ok(mut f) = on_request_body(
            &c,
            &pending,
            br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#,
        ) else {
            panic!("forward expected");
        };
        let head = f.exchange.on_response_head(&c, 529, true);
        assert_eq!(head.status, Some(503));
        let body = f
            .exchange
            .on_full_body(
                &c,
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "upstream_overloaded");
    }
}
