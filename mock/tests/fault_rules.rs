//! Fault rules (`/__mock/faults`): a failure switch per deployment.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// One request to one provider route, with what a client would send.
struct Target {
    provider: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

const BEDROCK_MODEL: &str = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";

fn openai_chat(model: &str) -> Target {
    Target {
        provider: "openai",
        path: "/v1/chat/completions".into(),
        headers: vec![("authorization", format!("Bearer {OPENAI_KEY}"))],
        body: chat(model, "hello"),
    }
}

fn azure_chat(deployment: &str) -> Target {
    Target {
        provider: "azure",
        path: format!("/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"),
        headers: vec![("api-key", AZURE_KEY.to_string())],
        body: json!({"messages": [user("hello")]}),
    }
}

fn anthropic_msg(model: &str) -> Target {
    Target {
        provider: "anthropic",
        path: "/v1/messages".into(),
        headers: vec![
            ("x-api-key", "sk-ant-mock".into()),
            ("anthropic-version", "2023-06-01".into()),
        ],
        body: json!({"model": model, "max_tokens": 100, "messages": [user("hello")]}),
    }
}

fn gemini_gen(model: &str) -> Target {
    Target {
        provider: "gemini",
        path: format!("/v1beta/models/{model}:generateContent"),
        headers: vec![("x-goog-api-key", "mock-gemini-key".into())],
        body: json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
    }
}

fn vertex_gen(model: &str) -> Target {
    Target {
        provider: "vertex",
        path: format!(
            "/v1/projects/p1/locations/us-central1/publishers/google/models/{model}:generateContent"
        ),
        headers: vec![("authorization", "Bearer mock-vertex-token".into())],
        body: json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
    }
}

/// `model` goes into the path percent-encoded, as the gateway sends it.
fn bedrock_converse(model: &str) -> Target {
    Target {
        provider: "bedrock",
        path: format!("/model/{}/converse", model.replace(':', "%3A")),
        headers: vec![("authorization", "Bearer mock-bedrock-key".into())],
        body: json!({"messages": [{"role": "user", "content": [{"text": "hello"}]}]}),
    }
}

fn compat_chat(provider: &'static str, model: &str) -> Target {
    Target {
        provider,
        path: format!("/{provider}/v1/chat/completions"),
        headers: Vec::new(),
        body: chat(model, "hello"),
    }
}

fn all_providers() -> Vec<Target> {
    vec![
        openai_chat("gpt-4o"),
        azure_chat("gpt-4o"),
        anthropic_msg("claude-sonnet-4-5"),
        gemini_gen("gemini-2.5-flash"),
        vertex_gen("gemini-2.5-flash"),
        bedrock_converse(BEDROCK_MODEL),
        compat_chat("ollama", "llama3.2"),
        compat_chat("vllm", "meta-llama/Llama-3.1-8B-Instruct"),
    ]
}

async fn send(m: &Mock, t: &Target, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut h: Vec<(&str, &str)> = t.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.extend_from_slice(extra);
    m.post(&t.path, &h, t.body.to_string()).await
}

/// Status and the `x-mock-fault` header (the rule that applied).
async fn status(m: &Mock, t: &Target, extra: &[(&str, &str)]) -> (u16, Option<String>) {
    let r = send(m, t, extra).await;
    let rule = r
        .headers()
        .get("x-mock-fault")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), rule)
}

async fn add_rule(m: &Mock, rule: Value) -> Value {
    let (s, v) = json(
        m.client
            .post(m.url("/__mock/faults"))
            .body(rule.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{rule} → {v}");
    v
}

async fn list(m: &Mock) -> Vec<Value> {
    let (s, v) = json(m.get("/__mock/faults", &[]).await).await;
    assert_eq!(s, 200);
    v.as_array().unwrap().clone()
}

async fn delete(m: &Mock, path: &str) -> (u16, Value) {
    json(m.client.delete(m.url(path)).send().await.unwrap()).await
}

#[tokio::test]
async fn rule_by_provider_fails_only_that_route() {
    let m = Mock::start().await;
    let targets = all_providers();
    for t in &targets {
        assert_eq!(status(&m, t, &[]).await, (200, None), "{}", t.path);
    }
    for target in &targets {
        let rule = add_rule(
            &m,
            json!({"provider": target.provider, "behavior": "fail=503"}),
        )
        .await;
        let id = rule["id"].to_string();
        for t in &targets {
            let got = status(&m, t, &[]).await;
            if t.provider == target.provider {
                assert_eq!(got, (503, Some(id.clone())), "{} with rule {rule}", t.path);
            } else {
                assert_eq!(got, (200, None), "{} with rule {rule}", t.path);
            }
        }
        assert_eq!(
            delete(&m, "/__mock/faults").await,
            (200, json!({"cleared": 1}))
        );
    }
}

#[tokio::test]
async fn retry_on_another_deployment_escapes_the_rule() {
    // What a gateway does: the same headers and body, first to OpenAI,
    // then to Azure, then to Anthropic.
    let m = Mock::start().await;
    add_rule(&m, json!({"provider": "openai", "behavior": "fail=503"})).await;
    add_rule(&m, json!({"provider": "azure", "behavior": "throttle=2"})).await;
    let same = [("x-request-id", "abc"), ("x-mock-behavior", "drip=0")];
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &same).await.0, 503);
    let r = send(&m, &azure_chat("gpt-4o"), &same).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.headers()["x-mock-fault"], "2");
    let (s, v) = json(send(&m, &anthropic_msg("claude-sonnet-4-5"), &same).await).await;
    assert_eq!(s, 200);
    assert_eq!(v["type"], "message");
}

#[tokio::test]
async fn rule_by_model() {
    let m = Mock::start().await;
    add_rule(&m, json!({"model": "gpt-4o", "behavior": "fail=500"})).await;
    // OpenAI: the body's model; Azure: the deployment in the path.
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await.0, 500);
    assert_eq!(status(&m, &openai_chat("gpt-4o-mini"), &[]).await.0, 200);
    assert_eq!(status(&m, &azure_chat("gpt-4o"), &[]).await.0, 500);
    assert_eq!(status(&m, &azure_chat("gpt-4o-mini"), &[]).await.0, 200);
    // An Azure body's model is not the deployment.
    let mut t = azure_chat("gpt-4o-mini");
    t.body["model"] = json!("gpt-4o");
    assert_eq!(status(&m, &t, &[]).await.0, 200);
    // GET /v1/models/{id}: the id.
    let r = m
        .get(
            "/v1/models/gpt-4o",
            &[("authorization", "Bearer sk-mock-openai")],
        )
        .await;
    assert_eq!(r.status(), 500);
    let r = m
        .get("/v1/models", &[("authorization", "Bearer sk-mock-openai")])
        .await;
    assert_eq!(r.status(), 200, "no model in a model list request");
    delete(&m, "/__mock/faults").await;

    // Provider and model together: only that deployment.
    add_rule(
        &m,
        json!({"provider": "azure", "model": "gpt-4o", "behavior": "fail=502"}),
    )
    .await;
    assert_eq!(status(&m, &azure_chat("gpt-4o"), &[]).await.0, 502);
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await.0, 200);
    assert_eq!(status(&m, &azure_chat("gpt-4o-mini"), &[]).await.0, 200);
    delete(&m, "/__mock/faults").await;

    // Path models: Gemini, Vertex, Bedrock (percent-decoded).
    add_rule(
        &m,
        json!({"model": "gemini-2.5-pro", "behavior": "fail=503"}),
    )
    .await;
    add_rule(&m, json!({"model": BEDROCK_MODEL, "behavior": "fail=503"})).await;
    add_rule(
        &m,
        json!({"model": "claude-opus-4-1", "behavior": "fail=529"}),
    )
    .await;
    assert_eq!(status(&m, &gemini_gen("gemini-2.5-pro"), &[]).await.0, 503);
    assert_eq!(
        status(&m, &gemini_gen("gemini-2.5-flash"), &[]).await.0,
        200
    );
    assert_eq!(status(&m, &vertex_gen("gemini-2.5-pro"), &[]).await.0, 503);
    assert_eq!(
        status(&m, &vertex_gen("gemini-2.5-flash"), &[]).await.0,
        200
    );
    assert_eq!(
        status(&m, &bedrock_converse(BEDROCK_MODEL), &[]).await.0,
        503
    );
    let other = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
    assert_eq!(status(&m, &bedrock_converse(other), &[]).await.0, 200);
    assert_eq!(
        status(&m, &anthropic_msg("claude-opus-4-1"), &[]).await.0,
        529
    );
    assert_eq!(
        status(&m, &anthropic_msg("claude-sonnet-4-5"), &[]).await.0,
        200
    );
    // Exact, not a prefix.
    assert_eq!(
        status(&m, &gemini_gen("gemini-2.5-pro-001"), &[]).await.0,
        200
    );
}

/// A raw HTTP/1.1 request; returns what the server sent until EOF.
async fn raw(m: &Mock, target: &str, host: &str, behavior: &str) -> String {
    let body = chat("gpt-4o", "hi").to_string();
    raw_post(m, target, &format!("host: {host}\r\n{behavior}"), &body).await
}

#[tokio::test]
async fn rule_by_host() {
    let m = Mock::start().await;
    add_rule(
        &m,
        json!({"host": "OpenAI-Primary.example:8443", "behavior": "fail=503"}),
    )
    .await;
    let path = "/v1/chat/completions";
    // Host header, compared whole and without regard to case.
    let r = raw(&m, path, "openai-primary.example:8443", "").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("x-mock-fault: 1\r\n"), "{r}");
    for other in [
        "openai-primary.example",
        "openai-primary.example:443",
        "openai-secondary.example:8443",
    ] {
        let r = raw(&m, path, other, "").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{other}: {r}");
    }
    // An absolute-form target's authority wins over the Host header.
    let r = raw(
        &m,
        &format!("http://openai-primary.example:8443{path}"),
        "openai-primary.example:8443",
        "",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    let r = raw(
        &m,
        &format!("http://elsewhere.example{path}"),
        "openai-primary.example:8443",
        "",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // reqwest's own Host (127.0.0.1:PORT) does not match.
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await, (200, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn count_is_exact_under_concurrency() {
    let m = Mock::start().await;
    let rule = add_rule(
        &m,
        json!({"provider": "openai", "behavior": "fail=503", "count": 3}),
    )
    .await;
    assert_eq!(rule["count"], 3);
    assert_eq!(rule["remaining"], 3);
    // A fallback behind it: applies once the first is used up.
    add_rule(
        &m,
        json!({"provider": "azure", "behavior": "fail=500", "count": 2}),
    )
    .await;
    let url = m.url("/v1/chat/completions");
    let body = chat("gpt-4o", "hi").to_string();
    // 100 requests at once: each task first opens its own connection (a
    // request to a path no rule looks at), then all wait for each other
    // and send the real one together.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (c, url, body) = (m.client.clone(), url.clone(), body.clone());
        let (barrier, warm) = (barrier.clone(), m.url("/__mock/health"));
        set.spawn(async move {
            let r = c.get(warm).send().await;
            assert_eq!(r.unwrap().text().await.unwrap(), "ok");
            barrier.wait().await;
            c.post(url)
                .header("authorization", "Bearer sk-mock-openai")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    while let Some(s) = set.join_next().await {
        *counts.entry(s.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(counts, [(200, 97), (503, 3)].into_iter().collect());
    // Used up and gone; the Azure rule was not touched by OpenAI requests.
    let rules = list(&m).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["id"], 2);
    assert_eq!(
        (rules[0]["remaining"].clone(), rules[0]["fired"].clone()),
        (json!(2), json!(0))
    );
    let azure: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(status(&m, &azure_chat("gpt-4o"), &[]).await.0);
        }
        v
    };
    assert_eq!(azure, [500, 500, 200, 200]);
    assert!(list(&m).await.is_empty());
}

#[tokio::test]
async fn first_matching_rule_applies() {
    let m = Mock::start().await;
    add_rule(
        &m,
        json!({"provider": "openai", "model": "gpt-4o", "behavior": "fail=500", "count": 1}),
    )
    .await;
    add_rule(&m, json!({"provider": "openai", "behavior": "fail=502"})).await;
    let t = openai_chat("gpt-4o");
    assert_eq!(status(&m, &t, &[]).await, (500, Some("1".into())));
    assert_eq!(status(&m, &t, &[]).await, (502, Some("2".into())));
    assert_eq!(status(&m, &openai_chat("gpt-4o-mini"), &[]).await.0, 502);
}

#[tokio::test]
async fn request_knobs_override_the_rule_key_by_key() {
    let m = Mock::start().await;
    add_rule(
        &m,
        json!({"provider": "openai", "behavior": "fail=503,stall=300"}),
    )
    .await;
    let t = openai_chat("gpt-4o");
    // The header's fail wins; the rule's stall stays.
    let t0 = Instant::now();
    assert_eq!(
        status(&m, &t, &[("x-mock-behavior", "fail=429")]).await.0,
        429
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    // The header can turn the rule's fail off (a knob with a bad value is off).
    let t0 = Instant::now();
    let (s, rule) = status(&m, &t, &[("x-mock-behavior", "fail=off,stall=0")]).await;
    assert_eq!((s, rule.as_deref()), (200, Some("1")));
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    // A marker overrides both.
    let mut marked = openai_chat("gpt-4o");
    marked.body = chat("gpt-4o", "[[mock:fail=500,stall=0]]");
    assert_eq!(
        status(&m, &marked, &[("x-mock-behavior", "fail=429")])
            .await
            .0,
        500
    );
    // Knobs the rule does not set come from the header as usual.
    let r = send(
        &m,
        &azure_chat("gpt-4o"),
        &[("x-mock-behavior", "throttle=4")],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("x-mock-fault").is_none());
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_field() {
    let m = Mock::start().await;
    for (body, field) in [
        (json!({"provider": "openai"}).to_string(), Some("behavior")),
        (
            json!({"provider": "open-ai", "behavior": "fail=503"}).to_string(),
            Some("provider"),
        ),
        (
            json!({"provider": "gce_metadata", "behavior": "fail=503"}).to_string(),
            Some("provider"),
        ),
        (
            json!({"behavior": "fial=503"}).to_string(),
            Some("behavior"),
        ),
        (
            json!({"behavior": "fail=5030"}).to_string(),
            Some("behavior"),
        ),
        (
            json!({"behavior": "reset=sideways"}).to_string(),
            Some("behavior"),
        ),
        (
            json!({"behavior": "nodone=maybe"}).to_string(),
            Some("behavior"),
        ),
        (json!({"behavior": " , "}).to_string(), Some("behavior")),
        (json!({"behavior": 503}).to_string(), Some("behavior")),
        (
            json!({"behavior": "fail=503", "count": 0}).to_string(),
            Some("count"),
        ),
        (
            json!({"behavior": "fail=503", "count": "3"}).to_string(),
            Some("count"),
        ),
        (
            json!({"behavior": "fail=503", "host": ""}).to_string(),
            Some("host"),
        ),
        (
            json!({"behavior": "fail=503", "deployment": "x"}).to_string(),
            Some("deployment"),
        ),
        (
            json!({"behavior": "fail=503", "id": 4}).to_string(),
            Some("id"),
        ),
        ("[]".to_string(), None),
        ("fail=503".to_string(), None),
        (String::new(), None),
    ] {
        let r = m
            .client
            .post(m.url("/__mock/faults"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (s, v) = json(r).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"].as_str(), field, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        if let Some(f) = field {
            assert!(msg.starts_with(&format!("{f}: ")), "{msg}");
        }
    }
    let (_, v) = json(
        m.client
            .post(m.url("/__mock/faults"))
            .body(json!({"behavior": "fial=503"}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("\"fial\""),
        "{v}"
    );
    assert!(list(&m).await.is_empty(), "nothing was installed");
    // null is absent.
    let v = add_rule(
        &m,
        json!({"provider": null, "behavior": "fail=503", "count": null}),
    )
    .await;
    assert_eq!(v["provider"], Value::Null);
    assert_eq!(v["count"], Value::Null);
}

#[tokio::test]
async fn list_get_and_delete() {
    let m = Mock::start().await;
    let a = add_rule(
        &m,
        json!({"provider": "openai", "behavior": "fail=503", "count": 5}),
    )
    .await;
    assert_eq!(
        a,
        json!({"id": 1, "provider": "openai", "model": null, "host": null,
               "behavior": "fail=503", "count": 5, "remaining": 5, "fired": 0})
    );
    let b = add_rule(
        &m,
        json!({"model": "gpt-4o-mini", "host": "h:1", "behavior": "stall=1"}),
    )
    .await;
    assert_eq!(b["id"], 2);
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await.0, 503);
    let rules = list(&m).await;
    assert_eq!(rules.len(), 2);
    assert_eq!(
        (rules[0]["remaining"].clone(), rules[0]["fired"].clone()),
        (json!(4), json!(1))
    );
    assert_eq!(rules[1], b);
    let (s, one) = json(m.get("/__mock/faults/1", &[]).await).await;
    assert_eq!((s, one["fired"].clone()), (200, json!(1)));
    // Delete one: it comes back as it was.
    let (s, gone) = delete(&m, "/__mock/faults/1").await;
    assert_eq!(
        (s, gone["id"].clone(), gone["remaining"].clone()),
        (200, json!(1), json!(4))
    );
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await, (200, None));
    for path in ["/__mock/faults/1", "/__mock/faults/99", "/__mock/faults/x"] {
        let (s, v) = delete(&m, path).await;
        assert_eq!(s, 404, "{path}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no fault rule"));
        assert_eq!(m.get(path, &[]).await.status(), 404);
    }
    // Ids are not reused.
    assert_eq!(add_rule(&m, json!({"behavior": "fail=500"})).await["id"], 3);
    assert_eq!(
        delete(&m, "/__mock/faults").await,
        (200, json!({"cleared": 2}))
    );
    assert_eq!(
        delete(&m, "/__mock/faults").await,
        (200, json!({"cleared": 0}))
    );
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await, (200, None));
    let r = m.client.put(m.url("/__mock/faults")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = m
        .client
        .post(m.url("/__mock/faults/3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn transport_knobs_via_rules() {
    let m = Mock::start().await;
    // reset=before_headers on OpenAI only: not a byte comes back.
    add_rule(
        &m,
        json!({"provider": "openai", "behavior": "reset=before_headers", "count": 1}),
    )
    .await;
    assert_eq!(raw(&m, "/v1/chat/completions", "x", "").await, "");
    let r = raw(&m, "/v1/chat/completions", "x", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "count=1 used up: {r}");
    // reset=mid_stream on the Azure deployment: headers, half the body, abort.
    add_rule(
        &m,
        json!({"provider": "azure", "model": "gpt-4o", "behavior": "reset=mid_stream"}),
    )
    .await;
    let r = send(&m, &azure_chat("gpt-4o"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-mock-fault"], "2");
    assert!(r.text().await.is_err());
    let r = send(&m, &azure_chat("gpt-4o-mini"), &[]).await;
    assert!(r.text().await.is_ok());
    let mut stream = azure_chat("gpt-4o");
    stream.body["stream"] = json!(true);
    let r = send(&m, &stream, &[]).await;
    assert!(r.text().await.is_err(), "a stream is cut too");
    // stall on Anthropic only.
    add_rule(
        &m,
        json!({"provider": "anthropic", "behavior": "stall=400"}),
    )
    .await;
    let t0 = Instant::now();
    assert_eq!(
        status(&m, &anthropic_msg("claude-sonnet-4-5"), &[]).await.0,
        200
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await.0, 200);
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn unknown_paths_use_up_nothing() {
    let m = Mock::start().await;
    add_rule(
        &m,
        json!({"provider": "openai", "behavior": "fail=503", "count": 1}),
    )
    .await;
    // An unknown endpoint and a wrong method never reach the knobs.
    let r = m
        .post(
            "/v1/nope",
            &[("authorization", "Bearer sk-mock-openai")],
            "{}",
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = m
        .get(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-mock-openai")],
        )
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(list(&m).await[0]["remaining"], 1);
    assert_eq!(status(&m, &openai_chat("gpt-4o"), &[]).await.0, 503);
    assert!(list(&m).await.is_empty());
}

#[tokio::test]
async fn rules_from_config() {
    let spec = |v: Value| llm_mock::faults::RuleSpec::from_json(&v).unwrap();
    let config = llm_mock::Config {
        faults: vec![
            spec(json!({"provider": "vllm", "behavior": "fail=500", "count": 1})),
            spec(json!({"provider": "ollama", "behavior": "fail=503"})),
        ],
        ..Default::default()
    };
    let m = Mock::with(config).await;
    let rules = list(&m).await;
    assert_eq!(
        rules.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2)]
    );
    let vllm = compat_chat("vllm", "m");
    assert_eq!(status(&m, &vllm, &[]).await.0, 500);
    assert_eq!(status(&m, &vllm, &[]).await.0, 200);
    assert_eq!(status(&m, &compat_chat("ollama", "m"), &[]).await.0, 503);
}
