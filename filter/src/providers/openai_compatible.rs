//! OpenAI-compatible servers: Ollama, vLLM, LM Studio, Mistral, Groq,
//! Together, DeepSeek, OpenRouter… Same API as OpenAI under a configurable
//! base path and auth style; extra parameters (`top_k`, …) pass by default,
//! and a provider without a key (a local Ollama) is allowed.

use super::openai_shaped::{self, PassThrough};
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, UnknownParams, UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: None,
    base_path: "/v1",
    auth_header: "authorization",
    auth_prefix: "Bearer ",
    unknown_params: UnknownParams::Pass,
};

#[derive(Debug)]
pub struct OpenAiCompatible {
    common: ProviderCommon,
}

pub fn build(
    common: ProviderCommon,
    options: Option<&serde_json::Value>,
    path: &str,
) -> Result<Box<dyn Provider>, ConfigError> {
    openai_shaped::no_options(options, path)?;
    Ok(Box::new(OpenAiCompatible { common }))
}

impl Provider for OpenAiCompatible {
    fn common(&self) -> &ProviderCommon {
        &self.common
    }

    fn supports(&self, _kind: ModelKind) -> bool {
        true
    }

    fn build_request(
        &self,
        req: &ClientRequest<'_>,
        model: &Model,
    ) -> Result<UpstreamRequest, ApiError> {
        Ok(UpstreamRequest {
            path: format!("{}{}", self.common.base_path, req.endpoint.suffix()),
            authority: self.common.host.clone(),
            headers: openai_shaped::credential_headers(&self.common),
            body: openai_shaped::body(&self.common, req, model)?,
        })
    }

    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator> {
        Box::new(PassThrough::for_request(req))
    }
}
