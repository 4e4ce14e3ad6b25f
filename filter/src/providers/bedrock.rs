//! Amazon Bedrock (`bedrock-runtime.{region}.amazonaws.com`): chat
//! completions are translated to the Converse API (`POST
//! /model/{modelId}/converse`, or `/converse-stream` for streams) and the
//! answer, whole or a binary event stream, back into OpenAI's
//! `chat.completion` / `chat.completion.chunk`; embeddings go to
//! `InvokeModel` (`POST /model/{modelId}/invoke`) for Titan and Cohere
//! models.
//!
//! - [`request`]: OpenAI chat body → Converse body.
//! - [`response`]: a whole Converse answer → `chat.completion`; finish
//!   reasons, statuses, error mapping.
//! - [`stream`]: ConverseStream frames → `chat.completion.chunk` SSE.
//! - [`eventstream`]: the `application/vnd.amazon.eventstream` decoder
//!   (CRC-checked, any chunk split).
//! - [`sigv4`]: AWS Signature Version 4.
//! - [`embeddings`]: Titan / Cohere embeddings.
//!
//! # Configuration
//!
//! `kind: bedrock`, `options`:
//! `{"region": "us-east-1", "sigv4": {"access_key_env", "secret_key_env",
//! "session_token_env"}, "guardrail": {"identifier", "version", "trace"}}`.
//! `region` is required. `host` defaults to
//! `bedrock-runtime.{region}.amazonaws.com` (set it for a VPC endpoint or a
//! proxy; it is the signed `host`), `base_path` to none.
//!
//! **Credentials**, one of:
//! - **Bedrock API keys** (bearer tokens): `auth.from: injector` (Envoy's
//!   credential injector sets `Authorization: Bearer …` from a mounted
//!   secret, rotated without restart) or `auth.from: env` (the filter sets
//!   it from a VM environment variable). Defaults: header `authorization`,
//!   prefix `Bearer `.
//! - **SigV4, signed by the filter**: `options.sigv4` names the VM
//!   environment variables holding the access key id, the secret access key
//!   and, for temporary credentials, the session token; they are read once,
//!   at configure time (a missing or empty one is a config error naming the
//!   variable, never its value), like `auth.from: env`. Temporary
//!   credentials expire: SigV4 from the environment suits long-lived keys;
//!   with STS/IRSA credentials, restart (or reconfigure) before they expire,
//!   or use API keys through the injector. `auth.from: env` together with
//!   `sigv4` is a config error (two credentials); the provider's cluster
//!   must not inject one either. Each request is signed last, after it is
//!   translated ([`Provider::sign`], called by the gateway with the host
//!   clock's time): service `bedrock`, the configured region; signed
//!   headers `content-type`, `host`, `x-amz-content-sha256` (the SHA-256 of
//!   the final body), `x-amz-date` and, with a session token,
//!   `x-amz-security-token`. The route must not rewrite the host or the
//!   path after the filter (a signed request must arrive as signed).
//!
//! **Guardrails**: `options.guardrail` (`identifier`, `version`, optional
//! `trace`: `enabled`/`disabled`/`enabled_full`) is sent as Converse's
//! `guardrailConfig` on every chat request of the provider; an intervention
//! ends the answer with `finish_reason: content_filter`.
//!
//! # Choices
//!
//! - **Model ids in the path** are percent-encoded once on the wire (AWS's
//!   URI encoding: all but `A-Z a-z 0-9 - . _ ~`, so `:` → `%3A`, `/` →
//!   `%2F`: `/model/arn%3Aaws%3Abedrock%3A…%3Ainference-profile%2Fus.anthropic…/converse`)
//!   and twice in the SigV4 canonical request (`%3A` → `%253A`), which is
//!   what AWS specifies for every service but S3 and what botocore and the
//!   AWS CRT signer do (checked against botocore: see [`sigv4`]).
//! - **Conversation.** System/developer messages (anywhere) → top-level
//!   `system` text blocks in order; consecutive same-role messages are
//!   merged into one turn (Bedrock requires user/assistant alternation),
//!   `tool` messages into the user turn as `toolResult` blocks, results
//!   first. The conversation is otherwise sent as written: one that starts
//!   with an assistant turn is Bedrock's to refuse. A tool result is its
//!   text (`[{"text"}]`; an empty one `[]`), without `status` (OpenAI's
//!   tool messages carry none) and never guessed into a `json` block.
//!   Assistant `thinking_blocks` (as the answers give them) go back as
//!   `reasoningContent` with their signatures. A conversation with tool
//!   calls or results needs `tools` (Bedrock requires `toolConfig` then):
//!   without them it is a 400 from the gateway.
//! - **Content parts.** Text; `image_url` as a base64 data URL (png, jpeg,
//!   gif, webp) → `image.source.bytes`, or an `s3://` URL (format from its
//!   extension) → `image.source.s3Location`; an http(s) image URL is a 400
//!   (Bedrock takes bytes or S3 objects only, and the filter does not fetch
//!   URLs); `file` with a base64 PDF → `document` (named after `filename`,
//!   cleaned to the characters Bedrock allows); other parts are a 400.
//!   `cache_control` on a part, a message or a tool → a `cachePoint` after
//!   it (prompt caching; LiteLLM maps it the same way).
//! - **Parameters.** `max_completion_tokens`/`max_tokens` (default: the
//!   model's `max_output_tokens` if configured, else Bedrock's default for
//!   the model), `temperature` (0–1 on Bedrock: above 1 is a 400), `top_p`,
//!   `stop` → `inferenceConfig`; `top_k` (an extension) →
//!   `additionalModelRequestFields.top_k`; `service_tier`
//!   default/flex/priority → `serviceTier`, `auto` → none. Unknown
//!   parameters follow the provider's `unknown_params` (default reject; with
//!   `pass` they go to the model in `additionalModelRequestFields`). OpenAI
//!   parameters Converse cannot honour — `n` > 1, `logprobs`,
//!   `top_logprobs`, `logit_bias`, penalties, `seed`, `audio`, non-text
//!   `modalities`, `prediction`, `web_search_options`, `functions`,
//!   `verbosity`, `store: true`, `parallel_tool_calls: false` (Converse has
//!   no switch for it) — are a 400 `unsupported_parameter` unless the model
//!   has `drop_unsupported_params`; their neutral values pass. `user`,
//!   `safety_identifier`, `metadata`, `prompt_cache_key` are accepted and
//!   ignored.
//! - **Tools.** `tools` → `toolConfig.tools[].toolSpec {name, description,
//!   inputSchema.json}` (schemas copied byte for byte); `tool_choice` auto →
//!   `auto`, required → `any`, a named function → `tool`. Converse has no
//!   `none`: the tools are left out, unless the conversation already has
//!   tool calls, where Bedrock requires them; they are then sent without a
//!   choice and the model decides (best effort). Forcing a tool (`any`,
//!   `tool`) is supported by Claude, Mistral Large and Nova models only;
//!   other models answer Bedrock's 400.
//! - **JSON mode.** `response_format` json_object/json_schema adds a tool
//!   (named after the schema when that name is free, else `json_response`)
//!   forced with `tool`, or `any` next to the client's tools, exactly as the
//!   Anthropic provider does; its input becomes `message.content` with
//!   `finish_reason: stop`, whole or streamed. With thinking (no forced tool
//!   allowed) it is offered with `auto`. (Converse's newer
//!   `outputConfig.textFormat` is not used: few models take it.)
//! - **Reasoning.** For Claude model ids (`anthropic.` or `claude` in the
//!   id: foundation models, cross-region profiles, ARNs naming them),
//!   `reasoning_effort` minimal/low/medium/high/xhigh →
//!   `additionalModelRequestFields.thinking {"type": "enabled",
//!   "budget_tokens"}` with the Anthropic provider's budgets
//!   (1024/2048/8192/16384/32768; this is the field name Anthropic's
//!   Messages API and Bedrock's Claude docs use — the older
//!   `reasoning_config` spelling from the Claude 3.7 launch is not needed),
//!   `none` → off. `maxTokens` must exceed the budget: when it does not it
//!   becomes budget + the requested value (default 4096), capped at the
//!   model's `max_output_tokens`. An Anthropic-style `thinking` object is
//!   taken as is (any model id). For other models `reasoning_effort` is a
//!   400 `unsupported_value` (their reasoning switches differ per family:
//!   pass them with `unknown_params: pass`), or dropped with
//!   `drop_unsupported_params`. A forcing `tool_choice` with thinking is a
//!   400, as Claude refuses it. Answers carry `reasoning_content` and
//!   `thinking_blocks` (signatures, redacted blocks).
//! - **Answers.** Converse gives no id, timestamp or model: `id` is
//!   `chatcmpl-` + AWS's request id (`x-amzn-requestid`, read through
//!   [`ResponseTranslator::response_headers`]), `created` the host clock,
//!   `model` the name the client asked for (the upstream id is in the
//!   `x-llm-model` response header). Usage: `prompt_tokens` is the sum of
//!   `inputTokens`, cache reads and cache writes (Bedrock counts them
//!   apart), `cached_tokens` is `cacheReadInputTokens`,
//!   `cache_creation_tokens` is `cacheWriteInputTokens`. Stop reasons: see
//!   [`response::finish_reason`]. Streams are answered as
//!   `text/event-stream` ([`ResponseTranslator::content_type`]).
//! - **Errors.** Bedrock answers `{"message"}` with the exception's name in
//!   the `x-amzn-errortype` header; each exception family has its own
//!   status, so the status is enough (see [`response::client_status`]):
//!   ValidationException 400, AccessDenied / unrecognised or expired
//!   credentials 403 → 502 `upstream_auth_failed` (without Bedrock's
//!   message), ResourceNotFound 404, ModelTimeout 408 → 504, ModelError 424
//!   → 502, Throttling and ModelNotReady 429 (a model still loading is
//!   retried like a throttle), InternalServer 500, ServiceUnavailable 503.
//!   Exceptions inside a stream become an OpenAI error event.

mod embeddings;
mod eventstream;
mod request;
mod response;
mod sigv4;
mod stream;
mod types;

use super::openai_shaped;
use super::{
    Credential, KindDefaults, Provider, ProviderCommon, ResponseTranslator, Secret, UnknownParams,
    UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::{ClientRequest, Endpoint};
use serde_json::Value;

/// The default host: the region's is used instead when `options.region`
/// names another region and the config sets no `host`.
pub const DEFAULT_HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const DEFAULT_REGION: &str = "us-east-1";

/// SigV4's service name for Bedrock's runtime API.
pub const SERVICE: &str = "bedrock";

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: Some(DEFAULT_HOST),
    base_path: "",
    auth_header: "authorization",
    auth_prefix: "Bearer ",
    unknown_params: UnknownParams::Reject,
};

#[derive(Debug)]
pub struct Bedrock {
    common: ProviderCommon,
    region: String,
    /// Set when the filter signs requests (SigV4); `Debug` hides the keys.
    sigv4: Option<sigv4::Credentials>,
    /// Converse's `guardrailConfig`.
    guardrail: Option<Value>,
}

/// A variable read from the VM environment for SigV4.
fn env_secret(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    field: &str,
) -> Result<Secret, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(field, "must name an environment variable"));
    }
    let value = env(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!(
                    "environment variable {name} is not set in the Wasm VM \
                     (vm_config.environment_variables)"
                ),
            )
        })?;
    if value.chars().any(char::is_control) {
        return Err(ConfigError::new(
            field,
            format!("environment variable {name} holds a control character"),
        ));
    }
    Ok(Secret(value))
}

/// An options object: its string members by name, after checking that it
/// is an object with only the `allowed` members (written out rather than
/// derived: a derived deserializer per options struct costs `.wasm` size).
fn object<'v>(
    v: &'v Value,
    field: &str,
    allowed: &[&str],
) -> Result<&'v serde_json::Map<String, Value>, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| ConfigError::new(field, "must be an object"))?;
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ConfigError::new(
            format!("{field}.{k}"),
            format!("unknown field, expected one of: {}", allowed.join(", ")),
        ));
    }
    Ok(o)
}

fn string_member(
    o: &serde_json::Map<String, Value>,
    field: &str,
    name: &str,
    required: bool,
) -> Result<Option<String>, ConfigError> {
    match o.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Err(ConfigError::new(format!("{field}.{name}"), "is required")),
        Some(_) => Err(ConfigError::new(
            format!("{field}.{name}"),
            "must be a string",
        )),
    }
}

pub fn build(
    mut common: ProviderCommon,
    options: Option<&Value>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn Provider>, ConfigError> {
    let opath = format!("{path}.options");
    let Some(options) = options else {
        return Err(ConfigError::new(
            opath,
            "bedrock needs options.region (e.g. {\"region\": \"us-east-1\"})",
        ));
    };
    let opts = object(options, &opath, &["region", "sigv4", "guardrail"])?;
    let region = string_member(opts, &opath, "region", true)?.unwrap_or_default();
    if region.is_empty()
        || region.len() > 32
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ConfigError::new(
            format!("{opath}.region"),
            "must be an AWS region such as us-east-1",
        ));
    }
    if common.host == DEFAULT_HOST && region != DEFAULT_REGION {
        common.host = format!("bedrock-runtime.{region}.amazonaws.com");
    }
    let sigv4 = match opts.get("sigv4").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => {
            let spath = format!("{opath}.sigv4");
            let o = object(
                v,
                &spath,
                &["access_key_env", "secret_key_env", "session_token_env"],
            )?;
            if matches!(common.credential, Credential::Header { .. }) {
                return Err(ConfigError::new(
                    spath,
                    "SigV4 signing and auth.from: env are two credentials; use one",
                ));
            }
            let var = |name: &str| -> Result<Option<Secret>, ConfigError> {
                let required = name != "session_token_env";
                match string_member(o, &spath, name, required)? {
                    None => Ok(None),
                    Some(n) => env_secret(env, &n, &format!("{spath}.{name}")).map(Some),
                }
            };
            match (var("access_key_env")?, var("secret_key_env")?) {
                (Some(access_key_id), Some(secret_access_key)) => Some(sigv4::Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: var("session_token_env")?,
                }),
                _ => None,
            }
        }
    };
    let guardrail = match opts.get("guardrail").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => {
            let gpath = format!("{opath}.guardrail");
            let o = object(v, &gpath, &["identifier", "version", "trace"])?;
            let identifier = string_member(o, &gpath, "identifier", true)?.unwrap_or_default();
            let version = string_member(o, &gpath, "version", true)?.unwrap_or_default();
            if identifier.is_empty() || identifier.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    format!("{gpath}.identifier"),
                    "must be a guardrail id or ARN",
                ));
            }
            if version.is_empty() || version.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    format!("{gpath}.version"),
                    "must be a guardrail version (a number, or DRAFT)",
                ));
            }
            let mut g = serde_json::Map::new();
            g.insert("guardrailIdentifier".into(), Value::String(identifier));
            g.insert("guardrailVersion".into(), Value::String(version));
            if let Some(t) = string_member(o, &gpath, "trace", false)? {
                if !matches!(t.as_str(), "enabled" | "disabled" | "enabled_full") {
                    return Err(ConfigError::new(
                        format!("{gpath}.trace"),
                        "must be enabled, disabled or enabled_full",
                    ));
                }
                g.insert("trace".into(), Value::String(t));
            }
            Some(Value::Object(g))
        }
    };
    Ok(Box::new(Bedrock {
        common,
        region,
        sigv4,
        guardrail,
    }))
}

/// The model id as one path segment: AWS's URI encoding (`:` and `/`
/// encoded), and `.`/`..` encoded too so that no id can walk the path.
fn model_segment(id: &str) -> String {
    match id {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => sigv4::uri_encode(id, false),
    }
}

/// The name answers carry: the model the client asked for.
fn client_model<'a>(req: &'a ClientRequest<'_>) -> &'a str {
    req.model.as_ref().map(|m| m.0.as_str()).unwrap_or("")
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value));
}

impl Provider for Bedrock {
    fn common(&self) -> &ProviderCommon {
        &self.common
    }

    /// Chat (Converse) and embeddings (InvokeModel); no legacy completions.
    fn supports(&self, kind: ModelKind) -> bool {
        matches!(kind, ModelKind::Chat | ModelKind::Embedding)
    }

    fn build_request(
        &self,
        req: &ClientRequest<'_>,
        model: &Model,
    ) -> Result<UpstreamRequest, ApiError> {
        let (op, body) = match req.endpoint {
            Endpoint::Embeddings => (
                "invoke",
                embeddings::translate(req, model, self.common.unknown_params)?,
            ),
            Endpoint::ChatCompletions => (
                if req.stream {
                    "converse-stream"
                } else {
                    "converse"
                },
                request::translate(
                    req,
                    model,
                    self.common.unknown_params,
                    self.guardrail.as_ref(),
                )?,
            ),
            _ => {
                return Err(ApiError::invalid_param(
                    "model",
                    "model_not_supported",
                    "Bedrock models serve chat completions and embeddings only.",
                ))
            }
        };
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if op == "invoke" {
            headers.push(("accept".to_string(), "application/json".to_string()));
        }
        headers.extend(openai_shaped::credential_headers(&self.common));
        Ok(UpstreamRequest {
            path: format!(
                "{}/model/{}/{op}",
                self.common.base_path,
                model_segment(&model.upstream)
            ),
            authority: self.common.host.clone(),
            headers,
            body,
        })
    }

    /// SigV4 over the final request, when the provider signs.
    fn sign(&self, up: &mut UpstreamRequest, now_unix_seconds: u64) -> Result<(), ApiError> {
        let Some(creds) = &self.sigv4 else {
            return Ok(());
        };
        let amz_date = sigv4::amz_date(now_unix_seconds);
        let payload_hash = sigv4::sha256_hex(&up.body);
        let content_type = up
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "application/json".to_string());
        let mut signed = vec![
            ("content-type".to_string(), content_type),
            ("host".to_string(), up.authority.clone()),
            ("x-amz-content-sha256".to_string(), payload_hash.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        if let Some(t) = &creds.session_token {
            signed.push(("x-amz-security-token".to_string(), t.0.clone()));
        }
        let (path, query) = up.path.split_once('?').unwrap_or((&up.path, ""));
        let s = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                path,
                query,
                headers: &signed,
                payload_hash: &payload_hash,
            },
            creds,
            &self.region,
            SERVICE,
            &amz_date,
        );
        set_header(&mut up.headers, "x-amz-date", amz_date);
        set_header(&mut up.headers, "x-amz-content-sha256", payload_hash);
        if let Some(t) = &creds.session_token {
            set_header(&mut up.headers, "x-amz-security-token", t.0.clone());
        }
        set_header(&mut up.headers, "authorization", s.authorization);
        Ok(())
    }

    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator> {
        let model = client_model(req);
        if req.endpoint == Endpoint::Embeddings {
            let base64 = embeddings::wants_base64(req).unwrap_or(false);
            return Box::new(embeddings::Translator::new(model, base64));
        }
        let json_tool = request::json_tool_name(req);
        if req.stream {
            Box::new(stream::StreamTranslator::new(
                &self.common.name,
                model,
                req.include_usage,
                json_tool,
            ))
        } else {
            Box::new(response::WholeTranslator::new(model, json_tool))
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

    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn env(n: &str) -> Option<String> {
        match n {
            "AWS_ACCESS_KEY_ID" => Some(KEY.into()),
            "AWS_SECRET_ACCESS_KEY" => Some(SECRET.into()),
            "AWS_SESSION_TOKEN" => Some("FQoGZXIvYXdzEXAMPLE".into()),
            "BEDROCK_API_KEY" => Some("br-key".into()),
            "EMPTY" => Some(" ".into()),
            _ => None,
        }
    }

    fn parse(providers: &str) -> Result<Config, ConfigError> {
        let doc = format!(
            r#"{{"providers":[{providers}],"models":[{{"name":"c","provider":"b","upstream_model":"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-5-sonnet-20240620-v1:0"}},
                {{"name":"e","provider":"b","kind":"embedding","upstream_model":"amazon.titan-embed-text-v2:0"}}]}}"#
        );
        Config::parse(doc.as_bytes(), &env)
    }

    const SIGNED: &str = r#"{"name":"b","kind":"bedrock","cluster":"bedrock","options":{"region":"eu-west-1","sigv4":{"access_key_env":"AWS_ACCESS_KEY_ID","secret_key_env":"AWS_SECRET_ACCESS_KEY","session_token_env":"AWS_SESSION_TOKEN"}}}"#;

    #[test]
    fn config_options() {
        let c = parse(SIGNED).unwrap();
        let p = c.provider(&c.models[0]);
        assert_eq!(p.common().host, "bedrock-runtime.eu-west-1.amazonaws.com");
        assert!(p.supports(ModelKind::Chat) && p.supports(ModelKind::Embedding));
        assert!(!p.supports(ModelKind::Completion));
        let dbg = format!("{:?}", c.providers);
        assert!(
            !dbg.contains(SECRET) && !dbg.contains(KEY) && !dbg.contains("FQoG"),
            "{dbg}"
        );
        let c = parse(r#"{"name":"b","kind":"bedrock","cluster":"x","host":"vpce-1.bedrock-runtime.us-west-2.vpce.amazonaws.com","options":{"region":"us-west-2"}}"#).unwrap();
        assert_eq!(
            c.providers[0].common().host,
            "vpce-1.bedrock-runtime.us-west-2.vpce.amazonaws.com"
        );
        for (p, field) in [
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x"}"#,
                "providers[0].options",
            ),
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x","options":{"region":"US East"}}"#,
                "providers[0].options.region",
            ),
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x","options":{"region":"us-east-1","x":1}}"#,
                "providers[0].options.x",
            ),
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x","options":{"region":"us-east-1","sigv4":{"access_key_env":"AWS_ACCESS_KEY_ID","secret_key_env":"NOPE"}}}"#,
                "providers[0].options.sigv4.secret_key_env",
            ),
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x","options":{"region":"us-east-1","sigv4":{"access_key_env":"AWS_ACCESS_KEY_ID","secret_key_env":"AWS_SECRET_ACCESS_KEY","session_token_env":"EMPTY"}}}"#,
                "providers[0].options.sigv4.session_token_env",
            ),
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x","auth":{"from":"env","env":"BEDROCK_API_KEY"},"options":{"region":"us-east-1","sigv4":{"access_key_env":"AWS_ACCESS_KEY_ID","secret_key_env":"AWS_SECRET_ACCESS_KEY"}}}"#,
                "providers[0].options.sigv4",
            ),
            (
                r#"{"name":"b","kind":"bedrock","cluster":"x","options":{"region":"us-east-1","guardrail":{"identifier":"g","version":"1","trace":"loud"}}}"#,
                "providers[0].options.guardrail.trace",
            ),
        ] {
            let e = parse(p).unwrap_err();
            assert_eq!(e.field, field, "{p}: {e}");
            assert!(!e.message.contains(SECRET), "{e}");
        }
    }

    #[test]
    fn paths_and_bearer_key() {
        let c = parse(r#"{"name":"b","kind":"bedrock","cluster":"x","auth":{"from":"env","env":"BEDROCK_API_KEY"},"options":{"region":"us-east-1"}}"#).unwrap();
        let p = c.provider(&c.models[0]);
        let body = br#"{"model":"c","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        let mut up = p.build_request(&req, &c.models[0]).unwrap();
        assert_eq!(up.path, "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream");
        assert_eq!(up.authority, DEFAULT_HOST);
        assert!(up
            .headers
            .contains(&("authorization".into(), "Bearer br-key".into())));
        let before = up.clone();
        p.sign(&mut up, 1).unwrap();
        assert_eq!(up, before, "bearer keys are not signed");
        let req =
            ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).unwrap();
        let up = p.build_request(&req, &c.models[1]).unwrap();
        assert_eq!(up.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(model_segment(".."), "%2E%2E");
    }

    #[test]
    fn signing_sets_the_headers_and_is_deterministic() {
        let c = parse(SIGNED).unwrap();
        let p = c.provider(&c.models[0]);
        let body = br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#;
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        let mut a = p.build_request(&req, &c.models[0]).unwrap();
        assert!(!a.headers.iter().any(|(k, _)| k == "authorization"));
        let mut b = a.clone();
        p.sign(&mut a, 1_440_938_160).unwrap();
        p.sign(&mut b, 1_440_938_160).unwrap();
        assert_eq!(a, b);
        let get = |n: &str| {
            a.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(get("x-amz-security-token"), Some("FQoGZXIvYXdzEXAMPLE"));
        assert_eq!(
            get("x-amz-content-sha256").map(str::to_string),
            Some(sigv4::sha256_hex(&a.body))
        );
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="), "{auth}");
        // Signing again replaces, never duplicates.
        p.sign(&mut b, 1_440_938_161).unwrap();
        assert_eq!(
            b.headers
                .iter()
                .filter(|(k, _)| k == "authorization")
                .count(),
            1
        );
        assert!(b
            .headers
            .contains(&("x-amz-date".into(), "20150830T123601Z".into())));
    }

    #[test]
    fn gateway_signs_with_the_given_time() {
        use crate::auth::Via;
        use crate::gateway::{on_request_body, Pending};
        let doc = format!(
            r#"{{"providers":[{SIGNED}],"models":[{{"name":"c","provider":"b","upstream_model":"anthropic.claude-3-haiku-20240307-v1:0"}}],
            "callers":[{{"id":"a","principals":["spiffe://x"]}}]}}"#
        );
        let c = Config::parse(doc.as_bytes(), &env).unwrap();
        let pending = Pending {
            caller: 0,
            via: Via::Key,
            endpoint: Endpoint::ChatCompletions,
            client_headers: Vec::new(),
        };
        let Ok(mut f) = on_request_body(
            &c,
            &pending,
            br#"{"model":"c","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        ) else {
            panic!("forward expected");
        };
        f.sign(&c, 1_440_938_160).ok().unwrap();
        assert!(f
            .upstream
            .headers
            .iter()
            .any(|(k, v)| k == "x-amz-date" && v == "20150830T123600Z"));
        let head = f.exchange.on_response_head(&c, 200, true);
        assert!(head
            .set
            .contains(&("content-type".into(), "text/event-stream".into())));
        assert!(!head.buffer);
        let head = f.exchange.on_response_head(&c, 408, true);
        assert_eq!(head.status, Some(504));
    }
}
