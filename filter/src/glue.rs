//! The only module that talks to Envoy (proxy-wasm). It moves headers and
//! bytes between Envoy and the pure pipeline in [`crate::gateway`].
//!
//! Host calls go through `hostcalls` with their `Result`s handled, never
//! through the SDK's convenience methods that unwrap, and header values are
//! read as bytes (a non-UTF-8 header must not panic the VM). Headers are
//! only touched in the phase they belong to.

use crate::auth::RequestView;
use crate::config::Config;
use crate::error::ApiError;
use crate::gateway::{self, Exchange, Head, Pending, Reply};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None }) });
}}

struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            _ => {
                log::error!("llm-gateway: no plugin configuration given");
                self.config = None;
                return false;
            }
        };
        match Config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(c) => {
                log::info!(
                    "llm-gateway: configured {} providers, {} models, {} callers",
                    c.providers.len(),
                    c.models.len(),
                    c.callers.len()
                );
                self.config = Some(Rc::new(c));
                true
            }
            Err(e) => {
                // Fail closed: Envoy rejects the configuration; a filter
                // without a valid config answers 503, never unauthenticated.
                log::error!("llm-gateway: invalid configuration: {e}");
                self.config = None;
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            config: self.config.clone(),
            state: State::Idle,
            request_id: None,
            buffer_response: false,
            held_response_headers: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

enum State {
    Idle,
    PassThrough,
    Replied,
    AwaitBody(Pending),
    Forwarded(Box<Exchange>),
}

struct Http {
    config: Option<Rc<Config>>,
    state: State,
    request_id: Option<String>,
    buffer_response: bool,
    /// The response headers wait for the body (see on_http_response_headers).
    held_response_headers: bool,
}

/// Request headers and properties, read while the request headers are
/// current (only used in the request-headers phase).
struct Host;

fn header(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(Some(b)) => String::from_utf8(b).ok(),
        _ => None,
    }
}

fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if let Err(e) = hostcalls::set_map_value(map, name, value) {
        log::warn!("llm-gateway: could not set header {name}: {e:?}");
    }
}

/// The host clock, Unix seconds (0 if the host cannot tell).
fn now_unix_seconds() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RequestView for Host {
    fn header(&self, name: &str) -> Option<String> {
        header(MapType::HttpRequestHeaders, name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
}

impl Http {
    fn reply(&mut self, r: Reply) -> Action {
        let mut headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(id) = &self.request_id {
            headers.push(("x-request-id", id.as_str()));
        }
        if let Err(e) = hostcalls::send_http_response(u32::from(r.status), headers, Some(&r.body)) {
            log::warn!("llm-gateway: could not send a local reply: {e:?}");
        }
        self.state = State::Replied;
        Action::Pause
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            self.request_id = header(MapType::HttpRequestHeaders, "x-request-id");
            return self.reply(
                ApiError::server(
                    503,
                    "gateway_not_configured",
                    "The gateway has no valid configuration.",
                )
                .into(),
            );
        };
        // Nobody but the filter may choose the provider cluster.
        set_header(MapType::HttpRequestHeaders, &cfg.cluster_header, None);
        let method = header(MapType::HttpRequestHeaders, ":method").unwrap_or_default();
        let path = header(MapType::HttpRequestHeaders, ":path").unwrap_or_default();
        self.request_id = header(MapType::HttpRequestHeaders, "x-request-id");
        match gateway::on_request_head(&cfg, &Host, &method, &path, end_of_stream) {
            Head::PassThrough => {
                self.state = State::PassThrough;
                Action::Continue
            }
            Head::Reply(r) => self.reply(r),
            Head::NeedBody(p) => {
                for h in gateway::STRIP_REQUEST_HEADERS
                    .iter()
                    .copied()
                    .chain(cfg.identity_headers())
                {
                    set_header(MapType::HttpRequestHeaders, h, None);
                }
                self.state = State::AwaitBody(p);
                // Hold the headers until the body has chosen the provider: the
                // router picks the cluster when it sees the headers, and a
                // header set later does not move the request (checked on Envoy
                // 1.40). Needs `allow_on_headers_stop_iteration: true` in the
                // plugin config, or Envoy never delivers the body (see README).
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let State::AwaitBody(pending) = &self.state else {
            return Action::Continue;
        };
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        if body_size > cfg.max_body_bytes {
            // In the shape of the endpoint's API (Anthropic's on /messages).
            let r = gateway::too_large_for(&cfg, pending.endpoint);
            return self.reply(r);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let pending = pending.clone();
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        };
        let forward = gateway::on_request_body(&cfg, &pending, &body)
            .and_then(|mut f| f.sign(&cfg, now_unix_seconds()).map(|()| f));
        match forward {
            Err(r) => self.reply(r),
            Ok(f) => {
                let m = MapType::HttpRequestHeaders;
                set_header(m, ":path", Some(&f.upstream.path));
                set_header(m, ":authority", Some(&f.upstream.authority));
                for (k, v) in &f.upstream.headers {
                    set_header(m, k, Some(v));
                }
                set_header(m, "content-type", Some("application/json"));
                set_header(
                    m,
                    "content-length",
                    Some(&f.upstream.body.len().to_string()),
                );
                // The route (`cluster_header`) is resolved when the headers continue.
                set_header(m, &cfg.cluster_header, Some(&f.cluster));
                if f.upstream.body != body {
                    if let Err(e) = hostcalls::set_buffer(
                        BufferType::HttpRequestBody,
                        0,
                        body_size,
                        &f.upstream.body,
                    ) {
                        log::warn!("llm-gateway: could not replace the request body: {e:?}");
                    }
                }
                self.state = State::Forwarded(Box::new(f.exchange));
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        let State::Forwarded(ex) = &mut self.state else {
            return Action::Continue;
        };
        let m = MapType::HttpResponseHeaders;
        let status = header(m, ":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        let from_upstream = hostcalls::get_property(vec!["response", "code_details"])
            .ok()
            .flatten()
            .map(|d| d == b"via_upstream")
            .unwrap_or(true);
        ex.set_created(now_unix_seconds());
        ex.response_headers(&|name| header(m, name));
        let head = ex.on_response_head(&cfg, status, from_upstream);
        // The provider's own request id (OpenAI: x-request-id, Anthropic:
        // request-id, AWS: x-amzn-requestid).
        if let Some(upstream_id) = header(m, "x-request-id")
            .or_else(|| header(m, "request-id"))
            .or_else(|| header(m, "x-amzn-requestid"))
        {
            set_header(m, "x-llm-upstream-request-id", Some(&upstream_id));
        }
        if let Some(id) = &self.request_id {
            set_header(m, "x-request-id", Some(id));
        }
        if end_of_stream && (status >= 400 || !from_upstream) {
            // An error without a body: answer with the mapped error instead
            // (Envoy replaces the response; its headers have not gone out).
            let body = ex.on_full_body(&cfg, &[]).unwrap_or_default();
            let mut headers: Vec<(String, String)> = head.set.clone();
            for h in ["retry-after", "retry-after-ms"] {
                if let Some(v) = header(m, h) {
                    headers.push((h.to_string(), v));
                }
            }
            let status = head.status.unwrap_or(status);
            return self.reply(Reply {
                status,
                headers,
                body,
            });
        }
        for (k, v) in &head.set {
            set_header(m, k, Some(v));
        }
        if !end_of_stream {
            if let Some(s) = head.status {
                set_header(m, ":status", Some(&s.to_string()));
            }
            for k in &head.remove {
                set_header(m, k, None);
            }
        }
        self.buffer_response = head.buffer;
        if head.buffer && !end_of_stream && status < 400 && from_upstream {
            // A whole answer the provider translates: hold its headers until
            // the body is read, so a translation that turns it into an error
            // (a blocked prompt, an unreadable answer) can set the status.
            self.held_response_headers = true;
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        let State::Forwarded(ex) = &mut self.state else {
            return Action::Continue;
        };
        if self.buffer_response {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            if let Some(new) = ex.on_full_body(&cfg, &body) {
                if let Err(e) =
                    hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &new)
                {
                    log::warn!("llm-gateway: could not replace the response body: {e:?}");
                }
            }
            if self.held_response_headers {
                if let Some(s) = ex.status_override() {
                    set_header(
                        MapType::HttpResponseHeaders,
                        ":status",
                        Some(&s.to_string()),
                    );
                }
            }
            return Action::Continue;
        }
        let chunk = if body_size > 0 {
            hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if let Some(new) = ex.on_stream_chunk(&chunk, end_of_stream) {
            if let Err(e) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &new)
            {
                log::warn!("llm-gateway: could not replace a stream chunk: {e:?}");
            }
        }
        Action::Continue
    }
}
