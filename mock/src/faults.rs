//! Fault rules: a failure switch per deployment.
//!
//! The `x-mock-behavior` header and the `[[mock:...]]` marker travel with
//! the request, so a gateway that retries a request on another deployment
//! (OpenAI, then Azure, then Anthropic) sends the same knobs to every
//! attempt. A fault rule lives in the mock instead and picks the requests
//! it applies to by where they went:
//!
//! ```text
//! POST /__mock/faults   {"provider":"openai","model":"gpt-4o","host":"api.openai.com:443",
//!                        "behavior":"fail=503","count":2}
//! ```
//!
//! * `provider`: the route the request took (`openai`, `azure`,
//!   `anthropic`, `gemini`, `vertex`, `bedrock`, `ollama`, `vllm`);
//! * `model`: the model as the provider sees it (OpenAI, Ollama, vLLM and
//!   Anthropic: the body's `model`, or the id of `GET /v1/models/{id}`;
//!   Azure: the deployment name in the path; Gemini, Vertex, Bedrock: the
//!   model in the path, percent-decoded), compared exactly;
//! * `host`: the request's `:authority` (HTTP/2, or an absolute-form
//!   HTTP/1 target), else its `Host` header, compared whole (port
//!   included), ignoring ASCII case;
//! * `behavior` (required): knobs in the `x-mock-behavior` syntax, checked
//!   strictly (an unknown knob or a bad value is a 400);
//! * `count`: the rule applies to the next N matching requests, then it is
//!   gone; absent: until deleted.
//!
//! Every given field must match. The first matching rule (oldest first)
//! applies, and only its count is used up. Its knobs act as if they came
//! in the `x-mock-behavior` header; the request's own header and markers
//! override them key by key. A request the rule applied to carries an
//! `x-mock-fault: ID` response header (unless the knob drops the
//! connection before the headers).
//!
//! Rules are consulted by a provider handler once it knows the endpoint
//! (an unknown path or a wrong method uses up nothing); the auth check
//! comes after, as with the header.
//!
//! Matching and using up a count happen under one lock, so `count` is
//! exact under any concurrency. With no rule installed a request costs
//! one atomic load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::{Behavior, Provider};

/// Response header naming the rule that applied to a request.
pub const APPLIED_HEADER: &str = "x-mock-fault";

/// Providers a rule may name, by their [`Provider::name`].
pub const PROVIDERS: [Provider; 8] = [
    Provider::OpenAi,
    Provider::Azure,
    Provider::Anthropic,
    Provider::Gemini,
    Provider::Vertex,
    Provider::Bedrock,
    Provider::Ollama,
    Provider::Vllm,
];

/// A validated rule, as posted (or given with `--fault`).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub host: Option<String>,
    /// The knobs as given.
    pub behavior: String,
    /// The knobs, parsed.
    pub knobs: Behavior,
    pub count: Option<u64>,
}

/// Why a rule was refused: the field at fault (`None`: the body as a
/// whole) and a message.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleError {
    pub field: Option<String>,
    pub message: String,
}

impl RuleError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        RuleError {
            field: Some(field.to_string()),
            message: format!("{field}: {}", message.into()),
        }
    }

    /// `{"error":{"field":"provider"|null,"message":"..."}}`.
    pub fn to_json(&self) -> Value {
        json!({"error": {"field": self.field, "message": self.message}})
    }
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn provider_names() -> String {
    PROVIDERS.map(Provider::name).join(", ")
}

impl RuleSpec {
    /// Parses a rule from its JSON text.
    pub fn parse(body: &[u8]) -> Result<RuleSpec, RuleError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| RuleError {
            field: None,
            message: format!("the body is not valid JSON: {e}"),
        })?;
        RuleSpec::from_json(&v)
    }

    /// Checks a rule given as JSON; `null` counts as absent.
    pub fn from_json(v: &Value) -> Result<RuleSpec, RuleError> {
        let Some(obj) = v.as_object() else {
            return Err(RuleError {
                field: None,
                message: "a rule is a JSON object, e.g. {\"provider\":\"openai\",\"behavior\":\"fail=503\"}".into(),
            });
        };
        let mut spec = RuleSpec {
            provider: None,
            model: None,
            host: None,
            behavior: String::new(),
            knobs: Behavior::default(),
            count: None,
        };
        let mut behavior = None;
        for (key, val) in obj {
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "provider" => {
                    let name = string(key, val)?;
                    let p = PROVIDERS.iter().find(|p| p.name() == name).ok_or_else(|| {
                        RuleError::field(
                            key,
                            format!("unknown provider {name:?}; one of {}", provider_names()),
                        )
                    })?;
                    spec.provider = Some(*p);
                }
                "model" => spec.model = Some(non_empty(key, val)?.to_string()),
                "host" => spec.host = Some(non_empty(key, val)?.to_string()),
                "behavior" => behavior = Some(string(key, val)?.to_string()),
                "count" => {
                    let n = val.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                        RuleError::field(key, "must be a positive integer (absent: until deleted)")
                    })?;
                    spec.count = Some(n);
                }
                _ => {
                    return Err(RuleError::field(
                        key,
                        "unknown field; the fields are provider, model, host, behavior, count",
                    ))
                }
            }
        }
        let Some(behavior) = behavior else {
            return Err(RuleError::field(
                "behavior",
                "required, e.g. \"fail=503\" (x-mock-behavior syntax)",
            ));
        };
        spec.knobs =
            Behavior::parse_strict(&behavior).map_err(|e| RuleError::field("behavior", e))?;
        spec.behavior = behavior;
        Ok(spec)
    }

    fn matches(&self, provider: Provider, model: Option<&str>, host: Option<&str>) -> bool {
        self.provider.is_none_or(|p| p == provider)
            && self.model.as_deref().is_none_or(|m| model == Some(m))
            && self
                .host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|got| got.eq_ignore_ascii_case(h)))
    }
}

fn string<'v>(key: &str, val: &'v Value) -> Result<&'v str, RuleError> {
    val.as_str()
        .ok_or_else(|| RuleError::field(key, "must be a string"))
}

fn non_empty<'v>(key: &str, val: &'v Value) -> Result<&'v str, RuleError> {
    match string(key, val)? {
        "" => Err(RuleError::field(
            key,
            "must not be empty (leave it out to match any)",
        )),
        s => Ok(s),
    }
}

struct Rule {
    id: u64,
    spec: RuleSpec,
    remaining: Option<u64>,
    fired: u64,
}

impl Rule {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert(
            "provider".into(),
            json!(self.spec.provider.map(Provider::name)),
        );
        m.insert("model".into(), json!(self.spec.model));
        m.insert("host".into(), json!(self.spec.host));
        m.insert("behavior".into(), json!(self.spec.behavior));
        m.insert("count".into(), json!(self.spec.count));
        m.insert("remaining".into(), json!(self.remaining));
        m.insert("fired".into(), json!(self.fired));
        Value::Object(m)
    }
}

#[derive(Default)]
struct Rules {
    next_id: u64,
    list: Vec<Rule>,
}

/// The installed rules, oldest first.
#[derive(Default)]
pub struct Faults {
    /// Mirrors `rules.list.len()` (written under the lock) so that a
    /// request skips the lock when there is no rule.
    len: AtomicUsize,
    rules: Mutex<Rules>,
}

/// A rule that applied to a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub id: u64,
    pub knobs: Behavior,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a rule; returns it as JSON (with its new id).
    pub fn add(&self, spec: RuleSpec) -> Value {
        let mut r = self.lock();
        r.next_id += 1;
        let rule = Rule {
            id: r.next_id,
            remaining: spec.count,
            spec,
            fired: 0,
        };
        let out = rule.to_json();
        r.list.push(rule);
        self.len.store(r.list.len(), Ordering::Release);
        out
    }

    /// The rules as a JSON array, oldest first.
    pub fn to_json(&self) -> Value {
        Value::Array(self.lock().list.iter().map(Rule::to_json).collect())
    }

    /// One rule as JSON.
    pub fn get(&self, id: u64) -> Option<Value> {
        self.lock()
            .list
            .iter()
            .find(|r| r.id == id)
            .map(Rule::to_json)
    }

    /// Removes every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut r = self.lock();
        let n = r.list.len();
        r.list.clear();
        self.len.store(0, Ordering::Release);
        n
    }

    /// Removes one rule; returns it as it was.
    pub fn remove(&self, id: u64) -> Option<Value> {
        let mut r = self.lock();
        let i = r.list.iter().position(|rule| rule.id == id)?;
        let rule = r.list.remove(i);
        self.len.store(r.list.len(), Ordering::Release);
        Some(rule.to_json())
    }

    /// The first rule matching a request, with one use counted (a rule
    /// whose count runs out is removed).
    pub fn take(
        &self,
        provider: Provider,
        model: Option<&str>,
        host: Option<&str>,
    ) -> Option<Applied> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut r = self.lock();
        let i = r
            .list
            .iter()
            .position(|rule| rule.spec.matches(provider, model, host))?;
        let rule = &mut r.list[i];
        rule.fired += 1;
        let applied = Applied {
            id: rule.id,
            knobs: rule.spec.knobs.clone(),
        };
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                r.list.remove(i);
                self.len.store(r.list.len(), Ordering::Release);
            }
        }
        Some(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> RuleSpec {
        match RuleSpec::from_json(&v) {
            Ok(s) => s,
            Err(e) => panic!("{v}: {e}"),
        }
    }

    fn err(v: Value) -> RuleError {
        match RuleSpec::from_json(&v) {
            Ok(s) => panic!("{v} accepted: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_and_refuses() {
        let s = spec(
            json!({"provider": "azure", "model": "gpt-4o", "host": "H:1",
                            "behavior": "fail=503,stall=5", "count": 2}),
        );
        assert_eq!(s.provider, Some(Provider::Azure));
        assert_eq!(s.knobs.fail, Some(503));
        assert_eq!(s.count, Some(2));
        let s = spec(json!({"behavior": "reset=before_headers", "model": null}));
        assert_eq!((s.provider, s.model, s.count), (None, None, None));
        for (v, field) in [
            (json!({"provider": "openai"}), "behavior"),
            (
                json!({"behavior": "fail=503", "provider": "gce_metadata"}),
                "provider",
            ),
            (json!({"behavior": "fail=503", "provider": 3}), "provider"),
            (json!({"behavior": "fial=503"}), "behavior"),
            (json!({"behavior": "fail=abc"}), "behavior"),
            (json!({"behavior": ""}), "behavior"),
            (json!({"behavior": "fail=503", "count": 0}), "count"),
            (json!({"behavior": "fail=503", "count": -1}), "count"),
            (json!({"behavior": "fail=503", "count": 1.5}), "count"),
            (json!({"behavior": "fail=503", "model": ""}), "model"),
            (json!({"behavior": "fail=503", "hots": "x"}), "hots"),
        ] {
            assert_eq!(err(v.clone()).field.as_deref(), Some(field), "{v}");
        }
        assert_eq!(err(json!(["x"])).field, None);
        assert_eq!(RuleSpec::parse(b"{").map_err(|e| e.field), Err(None));
    }

    #[test]
    fn first_match_and_counts() {
        let f = Faults::default();
        assert_eq!(f.take(Provider::OpenAi, None, None), None);
        f.add(spec(
            json!({"provider": "azure", "model": "gpt-4o", "behavior": "fail=500", "count": 2}),
        ));
        f.add(spec(
            json!({"host": "A.example:8080", "behavior": "fail=502"}),
        ));
        f.add(spec(json!({"behavior": "fail=503"})));
        let id = |p, m, h| f.take(p, m, h).map(|a| a.id);
        assert_eq!(id(Provider::Azure, Some("gpt-4o-mini"), None), Some(3));
        assert_eq!(
            id(Provider::Azure, Some("gpt-4o"), Some("a.example:8080")),
            Some(1)
        );
        assert_eq!(
            id(Provider::OpenAi, Some("gpt-4o"), Some("a.example:8080")),
            Some(2)
        );
        assert_eq!(id(Provider::OpenAi, None, Some("a.example")), Some(3));
        assert_eq!(id(Provider::Azure, Some("gpt-4o"), None), Some(1));
        // Rule 1 is used up and gone.
        assert_eq!(id(Provider::Azure, Some("gpt-4o"), None), Some(3));
        assert_eq!(f.get(1), None);
        assert_eq!(f.get(3).map(|v| v["fired"].clone()), Some(json!(3)));
        assert_eq!(f.remove(3).map(|v| v["id"].clone()), Some(json!(3)));
        assert_eq!(id(Provider::Azure, Some("gpt-4o"), None), None);
        assert_eq!(f.clear(), 1);
        assert_eq!(f.to_json(), json!([]));
    }
}
