#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Walks every translation fixture under `testdata/<provider>/<case>/`.
//!
//! A case holds:
//! - `client_request.json`: `{"path", "headers"?, "extra_headers"?, "body"}` as
//!   the client sends it: `path` picks the endpoint (`/v1/chat/completions`,
//!   `/v1/messages`, `/v1/messages/count_tokens`, …); `headers` defaults to the
//!   fixture caller's bearer key and a JSON content-type; `extra_headers` are
//!   added to those (e.g. `anthropic-version`, `anthropic-beta`);
//! - `upstream_request.json`: `{"cluster", "path", "authority", "headers"?, "body"}`
//!   expected upstream (headers listed must be set to those values; a header
//!   given as null must not be set) — absent when the gateway answers itself;
//! - `upstream_response.json` (`{"status", "body"}`), `upstream_response.sse`
//!   (a 200 event stream, bytes) or `upstream_response.eventstream` (a 200
//!   AWS binary event stream, `application/vnd.amazon.eventstream`: Bedrock;
//!   the client must get `text/event-stream`);
//! - `upstream_response_headers.json` (optional): `{"name": "value"}` response
//!   headers the provider sends (lower-case names), given to the exchange
//!   before the status;
//! - `client_response.json` (`{"status", "headers"?, "body"}`; `headers`, checked
//!   on the gateway's own replies, must be among the reply's headers) or
//!   `client_response.sse`.
//!
//! - `usage.json` (optional): `{"prompt_tokens", "completion_tokens",
//!   "total_tokens", "cached_tokens"}` the exchange must report for quotas
//!   once the answer is through.
//!
//! Streams are fed whole, split at every byte position, and byte by byte; the
//! client must see the same bytes each time. Requests are signed (SigV4
//! providers) at the fixed time [`NOW`].
//! All cases share `testdata/config.json` (env `VLLM_API_KEY=vllm-test-key`,
//! `ANTHROPIC_API_KEY=anthropic-test-key`, `GEMINI_API_KEY=gemini-test-key`,
//! `BEDROCK_API_KEY=bedrock-test-key`, and AWS's SigV4 test-suite keys
//! `AWS_ACCESS_KEY_ID=AKIDEXAMPLE`, `AWS_SECRET_ACCESS_KEY=wJalr…` with a
//! made-up `AWS_SESSION_TOKEN`). `testdata/messages/` holds the cases of the Anthropic Messages front door,
//! across all providers.

use llm_gateway::auth::RequestView;
use llm_gateway::config::Config;
use llm_gateway::gateway::{self, Exchange, Head};
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

const CALLER_KEY: &str = "sk-fixture-caller";

/// The time requests are signed at (SigV4), Unix seconds: 2015-08-30T12:36:00Z,
/// the time of AWS's SigV4 test suite.
const NOW: u64 = 1_440_938_160;

const AWS_SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLEfixtureSessionToken";

struct View(HashMap<String, String>);

impl RequestView for View {
    fn header(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn property(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn read_json(p: &Path) -> Value {
    let s = fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn config() -> Config {
    let bytes = fs::read(testdata().join("config.json")).unwrap();
    Config::parse(&bytes, &|name| match name {
        "VLLM_API_KEY" => Some("vllm-test-key".to_string()),
        "ANTHROPIC_API_KEY" => Some("anthropic-test-key".to_string()),
        // AWS's SigV4 test-suite credentials (and a made-up session token).
        "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string()),
        "AWS_SESSION_TOKEN" => Some(AWS_SESSION_TOKEN.to_string()),
        "BEDROCK_API_KEY" => Some("bedrock-test-key".to_string()),
        "GEMINI_API_KEY" => Some("gemini-test-key".to_string()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("testdata/config.json: {e}"))
}

fn cases() -> Vec<PathBuf> {
    let mut out = vec![];
    for provider in fs::read_dir(testdata()).unwrap() {
        let provider = provider.unwrap().path();
        if !provider.is_dir()
            || provider
                .file_name()
                .is_some_and(|n| n == "e2e" || n == "bad-input")
        {
            continue;
        }
        for case in fs::read_dir(&provider).unwrap() {
            let case = case.unwrap().path();
            if case.join("client_request.json").exists() {
                out.push(case);
            }
        }
    }
    out.sort();
    out
}

fn assert_json_eq(what: &str, case: &Path, got: &[u8], want: &Value) {
    let got: Value = serde_json::from_slice(got).unwrap_or_else(|e| {
        panic!(
            "{}: {what} is not JSON ({e}): {}",
            case.display(),
            String::from_utf8_lossy(got)
        )
    });
    assert_eq!(&got, want, "{}: {what}", case.display());
}

/// A reply the gateway gave itself, against `client_response.json`.
fn check_local_reply(case: &Path, r: &gateway::Reply) {
    let want = read_json(&case.join("client_response.json"));
    assert_eq!(
        u64::from(r.status),
        want["status"].as_u64().unwrap(),
        "{}: status",
        case.display()
    );
    assert_json_eq("local reply", case, &r.body, &want["body"]);
    if let Some(Value::Object(h)) = want.get("headers") {
        for (k, v) in h {
            let got = r
                .headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str());
            assert_eq!(got, v.as_str(), "{}: reply header {k}", case.display());
        }
    }
    assert!(
        !case.join("upstream_request.json").exists(),
        "{}: no upstream expected",
        case.display()
    );
}

fn check_usage(case: &Path, ex: &Exchange, what: &str) {
    let p = case.join("usage.json");
    if !p.exists() {
        return;
    }
    let want = read_json(&p);
    let got = ex
        .usage()
        .unwrap_or_else(|| panic!("{}: no usage ({what})", case.display()));
    let got = serde_json::json!({
        "prompt_tokens": got.prompt_tokens,
        "completion_tokens": got.completion_tokens,
        "total_tokens": got.total_tokens,
        "cached_tokens": got.cached_tokens,
    });
    assert_eq!(got, want, "{}: usage ({what})", case.display());
}

fn feed_stream(ex: &mut Exchange, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![];
    for c in chunks {
        out.extend(ex.on_stream_chunk(c, false).unwrap_or_else(|| c.to_vec()));
    }
    out.extend(ex.on_stream_chunk(b"", true).unwrap_or_default());
    out
}

fn run_case(cfg: &Config, case: &Path) {
    let client = read_json(&case.join("client_request.json"));
    let path = client["path"].as_str().expect("client_request.path");
    let body = serde_json::to_vec(&client["body"]).unwrap();
    let mut headers: HashMap<String, String> = HashMap::new();
    match client.get("headers") {
        Some(Value::Object(h)) => {
            for (k, v) in h {
                headers.insert(k.clone(), v.as_str().unwrap().to_string());
            }
        }
        _ => {
            headers.insert("authorization".into(), format!("Bearer {CALLER_KEY}"));
            headers.insert("content-type".into(), "application/json".into());
        }
    }
    if let Some(Value::Object(h)) = client.get("extra_headers") {
        for (k, v) in h {
            headers.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    let view = View(headers);
    let want_client_json = case.join("client_response.json");
    let want_client_sse = case.join("client_response.sse");

    let pending = match gateway::on_request_head(cfg, &view, "POST", path, false) {
        Head::NeedBody(p) => p,
        Head::Reply(r) => {
            check_local_reply(case, &r);
            return;
        }
        Head::PassThrough | Head::Usage { .. } | Head::Routing => {
            panic!("{}: path not handled", case.display())
        }
    };
    let fwd = match gateway::on_request_body(cfg, &pending, &body)
        .and_then(|mut f| f.sign(cfg, NOW).map(|()| f))
    {
        Err(r) => {
            check_local_reply(case, &r);
            return;
        }
        Ok(f) => f,
    };
    let resp_headers: HashMap<String, String> = match case.join("upstream_response_headers.json") {
        p if p.exists() => serde_json::from_value(read_json(&p)).unwrap(),
        _ => HashMap::new(),
    };
    let get_header = |n: &str| resp_headers.get(n).cloned();

    let up = read_json(&case.join("upstream_request.json"));
    assert_eq!(
        fwd.cluster,
        up["cluster"].as_str().unwrap(),
        "{}: cluster",
        case.display()
    );
    assert_eq!(
        fwd.upstream.path,
        up["path"].as_str().unwrap(),
        "{}: path",
        case.display()
    );
    assert_eq!(
        fwd.upstream.authority,
        up["authority"].as_str().unwrap(),
        "{}: authority",
        case.display()
    );
    if let Some(Value::Object(h)) = up.get("headers") {
        for (k, v) in h {
            let got = fwd
                .upstream
                .headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str());
            assert_eq!(got, v.as_str(), "{}: upstream header {k}", case.display());
        }
    }
    for (k, _) in &fwd.upstream.headers {
        assert!(
            !["authorization", "api-key", "x-api-key"].contains(&k.as_str())
                || up["headers"].get(k).is_some(),
            "{}: unexpected credential header {k}",
            case.display()
        );
    }
    assert_json_eq("upstream body", case, &fwd.upstream.body, &up["body"]);

    let sse_in = case.join("upstream_response.sse");
    let eventstream_in = case.join("upstream_response.eventstream");
    let binary = eventstream_in.exists();
    if sse_in.exists() || binary {
        let stream = fs::read(if binary { &eventstream_in } else { &sse_in }).unwrap();
        let want = fs::read(&want_client_sse)
            .unwrap_or_else(|e| panic!("{}: client_response.sse: {e}", case.display()));
        let mut splits: Vec<Vec<&[u8]>> = vec![vec![&stream[..]], stream.chunks(1).collect()];
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            splits.push(vec![a, b]);
        }
        for (n, chunks) in splits.iter().enumerate() {
            let f = gateway::on_request_body(cfg, &pending, &body).ok().unwrap();
            let mut ex = f.exchange;
            ex.response_headers(&get_header);
            let head = ex.on_response_head(cfg, 200, true);
            assert!(
                !head.buffer,
                "{}: a stream must not be buffered",
                case.display()
            );
            if binary {
                assert!(
                    head.set
                        .contains(&("content-type".into(), "text/event-stream".into())),
                    "{}: a translated event stream is SSE",
                    case.display()
                );
            }
            let got = feed_stream(&mut ex, chunks);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{}: stream (split variant {n})",
                case.display()
            );
            check_usage(case, &ex, &format!("split variant {n}"));
        }
        return;
    }
    let resp = read_json(&case.join("upstream_response.json"));
    let status = resp["status"].as_u64().unwrap() as u16;
    let resp_body = match &resp["body"] {
        Value::String(s) => s.as_bytes().to_vec(),
        v => serde_json::to_vec(v).unwrap(),
    };
    let want = read_json(&want_client_json);
    let mut ex = fwd.exchange;
    ex.response_headers(&get_header);
    let head = ex.on_response_head(cfg, status, true);
    let mut out_status = head.status.unwrap_or(status);
    let out = if head.buffer {
        let out = ex.on_full_body(cfg, &resp_body).unwrap_or(resp_body);
        check_usage(case, &ex, "whole answer");
        // The glue holds the headers of whole answers: the status can still
        // follow what the body said.
        if let Some(s) = ex.status_override() {
            out_status = s;
        }
        out
    } else {
        // Forwarded as it arrives: the bytes are unchanged and the usage is
        // still read, whatever the chunking.
        assert!(status < 400, "{}: errors are read whole", case.display());
        let want_usage = llm_gateway::usage::openai_usage(&resp_body);
        for size in [1, 7, resp_body.len().max(1)] {
            let f = gateway::on_request_body(cfg, &pending, &body).ok().unwrap();
            let mut ex2 = f.exchange;
            ex2.response_headers(&get_header);
            ex2.on_response_head(cfg, status, true);
            for c in resp_body.chunks(size) {
                assert_eq!(
                    ex2.on_stream_chunk(c, false),
                    None,
                    "{}: forwarded unchanged",
                    case.display()
                );
            }
            assert_eq!(ex2.on_stream_chunk(b"", true), None);
            assert_eq!(
                ex2.usage(),
                want_usage,
                "{}: usage (chunks of {size})",
                case.display()
            );
        }
        resp_body
    };
    assert_eq!(
        u64::from(out_status),
        want["status"].as_u64().unwrap(),
        "{}: client status",
        case.display()
    );
    assert_json_eq("client body", case, &out, &want["body"]);
}

#[test]
fn every_fixture() {
    let cfg = config();
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "expected at least 20 fixtures, found {}",
        cases.len()
    );
    let mut by_provider: HashMap<String, usize> = HashMap::new();
    for case in &cases {
        run_case(&cfg, case);
        let p = case
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        *by_provider.entry(p).or_default() += 1;
    }
    for (p, min) in [
        ("openai", 5),
        ("azure", 5),
        ("openai_compatible", 5),
        ("anthropic", 5),
        ("bedrock", 20),
        ("gemini", 20),
        ("vertex", 8),
        ("messages", 15),
    ] {
        assert!(
            by_provider.get(p).copied().unwrap_or(0) >= min,
            "{p} needs at least {min} fixtures: {by_provider:?}"
        );
    }
}
