//! Plugin configuration: a raw serde document (`deny_unknown_fields`)
//! validated once, at `on_configure`, into the typed [`Config`]. Every error
//! names the field it is about, e.g. `models[2].provider: unknown provider`.

use crate::providers::{Credential, Provider, ProviderCommon, ProviderKind, Secret, UnknownParams};
use crate::token::{self, TokenFetch};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

// ---------------------------------------------------------------- errors

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `providers[0].auth.env`, or `(config)` for the document itself.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A serde error at `base` (the deserialiser's own path is appended).
    pub fn serde<E: fmt::Display>(base: &str, e: serde_path_to_error::Error<E>) -> Self {
        let inner = e.path().to_string();
        let field = match (base.is_empty(), inner.as_str()) {
            // (An empty key, `{"": 1}`, is an empty path too.)
            (true, "." | "?" | "") => "(config)".to_string(),
            (true, _) => inner,
            (false, "." | "?" | "") => base.to_string(),
            (false, _) => format!("{base}.{inner}"),
        };
        ConfigError::new(field, e.into_inner().to_string())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

// ---------------------------------------------------------------- raw

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    cluster_header: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    providers: Vec<RawProvider>,
    models: Vec<RawModel>,
    #[serde(default)]
    default_model: Option<String>,
    #[serde(default)]
    callers: Vec<RawCaller>,
    #[serde(default)]
    identity_sources: Vec<RawIdentitySource>,
    #[serde(default)]
    quotas: Option<crate::quota::RawQuotas>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    routing: Option<RawRouting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    endpoint_header: Option<String>,
    #[serde(default)]
    max_attempts: Option<usize>,
    #[serde(default)]
    cooldown: Option<RawCooldown>,
    #[serde(default)]
    pinning: Vec<RawPin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCooldown {
    failures: u32,
    window_seconds: u64,
    seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    caller: Option<String>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    #[serde(default)]
    name: Option<String>,
    provider: String,
    #[serde(default)]
    upstream_model: Option<String>,
    endpoint: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Label metrics by caller (default), team, or none.
    #[serde(default)]
    by: crate::telemetry::LabelBy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    kind: ProviderKind,
    cluster: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    base_path: Option<String>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    unknown_params: Option<UnknownParams>,
    #[serde(default)]
    options: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AuthFrom {
    Injector,
    Env,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    from: AuthFrom,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Chat,
    Completion,
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Completion => "completion",
            ModelKind::Embedding => "embedding",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    upstream_model: Option<String>,
    #[serde(default)]
    deployments: Vec<RawDeployment>,
    #[serde(default)]
    strategy: Option<crate::routing::Strategy>,
    #[serde(default)]
    fallbacks: Vec<String>,
    #[serde(default)]
    context_window_fallback: Option<String>,
    #[serde(default)]
    kind: Option<ModelKind>,
    #[serde(default)]
    context_window: Option<u32>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    price: Option<RawPrice>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    drop_unsupported_params: bool,
    #[serde(default)]
    reserve_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    id: String,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    key_sha256: Option<OneOrMany>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// May read every caller's and team's `/v1/usage`.
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawIdentitySource {
    PeerCertificate,
    Xfcc {
        #[serde(default)]
        trusted_cidrs: Vec<String>,
        #[serde(default)]
        trusted_peers: Vec<String>,
        #[serde(default)]
        trust_any: bool,
    },
    Header {
        header: String,
        #[serde(default)]
        trusted_cidrs: Vec<String>,
        #[serde(default)]
        trusted_peers: Vec<String>,
        #[serde(default)]
        trust_any: bool,
    },
    Metadata {
        path: Vec<String>,
    },
}

// ---------------------------------------------------------------- typed

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    /// Micro-dollars per million tokens (integer arithmetic only).
    pub input_micros_per_mtok: u64,
    pub output_micros_per_mtok: u64,
    pub cached_input_micros_per_mtok: u64,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub aliases: Vec<String>,
    pub provider: usize,
    pub upstream: String,
    pub kind: ModelKind,
    pub context_window: Option<u32>,
    pub max_output_tokens: Option<u32>,
    pub price: Price,
    pub created: u64,
    /// Request parameters the provider cannot honour (e.g. `seed` for
    /// Anthropic) are dropped instead of rejected with a 400.
    pub drop_unsupported_params: bool,
    /// Completion tokens a request without `max_tokens` reserves against
    /// token quotas (else `quotas.default_reserve_tokens`).
    pub reserve_tokens: Option<u64>,
    /// Deployments serving the model (indices in `Config::deployments`;
    /// empty: the model is served by `provider` alone, without routing).
    /// With deployments, `provider` and `upstream` are the first one's.
    pub deployments: Vec<usize>,
    pub strategy: crate::routing::Strategy,
    /// Models (with deployments) to try, in order, when every deployment of
    /// this one failed.
    pub fallbacks: Vec<usize>,
    /// The model that takes prompts larger than `context_window`.
    pub context_fallback: Option<usize>,
}

impl Model {
    /// This model as served by deployment `d` (its provider and name).
    pub fn deployed(&self, d: &crate::routing::Deployment) -> Model {
        let mut m = self.clone();
        m.provider = d.provider;
        m.upstream = d.upstream.clone();
        m
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub team: Option<String>,
    pub principals: Vec<String>,
    pub models: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub admin: bool,
}

impl Caller {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.iter().any(|g| crate::glob::matches(g, model))
    }
}

/// A CIDR block (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                (u32::from(a) & mask) == (u32::from(b) & mask)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                (u128::from(a) & mask) == (u128::from(b) & mask)
            }
            _ => false,
        }
    }
}

/// Who may vouch for an identity header: the direct peer's address or its
/// certificate's URI SAN, or anyone (explicit opt-in).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub cidrs: Vec<Cidr>,
    pub peers: Vec<String>,
    pub any: bool,
}

#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// URI SAN of the direct peer's client certificate (mTLS, SPIFFE id).
    PeerCertificate,
    /// `URI=` of the first element of `x-forwarded-client-cert`.
    Xfcc(Trust),
    /// A header such as Istio's `outputClaimToHeaders` output.
    Header { header: String, trust: Trust },
    /// A string in dynamic metadata, e.g. the `sub` claim `jwt_authn` wrote:
    /// `["envoy.filters.http.jwt_authn", "jwt_payload", "sub"]`.
    Metadata { path: Vec<String> },
}

#[derive(Debug)]
pub struct Config {
    pub path_prefix: String,
    pub cluster_header: String,
    pub max_body_bytes: usize,
    pub providers: Vec<Box<dyn Provider>>,
    pub models: Vec<Model>,
    /// Name or alias → index in `models`.
    pub model_index: HashMap<String, usize>,
    pub default_model: Option<usize>,
    pub callers: Vec<Caller>,
    /// SHA-256 of a caller key → index in `callers`.
    pub key_index: HashMap<[u8; 32], usize>,
    pub identity_sources: Vec<IdentitySource>,
    /// Per-caller limits and usage accounting (`None`: not counted).
    pub quotas: Option<crate::quota::Quotas>,
    /// Whose usage the metrics label (see [`crate::telemetry`]).
    pub metrics_by: crate::telemetry::LabelBy,
    /// Every model's deployments; name → index in `deployment_index`.
    pub deployments: Vec<crate::routing::Deployment>,
    pub deployment_index: HashMap<String, usize>,
    pub routing: crate::routing::Routing,
    /// Request headers an attempt of a routed request may have set for its
    /// provider (credentials, version and signature headers). Envoy's
    /// attempts share one request header map, so the upstream filter removes
    /// all of them before it sets the next attempt's own.
    pub attempt_headers: Vec<String>,
}

pub const DEFAULT_CLUSTER_HEADER: &str = "x-llmgw-cluster";
pub const DEFAULT_MAX_BODY: u64 = 8 * 1024 * 1024;
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
const MAX_NAME: usize = 256;

fn valid_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `host[:port]`: a DNS name (letters, digits, `-`, `_`, non-empty labels
/// separated by dots), an IPv4 address, or a bracketed IPv6 address.
fn valid_authority(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => match t.strip_prefix(':') {
                        Some(p) => ("v6", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return false;
        }
    }
    host == "v6"
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && s.chars().all(|c| !c.is_control() && !c.is_whitespace())
}

fn price_micros(field: &str, usd_per_mtok: f64) -> Result<u64, ConfigError> {
    if !usd_per_mtok.is_finite() || !(0.0..=1_000_000.0).contains(&usd_per_mtok) {
        return Err(ConfigError::new(
            field,
            "must be a price in USD per million tokens, 0 to 1000000",
        ));
    }
    Ok((usd_per_mtok * 1_000_000.0).round() as u64)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn trust(
    path: &str,
    cidrs: Vec<String>,
    peers: Vec<String>,
    any: bool,
) -> Result<Trust, ConfigError> {
    let mut t = Trust {
        any,
        ..Trust::default()
    };
    for (i, c) in cidrs.iter().enumerate() {
        t.cidrs.push(Cidr::parse(c).ok_or_else(|| {
            ConfigError::new(format!("{path}.trusted_cidrs[{i}]"), "not a CIDR block")
        })?);
    }
    for (i, p) in peers.iter().enumerate() {
        if p.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.trusted_peers[{i}]"),
                "must not be empty",
            ));
        }
    }
    t.peers = peers;
    if !t.any && t.cidrs.is_empty() && t.peers.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.trusted_cidrs"),
            "a header-based identity needs trusted_cidrs or trusted_peers (who may set it), \
             or an explicit trust_any: true",
        ));
    }
    Ok(t)
}

/// One of a model's deployments, validated.
fn deployment(
    d: &RawDeployment,
    path: &str,
    model_name: &str,
    model: usize,
    kind: ModelKind,
    provider_index: &HashMap<String, usize>,
    providers: &[Box<dyn Provider>],
) -> Result<crate::routing::Deployment, ConfigError> {
    let provider = *provider_index.get(&d.provider).ok_or_else(|| {
        ConfigError::new(
            format!("{path}.provider"),
            format!("unknown provider '{}'", d.provider),
        )
    })?;
    if !providers[provider].supports(kind) {
        return Err(ConfigError::new(
            format!("{path}.provider"),
            format!(
                "provider '{}' cannot serve {} models",
                d.provider,
                kind.as_str()
            ),
        ));
    }
    let name = d
        .name
        .clone()
        .unwrap_or_else(|| format!("{model_name}@{}", d.provider));
    if !valid_name(&name) || name.contains('/') {
        return Err(ConfigError::new(
            format!("{path}.name"),
            "must be a non-empty name without spaces or '/'",
        ));
    }
    let upstream = d
        .upstream_model
        .clone()
        .unwrap_or_else(|| model_name.to_string());
    if !valid_name(&upstream) {
        return Err(ConfigError::new(
            format!("{path}.upstream_model"),
            "must be a non-empty name without spaces",
        ));
    }
    if d.endpoint.parse::<std::net::SocketAddr>().is_err() {
        return Err(ConfigError::new(
            format!("{path}.endpoint"),
            "must be the IP:port of this deployment's endpoint in the routing cluster \
             (e.g. 127.0.0.1:10001; Envoy's override_host policy matches addresses, not names)",
        ));
    }
    let weight = d.weight.unwrap_or(1);
    if !(1..=1_000_000).contains(&weight) {
        return Err(ConfigError::new(
            format!("{path}.weight"),
            "must be between 1 and 1000000",
        ));
    }
    for (field, v) in [("rpm", d.rpm), ("tpm", d.tpm)] {
        if v == Some(0) {
            return Err(ConfigError::new(
                format!("{path}.{field}"),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
    }
    if let Some(r) = &d.region {
        if !valid_name(r) {
            return Err(ConfigError::new(
                format!("{path}.region"),
                "must be a non-empty name without spaces",
            ));
        }
    }
    for (j, t) in d.tags.iter().enumerate() {
        if !valid_name(t) {
            return Err(ConfigError::new(
                format!("{path}.tags[{j}]"),
                "must be a non-empty name without spaces",
            ));
        }
    }
    Ok(crate::routing::Deployment {
        name,
        model,
        provider,
        upstream,
        endpoint: d.endpoint.clone(),
        weight,
        priority: d.priority,
        rpm: d.rpm,
        tpm: d.tpm,
        region: d.region.clone(),
        tags: d.tags.clone(),
    })
}

fn routing(
    raw: Option<RawRouting>,
    callers: &[Caller],
) -> Result<crate::routing::Routing, ConfigError> {
    let mut r = crate::routing::Routing::default();
    let Some(raw) = raw else {
        return Ok(r);
    };
    if let Some(c) = raw.cluster {
        if c.is_empty() || c.contains(['\r', '\n', '\0']) {
            return Err(ConfigError::new(
                "routing.cluster",
                "must name the Envoy cluster",
            ));
        }
        r.cluster = c;
    }
    if let Some(h) = raw.endpoint_header {
        if !valid_header_name(&h) {
            return Err(ConfigError::new(
                "routing.endpoint_header",
                "must be a lower-case header name",
            ));
        }
        r.endpoint_header = h;
    }
    if let Some(n) = raw.max_attempts {
        if !(1..=10).contains(&n) {
            return Err(ConfigError::new(
                "routing.max_attempts",
                "must be between 1 and 10",
            ));
        }
        r.max_attempts = n;
    }
    if let Some(c) = raw.cooldown {
        if c.failures > 0 && (c.window_seconds == 0 || c.seconds == 0) {
            return Err(ConfigError::new(
                "routing.cooldown",
                "window_seconds and seconds must be at least 1 (failures: 0 turns cooldown off)",
            ));
        }
        if c.window_seconds > 86_400 || c.seconds > 86_400 {
            return Err(ConfigError::new(
                "routing.cooldown",
                "window_seconds and seconds are at most 86400",
            ));
        }
        r.cooldown = crate::routing::Cooldown {
            failures: c.failures,
            window_ms: c.window_seconds * 1000,
            cooldown_ms: c.seconds * 1000,
        };
    }
    for (i, p) in raw.pinning.into_iter().enumerate() {
        let path = format!("routing.pinning[{i}]");
        match (&p.team, &p.caller) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ConfigError::new(
                    path,
                    "a pin names either a team or a caller",
                ))
            }
            (None, Some(c)) if !callers.iter().any(|x| &x.id == c) => {
                return Err(ConfigError::new(
                    format!("{path}.caller"),
                    format!("unknown caller '{c}'"),
                ))
            }
            _ => {}
        }
        if p.regions.is_empty() && p.tags.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.regions"),
                "a pin needs regions or tags",
            ));
        }
        r.pins.push(crate::routing::Pin {
            team: p.team,
            caller: p.caller,
            regions: p.regions,
            tags: p.tags,
        });
    }
    Ok(r)
}

impl Config {
    /// Parse and validate a plugin configuration. `env` looks up VM
    /// environment variables (for provider keys given by name).
    pub fn parse(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::serde("", e))?;
        Self::validate(raw, env)
    }

    fn validate(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/v1".to_string());
        if !path_prefix.starts_with('/')
            || (path_prefix.len() > 1 && path_prefix.ends_with('/'))
            || path_prefix.contains(['?', '#', ' '])
        {
            return Err(ConfigError::new(
                "path_prefix",
                "must start with '/' and not end with '/' (e.g. /v1 or /llm/v1)",
            ));
        }
        let path_prefix = if path_prefix == "/" {
            String::new()
        } else {
            path_prefix
        };
        let cluster_header = raw
            .cluster_header
            .unwrap_or_else(|| DEFAULT_CLUSTER_HEADER.to_string());
        if !valid_header_name(&cluster_header) {
            return Err(ConfigError::new(
                "cluster_header",
                "must be a lower-case header name",
            ));
        }
        let max_body = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if max_body == 0 || max_body > MAX_BODY_LIMIT {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_BODY_LIMIT}"),
            ));
        }

        // providers
        if raw.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "at least one provider is needed",
            ));
        }
        let mut providers: Vec<Box<dyn Provider>> = Vec::new();
        let mut provider_index: HashMap<String, usize> = HashMap::new();
        for (i, p) in raw.providers.into_iter().enumerate() {
            let path = format!("providers[{i}]");
            if !valid_name(&p.name) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    "must be a non-empty name without spaces",
                ));
            }
            if provider_index.contains_key(&p.name) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    format!("duplicate provider name '{}'", p.name),
                ));
            }
            if p.cluster.is_empty() || p.cluster.contains(['\r', '\n', '\0']) {
                return Err(ConfigError::new(
                    format!("{path}.cluster"),
                    "must name the Envoy cluster",
                ));
            }
            let d = p.kind.defaults();
            let host = match p.host.or_else(|| d.host.map(str::to_string)) {
                Some(h) => h,
                None => {
                    return Err(ConfigError::new(
                        format!("{path}.host"),
                        format!("is required for kind {}", p.kind.as_str()),
                    ))
                }
            };
            if !valid_authority(&host) {
                return Err(ConfigError::new(
                    format!("{path}.host"),
                    "must be a host name, optionally with :port",
                ));
            }
            let base_path = p.base_path.unwrap_or_else(|| d.base_path.to_string());
            if !(base_path.is_empty() || (base_path.starts_with('/') && !base_path.ends_with('/')))
                || base_path.contains(['?', '#', ' ', '\r', '\n'])
            {
                return Err(ConfigError::new(
                    format!("{path}.base_path"),
                    "must start with '/' and not end with '/'",
                ));
            }
            let auth_from = p.auth.as_ref().map(|a| a.from);
            let credential = match p.auth {
                None => Credential::Injected,
                Some(a) => {
                    let header = a.header.unwrap_or_else(|| d.auth_header.to_string());
                    if !valid_header_name(&header) {
                        return Err(ConfigError::new(
                            format!("{path}.auth.header"),
                            "must be a lower-case header name",
                        ));
                    }
                    let prefix = a.prefix.unwrap_or_else(|| d.auth_prefix.to_string());
                    match a.from {
                        AuthFrom::Injector | AuthFrom::None if a.env.is_some() => {
                            return Err(ConfigError::new(
                                format!("{path}.auth.env"),
                                "only used with from: env",
                            ))
                        }
                        AuthFrom::Injector => Credential::Injected,
                        AuthFrom::None => Credential::None,
                        AuthFrom::Env => {
                            let name = a.env.ok_or_else(|| {
                                ConfigError::new(
                                    format!("{path}.auth.env"),
                                    "from: env needs the variable's name",
                                )
                            })?;
                            let value = env(&name).filter(|v| !v.is_empty()).ok_or_else(|| {
                                ConfigError::new(
                                    format!("{path}.auth.env"),
                                    format!("environment variable {name} is not set in the Wasm VM (vm_config.environment_variables)"),
                                )
                            })?;
                            if value.contains(['\r', '\n', '\0']) {
                                return Err(ConfigError::new(
                                    format!("{path}.auth.env"),
                                    format!(
                                        "environment variable {name} holds a control character"
                                    ),
                                ));
                            }
                            Credential::Header {
                                header,
                                value: Secret(format!("{prefix}{}", value.trim())),
                            }
                        }
                    }
                }
            };
            let common = ProviderCommon {
                name: p.name.clone(),
                kind: p.kind,
                cluster: p.cluster,
                host,
                base_path,
                credential,
                unknown_params: p.unknown_params.unwrap_or(d.unknown_params),
            };
            let built = p.kind.build(common, p.options.as_ref(), &path, env)?;
            if built.token_source().is_some() && !matches!(auth_from, None | Some(AuthFrom::None)) {
                return Err(ConfigError::new(
                    format!("{path}.auth"),
                    "must be absent or {\"from\": \"none\"} with options.token_source \
                     (the filter sets the token itself)",
                ));
            }
            provider_index.insert(p.name, providers.len());
            providers.push(built);
        }

        // models
        if raw.models.is_empty() {
            return Err(ConfigError::new("models", "at least one model is needed"));
        }
        let mut models = Vec::new();
        let mut model_index: HashMap<String, usize> = HashMap::new();
        let mut deployments: Vec<crate::routing::Deployment> = Vec::new();
        let mut deployment_index: HashMap<String, usize> = HashMap::new();
        type Links = (usize, Vec<String>, Option<String>);
        let mut pending_links: Vec<Links> = Vec::new();
        for (i, m) in raw.models.into_iter().enumerate() {
            let path = format!("models[{i}]");
            if !valid_name(&m.name) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    "must be a non-empty name without spaces, at most 256 bytes",
                ));
            }
            let kind = m.kind.unwrap_or(ModelKind::Chat);
            let idx = models.len();
            let mut deps = Vec::new();
            let (provider, upstream) = match (&m.provider, m.deployments.is_empty()) {
                (Some(_), false) => {
                    return Err(ConfigError::new(
                        format!("{path}.provider"),
                        "a model has either a provider or deployments, not both",
                    ))
                }
                (None, true) => {
                    return Err(ConfigError::new(
                        format!("{path}.provider"),
                        "a model needs a provider (or deployments)",
                    ))
                }
                (Some(pname), true) => {
                    let provider = *provider_index.get(pname).ok_or_else(|| {
                        ConfigError::new(
                            format!("{path}.provider"),
                            format!("unknown provider '{pname}'"),
                        )
                    })?;
                    if !providers[provider].supports(kind) {
                        return Err(ConfigError::new(
                            format!("{path}.kind"),
                            format!("provider '{pname}' cannot serve {} models", kind.as_str()),
                        ));
                    }
                    let upstream = m.upstream_model.clone().unwrap_or_else(|| m.name.clone());
                    if !valid_name(&upstream) {
                        return Err(ConfigError::new(
                            format!("{path}.upstream_model"),
                            "must be a non-empty name without spaces",
                        ));
                    }
                    (provider, upstream)
                }
                (None, false) => {
                    if m.upstream_model.is_some() {
                        return Err(ConfigError::new(
                            format!("{path}.upstream_model"),
                            "set upstream_model on each deployment",
                        ));
                    }
                    for (j, d) in m.deployments.iter().enumerate() {
                        let dpath = format!("{path}.deployments[{j}]");
                        let dep =
                            deployment(d, &dpath, &m.name, idx, kind, &provider_index, &providers)?;
                        if deployment_index.contains_key(&dep.name) {
                            return Err(ConfigError::new(
                                format!("{dpath}.name"),
                                format!("duplicate deployment name '{}'", dep.name),
                            ));
                        }
                        if let Some(other) = deployments
                            .iter()
                            .find(|o: &&crate::routing::Deployment| o.endpoint == dep.endpoint)
                        {
                            return Err(ConfigError::new(
                                format!("{dpath}.endpoint"),
                                format!(
                                    "endpoint {} is already deployment '{}''s: each deployment \
                                     needs its own endpoint in the routing cluster",
                                    dep.endpoint, other.name
                                ),
                            ));
                        }
                        deployment_index.insert(dep.name.clone(), deployments.len());
                        deps.push(deployments.len());
                        deployments.push(dep);
                    }
                    let first = &deployments[deps[0]];
                    (first.provider, first.upstream.clone())
                }
            };
            if m.strategy.is_some() && deps.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.strategy"),
                    "only a model with deployments has a strategy",
                ));
            }
            if !m.fallbacks.is_empty() && deps.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.fallbacks"),
                    "only a model with deployments has fallbacks",
                ));
            }
            pending_links.push((idx, m.fallbacks.clone(), m.context_window_fallback.clone()));
            let price = match m.price {
                None => Price::default(),
                Some(p) => Price {
                    input_micros_per_mtok: price_micros(&format!("{path}.price.input"), p.input)?,
                    output_micros_per_mtok: price_micros(
                        &format!("{path}.price.output"),
                        p.output,
                    )?,
                    cached_input_micros_per_mtok: match p.cached_input {
                        Some(c) => price_micros(&format!("{path}.price.cached_input"), c)?,
                        None => price_micros(&format!("{path}.price.input"), p.input)?,
                    },
                },
            };
            for (j, n) in std::iter::once(&m.name).chain(m.aliases.iter()).enumerate() {
                let field = if j == 0 {
                    format!("{path}.name")
                } else {
                    format!("{path}.aliases[{}]", j - 1)
                };
                if !valid_name(n) {
                    return Err(ConfigError::new(
                        field,
                        "must be a non-empty name without spaces",
                    ));
                }
                if model_index.insert(n.clone(), idx).is_some() {
                    return Err(ConfigError::new(
                        field,
                        format!("'{n}' is already the name or an alias of another model"),
                    ));
                }
            }
            models.push(Model {
                name: m.name,
                aliases: m.aliases,
                provider,
                upstream,
                kind,
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                price,
                created: m.created.unwrap_or(1_700_000_000),
                drop_unsupported_params: m.drop_unsupported_params,
                reserve_tokens: m.reserve_tokens,
                deployments: deps,
                strategy: m.strategy.unwrap_or_default(),
                fallbacks: Vec::new(),
                context_fallback: None,
            });
        }
        // Fallbacks name other models: resolved once all are known.
        for (idx, fallbacks, ctx) in pending_links {
            let path = format!("models[{idx}]");
            for (j, f) in fallbacks.iter().enumerate() {
                let field = format!("{path}.fallbacks[{j}]");
                let fi = *model_index.get(f).ok_or_else(|| {
                    ConfigError::new(&field, format!("'{f}' is not a model name or alias"))
                })?;
                if fi == idx || models[idx].fallbacks.contains(&fi) {
                    return Err(ConfigError::new(field, "must name another model, once"));
                }
                if models[fi].deployments.is_empty() {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "'{f}' has no deployments: a fallback is tried through the routing \
                             cluster, so it needs deployments"
                        ),
                    ));
                }
                if models[fi].kind != models[idx].kind {
                    return Err(ConfigError::new(
                        field,
                        format!("'{f}' is not a {} model", models[idx].kind.as_str()),
                    ));
                }
                models[idx].fallbacks.push(fi);
            }
            if let Some(c) = ctx {
                let field = format!("{path}.context_window_fallback");
                let ci = *model_index.get(&c).ok_or_else(|| {
                    ConfigError::new(&field, format!("'{c}' is not a model name or alias"))
                })?;
                let (this, other) = (&models[idx], &models[ci]);
                if ci == idx || other.kind != this.kind {
                    return Err(ConfigError::new(
                        field,
                        format!("must name another {} model", this.kind.as_str()),
                    ));
                }
                match (this.context_window, other.context_window) {
                    (None, _) => {
                        return Err(ConfigError::new(
                            field,
                            "needs the model's context_window (the size that sends a prompt to the fallback)",
                        ))
                    }
                    (Some(a), Some(b)) if b <= a => {
                        return Err(ConfigError::new(
                            field,
                            format!("'{c}' has no larger context_window ({b} ≤ {a})"),
                        ))
                    }
                    _ => {}
                }
                models[idx].context_fallback = Some(ci);
            }
        }
        let default_model = match raw.default_model {
            None => None,
            Some(d) => Some(*model_index.get(&d).ok_or_else(|| {
                ConfigError::new(
                    "default_model",
                    format!("'{d}' is not a model name or alias"),
                )
            })?),
        };

        // callers
        let mut callers = Vec::new();
        let mut key_index = HashMap::new();
        let mut ids = HashMap::new();
        for (i, c) in raw.callers.into_iter().enumerate() {
            let path = format!("callers[{i}]");
            if !valid_name(&c.id) {
                return Err(ConfigError::new(
                    format!("{path}.id"),
                    "must be a non-empty id without spaces",
                ));
            }
            if ids.insert(c.id.clone(), i).is_some() {
                return Err(ConfigError::new(
                    format!("{path}.id"),
                    format!("duplicate caller id '{}'", c.id),
                ));
            }
            if let Some(t) = &c.team {
                if !valid_name(t) {
                    return Err(ConfigError::new(
                        format!("{path}.team"),
                        "must be a non-empty name without spaces",
                    ));
                }
            }
            let keys = match c.key_sha256 {
                None => vec![],
                Some(OneOrMany::One(k)) => vec![k],
                Some(OneOrMany::Many(v)) => v,
            };
            for (j, k) in keys.iter().enumerate() {
                let digest = parse_hex32(k).ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.key_sha256[{j}]"),
                        "must be the hex SHA-256 of the caller's key (64 hex digits; `llmgw key new` prints it)",
                    )
                })?;
                if key_index.insert(digest, callers.len()).is_some() {
                    return Err(ConfigError::new(
                        format!("{path}.key_sha256[{j}]"),
                        "this key hash belongs to another caller too",
                    ));
                }
            }
            for (j, p) in c.principals.iter().enumerate() {
                if p.is_empty() {
                    return Err(ConfigError::new(
                        format!("{path}.principals[{j}]"),
                        "must not be empty",
                    ));
                }
            }
            if keys.is_empty() && c.principals.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.key_sha256"),
                    "a caller needs key_sha256 or principals",
                ));
            }
            let models_allowed = c.models.unwrap_or_else(|| vec!["*".to_string()]);
            for (j, g) in models_allowed.iter().enumerate() {
                if g.is_empty() {
                    return Err(ConfigError::new(
                        format!("{path}.models[{j}]"),
                        "must not be empty",
                    ));
                }
            }
            callers.push(Caller {
                id: c.id,
                team: c.team,
                principals: c.principals,
                models: models_allowed,
                labels: c.labels,
                admin: c.admin,
            });
        }

        // identity sources
        let mut identity_sources = Vec::new();
        for (i, s) in raw.identity_sources.into_iter().enumerate() {
            let path = format!("identity_sources[{i}]");
            identity_sources.push(match s {
                RawIdentitySource::PeerCertificate => IdentitySource::PeerCertificate,
                RawIdentitySource::Xfcc {
                    trusted_cidrs,
                    trusted_peers,
                    trust_any,
                } => IdentitySource::Xfcc(trust(&path, trusted_cidrs, trusted_peers, trust_any)?),
                RawIdentitySource::Header {
                    header,
                    trusted_cidrs,
                    trusted_peers,
                    trust_any,
                } => {
                    if !valid_header_name(&header)
                        || matches!(header.as_str(), "authorization" | "api-key" | "x-api-key")
                    {
                        return Err(ConfigError::new(
                            format!("{path}.header"),
                            "must be a lower-case header name other than the key headers",
                        ));
                    }
                    IdentitySource::Header {
                        header,
                        trust: trust(&path, trusted_cidrs, trusted_peers, trust_any)?,
                    }
                }
                RawIdentitySource::Metadata { path: p } => {
                    if p.is_empty() || p.iter().any(|s| s.is_empty()) {
                        return Err(ConfigError::new(
                            format!("{path}.path"),
                            "must be a non-empty list of non-empty keys",
                        ));
                    }
                    IdentitySource::Metadata { path: p }
                }
            });
        }

        let quotas = match raw.quotas {
            None => None,
            Some(q) => Some(crate::quota::Quotas::validate(q, &callers, &|name| {
                model_index.get(name).map(|&i| models[i].name.clone())
            })?),
        };

        let routing = routing(raw.routing, &callers)?;
        let mut attempt_headers: Vec<String> = crate::gateway::STRIP_REQUEST_HEADERS
            .iter()
            .chain(["x-amz-date", "x-amz-content-sha256", "content-type"].iter())
            .map(|s| s.to_string())
            .collect();
        for p in &providers {
            if let crate::providers::Credential::Header { header, .. } = &p.common().credential {
                attempt_headers.push(header.clone());
            }
        }
        attempt_headers.sort_unstable();
        attempt_headers.dedup();

        Ok(Config {
            deployments,
            deployment_index,
            routing,
            attempt_headers,
            quotas,
            metrics_by: raw.metrics.map(|m| m.by).unwrap_or_default(),
            path_prefix,
            cluster_header,
            max_body_bytes: max_body as usize,
            providers,
            models,
            model_index,
            default_model,
            callers,
            key_index,
            identity_sources,
        })
    }

    /// Request headers that carry a mesh identity to the filter; they are
    /// not forwarded to providers.
    pub fn identity_headers(&self) -> Vec<&str> {
        self.identity_sources
            .iter()
            .filter_map(|s| match s {
                IdentitySource::Header { header, .. } => Some(header.as_str()),
                IdentitySource::Xfcc(_) => Some("x-forwarded-client-cert"),
                _ => None,
            })
            .collect()
    }

    pub fn provider(&self, model: &Model) -> &dyn Provider {
        self.providers[model.provider].as_ref()
    }

    /// The tokens the filter fetches itself and keeps in shared data, one
    /// per provider with a `token_source`.
    pub fn token_fetches(&self) -> Vec<TokenFetch> {
        self.providers
            .iter()
            .filter_map(|p| {
                let t = p.token_source()?;
                let name = &p.common().name;
                Some(TokenFetch {
                    provider: name.clone(),
                    key: token::key_for(name),
                    cluster: t.cluster.clone(),
                    host: t.host.clone(),
                    path: t.path.clone(),
                })
            })
            .collect()
    }

    /// The shared-data key of provider `index`'s bearer token, when the
    /// filter fetches it itself.
    pub fn bearer_key(&self, index: usize) -> Option<String> {
        let p = self.providers.get(index)?;
        p.token_source().map(|_| token::key_for(&p.common().name))
    }

    /// Look a model up by name or alias.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.model_index.get(name).map(|&i| &self.models[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "api.openai.com",
            "localhost:11434",
            "my_host.internal:443",
            "10.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "bedrock-runtime.us-east-1.amazonaws.com",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            ".com",
            "host:",
            "host:0",
            "host:65536",
            "host:80:80",
            "user@host",
            "host/path",
            "host?q",
            "[::1",
            "[zz::1]",
            "[::1]x",
            "ho st",
            "hÃ¶st.de",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn drop_unsupported_params_defaults_off_and_is_typed() {
        let doc = |extra: &str| {
            format!(
                r#"{{"providers":[{{"name":"a","kind":"anthropic","cluster":"anthropic"}}],
                "models":[{{"name":"c","provider":"a"{extra}}}]}}"#
            )
        };
        let c = Config::parse(doc("").as_bytes(), &|_| None).unwrap();
        assert!(!c.models[0].drop_unsupported_params);
        let c = Config::parse(
            doc(r#","drop_unsupported_params":true"#).as_bytes(),
            &|_| None,
        )
        .unwrap();
        assert!(c.models[0].drop_unsupported_params);
        let e = Config::parse(
            doc(r#","drop_unsupported_params":"yes""#).as_bytes(),
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.field, "models[0].drop_unsupported_params");
    }

    #[test]
    fn anthropic_serves_chat_only() {
        let doc = r#"{"providers":[{"name":"a","kind":"anthropic","cluster":"anthropic"}],
            "models":[{"name":"e","provider":"a","kind":"embedding"}]}"#;
        let e = Config::parse(doc.as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.field, "models[0].kind");
        let doc = r#"{"providers":[{"name":"a","kind":"anthropic","cluster":"anthropic"}],
            "models":[{"name":"c","provider":"a","kind":"completion"}]}"#;
        assert!(Config::parse(doc.as_bytes(), &|_| None).is_err());
    }
}
