//! Where a request's time goes inside the filter's pure core, natively
//! (x86-64, the same code the `.wasm` is compiled from): each pipeline
//! stage the glue calls for one request, timed over many iterations.
//!
//! Usage: llmgw-bench-profile DIR
//! DIR holds plugin.json (the bench config), chat1k.json, prompt100k.json,
//! stream200.json (request bodies), resp.json (the mock's answer to
//! chat1k.json) and stream.sse (its 200-chunk stream); a key in key.txt.
//! Prints one JSON object: stage -> nanoseconds per call (median of 7
//! batches).

use llm_gateway::auth::{key_digest, RequestView};
use llm_gateway::config::Config;
use llm_gateway::gateway::{on_request_body, on_request_head, Head, Pending};
use llm_gateway::request::{ClientRequest, Endpoint};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

struct View(HashMap<&'static str, String>);
impl RequestView for View {
    fn header(&self, n: &str) -> Option<String> {
        self.0.get(n).cloned()
    }
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

fn time<F: FnMut()>(iters: u32, mut f: F) -> f64 {
    let mut batches = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        batches.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    batches.sort_by(|a, b| a.total_cmp(b));
    batches[3]
}

fn read(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!("{dir}/{name}")).unwrap_or_else(|e| {
        eprintln!("{dir}/{name}: {e}");
        std::process::exit(2)
    })
}

fn pending(cfg: &Config, view: &View) -> Pending {
    match on_request_head(cfg, view, "POST", "/v1/chat/completions", false) {
        Head::NeedBody(p) => p,
        other => {
            eprintln!("unexpected head decision: {other:?}");
            std::process::exit(2)
        }
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let plugin = read(&dir, "plugin.json");
    let key = String::from_utf8(read(&dir, "key.txt")).unwrap_or_default();
    let key = key.trim().to_string();
    let chat = read(&dir, "chat1k.json");
    let big = read(&dir, "prompt100k.json");
    let stream_req = read(&dir, "stream200.json");
    let resp = read(&dir, "resp.json");
    let sse = read(&dir, "stream.sse");
    let env = |n: &str| Some(format!("bench-{n}"));

    let mut out: Vec<(&str, f64)> = Vec::new();
    out.push((
        "config_parse_once_per_vm",
        time(3, || {
            black_box(Config::parse(black_box(&plugin), &env).is_ok());
        }),
    ));
    let cfg = match Config::parse(&plugin, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config: {e}");
            std::process::exit(2)
        }
    };
    let view = View(
        [
            ("authorization", format!("Bearer {key}")),
            ("content-type", "application/json".to_string()),
            ("content-length", chat.len().to_string()),
        ]
        .into_iter()
        .collect(),
    );
    out.push((
        "key_sha256",
        time(20000, || {
            black_box(key_digest(black_box(&key)));
        }),
    ));
    out.push((
        "request_head (route, key hash, caller lookup)",
        time(20000, || {
            black_box(on_request_head(
                &cfg,
                &view,
                "POST",
                "/v1/chat/completions",
                false,
            ));
        }),
    ));
    let p = pending(&cfg, &view);
    out.push((
        "parse_1k_body",
        time(20000, || {
            black_box(ClientRequest::parse(Endpoint::ChatCompletions, black_box(&chat)).is_ok());
        }),
    ));
    out.push((
        "request_body_1k (parse, model lookup, glob check, provider request)",
        time(20000, || {
            black_box(on_request_body(&cfg, &p, black_box(&chat)).is_ok());
        }),
    ));
    out.push((
        "request_body_100k",
        time(500, || {
            black_box(on_request_body(&cfg, &p, black_box(&big)).is_ok());
        }),
    ));
    let no_headers = |_: &str| -> Option<String> { None };
    // The answer side alone: Forwards made beforehand, one per call.
    let mut batches = Vec::new();
    for _ in 0..7 {
        let mut fs: Vec<_> = (0..20000)
            .filter_map(|_| on_request_body(&cfg, &p, &chat).ok())
            .collect();
        let t = Instant::now();
        for f in fs.iter_mut() {
            f.exchange.response_headers(&no_headers);
            black_box(f.exchange.on_response_head(&cfg, 200, true));
            black_box(f.exchange.on_stream_chunk(&resp, true));
            black_box(f.exchange.usage());
        }
        batches.push(t.elapsed().as_nanos() as f64 / fs.len().max(1) as f64);
    }
    batches.sort_by(|a, b| a.total_cmp(b));
    out.push(("response_1k (headers, body chunk, usage)", batches[3]));
    // A 200-chunk stream as the mock frames it: one event per body chunk.
    let events: Vec<&[u8]> = {
        let mut v = Vec::new();
        let mut start = 0;
        for i in 0..sse.len().saturating_sub(1) {
            if &sse[i..i + 2] == b"\n\n" {
                v.push(&sse[start..i + 2]);
                start = i + 2;
            }
        }
        v
    };
    out.push((
        "stream_200_chunks (per stream)",
        time(300, || {
            let Ok(mut f) = on_request_body(&cfg, &p, &stream_req) else {
                return;
            };
            f.exchange.response_headers(&no_headers);
            black_box(f.exchange.on_response_head(&cfg, 200, true));
            for (i, e) in events.iter().enumerate() {
                black_box(f.exchange.on_stream_chunk(e, i + 1 == events.len()));
            }
            black_box(f.exchange.usage());
        }),
    ));
    let json: Vec<String> = out
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v:.0}"))
        .collect();
    println!("{{\"events\": {}, {}}}", events.len(), json.join(", "));
}
