//! Shared by the property tests (`prop_*.rs`): the configs the pipeline
//! runs on, a request view, JSON strategies, and checks of error shapes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_gateway::auth::RequestView;
use llm_gateway::config::Config;
use llm_gateway::gateway::{self, Exchange, Head, Pending};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The key of the `fixture` caller in testdata/config.json.
pub const CALLER_KEY: &str = "sk-fixture-caller";
/// The demo key of the shipped config (envoy/envoy.yaml).
pub const DEMO_KEY: &str = "sk-llmgw-demo-6vDq9aowcjXAfTg475JWOpXt8MDVC5Qp";
/// SigV4 signing time (any fixed time does).
pub const NOW: u64 = 1_440_938_160;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn testdata() -> PathBuf {
    root().join("testdata")
}

/// The VM environment the fixture config needs (as in fixtures.rs).
pub fn env(name: &str) -> Option<String> {
    match name {
        "VLLM_API_KEY" => Some("vllm-test-key".into()),
        "ANTHROPIC_API_KEY" => Some("anthropic-test-key".into()),
        "AWS_ACCESS_KEY_ID" | "BEDROCK_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "AWS_SECRET_ACCESS_KEY" | "BEDROCK_SECRET_ACCESS_KEY" => {
            Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into())
        }
        "AWS_SESSION_TOKEN" => Some("IQoJb3JpZ2luX2VjEXAMPLEfixtureSessionToken".into()),
        "BEDROCK_API_KEY" => Some("bedrock-test-key".into()),
        "GEMINI_API_KEY" => Some("gemini-test-key".into()),
        _ => None,
    }
}

pub fn fixture_config_text() -> Vec<u8> {
    fs::read(testdata().join("config.json")).unwrap()
}

pub fn fixture_config() -> Config {
    Config::parse(&fixture_config_text(), &env).unwrap()
}

/// The plugin configuration inside envoy/envoy.yaml (the block scalar
/// after `value: |` of the wasm filter), read without a YAML parser.
pub fn shipped_config_text() -> String {
    let yaml = fs::read_to_string(root().join("envoy/envoy.yaml")).unwrap();
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "value: |")
        .expect("value: | in envoy.yaml");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(lines[start]);
    let mut out = String::new();
    for l in &lines[start + 1..] {
        if !l.trim().is_empty() && indent(l) <= base {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

pub fn shipped_config() -> Config {
    Config::parse(shipped_config_text().as_bytes(), &env).unwrap()
}

pub struct View(pub HashMap<String, String>);

impl RequestView for View {
    fn header(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn property(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

/// Headers of an authenticated JSON request with `key`.
pub fn authed(key: &str) -> View {
    View(HashMap::from([
        ("authorization".to_string(), format!("Bearer {key}")),
        ("content-type".to_string(), "application/json".to_string()),
    ]))
}

/// The pending request of an authenticated POST to `path`.
pub fn pending(cfg: &Config, key: &str, path: &str) -> Pending {
    match gateway::on_request_head(cfg, &authed(key), "POST", path, false) {
        Head::NeedBody(p) => p,
        other => panic!("{path}: expected NeedBody, got {other:?}"),
    }
}

/// The exchange of a request that must be forwarded.
pub fn exchange(cfg: &Config, path: &str, body: &Value) -> Exchange {
    let p = pending(cfg, CALLER_KEY, path);
    let bytes = serde_json::to_vec(body).unwrap();
    match gateway::on_request_body(cfg, &p, &bytes) {
        Ok(f) => f.exchange,
        Err(r) => panic!("{path}: {} {}", r.status, String::from_utf8_lossy(&r.body)),
    }
}

/// `body` is `{"error":{"message","type","param","code"}}` with a message
/// and a type; returns the error object.
pub fn openai_error(body: &[u8]) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    let Value::Object(mut top) = v else {
        return Err(format!("not an object: {}", String::from_utf8_lossy(body)));
    };
    let keys: Vec<&String> = top.keys().collect();
    if keys != ["error"] {
        return Err(format!("top-level keys {keys:?}"));
    }
    let Some(Value::Object(err)) = top.remove("error") else {
        return Err("error is not an object".into());
    };
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["code", "message", "param", "type"] {
        return Err(format!("error keys {keys:?}"));
    }
    match (&err["message"], &err["type"]) {
        (Value::String(m), Value::String(t)) if !m.is_empty() && !t.is_empty() => {}
        _ => return Err(format!("message/type: {err:?}")),
    }
    if !matches!(err["param"], Value::Null | Value::String(_))
        || !matches!(err["code"], Value::Null | Value::String(_))
    {
        return Err(format!("param/code: {err:?}"));
    }
    Ok(err)
}

/// `body` is Anthropic's `{"type":"error","error":{"type","message"}}`.
pub fn anthropic_error(body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    let ok = v["type"] == "error"
        && v.as_object().map(|o| o.len()) == Some(2)
        && v["error"].as_object().map(|o| o.len()) == Some(2)
        && v["error"]["type"].as_str().is_some_and(|s| !s.is_empty())
        && v["error"]["message"]
            .as_str()
            .is_some_and(|s| !s.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!("not Anthropic-shaped: {v}"))
    }
}

/// The `data:` payloads of an SSE body (any line ending).
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut out = vec![];
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        if !lines.is_empty() {
            out.push(lines.join("\n"));
        }
    }
    out
}

/// Every string in a JSON value (keys excluded).
pub fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Whether `needle` is a JSON value somewhere inside `v` (or a string
/// holding it as JSON text).
pub fn contains_value(v: &Value, needle: &Value) -> bool {
    if v == needle {
        return true;
    }
    match v {
        Value::String(s) => serde_json::from_str::<Value>(s).is_ok_and(|p| &p == needle),
        Value::Array(a) => a.iter().any(|x| contains_value(x, needle)),
        Value::Object(o) => o.values().any(|x| contains_value(x, needle)),
        _ => false,
    }
}

/// Split `bytes` at `cuts` (any values; taken modulo the length, sorted).
pub fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = vec![];
    let mut prev = 0;
    for c in at {
        out.push(&bytes[prev..c]);
        prev = c;
    }
    out.push(&bytes[prev..]);
    out
}

/// The proptest config of these tests: `cases` per property (kept small
/// enough for `cargo test` in debug), or `PROPTEST_CASES` when set (a
/// longer soak: `PROPTEST_CASES=20000 cargo test -p llm-gateway --test
/// prop_providers`). Seeds are random per run unless `PROPTEST_RNG_SEED`
/// is set; failures print the shrunk input.
pub fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- strategies

/// Any JSON value, nested a few levels.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Object keys: mostly names the API knows, sometimes anything.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

/// Keys of the APIs the gateway reads (OpenAI, Anthropic, config).
pub const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "stream",
    "stream_options",
    "include_usage",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "function",
    "name",
    "arguments",
    "parameters",
    "tool_calls",
    "tool_call_id",
    "id",
    "image_url",
    "url",
    "input",
    "prompt",
    "dimensions",
    "encoding_format",
    "response_format",
    "json_schema",
    "schema",
    "stop",
    "system",
    "tool_use",
    "tool_result",
    "tool_use_id",
    "source",
    "data",
    "media_type",
    "thinking",
    "budget_tokens",
    "reasoning_effort",
    "seed",
    "user",
    "metadata",
    "properties",
    "required",
    "providers",
    "models",
    "callers",
    "kind",
    "cluster",
    "host",
    "auth",
    "from",
    "env",
    "options",
    "provider",
    "upstream_model",
    "aliases",
    "key_sha256",
    "identity_sources",
    "path_prefix",
    "max_body_bytes",
    "default_model",
    "price",
    "region",
    "sigv4",
];

/// Strings the APIs know as values.
pub const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "text",
    "image_url",
    "tool_use",
    "tool_result",
    "auto",
    "none",
    "required",
    "json_object",
    "json_schema",
    "gpt-4o-mini",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "bedrock-nova-lite",
    "vertex-gemini-2.5-flash",
    "azure-gpt-4o",
    "llama3.2",
    "qwen2.5-7b",
    "text-embedding-3-small",
    "bedrock-titan-embed",
    "openai",
    "azure",
    "anthropic",
    "gemini",
    "vertex",
    "bedrock",
    "openai_compatible",
    "injector",
    "env",
    "object",
    "string",
    "data:image/png;base64,iVBORw0KGgo=",
    "s3://bucket/key.png",
    "high",
    "low",
    "enabled",
    "base64",
    "float",
];

/// Replace the value at a random path of `v` (chosen by `pick`) with `new`,
/// or delete it (`delete`), or add `new` under `add_key` to a random
/// object. Returns the path touched, as text.
pub fn mutate(v: &mut Value, pick: usize, op: u8, new: Value, add_key: &str) -> String {
    let mut paths: Vec<Vec<PathStep>> = vec![vec![]];
    collect_paths(v, &mut vec![], &mut paths);
    let path = paths[pick % paths.len()].clone();
    let text = path
        .iter()
        .map(|p| match p {
            PathStep::Key(k) => k.clone(),
            PathStep::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".");
    let Some((last, parent)) = path.split_last() else {
        if op % 3 == 2 {
            if let Value::Object(o) = v {
                o.insert(add_key.to_string(), new);
            }
        } else {
            *v = new;
        }
        return text;
    };
    let mut cur = &mut *v;
    for p in parent {
        cur = match p {
            PathStep::Key(k) => &mut cur[k.as_str()],
            PathStep::Index(i) => &mut cur[*i],
        };
    }
    match (op % 3, last, cur) {
        (1, PathStep::Key(k), Value::Object(o)) => {
            o.remove(k);
        }
        (1, PathStep::Index(i), Value::Array(a)) => {
            a.remove(*i);
        }
        (2, PathStep::Key(k), Value::Object(o)) => match o.get_mut(k) {
            Some(Value::Object(inner)) => {
                inner.insert(add_key.to_string(), new);
            }
            Some(slot) => *slot = new,
            None => {}
        },
        (_, PathStep::Key(k), Value::Object(o)) => {
            o.insert(k.clone(), new);
        }
        (_, PathStep::Index(i), Value::Array(a)) => a[*i] = new,
        _ => {}
    }
    text
}

#[derive(Clone, Debug)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

fn collect_paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                prefix.push(PathStep::Key(k.clone()));
                out.push(prefix.clone());
                collect_paths(x, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                out.push(prefix.clone());
                collect_paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The client request bodies of every translation fixture, with their path.
pub fn fixture_requests() -> Vec<(String, Value)> {
    let mut out = vec![];
    for dir in fs::read_dir(testdata()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for case in fs::read_dir(&dir).unwrap() {
            let p = case.unwrap().path().join("client_request.json");
            if let Ok(text) = fs::read_to_string(&p) {
                let v: Value = serde_json::from_str(&text).unwrap();
                out.push((v["path"].as_str().unwrap().to_string(), v["body"].clone()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to_string().cmp(&b.1.to_string())));
    assert!(out.len() > 100, "{} fixture requests", out.len());
    out
}

/// A short text with at least one letter, no surrounding space (what a
/// translator must carry, not trim or drop).
pub fn text() -> impl Strategy<Value = String> {
    // Upper-case first: never a JSON literal (`true`, `null`) a translator
    // may read tool results as.
    ("[A-Z]", "[^\\x00-\\x1f\\x7f-\\x9f]{0,16}", "[a-zA-Z0-9.!?]")
        .prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

/// A tool's arguments: a small JSON object.
pub fn args() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            "[a-zA-Z0-9 ]{0,10}".prop_map(Value::String),
            (0i64..1000).prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            prop::collection::vec((0i64..9).prop_map(Value::from), 0..3).prop_map(Value::Array),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A tool name (`[a-zA-Z_][a-zA-Z0-9_]*`, as every provider accepts).
pub fn tool_name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,12}"
}

pub fn tool_def(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "description": "a tool",
        "parameters": {"type": "object", "properties": {}}}})
}
