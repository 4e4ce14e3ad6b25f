//! Metrics and the audit record of one request, in plain Rust: what to
//! count and what to write, from how the request ended. The glue defines the
//! metrics (proxy-wasm `define_metric`) and sets the audit fields as filter
//! state (`set_property`), which the shipped access log writes.
//!
//! Metric names carry their labels as `.key=value` segments, which the
//! shipped Envoy configs turn into Prometheus labels with `stats_tags`
//! regexes (see [`STATS_TAGS`]): `gen_ai.client.token.usage.caller=demo
//! .model=gpt-4o-mini.provider=openai.token_type=input` becomes
//! `gen_ai_client_token_usage{caller="demo",gen_ai_request_model="gpt-4o-mini",
//! gen_ai_provider_name="openai",gen_ai_token_type="input"}`. Label values
//! come from the configuration only (caller ids or teams, model and
//! provider names), never from a request, so the series are bounded by the
//! config; characters other than `[A-Za-z0-9_-]` become `_`.

use crate::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric change: add `value` to a counter or gauge, or record it in a
/// histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub kind: MetricKind,
    pub name: String,
    pub value: i64,
}

/// Whose usage the metrics label: the caller, its team, or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelBy {
    #[default]
    Caller,
    Team,
    None,
}

/// Metric base names (OpenTelemetry GenAI semantic conventions where one
/// exists; durations in milliseconds since Envoy histograms are integers).
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const REQUEST_DURATION: &str = "gen_ai.server.request.duration";
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token";
pub const REQUESTS: &str = "llmgw.requests";
pub const IN_FLIGHT: &str = "llmgw.requests_in_flight";
pub const QUOTA_REJECTIONS: &str = "llmgw.quota.rejections";
pub const PROVIDER_ERRORS: &str = "llmgw.provider.errors";
pub const COST: &str = "llmgw.cost.usd_micros";
/// Routed requests by the deployment that answered; attempts per request.
pub const DEPLOYMENT_REQUESTS: &str = "llmgw.deployment.requests";
pub const ATTEMPTS: &str = "llmgw.routing.attempts";
/// Failed attempts by deployment and reason, and cooldowns started.
pub const DEPLOYMENT_FAILURES: &str = "llmgw.deployment.failures";
pub const COOLDOWNS: &str = "llmgw.deployment.cooldowns";

/// The `stats_config.stats_tags` of the shipped Envoy configs: (tag name,
/// regex). The first group is cut from the name, the second is the value.
pub const STATS_TAGS: [(&str, &str); 9] = [
    ("caller", r"(\.caller=([^.]+))"),
    ("team", r"(\.team=([^.]+))"),
    ("gen_ai_request_model", r"(\.model=([^.]+))"),
    ("gen_ai_provider_name", r"(\.provider=([^.]+))"),
    ("gen_ai_token_type", r"(\.token_type=([^.]+))"),
    ("status_class", r"(\.status_class=([^.]+))"),
    ("quota_limit", r"(\.limit=([^.]+))"),
    ("deployment", r"(\.deployment=([^.]+))"),
    ("reason", r"(\.reason=([^.]+))"),
];

fn clean(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `base` with its labels as `.key=value` segments.
pub fn metric_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(base.len() + 64);
    s.push_str(base);
    for (k, v) in labels {
        s.push('.');
        s.push_str(k);
        s.push('=');
        s.push_str(&clean(v));
    }
    s
}

/// How a request ended, as far as telemetry cares.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// The caller id and team (if the caller was identified).
    pub caller: Option<(&'a str, Option<&'a str>)>,
    /// The configured model name asked for, its provider's name and kind,
    /// and the upstream model (if the request got that far).
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    /// The status the client got.
    pub status: u16,
    /// The provider answered with an error (its status).
    pub provider_error: Option<u16>,
    pub usage: Option<Usage>,
    pub cost_micros: u64,
    /// From the request's headers to its end, and to the first byte of a
    /// streamed answer.
    pub duration_ms: u64,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    /// `admitted`, `refused:<limit>`, or `none` (no quotas, or not counted).
    pub quota: String,
    /// Routed models: the deployment that answered (or was tried last) and
    /// the number of attempts.
    pub deployment: Option<&'a str>,
    pub attempts: u32,
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Outcome<'_> {
    fn who(&self, by: LabelBy) -> Option<(&'static str, &str)> {
        let (id, team) = self.caller?;
        match by {
            LabelBy::Caller => Some(("caller", id)),
            LabelBy::Team => Some(("team", team.unwrap_or("none"))),
            LabelBy::None => None,
        }
    }

    /// The metric changes of a request that ended.
    pub fn updates(&self, by: LabelBy) -> Vec<Update> {
        let mut out = Vec::new();
        let who = self.who(by);
        let who_l: Vec<(&str, &str)> = who.into_iter().collect();
        let class = status_class(self.status);
        if let Some(limit) = self.quota.strip_prefix("refused:") {
            let mut l = who_l.clone();
            l.push(("limit", limit));
            out.push(Update {
                kind: MetricKind::Counter,
                name: metric_name(QUOTA_REJECTIONS, &l),
                value: 1,
            });
        }
        let (Some(model), Some(provider)) = (self.model, self.provider) else {
            return out;
        };
        let mut l = who_l.clone();
        l.extend([
            ("model", model),
            ("provider", provider),
            ("status_class", class),
        ]);
        out.push(Update {
            kind: MetricKind::Counter,
            name: metric_name(REQUESTS, &l),
            value: 1,
        });
        if self.quota.starts_with("refused:") {
            return out;
        }
        let mp = [("model", model), ("provider", provider)];
        out.push(Update {
            kind: MetricKind::Histogram,
            name: metric_name(REQUEST_DURATION, &mp),
            value: self.duration_ms as i64,
        });
        if let Some(t) = self.ttft_ms {
            out.push(Update {
                kind: MetricKind::Histogram,
                name: metric_name(TIME_TO_FIRST_TOKEN, &mp),
                value: t as i64,
            });
        }
        if let Some(s) = self.provider_error {
            out.push(Update {
                kind: MetricKind::Counter,
                name: metric_name(
                    PROVIDER_ERRORS,
                    &[("provider", provider), ("status_class", status_class(s))],
                ),
                value: 1,
            });
        }
        if let Some(u) = &self.usage {
            let fresh_input = u.prompt_tokens;
            for (kind, n) in [
                ("input", fresh_input),
                ("output", u.completion_tokens),
                ("cached", u.cached_tokens),
                ("reasoning", u.reasoning_tokens),
            ] {
                if n == 0 {
                    continue;
                }
                let mut l = who_l.clone();
                l.extend([
                    ("model", model),
                    ("provider", provider),
                    ("token_type", kind),
                ]);
                out.push(Update {
                    kind: MetricKind::Counter,
                    name: metric_name(TOKEN_USAGE, &l),
                    value: n as i64,
                });
            }
        }
        if let Some(d) = self.deployment {
            out.push(Update {
                kind: MetricKind::Counter,
                name: metric_name(
                    DEPLOYMENT_REQUESTS,
                    &[("model", model), ("deployment", d), ("status_class", class)],
                ),
                value: 1,
            });
            out.push(Update {
                kind: MetricKind::Histogram,
                name: metric_name(ATTEMPTS, &[("model", model)]),
                value: i64::from(self.attempts.max(1)),
            });
        }
        if self.cost_micros > 0 {
            let mut l = who_l;
            l.push(("model", model));
            out.push(Update {
                kind: MetricKind::Counter,
                name: metric_name(COST, &l),
                value: self.cost_micros as i64,
            });
        }
        out
    }

    /// The audit fields, as filter state names (`wasm.<name>` in the access
    /// log) and values. Never a prompt, a completion or a key.
    pub fn audit(&self) -> Vec<(&'static str, String)> {
        let u = self.usage.unwrap_or_default();
        let (caller, team) = self.caller.unwrap_or(("", None));
        vec![
            ("llmgw_caller", caller.to_string()),
            ("llmgw_team", team.unwrap_or("").to_string()),
            ("llmgw_model", self.model.unwrap_or("").to_string()),
            ("llmgw_provider", self.provider.unwrap_or("").to_string()),
            (
                "llmgw_upstream_model",
                self.upstream_model.unwrap_or("").to_string(),
            ),
            ("llmgw_prompt_tokens", u.prompt_tokens.to_string()),
            ("llmgw_completion_tokens", u.completion_tokens.to_string()),
            ("llmgw_cached_tokens", u.cached_tokens.to_string()),
            ("llmgw_cost_usd_micros", self.cost_micros.to_string()),
            ("llmgw_duration_ms", self.duration_ms.to_string()),
            (
                "llmgw_ttft_ms",
                self.ttft_ms.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("llmgw_stream", self.stream.to_string()),
            ("llmgw_quota", self.quota.clone()),
            (
                "llmgw_deployment",
                self.deployment.unwrap_or("").to_string(),
            ),
            (
                "llmgw_attempts",
                if self.deployment.is_some() {
                    self.attempts.max(1).to_string()
                } else {
                    String::new()
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome<'static> {
        Outcome {
            caller: Some(("demo", Some("demo-team"))),
            model: Some("qwen2.5-7b"),
            provider: Some("vllm"),
            upstream_model: Some("Qwen/Qwen2.5-7B-Instruct"),
            status: 200,
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
                cached_tokens: 2,
                reasoning_tokens: 0,
            }),
            cost_micros: 7,
            duration_ms: 120,
            ttft_ms: Some(30),
            stream: true,
            quota: "admitted".into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_carry_clean_labels() {
        assert_eq!(
            metric_name(TOKEN_USAGE, &[("caller", "a.b c"), ("model", "qwen2.5-7b")]),
            "gen_ai.client.token.usage.caller=a_b_c.model=qwen2_5-7b"
        );
    }

    #[test]
    fn updates_of_a_stream() {
        let u = outcome().updates(LabelBy::Caller);
        let names: Vec<&str> = u.iter().map(|x| x.name.as_str()).collect();
        assert!(names.contains(
            &"gen_ai.client.token.usage.caller=demo.model=qwen2_5-7b.provider=vllm.token_type=output"
        ));
        assert!(names.contains(
            &"llmgw.requests.caller=demo.model=qwen2_5-7b.provider=vllm.status_class=2xx"
        ));
        assert!(names.contains(&"gen_ai.server.time_to_first_token.model=qwen2_5-7b.provider=vllm"));
        assert!(
            !names.iter().any(|n| n.contains("reasoning")),
            "zero counts are skipped"
        );
        let team = outcome().updates(LabelBy::Team);
        assert!(team.iter().all(|x| !x.name.contains("caller=")));
        assert!(team.iter().any(|x| x.name.contains("team=demo-team")));
    }

    #[test]
    fn refusals_and_provider_errors() {
        let mut o = outcome();
        o.quota = "refused:requests_per_minute".into();
        o.status = 429;
        o.usage = None;
        let u = o.updates(LabelBy::Caller);
        assert!(u
            .iter()
            .any(|x| x.name == "llmgw.quota.rejections.caller=demo.limit=requests_per_minute"));
        assert!(!u.iter().any(|x| x.name.starts_with(REQUEST_DURATION)));
        let mut o = outcome();
        o.provider_error = Some(503);
        o.status = 503;
        let u = o.updates(LabelBy::None);
        assert!(u
            .iter()
            .any(|x| x.name == "llmgw.provider.errors.provider=vllm.status_class=5xx"));
        assert!(u.iter().all(|x| !x.name.contains("caller=")));
    }

    #[test]
    fn tag_regexes_cut_every_label() {
        for (_, re) in STATS_TAGS {
            assert!(re.starts_with(r"(\.") && re.ends_with("=([^.]+))"));
        }
    }

    #[test]
    fn audit_has_no_content() {
        let a = outcome().audit();
        assert!(a.contains(&("llmgw_prompt_tokens", "10".to_string())));
        assert!(a.contains(&("llmgw_quota", "admitted".to_string())));
        assert!(a.contains(&("llmgw_deployment", String::new())));
        assert_eq!(a.len(), 15);
    }

    #[test]
    fn routed_requests_count_by_deployment() {
        let mut o = outcome();
        o.deployment = Some("gpt-4o@azure.eu");
        o.attempts = 2;
        let u = o.updates(LabelBy::Caller);
        assert!(u.iter().any(|x| x.name
            == "llmgw.deployment.requests.model=qwen2_5-7b.deployment=gpt-4o_azure_eu.status_class=2xx"
            && x.value == 1));
        assert!(u
            .iter()
            .any(|x| x.name == "llmgw.routing.attempts.model=qwen2_5-7b" && x.value == 2));
        let a = o.audit();
        assert!(a.contains(&("llmgw_deployment", "gpt-4o@azure.eu".to_string())));
        assert!(a.contains(&("llmgw_attempts", "2".to_string())));
    }
}
