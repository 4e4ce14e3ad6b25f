//! Azure OpenAI: the deployment is in the path
//! (`/openai/deployments/{deployment}/chat/completions?api-version=…`), the
//! key in `api-key`. The model's `upstream_model` is the deployment name.

use super::openai_shaped::{self, PassThrough};
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, UnknownParams, UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;
use serde::Deserialize;

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: None,
    base_path: "/openai",
    auth_header: "api-key",
    auth_prefix: "",
    unknown_params: UnknownParams::Reject,
};

/// The GA data-plane version used when the config names none.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    api_version: Option<String>,
}

#[derive(Debug)]
pub struct Azure {
    common: ProviderCommon,
    /// Already URL-encoded for the query string.
    api_version: String,
}

pub fn build(
    common: ProviderCommon,
    options: Option<&serde_json::Value>,
    path: &str,
) -> Result<Box<dyn Provider>, ConfigError> {
    let opts: Options = match options {
        None => Options { api_version: None },
        Some(v) => serde_path_to_error::deserialize(v)
            .map_err(|e| ConfigError::serde(&format!("{path}.options"), e))?,
    };
    let api_version = opts
        .api_version
        .unwrap_or_else(|| DEFAULT_API_VERSION.to_string());
    let ok = !api_version.is_empty()
        && api_version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return Err(ConfigError::new(
            format!("{path}.options.api_version"),
            "must look like 2024-10-21 or 2025-01-01-preview",
        ));
    }
    Ok(Box::new(Azure {
        common,
        api_version,
    }))
}

/// Percent-encode one path segment (deployment names are usually plain, but
/// the path must never be broken by what a config holds).
fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Provider for Azure {
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
            path: format!(
                "{}/deployments/{}{}?api-version={}",
                self.common.base_path,
                segment(&model.upstream),
                req.endpoint.suffix(),
                self.api_version
            ),
            authority: self.common.host.clone(),
            headers: openai_shaped::credential_headers(&self.common),
            body: openai_shaped::body(&self.common, req, model)?,
        })
    }

    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator> {
        Box::new(PassThrough::for_request(req))
    }
}
