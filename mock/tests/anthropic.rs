//! Anthropic Messages API: auth, validation, answers, streaming, tools,
//! thinking, prompt caching, count_tokens and fault knobs.

mod common;

use std::time::{Duration, Instant};

use common::{json, Mock};
use llm_mock::Config;
use serde_json::{json, Value};

const KEY: &str = "sk-ant-mock";
const VERSION: &str = "2023-06-01";
const MODEL: &str = "claude-sonnet-4-5";

/// POST with the default key and version plus `extra` headers.
async fn post(m: &Mock, path: &str, extra: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let mut headers = vec![("x-api-key", KEY), ("anthropic-version", VERSION)];
    headers.extend_from_slice(extra);
    m.post(path, &headers, body.to_string()).await
}

async fn messages(m: &Mock, body: &Value) -> (u16, Value) {
    json(post(m, "/v1/messages", &[], body).await).await
}

async fn with_behavior(m: &Mock, behavior: &str, body: &Value) -> reqwest::Response {
    post(m, "/v1/messages", &[("x-mock-behavior", behavior)], body).await
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(content: Value) -> Value {
    json!({"role": "assistant", "content": content})
}

fn req(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 256, "messages": [user(text)]})
}

fn stream_req(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 256, "stream": true, "messages": [user(text)]})
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object",
                            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                            "required": ["city"]}})
}

fn time_tool() -> Value {
    json!({"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}})
}

fn err_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// Asserts a 400 `invalid_request_error` with exactly `message`.
async fn expect_400(m: &Mock, body: &Value, message: &str) {
    let (s, v) = messages(m, body).await;
    assert_eq!(s, 400, "{body} -> {v}");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(err_message(&v), message, "{body}");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
}

/// `(event name, data)` pairs of an SSE body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap_or_else(|| panic!("{e:?}"));
            let name = name
                .strip_prefix("event: ")
                .expect("event line")
                .to_string();
            let data: Value =
                serde_json::from_str(data.strip_prefix("data: ").expect("data line")).unwrap();
            assert_eq!(data["type"], name.as_str(), "event name matches data type");
            (name, data)
        })
        .collect()
}

fn names(evs: &[(String, Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

/// Concatenated delta field `field` of block `index`.
fn deltas(evs: &[(String, Value)], index: u64, field: &str) -> String {
    evs.iter()
        .filter(|(n, d)| n == "content_block_delta" && d["index"] == index)
        .filter_map(|(_, d)| d["delta"][field].as_str())
        .collect()
}

async fn stream(m: &Mock, behavior: &str, body: &Value) -> Vec<(String, Value)> {
    let r = with_behavior(m, behavior, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    events(&r.text().await.unwrap())
}

async fn count(m: &Mock, body: &Value) -> u64 {
    let (s, v) = json(post(m, "/v1/messages/count_tokens", &[], body).await).await;
    assert_eq!(s, 200, "{v}");
    v["input_tokens"].as_u64().unwrap()
}

// ---------------------------------------------------------------------------
// Auth, headers, routing

#[tokio::test]
async fn auth_and_version() {
    let m = Mock::start().await;
    let body = req("hi").to_string();
    let v23 = ("anthropic-version", VERSION);

    let r = m.post("/v1/messages", &[v23], body.clone()).await;
    assert_eq!(r.status(), 401);
    let rid = r.headers()["request-id"].to_str().unwrap().to_string();
    let (_, v) = json(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(err_message(&v), "x-api-key header is required");
    assert_eq!(v["request_id"], rid.as_str());
    assert!(rid.starts_with("req_011C") && rid.len() == 28, "{rid}");

    for bad in [
        ("x-api-key", "wrong"),
        ("x-api-key", "sk-mock-openai"),
        ("authorization", "Bearer wrong"),
    ] {
        let (s, v) = json(m.post("/v1/messages", &[v23, bad], body.clone()).await).await;
        assert_eq!(s, 401, "{bad:?}");
        assert_eq!(
            v["error"],
            json!({"type": "authentication_error", "message": "invalid x-api-key"})
        );
    }
    // Bearer works too; x-api-key wins when both are sent.
    let r = m
        .post(
            "/v1/messages",
            &[v23, ("authorization", "Bearer sk-ant-mock")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = m
        .post(
            "/v1/messages",
            &[
                v23,
                ("x-api-key", "wrong"),
                ("authorization", "Bearer sk-ant-mock"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), 401);

    // anthropic-version.
    let (s, v) = json(
        m.post("/v1/messages", &[("x-api-key", KEY)], body.clone())
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"],
        json!({"type": "invalid_request_error", "message": "anthropic-version: header is required"})
    );
    let (s, v) = json(
        m.post(
            "/v1/messages",
            &[("x-api-key", KEY), ("anthropic-version", "2024-10-22")],
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        err_message(&v),
        "anthropic-version: \"2024-10-22\" is not a valid version"
    );
    let r = m
        .post(
            "/v1/messages",
            &[("x-api-key", KEY), ("anthropic-version", "2023-01-01")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn custom_keys_routes_and_recording() {
    let m = Mock::with(Config {
        anthropic_keys: vec!["k1".into(), "k2".into()],
        ..Config::default()
    })
    .await;
    let body = req("hi").to_string();
    for (key, status) in [("k1", 200), ("k2", 200), (KEY, 401)] {
        let r = m
            .post(
                "/v1/messages",
                &[("x-api-key", key), ("anthropic-version", VERSION)],
                body.clone(),
            )
            .await;
        assert_eq!(r.status(), status, "{key}");
    }
    let h = [("x-api-key", "k1"), ("anthropic-version", VERSION)];
    // The /anthropic prefix serves the same API.
    let r = m.post("/anthropic/v1/messages", &h, body.clone()).await;
    assert_eq!(r.status(), 200);
    let hdrs = r.headers().clone();
    assert!(hdrs["request-id"].to_str().unwrap().starts_with("req_"));
    assert!(hdrs.contains_key("anthropic-ratelimit-requests-limit"));
    assert!(hdrs.contains_key("anthropic-ratelimit-tokens-remaining"));
    // Unknown path and wrong method.
    let (s, v) = json(m.post("/anthropic/v1/nope", &h, body.clone()).await).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    let r = m.get("/v1/messages", &h).await;
    assert_eq!(r.status(), 405);
    // Other /v1 paths still belong to OpenAI.
    let r = m.get("/v1/models", &[]).await;
    assert_eq!(r.status(), 401);

    let log: Value = m.get("/__mock/requests", &[]).await.json().await.unwrap();
    let log = log.as_array().unwrap();
    let first = &log[0];
    assert_eq!(first["provider"], "anthropic");
    assert_eq!(first["path"], "/v1/messages");
    assert_eq!(first["headers"]["anthropic-version"], VERSION);
    assert_eq!(first["body"], body.as_str());
    assert_eq!(log.last().unwrap()["provider"], "openai");
    assert!(log
        .iter()
        .any(|e| e["path"] == "/anthropic/v1/messages" && e["provider"] == "anthropic"));
}

// ---------------------------------------------------------------------------
// Validation

#[tokio::test]
async fn validation_errors() {
    let m = Mock::start().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"max_tokens": 10, "messages": [user("x")]}),
            "model: Field required",
        ),
        (
            json!({"model": MODEL, "messages": [user("x")]}),
            "max_tokens: Field required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10}),
            "messages: Field required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": []}),
            "messages: at least one message is required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": "hi"}),
            "messages: Input should be a valid list",
        ),
        (
            json!({"model": 5, "max_tokens": 10, "messages": [user("x")]}),
            "model: Input should be a valid string",
        ),
        (
            json!({"model": MODEL, "max_tokens": "10", "messages": [user("x")]}),
            "max_tokens: Input should be a valid integer",
        ),
        (
            json!({"model": MODEL, "max_tokens": -1, "messages": [user("x")]}),
            "max_tokens: Input should be greater than or equal to 0",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "system", "content": "be nice"}, user("x")]}),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [user("x"), {"role": "tool", "content": "x"}]}),
            "messages.1.role: Input should be 'user' or 'assistant'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"content": "x"}]}),
            "messages.0.role: Field required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x", "name": "bob"}]}),
            "messages.0.name: Extra inputs are not permitted",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "n": 2, "messages": [user("x")]}),
            "n: Extra inputs are not permitted",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "response_format": {"type": "json_object"}, "messages": [user("x")]}),
            "response_format: Extra inputs are not permitted",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "temperature": 1.5, "messages": [user("x")]}),
            "temperature: Input should be less than or equal to 1",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "temperature": -0.5, "messages": [user("x")]}),
            "temperature: Input should be greater than or equal to 0",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "metadata": {"session": "x"}, "messages": [user("x")]}),
            "metadata.session: Extra inputs are not permitted",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [user("")]}),
            "messages.0: all messages must have non-empty content except for the optional final assistant message",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}),
            "messages: text content blocks must be non-empty",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [user("x"), assistant(json!("The answer is "))]}),
            "messages: final assistant content cannot end with trailing whitespace",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages.0.content.0: Input tag 'image_url' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result', 'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', 'container_upload'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}]}),
            "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}]}),
            "messages.0.content.0.image.source.base64.media_type: Field required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "messages": [user("x"), {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}, "text": "x"}]}]}),
            "messages.1.content.0.tool_use.text: Extra inputs are not permitted",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "tools": [{"name": "bad name", "input_schema": {"type": "object"}}], "messages": [user("x")]}),
            "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "tools": [{"name": "f"}], "messages": [user("x")]}),
            "tools.0.custom.input_schema: Field required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "tools": [weather_tool(), weather_tool()], "messages": [user("x")]}),
            "tools: Tool names must be unique.",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [user("x")]}),
            "tools.0: Input tag 'function' found using 'type' does not match any of the expected tags: 'custom', 'bash_20250124', 'code_execution_20250825', 'computer_20250124', 'memory_20250818', 'text_editor_20250728', 'web_fetch_20250910', 'web_search_20250305'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "tool_choice": {"type": "required"}, "messages": [user("x")]}),
            "tool_choice: Input tag 'required' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        ),
        (
            json!({"model": MODEL, "max_tokens": 10, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "scope": "global"}}], "messages": [user("x")]}),
            "system.0.cache_control.ephemeral.scope: Extra inputs are not permitted",
        ),
    ];
    for (body, message) in &cases {
        expect_400(&m, body, message).await;
    }
    // Distinct custom tools are fine.
    let (s, _) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 10, "tools": [weather_tool(), time_tool()], "messages": [user("x")]}),
    )
    .await;
    assert_eq!(s, 200);

    // Not JSON.
    let (s, v) = json(
        m.post(
            "/v1/messages",
            &[("x-api-key", KEY), ("anthropic-version", VERSION)],
            "{nope",
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        err_message(&v).starts_with("The request body is not valid JSON: "),
        "{v}"
    );
}

#[tokio::test]
async fn unknown_model_is_404() {
    let m = Mock::start().await;
    for model in ["gpt-4o", "claude-", "llama3"] {
        let (s, v) = messages(
            &m,
            &json!({"model": model, "max_tokens": 10, "messages": [user("x")]}),
        )
        .await;
        assert_eq!(s, 404);
        assert_eq!(
            v["error"],
            json!({"type": "not_found_error", "message": format!("model: {model}")})
        );
    }
    for model in [
        "claude-3-5-haiku-latest",
        "claude-opus-4-1-20250805",
        "claude-anything",
    ] {
        let (s, v) = messages(
            &m,
            &json!({"model": model, "max_tokens": 10, "messages": [user("x")]}),
        )
        .await;
        assert_eq!(s, 200, "{model}");
        assert_eq!(v["model"], model);
    }
}

#[tokio::test]
async fn tool_pairing_rules() {
    let m = Mock::start().await;
    let tool_use = |id: &str| json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}});
    let result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "sunny"});
    let base = |msgs: Value| json!({"model": MODEL, "max_tokens": 100, "tools": [weather_tool()], "messages": msgs});

    expect_400(
        &m,
        &base(json!([user("weather?"), assistant(json!([tool_use("toolu_a")])),
                     {"role": "user", "content": [result("toolu_b")]}])),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_a. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    )
    .await;
    expect_400(
        &m,
        &base(json!([user("weather?"), assistant(json!([tool_use("toolu_a")])),
                     {"role": "user", "content": [result("toolu_a"), result("toolu_zz")]}])),
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_zz. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    )
    .await;
    expect_400(
        &m,
        &base(json!([{"role": "user", "content": [result("toolu_a")]}])),
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_a. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    )
    .await;
    expect_400(
        &m,
        &base(json!([{"role": "user", "content": [tool_use("toolu_a")]}])),
        "messages.0.content.0: `tool_use` blocks are only allowed in `assistant` messages",
    )
    .await;

    // Results split over two consecutive user messages are one turn, and
    // tool uses split over two assistant messages too.
    let (s, v) = messages(
        &m,
        &base(json!([
            user("weather?"),
            assistant(json!([tool_use("toolu_a")])),
            assistant(json!([tool_use("toolu_b")])),
            {"role": "user", "content": [result("toolu_a")]},
            {"role": "user", "content": [result("toolu_b"), {"type": "text", "text": "thanks"}]}
        ])),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"][0]["text"], "Tool result received: sunny sunny");
}

#[tokio::test]
async fn thinking_validation() {
    let m = Mock::start().await;
    let th = |extra: Value| {
        let mut b = json!({"model": MODEL, "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}, "messages": [user("x")]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let docs = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking";
    expect_400(
        &m,
        &th(json!({"thinking": {"type": "enabled", "budget_tokens": 512}})),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    )
    .await;
    expect_400(
        &m,
        &th(json!({"thinking": {"type": "enabled"}})),
        "thinking.enabled.budget_tokens: Field required",
    )
    .await;
    expect_400(
        &m,
        &th(json!({"thinking": {"type": "on"}})),
        "thinking: Input tag 'on' found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'",
    )
    .await;
    for max in [2048, 1000] {
        expect_400(
            &m,
            &th(json!({"max_tokens": max})),
            &format!("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at {docs}#max-tokens-and-context-window-size"),
        )
        .await;
    }
    let consider = format!(
        "Please consult our documentation at {docs}#important-considerations-when-using-extended-thinking"
    );
    expect_400(
        &m,
        &th(json!({"temperature": 0.5})),
        &format!("`temperature` may only be set to 1 when thinking is enabled. {consider}"),
    )
    .await;
    expect_400(
        &m,
        &th(json!({"top_p": 0.9})),
        &format!(
            "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. {consider}"
        ),
    )
    .await;
    expect_400(
        &m,
        &th(json!({"top_k": 5})),
        &format!("`top_k` must be unset when thinking is enabled. {consider}"),
    )
    .await;
    expect_400(
        &m,
        &th(json!({"tools": [weather_tool()], "tool_choice": {"type": "any"}})),
        "Thinking may not be enabled when tool_choice forces tool use.",
    )
    .await;
    // temperature 1, top_p 0.95 and auto tool choice are fine.
    let (s, _) = messages(
        &m,
        &th(json!({"temperature": 1, "tools": [weather_tool()], "tool_choice": {"type": "auto"}})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = messages(&m, &th(json!({"top_p": 0.95}))).await;
    assert_eq!(s, 200);
    // Disabled thinking has no restrictions.
    let (s, _) = messages(
        &m,
        &th(json!({"thinking": {"type": "disabled"}, "temperature": 0.2})),
    )
    .await;
    assert_eq!(s, 200);

    // The tool-use turn before a final tool result must start with thinking.
    let turns = json!([user("weather?"),
        assistant(json!([{"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}])),
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"}]}]);
    expect_400(
        &m,
        &th(json!({"tools": [weather_tool()], "messages": turns})),
        &format!("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at {docs}"),
    )
    .await;
    // A thinking block with an empty signature is rejected.
    let turns = json!([user("weather?"),
        assistant(json!([{"type": "thinking", "thinking": "hmm", "signature": ""},
                         {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}])),
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"}]}]);
    expect_400(
        &m,
        &th(json!({"tools": [weather_tool()], "messages": turns})),
        "messages.1.content.0: Invalid `signature` in `thinking` block",
    )
    .await;
    // Thinking blocks take no cache_control.
    let turns = json!([
        user("q"),
        assistant(
            json!([{"type": "thinking", "thinking": "hmm", "signature": "c2ln", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "a"}])
        ),
        user("q2")
    ]);
    expect_400(
        &m,
        &th(json!({"messages": turns})),
        "messages.1.content.0.thinking.cache_control: Extra inputs are not permitted",
    )
    .await;
}

#[tokio::test]
async fn sampling_rules_depend_on_model() {
    let m = Mock::start().await;
    let body = |model: &str| json!({"model": model, "max_tokens": 10, "temperature": 0.5, "top_p": 0.9, "messages": [user("x")]});
    for model in [
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-1",
        "claude-haiku-4-5",
    ] {
        expect_400(
            &m,
            &body(model),
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
        )
        .await;
    }
    for model in ["claude-3-7-sonnet-20250219", "claude-sonnet-4-20250514"] {
        let (s, _) = messages(&m, &body(model)).await;
        assert_eq!(s, 200, "{model}");
    }
}

#[tokio::test]
async fn cache_breakpoint_limit() {
    let m = Mock::start().await;
    let cc = json!({"type": "ephemeral"});
    let sys: Vec<Value> = (0..5)
        .map(|i| json!({"type": "text", "text": format!("part {i}"), "cache_control": cc}))
        .collect();
    expect_400(
        &m,
        &json!({"model": MODEL, "max_tokens": 10, "system": sys, "messages": [user("x")]}),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    )
    .await;
    expect_400(
        &m,
        &json!({"model": MODEL, "max_tokens": 10, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "2h"}}], "messages": [user("x")]}),
        "system.0.cache_control.ephemeral.ttl: Input should be '5m' or '1h'",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Conversation rules and answers

#[tokio::test]
async fn conversation_rules() {
    let m = Mock::start().await;
    // An assistant message may come first.
    let (s, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 100, "messages": [assistant(json!("Hi, I am Claude.")), user("hello")]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Consecutive user messages are merged into one turn.
    let (s, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 100, "messages": [user("first"), user("second"),
            {"role": "user", "content": [{"type": "text", "text": "third"}]}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["content"][0]["text"],
        format!("Hello from the mock anthropic model {MODEL}. You said: first second third")
    );
    // A final assistant message is a prefill; an empty one too.
    for prefill in [json!("The answer is ("), json!("")] {
        let (s, v) = messages(
            &m,
            &json!({"model": MODEL, "max_tokens": 100, "messages": [user("pick"), assistant(prefill)]}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["stop_reason"], "end_turn");
    }
}

#[tokio::test]
async fn non_stream_answer() {
    let m = Mock::start().await;
    let body = req("Hello, world!");
    let (s, v) = messages(&m, &body).await;
    assert_eq!(s, 200);
    let text = format!("Hello from the mock anthropic model {MODEL}. You said: Hello, world!");
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("msg_01") && id.len() == 28, "{id}");
    assert_eq!(
        v,
        json!({
            "id": id, "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 3 + 4 + 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                      "output_tokens": 18, "service_tier": "standard"}
        })
    );
    // Deterministic: same body, same id and answer.
    let (_, again) = messages(&m, &body).await;
    assert_eq!(again, v);
    let (_, other) = messages(&m, &req("Hello, world?")).await;
    assert_ne!(other["id"], v["id"]);

    // Images are counted.
    let img = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
    let (s, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, img, img]}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["content"][0]["text"]
        .as_str()
        .unwrap()
        .ends_with("You said: What is this? [2 images]"));
    assert_eq!(v["usage"]["input_tokens"], 3 + 4 + 4 + 2 * 85);
}

#[tokio::test]
async fn stop_reasons() {
    let m = Mock::start().await;
    // max_tokens cuts to whole words.
    let (_, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 3, "messages": [user("x")]}),
    )
    .await;
    assert_eq!(v["content"][0]["text"], "Hello from the");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"]["output_tokens"], 3);
    // A stop sequence cuts before it and is reported.
    let (_, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 100, "stop_sequences": ["zzz", "mock"], "messages": [user("x")]}),
    )
    .await;
    assert_eq!(v["content"][0]["text"], "Hello from the ");
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], "mock");
    // max_tokens 0 only warms the cache.
    let (s, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 0, "messages": [user("x")]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["content"], json!([]));
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 0);
}

// ---------------------------------------------------------------------------
// Streaming

#[tokio::test]
async fn stream_event_sequence() {
    let m = Mock::start().await;
    let (_, full) = messages(&m, &req("stream me")).await;
    let evs = stream(&m, "", &stream_req("stream me")).await;
    let n = names(&evs);
    assert_eq!(
        &n[..3],
        &["message_start", "content_block_start", "ping"],
        "{n:?}"
    );
    assert_eq!(
        &n[n.len() - 3..],
        &["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(n[3..n.len() - 3]
        .iter()
        .all(|e| *e == "content_block_delta"));

    let start = &evs[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["stop_sequence"], Value::Null);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        start["usage"]["input_tokens"],
        full["usage"]["input_tokens"]
    );
    assert!(start["id"].as_str().unwrap().starts_with("msg_01"));
    assert_eq!(
        evs[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    // One text_delta per word, reassembling the non-stream text.
    let word_deltas = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .count();
    let text = deltas(&evs, 0, "text");
    assert_eq!(text, full["content"][0]["text"].as_str().unwrap());
    assert_eq!(word_deltas, text.split_whitespace().count());
    let md = &evs[evs.len() - 2].1;
    assert_eq!(
        md["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(md["usage"]["output_tokens"], full["usage"]["output_tokens"]);

    // Stop sequence in a stream.
    let mut body = stream_req("x");
    body["stop_sequences"] = json!(["anthropic"]);
    let evs = stream(&m, "", &body).await;
    let md = &evs[evs.len() - 2].1;
    assert_eq!(
        md["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "anthropic"})
    );
    assert_eq!(deltas(&evs, 0, "text"), "Hello from the mock ");
}

// ---------------------------------------------------------------------------
// Tools

#[tokio::test]
async fn tool_use_answers() {
    let m = Mock::start().await;
    let body = |extra: Value| {
        let mut b = json!({"model": MODEL, "max_tokens": 200, "tools": [weather_tool(), time_tool()], "messages": [user("weather and time?")]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // Default: parallel tool use, one call per tool.
    let (s, v) = messages(&m, &body(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use");
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[0]["type"], "tool_use");
    assert_eq!(content[0]["name"], "get_weather");
    assert_eq!(content[0]["input"], json!({"city": "mock"}));
    assert_eq!(content[1]["name"], "get_time");
    assert_eq!(content[1]["input"], json!({"tz": "mock"}));
    let id = content[0]["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_01") && id.len() == 30, "{id}");
    assert_ne!(content[0]["id"], content[1]["id"]);
    // output = name + input tokens of each call.
    // name + input JSON per call: "get_weather" is 2 tokens ('_' counts),
    // {"city":"mock"} is 8 (7 punctuation + 1); the same for get_time.
    assert_eq!(v["usage"]["output_tokens"], (2 + 8) + (2 + 8));

    // disable_parallel_tool_use → one call.
    let (_, v) = messages(
        &m,
        &body(json!({"tool_choice": {"type": "auto", "disable_parallel_tool_use": true}})),
    )
    .await;
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    // none → text.
    let (_, v) = messages(&m, &body(json!({"tool_choice": {"type": "none"}}))).await;
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    // Forced tool → the full object from the schema.
    let (_, v) = messages(
        &m,
        &body(json!({"tool_choice": {"type": "tool", "name": "get_weather"}})),
    )
    .await;
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(v["content"][0]["name"], "get_weather");
    assert_eq!(
        v["content"][0]["input"],
        json!({"city": "mock", "unit": "c"})
    );
    // Forcing an unknown tool fails.
    let (s, _) = messages(
        &m,
        &body(json!({"tool_choice": {"type": "tool", "name": "nope"}})),
    )
    .await;
    assert_eq!(s, 400);

    // After a tool result: text, unless a tool is forced.
    let follow = json!([
        user("weather?"),
        assistant(json!([{"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {"city": "Paris"}}])),
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
            "content": [{"type": "text", "text": "72F and sunny"}]}]}
    ]);
    let (s, v) = messages(&m, &body(json!({"messages": follow}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Tool result received: 72F and sunny"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    let (_, v) = messages(
        &m,
        &body(json!({"messages": follow, "tool_choice": {"type": "any", "disable_parallel_tool_use": true}})),
    )
    .await;
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);

    // Server tools alone never produce tool_use blocks.
    let (_, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 100, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}], "messages": [user("news")]}),
    )
    .await;
    assert_eq!(v["content"][0]["type"], "text");
    // Forcing a server tool leaves nothing for the mock to call: text.
    let (s, v) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 100, "tools": [weather_tool(), {"type": "web_search_20250305", "name": "web_search"}],
                "tool_choice": {"type": "tool", "name": "web_search"}, "messages": [user("news")]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"][0]["type"], "text");
}

#[tokio::test]
async fn tool_use_stream_fragments() {
    let m = Mock::start().await;
    let body = json!({"model": MODEL, "max_tokens": 200, "stream": true, "tools": [weather_tool()],
        "tool_choice": {"type": "tool", "name": "get_weather"}, "messages": [user("weather?")]});
    let evs = stream(&m, "", &body).await;
    assert_eq!(evs[1].0, "content_block_start");
    let block = &evs[1].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    assert!(block["id"].as_str().unwrap().starts_with("toolu_01"));
    let frags: Vec<&str> = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(frags.len() > 2, "{frags:?}");
    // Fragments cut through tokens: none is valid JSON on its own...
    assert!(frags
        .iter()
        .all(|f| serde_json::from_str::<Value>(f).is_err()));
    // ...but together they are the input.
    let input: Value = serde_json::from_str(&frags.concat()).unwrap();
    let (_, full) = messages(&m, &{
        let mut b = body.clone();
        b["stream"] = json!(false);
        b
    })
    .await;
    assert_eq!(input, full["content"][0]["input"]);
    let md = &evs[evs.len() - 2].1;
    assert_eq!(md["delta"]["stop_reason"], "tool_use");
    assert_eq!(md["usage"]["output_tokens"], full["usage"]["output_tokens"]);
}

// ---------------------------------------------------------------------------
// Thinking

#[tokio::test]
async fn thinking_blocks() {
    let m = Mock::start().await;
    let body = json!({"model": MODEL, "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [user("Why is the sky blue?")]});
    let (s, v) = messages(&m, &body).await;
    assert_eq!(s, 200, "{v}");
    let c = v["content"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["type"], "thinking");
    assert_eq!(
        c[0]["thinking"],
        "Mock reasoning about: Why is the sky blue?"
    );
    let sig = c[0]["signature"].as_str().unwrap();
    assert!(sig.len() > 40);
    assert!(sig
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    assert_eq!(c[1]["type"], "text");
    // output_tokens include the thinking.
    let (_, plain) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 4096, "messages": [user("Why is the sky blue?")]}),
    )
    .await;
    // "Mock reasoning about: Why is the sky blue?": 6 words + ':' + '?'.
    let thinking_tokens = 8 + 2;
    assert_eq!(
        v["usage"]["output_tokens"].as_u64().unwrap(),
        plain["usage"]["output_tokens"].as_u64().unwrap() + thinking_tokens
    );

    // Omitted display: empty thinking, signature kept, tokens still billed.
    let mut omitted = body.clone();
    omitted["thinking"]["display"] = json!("omitted");
    let (_, o) = messages(&m, &omitted).await;
    assert_eq!(o["content"][0]["thinking"], "");
    assert!(!o["content"][0]["signature"].as_str().unwrap().is_empty());
    assert_eq!(o["usage"]["output_tokens"], v["usage"]["output_tokens"]);

    // Adaptive thinking also yields a thinking block.
    let mut adaptive = body.clone();
    adaptive["thinking"] = json!({"type": "adaptive"});
    let (s, a) = messages(&m, &adaptive).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["content"][0]["type"], "thinking");

    // Streamed: thinking_delta, then signature_delta, then the text block.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let evs = stream(&m, "", &sbody).await;
    assert_eq!(
        evs[1].1["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        deltas(&evs, 0, "thinking"),
        c[0]["thinking"].as_str().unwrap()
    );
    // The body differs (stream: true), so the signature does too.
    let ssig = deltas(&evs, 0, "signature");
    assert!(ssig.len() > 40 && ssig != sig);
    let kinds: Vec<&str> = evs
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["index"] == 0)
        .map(|(_, d)| d["delta"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"signature_delta"));
    assert!(kinds[..kinds.len() - 1]
        .iter()
        .all(|k| *k == "thinking_delta"));
    assert_eq!(deltas(&evs, 1, "text"), c[1]["text"].as_str().unwrap());
    let md = &evs[evs.len() - 2].1;
    assert_eq!(md["usage"]["output_tokens"], v["usage"]["output_tokens"]);

    // Thinking + tool use, and the block sent back in the next turn.
    let tb = json!({"model": MODEL, "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [weather_tool()], "messages": [user("weather in Paris?")]});
    let (_, first) = messages(&m, &tb).await;
    let blocks = first["content"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "thinking");
    assert_eq!(blocks[1]["type"], "tool_use");
    assert_eq!(first["stop_reason"], "tool_use");
    let mut next = tb.clone();
    next["messages"] = json!([user("weather in Paris?"), {"role": "assistant", "content": blocks},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": blocks[1]["id"], "content": "18C"}]}]);
    let (s, v) = messages(&m, &next).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"][0]["thinking"], "Mock reasoning about: 18C");
    assert_eq!(v["content"][1]["text"], "Tool result received: 18C");
}

// ---------------------------------------------------------------------------
// Prompt caching and count_tokens

#[tokio::test]
async fn prompt_caching_is_observable() {
    let m = Mock::start().await;
    let system = json!([{"type": "text", "text": "You are a helpful assistant.", "cache_control": {"type": "ephemeral"}}]);
    let body = |q: &str| json!({"model": MODEL, "max_tokens": 50, "system": system, "messages": [user(q)]});
    let prefix = 3 + 6; // framing + "You are a helpful assistant."

    let (_, v) = messages(&m, &body("first question")).await;
    let u = &v["usage"];
    assert_eq!(u["cache_creation_input_tokens"], prefix);
    assert_eq!(u["cache_read_input_tokens"], 0);
    assert_eq!(u["cache_creation"]["ephemeral_5m_input_tokens"], prefix);
    assert_eq!(u["input_tokens"], 4 + 2);
    let total = count(
        &m,
        &json!({"model": MODEL, "system": system, "messages": [user("first question")]}),
    )
    .await;
    assert_eq!(total, prefix + 4 + 2);

    // Same prefix, different question: read from the cache.
    let (_, v) = messages(&m, &body("second, longer question here")).await;
    let u = &v["usage"];
    assert_eq!(u["cache_read_input_tokens"], prefix);
    assert_eq!(u["cache_creation_input_tokens"], 0);
    assert_eq!(u["input_tokens"], 4 + 5);

    // Streams report the same in message_start and message_delta.
    let mut sb = body("third");
    sb["stream"] = json!(true);
    let evs = stream(&m, "", &sb).await;
    assert_eq!(
        evs[0].1["message"]["usage"]["cache_read_input_tokens"],
        prefix
    );
    let md = &evs[evs.len() - 2].1["usage"];
    assert_eq!(md["cache_read_input_tokens"], prefix);
    assert_eq!(md["input_tokens"], 4 + 1);

    // A different model has its own cache.
    let mut other = body("first question");
    other["model"] = json!("claude-haiku-4-5");
    let (_, v) = messages(&m, &other).await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], prefix);

    // A second, longer breakpoint (1h) in the messages: the system part is
    // read, the rest written to the 1h bucket.
    let long = json!({"model": MODEL, "max_tokens": 50, "system": system, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a long document", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                                     {"type": "text", "text": "question?"}]}]});
    let (_, v) = messages(&m, &long).await;
    let u = &v["usage"];
    assert_eq!(u["cache_read_input_tokens"], prefix);
    assert_eq!(u["cache_creation_input_tokens"], 4 + 3);
    assert_eq!(u["cache_creation"]["ephemeral_1h_input_tokens"], 4 + 3);
    assert_eq!(u["input_tokens"], 2);
    let (_, v) = messages(&m, &long).await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], prefix + 4 + 3);

    // Without cache_control nothing is cached.
    let (_, v) = messages(&m, &req("no cache")).await;
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);

    // Top-level cache_control marks the last block.
    let auto = json!({"model": MODEL, "max_tokens": 50, "cache_control": {"type": "ephemeral"}, "messages": [user("auto cached prompt")]});
    let (_, v) = messages(&m, &auto).await;
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 3 + 4 + 3);
    assert_eq!(v["usage"]["input_tokens"], 0);
    let (_, v) = messages(&m, &auto).await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], 3 + 4 + 3);

    // DELETE /__mock/cache forgets everything.
    let r = m
        .client
        .delete(m.url("/__mock/cache"))
        .send()
        .await
        .unwrap();
    let cleared: Value = r.json().await.unwrap();
    assert!(cleared["cleared"].as_u64().unwrap() >= 3);
    let (_, v) = messages(&m, &body("first question")).await;
    assert_eq!(v["usage"]["cache_creation_input_tokens"], prefix);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
}

#[tokio::test]
async fn count_tokens_endpoint() {
    let m = Mock::start().await;
    let c = count(
        &m,
        &json!({"model": MODEL, "messages": [user("Hello, world!")]}),
    )
    .await;
    assert_eq!(c, 3 + 4 + 4);
    // Same counting as message input_tokens, tools and system included.
    let full = json!({"model": MODEL, "system": "Be brief.", "tools": [weather_tool()],
        "messages": [user("weather?"), assistant(json!("Checking.")), user("Paris")]});
    let c = count(&m, &full).await;
    let mut mb = full.clone();
    mb["max_tokens"] = json!(100);
    mb["tool_choice"] = json!({"type": "none"});
    let (_, v) = messages(&m, &mb).await;
    assert_eq!(v["usage"]["input_tokens"].as_u64().unwrap(), c);
    // Not accepted on count_tokens.
    for (k, val) in [
        ("max_tokens", json!(10)),
        ("stream", json!(true)),
        ("temperature", json!(0.5)),
    ] {
        let mut b = json!({"model": MODEL, "messages": [user("x")]});
        b[k] = val;
        let (s, v) = json(post(&m, "/v1/messages/count_tokens", &[], &b).await).await;
        assert_eq!(s, 400);
        assert_eq!(
            err_message(&v),
            format!("{k}: Extra inputs are not permitted")
        );
    }
    // Validation and auth still apply.
    let (s, v) = json(
        post(
            &m,
            "/v1/messages/count_tokens",
            &[],
            &json!({"model": MODEL, "messages": []}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        err_message(&v),
        "messages: at least one message is required"
    );
    let r = m
        .post(
            "/v1/messages/count_tokens",
            &[("anthropic-version", VERSION)],
            "{}",
        )
        .await;
    assert_eq!(r.status(), 401);
}

// ---------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn fail_and_throttle() {
    let m = Mock::start().await;
    for (status, kind, message) in [
        (500, "api_error", "Internal server error"),
        (529, "overloaded_error", "Overloaded"),
        (401, "authentication_error", "invalid x-api-key"),
        (
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        (404, "not_found_error", "model: claude-sonnet-4-5"),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
    ] {
        let r = with_behavior(&m, &format!("fail={status}"), &req("x")).await;
        assert_eq!(r.status(), status);
        let rid = r.headers()["request-id"].to_str().unwrap().to_string();
        let (_, v) = json(r).await;
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": rid})
        );
    }
    let r = with_behavior(&m, "fail=429", &req("x")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let (_, v) = json(r).await;
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let r = with_behavior(&m, "throttle=2.5", &req("x")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.headers()["anthropic-ratelimit-requests-remaining"], "0");
    let (_, v) = json(r).await;
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // Markers in the last user message (string or blocks or tool result).
    let (s, v) = messages(&m, &req("please [[mock:fail=529]]")).await;
    assert_eq!(s, 529);
    assert_eq!(v["error"]["type"], "overloaded_error");
    let (s, _) = messages(
        &m,
        &json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "[[mock:fail=500]]"}]}]}),
    )
    .await;
    assert_eq!(s, 500);
    // Auth comes before faults.
    let r = m
        .post(
            "/v1/messages",
            &[
                ("anthropic-version", VERSION),
                ("x-mock-behavior", "fail=500"),
            ],
            req("x").to_string(),
        )
        .await;
    assert_eq!(r.status(), 401);
    // html comes before auth.
    let r = m
        .post(
            "/v1/messages",
            &[("x-mock-behavior", "html=502")],
            req("x").to_string(),
        )
        .await;
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn stream_faults() {
    let m = Mock::start().await;
    let body = stream_req("one two three four five six");

    // nodone: ends cleanly without message_stop.
    let evs = stream(&m, "nodone", &body).await;
    assert_eq!(evs.last().unwrap().0, "message_delta");

    // sse_error: an error event mid-stream, then the end.
    let evs = stream(&m, "sse_error", &body).await;
    let n = names(&evs);
    assert_eq!(n.last(), Some(&"error"));
    assert!(n.contains(&"content_block_delta"));
    assert!(!n.contains(&"message_delta") && !n.contains(&"message_stop"));
    assert_eq!(
        evs.last().unwrap().1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    // Also as a marker.
    let evs = stream(&m, "", &stream_req("hi [[mock:sse_error]]")).await;
    assert_eq!(evs.last().unwrap().0, "error");

    // cut=N: N events, then the connection is aborted.
    let mut r = with_behavior(&m, "cut=4", &body).await;
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    let err = loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(err.is_some(), "the body must end with an error");
    let evs = events(std::str::from_utf8(&got).unwrap());
    assert_eq!(evs.len(), 4);

    // badjson: a truncated JSON body even for stream requests.
    let r = with_behavior(&m, "badjson", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.unwrap();
    assert!(text.starts_with("{\"id\":\"msg_"));
    assert!(serde_json::from_str::<Value>(&text).is_err());

    // chunks=N: exactly N text deltas; bytes=N: N bytes of text.
    let evs = stream(&m, "chunks=3", &body).await;
    let text_deltas = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .count();
    assert_eq!(text_deltas, 3);
    let (_, v) = json(with_behavior(&m, "bytes=40", &req("x")).await).await;
    assert_eq!(v["content"][0]["text"].as_str().unwrap().len(), 40);

    // drip spaces out the events; stall delays the headers.
    let t = Instant::now();
    let evs = stream(&m, "drip=30,chunks=2", &stream_req("a b")).await;
    assert!(t.elapsed() >= Duration::from_millis(30 * (evs.len() as u64 - 1)));
    let t = Instant::now();
    let r = with_behavior(&m, "stall=200", &req("x")).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.status(), 200);
}
