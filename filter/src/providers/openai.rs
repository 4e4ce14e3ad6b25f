//! OpenAI (`api.openai.com`): the client's API, so the request passes with
//! the model renamed and the key swapped; the answer passes unchanged.

use super::openai_shaped::{self, PassThrough};
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, UnknownParams, UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: Some("api.openai.com"),
    base_path: "/v1",
    auth_header: "authorization",
    auth_prefix: "Bearer ",
    unknown_params: UnknownParams::Reject,
};

#[derive(Debug)]
pub struct OpenAi {
    common: ProviderCommon,
}

pub fn build(
    common: ProviderCommon,
    options: Option<&serde_json::Value>,
    path: &str,
) -> Result<Box<dyn Provider>, ConfigError> {
    openai_shaped::no_options(options, path)?;
    Ok(Box::new(OpenAi { common }))
}

impl Provider for OpenAi {
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
