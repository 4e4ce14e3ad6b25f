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
use crate::quota::{self, Admission, Store, StoreError};
use crate::routing::{self, Attempt, Rng, RouteCtx, XorShift};
use crate::telemetry::{self, MetricKind, Outcome};
use crate::token::{self, Cached, TokenFetch};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            config: None,
            upstream: false,
            fetches: Vec::new(),
            in_flight: Vec::new(),
            metrics: Rc::new(RefCell::new(Metrics::default())),
        })
    });
}}

struct Root {
    config: Option<Rc<Config>>,
    /// This root runs as the upstream HTTP filter of the routing cluster
    /// (`root_id: llmgw-upstream`): it translates each attempt.
    upstream: bool,
    /// Tokens this filter fetches itself (see [`crate::token`]).
    fetches: Vec<TokenFetch>,
    /// This VM's token fetches under way: (call id, index in `fetches`).
    in_flight: Vec<(u32, usize)>,
    metrics: Rc<RefCell<Metrics>>,
}

/// This VM's metric ids by name (defined on first use; Envoy shares the
/// stat itself between the VMs of all workers).
#[derive(Default)]
struct Metrics {
    ids: HashMap<String, u32>,
}

impl Metrics {
    fn apply(&mut self, u: &telemetry::Update) {
        let id = match self.ids.get(&u.name) {
            Some(&id) => id,
            None => {
                let t = match u.kind {
                    MetricKind::Counter => proxy_wasm::types::MetricType::Counter,
                    MetricKind::Gauge => proxy_wasm::types::MetricType::Gauge,
                    MetricKind::Histogram => proxy_wasm::types::MetricType::Histogram,
                };
                match hostcalls::define_metric(t, &u.name) {
                    Ok(id) => {
                        self.ids.insert(u.name.clone(), id);
                        id
                    }
                    Err(e) => {
                        log::warn!("llm-gateway: cannot define metric {}: {e:?}", u.name);
                        return;
                    }
                }
            }
        };
        let r = match u.kind {
            MetricKind::Histogram => hostcalls::record_metric(id, u.value.max(0) as u64),
            MetricKind::Counter | MetricKind::Gauge => hostcalls::increment_metric(id, u.value),
        };
        if let Err(e) = r {
            log::warn!("llm-gateway: cannot update metric {}: {e:?}", u.name);
        }
    }
}

/// A shared-data value and its compare-and-swap id (`(None, None)` when
/// absent or unreadable).
fn shared(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Envoy's shared data as the quota store (process-wide, compare-and-swap).
struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), Some(cas))) => Some((v, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Failed),
        }
    }
}

/// Request headers earlier versions set for Envoy's rate limit filter
/// (quotas' global mode now uses filter state); still never taken from a
/// client, so an old Envoy config cannot be fed spoofed descriptors.
const DESCRIPTOR_HEADERS: [&str; 3] = ["x-llmgw-caller", "x-llmgw-team", "x-llmgw-model"];
/// Filter state with the answer's tokens (`%FILTER_STATE(wasm.llmgw_tokens:PLAIN)%`).
const TOKENS_PROPERTY: &str = "llmgw_tokens";

/// Take the fetch lease at `key` if it is free: one VM of the process wins.
fn take_lease(key: &str, now: u64) -> bool {
    let (value, cas) = shared(key);
    if !token::lease_free(value.as_deref(), now) {
        return false;
    }
    hostcalls::set_shared_data(key, Some(&token::lease_value(now)), cas).is_ok()
}

/// Store a fetched token unless a newer one is there (compare-and-swap,
/// retried when another VM wrote in between).
fn store_token(key: &str, new: &Cached) -> bool {
    for _ in 0..4 {
        let (old, cas) = shared(key);
        let Some(c) = token::keep_newer(Cached::parse(old.as_deref()), new.clone()) else {
            return true;
        };
        match hostcalls::set_shared_data(key, Some(&c.format()), cas) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(_) => return false,
        }
    }
    false
}

impl Root {
    /// Start fetching the tokens that are missing or expire soon (the VM
    /// that takes a token's lease fetches it; the others skip it).
    fn refresh_tokens(&mut self) {
        let now = now_unix_seconds();
        for (i, f) in self.fetches.iter().enumerate() {
            let cached = Cached::parse(shared(&f.key).0.as_deref());
            if !token::needs_refresh(cached.as_ref(), now)
                || self.in_flight.iter().any(|&(_, j)| j == i)
                || !take_lease(&f.lease_key(), now)
            {
                continue;
            }
            let headers = vec![
                (":method", "GET"),
                (":path", f.path.as_str()),
                (":authority", f.host.as_str()),
                ("metadata-flavor", "Google"),
            ];
            let timeout = Duration::from_secs(token::FETCH_TIMEOUT_SECONDS);
            match hostcalls::dispatch_http_call(&f.cluster, headers, None, vec![], timeout) {
                Ok(id) => self.in_flight.push((id, i)),
                Err(e) => log::warn!(
                    "llm-gateway: cannot fetch the access token of provider {} (cluster {}): {e:?}; retrying in {} s",
                    f.provider,
                    f.cluster,
                    token::LEASE_SECONDS
                ),
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(pos) = self.in_flight.iter().position(|&(id, _)| id == token_id) else {
            return;
        };
        let (_, i) = self.in_flight.swap_remove(pos);
        let Some(f) = self.fetches.get(i) else {
            return;
        };
        let status =
            header(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse::<u16>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let now = now_unix_seconds();
        match token::from_answer(status, &body, now) {
            Ok(c) if store_token(&f.key, &c) => log::info!(
                "llm-gateway: access token of provider {} fetched from the metadata server, valid for {} s",
                f.provider,
                c.expires_at.saturating_sub(now)
            ),
            Ok(_) => log::warn!(
                "llm-gateway: could not store the access token of provider {} in shared data",
                f.provider
            ),
            Err(e) => log::warn!(
                "llm-gateway: fetching the access token of provider {} from cluster {} failed: {e}; retrying in {} s",
                f.provider,
                f.cluster,
                token::LEASE_SECONDS
            ),
        }
    }
}

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
        self.upstream = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .is_some_and(|id| id == UPSTREAM_ROOT_ID.as_bytes());
        match Config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(c) if self.upstream => {
                log::info!(
                    "llm-gateway: configured as the routing cluster's upstream filter, {} deployments",
                    c.deployments.len()
                );
                self.config = Some(Rc::new(c));
                true
            }
            Ok(c) => {
                log::info!(
                    "llm-gateway: configured {} providers, {} models, {} callers",
                    c.providers.len(),
                    c.models.len(),
                    c.callers.len()
                );
                if c.quotas.is_some() {
                    // Every record exists before the first request, so
                    // that requests only ever write with compare-and-swap.
                    let mut keys: Vec<String> =
                        c.callers.iter().map(|x| quota::caller_key(&x.id)).collect();
                    keys.extend(
                        c.callers
                            .iter()
                            .filter_map(|x| x.team.as_deref())
                            .map(quota::team_key),
                    );
                    keys.sort_unstable();
                    keys.dedup();
                    let failed = keys
                        .iter()
                        .filter(|k| quota::ensure(&SharedData, k).is_err())
                        .count();
                    if failed > 0 {
                        log::error!(
                            "llm-gateway: could not create {failed} quota records in shared data"
                        );
                    }
                }
                for d in &c.deployments {
                    // Routing state, shared by every worker (see routing::update).
                    if routing::ensure(&SharedData, &d.name).is_err() {
                        log::error!(
                            "llm-gateway: could not create the routing record of deployment {}",
                            d.name
                        );
                    }
                }
                self.fetches = c.token_fetches();
                if !self.fetches.is_empty() {
                    for f in &self.fetches {
                        // Create the lease once, so that taking it is
                        // always a compare-and-swap.
                        let key = f.lease_key();
                        if shared(&key).0.is_none() {
                            let _ = hostcalls::set_shared_data(&key, Some(b"0"), None);
                        }
                    }
                    if let Err(e) = hostcalls::set_tick_period(Duration::from_secs(1)) {
                        log::error!("llm-gateway: cannot start the token refresh timer: {e:?}");
                    }
                }
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

    fn on_tick(&mut self) {
        self.refresh_tokens();
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        if self.upstream {
            return Some(Box::new(Upstream {
                config: self.config.clone(),
                metrics: self.metrics.clone(),
                ctx: None,
                deployment: None,
                started_ms: 0,
            }));
        }
        Some(Box::new(Http {
            config: self.config.clone(),
            state: State::Idle,
            request_id: None,
            buffer_response: false,
            held_response_headers: false,
            admission: None,
            tokens_published: false,
            metrics: self.metrics.clone(),
            started_ms: 0,
            first_byte_ms: None,
            caller: None,
            model: None,
            status: 0,
            quota: "none",
            refused_limit: None,
            finished: false,
            in_flight_counted: false,
            refused_globally: false,
            routed: false,
            deployment: None,
            attempts: 0,
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
    /// Sent to the routing cluster; which deployment answers is known at
    /// the response headers.
    Routed(Box<Routed>),
}

/// The deployments a routed request tries, in order, each with the answer
/// handling for its provider (built when the plan was checked).
struct Routed {
    plan: Vec<(usize, Box<Exchange>)>,
}

struct Http {
    config: Option<Rc<Config>>,
    state: State,
    request_id: Option<String>,
    buffer_response: bool,
    /// The response headers wait for the body (see on_http_response_headers).
    held_response_headers: bool,
    /// What the quotas counted for this request, settled when it ends.
    admission: Option<Admission>,
    tokens_published: bool,
    metrics: Rc<RefCell<Metrics>>,
    /// When the request headers arrived, and the first byte of a streamed
    /// answer (Unix ms).
    started_ms: u64,
    first_byte_ms: Option<u64>,
    /// Who called and which configured model they got, once known.
    caller: Option<usize>,
    model: Option<usize>,
    /// The status the client got.
    status: u16,
    /// `admitted`, `refused`, or `none`.
    quota: &'static str,
    refused_limit: Option<&'static str>,
    finished: bool,
    /// The in-flight gauge counts this request.
    in_flight_counted: bool,
    /// Envoy's rate limit filter refused it (global mode).
    refused_globally: bool,
    /// Sent to the routing cluster (a model with deployments).
    routed: bool,
    /// The deployment that answered (or was tried last), and how many
    /// attempts it took.
    deployment: Option<usize>,
    attempts: u32,
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

/// The host clock, Unix milliseconds (0 if the host cannot tell).
fn now_unix_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The host clock, Unix seconds (0 if the host cannot tell).
fn now_unix_seconds() -> u64 {
    now_unix_ms() / 1000
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
        self.status = r.status;
        self.record(false);
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

impl Http {
    /// The request ended (any way: answered, failed, reset, cancelled):
    /// settle its quota reservation with the real usage. The usage when the
    /// answer gave none: nothing for an error answer, the reservation
    /// otherwise (a stream cut or a client gone after the provider started).
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.settle_quota();
        self.close_attempt();
        self.record(true);
    }

    /// A routed request ended: its last attempt's end and its tokens go to
    /// that deployment's shared stats (the upstream filter already counted
    /// attempts whose answer was a failure status).
    fn close_attempt(&mut self) {
        if !self.routed {
            return;
        }
        let Some(cfg) = self.config.clone() else {
            return;
        };
        let Some(a) = read_attempt() else {
            return;
        };
        let Some(d) = cfg.deployments.get(a.deployment) else {
            return;
        };
        self.deployment = Some(a.deployment);
        self.attempts = a.number;
        let how = match self.status {
            0 => routing::End::Neutral,
            s if routing::failed_status(s) => routing::End::Failed,
            s if s < 400 => routing::End::Ok,
            _ => routing::End::Neutral,
        };
        let tokens = match &self.state {
            State::Forwarded(ex) => ex.usage().map(|u| u.total_tokens).unwrap_or(0),
            _ => 0,
        };
        if !a.open && tokens == 0 {
            return;
        }
        let now = now_unix_ms();
        let cd = cfg.routing.cooldown;
        let cooled = routing::update(&SharedData, &d.name, |s| {
            let mut cooled = false;
            if a.open {
                cooled = s.end(now, how, &cd, a.counted);
            }
            if tokens > 0 {
                s.add_tokens(now, tokens);
            }
            cooled
        });
        if a.open {
            write_attempt(&Attempt { open: false, ..a });
            if how == routing::End::Failed {
                count_failure(&self.metrics, &d.name, "unreachable", cooled);
            }
        }
    }

    /// Metrics and the audit record of the request that ended (requests
    /// that got as far as an identified caller).
    /// The answer's last byte passes: the audit fields now, so that the
    /// span Envoy finishes before `on_log` sees them too (see
    /// envoy/examples/otel-tracing.yaml); `on_log` sets them again with the
    /// final values.
    fn response_done(&mut self) {
        self.publish_tokens();
        self.record(false);
    }

    /// Metrics (once, when the request ended: `done`) and the audit fields
    /// of a request that got as far as an identified caller.
    fn record(&mut self, done: bool) {
        let (Some(cfg), Some(caller)) = (self.config.clone(), self.caller) else {
            return;
        };
        let c = &cfg.callers[caller];
        let model = self.model.map(|i| &cfg.models[i]);
        let deployment = self.deployment.and_then(|d| cfg.deployments.get(d));
        let provider = match deployment {
            Some(d) => Some(cfg.providers[d.provider].common()),
            None => model.map(|m| cfg.providers[m.provider].common()),
        };
        let ex = match &self.state {
            State::Forwarded(ex) => Some(ex),
            _ => None,
        };
        let usage = ex.and_then(|e| e.usage());
        let now = now_unix_ms();
        let quota = match (self.quota, self.refused_limit) {
            ("refused", Some(l)) => format!("refused:{l}"),
            ("refused", None) => "refused:busy".to_string(),
            (q, _) => q.to_string(),
        };
        let o = Outcome {
            caller: Some((c.id.as_str(), c.team.as_deref())),
            model: model.map(|m| m.name.as_str()),
            provider: provider.map(|p| p.name.as_str()),
            upstream_model: match deployment {
                Some(d) => Some(d.upstream.as_str()),
                None => model.map(|m| m.upstream.as_str()),
            },
            status: self.status,
            provider_error: ex.and_then(|e| e.provider_error()),
            usage,
            cost_micros: match (usage, model) {
                (Some(u), Some(m)) => quota::cost_micros(&m.price, &u),
                _ => 0,
            },
            duration_ms: now.saturating_sub(self.started_ms),
            ttft_ms: match (ex, self.first_byte_ms) {
                (Some(e), Some(t)) if e.stream => Some(t.saturating_sub(self.started_ms)),
                _ => None,
            },
            stream: ex.is_some_and(|e| e.stream),
            quota,
            deployment: deployment.map(|d| d.name.as_str()),
            attempts: self.attempts,
        };
        for (name, value) in o.audit() {
            if value.is_empty() {
                // Absent rather than empty (the access log shows `-`; the
                // rate limit descriptors of global mode skip it).
                continue;
            }
            if let Err(e) = hostcalls::set_property(vec![name], Some(value.as_bytes())) {
                log::warn!("llm-gateway: could not set filter state {name}: {e:?}");
            }
        }
        if !done {
            return;
        }
        let mut metrics = self.metrics.borrow_mut();
        for u in o.updates(cfg.metrics_by) {
            metrics.apply(&u);
        }
        if self.in_flight_counted {
            // The provider it was counted under (the first deployment's
            // for a routed request).
            if let Some(m) = model {
                let p = &cfg.providers[m.provider].common().name;
                metrics.apply(&in_flight_update(&m.name, p, -1));
            }
        }
    }

    fn settle_quota(&mut self) {
        let Some(adm) = self.admission.take() else {
            return;
        };
        if self.refused_globally {
            // Never reached a provider: not counted locally either.
            quota::cancel(&SharedData, &adm, now_unix_ms());
            return;
        }
        let used = match (&self.state, &self.config) {
            (State::Forwarded(ex), Some(cfg)) => match ex.usage() {
                Some(u) => quota::Ask {
                    tokens: u.total_tokens,
                    usd_micros: quota::cost_micros(&cfg.models[ex.model].price, &u),
                },
                None if ex.failed() => quota::Ask::default(),
                None => adm.reserved,
            },
            // Sent to a deployment, gone before any answer (the client left):
            // the provider may have worked.
            (State::Routed(_), _) => adm.reserved,
            // Admitted but no longer forwarded: the filter answered a
            // bodiless provider error itself (see on_http_response_headers).
            _ => quota::Ask::default(),
        };
        if !quota::settle(&SharedData, &adm, used, now_unix_ms()) {
            log::warn!("llm-gateway: could not settle a request's quota counters");
        }
    }

    /// Global mode: the answer's tokens as filter state, for the rate limit
    /// filter's `hits_addend` (applied when the stream is done).
    fn publish_tokens(&mut self) {
        if self.tokens_published {
            return;
        }
        let Some(cfg) = &self.config else {
            return;
        };
        if !cfg.quotas.as_ref().is_some_and(|q| q.descriptor_headers) {
            return;
        }
        let State::Forwarded(ex) = &self.state else {
            return;
        };
        self.tokens_published = true;
        let tokens = ex.usage().map(|u| u.total_tokens).unwrap_or(0);
        if let Err(e) =
            hostcalls::set_property(vec![TOKENS_PROPERTY], Some(tokens.to_string().as_bytes()))
        {
            log::warn!("llm-gateway: could not set filter state {TOKENS_PROPERTY}: {e:?}");
        }
    }
}

/// A failed attempt on `deployment` (`reason`: 429, 5xx, unreachable) in
/// the metrics, and the cooldown it started (`cooled`, as
/// `routing::update` returned it).
fn count_failure(metrics: &RefCell<Metrics>, deployment: &str, reason: &str, cooled: Option<bool>) {
    let mut m = metrics.borrow_mut();
    m.apply(&telemetry::Update {
        kind: MetricKind::Counter,
        name: telemetry::metric_name(
            telemetry::DEPLOYMENT_FAILURES,
            &[("deployment", deployment), ("reason", reason)],
        ),
        value: 1,
    });
    if cooled == Some(true) {
        m.apply(&telemetry::Update {
            kind: MetricKind::Counter,
            name: telemetry::metric_name(telemetry::COOLDOWNS, &[("deployment", deployment)]),
            value: 1,
        });
    }
}

/// The root id of the upstream role (the routing cluster's `http_filters`).
const UPSTREAM_ROOT_ID: &str = "llmgw-upstream";
/// Filter state the two roles share for one request.
const ROUTE_PROPERTY: &str = "llmgw_route";
const ATTEMPT_PROPERTY: &str = "llmgw_attempt";
/// Envoy's retry headers: only the filter sets them (a client could
/// otherwise make the gateway retry, or cut its timeouts).
const ENVOY_RETRY_HEADERS: [&str; 5] = [
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
];

fn read_attempt() -> Option<Attempt> {
    hostcalls::get_property(vec![ATTEMPT_PROPERTY])
        .ok()
        .flatten()
        .and_then(|b| Attempt::decode(&b))
}

fn write_attempt(a: &Attempt) {
    if let Err(e) = hostcalls::set_property(vec![ATTEMPT_PROPERTY], Some(&a.encode())) {
        log::warn!("llm-gateway: could not set filter state {ATTEMPT_PROPERTY}: {e:?}");
    }
}

thread_local! {
    static RNG: RefCell<XorShift> = const { RefCell::new(XorShift(0)) };
}

/// A random `u64` (xorshift seeded from the host clock on first use).
fn random_source<T>(f: impl FnOnce(&mut dyn Rng) -> T) -> T {
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        if r.0 == 0 {
            let ns = hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            r.0 = ns | 1;
        }
        f(&mut *r)
    })
}

/// The deployments a routed request tries, in order (see
/// [`routing::plan`]), without those its body cannot be translated for;
/// each with the answer handling for its provider.
fn route_plan(
    cfg: &Config,
    pending: &Pending,
    body: &[u8],
    model: usize,
) -> Result<Vec<(usize, Box<Exchange>)>, Reply> {
    let cache: RefCell<HashMap<usize, routing::Stats>> = RefCell::new(HashMap::new());
    let stats = |d: usize| -> routing::Stats {
        if let Some(s) = cache.borrow().get(&d) {
            return s.clone();
        }
        let s = routing::read(&SharedData, &cfg.deployments[d].name);
        cache.borrow_mut().insert(d, s.clone());
        s
    };
    let now = now_unix_ms();
    let caller = &cfg.callers[pending.caller];
    let shape = crate::frontdoor::ErrorShape::for_endpoint(pending.endpoint);
    let order = random_source(|rng| routing::plan(cfg, model, caller, &stats, now, rng))
        .map_err(|e| shape.reply(e.error()))?;
    let mut plan = Vec::with_capacity(order.len());
    let mut first_err = None;
    for d in order {
        match gateway::forward_for(cfg, pending, body, model, d) {
            Ok(f) => plan.push((d, Box::new(f.exchange))),
            Err(r) => {
                first_err.get_or_insert(r);
            }
        }
    }
    match (plan.is_empty(), first_err) {
        (false, _) => Ok(plan),
        (true, Some(r)) => Err(r),
        (true, None) => Err(shape.reply(ApiError::model_not_found(&cfg.models[model].name))),
    }
}

fn in_flight_update(model: &str, provider: &str, delta: i64) -> telemetry::Update {
    telemetry::Update {
        kind: MetricKind::Gauge,
        name: telemetry::metric_name(
            telemetry::IN_FLIGHT,
            &[("model", model), ("provider", provider)],
        ),
        value: delta,
    }
}

impl Http {
    fn count_in_flight(&mut self, cfg: &Config, model: usize) {
        let model = &cfg.models[model];
        let provider = &cfg.providers[model.provider].common().name;
        self.metrics
            .borrow_mut()
            .apply(&in_flight_update(&model.name, provider, 1));
        self.in_flight_counted = true;
    }

    /// Global mode: who is calling and which model, as filter state for the
    /// rate limit filter's descriptors (`envoy.rate_limit_descriptors.expr`);
    /// not as headers, which would travel to the provider. No team: no
    /// state, so Envoy sends no team descriptor.
    fn set_descriptor_state(&self, cfg: &Config, caller: usize, model: usize) {
        if !cfg.quotas.as_ref().is_some_and(|q| q.descriptor_headers) {
            return;
        }
        let caller = &cfg.callers[caller];
        let model = cfg.models[model].name.as_str();
        let team = caller.team.as_deref();
        for (k, v) in [
            ("llmgw_caller", Some(caller.id.as_str())),
            ("llmgw_team", team),
            ("llmgw_model", Some(model)),
        ] {
            let Some(v) = v else { continue };
            if let Err(e) = hostcalls::set_property(vec![k], Some(v.as_bytes())) {
                log::warn!("llm-gateway: could not set filter state {k}: {e:?}");
            }
        }
    }

    /// The answer of a routed request arrived: from the deployment the last
    /// attempt reached, whose provider's answer handling takes over.
    fn resolve_route(&mut self) {
        if !matches!(self.state, State::Routed(_)) {
            return;
        }
        let State::Routed(r) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        let mut plan = r.plan;
        // The deployment the last attempt reached (the plan's first if the
        // upstream filter never ran).
        let attempt = read_attempt();
        let at = attempt
            .and_then(|a| plan.iter().position(|(d, _)| *d == a.deployment))
            .unwrap_or(0);
        self.attempts = attempt.map(|a| a.number).unwrap_or(1);
        if at < plan.len() {
            let (d, ex) = plan.swap_remove(at);
            self.deployment = Some(d);
            self.state = State::Forwarded(ex);
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
    }
}

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
        // Nobody but the filter may choose the provider cluster, or say who
        // is calling to the rate limit filter.
        set_header(MapType::HttpRequestHeaders, &cfg.cluster_header, None);
        set_header(
            MapType::HttpRequestHeaders,
            &cfg.routing.endpoint_header,
            None,
        );
        for h in DESCRIPTOR_HEADERS {
            set_header(MapType::HttpRequestHeaders, h, None);
        }
        let method = header(MapType::HttpRequestHeaders, ":method").unwrap_or_default();
        let path = header(MapType::HttpRequestHeaders, ":path").unwrap_or_default();
        self.request_id = header(MapType::HttpRequestHeaders, "x-request-id");
        self.started_ms = now_unix_ms();
        match gateway::on_request_head(&cfg, &Host, &method, &path, end_of_stream) {
            Head::PassThrough => {
                self.state = State::PassThrough;
                Action::Continue
            }
            Head::Reply(r) => self.reply(r),
            Head::Routing => {
                let stats = |d: usize| routing::read(&SharedData, &cfg.deployments[d].name);
                let r = gateway::routing_reply(&cfg, &stats, now_unix_ms());
                self.reply(r)
            }
            Head::Usage { caller, query } => {
                let r = gateway::usage_reply(&cfg, &SharedData, caller, &query, now_unix_ms());
                self.reply(r)
            }
            Head::NeedBody(p) => {
                self.caller = Some(p.caller);
                for h in gateway::STRIP_REQUEST_HEADERS
                    .iter()
                    .chain(ENVOY_RETRY_HEADERS.iter())
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
        let forward = gateway::on_request_body(&cfg, &pending, &body).and_then(|mut f| {
            if f.routed {
                // Each attempt is translated (and signed) by the upstream
                // filter for the deployment it reaches.
                let plan = route_plan(&cfg, &pending, &body, f.exchange.model)?;
                return Ok((f, None, Some(plan)));
            }
            f.sign(&cfg, now_unix_seconds())?;
            // A token the filter fetched itself: from shared data, now.
            let bearer = match &f.bearer_from_shared {
                None => None,
                Some(key) => {
                    Some(f.shared_bearer(&cfg, shared(key).0.as_deref(), now_unix_seconds())?)
                }
            };
            Ok((f, bearer, None))
        });
        // Quotas last: nothing after the admission can refuse the request,
        // so every admission is settled by the request's end (`finish`).
        let forward = forward.and_then(|(f, bearer, plan)| {
            if let (Some(q), Some(ask)) = (&cfg.quotas, f.reserve) {
                let caller = &cfg.callers[f.exchange.caller];
                let model = &cfg.models[f.exchange.model].name;
                self.model = Some(f.exchange.model);
                match quota::admit(&SharedData, q, caller, model, ask, now_unix_ms()) {
                    Ok(a) => {
                        self.admission = Some(a);
                        self.quota = "admitted";
                    }
                    Err(d) => {
                        self.quota = "refused";
                        if let quota::Denied::Limit { applied, .. } = &d {
                            self.refused_limit = Some(applied.kind.name());
                        }
                        return Err(f.refusal(&cfg, &d));
                    }
                }
            }
            Ok((f, bearer, plan))
        });
        match forward {
            Err(r) => self.reply(r),
            Ok((f, _, Some(plan))) => {
                self.model = Some(f.exchange.model);
                self.count_in_flight(&cfg, f.exchange.model);
                self.set_descriptor_state(&cfg, f.exchange.caller, f.exchange.model);
                let m = MapType::HttpRequestHeaders;
                let ctx = RouteCtx {
                    endpoint: pending.endpoint,
                    caller: pending.caller,
                    model: f.exchange.model,
                    client_headers: pending.client_headers.clone(),
                };
                if let Err(e) = hostcalls::set_property(vec![ROUTE_PROPERTY], Some(&ctx.encode())) {
                    log::warn!("llm-gateway: could not set filter state {ROUTE_PROPERTY}: {e:?}");
                }
                // Envoy's override_host policy tries these endpoints in this
                // order, one per attempt; the route's retry_policy says on
                // what to move on, this header how many times.
                let endpoints: Vec<&str> = plan
                    .iter()
                    .map(|(d, _)| cfg.deployments[*d].endpoint.as_str())
                    .collect();
                set_header(m, &cfg.routing.endpoint_header, Some(&endpoints.join(",")));
                set_header(
                    m,
                    "x-envoy-max-retries",
                    Some(&(plan.len() - 1).to_string()),
                );
                set_header(m, &cfg.cluster_header, Some(&cfg.routing.cluster));
                self.routed = true;
                self.state = State::Routed(Box::new(Routed { plan }));
                Action::Continue
            }
            Ok((f, bearer, None)) => {
                let m = MapType::HttpRequestHeaders;
                self.model = Some(f.exchange.model);
                self.count_in_flight(&cfg, f.exchange.model);
                self.set_descriptor_state(&cfg, f.exchange.caller, f.exchange.model);
                set_upstream_request(&f, bearer.as_deref(), &body, body_size);
                // The route (`cluster_header`) is resolved when the headers continue.
                set_header(m, &cfg.cluster_header, Some(&f.cluster));
                self.state = State::Forwarded(Box::new(f.exchange));
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        self.resolve_route();
        let routed_headers: Vec<(String, String)> = match self.deployment {
            Some(d) if self.routed => vec![
                ("x-llm-deployment".into(), cfg.deployments[d].name.clone()),
                ("x-llm-attempts".into(), self.attempts.max(1).to_string()),
            ],
            _ => Vec::new(),
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
        if !from_upstream && status == 429 && header(m, "x-envoy-ratelimited").is_some() {
            // Envoy's rate limit filter (global mode) said OVER_LIMIT.
            let wait = header(m, "x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
            ex.refused_by_global_limit(wait);
            self.refused_globally = true;
            self.quota = "refused";
            self.refused_limit = Some("global");
        }
        let mut head = ex.on_response_head(&cfg, status, from_upstream);
        head.set.extend(routed_headers);
        self.status = head.status.unwrap_or(status);
        if let Some(adm) = &self.admission {
            head.set.extend(quota::headers(adm));
        }
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
            if let (Some(secs), None) = (ex.retry_after(), header(m, "retry-after")) {
                headers.push(("retry-after".into(), secs.to_string()));
                headers.push(("retry-after-ms".into(), (secs * 1000).to_string()));
            }
            self.response_done();
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
        if end_of_stream {
            self.response_done();
        }
        if head.buffer && !end_of_stream {
            // A whole answer read before it goes out (a translated answer or
            // an error): hold its headers until the body is read, so the
            // status can still follow what the body says (a blocked prompt,
            // an unreadable answer, Gemini's 400 for a bad key → 502).
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
            if body_size > cfg.max_body_bytes {
                // Answer before Envoy's buffer limit does (its 500 is not
                // OpenAI-shaped); the headers are still held.
                let r = ex.response_too_large(&cfg);
                return self.reply(r);
            }
            if !end_of_stream {
                return Action::Pause;
            }
            let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            let new = ex.on_full_body(&cfg, &body);
            if let Some(new) = new {
                if let Err(e) =
                    hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &new)
                {
                    log::warn!("llm-gateway: could not replace the response body: {e:?}");
                }
            }
            if self.held_response_headers {
                let m = MapType::HttpResponseHeaders;
                if let Some(s) = ex.status_override() {
                    set_header(m, ":status", Some(&s.to_string()));
                    self.status = s;
                }
                // A wait the provider gave only in its error body.
                if let Some(secs) = ex.retry_after() {
                    if header(m, "retry-after").is_none() {
                        set_header(m, "retry-after", Some(&secs.to_string()));
                        set_header(m, "retry-after-ms", Some(&(secs * 1000).to_string()));
                    }
                }
            }
            self.response_done();
            return Action::Continue;
        }
        if self.first_byte_ms.is_none() && body_size > 0 {
            self.first_byte_ms = Some(now_unix_ms());
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
        if end_of_stream {
            self.response_done();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.finish();
    }
}

/// The upstream role: the same filter in the routing cluster's
/// `http_filters`, run once per attempt (a new context each time). It reads
/// which deployment Envoy's load balancer picked (endpoint metadata
/// `llm.deployment`), translates the client's request — Envoy hands every
/// attempt the original body — for that deployment's provider, and keeps
/// the deployment's shared stats (attempts, failures, latency, cooldown).
struct Upstream {
    config: Option<Rc<Config>>,
    metrics: Rc<RefCell<Metrics>>,
    ctx: Option<RouteCtx>,
    deployment: Option<usize>,
    started_ms: u64,
}

impl Upstream {
    /// An answer the filter makes itself (a configuration error: Envoy does
    /// not retry it).
    fn reply(&self, e: ApiError) -> Action {
        send_reply(&e.into());
        Action::Pause
    }

    /// Translate the request for this attempt's deployment.
    fn forward(&mut self, body: &[u8], body_size: usize) -> Action {
        let (Some(cfg), Some(ctx), Some(d)) =
            (self.config.clone(), self.ctx.clone(), self.deployment)
        else {
            return Action::Continue;
        };
        let pending = Pending {
            caller: ctx.caller,
            // Not read when forwarding.
            via: crate::auth::Via::Key,
            endpoint: ctx.endpoint,
            client_headers: ctx.client_headers.clone(),
        };
        let now_s = now_unix_seconds();
        let forward = gateway::forward_for(&cfg, &pending, body, ctx.model, d)
            .and_then(|mut f| f.sign(&cfg, now_s).map(|()| f))
            .and_then(|f| {
                let bearer = match &f.bearer_from_shared {
                    None => None,
                    Some(key) => Some(f.shared_bearer(&cfg, shared(key).0.as_deref(), now_s)?),
                };
                Ok((f, bearer))
            });
        let (f, bearer) = match forward {
            Ok(x) => x,
            Err(r) => {
                // The downstream filter checked every planned deployment
                // can take the body; a token missing now lands here.
                send_reply(&r);
                return Action::Pause;
            }
        };
        let m = MapType::HttpRequestHeaders;
        // Envoy's attempts share one header map: what the last attempt set
        // for its provider goes first.
        for h in &cfg.attempt_headers {
            set_header(m, h, None);
        }
        set_upstream_request(&f, bearer.as_deref(), body, body_size);
        Action::Continue
    }
}

/// The provider request `f` on the request being forwarded: path, host,
/// headers, the key the filter sets (if any), and the body (`body` is the
/// one in Envoy's buffer, `body_size` bytes).
fn set_upstream_request(f: &gateway::Forward, bearer: Option<&str>, body: &[u8], body_size: usize) {
    let m = MapType::HttpRequestHeaders;
    set_header(m, ":path", Some(&f.upstream.path));
    set_header(m, ":authority", Some(&f.upstream.authority));
    for (k, v) in &f.upstream.headers {
        set_header(m, k, Some(v));
    }
    if let Some(v) = bearer {
        set_header(m, "authorization", Some(v));
    }
    set_header(m, "content-type", Some("application/json"));
    set_header(
        m,
        "content-length",
        Some(&f.upstream.body.len().to_string()),
    );
    if f.upstream.body != body {
        if let Err(e) =
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &f.upstream.body)
        {
            log::warn!("llm-gateway: could not replace the request body: {e:?}");
        }
    }
}

/// An answer the upstream role makes itself.
fn send_reply(r: &Reply) {
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(e) = hostcalls::send_http_response(u32::from(r.status), headers, Some(&r.body)) {
        log::warn!("llm-gateway: could not send a local reply: {e:?}");
    }
}

impl Context for Upstream {}

impl HttpContext for Upstream {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return self.reply(ApiError::server(
                503,
                "gateway_not_configured",
                "The gateway has no valid configuration.",
            ));
        };
        let ctx = hostcalls::get_property(vec![ROUTE_PROPERTY])
            .ok()
            .flatten()
            .and_then(|b| RouteCtx::decode(&b, &cfg));
        let Some(ctx) = ctx else {
            return self.reply(ApiError::server(
                502,
                "routing_misconfigured",
                "This request reached the routing cluster without a routing decision \
                 (only the gateway filter may send requests there).",
            ));
        };
        let name = hostcalls::get_property(vec![
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "llm",
            "deployment",
        ])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok());
        let Some(d) = name
            .as_deref()
            .and_then(|n| cfg.deployment_index.get(n).copied())
        else {
            log::warn!(
                "llm-gateway: routing cluster endpoint without a known llm.deployment metadata ({})",
                name.as_deref().unwrap_or("none")
            );
            return self.reply(ApiError::server(
                502,
                "routing_misconfigured",
                "The routing cluster picked an endpoint that is no configured deployment \
                 (endpoint metadata filter_metadata.llm.deployment).",
            ));
        };
        let now = now_unix_ms();
        let cd = cfg.routing.cooldown;
        // The previous attempt is still open: it ended without an answer
        // (connect failure, reset, per-try timeout).
        let previous = read_attempt();
        if let Some(p) = previous.filter(|p| p.open) {
            if let Some(pd) = cfg.deployments.get(p.deployment) {
                let cooled = routing::update(&SharedData, &pd.name, |s| {
                    s.end(now, routing::End::Failed, &cd, p.counted)
                });
                count_failure(&self.metrics, &pd.name, "unreachable", cooled);
            }
        }
        let number = header(MapType::HttpRequestHeaders, "x-envoy-attempt-count")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or_else(|| previous.map(|p| p.number + 1).unwrap_or(1));
        let counted =
            routing::update(&SharedData, &cfg.deployments[d].name, |s| s.start(now)).is_some();
        write_attempt(&Attempt {
            deployment: d,
            started_ms: now,
            number,
            open: true,
            counted,
        });
        self.ctx = Some(ctx);
        self.deployment = Some(d);
        self.started_ms = now;
        if end_of_stream {
            return self.forward(&[], 0);
        }
        // The path and headers depend on the body (Gemini's stream method,
        // Bedrock's converse-stream): set them with it. Needs
        // `allow_on_headers_stop_iteration: true` here too.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.deployment.is_none() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        };
        self.forward(&body, body_size)
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let (Some(cfg), Some(d)) = (self.config.clone(), self.deployment) else {
            return Action::Continue;
        };
        let Some(status) =
            header(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse::<u16>().ok())
        else {
            return Action::Continue;
        };
        let now = now_unix_ms();
        let name = &cfg.deployments[d].name;
        let cd = cfg.routing.cooldown;
        if routing::failed_status(status) {
            // Envoy retries this one elsewhere (or gives it to the client).
            let open = read_attempt().filter(|a| a.deployment == d && a.open);
            let counted = open.is_some_and(|a| a.counted);
            let cooled = routing::update(&SharedData, name, |s| {
                s.end(now, routing::End::Failed, &cd, counted)
            });
            if let Some(mut a) = open {
                a.open = false;
                write_attempt(&a);
            }
            let reason = if status == 429 { "429" } else { "5xx" };
            count_failure(&self.metrics, name, reason, cooled);
        } else if status < 400 {
            let ttfb = now.saturating_sub(self.started_ms);
            routing::update(&SharedData, name, |s| s.latency(ttfb));
        }
        Action::Continue
    }
}
