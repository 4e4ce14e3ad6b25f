//! `llmgw config check`: find every llm-gateway plugin config in a file and
//! validate it with the filter's own parser ([`Config::parse`]).
//!
//! A file may be a plain JSON plugin config, or YAML/JSON holding Envoy Wasm
//! filters (bootstrap, ECDS `TypedExtensionConfig`, Istio `EnvoyFilter`
//! patches, typed directly or as a `TypedStruct`), Istio `WasmPlugin`s, or
//! Kubernetes `ConfigMap`s whose `data` values hold any of these; YAML files
//! may have several documents.

use crate::args::{self, Arg, Parser};
use crate::Fail;
use llm_gateway::config::Config;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

pub const USAGE: &str = "\
Usage: llmgw config check FILE... [--env NAME=VALUE]... [--assume-env]

Validate llm-gateway plugin configs exactly as the filter does when Envoy
configures it. FILE (`-` for stdin) may be:
  - a JSON plugin config;
  - an Envoy bootstrap or ECDS config (YAML or JSON): every Wasm HTTP filter
    (type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, typed
    directly or as a TypedStruct, e.g. in an Istio EnvoyFilter patch) is
    checked, its config.configuration being a StringValue holding the JSON;
  - an Istio WasmPlugin (spec.pluginConfig);
  - a Kubernetes ConfigMap whose data values hold any of the above;
  - a multi-document YAML stream of these.
For each plugin config it prints one of
  OK <where>: N providers, M models, K callers
  ERROR <where>: <field.path>: <message>
Envoy Wasm filters must set config.allow_on_headers_stop_iteration: true
(the filter holds request headers until the body names the model; without it
Envoy 1.35+ never delivers the body and requests hang): its absence is an
ERROR. An Istio WasmPlugin cannot set it: a warning says so.

Provider keys given as {\"from\": \"env\", \"env\": NAME} must exist when Envoy
configures the filter. NAME is looked up in --env, then this process's
environment. For an Envoy filter, NAME must also be passed to the VM, by
vm_config.environment_variables (key_values gives the value; host_env_keys
passes Envoy's own variable, looked up as above); for a WasmPlugin, only
names in spec.vmConfig.env reach the VM, and they count as set (their values
come from the pod).

  --env NAME=VALUE   a variable as the VM would see it; repeatable
  --assume-env       take every variable as set (for configs whose keys exist
                     only in the cluster); an Envoy filter or WasmPlugin must
                     still pass it to the VM
  -h, --help         this help

Exit status: 0 all OK (at least one config found), 1 some config has errors,
2 a FILE is unreadable or holds no llm-gateway plugin config, or bad usage.
";

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const ASSUMED: &str = "assumed";
const FROM_POD: &str = "from-the-pod";
const ALLOW_STOP: &str = "allow_on_headers_stop_iteration";
/// How deep ConfigMaps may nest documents in documents.
const MAX_EMBED_DEPTH: usize = 4;

// ------------------------------------------------------------ environment

struct EnvOpts {
    given: BTreeMap<String, String>,
    assume: bool,
}

impl EnvOpts {
    /// A variable as seen from here: `--env`, then the process, then assumed.
    fn local(&self, name: &str) -> Option<String> {
        if let Some(v) = self.given.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
            return Some(v);
        }
        self.assume.then(|| ASSUMED.to_string())
    }
}

/// Which environment variables the Wasm VM gets.
#[derive(Debug)]
enum VmEnv {
    /// A bare plugin config: nothing says, look everything up.
    Open,
    /// Envoy `vm_config.environment_variables`: only these reach the VM.
    Envoy {
        host_env_keys: BTreeSet<String>,
        key_values: BTreeMap<String, String>,
    },
    /// Istio `spec.vmConfig.env`: only these reach the VM.
    Istio {
        inline: BTreeMap<String, String>,
        listed: BTreeSet<String>,
    },
}

// ------------------------------------------------------------ candidates

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Envoy,
    WasmPlugin,
}

/// One plugin config found in a file.
#[derive(Debug)]
struct Candidate {
    where_: String,
    kind: Kind,
    /// The JSON bytes the filter would get, or why there are none
    /// (`field.path: message`).
    config: Result<Vec<u8>, String>,
    vm_env: VmEnv,
    /// Envoy: `config.allow_on_headers_stop_iteration` is `true`.
    allow_stop: bool,
    /// Names that may tell whose plugin this is (root_id, vm_id, file, url).
    names: Vec<String>,
}

impl Candidate {
    /// Is this the llm-gateway's config, rather than another Wasm plugin's?
    /// A bare JSON file always is; an embedded one if a name mentions `llm`
    /// or its config has `providers` or `models`.
    fn is_ours(&self) -> bool {
        if self.kind == Kind::Json {
            return true;
        }
        if self
            .names
            .iter()
            .any(|n| n.to_ascii_lowercase().contains("llm"))
        {
            return true;
        }
        match &self.config {
            Ok(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(m)) => m.contains_key("providers") || m.contains_key("models"),
                _ => false,
            },
            Err(_) => false,
        }
    }
}

fn get<'a>(m: &'a Map<String, Value>, snake: &str) -> Option<&'a Value> {
    m.get(snake).or_else(|| m.get(&camel(snake)))
}

/// `allow_on_headers_stop_iteration` → `allowOnHeadersStopIteration`
/// (protobuf JSON accepts both spellings).
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn get_obj<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    get(m, key).and_then(Value::as_object)
}

fn get_str<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    get(m, key).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A Wasm filter's config (`typed_config` of type [`WASM_TYPE`]).
fn envoy_candidate(where_: String, wasm: &Map<String, Value>) -> Candidate {
    let mut c = Candidate {
        where_,
        kind: Kind::Envoy,
        config: Err("config: missing (the Wasm filter has no plugin config)".to_string()),
        vm_env: VmEnv::Envoy {
            host_env_keys: BTreeSet::new(),
            key_values: BTreeMap::new(),
        },
        allow_stop: false,
        names: vec![],
    };
    let Some(plugin) = get_obj(wasm, "config") else {
        return c;
    };
    c.allow_stop = get(plugin, ALLOW_STOP) == Some(&Value::Bool(true));
    for k in ["name", "root_id"] {
        c.names.extend(get_str(plugin, k).map(str::to_string));
    }
    if let Some(vm) = get_obj(plugin, "vm_config") {
        c.names.extend(get_str(vm, "vm_id").map(str::to_string));
        if let Some(code) = get_obj(vm, "code") {
            // code.local.filename / code.remote.http_uri.uri
            let local = get_obj(code, "local").and_then(|l| get_str(l, "filename"));
            let remote = get_obj(code, "remote")
                .and_then(|r| get_obj(r, "http_uri"))
                .and_then(|h| get_str(h, "uri"));
            c.names
                .extend(local.into_iter().chain(remote).map(str::to_string));
        }
        if let Some(ev) = get_obj(vm, "environment_variables") {
            let host: BTreeSet<String> = strings(get(ev, "host_env_keys")).into_iter().collect();
            let inline: BTreeMap<String, String> = get_obj(ev, "key_values")
                .map(|kv| {
                    kv.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            c.vm_env = VmEnv::Envoy {
                host_env_keys: host,
                key_values: inline,
            };
        }
    }
    c.config = match get(plugin, "configuration") {
        None => Err(
            "config.configuration: missing (the filter would start with no \
                     plugin config; give a google.protobuf.StringValue holding the JSON)"
                .to_string(),
        ),
        Some(Value::Object(any)) => {
            let ty = any.get("@type").and_then(Value::as_str).unwrap_or("");
            let value = any.get("value");
            if ty.ends_with("google.protobuf.Struct") {
                // Envoy hands a Struct to the plugin serialised as JSON.
                match value {
                    Some(v @ Value::Object(_)) => serde_json::to_vec(v)
                        .map_err(|e| format!("config.configuration.value: {e}")),
                    _ => Err("config.configuration.value: a google.protobuf.Struct \
                              needs an object value"
                        .to_string()),
                }
            } else if ty.is_empty() || ty.ends_with("google.protobuf.StringValue") {
                match value {
                    Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
                    _ => Err("config.configuration.value: missing (a \
                              google.protobuf.StringValue holding the plugin's JSON \
                              config)"
                        .to_string()),
                }
            } else {
                Err(format!(
                    "config.configuration: llmgw reads a google.protobuf.StringValue \
                     holding the JSON config (or a google.protobuf.Struct), not {ty}"
                ))
            }
        }
        Some(_) => Err("config.configuration: must be an Any \
                        (\"@type\": type.googleapis.com/google.protobuf.StringValue, \
                        value: the JSON config)"
            .to_string()),
    };
    c
}

fn k8s_name(m: &Map<String, Value>) -> String {
    let meta = m.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|md| md.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    match meta
        .and_then(|md| md.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// An Istio `WasmPlugin` resource.
fn wasm_plugin_candidate(where_: String, res: &Map<String, Value>) -> Candidate {
    let spec = res.get("spec").and_then(Value::as_object);
    let mut names = vec![k8s_name(res)];
    let mut inline = BTreeMap::new();
    let mut listed = BTreeSet::new();
    let mut config = Err(
        "spec.pluginConfig: missing (the filter would start with no \
                          plugin config)"
            .to_string(),
    );
    if let Some(spec) = spec {
        for k in ["url", "pluginName"] {
            names.extend(spec.get(k).and_then(Value::as_str).map(str::to_string));
        }
        let env = spec
            .get("vmConfig")
            .and_then(Value::as_object)
            .and_then(|vm| vm.get("env"))
            .and_then(Value::as_array);
        for e in env.into_iter().flatten().filter_map(Value::as_object) {
            let Some(name) = e.get("name").and_then(Value::as_str) else {
                continue;
            };
            let from_host = e.get("valueFrom").and_then(Value::as_str) == Some("HOST");
            match e.get("value").and_then(Value::as_str) {
                Some(v) if !from_host && !v.is_empty() => {
                    inline.insert(name.to_string(), v.to_string());
                }
                _ => {
                    listed.insert(name.to_string());
                }
            }
        }
        match spec.get("pluginConfig") {
            None => {}
            Some(v @ Value::Object(_)) => {
                config = serde_json::to_vec(v).map_err(|e| format!("spec.pluginConfig: {e}"))
            }
            Some(_) => config = Err("spec.pluginConfig: must be an object".to_string()),
        }
    }
    Candidate {
        where_,
        kind: Kind::WasmPlugin,
        config,
        vm_env: VmEnv::Istio { inline, listed },
        allow_stop: false,
        names,
    }
}

// ------------------------------------------------------------ discovery

#[derive(Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Key(k) => s.push_str(&format!("[{k:?}]")),
        }
    }
    s
}

struct Walker {
    out: Vec<Candidate>,
    depth: usize,
    /// A YAML document looked like a plugin config itself (not JSON).
    yaml_plugin: bool,
}

impl Walker {
    fn where_(prefix: &str, path: &[Seg]) -> String {
        // Point at the filter, not at its typed_config.
        let trimmed = match path.last() {
            Some(Seg::Key(k)) if k == "typed_config" || k == "typedConfig" => {
                &path[..path.len() - 1]
            }
            _ => path,
        };
        let p = path_string(trimmed);
        if p.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix} {p}")
        }
    }

    fn walk(&mut self, v: &Value, prefix: &str, path: &mut Vec<Seg>) {
        match v {
            Value::Object(m) => {
                let kind = m.get("kind").and_then(Value::as_str);
                if kind == Some("WasmPlugin") && m.contains_key("spec") {
                    let w = format!("{} WasmPlugin {}", Self::where_(prefix, path), k8s_name(m));
                    self.out.push(wasm_plugin_candidate(w, m));
                    return;
                }
                if kind == Some("ConfigMap") {
                    self.config_map(m, &Self::where_(prefix, path));
                    return;
                }
                let ty = m.get("@type").and_then(Value::as_str);
                if ty == Some(WASM_TYPE) {
                    self.out
                        .push(envoy_candidate(Self::where_(prefix, path), m));
                    return;
                }
                if ty.is_some_and(|t| t.ends_with(".TypedStruct"))
                    && get_str(m, "type_url") == Some(WASM_TYPE)
                {
                    let empty = Map::new();
                    let value = m.get("value").and_then(Value::as_object).unwrap_or(&empty);
                    self.out
                        .push(envoy_candidate(Self::where_(prefix, path), value));
                    return;
                }
                for (k, child) in m {
                    path.push(Seg::Key(k.clone()));
                    self.walk(child, prefix, path);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.walk(child, prefix, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn config_map(&mut self, m: &Map<String, Value>, at: &str) {
        if self.depth >= MAX_EMBED_DEPTH {
            return;
        }
        let Some(data) = m.get("data").and_then(Value::as_object) else {
            return;
        };
        for (key, value) in data {
            let Some(text) = value.as_str() else {
                continue;
            };
            let prefix = format!("{at} ConfigMap {} data[{key:?}]", k8s_name(m));
            let mut inner = Walker {
                out: vec![],
                depth: self.depth + 1,
                yaml_plugin: false,
            };
            // A value that is neither JSON nor YAML (a script, a PEM) holds
            // no config: skip it.
            if inner.document_text(text, &prefix, false).is_ok() {
                self.out.append(&mut inner.out);
            }
        }
    }

    /// Find configs in a whole file (or a ConfigMap value). At the top
    /// level, a JSON document without Wasm filters is taken as a plugin
    /// config; embedded, only if it has `providers` or `models`.
    fn document_text(&mut self, text: &str, prefix: &str, top: bool) -> Result<(), String> {
        let trimmed = text.trim_start();
        match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                let before = self.out.len();
                self.walk(&v, prefix, &mut vec![]);
                let plugin_like = v
                    .as_object()
                    .is_some_and(|m| m.contains_key("providers") || m.contains_key("models"));
                if self.out.len() == before && (top || plugin_like) {
                    self.out.push(json_candidate(prefix, text));
                }
                return Ok(());
            }
            Err(_) if top && (trimmed.starts_with('{') || trimmed.starts_with('[')) => {
                // Broken JSON: let the filter's parser say where.
                self.out.push(json_candidate(prefix, text));
                return Ok(());
            }
            Err(_) => {}
        }
        let docs = yaml_documents(text)?;
        let many = docs.len() > 1;
        for (i, doc) in docs.iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            let p = if many {
                format!("{prefix}#{}", i + 1)
            } else {
                prefix.to_string()
            };
            self.walk(doc, &p, &mut vec![]);
            self.yaml_plugin |= top
                && doc
                    .as_object()
                    .is_some_and(|m| m.contains_key("providers") && m.contains_key("models"));
        }
        Ok(())
    }
}

fn json_candidate(where_: &str, text: &str) -> Candidate {
    Candidate {
        where_: where_.to_string(),
        kind: Kind::Json,
        config: Ok(text.as_bytes().to_vec()),
        vm_env: VmEnv::Open,
        allow_stop: true,
        names: vec![],
    }
}

/// Every document of a YAML stream, as JSON values (merge keys applied).
fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = vec![];
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let mut v = serde_yaml_ng::Value::deserialize(de).map_err(|e| e.to_string())?;
        v.apply_merge().map_err(|e| e.to_string())?;
        docs.push(yaml_to_json(v));
    }
    Ok(docs)
}

fn yaml_to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (yaml_key(k), yaml_to_json(v)))
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

fn yaml_key(k: serde_yaml_ng::Value) -> String {
    match yaml_to_json(k) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

// ------------------------------------------------------------ checking

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Errors,
    NothingFound,
}

fn check_candidate(c: &Candidate, opts: &EnvOpts) -> bool {
    let mut errors: Vec<String> = vec![];
    // Variables set here but not passed to the VM (for a hint).
    let hidden: RefCell<BTreeSet<String>> = RefCell::new(BTreeSet::new());
    // Variables passed to the VM but not set here (for a hint).
    let unset: RefCell<BTreeSet<String>> = RefCell::new(BTreeSet::new());
    let local = |name: &str| -> Option<String> {
        let v = opts.local(name);
        if v.is_none() {
            unset.borrow_mut().insert(name.to_string());
        }
        v
    };
    let lookup = |name: &str| -> Option<String> {
        match &c.vm_env {
            VmEnv::Open => local(name),
            VmEnv::Envoy {
                host_env_keys,
                key_values,
            } => {
                if let Some(v) = key_values.get(name) {
                    Some(v.clone())
                } else if host_env_keys.contains(name) {
                    local(name)
                } else {
                    hidden.borrow_mut().insert(name.to_string());
                    None
                }
            }
            VmEnv::Istio { inline, listed } => {
                if let Some(v) = inline.get(name) {
                    Some(v.clone())
                } else if listed.contains(name) {
                    opts.local(name).or_else(|| Some(FROM_POD.to_string()))
                } else {
                    hidden.borrow_mut().insert(name.to_string());
                    None
                }
            }
        }
    };
    let mut summary = None;
    match &c.config {
        Err(e) => errors.push(e.clone()),
        Ok(bytes) => match Config::parse(bytes, &lookup) {
            Ok(cfg) => {
                summary = Some(format!(
                    "{} providers, {} models, {} callers",
                    cfg.providers.len(),
                    cfg.models.len(),
                    cfg.callers.len()
                ))
            }
            Err(e) => errors.push(e.to_string()),
        },
    }
    if c.kind == Kind::Envoy && !c.allow_stop {
        errors.push(format!(
            "config.{ALLOW_STOP}: must be true: the filter holds the request headers \
             until the body names the model; without it Envoy 1.35+ never delivers \
             the body and requests hang"
        ));
    }
    if errors.is_empty() {
        println!(
            "OK {}: {}",
            c.where_,
            summary.as_deref().unwrap_or("no summary")
        );
    } else {
        for e in &errors {
            println!("ERROR {}: {e}", c.where_);
        }
        for name in hidden.borrow().iter() {
            let how = match c.vm_env {
                VmEnv::Istio { .. } => "list it under spec.vmConfig.env",
                _ => {
                    "list it in vm_config.environment_variables.host_env_keys (or set it \
                     in key_values): Envoy passes only those to the Wasm VM"
                }
            };
            eprintln!("note {}: {name} is not passed to the VM; {how}", c.where_);
        }
        for name in unset.borrow().iter() {
            eprintln!(
                "note {}: {name} is not set here; check with --env {name}=VALUE, or \
                 --assume-env if it exists only where Envoy runs",
                c.where_
            );
        }
    }
    if c.kind == Kind::WasmPlugin {
        eprintln!(
            "WARN {}: an Istio WasmPlugin cannot set {ALLOW_STOP}; on Envoy 1.35+ \
             requests would hang (the filter holds the headers until the body names \
             the model). Install the filter with an EnvoyFilter (Wasm typed_config \
             with config.{ALLOW_STOP}: true) instead.",
            c.where_
        );
    }
    errors.is_empty()
}

fn check_file(file: &str, opts: &EnvOpts) -> Outcome {
    let (label, read) = if file == "-" {
        let mut s = String::new();
        let r = std::io::stdin().read_to_string(&mut s).map(|_| s);
        ("(stdin)".to_string(), r)
    } else {
        (file.to_string(), std::fs::read_to_string(file))
    };
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            eprintln!("llmgw: cannot read {label}: {e}");
            return Outcome::NothingFound;
        }
    };
    let mut w = Walker {
        out: vec![],
        depth: 0,
        yaml_plugin: false,
    };
    if let Err(e) = w.document_text(&text, &label, true) {
        eprintln!("llmgw: {label}: neither JSON nor YAML: {e}");
        return Outcome::NothingFound;
    }
    let mut checked = 0;
    let mut all_ok = true;
    for c in &w.out {
        if !c.is_ours() {
            eprintln!(
                "SKIP {}: a Wasm plugin that is not the llm-gateway (no `llm` in its \
                 names, no providers/models in its config)",
                c.where_
            );
            continue;
        }
        checked += 1;
        all_ok &= check_candidate(c, opts);
    }
    if checked == 0 {
        eprintln!(
            "llmgw: {label}: no llm-gateway plugin config found (looked for a JSON \
             plugin config, Envoy Wasm filters, Istio WasmPlugins and ConfigMaps)"
        );
        if w.yaml_plugin {
            eprintln!(
                "llmgw: {label} looks like a plugin config written as YAML; the filter \
                 reads JSON: convert it, or embed it (Envoy StringValue, WasmPlugin \
                 spec.pluginConfig)"
            );
        }
        return Outcome::NothingFound;
    }
    if all_ok {
        Outcome::Ok
    } else {
        Outcome::Errors
    }
}

pub fn run(raw: &[&str]) -> Result<u8, Fail> {
    let mut p = Parser::new(raw);
    let mut files = vec![];
    let mut opts = EnvOpts {
        given: BTreeMap::new(),
        assume: false,
    };
    while let Some(arg) = p.next_arg()? {
        match arg {
            Arg::Short('h') => {
                print!("{USAGE}");
                return Ok(0);
            }
            Arg::Long(n, v) if n == "help" => {
                Parser::no_value(&n, v)?;
                print!("{USAGE}");
                return Ok(0);
            }
            Arg::Long(n, v) if n == "assume-env" => {
                Parser::no_value(&n, v)?;
                opts.assume = true;
            }
            Arg::Long(n, v) if n == "env" => {
                let kv = p.value(&n, v)?;
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        opts.given.insert(k.to_string(), v.to_string());
                    }
                    _ => {
                        return Err(Fail::usage(
                            "--env needs NAME=VALUE (the value is never printed)",
                        ))
                    }
                }
            }
            Arg::Pos(f) => files.push(f),
            other => return Err(args::unknown(other)),
        }
    }
    if files.is_empty() {
        return Err(Fail::usage(
            "config check needs a FILE (or - for stdin): llmgw config check FILE",
        ));
    }
    // 1 if any config has errors, else 2 if a file held none, else 0.
    let mut any_errors = false;
    let mut any_missing = false;
    for f in &files {
        match check_file(f, &opts) {
            Outcome::Ok => {}
            Outcome::Errors => any_errors = true,
            Outcome::NothingFound => any_missing = true,
        }
    }
    Ok(if any_errors {
        1
    } else if any_missing {
        2
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<Candidate> {
        let mut w = Walker {
            out: vec![],
            depth: 0,
            yaml_plugin: false,
        };
        assert!(w.document_text(text, "f", true).is_ok());
        w.out
    }

    #[test]
    fn camel_case() {
        assert_eq!(camel(ALLOW_STOP), "allowOnHeadersStopIteration");
        assert_eq!(camel("vm_config"), "vmConfig");
    }

    #[test]
    fn typed_struct_in_envoy_filter() {
        let y = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: llm-gateway, namespace: gw}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.wasm
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          value:
            config:
              root_id: llm-gateway
              allowOnHeadersStopIteration: true
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{"providers": []}'
"#;
        let c = find(y);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].where_, "f spec.configPatches[0].patch.value");
        assert!(c[0].allow_stop);
        assert!(c[0].is_ours());
        assert_eq!(
            c[0].config.as_deref().ok(),
            Some(&br#"{"providers": []}"#[..])
        );
    }

    #[test]
    fn foreign_plugin_is_not_ours() {
        let y = r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
  config:
    root_id: coraza
    configuration: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{"rules": []}'}
"#;
        let c = find(y);
        assert_eq!(c.len(), 1);
        assert!(!c[0].is_ours());
    }

    #[test]
    fn yaml_merge_keys_and_numbers() {
        let docs =
            yaml_documents("a: &x {n: 1, f: 0.5}\nb:\n  <<: *x\n  m: true\n").unwrap_or_default();
        assert_eq!(
            docs[0]["b"],
            serde_json::json!({"n": 1, "f": 0.5, "m": true})
        );
    }
}
