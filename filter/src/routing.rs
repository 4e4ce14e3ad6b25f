//! Routing across deployments: which deployments of a model (and of its
//! fallback models) a request may use, in which order, and the per-deployment
//! state the choice reads (requests and tokens this minute, requests in
//! flight, latency, recent failures, cooldown), shared by every Envoy worker
//! through a [`Store`] (Envoy's shared data in the filter).
//!
//! The filter makes the choice and Envoy carries it out: the downstream
//! filter sends the ordered list of deployment endpoints in a request header
//! that the routing cluster's `override_host` load balancer follows, the
//! route's `retry_policy` moves a failed attempt (429, 5xx, reset, connect
//! failure, per-try timeout) to the next entry, and the same filter, running
//! as an upstream HTTP filter of that cluster, translates each attempt for
//! the provider of the deployment it reached. See README "Routing across
//! deployments".

use crate::config::{Caller, Config};
use crate::quota::{Store, StoreError};
use serde::Deserialize;

/// How a model orders its deployments (within a priority tier).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Random, proportional to `weight`.
    #[default]
    Weighted,
    /// Fewest requests in flight (all workers), ties by weight.
    LeastInFlight,
    /// Lowest moving average of the time to the first response byte (an
    /// unmeasured deployment counts as fastest, so each gets measured).
    LowestLatency,
    /// Most capacity (`rpm`, `tpm`) left this minute.
    UsageBased,
    /// Declaration order: the first healthy deployment takes everything.
    Priority,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::LeastInFlight => "least_in_flight",
            Strategy::LowestLatency => "lowest_latency",
            Strategy::UsageBased => "usage_based",
            Strategy::Priority => "priority",
        }
    }
}

/// One deployment: a provider serving a model under its own name, reached
/// through one endpoint (`IP:port`) of the routing cluster.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    /// The public model it serves (index in `Config::models`).
    pub model: usize,
    pub provider: usize,
    pub upstream: String,
    pub endpoint: String,
    pub weight: u32,
    pub priority: u32,
    /// Capacity per minute (the provider's limits for this deployment).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub region: Option<String>,
    pub tags: Vec<String>,
}

/// N failures within `window_ms` put a deployment aside for `cooldown_ms`
/// (`failures == 0`: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    pub failures: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
}

impl Default for Cooldown {
    fn default() -> Self {
        Cooldown {
            failures: 3,
            window_ms: 60_000,
            cooldown_ms: 30_000,
        }
    }
}

/// Who is pinned where: a caller or a whole team may only use deployments
/// in these regions and/or carrying one of these tags.
#[derive(Debug, Clone)]
pub struct Pin {
    pub team: Option<String>,
    pub caller: Option<String>,
    pub regions: Vec<String>,
    pub tags: Vec<String>,
}

impl Pin {
    fn applies(&self, caller: &Caller) -> bool {
        match (&self.caller, &self.team) {
            (Some(c), _) => *c == caller.id,
            (None, Some(t)) => caller.team.as_deref() == Some(t.as_str()),
            (None, None) => false,
        }
    }

    fn allows(&self, d: &Deployment) -> bool {
        (self.regions.is_empty()
            || d.region
                .as_ref()
                .is_some_and(|r| self.regions.iter().any(|x| x == r)))
            && (self.tags.is_empty() || d.tags.iter().any(|t| self.tags.contains(t)))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.regions.is_empty() {
            parts.push(format!("regions {}", self.regions.join(", ")));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(", ")));
        }
        parts.join(" and ")
    }
}

#[derive(Debug, Clone)]
pub struct Routing {
    /// The Envoy cluster whose endpoints are the deployments.
    pub cluster: String,
    /// The request header its `override_host` policy reads.
    pub endpoint_header: String,
    /// At most this many attempts per request (deployments tried).
    pub max_attempts: usize,
    pub cooldown: Cooldown,
    pub pins: Vec<Pin>,
}

pub const DEFAULT_CLUSTER: &str = "llmgw_deployments";
pub const DEFAULT_ENDPOINT_HEADER: &str = "x-llmgw-endpoints";
pub const DEFAULT_MAX_ATTEMPTS: usize = 4;

impl Default for Routing {
    fn default() -> Self {
        Routing {
            cluster: DEFAULT_CLUSTER.to_string(),
            endpoint_header: DEFAULT_ENDPOINT_HEADER.to_string(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            cooldown: Cooldown::default(),
            pins: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- stats

/// A deployment's shared state. Counters are per UTC minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
    pub in_flight: u64,
    /// Moving average of the time to the first response byte, ms (0: none yet).
    pub latency_ms: u64,
    /// Cooled down until this time (Unix ms).
    pub cool_until_ms: u64,
    /// Times of the recent failures (Unix ms), oldest first.
    pub fails: Vec<u64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Ok,
    /// 429, 5xx, reset, connect failure, timeout: counts towards cooldown.
    Failed,
    /// Ended without saying anything about the deployment (a 4xx that is
    /// the request's fault, a client gone).
    Neutral,
}

const MAX_FAILS_KEPT: usize = 64;

impl Stats {
    pub fn decode(b: &[u8]) -> Stats {
        let s = std::str::from_utf8(b).unwrap_or("");
        let mut it = s.split(' ');
        let mut n = || it.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let mut st = Stats {
            minute: n(),
            requests: n(),
            tokens: n(),
            in_flight: n(),
            latency_ms: n(),
            cool_until_ms: n(),
            fails: Vec::new(),
        };
        if let Some(f) = s.split(' ').nth(6) {
            st.fails = f.split(',').filter_map(|x| x.parse().ok()).collect();
        }
        st
    }

    pub fn encode(&self) -> Vec<u8> {
        let fails: Vec<String> = self.fails.iter().map(u64::to_string).collect();
        format!(
            "{} {} {} {} {} {} {}",
            self.minute,
            self.requests,
            self.tokens,
            self.in_flight,
            self.latency_ms,
            self.cool_until_ms,
            fails.join(",")
        )
        .into_bytes()
    }

    fn roll(&mut self, now_ms: u64) {
        let minute = now_ms / 60_000;
        if minute != self.minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
    }

    /// This minute's counters as of `now_ms` (without writing).
    pub fn at(&self, now_ms: u64) -> Stats {
        let mut s = self.clone();
        s.roll(now_ms);
        s
    }

    /// Failures within the cooldown window before `now_ms`.
    pub fn recent_failures(&self, now_ms: u64, cd: &Cooldown) -> usize {
        let since = now_ms.saturating_sub(cd.window_ms);
        self.fails.iter().filter(|&&t| t > since).count()
    }

    pub fn cooling(&self, now_ms: u64) -> bool {
        now_ms < self.cool_until_ms
    }

    /// An attempt starts on this deployment.
    pub fn start(&mut self, now_ms: u64) {
        self.roll(now_ms);
        self.requests += 1;
        self.in_flight += 1;
    }

    /// An attempt ended; true when this failure started a cooldown.
    /// `counted`: its start was recorded (see [`Attempt::counted`]).
    pub fn end(&mut self, now_ms: u64, how: End, cd: &Cooldown, counted: bool) -> bool {
        if counted {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if how != End::Failed || cd.failures == 0 {
            return false;
        }
        self.fail(now_ms, cd)
    }

    /// A failure: a cooldown starts when it is the N-th within the window.
    pub fn fail(&mut self, now_ms: u64, cd: &Cooldown) -> bool {
        if cd.failures == 0 {
            return false;
        }
        let since = now_ms.saturating_sub(cd.window_ms);
        // (Other workers' clocks may be a little ahead: keep their times.)
        self.fails.retain(|&t| t > since);
        self.fails.push(now_ms);
        if self.fails.len() > MAX_FAILS_KEPT {
            self.fails.remove(0);
        }
        if self.fails.len() >= cd.failures as usize && !self.cooling(now_ms) {
            self.cool_until_ms = now_ms + cd.cooldown_ms;
            self.fails.clear();
            return true;
        }
        false
    }

    /// A time to first byte, into the moving average (weight 1/5).
    pub fn latency(&mut self, ms: u64) {
        let ms = ms.max(1);
        self.latency_ms = if self.latency_ms == 0 {
            ms
        } else {
            (self.latency_ms * 4 + ms) / 5
        };
    }

    pub fn add_tokens(&mut self, now_ms: u64, tokens: u64) {
        self.roll(now_ms);
        self.tokens += tokens;
    }

    /// The capacity left this minute as a fraction (1.0 with no capacity
    /// set; the smaller of the request and token fractions).
    pub fn headroom(&self, d: &Deployment, now_ms: u64) -> f64 {
        let s = self.at(now_ms);
        let frac = |cap: Option<u64>, used: u64| match cap {
            Some(c) if c > 0 => (c.saturating_sub(used)) as f64 / c as f64,
            _ => 1.0,
        };
        frac(d.rpm, s.requests).min(frac(d.tpm, s.tokens))
    }

    fn over_capacity(&self, d: &Deployment, now_ms: u64) -> bool {
        self.headroom(d, now_ms) <= 0.0
    }
}

pub fn stats_key(deployment: &str) -> String {
    format!("llm-gateway/route/d/{deployment}")
}

/// Routing updates only record (they refuse nothing), and a lost `end`
/// would hold an in-flight slot: they try as long as a quota give-back.
const CAS_ATTEMPTS: usize = crate::quota::RELEASE_CAS_ATTEMPTS;

/// Create a deployment's record if it does not exist (the filter does it
/// for every deployment when the configuration loads, so requests only
/// write with compare-and-swap).
pub fn ensure(store: &dyn Store, deployment: &str) -> Result<(), StoreError> {
    store.create(&stats_key(deployment), &Stats::default().encode())
}

/// Read-modify-write of a deployment's stats with compare-and-swap; `f`'s
/// result is returned once the write went through.
pub fn update<T>(
    store: &dyn Store,
    deployment: &str,
    mut f: impl FnMut(&mut Stats) -> T,
) -> Option<T> {
    let key = stats_key(deployment);
    for _ in 0..CAS_ATTEMPTS {
        let (mut st, cas) = match store.get(&key) {
            Some((b, cas)) => (Stats::decode(&b), cas),
            None => {
                // Not created at configuration time (should not happen).
                ensure(store, deployment).ok()?;
                continue;
            }
        };
        let out = f(&mut st);
        match store.set(&key, &st.encode(), Some(cas)) {
            Ok(()) => return Some(out),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => return None,
        }
    }
    None
}

pub fn read(store: &dyn Store, deployment: &str) -> Stats {
    store
        .get(&stats_key(deployment))
        .map(|(b, _)| Stats::decode(&b))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- choice

/// A random number source (`u64`s); the filter seeds one from the clock.
pub trait Rng {
    fn next_u64(&mut self) -> u64;

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// xorshift64*: small and good enough to spread load.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl Rng for XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `deps` (indices into `all`) in the order the strategy tries them:
/// deployments over their capacity this minute last, then by priority tier,
/// then by the strategy, ties broken at random by weight.
pub fn order(
    all: &[Deployment],
    deps: &[usize],
    strategy: Strategy,
    stats: &dyn Fn(usize) -> Stats,
    now_ms: u64,
    rng: &mut dyn Rng,
) -> Vec<usize> {
    struct Key {
        d: usize,
        full: bool,
        priority: u32,
        metric: f64,
        weighted: f64,
        pos: usize,
    }
    let mut keys: Vec<Key> = deps
        .iter()
        .enumerate()
        .map(|(pos, &d)| {
            let dep = &all[d];
            let st = stats(d).at(now_ms);
            // Efraimidis–Spirakis: sorting by u^(1/w) (here ln(u)/w) is a
            // weighted random order without replacement.
            let weighted = rng.unit().ln() / f64::from(dep.weight.max(1));
            let metric = match strategy {
                Strategy::Weighted | Strategy::Priority => 0.0,
                Strategy::LeastInFlight => st.in_flight as f64,
                Strategy::LowestLatency => st.latency_ms as f64,
                Strategy::UsageBased => -st.headroom(dep, now_ms),
            };
            Key {
                d,
                full: st.over_capacity(dep, now_ms),
                priority: dep.priority,
                metric,
                weighted,
                pos,
            }
        })
        .collect();
    keys.sort_by(|a, b| {
        a.full
            .cmp(&b.full)
            .then(a.priority.cmp(&b.priority))
            .then(a.metric.total_cmp(&b.metric))
            .then(if strategy == Strategy::Priority {
                a.pos.cmp(&b.pos)
            } else {
                b.weighted.total_cmp(&a.weighted)
            })
    });
    keys.into_iter().map(|k| k.d).collect()
}

/// Why no deployment can take the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// The caller's pin excludes every deployment of the model and of its
    /// fallbacks.
    Pinned { model: String, pin: String },
    /// Every allowed deployment is cooling down; the first is back in
    /// this many seconds.
    CoolingDown { model: String, retry_after: u64 },
}

impl NoRoute {
    pub fn error(&self) -> crate::error::ApiError {
        use crate::error::ApiError;
        match self {
            NoRoute::Pinned { model, pin } => ApiError::new(
                403,
                "permission_error",
                format!(
                    "No deployment of model `{model}` (or of its fallbacks) is in the \
                     {pin} your requests are restricted to."
                ),
            )
            .param("model")
            .code("deployment_not_allowed"),
            NoRoute::CoolingDown { model, retry_after } => {
                let mut e = ApiError::server(
                    503,
                    "no_deployment_available",
                    format!(
                        "Every deployment of model `{model}` is cooling down after repeated \
                         failures. Please try again in {retry_after} s."
                    ),
                );
                e.retry_after = Some(*retry_after);
                e
            }
        }
    }
}

/// The deployments `model` may use for `caller`, in the order to try them:
/// the model's own, then each fallback model's, each in its strategy's
/// order, without the ones the caller is pinned away from or that are
/// cooling down, at most `max_attempts`.
pub fn plan(
    cfg: &Config,
    model: usize,
    caller: &Caller,
    stats: &dyn Fn(usize) -> Stats,
    now_ms: u64,
    rng: &mut dyn Rng,
) -> Result<Vec<usize>, NoRoute> {
    let r = &cfg.routing;
    let pins: Vec<&Pin> = r.pins.iter().filter(|p| p.applies(caller)).collect();
    let m = &cfg.models[model];
    let mut out: Vec<usize> = Vec::new();
    let mut allowed_any = false;
    let mut back_in: Option<u64> = None;
    for &mi in std::iter::once(&model).chain(m.fallbacks.iter()) {
        let mm = &cfg.models[mi];
        let ok: Vec<usize> = mm
            .deployments
            .iter()
            .copied()
            .filter(|&d| !out.contains(&d))
            .filter(|&d| pins.iter().all(|p| p.allows(&cfg.deployments[d])))
            .collect();
        allowed_any |= !ok.is_empty();
        let warm: Vec<usize> = ok
            .into_iter()
            .filter(|&d| {
                let st = stats(d);
                if st.cooling(now_ms) {
                    let wait = st.cool_until_ms - now_ms;
                    back_in = Some(back_in.map_or(wait, |b| b.min(wait)));
                    false
                } else {
                    true
                }
            })
            .collect();
        out.extend(order(
            &cfg.deployments,
            &warm,
            mm.strategy,
            stats,
            now_ms,
            rng,
        ));
    }
    if out.is_empty() {
        return Err(if !allowed_any {
            NoRoute::Pinned {
                model: m.name.clone(),
                pin: pins
                    .iter()
                    .map(|p| p.describe())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        } else {
            NoRoute::CoolingDown {
                model: m.name.clone(),
                retry_after: back_in.unwrap_or(1000).div_ceil(1000).max(1),
            }
        });
    }
    out.truncate(r.max_attempts.max(1));
    Ok(out)
}

// ---------------------------------------------------------------- filter state

/// What the downstream filter tells the upstream filter (filter state
/// `llmgw_route`): the endpoint, the caller, the model to serve and the
/// client headers the endpoint forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCtx {
    pub endpoint: crate::request::Endpoint,
    pub caller: usize,
    pub model: usize,
    pub client_headers: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct RawCtx {
    e: String,
    c: usize,
    m: usize,
    #[serde(default)]
    h: Vec<(String, String)>,
}

impl RouteCtx {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "e": self.endpoint.suffix(),
            "c": self.caller,
            "m": self.model,
            "h": self.client_headers,
        })
        .to_string()
        .into_bytes()
    }

    pub fn decode(b: &[u8], cfg: &Config) -> Option<RouteCtx> {
        let r: RawCtx = serde_json::from_slice(b).ok()?;
        let endpoint = crate::request::Endpoint::from_suffix(&r.e)?;
        (r.c < cfg.callers.len() && r.m < cfg.models.len()).then_some(RouteCtx {
            endpoint,
            caller: r.c,
            model: r.m,
            client_headers: r.h,
        })
    }
}

/// One attempt as the filter state `llmgw_attempt` records it: which
/// deployment, when it started, its number, and whether it is still open
/// (its end not yet counted in the deployment's stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub deployment: usize,
    pub started_ms: u64,
    pub number: u32,
    pub open: bool,
    /// Whether its start reached the deployment's stats (the shared-data
    /// update can give up under contention); only then does its end take
    /// one off `in_flight`.
    pub counted: bool,
}

impl Attempt {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{} {} {} {} {}",
            self.deployment,
            self.started_ms,
            self.number,
            u8::from(self.open),
            u8::from(self.counted)
        )
        .into_bytes()
    }

    pub fn decode(b: &[u8]) -> Option<Attempt> {
        let s = std::str::from_utf8(b).ok()?;
        let mut it = s.split(' ');
        Some(Attempt {
            deployment: it.next()?.parse().ok()?,
            started_ms: it.next()?.parse().ok()?,
            number: it.next()?.parse().ok()?,
            open: it.next()? == "1",
            counted: it.next()? == "1",
        })
    }
}

/// Whether an attempt's answer status says the deployment failed (and
/// Envoy retries it elsewhere): 429, 5xx, Anthropic's 529.
pub fn failed_status(status: u16) -> bool {
    status == 429 || status >= 500
}

#[cfg(test)]
mod tests;
