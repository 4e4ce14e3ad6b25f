//! Providers: one file per provider kind behind the [`Provider`] trait.
//!
//! Adding a provider is one new file here and one entry in [`ProviderKind`]
//! (its name, and the arm in [`ProviderKind::build`]).

pub(crate) mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod openai;
mod openai_compatible;
pub(crate) mod openai_out;
pub(crate) mod openai_shaped;
pub mod vertex;

use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;
use crate::usage::Usage;
use serde::Deserialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    #[serde(rename = "azure")]
    Azure,
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible,
    #[serde(rename = "anthropic")]
    Anthropic,
    #[serde(rename = "bedrock")]
    Bedrock,
    #[serde(rename = "gemini")]
    Gemini,
    #[serde(rename = "vertex")]
    Vertex,
}

impl ProviderKind {
    /// The name in configs, `/v1/models`' `owned_by` and response headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Vertex => "vertex",
        }
    }

    /// What a provider of this kind uses when the config does not say.
    pub fn defaults(self) -> KindDefaults {
        match self {
            ProviderKind::OpenAi => openai::DEFAULTS,
            ProviderKind::Azure => azure::DEFAULTS,
            ProviderKind::OpenAiCompatible => openai_compatible::DEFAULTS,
            ProviderKind::Anthropic => anthropic::DEFAULTS,
            ProviderKind::Bedrock => bedrock::DEFAULTS,
            ProviderKind::Gemini => gemini::DEFAULTS,
            ProviderKind::Vertex => vertex::DEFAULTS,
        }
    }

    /// Build the provider from its validated common settings and its own
    /// `options` object (each kind parses and validates that itself). `env`
    /// looks up VM environment variables, for credentials named in `options`
    /// (Bedrock's SigV4 keys).
    pub fn build(
        self,
        common: ProviderCommon,
        options: Option<&serde_json::Value>,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Box<dyn Provider>, ConfigError> {
        match self {
            ProviderKind::OpenAi => openai::build(common, options, path),
            ProviderKind::Azure => azure::build(common, options, path),
            ProviderKind::OpenAiCompatible => openai_compatible::build(common, options, path),
            ProviderKind::Anthropic => anthropic::build(common, options, path),
            ProviderKind::Bedrock => bedrock::build(common, options, path, env),
            ProviderKind::Gemini => gemini::build(common, options, path),
            ProviderKind::Vertex => vertex::build(common, options, path),
        }
    }
}

/// Per-kind defaults for the common provider settings.
#[derive(Debug, Clone, Copy)]
pub struct KindDefaults {
    pub host: Option<&'static str>,
    pub base_path: &'static str,
    pub auth_header: &'static str,
    pub auth_prefix: &'static str,
    pub unknown_params: UnknownParams,
}

/// What to do with top-level request parameters the provider's API does not
/// know: reject them with a 400 naming the parameter (as OpenAI does), drop
/// them, or pass them on (servers such as vLLM take extra sampling params).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownParams {
    Reject,
    Drop,
    Pass,
}

/// A provider key. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the provider's credential reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Envoy adds it (the `credential_injector` upstream filter on the
    /// provider's cluster, fed from a mounted secret file through SDS).
    Injected,
    /// The filter sets `header: value` (value already carries its prefix),
    /// read from a VM environment variable at configure time.
    Header { header: String, value: Secret },
    /// No credential (a local Ollama, say).
    None,
}

/// Settings every provider kind has.
#[derive(Debug, Clone)]
pub struct ProviderCommon {
    pub name: String,
    pub kind: ProviderKind,
    /// Envoy cluster the request is routed to.
    pub cluster: String,
    /// `:authority` sent upstream.
    pub host: String,
    /// Path prefix of the provider's API, e.g. `/v1`.
    pub base_path: String,
    pub credential: Credential,
    pub unknown_params: UnknownParams,
}

/// What to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub path: String,
    pub authority: String,
    /// Headers to set (replacing any of the same name).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Per-request translation of the provider's answer into OpenAI's shape.
/// It carries the stream state, so one is made for each request.
pub trait ResponseTranslator {
    /// A chunk of a successful streamed answer. `None` forwards the chunk
    /// unchanged; `Some(bytes)` replaces it.
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>>;
    /// Whether a successful non-streamed answer must be held whole and given
    /// to [`full_body`](Self::full_body) (translating providers), or may be
    /// forwarded as it arrives through [`body_chunk`](Self::body_chunk).
    fn needs_whole_body(&self) -> bool {
        true
    }
    /// A chunk of a successful non-streamed answer that is forwarded as it
    /// arrives (only when `needs_whole_body` is false).
    fn body_chunk(&mut self, _chunk: &[u8], _end_of_stream: bool) {}
    /// The whole body of a successful non-streamed answer.
    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>>;
    /// After `full_body`: the HTTP status the answer must carry when the
    /// translation turned a 2xx answer into an error (a prompt the provider
    /// blocked, an answer that is not what the API promises). The glue holds
    /// the response headers of whole-body answers, so it can still set it.
    fn status(&self) -> Option<u16> {
        None
    }
    /// Token usage seen so far (final once the answer has ended).
    fn usage(&self) -> Option<Usage>;
    /// The time (Unix seconds) to report as `created` in answers the
    /// translator writes itself (translated providers; pass-through answers
    /// keep the provider's). Without it they report 0.
    fn set_created(&mut self, _unix_seconds: u64) {}
    /// The provider's response headers, read before the body (Bedrock: its
    /// request id, which names the answer, and token counts some models
    /// report only there).
    fn response_headers(&mut self, _get: &dyn Fn(&str) -> Option<String>) {}
    /// The `content-type` of a successful answer when the translator turns
    /// it into another format (Bedrock's binary event stream into SSE).
    fn content_type(&self) -> Option<&'static str> {
        None
    }
}

pub trait Provider: fmt::Debug + Send + Sync {
    fn common(&self) -> &ProviderCommon;

    /// Whether models of this kind can be served by this provider.
    fn supports(&self, kind: ModelKind) -> bool;

    /// Rewrite the client's request for this provider.
    fn build_request(
        &self,
        req: &ClientRequest<'_>,
        model: &Model,
    ) -> Result<UpstreamRequest, ApiError>;

    /// Sign the finished upstream request (providers whose credential
    /// depends on the request and the time: Bedrock's SigV4).
    /// `now_unix_seconds` is the host clock's time. Called once, after
    /// `build_request`; nothing may change the request afterwards. The
    /// default signs nothing.
    fn sign(&self, _up: &mut UpstreamRequest, _now_unix_seconds: u64) -> Result<(), ApiError> {
        Ok(())
    }

    /// Where the filter fetches this provider's bearer token itself
    /// (Vertex's `options.token_source`), if it does.
    fn token_source(&self) -> Option<&crate::token::TokenSource> {
        None
    }

    /// A translator for the answer to `req`.
    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator>;

    /// The status the client gets for a provider error status (decided from
    /// the response headers, before the body is read).
    fn response_status(&self, status: u16) -> u16 {
        crate::error::upstream_status(status)
    }

    /// Map a provider error answer into the OpenAI shape. Its status must be
    /// `response_status(status)`.
    fn map_error(&self, status: u16, body: &[u8]) -> ApiError {
        crate::error::map_upstream_error(&self.common().name, status, body)
    }
}
