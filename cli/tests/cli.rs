//! Runs the built `llmgw` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_llmgw");
/// An env var no test machine has.
const TEST_VAR: &str = "LLMGW_TEST_PROVIDER_KEY";

fn llmgw(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove(TEST_VAR)
        .env_remove("VLLM_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llmgw-{}-{n}-{name}", std::process::id()));
    std::fs::write(&p, contents).unwrap();
    p
}

fn check(contents: &str, name: &str, extra: &[&str]) -> Output {
    let p = temp_file(name, contents);
    let mut args = vec!["config", "check", p.to_str().unwrap()];
    args.extend_from_slice(extra);
    llmgw(&args, None)
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Mint a key; returns (key, caller snippet).
fn mint(args: &[&str]) -> (String, serde_json::Value, Output) {
    let mut a = vec!["key", "new"];
    a.extend_from_slice(args);
    let o = llmgw(&a, None);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let stdout = out(&o);
    let (first, rest) = stdout.split_once('\n').unwrap();
    let key = first.strip_prefix("key: ").unwrap().to_string();
    let snippet: serde_json::Value = serde_json::from_str(rest).unwrap();
    (key, snippet, o)
}

// A minimal valid plugin config; `extra_provider_auth` goes in the provider.
fn plugin_json(auth: &str) -> String {
    format!(
        r#"{{"providers": [{{"name": "openai", "kind": "openai", "cluster": "openai"{auth}}}],
  "models": [{{"name": "gpt-4o-mini", "provider": "openai"}}],
  "callers": [{{"id": "a", "key_sha256": "{}"}}]}}"#,
        sha256_hex("sk-test")
    )
}

const ENV_AUTH: &str = r#", "auth": {"from": "env", "env": "LLMGW_TEST_PROVIDER_KEY"}"#;

/// An Envoy bootstrap with the plugin config inline (indented for `|`).
fn envoy_yaml(plugin: &str, allow_flag: bool, env_vars: &str) -> String {
    let body: String = plugin
        .lines()
        .map(|l| format!("                    {l}\n"))
        .collect();
    let flag = if allow_flag {
        "                allow_on_headers_stop_iteration: true\n"
    } else {
        ""
    };
    format!(
        r#"static_resources:
  listeners:
  - name: api
    address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: api
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                root_id: llm-gateway
{flag}                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: llm_gateway.wasm}}}}
{env_vars}                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
{body}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

fn wasm_plugin_yaml(name: &str, model_provider: &str, env: &str) -> String {
    format!(
        r#"apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: {name}
  namespace: gateway
spec:
  url: oci://registry.example/llm-gateway:1
  phase: AUTHN
{env}  pluginConfig:
    providers:
    - {{name: openai, kind: openai, cluster: "outbound|443||api.openai.com"}}
    models:
    - name: gpt-4o-mini
      provider: {model_provider}
      price: {{input: 0.15, output: 0.6}}
    callers:
    - id: mesh
      principals: ["spiffe://cluster.local/ns/apps/sa/*"]
"#
    )
}

// ------------------------------------------------------------ key

#[test]
fn key_new_prints_key_once_and_a_valid_snippet() {
    let (key, snip, o) = mint(&[
        "alice",
        "--team",
        "team-a",
        "--models",
        "gpt-*,llama*",
        "--label",
        "env=prod",
        "--label=cost-center=42",
    ]);
    let random = key.strip_prefix("sk-llmgw-").unwrap();
    assert_eq!(random.len(), 40);
    assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(snip["id"], "alice");
    assert_eq!(snip["team"], "team-a");
    assert_eq!(snip["models"], serde_json::json!(["gpt-*", "llama*"]));
    assert_eq!(
        snip["labels"],
        serde_json::json!({"env": "prod", "cost-center": "42"})
    );
    assert_eq!(snip["key_sha256"], sha256_hex(&key));
    // The key appears exactly once, on the `key:` line; never on stderr.
    assert_eq!(out(&o).matches(&key).count(), 1);
    assert!(!err(&o).contains(&key));
    assert!(err(&o).contains("stored nowhere"), "{}", err(&o));
    assert_eq!(err(&o).lines().count(), 1);
    // Keys are pretty-printed JSON ready to paste.
    assert!(out(&o).contains("\n  \"id\": \"alice\""));
}

#[test]
fn key_new_defaults_and_snippet_is_accepted_by_the_filter() {
    let (key, snip, _) = mint(&["bob"]);
    assert_eq!(snip["models"], serde_json::json!(["*"]));
    assert!(snip.get("team").is_none());
    assert!(snip.get("labels").is_none());
    // Paste the snippet into a config: the checker accepts it.
    let cfg = format!(
        r#"{{"providers": [{{"name": "o", "kind": "openai", "cluster": "o"}}],
            "models": [{{"name": "m", "provider": "o"}}], "callers": [{snip}]}}"#
    );
    let o = check(&cfg, "pasted.json", &[]);
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    assert!(!out(&o).contains(&key));
}

#[test]
fn two_keys_differ() {
    let (k1, s1, _) = mint(&["same"]);
    let (k2, s2, _) = mint(&["same"]);
    assert_ne!(k1, k2);
    assert_ne!(s1["key_sha256"], s2["key_sha256"]);
}

#[test]
fn key_hash_matches_key_new() {
    let (key, snip, _) = mint(&["carol"]);
    let o = llmgw(&["key", "hash"], Some(&format!("{key}\n")));
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o).trim(), snip["key_sha256"].as_str().unwrap());
    assert!(!out(&o).contains(&key) && !err(&o).contains(&key));
    // CRLF and no newline at all work too.
    let o = llmgw(&["key", "hash"], Some(&format!("{key}\r\n")));
    assert_eq!(out(&o).trim(), sha256_hex(&key));
    let o = llmgw(&["key", "hash"], Some(&key));
    assert_eq!(out(&o).trim(), sha256_hex(&key));
}

#[test]
fn key_hash_matches_the_shipped_demo_digest() {
    // scripts/run.sh's demo key and envoy/envoy.yaml's demo caller.
    let o = llmgw(
        &["key", "hash"],
        Some("sk-llmgw-demo-6vDq9aowcjXAfTg475JWOpXt8MDVC5Qp\n"),
    );
    assert_eq!(
        out(&o).trim(),
        "3c0c6d4b215f22815fb2553dc2c5da40bf3ad93ac455678eace63e5a6318bf78"
    );
}

#[test]
fn key_hash_refuses_empty_input_and_key_arguments() {
    let o = llmgw(&["key", "hash"], Some(""));
    assert_eq!(code(&o), 2);
    assert!(out(&o).is_empty());
    let o = llmgw(&["key", "hash", "sk-llmgw-secret"], None);
    assert_eq!(code(&o), 2);
    assert!(!err(&o).contains("sk-llmgw-secret"));
}

#[test]
fn key_new_rejects_bad_ids_without_printing_a_key() {
    for args in [
        vec!["key", "new"],
        vec!["key", "new", ""],
        vec!["key", "new", "two words"],
        vec!["key", "new", "tab\there"],
        vec!["key", "new", "ok", "--team", "a b"],
        vec!["key", "new", "ok", "--models", "gpt-*,,x"],
        vec!["key", "new", "ok", "--label", "novalue"],
        vec!["key", "new", "ok", "--bogus"],
        vec!["key", "new", "a", "b"],
    ] {
        let o = llmgw(&args, None);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(out(&o).is_empty(), "{args:?}: {}", out(&o));
        assert!(!err(&o).contains("sk-llmgw-"), "{args:?}");
    }
}

// ------------------------------------------------------------ config check

#[test]
fn json_ok() {
    let o = check(&plugin_json(""), "ok.json", &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let line = out(&o);
    assert!(line.starts_with("OK "), "{line}");
    assert!(
        line.trim_end()
            .ends_with("ok.json: 1 providers, 1 models, 1 callers"),
        "{line}"
    );
}

#[test]
fn json_error_names_the_field() {
    let bad = plugin_json("").replace(r#""provider": "openai""#, r#""provider": "nope""#);
    let o = check(&bad, "bad.json", &[]);
    assert_eq!(code(&o), 1);
    let s = out(&o);
    assert!(s.starts_with("ERROR "), "{s}");
    assert!(
        s.contains("bad.json: models[0].provider: unknown provider 'nope'"),
        "{s}"
    );
}

#[test]
fn json_syntax_and_unknown_fields_are_errors() {
    let o = check(r#"{"providers": [}"#, "broken.json", &[]);
    assert_eq!(code(&o), 1);
    assert!(out(&o).starts_with("ERROR "), "{}", out(&o));
    let typo = plugin_json("").replace("\"callers\"", "\"caller\"");
    let o = check(&typo, "typo.json", &[]);
    assert_eq!(code(&o), 1);
    assert!(out(&o).contains("caller"), "{}", out(&o));
}

#[test]
fn stdin_is_read_with_dash() {
    let o = llmgw(&["config", "check", "-"], Some(&plugin_json("")));
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(out(&o).starts_with("OK (stdin): 1 providers"));
}

#[test]
fn env_missing_vs_env_flag_vs_assume_env() {
    let cfg = plugin_json(ENV_AUTH);
    let o = check(&cfg, "env.json", &[]);
    assert_eq!(code(&o), 1);
    assert!(
        out(&o).contains("providers[0].auth.env: environment variable LLMGW_TEST_PROVIDER_KEY"),
        "{}",
        out(&o)
    );
    assert!(err(&o).contains("--env LLMGW_TEST_PROVIDER_KEY=VALUE"));

    let o = check(&cfg, "env.json", &["--env", "LLMGW_TEST_PROVIDER_KEY=sk-x"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let o = check(&cfg, "env.json", &["--env=LLMGW_TEST_PROVIDER_KEY=sk-x"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    // An empty value is as good as unset, as in the filter.
    let o = check(&cfg, "env.json", &["--env", "LLMGW_TEST_PROVIDER_KEY="]);
    assert_eq!(code(&o), 1);
    let o = check(&cfg, "env.json", &["--assume-env"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    // The value is never printed.
    let o = check(
        &cfg,
        "env.json",
        &["--env", "LLMGW_TEST_PROVIDER_KEY=sekrit"],
    );
    assert!(!out(&o).contains("sekrit") && !err(&o).contains("sekrit"));

    // The process environment counts too.
    let p = temp_file("env2.json", &cfg);
    let o = Command::new(BIN)
        .args(["config", "check", p.to_str().unwrap()])
        .env(TEST_VAR, "from-process")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", out(&o));
}

#[test]
fn envoy_yaml_with_the_flag_is_ok_without_it_an_error() {
    let o = check(&envoy_yaml(&plugin_json(""), true, ""), "envoy.yaml", &[]);
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    assert!(out(&o).starts_with("OK "), "{}", out(&o));
    assert!(
        out(&o)
            .contains("filters[0].typed_config.http_filters[0]: 1 providers, 1 models, 1 callers"),
        "{}",
        out(&o)
    );

    let o = check(&envoy_yaml(&plugin_json(""), false, ""), "noflag.yaml", &[]);
    assert_eq!(code(&o), 1);
    assert!(
        out(&o).contains("config.allow_on_headers_stop_iteration: must be true"),
        "{}",
        out(&o)
    );
    assert!(out(&o).starts_with("ERROR "));
}

#[test]
fn envoy_env_must_reach_the_vm() {
    let plugin = plugin_json(ENV_AUTH);
    // Not passed to the VM: an error even when set here.
    let o = check(
        &envoy_yaml(&plugin, true, ""),
        "e1.yaml",
        &["--env", "LLMGW_TEST_PROVIDER_KEY=x"],
    );
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("providers[0].auth.env"));
    assert!(err(&o).contains("host_env_keys"), "{}", err(&o));
    // Passed from Envoy's environment: needs --env (or --assume-env) here.
    let host = "                  environment_variables:\n                    host_env_keys: [LLMGW_TEST_PROVIDER_KEY]\n";
    let y = envoy_yaml(&plugin, true, host);
    assert_eq!(code(&check(&y, "e2.yaml", &[])), 1);
    let o = check(&y, "e2.yaml", &["--env", "LLMGW_TEST_PROVIDER_KEY=x"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(code(&check(&y, "e2.yaml", &["--assume-env"])), 0);
    // Set inline in the VM config: nothing needed.
    let inline = "                  environment_variables:\n                    key_values: {LLMGW_TEST_PROVIDER_KEY: sk-inline}\n";
    let o = check(&envoy_yaml(&plugin, true, inline), "e3.yaml", &[]);
    assert_eq!(code(&o), 0, "{}", out(&o));
}

#[test]
fn wasm_plugin_ok_with_warning() {
    let o = check(
        &wasm_plugin_yaml("llm-gateway", "openai", ""),
        "wp.yaml",
        &[],
    );
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains("WasmPlugin gateway/llm-gateway: 1 providers, 1 models, 1 callers"),
        "{}",
        out(&o)
    );
    assert!(err(&o).contains("WARN "), "{}", err(&o));
    assert!(err(&o).contains("EnvoyFilter"), "{}", err(&o));

    let o = check(&wasm_plugin_yaml("llm-gateway", "nope", ""), "wp.yaml", &[]);
    assert_eq!(code(&o), 1);
    assert!(
        out(&o).contains("models[0].provider: unknown provider 'nope'"),
        "{}",
        out(&o)
    );
}

#[test]
fn wasm_plugin_vm_env_counts_as_set() {
    let plugin = wasm_plugin_yaml("llm-gateway", "openai", "").replace(
        r#"cluster: "outbound|443||api.openai.com"}"#,
        r#"cluster: "outbound|443||api.openai.com", auth: {from: env, env: LLMGW_TEST_PROVIDER_KEY}}"#,
    );
    let o = check(&plugin, "wpenv.yaml", &[]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(err(&o).contains("spec.vmConfig.env"), "{}", err(&o));
    let listed = plugin.replace(
        "  pluginConfig:",
        "  vmConfig:\n    env:\n    - name: LLMGW_TEST_PROVIDER_KEY\n      valueFrom: HOST\n  pluginConfig:",
    );
    let o = check(&listed, "wpenv2.yaml", &[]);
    assert_eq!(code(&o), 0, "{}", out(&o));
}

#[test]
fn multi_document_yaml_checks_every_config() {
    let bad_env = envoy_yaml(
        &plugin_json("").replace("\"id\": \"a\"", "\"id\": \"\""),
        true,
        "",
    );
    let doc = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: x}}\n---\n{}",
        envoy_yaml(&plugin_json(""), true, ""),
        wasm_plugin_yaml("llm-gateway", "openai", ""),
        bad_env
    );
    let o = check(&doc, "multi.yaml", &[]);
    assert_eq!(code(&o), 1);
    let s = out(&o);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    assert!(lines[0].starts_with("OK ") && lines[0].contains("multi.yaml#1 "));
    assert!(lines[1].starts_with("OK ") && lines[1].contains("multi.yaml#2 WasmPlugin"));
    assert!(lines[2].starts_with("ERROR ") && lines[2].contains("multi.yaml#4 "));
    assert!(
        lines[2].contains("callers[0].id: must be a non-empty id"),
        "{s}"
    );

    // Without the broken one: all OK.
    let good = format!(
        "{}---\n{}",
        envoy_yaml(&plugin_json(""), true, ""),
        wasm_plugin_yaml("llm-gateway", "openai", "")
    );
    let o = check(&good, "multi2.yaml", &[]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(out(&o).lines().count(), 2);
}

#[test]
fn config_map_with_embedded_bootstrap() {
    let bootstrap: String = envoy_yaml(&plugin_json(""), true, "")
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: envoy-config\n  namespace: llm\ndata:\n  \
         run.sh: |\n    #!/bin/sh\n    exec envoy -c /etc/envoy/envoy.yaml\n  envoy.yaml: |\n{bootstrap}"
    );
    let o = check(&cm, "cm.yaml", &[]);
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains("ConfigMap llm/envoy-config data[\"envoy.yaml\"] static_resources"),
        "{}",
        out(&o)
    );
}

#[test]
fn ecds_and_envoy_filter_typed_struct() {
    let plugin = plugin_json("").replace('\n', " ");
    let y = format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: llm-gateway, namespace: istio-system}}
spec:
  configPatches:
  - applyTo: EXTENSION_CONFIG
    patch:
      operation: ADD
      value:
        name: llm-gateway
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          value:
            config:
              allow_on_headers_stop_iteration: true
              vm_config: {{runtime: envoy.wasm.runtime.v8, code: {{local: {{filename: /x.wasm}}}}}}
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{plugin}'
---
name: llm-gateway
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
  config:
    vm_config: {{runtime: envoy.wasm.runtime.v8, code: {{local: {{filename: /x.wasm}}}}}}
    configuration:
      "@type": type.googleapis.com/google.protobuf.StringValue
      value: '{plugin}'
"#
    );
    let o = check(&y, "ecds.yaml", &[]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let s = out(&o);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    assert!(lines[0].starts_with("OK "), "{s}");
    assert!(
        lines[0].ends_with(
            "ecds.yaml#1 spec.configPatches[0].patch.value: 1 providers, 1 models, 1 callers"
        ),
        "{s}"
    );
    // The ECDS resource lacks the flag.
    assert!(lines[1].starts_with("ERROR "), "{s}");
    assert!(
        lines[1].contains("ecds.yaml#2: config.allow_on_headers_stop_iteration: must be true"),
        "{s}"
    );
}

#[test]
fn nothing_found_or_unreadable_is_exit_2() {
    let o = check(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
        "svc.yaml",
        &[],
    );
    assert_eq!(code(&o), 2);
    assert!(out(&o).is_empty());
    assert!(err(&o).contains("no llm-gateway plugin config found"));

    let o = llmgw(&["config", "check", "/nonexistent/llmgw.yaml"], None);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("cannot read"));

    let o = check("a: [unclosed\n", "junk.yaml", &[]);
    assert_eq!(code(&o), 2);

    // Another Wasm plugin is skipped, not failed.
    let foreign = r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
  config:
    root_id: waf
    configuration: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{"rules": []}'}
"#;
    let o = check(foreign, "waf.yaml", &[]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("SKIP "), "{}", err(&o));
}

#[test]
fn usage_errors_and_help() {
    for args in [
        vec!["--help"],
        vec!["key", "new", "--help"],
        vec!["key", "hash", "--help"],
        vec!["config", "check", "--help"],
        vec!["config", "check", "-h"],
    ] {
        let o = llmgw(&args, None);
        assert_eq!(code(&o), 0, "{args:?}");
        assert!(out(&o).contains("Usage"), "{args:?}");
    }
    for args in [
        vec!["nope"],
        vec!["config", "check"],
        vec!["config", "check", "x", "--env", "NOEQUALS"],
        vec!["config", "check", "x", "--assume-env=1"],
        vec!["key", "rotate"],
    ] {
        let o = llmgw(&args, None);
        assert_eq!(code(&o), 2, "{args:?}");
    }
}

// ------------------------------------------------------------ shipped files

fn repo_file(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn shipped_envoy_yaml_is_ok() {
    let f = repo_file("../envoy/envoy.yaml");
    let env = [
        "--env",
        "VLLM_API_KEY=x",
        "--env",
        "BEDROCK_ACCESS_KEY_ID=x",
        "--env",
        "BEDROCK_SECRET_ACCESS_KEY=x",
    ];
    let mut args = vec!["config", "check", &f];
    args.extend(env);
    let o = llmgw(&args, None);
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    // The listener's filter and the routing cluster's upstream filter
    // (the same configuration through a YAML anchor), each checked.
    assert_eq!(out(&o).lines().count(), 2, "{}", out(&o));
    assert!(out(&o).lines().all(|l| l.starts_with("OK ")), "{}", out(&o));
    assert!(out(&o).contains("listeners[0]") && out(&o).contains("http_filters[0]"));
    // Without the keys the filter would refuse the config.
    let o = llmgw(&["config", "check", &f], None);
    assert_eq!(code(&o), 1);
    assert!(out(&o).contains("VLLM_API_KEY"));
    // Each key the VM is handed is checked.
    let o = llmgw(
        &[
            "config",
            "check",
            &f,
            "--env",
            "VLLM_API_KEY=x",
            "--env",
            "BEDROCK_ACCESS_KEY_ID=x",
        ],
        None,
    );
    assert_eq!(code(&o), 1);
    assert!(out(&o).contains("BEDROCK_SECRET_ACCESS_KEY"), "{}", out(&o));
}
