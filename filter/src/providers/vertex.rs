//! Gemini on Vertex AI (`{location}-aiplatform.googleapis.com`): the same
//! translation as `super::gemini` (`gemini.rs`), on Vertex's paths and credential.
//!
//! - Chat: `POST {base_path}/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//!   (`:streamGenerateContent?alt=sse` for streams); `base_path` defaults
//!   to `/v1`.
//! - Embeddings: `…/models/{model}:predict` (`instances`/`parameters`, see
//!   `gemini/embed.rs`), not `batchEmbedContents`.
//! - `options`: `{"project": "<project id>", "location": "us-central1"}`
//!   (`project` required, `location` defaults to `us-central1`). `host` is
//!   required and must match: `{location}-aiplatform.googleapis.com`, or
//!   `aiplatform.googleapis.com` for location `global` (or a Private Service
//!   Connect endpoint).
//!
//! # Credential
//!
//! Vertex takes an OAuth2 access token, `authorization: Bearer ya29…`
//! (the default header and prefix of this kind). Tokens last an hour, so a
//! fixed key does not do:
//!
//! - **Today** (`auth.from: injector`, the default): Envoy's
//!   `credential_injector` on the provider's cluster sets the header from a
//!   file-based SDS secret (`Bearer <token>`), rewritten before expiry by
//!   whatever holds the service account: a sidecar or CronJob running
//!   `gcloud auth print-access-token` (or reading the GKE metadata server)
//!   and renaming a new file over the old one — Envoy picks it up without
//!   restart, as for the other providers' keys. `auth.from: env` works for
//!   tests only (the value is read once).
//! - **Hook for the glue** (not wired: someone else decides): on GKE with
//!   Workload Identity the filter could fetch the token itself from the
//!   metadata server with a `dispatch_http_call` to
//!   [`METADATA_TOKEN_PATH`] on a cluster for `metadata.google.internal`
//!   (header `metadata-flavor: Google`), parse the answer with
//!   [`access_token`], keep the header until shortly before it expires, and
//!   set it on each request to this provider. Everything but the HTTP call
//!   and the timer is here and tested.

use super::gemini::{self, EmbedApi};
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, Secret, UnknownParams,
    UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;
use serde::Deserialize;

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: None,
    base_path: "/v1",
    auth_header: "authorization",
    auth_prefix: "Bearer ",
    unknown_params: UnknownParams::Reject,
};

/// The location used when `options.location` is not given.
pub const DEFAULT_LOCATION: &str = "us-central1";

/// Path of the GKE/GCE metadata server's access token for the workload's
/// service account.
pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    project: String,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Debug)]
pub struct Vertex {
    common: ProviderCommon,
    /// `/projects/{project}/locations/{location}/publishers/google/models`,
    /// segments encoded, `base_path` in front.
    models_path: String,
}

pub fn build(
    common: ProviderCommon,
    options: Option<&serde_json::Value>,
    path: &str,
) -> Result<Box<dyn Provider>, ConfigError> {
    let field = format!("{path}.options");
    let opts: Options = match options {
        None => {
            return Err(ConfigError::new(
                field,
                "vertex needs {\"project\": \"<project id>\", \"location\": \"us-central1\"}",
            ))
        }
        Some(v) => {
            serde_path_to_error::deserialize(v).map_err(|e| ConfigError::serde(&field, e))?
        }
    };
    // Project ids: lowercase letters, digits, hyphens; older domain-scoped
    // ones have `example.com:` in front; project numbers are digits.
    let project_ok = !opts.project.is_empty()
        && opts.project.len() <= 100
        && opts
            .project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
    if !project_ok {
        return Err(ConfigError::new(
            format!("{field}.project"),
            "must be a Google Cloud project id, e.g. my-project-123",
        ));
    }
    let location = opts
        .location
        .unwrap_or_else(|| DEFAULT_LOCATION.to_string());
    let location_ok = !location.is_empty()
        && location.len() <= 64
        && location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !location_ok {
        return Err(ConfigError::new(
            format!("{field}.location"),
            "must be a Vertex AI location, e.g. us-central1, europe-west4 or global",
        ));
    }
    let models_path = format!(
        "{}/projects/{}/locations/{}/publishers/google/models",
        common.base_path,
        gemini::segment(&opts.project),
        gemini::segment(&location)
    );
    Ok(Box::new(Vertex {
        common,
        models_path,
    }))
}

/// The metadata server's token answer (`{"access_token", "expires_in",
/// "token_type"}`) → the `authorization` value and its lifetime in seconds.
pub fn access_token(body: &[u8]) -> Result<(Secret, u64), &'static str> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
        #[serde(default)]
        token_type: Option<String>,
    }
    let t: Token =
        serde_json::from_slice(body).map_err(|_| "the metadata server's answer is not a token")?;
    if t.access_token.is_empty()
        || t.access_token
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err("the metadata server's token is empty or malformed");
    }
    if t.token_type
        .as_deref()
        .is_some_and(|k| !k.eq_ignore_ascii_case("bearer"))
    {
        return Err("the metadata server's token is not a bearer token");
    }
    Ok((
        Secret(format!("Bearer {}", t.access_token)),
        t.expires_in.unwrap_or(0),
    ))
}

impl Provider for Vertex {
    fn common(&self) -> &ProviderCommon {
        &self.common
    }

    fn supports(&self, kind: ModelKind) -> bool {
        gemini::supports(kind)
    }

    fn build_request(
        &self,
        req: &ClientRequest<'_>,
        model: &Model,
    ) -> Result<UpstreamRequest, ApiError> {
        let body = gemini::body(&self.common, req, model, EmbedApi::Predict)?;
        Ok(UpstreamRequest {
            path: format!(
                "{}/{}{}",
                self.models_path,
                gemini::segment(&model.upstream),
                gemini::method(req, EmbedApi::Predict)
            ),
            authority: self.common.host.clone(),
            headers: gemini::headers(&self.common),
            body,
        })
    }

    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator> {
        gemini::translator(&self.common, req, EmbedApi::Predict)
    }

    fn map_error(&self, status: u16, body: &[u8]) -> ApiError {
        gemini::map_error(&self.common, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::request::Endpoint;

    fn parse(provider: &str) -> Result<Config, ConfigError> {
        let doc = format!(
            r#"{{"providers":[{provider}],
            "models":[{{"name":"c","provider":"v","upstream_model":"gemini-2.5-flash"}},
                      {{"name":"e","provider":"v","kind":"embedding","upstream_model":"text-embedding-005"}}]}}"#
        );
        Config::parse(doc.as_bytes(), &|n| {
            (n == "T").then(|| "ya29.t".to_string())
        })
    }

    #[test]
    fn paths_and_credential() {
        let c = parse(
            r#"{"name":"v","kind":"vertex","cluster":"vertex","host":"europe-west4-aiplatform.googleapis.com",
                "options":{"project":"my-proj","location":"europe-west4"},"auth":{"from":"env","env":"T"}}"#,
        )
        .unwrap();
        let p = c.provider(&c.models[0]);
        let req = ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"c","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let up = p.build_request(&req, &c.models[0]).unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/my-proj/locations/europe-west4/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(up
            .headers
            .contains(&("authorization".into(), "Bearer ya29.t".into())));
        let req =
            ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).unwrap();
        let up = p.build_request(&req, &c.models[1]).unwrap();
        assert!(
            up.path.ends_with("/models/text-embedding-005:predict"),
            "{}",
            up.path
        );
        assert!(!p.supports(ModelKind::Completion));
    }

    #[test]
    fn options_are_checked() {
        let base = r#""name":"v","kind":"vertex","cluster":"vertex","host":"us-central1-aiplatform.googleapis.com""#;
        let e = parse(&format!("{{{base}}}")).unwrap_err();
        assert_eq!(e.field, "providers[0].options");
        let e = parse(&format!(r#"{{{base},"options":{{"project":"a/b"}}}}"#)).unwrap_err();
        assert_eq!(e.field, "providers[0].options.project");
        let e = parse(&format!(
            r#"{{{base},"options":{{"project":"p","location":"US"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, "providers[0].options.location");
        let e = parse(&format!(
            r#"{{{base},"options":{{"project":"p","zone":"x"}}}}"#
        ))
        .unwrap_err();
        assert!(e.field.starts_with("providers[0].options"), "{e}");
        let e =
            parse(r#"{"name":"v","kind":"vertex","cluster":"vertex","options":{"project":"p"}}"#)
                .unwrap_err();
        assert_eq!(e.field, "providers[0].host");
        let c = parse(&format!(r#"{{{base},"options":{{"project":"p"}}}}"#)).unwrap();
        let req = ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let up = c
            .provider(&c.models[0])
            .build_request(&req, &c.models[0])
            .unwrap();
        assert!(up.path.contains("/locations/us-central1/"), "{}", up.path);
        assert!(!up.headers.iter().any(|(k, _)| k == "authorization"));
    }

    #[test]
    fn metadata_token_hook() {
        let (h, ttl) =
            access_token(br#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#)
                .unwrap();
        assert_eq!((h.0.as_str(), ttl), ("Bearer ya29.abc", 3599));
        assert!(format!("{h:?}").contains("***"));
        assert!(access_token(b"{}").is_err());
        assert!(access_token(br#"{"access_token":"a b"}"#).is_err());
        assert!(access_token(br#"{"access_token":"a","token_type":"mac"}"#).is_err());
    }
}
