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
//! - **From the metadata server** (`options.token_source`, GKE with
//!   Workload Identity, or GCE): the filter fetches the token itself.
//!
//!   ```json
//!   "options": {"project": "p", "location": "us-central1",
//!               "token_source": {"type": "gce_metadata", "cluster": "gcp_metadata",
//!                                "host": "metadata.google.internal",
//!                                "path": "/computeMetadata/v1/instance/service-accounts/default/token"}}
//!   ```
//!
//!   `cluster` is an Envoy cluster for the metadata server (plain HTTP,
//!   `169.254.169.254:80` / `metadata.google.internal`); `host` and `path`
//!   default as shown. `auth` must then be absent or `{"from": "none"}`.
//!   A 1 s timer in every VM keeps the token in Envoy shared data (see
//!   `crate::token`): when it is missing or expires within 5 minutes, the VM
//!   that takes the fetch lease (compare-and-swap, 10 s) sends
//!   `GET path` with `metadata-flavor: Google` (5 s timeout), parses the
//!   answer with [`access_token`] and stores it; all workers read it from
//!   there. Each request to the provider gets `authorization: Bearer <token>`
//!   from shared data, and is answered at once with a 502
//!   `upstream_credentials_unavailable` when there is no token valid for at
//!   least 30 s more: right after start (the first fetch starts at the
//!   first tick, about a second after Envoy starts), or while the metadata
//!   server fails (retried every 10 s, logged without the token). Requests
//!   never wait for a fetch.

use super::gemini::{self, EmbedApi};
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, Secret, UnknownParams,
    UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::ClientRequest;
use crate::token::TokenSource;
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
    #[serde(default)]
    token_source: Option<RawTokenSource>,
}

/// The metadata server's host name.
pub const METADATA_HOST: &str = "metadata.google.internal";

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawTokenSource {
    GceMetadata {
        cluster: String,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        path: Option<String>,
    },
}

fn token_source(raw: RawTokenSource, field: &str) -> Result<TokenSource, ConfigError> {
    let RawTokenSource::GceMetadata {
        cluster,
        host,
        path,
    } = raw;
    let bad = |s: &str| s.is_empty() || s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if bad(&cluster) {
        return Err(ConfigError::new(
            format!("{field}.cluster"),
            "must name the Envoy cluster of the metadata server",
        ));
    }
    let host = host.unwrap_or_else(|| METADATA_HOST.to_string());
    if bad(&host) || host.contains(['/', '?', '#', '@']) {
        return Err(ConfigError::new(
            format!("{field}.host"),
            "must be a host name, optionally with :port",
        ));
    }
    let path = path.unwrap_or_else(|| METADATA_TOKEN_PATH.to_string());
    if bad(&path) || !path.starts_with('/') {
        return Err(ConfigError::new(
            format!("{field}.path"),
            "must be a path starting with '/'",
        ));
    }
    Ok(TokenSource {
        cluster,
        host,
        path,
    })
}

#[derive(Debug)]
pub struct Vertex {
    common: ProviderCommon,
    /// `/projects/{project}/locations/{location}/publishers/google/models`,
    /// segments encoded, `base_path` in front.
    models_path: String,
    token_source: Option<TokenSource>,
}

pub fn build(
    mut common: ProviderCommon,
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
    let token_source = opts
        .token_source
        .map(|t| token_source(t, &format!("{field}.token_source")))
        .transpose()?;
    if token_source.is_some() {
        // The glue sets the header; `auth` is checked in `Config::parse`.
        common.credential = super::Credential::None;
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
        token_source,
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

    fn token_source(&self) -> Option<&TokenSource> {
        self.token_source.as_ref()
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

    #[test]
    fn token_source() {
        let base = r#""name":"v","kind":"vertex","cluster":"vertex","host":"us-central1-aiplatform.googleapis.com""#;
        let ts = r#""token_source":{"type":"gce_metadata","cluster":"gcp_metadata"}"#;
        let c = parse(&format!(r#"{{{base},"options":{{"project":"p",{ts}}}}}"#)).unwrap();
        let f = c.token_fetches();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].key.as_str(), f[0].cluster.as_str(), f[0].host.as_str()),
            ("llm-gateway/token/v", "gcp_metadata", METADATA_HOST)
        );
        assert_eq!(f[0].path, METADATA_TOKEN_PATH);
        assert_eq!(c.bearer_key(0).as_deref(), Some("llm-gateway/token/v"));
        // No credential of its own: the glue sets the header.
        let req = ClientRequest::parse(
            Endpoint::ChatCompletions,
            br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let up = c
            .provider(&c.models[0])
            .build_request(&req, &c.models[0])
            .unwrap();
        assert!(!up.headers.iter().any(|(k, _)| k == "authorization"));
        let none = r#""auth":{"from":"none"}"#;
        assert!(parse(&format!(
            r#"{{{base},{none},"options":{{"project":"p",{ts}}}}}"#
        ))
        .is_ok());
        for auth in [r#"{"from":"injector"}"#, r#"{"from":"env","env":"T"}"#] {
            let e = parse(&format!(
                r#"{{{base},"auth":{auth},"options":{{"project":"p",{ts}}}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.field, "providers[0].auth", "{e}");
        }
        let e = parse(&format!(
            r#"{{{base},"options":{{"project":"p","token_source":{{"type":"gce_metadata","cluster":""}}}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, "providers[0].options.token_source.cluster");
        let e = parse(&format!(
            r#"{{{base},"options":{{"project":"p","token_source":{{"type":"gce_metadata","cluster":"m","path":"x"}}}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, "providers[0].options.token_source.path");
        let e = parse(&format!(
            r#"{{{base},"options":{{"project":"p","token_source":{{"type":"gce_metadata","cluster":"m","port":1}}}}}}"#
        ))
        .unwrap_err();
        assert!(
            e.field.starts_with("providers[0].options.token_source"),
            "{e}"
        );
        let e = parse(&format!(
            r#"{{{base},"options":{{"project":"p","token_source":{{"type":"file","cluster":"m"}}}}}}"#
        ))
        .unwrap_err();
        assert!(
            e.field.starts_with("providers[0].options.token_source"),
            "{e}"
        );
        // Without token_source: nothing to fetch.
        let c = parse(&format!(r#"{{{base},"options":{{"project":"p"}}}}"#)).unwrap();
        assert!(c.token_fetches().is_empty());
        assert_eq!(c.bearer_key(0), None);
    }

    #[test]
    fn bearer_from_shared_data() {
        use crate::gateway::{self, Pending};
        let c = Config::parse(
            br#"{"providers":[{"name":"v","kind":"vertex","cluster":"vertex","host":"us-central1-aiplatform.googleapis.com",
                "options":{"project":"p","token_source":{"type":"gce_metadata","cluster":"m"}}}],
                "models":[{"name":"c","provider":"v"}],
                "callers":[{"id":"a","principals":["spiffe://x"],"models":["*"]}]}"#,
            &|_| None,
        )
        .unwrap();
        let doc = br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#;
        let pending = Pending {
            caller: 0,
            via: crate::auth::Via::Key,
            endpoint: Endpoint::ChatCompletions,
            client_headers: vec![],
        };
        let Ok(f) = gateway::on_request_body(&c, &pending, doc) else {
            panic!("not forwarded")
        };
        assert_eq!(f.bearer_from_shared.as_deref(), Some("llm-gateway/token/v"));
        assert_eq!(
            f.shared_bearer(&c, Some(b"1000 ya29.t"), 900).unwrap(),
            "Bearer ya29.t"
        );
        for (cached, now) in [(None, 0), (Some(&b"1000 ya29.t"[..]), 980)] {
            let Err(r) = f.shared_bearer(&c, cached, now) else {
                panic!("no 502")
            };
            assert_eq!(r.status, 502);
            let body = String::from_utf8(r.body).unwrap();
            assert!(body.contains("upstream_credentials_unavailable"), "{body}");
            assert!(body.contains("provider v"), "{body}");
        }
    }
}
