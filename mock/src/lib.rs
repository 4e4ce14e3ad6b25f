//! `llm-mock`: a fast, faithful mock of LLM provider HTTP APIs.
//!
//! One server answers for several providers, told apart by path prefix:
//!
//! | prefix | provider | module |
//! |---|---|---|
//! | `/v1/...` (and anything unknown) | OpenAI | [`openai`] |
//! | `/openai/...` | Azure OpenAI | [`azure`] |
//! | `/ollama/v1/...` | Ollama (OpenAI-compatible API) | [`openai`] |
//! | `/vllm/v1/...` | vLLM (OpenAI-compatible API) | [`openai`] |
//! | `/v1/messages[/...]`, `/anthropic/...` | Anthropic Messages API | [`anthropic`] |
//! | `/v1beta/...`, `/v1/models/{m}:{method}`, `/gemini/...` | Gemini API (AI Studio) | [`gemini`] |
//! | `/v1/projects/...`, `/v1beta1/projects/...`, `/vertex/...` | Vertex AI | [`gemini`] |
//! | `/model/...`, `/bedrock/...` | Bedrock runtime | [`bedrock`] |
//! | `/computeMetadata/v1/...` | GCE/GKE metadata server (access token) | [`metadata`] |
//! | `/__mock/...` | control endpoints (health, recorded requests, fault rules) | here |
//!
//! Faults are injected per request with the `x-mock-behavior` header or a
//! `[[mock:...]]` marker ([`behavior`]), or per deployment with fault rules
//! posted to `/__mock/faults` or given with `--fault` ([`faults`]): a rule
//! picks requests by provider route, model and host, so a gateway's retry
//! on another deployment escapes it.
//!
//! A new provider (Gemini, Bedrock, ...) is one module with an
//! `async fn handle(ctx: Ctx<'_>) -> Response<Body>`, a [`Provider`]
//! variant and one line in [`route`].

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod behavior;
pub mod body;
pub mod faults;
pub mod gemini;
pub mod metadata;
pub mod openai;
pub mod record;
pub mod schema;
pub mod sigv4;
pub mod text;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use behavior::Behavior;
pub use body::Body;

/// Largest request body accepted (bigger ones get 413).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The provider that owns a path prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Azure,
    Ollama,
    Vllm,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    GceMetadata,
}

impl Provider {
    /// Name used in replies and in the request log.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Ollama => "ollama",
            Provider::Vllm => "vllm",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Vertex => "vertex",
            Provider::Bedrock => "bedrock",
            Provider::GceMetadata => "gce_metadata",
        }
    }
}

/// Server configuration (see the CLI in `main.rs`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Accepted `Authorization: Bearer` keys on `/v1`.
    pub openai_keys: Vec<String>,
    /// Accepted `api-key` values on `/openai/deployments/...`.
    pub azure_keys: Vec<String>,
    /// Accepted bearer keys on `/vllm/v1`; empty means no auth.
    pub vllm_keys: Vec<String>,
    /// Accepted `x-api-key` (or `Authorization: Bearer`) values on the
    /// Anthropic routes.
    pub anthropic_keys: Vec<String>,
    /// Known Azure deployments.
    pub azure_deployments: Vec<String>,
    /// Accepted Gemini API keys (`x-goog-api-key` or `?key=`).
    pub gemini_keys: Vec<String>,
    /// Accepted Vertex AI bearer tokens.
    pub vertex_tokens: Vec<String>,
    /// Accepted Bedrock API keys (`Authorization: Bearer`).
    pub bedrock_api_keys: Vec<String>,
    /// Access key id whose SigV4 signatures Bedrock accepts.
    pub aws_access_key_id: String,
    /// The secret that goes with `aws_access_key_id`.
    pub aws_secret_access_key: String,
    /// How many requests `/__mock/requests` keeps (0 disables recording).
    pub record_limit: usize,
    /// Log one line per request to stderr.
    pub verbose: bool,
    /// Fault rules installed at start (`--fault`), oldest first.
    pub faults: Vec<faults::RuleSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            openai_keys: vec!["sk-mock-openai".into()],
            azure_keys: vec!["mock-azure-key".into()],
            vllm_keys: Vec::new(),
            anthropic_keys: vec![anthropic::DEFAULT_KEY.into()],
            azure_deployments: DEFAULT_AZURE_DEPLOYMENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            gemini_keys: vec![gemini::DEFAULT_KEY.into()],
            vertex_tokens: vec![gemini::DEFAULT_VERTEX_TOKEN.into()],
            bedrock_api_keys: vec![bedrock::DEFAULT_API_KEY.into()],
            aws_access_key_id: bedrock::DEFAULT_ACCESS_KEY_ID.into(),
            aws_secret_access_key: bedrock::DEFAULT_SECRET_ACCESS_KEY.into(),
            record_limit: 200,
            verbose: false,
            faults: Vec::new(),
        }
    }
}

pub const DEFAULT_AZURE_DEPLOYMENTS: [&str; 4] = [
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "gpt-35-turbo-instruct",
];

/// Shared server state.
pub struct State {
    pub config: Config,
    pub recorder: record::Recorder,
    /// Prompt-cache prefixes seen by the Anthropic routes.
    pub prompt_cache: anthropic::PromptCache,
    /// Fault rules (`/__mock/faults`).
    pub faults: faults::Faults,
    seq: AtomicU64,
    boot: u64,
}

impl State {
    pub fn new(config: Config) -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let faults = faults::Faults::default();
        for spec in &config.faults {
            faults.add(spec.clone());
        }
        State {
            recorder: record::Recorder::new(config.record_limit),
            prompt_cache: anthropic::PromptCache::default(),
            faults,
            config,
            seq: AtomicU64::new(0),
            boot,
        }
    }

    /// A fresh value for per-request unique ids (request ids, not content).
    pub fn unique(&self) -> u64 {
        self.seq
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ self.boot
    }
}

/// Everything a provider handler needs about one request.
pub struct Ctx<'a> {
    pub state: &'a State,
    /// The provider whose route the request took.
    pub provider: Provider,
    pub method: &'a Method,
    /// Full request path.
    pub path: &'a str,
    /// Path below the provider prefix (e.g. `/v1/chat/completions`).
    pub sub: &'a str,
    /// Raw query string (without `?`), empty when absent.
    pub query: &'a str,
    /// The request target's authority (HTTP/2 `:authority`, or an
    /// absolute-form HTTP/1 target), when there is one.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// Id of the fault rule that applied to this request (0: none), set by
    /// [`Ctx::behavior`].
    pub fault: &'a AtomicU64,
}

impl Ctx<'_> {
    /// The knobs of the first fault rule matching this request (which uses
    /// up one of its count), overridden key by key by the
    /// `x-mock-behavior` header; handlers apply markers on top. `model` is
    /// the model as the provider sees it (see [`faults`]).
    pub fn behavior(&self, model: Option<&str>) -> Behavior {
        let Some(applied) = self.state.faults.take(self.provider, model, self.host()) else {
            return Behavior::from_headers(self.headers);
        };
        self.fault.store(applied.id, Ordering::Relaxed);
        if self.state.config.verbose {
            eprintln!(
                "llm-mock: fault rule {} applies to {} {}",
                applied.id, self.method, self.path
            );
        }
        let mut b = applied.knobs;
        b.apply_headers(self.headers);
        b
    }

    /// The `:authority` (or absolute-form target), else the `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.authority
            .or_else(|| self.headers.get(header::HOST).and_then(|v| v.to_str().ok()))
    }

    /// Value of a query parameter (no percent-decoding needed for the
    /// parameters the mock reads).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// Maps a path to its provider and the path below the provider's prefix.
pub fn route(path: &str) -> (Provider, &str) {
    if let Some(rest) = strip_segment(path, "/ollama") {
        return (Provider::Ollama, rest);
    }
    if let Some(rest) = strip_segment(path, "/vllm") {
        return (Provider::Vllm, rest);
    }
    if strip_segment(path, "/openai").is_some() {
        return (Provider::Azure, path);
    }
    if let Some(rest) = strip_segment(path, "/anthropic") {
        return (Provider::Anthropic, rest);
    }
    if strip_segment(path, "/v1/messages").is_some() {
        return (Provider::Anthropic, path);
    }
    if let Some(rest) = strip_segment(path, "/gemini") {
        return (Provider::Gemini, rest);
    }
    if let Some(rest) = strip_segment(path, "/vertex") {
        return (Provider::Vertex, rest);
    }
    if strip_segment(path, "/computeMetadata").is_some() {
        return (Provider::GceMetadata, path);
    }
    if let Some(rest) = strip_segment(path, "/bedrock") {
        return (Provider::Bedrock, rest);
    }
    if strip_segment(path, "/model").is_some() {
        return (Provider::Bedrock, path);
    }
    if strip_segment(path, "/v1beta").is_some() || strip_segment(path, "/v1alpha").is_some() {
        return (Provider::Gemini, path);
    }
    if strip_segment(path, "/v1/projects").is_some()
        || strip_segment(path, "/v1beta1/projects").is_some()
    {
        return (Provider::Vertex, path);
    }
    if gemini::is_studio_v1_method(path) {
        return (Provider::Gemini, path);
    }
    (Provider::OpenAi, path)
}

fn strip_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serialises `v` into a JSON response.
pub fn json_value_response(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    json_response(status, serde_json::to_vec(v).unwrap_or_default())
}

/// A plain-text response.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Serves one request.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");

    if let Some(rest) = strip_segment(path, "/__mock") {
        return control(&state, &parts.method, rest, body).await;
    }

    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return json_value_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": {
                    "message": "Request body too large.",
                    "type": "invalid_request_error", "param": null, "code": null}}),
            )
        }
    };

    let (provider, sub) = route(path);
    state.recorder.record(
        provider.name(),
        &parts.method,
        path,
        query,
        &parts.headers,
        &body,
    );
    if state.config.verbose {
        eprintln!(
            "llm-mock: {} {} {}",
            provider.name(),
            parts.method,
            parts.uri
        );
    }
    let fault = AtomicU64::new(0);
    let ctx = Ctx {
        state: &state,
        provider,
        method: &parts.method,
        path,
        sub,
        query,
        authority: parts.uri.authority().map(|a| a.as_str()),
        headers: &parts.headers,
        body: &body,
        fault: &fault,
    };
    let mut resp = match provider {
        Provider::Azure => azure::handle(ctx).await,
        Provider::Anthropic => anthropic::handle(ctx).await,
        Provider::Gemini | Provider::Vertex => gemini::handle(ctx, provider).await,
        Provider::Bedrock => bedrock::handle(ctx).await,
        Provider::GceMetadata => metadata::handle(ctx),
        p => openai::handle(ctx, p).await,
    };
    let fault = fault.into_inner();
    if fault != 0 {
        resp.headers_mut()
            .insert(faults::APPLIED_HEADER, HeaderValue::from(fault));
    }
    resp
}

/// Largest fault rule accepted by `POST /__mock/faults`.
const MAX_RULE: usize = 64 * 1024;

async fn control(state: &State, method: &Method, rest: &str, body: Incoming) -> Response<Body> {
    match (method, rest) {
        (&Method::GET, "/health") | (&Method::HEAD, "/health") => {
            text_response(StatusCode::OK, "ok")
        }
        (&Method::GET, "/requests") => {
            json_value_response(StatusCode::OK, &state.recorder.to_json())
        }
        (&Method::DELETE, "/requests") => {
            let n = state.recorder.clear();
            json_value_response(StatusCode::OK, &serde_json::json!({ "cleared": n }))
        }
        (&Method::DELETE, "/cache") => {
            let n = state.prompt_cache.clear();
            json_value_response(StatusCode::OK, &serde_json::json!({ "cleared": n }))
        }
        (&Method::GET, "/faults") => json_value_response(StatusCode::OK, &state.faults.to_json()),
        (&Method::POST, "/faults") => {
            let body = match Limited::new(body, MAX_RULE).collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => {
                    let e = faults::RuleError {
                        field: None,
                        message: format!("the body is larger than {MAX_RULE} bytes"),
                    };
                    return json_value_response(StatusCode::PAYLOAD_TOO_LARGE, &e.to_json());
                }
            };
            match faults::RuleSpec::parse(&body) {
                Ok(spec) => json_value_response(StatusCode::CREATED, &state.faults.add(spec)),
                Err(e) => json_value_response(StatusCode::BAD_REQUEST, &e.to_json()),
            }
        }
        (&Method::DELETE, "/faults") => {
            let n = state.faults.clear();
            json_value_response(StatusCode::OK, &serde_json::json!({ "cleared": n }))
        }
        (_, "/health") | (_, "/requests") | (_, "/cache") | (_, "/faults") => {
            text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => match rest.strip_prefix("/faults/") {
            Some(id) => fault_rule(state, method, id),
            None => text_response(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

/// `GET` or `DELETE /__mock/faults/{id}`.
fn fault_rule(state: &State, method: &Method, id: &str) -> Response<Body> {
    let found = match id.parse::<u64>() {
        Ok(n) if *method == Method::GET => state.faults.get(n),
        Ok(n) if *method == Method::DELETE => state.faults.remove(n),
        _ if *method != Method::GET && *method != Method::DELETE => {
            return text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => None,
    };
    match found {
        Some(rule) => json_value_response(StatusCode::OK, &rule),
        None => json_value_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"field": null,
                "message": format!("no fault rule with id {id:?} (used up, deleted or never made)")}}),
        ),
    }
}

/// Accepts connections on `listener` until `shutdown` resolves.
/// HTTP/1.1 and HTTP/2 (prior knowledge, h2c) are both served.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let state = Arc::new(State::new(config));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Transient accept errors (EMFILE, ECONNABORTED...): back off briefly.
                    if e.kind() == io::ErrorKind::InvalidInput {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    let resp = handle(state, req).await;
                    // `reset=before_headers`: a service error makes hyper
                    // drop the connection (HTTP/2: reset the stream) without
                    // a response.
                    if resp
                        .extensions()
                        .get::<behavior::ResetConnection>()
                        .is_some()
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "llm-mock: connection reset before the headers on purpose",
                        ));
                    }
                    Ok::<_, io::Error>(resp)
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A server running in the background (for tests and embedding).
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ServerHandle {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (use port 0 for an ephemeral port) and serves in a
/// background task until the handle is dropped.
pub async fn start(addr: &str, config: Config) -> io::Result<ServerHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = serve(listener, config, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(ServerHandle {
        addr,
        stop: Some(tx),
    })
}
