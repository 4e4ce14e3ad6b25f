#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of the request side: whatever a client sends — any JSON
//! value, a fixture request broken at any place, any bytes, any method,
//! path and headers — the pipeline (`gateway::on_request_head` /
//! `on_request_body`, on the fixture config and on the shipped config)
//! gives a typed request for the provider or an error in the endpoint's
//! shape, never a panic; forwarded requests are well-formed.

mod prop_common;

use llm_gateway::config::Config;
use llm_gateway::gateway::{self, Head, Reply};
use llm_gateway::quota::{Store, StoreError};
use prop_common::*;
use proptest::prelude::*;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
];

fn configs() -> &'static [(Config, &'static str)] {
    static C: OnceLock<Vec<(Config, &'static str)>> = OnceLock::new();
    C.get_or_init(|| vec![(fixture_config(), CALLER_KEY), (shipped_config(), DEMO_KEY)])
}

fn fixtures() -> &'static [(String, Value)] {
    static F: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    F.get_or_init(fixture_requests)
}

/// A reply the gateway gave itself: a 4xx/5xx in the endpoint's shape.
fn check_reply(path: &str, r: &Reply) -> Result<(), String> {
    if !(400..600).contains(&r.status) {
        return Err(format!("status {}", r.status));
    }
    if !r
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json")
    {
        return Err(format!("headers {:?}", r.headers));
    }
    if path.starts_with("/v1/messages") {
        anthropic_error(&r.body)
    } else {
        openai_error(&r.body).map(|_| ())
    }
}

/// Run a body through the pipeline; check whatever comes out.
fn run(cfg: &Config, key: &str, path: &str, body: &[u8]) -> Result<(), TestCaseError> {
    let p = pending(cfg, key, path);
    match gateway::on_request_body(cfg, &p, body).and_then(|mut f| f.sign(cfg, NOW).map(|()| f)) {
        // count_tokens for a model whose provider cannot count: the
        // gateway's own estimate.
        Err(r) if r.status == 200 && path == "/v1/messages/count_tokens" => {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            prop_assert!(v["input_tokens"].is_u64(), "{v}");
        }
        Err(r) => {
            check_reply(path, &r).map_err(|e| {
                TestCaseError::fail(format!(
                    "{path} {}: bad reply: {e}",
                    String::from_utf8_lossy(body)
                ))
            })?;
            // A request the gateway refuses is the client's fault (4xx),
            // except a provider the filter cannot sign for.
            prop_assert!(
                r.status < 500,
                "{path}: {} for {}: {}",
                r.status,
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(f) => {
            let up = &f.upstream;
            prop_assert!(up.path.starts_with('/'), "path {}", up.path);
            prop_assert!(!up.authority.is_empty());
            for (k, v) in &up.headers {
                prop_assert!(
                    !k.is_empty() && !k.contains(['\r', '\n', ':', ' ']),
                    "header name {k:?}"
                );
                prop_assert!(!v.contains(['\r', '\n', '\0']), "header {k}: {v:?}");
            }
            let v: Result<Value, _> = serde_json::from_slice(&up.body);
            prop_assert!(
                v.as_ref().is_ok_and(Value::is_object),
                "{path}: upstream body is not a JSON object: {}",
                String::from_utf8_lossy(&up.body)
            );
            prop_assert!(!f.cluster.is_empty());
        }
    }
    Ok(())
}

/// A request body: mostly an object whose model is one the config serves.
fn body_for(models: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(models),
        prop::collection::vec((key(), any_json()), 0..6),
        any_json(),
    )
        .prop_map(|(m, fields, messages)| {
            let mut o: serde_json::Map<String, Value> = fields.into_iter().collect();
            o.entry("model").or_insert(Value::String(m.to_string()));
            o.entry("messages").or_insert(messages);
            Value::Object(o)
        })
}

const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "azure-gpt-4o",
    "azure-gpt-4o-mini",
    "llama3.2",
    "qwen2.5-7b",
    "groq-llama",
    "claude-sonnet-4-5",
    "claude-haiku-lenient",
    "gemini-2.5-flash",
    "gemini-3-pro",
    "vertex-gemini-2.5-flash",
    "bedrock-claude-sonnet",
    "bedrock-claude-haiku",
    "bedrock-nova-lite",
    "bedrock-llama",
    "bedrock-guarded",
    "text-embedding-3-small",
    "bedrock-titan-embed",
    "bedrock-cohere-embed",
    "gemini-embedding",
    "vertex-text-embedding",
    "gpt-3.5-turbo-instruct",
    "claude-haiku-4-5",
    "bedrock-claude-sonnet-4-5",
    "gemini-embedding-001",
];

proptest! {
    #![proptest_config(prop_common::config(1000))]

    /// Any JSON value as the body of any endpoint.
    #[test]
    fn any_json_value(v in any_json(), path in prop::sample::select(PATHS), c in 0usize..2) {
        let (cfg, key) = &configs()[c];
        run(cfg, key, path, &serde_json::to_vec(&v).unwrap())?;
    }

    /// Objects with a served model and arbitrary other fields: these get
    /// past the model lookup into every provider's translation.
    #[test]
    fn any_fields_with_a_real_model(v in body_for(MODELS), path in prop::sample::select(PATHS),
                                    c in 0usize..2) {
        let (cfg, key) = &configs()[c];
        run(cfg, key, path, &serde_json::to_vec(&v).unwrap())?;
    }

    /// A fixture request (every provider, every feature) broken at one or
    /// two places: a value replaced by any JSON, a key deleted or added.
    #[test]
    fn fixture_requests_mutated(
        i in any::<usize>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any_json(), key()), 1..3),
        stream in any::<bool>(),
    ) {
        let (path, body) = &fixtures()[i % fixtures().len()];
        let mut v = body.clone();
        if stream {
            if let Value::Object(o) = &mut v {
                o.insert("stream".into(), Value::Bool(true));
            }
        }
        for (pick, op, new, k) in edits {
            mutate(&mut v, pick, op, new, &k);
        }
        run(&configs()[0].0, CALLER_KEY, path, &serde_json::to_vec(&v).unwrap())?;
    }

    /// Any bytes, and JSON text cut anywhere or with a byte changed.
    #[test]
    fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200), i in any::<usize>(),
                 cut in any::<usize>(), flip in any::<(usize, u8)>(),
                 path in prop::sample::select(PATHS)) {
        let (cfg, key) = &configs()[0];
        run(cfg, key, path, &bytes)?;
        let (_, body) = &fixtures()[i % fixtures().len()];
        let text = serde_json::to_vec(body).unwrap();
        run(cfg, key, path, &text[..cut % (text.len() + 1)])?;
        let mut changed = text.clone();
        let at = flip.0 % changed.len();
        changed[at] ^= flip.1.max(1);
        run(cfg, key, path, &changed)?;
    }

    /// The header phase with any method, path and headers.
    #[test]
    fn any_head(method in prop_oneof![prop::sample::select(&["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"][..]).prop_map(str::to_string), ".{0,8}"],
                path in prop_oneof![
                    prop::sample::select(PATHS).prop_map(str::to_string),
                    (Just("/v1/usage?"), prop::collection::vec((prop::sample::select(&["caller", "team", "all", "x", ""][..]), ".{0,12}"), 0..3))
                        .prop_map(|(p, q)| format!("{p}{}", q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))),
                    (prop::sample::select(&["/v1/models/", "/v1/", "/v1/messages/", "/", "/v1"][..]), ".{0,40}")
                        .prop_map(|(a, b)| format!("{a}{b}")),
                    ".{0,40}",
                ],
                headers in prop::collection::vec((prop::sample::select(&["authorization", "api-key", "x-api-key", "content-type", "content-length", "anthropic-version", "x-forwarded-client-cert"][..]), ".{0,60}"), 0..5),
                good_key in any::<bool>(), eos in any::<bool>(), c in 0usize..2) {
        let (cfg, key) = &configs()[c];
        let mut h: HashMap<String, String> = headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if good_key {
            h.insert("authorization".into(), format!("Bearer {key}"));
        }
        match gateway::on_request_head(cfg, &View(h), &method, &path, eos) {
            Head::Reply(r) => {
                if r.status >= 400 {
                    let p = path.split(['?', '#']).next().unwrap_or("");
                    // /v1/models* answers in OpenAI's shape even below /messages.
                    let shape_path = if p.starts_with("/v1/models") { "/v1/models" } else { p };
                    check_reply(shape_path, &r).map_err(|e| TestCaseError::fail(format!("{method} {path}: {e}")))?;
                    prop_assert!(r.status < 500, "{method} {path}: {}", r.status);
                } else {
                    prop_assert_eq!(r.status, 200);
                    let v: Value = serde_json::from_slice(&r.body).unwrap();
                    prop_assert!(v["object"] == "list" || v["object"] == "model", "{v}");
                }
            }
            Head::Routing => {
                prop_assert!(matches!(method.as_str(), "GET" | "HEAD"), "{method} {path}");
                prop_assert!(path.split(['?', '#']).next() == Some("/v1/routing"), "{path}");
                let r = gateway::routing_reply(cfg, &|_| Default::default(), 1_700_000_000_000);
                prop_assert_eq!(r.status, 200);
            }
            Head::Usage { caller, query } => {
                prop_assert!(matches!(method.as_str(), "GET" | "HEAD"), "{method} {path}");
                prop_assert!(path.split(['?', '#']).next() == Some("/v1/usage"), "{path}");
                // Whatever the query, an answer: the report or a 4xx.
                let r = gateway::usage_reply(cfg, &MemStore::default(), caller, &query, 1_700_000_000_000);
                if r.status == 200 {
                    let v: Value = serde_json::from_slice(&r.body).unwrap();
                    prop_assert!(v["object"] == "usage" || v["object"] == "list" || v["object"] == "team_usage", "{v}");
                } else {
                    check_reply("/v1/usage", &r).map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
                    prop_assert!(r.status < 500, "{}", r.status);
                }
            }
            Head::PassThrough => prop_assert!(!path.starts_with("/v1/") && path != "/v1", "{path}"),
            Head::NeedBody(_) => prop_assert!(method == "POST" && PATHS.iter().any(|p| path.split('?').next() == Some(p)), "{method} {path}"),
        }
    }
}

/// Envoy's shared data, in memory (compare-and-swap ids as Envoy's).
#[derive(Default)]
struct MemStore(RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl Store for MemStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut m = self.0.borrow_mut();
        let next = match (m.get(key), cas) {
            (Some((_, cur)), Some(c)) if *cur != c => return Err(StoreError::CasMismatch),
            (Some((_, cur)), _) => cur + 1,
            (None, _) => 1,
        };
        m.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

/// `@repeat:C:N` → C repeated N times (testdata/badinput/README.md).
fn expand(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("@repeat:") {
        out.push_str(&rest[..i]);
        let spec = &rest[i + 8..];
        let c = spec.chars().next().unwrap();
        let digits: String = spec[c.len_utf8() + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        out.push_str(&c.to_string().repeat(digits.parse().unwrap()));
        rest = &spec[c.len_utf8() + 1 + digits.len()..];
    }
    out.push_str(rest);
    out
}

/// The hand-written bad requests of testdata/badinput/, natively: where
/// the gateway answers them itself, it is with the status, code and param
/// the e2e corpus expects from Envoy (cases the filter forwards are the
/// provider's to refuse, and Envoy's own answers never reach the filter).
#[test]
fn hand_written_bad_inputs_natively() {
    let cfg = shipped_config();
    let mut answered = 0;
    for f in std::fs::read_dir(testdata().join("badinput")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        for c in doc["cases"].as_array().unwrap() {
            let name = format!("{}: {}", f.display(), c["name"]);
            let e = &c["expect"];
            if e["envoy"] == true {
                continue;
            }
            let mut h: HashMap<String, String> = HashMap::new();
            if c["auth"] != false {
                h.insert("authorization".into(), format!("Bearer {DEMO_KEY}"));
            }
            h.insert("content-type".into(), "application/json".into());
            for (k, v) in c["headers"].as_object().into_iter().flatten() {
                match v.as_str() {
                    Some(v) => h.insert(k.to_lowercase(), expand(v)),
                    None => h.remove(&k.to_lowercase()),
                };
            }
            let body = if let Some(x) = c["body_hex"].as_str() {
                (0..x.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&x[i..i + 2], 16).unwrap())
                    .collect()
            } else if !c["body_json"].is_null() {
                serde_json::to_vec(&c["body_json"]).unwrap()
            } else {
                c["body"].as_str().unwrap_or("").as_bytes().to_vec()
            };
            let method = c["method"].as_str().unwrap_or("POST");
            let path = expand(c["path"].as_str().unwrap_or("/v1/chat/completions"));
            let reply =
                match gateway::on_request_head(&cfg, &View(h), method, &path, body.is_empty()) {
                    Head::Reply(r) => r,
                    Head::PassThrough => panic!("{name}: passed through"),
                    Head::Routing => {
                        gateway::routing_reply(&cfg, &|_| Default::default(), 1_700_000_000_000)
                    }
                    Head::Usage { caller, query } => gateway::usage_reply(
                        &cfg,
                        &MemStore::default(),
                        caller,
                        &query,
                        1_700_000_000_000,
                    ),
                    Head::NeedBody(p) => match gateway::on_request_body(&cfg, &p, &body) {
                        Err(r) => r,
                        Ok(_) => continue, // the provider's to refuse
                    },
                };
            answered += 1;
            assert_eq!(
                u64::from(reply.status),
                e["status"].as_u64().unwrap(),
                "{name}"
            );
            check_reply(&path, &reply).unwrap_or_else(|err| panic!("{name}: {err}"));
            if !path.starts_with("/v1/messages") {
                let err = openai_error(&reply.body).unwrap();
                if let Some(code) = e.get("code") {
                    assert_eq!(&err["code"], code, "{name}");
                }
                if let Some(param) = e.get("param") {
                    assert_eq!(&err["param"], param, "{name}");
                }
            }
        }
    }
    assert!(answered >= 80, "{answered}");
}
