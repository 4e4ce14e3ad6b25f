//! The request pipeline, in plain Rust: given what Envoy tells the filter,
//! decide what to do. The proxy-wasm glue only applies these decisions.

use crate::auth::{self, RequestView, Via};
use crate::config::{Config, ModelKind};
use crate::error::{self, ApiError};
use crate::frontdoor::{anthropic_messages, ErrorShape};
use crate::providers::{ResponseTranslator, UpstreamRequest};
use crate::request::{ClientRequest, Endpoint};
use crate::token;
use crate::usage::Usage;
use serde::Serialize;

/// A complete answer the filter gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply {
            status: e.status,
            headers: e.headers(),
            body: e.body(),
        }
    }
}

/// Headers removed from every request the filter forwards: credentials a
/// caller may send (replaced by the provider's) and `accept-encoding` (the filter
/// reads the answer, so it must not come compressed). `content-length` is set
/// again to the new body's length. Anthropic's version headers are carried in `Pending::client_headers` and
/// set again only for an Anthropic provider.
pub const STRIP_REQUEST_HEADERS: [&str; 8] = [
    "authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "x-amz-security-token",
    "accept-encoding",
    "anthropic-version",
    "anthropic-beta",
];

#[derive(Debug)]
pub enum Head {
    /// Not under the API prefix: not the gateway's business.
    PassThrough,
    /// Answer now.
    Reply(Reply),
    /// Authenticated; the decision needs the body.
    NeedBody(Pending),
    /// `GET /v1/usage`: the glue reads the counters (see [`usage_reply`]).
    Usage { caller: usize, query: String },
    /// `GET /v1/routing` by an admin: the glue reads the deployments' state
    /// (see [`routing_reply`]).
    Routing,
}

#[derive(Debug, Clone)]
pub struct Pending {
    pub caller: usize,
    pub via: Via,
    pub endpoint: Endpoint,
    /// Client headers the endpoint forwards to a provider speaking the
    /// client's API (Anthropic's `anthropic-version` / `anthropic-beta` on
    /// the Messages routes), as `(lowercase name, value)`.
    pub client_headers: Vec<(String, String)>,
}

/// The request as it goes upstream, and the state that reads the answer.
pub struct Forward {
    pub cluster: String,
    pub upstream: UpstreamRequest,
    pub exchange: Exchange,
    /// The shared-data key of the bearer token the glue must set
    /// (`authorization: Bearer <token>`), for providers whose token the
    /// filter fetches itself (see [`crate::token`]).
    pub bearer_from_shared: Option<String>,
    /// What the request reserves against the caller's quotas (`None`: the
    /// request is not counted, e.g. Anthropic's count_tokens).
    pub reserve: Option<crate::quota::Ask>,
    /// The model has deployments: the glue plans the attempts
    /// ([`crate::routing::plan`]) and sends the request to the routing
    /// cluster untranslated; `upstream` and `exchange` are what the first
    /// deployment that can take it would get (for checks and refusals).
    pub routed: bool,
}

impl Forward {
    /// The 429 (or 503) for a request the quotas refuse, in the shape of
    /// the client's API, with its `retry-after` and rate-limit headers.
    pub fn refusal(&self, cfg: &Config, d: &crate::quota::Denied) -> Reply {
        let (e, headers) = crate::quota::refusal(d, &cfg.callers[self.exchange.caller]);
        let mut r = self.exchange.shape.reply(e);
        r.headers.retain(|(k, _)| k == "content-type");
        r.headers.extend(headers);
        r
    }

    /// Sign the upstream request for providers that sign requests
    /// themselves (Bedrock's SigV4; the others do nothing). `now_unix_seconds`
    /// is the host clock's time (fixed in tests). Call once, last: nothing
    /// may change the request afterwards.
    pub fn sign(&mut self, cfg: &Config, now_unix_seconds: u64) -> Result<(), Reply> {
        cfg.providers[self.exchange.provider]
            .sign(&mut self.upstream, now_unix_seconds)
            .map_err(|e| self.exchange.shape.reply(e))
    }

    /// The `authorization` value for a `bearer_from_shared` provider, from
    /// the shared-data value `cached` at `now`; without a token valid for
    /// [`token::MIN_VALIDITY`] more seconds, a 502 to answer at once.
    pub fn shared_bearer(
        &self,
        cfg: &Config,
        cached: Option<&[u8]>,
        now_unix_seconds: u64,
    ) -> Result<String, Reply> {
        match token::Cached::parse(cached) {
            Some(c) if c.usable(now_unix_seconds) => Ok(format!("Bearer {}", c.token)),
            _ => {
                let name = &cfg.providers[self.exchange.provider].common().name;
                Err(self.exchange.shape.reply(ApiError::server(
                    502,
                    "upstream_credentials_unavailable",
                    format!(
                        "The gateway has no access token for provider {name} yet \
                         (metadata server fetch pending or failing)."
                    ),
                )))
            }
        }
    }
}

/// One forwarded request's answer handling.
pub struct Exchange {
    pub provider: usize,
    pub model: usize,
    pub caller: usize,
    pub stream: bool,
    translator: Box<dyn ResponseTranslator>,
    /// The answer is an error being buffered for mapping.
    error: Option<ErrorKind>,
    /// The status of the mapped provider error, once its body was read.
    mapped_status: Option<u16>,
    /// Seconds to wait that only the provider's error body said.
    mapped_retry_after: Option<u64>,
    /// The shape mapped errors take (the client's API's).
    shape: ErrorShape,
    /// The deployment that serves it (routed models).
    pub deployment: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Provider(u16),
    Envoy(u16),
    /// Envoy's rate limit filter refused (global mode): the answer carries
    /// the rate limit service's wait, if any, in seconds.
    GlobalLimit(Option<u64>),
}

/// What to do with the response headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: Option<u16>,
    pub set: Vec<(String, String)>,
    pub remove: Vec<&'static str>,
    /// Buffer the whole body before `full_body` (errors, non-streamed answers).
    pub buffer: bool,
}

fn split_path(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or("")
}

fn path_query(path: &str) -> &str {
    path.split('#')
        .next()
        .and_then(|p| p.split_once('?'))
        .map(|(_, q)| q)
        .unwrap_or("")
}

/// The answer to `GET /v1/routing`: every deployment with its settings and
/// its shared state now (this minute's requests and tokens, requests in
/// flight, moving latency, cooldown).
pub fn routing_reply(
    cfg: &Config,
    stats: &dyn Fn(usize) -> crate::routing::Stats,
    now_ms: u64,
) -> Reply {
    let data: Vec<serde_json::Value> = cfg
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let st = stats(i).at(now_ms);
            serde_json::json!({
                "deployment": d.name,
                "model": cfg.models[d.model].name,
                "provider": cfg.providers[d.provider].common().name,
                "upstream_model": d.upstream,
                "endpoint": d.endpoint,
                "weight": d.weight,
                "priority": d.priority,
                "region": d.region,
                "tags": d.tags,
                "rpm": d.rpm,
                "tpm": d.tpm,
                "requests_this_minute": st.requests,
                "tokens_this_minute": st.tokens,
                "in_flight": st.in_flight,
                "latency_ms": (st.latency_ms > 0).then_some(st.latency_ms),
                "recent_failures": st.recent_failures(now_ms, &cfg.routing.cooldown),
                "cooling_down_for_ms": st.cool_until_ms.saturating_sub(now_ms),
            })
        })
        .collect();
    json_reply(
        200,
        &serde_json::json!({
            "object": "list",
            "data": data,
            "strategies": cfg.models.iter().filter(|m| !m.deployments.is_empty())
                .map(|m| (m.name.clone(), m.strategy.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
        }),
    )
}

/// The answer to `GET /v1/usage` (`query` as the client sent it): the
/// caller's own usage; an admin caller may add `caller=ID`, `team=NAME` or
/// `all=true`.
pub fn usage_reply(
    cfg: &Config,
    store: &dyn crate::quota::Store,
    caller: usize,
    query: &str,
    now_ms: u64,
) -> Reply {
    let Some(q) = &cfg.quotas else {
        return ApiError::new(
            404,
            "invalid_request_error",
            "This gateway does not count usage (no `quotas` in its configuration).",
        )
        .code("usage_not_enabled")
        .into();
    };
    let me = &cfg.callers[caller];
    let report = |c: &crate::config::Caller| {
        let models: Vec<&str> = cfg
            .models
            .iter()
            .filter(|m| c.may_use(&m.name))
            .map(|m| m.name.as_str())
            .collect();
        crate::quota::caller_report(store, q, c, &models, now_ms)
    };
    let mut want_caller = None;
    let mut want_team = None;
    let mut all = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "caller" => want_caller = Some(v.into_owned()),
            "team" => want_team = Some(v.into_owned()),
            "all" => all = v == "true" || v == "1",
            other => {
                return ApiError::invalid_param(
                    other,
                    "unknown_parameter",
                    format!("Unknown query parameter `{}`.", error::echo(other)),
                )
                .into()
            }
        }
    }
    let asks_other = all
        || want_team
            .as_deref()
            .is_some_and(|t| me.team.as_deref() != Some(t))
        || want_caller.as_deref().is_some_and(|c| c != me.id);
    if asks_other && !me.admin {
        return ApiError::new(
            403,
            "permission_error",
            "Only callers marked admin may read other callers' or teams' usage.",
        )
        .code("insufficient_permissions")
        .into();
    }
    let value = if all {
        let mut teams: Vec<&str> = cfg
            .callers
            .iter()
            .filter_map(|c| c.team.as_deref())
            .collect();
        teams.sort_unstable();
        teams.dedup();
        serde_json::json!({
            "object": "list",
            "data": cfg.callers.iter().map(report).collect::<Vec<_>>(),
            "teams": teams.iter().map(|t| crate::quota::team_report(store, t, now_ms)).collect::<Vec<_>>(),
        })
    } else if let Some(t) = want_team {
        if !cfg
            .callers
            .iter()
            .any(|c| c.team.as_deref() == Some(t.as_str()))
        {
            return ApiError::new(
                404,
                "invalid_request_error",
                format!("No team `{}`.", error::echo(&t)),
            )
            .code("team_not_found")
            .into();
        }
        crate::quota::team_report(store, &t, now_ms)
    } else if let Some(id) = want_caller {
        match cfg.callers.iter().find(|c| c.id == id) {
            Some(c) => report(c),
            None => {
                return ApiError::new(
                    404,
                    "invalid_request_error",
                    format!("No caller `{}`.", error::echo(&id)),
                )
                .code("caller_not_found")
                .into()
            }
        }
    } else {
        report(me)
    };
    json_reply(200, &value)
}

fn method_not_allowed(shape: ErrorShape, method: &str, allow: &str) -> Reply {
    let mut r = shape.reply(
        ApiError::new(
            405,
            "invalid_request_error",
            format!(
                "Method {} is not allowed here; use {allow}.",
                error::echo(method)
            ),
        )
        .code("method_not_allowed"),
    );
    r.headers.push(("allow".into(), allow.into()));
    r
}

fn json_content_type(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json") || mime.is_empty()
}

/// Percent-decode a path segment (model ids may hold `/` or `:`).
fn decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

fn json_reply<T: Serialize>(status: u16, v: &T) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(v).unwrap_or_default(),
    }
}

fn model_object<'a>(cfg: &'a Config, m: &'a crate::config::Model) -> ModelObject<'a> {
    ModelObject {
        id: &m.name,
        object: "model",
        created: m.created,
        owned_by: cfg.providers[m.provider].common().kind.as_str(),
    }
}

/// Decide from the request headers.
pub fn on_request_head(
    cfg: &Config,
    view: &dyn RequestView,
    method: &str,
    path: &str,
    end_of_stream: bool,
) -> Head {
    let raw_path = path;
    let path = split_path(path);
    let rest = if cfg.path_prefix.is_empty() {
        path
    } else if let Some(r) = path.strip_prefix(cfg.path_prefix.as_str()) {
        if !(r.is_empty() || r.starts_with('/')) {
            return Head::PassThrough;
        }
        r
    } else {
        return Head::PassThrough;
    };
    enum Route<'a> {
        Post(Endpoint),
        Models,
        Model(&'a str),
        Usage,
        Routing,
    }
    let route = match rest {
        "/usage" => Route::Usage,
        "/routing" => Route::Routing,
        "/chat/completions" => Route::Post(Endpoint::ChatCompletions),
        "/completions" => Route::Post(Endpoint::Completions),
        "/embeddings" => Route::Post(Endpoint::Embeddings),
        "/messages" => Route::Post(Endpoint::Messages),
        "/messages/count_tokens" => Route::Post(Endpoint::CountTokens),
        "/models" => Route::Models,
        r => match r.strip_prefix("/models/") {
            Some(id) if !id.is_empty() => Route::Model(id),
            _ => {
                // Unknown paths below Anthropic's routes answer in its shape.
                let shape = if r.starts_with("/messages/") {
                    ErrorShape::Anthropic
                } else {
                    ErrorShape::OpenAi
                };
                return Head::Reply(
                    shape.reply(
                        ApiError::new(
                            404,
                            "invalid_request_error",
                            format!(
                                "Invalid URL ({} {})",
                                error::echo(method),
                                error::echo(path)
                            ),
                        )
                        .code("unknown_url"),
                    ),
                );
            }
        },
    };
    let shape = match route {
        Route::Post(e) => ErrorShape::for_endpoint(e),
        Route::Models | Route::Model(_) | Route::Usage | Route::Routing => ErrorShape::OpenAi,
    };
    match (&route, method) {
        (Route::Post(_), "POST") => {}
        (Route::Post(_), _) => return Head::Reply(method_not_allowed(shape, method, "POST")),
        (Route::Models | Route::Model(_) | Route::Usage | Route::Routing, "GET" | "HEAD") => {}
        (_, _) => return Head::Reply(method_not_allowed(shape, method, "GET")),
    }
    let (caller, via) = match auth::identify(cfg, view) {
        Ok(c) => c,
        Err(e) => return Head::Reply(shape.reply(e)),
    };
    let c = &cfg.callers[caller];
    match route {
        Route::Routing if !c.admin => Head::Reply(
            shape.reply(
                ApiError::new(
                    403,
                    "permission_error",
                    "Only admin callers may read the routing state.",
                )
                .code("not_admin"),
            ),
        ),
        Route::Routing => Head::Routing,
        Route::Usage => Head::Usage {
            caller,
            query: path_query(raw_path).to_string(),
        },
        Route::Models => {
            let data = cfg
                .models
                .iter()
                .filter(|m| c.may_use(&m.name))
                .map(|m| model_object(cfg, m))
                .collect();
            Head::Reply(json_reply(
                200,
                &ModelList {
                    object: "list",
                    data,
                },
            ))
        }
        Route::Model(id) => {
            let id = decode(id);
            match cfg.model(&id).filter(|m| c.may_use(&m.name)) {
                Some(m) => Head::Reply(json_reply(200, &model_object(cfg, m))),
                None => Head::Reply(ApiError::model_not_found(&id).into()),
            }
        }
        Route::Post(endpoint) => {
            if let Some(ct) = view.header("content-type") {
                if !json_content_type(&ct) {
                    return Head::Reply(
                        shape.reply(
                            ApiError::new(
                                415,
                                "invalid_request_error",
                                format!(
                                    "Unsupported content-type `{}`: send the body as application/json.",
                                    error::echo(&ct)
                                ),
                            )
                            .code("unsupported_media_type"),
                        ),
                    );
                }
            }
            if let Some(len) = view
                .header("content-length")
                .and_then(|l| l.trim().parse::<u64>().ok())
            {
                if len > cfg.max_body_bytes as u64 {
                    return Head::Reply(shape.reply(too_large(cfg)));
                }
            }
            if end_of_stream {
                return Head::Reply(
                    shape.reply(
                        ApiError::invalid("The request body is empty: send a JSON object.")
                            .code("invalid_json"),
                    ),
                );
            }
            let client_headers = if endpoint.is_anthropic() {
                anthropic_messages::CLIENT_HEADERS
                    .iter()
                    .filter_map(|h| view.header(h).map(|v| (h.to_string(), v)))
                    .collect()
            } else {
                Vec::new()
            };
            Head::NeedBody(Pending {
                caller,
                via,
                endpoint,
                client_headers,
            })
        }
    }
}

pub fn too_large(cfg: &Config) -> ApiError {
    ApiError::new(
        413,
        "invalid_request_error",
        format!(
            "The request body is larger than this gateway's limit of {} bytes.",
            cfg.max_body_bytes
        ),
    )
    .code("request_too_large")
}

/// The 413 for a body found too large while it is buffered, in the shape
/// of the endpoint's API.
pub fn too_large_for(cfg: &Config, endpoint: Endpoint) -> Reply {
    ErrorShape::for_endpoint(endpoint).reply(too_large(cfg))
}

fn endpoint_kind(e: Endpoint) -> ModelKind {
    match e {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => ModelKind::Chat,
        Endpoint::Completions => ModelKind::Completion,
        Endpoint::Embeddings => ModelKind::Embedding,
    }
}

/// Decide once the whole body is there.
pub fn on_request_body(cfg: &Config, pending: &Pending, body: &[u8]) -> Result<Forward, Reply> {
    let shape = ErrorShape::for_endpoint(pending.endpoint);
    let fail = |e: ApiError| shape.reply(e);
    if body.len() > cfg.max_body_bytes {
        return Err(fail(too_large(cfg)));
    }
    let req = ClientRequest::parse(pending.endpoint, body).map_err(fail)?;
    let caller = &cfg.callers[pending.caller];
    let model_idx = match &req.model {
        Some((name, _)) => cfg
            .model_index
            .get(name.as_str())
            .copied()
            .filter(|&i| caller.may_use(&cfg.models[i].name)),
        // The default model only stands in where it can serve the endpoint.
        None => match cfg.default_model {
            Some(i)
                if caller.may_use(&cfg.models[i].name)
                    && cfg.models[i].kind == endpoint_kind(pending.endpoint) =>
            {
                Some(i)
            }
            _ => return Err(fail(ApiError::missing_param("model"))),
        },
    };
    let Some(model_idx) = model_idx else {
        let name = req.model.as_ref().map(|m| m.0.as_str()).unwrap_or("");
        return Err(fail(ApiError::model_not_found(name)));
    };
    let model_idx = context_window(cfg, model_idx, pending.endpoint, body).map_err(fail)?;
    let model = &cfg.models[model_idx];
    let want = endpoint_kind(pending.endpoint);
    if model.kind != want {
        return Err(fail(ApiError::invalid_param(
            "model",
            "model_not_supported",
            format!(
                "`{}` is {} model and cannot be used with {}{}.",
                model.name,
                match model.kind {
                    ModelKind::Chat => "a chat",
                    ModelKind::Completion => "a completion",
                    ModelKind::Embedding => "an embedding",
                },
                cfg.path_prefix,
                pending.endpoint.suffix()
            ),
        )));
    }
    let reserve = (pending.endpoint != Endpoint::CountTokens)
        .then(|| reservation(cfg, model, &req, body.len()));
    let mut f = if model.deployments.is_empty() {
        build(cfg, pending, &req, model_idx, None)?
    } else {
        // The first deployment that can take the request (the others are
        // checked when the glue plans the attempts).
        let mut first_err = None;
        let mut found = None;
        for &d in &model.deployments {
            match build(cfg, pending, &req, model_idx, Some(d)) {
                Ok(f) => {
                    found = Some(f);
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (found, first_err) {
            (Some(mut f), _) => {
                f.routed = true;
                f
            }
            (None, Some(e)) => return Err(e),
            (None, None) => return Err(fail(ApiError::model_not_found(&model.name))),
        }
    };
    f.reserve = reserve;
    Ok(f)
}

/// The request for `model` as deployment `deployment` (or the model's own
/// provider) serves it.
fn build(
    cfg: &Config,
    pending: &Pending,
    req: &ClientRequest<'_>,
    model_idx: usize,
    deployment: Option<usize>,
) -> Result<Forward, Reply> {
    let shape = ErrorShape::for_endpoint(pending.endpoint);
    let deployed;
    let model = match deployment {
        Some(d) => {
            deployed = cfg.models[model_idx].deployed(&cfg.deployments[d]);
            &deployed
        }
        None => &cfg.models[model_idx],
    };
    let mut f = if pending.endpoint.is_anthropic() {
        anthropic_messages::forward(cfg, pending, req, model_idx, model)?
    } else {
        let provider = cfg.provider(model);
        let upstream = provider
            .build_request(req, model)
            .map_err(|e| shape.reply(e))?;
        let translator = provider.response_translator(req);
        Forward {
            cluster: provider.common().cluster.clone(),
            upstream,
            bearer_from_shared: cfg.bearer_key(model.provider),
            reserve: None,
            routed: false,
            exchange: Exchange::new(
                model.provider,
                model_idx,
                pending.caller,
                req.stream,
                translator,
                shape,
            ),
        }
    };
    f.exchange.deployment = deployment;
    Ok(f)
}

/// Attempt `deployment` of a routed request: the request translated for
/// its provider (the upstream filter, once per attempt), or the answer
/// handling for the deployment that answered (the downstream filter).
/// `model_idx` is the model the downstream filter resolved (context-window
/// fallback included); the deployment may be a fallback model's.
pub fn forward_for(
    cfg: &Config,
    pending: &Pending,
    body: &[u8],
    model_idx: usize,
    deployment: usize,
) -> Result<Forward, Reply> {
    let shape = ErrorShape::for_endpoint(pending.endpoint);
    let req = ClientRequest::parse(pending.endpoint, body).map_err(|e| shape.reply(e))?;
    let d = cfg
        .deployments
        .get(deployment)
        .ok_or_else(|| shape.reply(ApiError::model_not_found("")))?;
    let mut f = build(cfg, pending, &req, d.model, Some(deployment))?;
    // Prices and quotas stay the asked model's.
    f.exchange.model = model_idx;
    f.routed = true;
    Ok(f)
}

/// The model that serves this prompt: `model_idx`, or its
/// `context_window_fallback` when the prompt (see [`prompt_tokens`]) is
/// larger than its `context_window`; without a fallback, a 400
/// `context_length_exceeded`.
fn context_window(
    cfg: &Config,
    model_idx: usize,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<usize, ApiError> {
    // Most prompts are far below the window even counted at a token per 4
    // bytes of body: only a large body is looked at closely.
    let mut estimate: Option<u64> = None;
    let mut idx = model_idx;
    // A chain of fallbacks, each larger (checked at configuration time).
    for _ in 0..=cfg.models.len() {
        let m = &cfg.models[idx];
        let Some(window) = m.context_window else {
            return Ok(idx);
        };
        if endpoint == Endpoint::CountTokens || (body.len() / 4) as u64 <= u64::from(window) {
            return Ok(idx);
        }
        let estimate = *estimate.get_or_insert_with(|| prompt_tokens(body));
        if estimate <= u64::from(window) {
            return Ok(idx);
        }
        match m.context_fallback {
            Some(next) => idx = next,
            None => {
                return Err(ApiError::invalid_param(
                    "messages",
                    "context_length_exceeded",
                    format!(
                        "This model's maximum context length is {window} tokens. However, your \
                         messages resulted in about {estimate} tokens (estimated from the request \
                         size). Please reduce the length of the messages."
                    ),
                ))
            }
        }
    }
    Ok(idx)
}

/// A prompt's size in tokens, estimated at 4 bytes a token of its text: the
/// body's strings and keys, without blobs (strings over 256 bytes without
/// any whitespace: base64 images, audio and files, whose token cost is not
/// their size).
pub fn prompt_tokens(body: &[u8]) -> u64 {
    fn walk(v: &serde_json::Value, n: &mut usize) {
        match v {
            serde_json::Value::String(s) => {
                if s.len() <= 256 || s.bytes().any(|b| b.is_ascii_whitespace()) {
                    *n += s.len();
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    *n += k.len();
                    walk(x, n);
                }
            }
            _ => *n += 2,
        }
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let mut n = 0;
            walk(&v, &mut n);
            (n / 4) as u64
        }
        Err(_) => (body.len() / 4) as u64,
    }
}

/// What a request reserves against token and spend quotas: the answer's
/// bound (`max_completion_tokens` / `max_tokens` × `n`, else the model's
/// `reserve_tokens`, else `quotas.default_reserve_tokens`; nothing for
/// embeddings) plus a prompt estimate from the body size.
fn reservation(
    cfg: &Config,
    model: &crate::config::Model,
    req: &ClientRequest<'_>,
    body_len: usize,
) -> crate::quota::Ask {
    let int = |name: &str| {
        req.field(name)
            .and_then(|v| serde_json::from_str::<u64>(v.get()).ok())
    };
    let completion = if model.kind == ModelKind::Embedding {
        0
    } else {
        let per_choice = int("max_completion_tokens")
            .or_else(|| int("max_tokens"))
            .or(model.reserve_tokens)
            .unwrap_or_else(|| {
                cfg.quotas
                    .as_ref()
                    .map(|q| q.default_reserve_tokens)
                    .unwrap_or(crate::quota::DEFAULT_RESERVE_TOKENS)
            });
        per_choice.saturating_mul(int("n").unwrap_or(1).max(1))
    };
    crate::quota::reservation(&model.price, body_len, completion)
}

impl Exchange {
    /// The answer handling of a forwarded request; errors are mapped into
    /// `shape`.
    pub fn new(
        provider: usize,
        model: usize,
        caller: usize,
        stream: bool,
        translator: Box<dyn ResponseTranslator>,
        shape: ErrorShape,
    ) -> Self {
        Exchange {
            provider,
            model,
            caller,
            stream,
            translator,
            error: None,
            mapped_status: None,
            mapped_retry_after: None,
            shape,
            deployment: None,
        }
    }

    /// The answer's headers arrived. `from_upstream` is false when Envoy
    /// made the answer itself (no healthy upstream, timeout, reset).
    pub fn on_response_head(
        &mut self,
        cfg: &Config,
        status: u16,
        from_upstream: bool,
    ) -> ResponseHead {
        let p = cfg.providers[self.provider].common();
        let upstream = match self.deployment.and_then(|d| cfg.deployments.get(d)) {
            Some(d) => d.upstream.clone(),
            None => cfg.models[self.model].upstream.clone(),
        };
        let mut head = ResponseHead {
            set: vec![
                ("x-llm-provider".into(), p.name.clone()),
                ("x-llm-provider-kind".into(), p.kind.as_str().into()),
                ("x-llm-model".into(), upstream),
            ],
            ..ResponseHead::default()
        };
        if let Some(ErrorKind::GlobalLimit(_)) = self.error {
            if status != 429 {
                head.status = Some(429);
            }
            head.set
                .push(("content-type".into(), "application/json".into()));
            head.remove.push("content-length");
            head.buffer = true;
            return head;
        }
        if status >= 400 || !from_upstream {
            self.error = Some(if from_upstream {
                ErrorKind::Provider(status)
            } else {
                ErrorKind::Envoy(status)
            });
            let out = if from_upstream {
                cfg.providers[self.provider].response_status(status)
            } else if status >= 400 {
                status
            } else {
                502
            };
            if out != status {
                head.status = Some(out);
            }
            head.set
                .push(("content-type".into(), "application/json".into()));
            head.remove.push("content-length");
            head.buffer = true;
            return head;
        }
        head.remove.push("content-length");
        if let Some(ct) = self.translator.content_type() {
            head.set.push(("content-type".into(), ct.into()));
        }
        // Non-streamed answers are held whole when the provider must rewrite
        // them, and OpenAI-shaped chat/completions answers to check them (a
        // broken one becomes a 502, not a 200); embeddings go out as they
        // arrive (they can be far larger than max_body_bytes).
        head.buffer = !self.stream && self.translator.needs_whole_body();
        head
    }

    /// A chunk of a streamed (not buffered) answer.
    pub fn on_stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        if !self.stream {
            // A non-streamed answer forwarded as it arrives (see on_response_head).
            self.translator.body_chunk(chunk, end_of_stream);
            return None;
        }
        self.translator.stream_chunk(chunk, end_of_stream)
    }

    /// The whole buffered answer.
    pub fn on_full_body(&mut self, cfg: &Config, body: &[u8]) -> Option<Vec<u8>> {
        match self.error {
            Some(ErrorKind::Provider(s)) => {
                let e = cfg.providers[self.provider].map_error(s, body);
                // The body can say more than the status (Gemini answers a
                // bad key with 400 API_KEY_INVALID): the mapped status wins.
                self.mapped_status = Some(e.status);
                self.mapped_retry_after = e.retry_after;
                Some(self.shape.body(&e))
            }
            Some(ErrorKind::Envoy(s)) => {
                let name = &cfg.providers[self.provider].common().name;
                Some(
                    self.shape
                        .body(&error::map_envoy_local_reply(name, s, body)),
                )
            }
            Some(ErrorKind::GlobalLimit(wait)) => {
                let mut e = ApiError::new(
                    429,
                    "rate_limit_exceeded",
                    "Rate limit reached: the gateway's global rate limit service refused this \
                     request (a limit shared by every gateway replica). Please try again later.",
                )
                .code("rate_limit_exceeded");
                e.retry_after = Some(wait.unwrap_or(1).max(1));
                self.mapped_status = Some(429);
                self.mapped_retry_after = e.retry_after;
                Some(self.shape.body(&e))
            }
            None => self.translator.full_body(body),
        }
    }

    /// The answer is Envoy's rate limit filter refusing the request (global
    /// mode; `x-envoy-ratelimited`), with the service's wait in seconds if
    /// it gave one. Call before `on_response_head`.
    pub fn refused_by_global_limit(&mut self, wait_seconds: Option<u64>) {
        self.error = Some(ErrorKind::GlobalLimit(wait_seconds));
    }

    /// The provider answered with this error status.
    pub fn provider_error(&self) -> Option<u16> {
        match self.error {
            Some(ErrorKind::Provider(s)) => Some(s),
            _ => None,
        }
    }

    /// The answer is an error (the provider's, Envoy's or the gateway's),
    /// as far as it is known.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.translator.status().is_some_and(|s| s >= 400)
    }

    /// The status a translated whole-body answer must carry instead of the
    /// provider's 2xx (see `ResponseTranslator::status`).
    pub fn status_override(&self) -> Option<u16> {
        match self.error {
            None => self.translator.status(),
            Some(_) => self.mapped_status,
        }
    }

    /// The reply for a provider answer that must be read whole (translated
    /// or an error) but is larger than `max_body_bytes`: a 502 the filter
    /// sends itself, before Envoy's own buffer limit answers a bare
    /// `500 Internal Server Error` (text/plain).
    pub fn response_too_large(&self, cfg: &Config) -> Reply {
        let name = &cfg.providers[self.provider].common().name;
        self.shape.reply(ApiError::server(
            502,
            "upstream_response_too_large",
            format!(
                "The answer of provider {name} is larger than this gateway's limit of {} bytes.",
                cfg.max_body_bytes
            ),
        ))
    }

    /// A `retry-after` (seconds) found in a provider error's body.
    pub fn retry_after(&self) -> Option<u64> {
        self.mapped_retry_after
    }

    pub fn usage(&self) -> Option<Usage> {
        self.translator.usage()
    }

    /// The provider's response headers (`get` looks one up by lower-case
    /// name); call before `on_response_head`.
    pub fn response_headers(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        self.translator.response_headers(get);
    }

    /// The current time (Unix seconds), for the `created` field of answers
    /// the gateway translates (e.g. Anthropic's); call before the body.
    pub fn set_created(&mut self, unix_seconds: u64) {
        self.translator.set_created(unix_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake(HashMap<String, String>);
    impl RequestView for Fake {
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
                {{"name":"az","kind":"azure","cluster":"azure","host":"x.openai.azure.com","options":{{"api_version":"2024-10-21"}}}}],
            "models":[{{"name":"gpt-4o","aliases":["gpt4"],"provider":"oai","upstream_model":"gpt-4o-2024-08-06"}},
                      {{"name":"az-4o","provider":"az","upstream_model":"my-dep_1.x"}},
                      {{"name":"emb","provider":"oai","kind":"embedding"}},
                      {{"name":"secret-model","provider":"oai"}}],
            "default_model":"gpt-4o",
            "callers":[{{"id":"a","key_sha256":"{}","models":["gpt-*","az-*","emb"]}}]}}"#,
            hex(auth::key_digest("k"))
        );
        Config::parse(doc.as_bytes(), &|_| None).unwrap()
    }

    fn authed() -> Fake {
        Fake(
            [("authorization".to_string(), "Bearer k".to_string())]
                .into_iter()
                .collect(),
        )
    }

    fn reply(h: Head) -> Reply {
        match h {
            Head::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn err_code(r: &Reply) -> String {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["error"]["code"].as_str().unwrap_or("").to_string()
    }

    #[test]
    fn routing_and_methods() {
        let c = cfg();
        assert!(matches!(
            on_request_head(&c, &authed(), "GET", "/healthz", true),
            Head::PassThrough
        ));
        assert!(matches!(
            on_request_head(&c, &authed(), "GET", "/v1x", true),
            Head::PassThrough
        ));
        let r = reply(on_request_head(&c, &authed(), "POST", "/v1/nope", false));
        assert_eq!((r.status, err_code(&r)), (404, "unknown_url".into()));
        let r = reply(on_request_head(
            &c,
            &authed(),
            "GET",
            "/v1/chat/completions",
            true,
        ));
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow".into(), "POST".into())));
        let r = reply(on_request_head(&c, &authed(), "DELETE", "/v1/models", true));
        assert_eq!(r.status, 405);
        assert!(matches!(
            on_request_head(&c, &authed(), "POST", "/v1/chat/completions?x=1", false),
            Head::NeedBody(_)
        ));
    }

    #[test]
    fn models_list_only_allowed() {
        let c = cfg();
        let r = reply(on_request_head(&c, &authed(), "GET", "/v1/models", true));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "az-4o", "emb"]);
        assert_eq!(v["data"][1]["owned_by"], "azure");
        let r = reply(on_request_head(
            &c,
            &authed(),
            "GET",
            "/v1/models/gpt4",
            true,
        ));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"],
            "gpt-4o"
        );
        let r = reply(on_request_head(
            &c,
            &authed(),
            "GET",
            "/v1/models/secret-model",
            true,
        ));
        assert_eq!(r.status, 404);
    }

    #[test]
    fn auth_first() {
        let c = cfg();
        let r = reply(on_request_head(
            &c,
            &Fake::default(),
            "GET",
            "/v1/models",
            true,
        ));
        assert_eq!(r.status, 401);
    }

    #[test]
    fn content_checks() {
        let c = cfg();
        let mut v = authed();
        v.0.insert(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        );
        assert_eq!(
            reply(on_request_head(
                &c,
                &v,
                "POST",
                "/v1/chat/completions",
                false
            ))
            .status,
            415
        );
        let mut v = authed();
        v.0.insert("content-length".into(), "999999999".into());
        assert_eq!(
            reply(on_request_head(
                &c,
                &v,
                "POST",
                "/v1/chat/completions",
                false
            ))
            .status,
            413
        );
        assert_eq!(
            reply(on_request_head(
                &c,
                &authed(),
                "POST",
                "/v1/chat/completions",
                true
            ))
            .status,
            400
        );
    }

    fn pending(e: Endpoint) -> Pending {
        Pending {
            caller: 0,
            via: Via::Key,
            endpoint: e,
            client_headers: Vec::new(),
        }
    }

    #[test]
    fn forward_openai_with_alias() {
        let c = cfg();
        let f = on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            br#"{"model":"gpt4","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(f.cluster, "openai");
        assert_eq!(f.upstream.path, "/v1/chat/completions");
        assert_eq!(f.upstream.authority, "api.openai.com");
        assert_eq!(
            f.upstream.body,
            br#"{"model":"gpt-4o-2024-08-06","messages":[{"role":"user","content":"hi"}]}"#
        );
    }

    #[test]
    fn forward_azure_and_default_model() {
        let c = cfg();
        let f = on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            br#"{"model":"az-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(
            f.upstream.path,
            "/openai/deployments/my-dep_1.x/chat/completions?api-version=2024-10-21"
        );
        let f = on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(f.exchange.model, 0);
    }

    #[test]
    fn context_window_fallback_and_exceeded() {
        let doc = format!(
            r#"{{"providers":[{{"name":"oai","kind":"openai","cluster":"openai"}},
                {{"name":"az","kind":"azure","cluster":"azure","host":"x.openai.azure.com"}}],
            "models":[{{"name":"small","provider":"oai","context_window":50,"context_window_fallback":"mid"}},
                      {{"name":"mid","provider":"oai","upstream_model":"gpt-4.1","context_window":200,
                        "context_window_fallback":"big"}},
                      {{"name":"big","deployments":[{{"provider":"az","upstream_model":"huge","endpoint":"127.0.0.1:9"}}],
                        "context_window":100000}},
                      {{"name":"tight","provider":"oai","context_window":50}}],
            "callers":[{{"id":"a","key_sha256":"{}","models":["small","tight"]}}]}}"#,
            hex(auth::key_digest("k"))
        );
        let c = Config::parse(doc.as_bytes(), &|_| None).unwrap();
        let chat = |model: &str, text: &str| {
            let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
            on_request_body(
                &c,
                &pending(Endpoint::ChatCompletions),
                body.to_string().as_bytes(),
            )
        };
        let words = |n: usize| "word ".repeat(n);
        // Fits: the model itself.
        let f = chat("small", "hi").ok().unwrap();
        assert_eq!((f.exchange.model, f.routed), (0, false));
        // ~100 tokens: the next model; ~500: the one after (routed), even
        // though the caller may only name `small`.
        let f = chat("small", &words(80)).ok().unwrap();
        assert_eq!(f.exchange.model, 1);
        assert!(String::from_utf8_lossy(&f.upstream.body).contains("gpt-4.1"));
        let f = chat("small", &words(400)).ok().unwrap();
        assert_eq!((f.exchange.model, f.routed), (2, true));
        // No fallback: 400 context_length_exceeded on `messages`.
        let r = chat("tight", &words(80)).err().unwrap();
        assert_eq!(r.status, 400);
        let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(e["error"]["code"], "context_length_exceeded");
        assert_eq!(e["error"]["param"], "messages");
        // An inline image is a blob, not 100 000 tokens of text.
        let img = format!("data:image/png;base64,{}", "A".repeat(400_000));
        let body = serde_json::json!({"model": "tight", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": img}}]}]});
        assert!(on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            body.to_string().as_bytes()
        )
        .is_ok());
        assert_eq!(prompt_tokens(b"not json at all"), 3);
    }

    #[test]
    fn model_errors() {
        let c = cfg();
        let chat = |b: &str| {
            on_request_body(&c, &pending(Endpoint::ChatCompletions), b.as_bytes())
                .err()
                .unwrap()
        };
        let r = chat(r#"{"model":"nope","messages":[{"role":"user"}]}"#);
        assert_eq!((r.status, err_code(&r)), (404, "model_not_found".into()));
        let r = chat(r#"{"model":"secret-model","messages":[{"role":"user"}]}"#);
        assert_eq!((r.status, err_code(&r)), (404, "model_not_found".into()));
        let r = chat(r#"{"model":"emb","messages":[{"role":"user"}]}"#);
        assert_eq!(
            (r.status, err_code(&r)),
            (400, "model_not_supported".into())
        );
        let r = chat(r#"{"model":"gpt-4o","messages":[{"role":"user"}],"top_k":2}"#);
        assert_eq!((r.status, err_code(&r)), (400, "unknown_parameter".into()));
        let long = format!(
            r#"{{"model":"{}","messages":[{{"role":"user"}}]}}"#,
            "x".repeat(5000)
        );
        let r = chat(&long);
        assert_eq!(r.status, 404);
        assert!(r.body.len() < 1000);
    }

    #[test]
    fn response_error_mapping() {
        let c = cfg();
        let mut f = on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            br#"{"model":"gpt-4o","messages":[{"role":"user"}]}"#,
        )
        .ok()
        .unwrap();
        let h = f.exchange.on_response_head(&c, 401, true);
        assert_eq!(h.status, Some(502));
        assert!(h.buffer);
        let body = f
            .exchange
            .on_full_body(
                &c,
                br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz"}}"#,
            )
            .unwrap();
        assert!(!String::from_utf8(body).unwrap().contains("sk-abc"));
        let mut f = on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            br#"{"model":"gpt-4o","messages":[{"role":"user"}],"stream":true}"#,
        )
        .ok()
        .unwrap();
        let h = f.exchange.on_response_head(&c, 200, true);
        assert!(!h.buffer);
        assert!(h
            .set
            .contains(&("x-llm-model".into(), "gpt-4o-2024-08-06".into())));
        let mut f = on_request_body(
            &c,
            &pending(Endpoint::ChatCompletions),
            br#"{"model":"gpt-4o","messages":[{"role":"user"}]}"#,
        )
        .ok()
        .unwrap();
        let h = f.exchange.on_response_head(&c, 503, false);
        assert_eq!(h.status, None);
        let body = f.exchange.on_full_body(&c, b"no healthy upstream").unwrap();
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("upstream_unavailable"));
    }
}
