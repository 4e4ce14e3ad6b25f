//! OpenAI routes: auth, validation, chat (plain, stream, tools, formats),
//! completions, embeddings, models.

mod common;

use base64::Engine as _;
use common::*;
use llm_mock::Config;
use serde_json::{json, Value};

#[tokio::test]
async fn auth_missing_wrong_and_rotation() {
    let m = Mock::with(Config {
        openai_keys: vec!["sk-mock-openai".into(), "sk-second-key-0000".into()],
        ..Config::default()
    })
    .await;
    let body = chat("gpt-4o", "hi").to_string();

    let (s, v) = json(m.post("/v1/chat/completions", &[], body.clone()).await).await;
    assert_eq!(s, 401);
    assert_eq!(
        v,
        json!({"error": {"message": "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "type": "invalid_request_error", "param": null, "code": null}})
    );

    let r = m
        .post(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-mock-wrong-key-enai")],
            body.clone(),
        )
        .await;
    assert!(r.headers().get("x-request-id").is_some());
    let (s, v) = json(r).await;
    assert_eq!(s, 401);
    assert_eq!(
        error_message(&v),
        "Incorrect API key provided: sk-moc************enai. You can find your API key at https://platform.openai.com/account/api-keys."
    );
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    for key in ["sk-mock-openai", "sk-second-key-0000"] {
        let r = m
            .post(
                "/v1/chat/completions",
                &[("authorization", &format!("Bearer {key}"))],
                body.clone(),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn chat_non_stream_shape_usage_and_headers() {
    let m = Mock::start().await;
    let req = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello, world!"}
    ]});
    let r = m.openai("/v1/chat/completions", &req).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/json");
    let rid = h["x-request-id"].to_str().unwrap();
    assert!(rid.starts_with("req_") && rid.len() == 36, "{rid}");
    assert!(h.contains_key("openai-processing-ms"));
    assert_eq!(h["x-ratelimit-limit-requests"], "10000");
    assert!(h.contains_key("x-ratelimit-remaining-tokens"));
    let (_, v) = json(r).await;

    let content = "Hello from the mock openai model gpt-4o-mini. You said: Hello, world!";
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["service_tier"], "default");
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}])
    );
    // prompt: ("Be brief." = 3) + 4 + ("Hello, world!" = 4) + 4 + 3 = 18
    let completion = llm_mock::text::count_tokens(content) as u64;
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 18, "completion_tokens": completion, "total_tokens": 18 + completion,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
    );

    // Deterministic: same request → same id and content.
    let (_, v2) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(v["id"], v2["id"]);
    assert_eq!(v["choices"], v2["choices"]);
}

#[tokio::test]
async fn chat_content_parts_images_and_truncation() {
    let m = Mock::start().await;
    let long = "x".repeat(300);
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": long},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    ]}]});
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content,
        format!(
            "Hello from the mock openai model gpt-4o. You said: {} [2 images]",
            "x".repeat(200)
        )
    );
    // 1 word + 2 images * 85 + 4 + 3
    assert_eq!(v["usage"]["prompt_tokens"], 1 + 170 + 7);
}

async fn expect_400(m: &Mock, body: Value, message: &str, param: Value, code: Value) {
    let (s, v) = m.openai_json("/v1/chat/completions", &body).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(error_message(&v), message, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], param, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
}

#[tokio::test]
async fn chat_validation_errors() {
    let m = Mock::start().await;
    let (s, v) = json(
        m.post(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-mock-openai")],
            "{not json",
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert!(error_message(&v).starts_with("We could not parse the JSON body of your request."));

    expect_400(
        &m,
        json!({"messages": [user("hi")]}),
        "Missing required parameter: 'model'.",
        json!("model"),
        json!("missing_required_parameter"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o"}),
        "Missing required parameter: 'messages'.",
        json!("messages"),
        json!("missing_required_parameter"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": []}),
        "'messages' must contain at least 1 element",
        json!("messages"),
        json!("empty_array"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a"), {"role": "robot", "content": "x"}]}),
        "Invalid value: 'robot'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.",
        json!("messages[1].role"),
        json!("invalid_value"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [{"content": "x"}]}),
        "Missing required parameter: 'messages[0].role'.",
        json!("messages[0].role"),
        json!("missing_required_parameter"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "temperature": "hot"}),
        "Invalid type for 'temperature': expected a decimal, but got a string instead.",
        json!("temperature"),
        json!("invalid_type"),
    )
    .await;
    expect_400(&m, json!({"model": "gpt-4o", "messages": [user("a")], "temperature": 3}), "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.", json!("temperature"), json!("decimal_above_max_value")).await;
    expect_400(&m, json!({"model": "gpt-4o", "messages": [user("a")], "temperature": -0.5}), "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -0.5 instead.", json!("temperature"), json!("decimal_below_min_value")).await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "n": 1.5}),
        "Invalid type for 'n': expected an integer, but got a decimal instead.",
        json!("n"),
        json!("invalid_type"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "n": 0}),
        "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
        json!("n"),
        json!("integer_below_min_value"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "n": 129}),
        "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 129 instead.",
        json!("n"),
        json!("integer_above_max_value"),
    )
    .await;
    expect_400(&m, json!({"model": "gpt-4o", "messages": [user("a")], "max_tokens": 0}), "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.", json!("max_tokens"), json!("integer_below_min_value")).await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "max_completion_tokens": "5"}),
        "Invalid type for 'max_completion_tokens': expected an integer, but got a string instead.",
        json!("max_completion_tokens"),
        json!("invalid_type"),
    )
    .await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "stream": "yes"}),
        "Invalid type for 'stream': expected a boolean, but got a string instead.",
        json!("stream"),
        json!("invalid_type"),
    )
    .await;
    expect_400(&m, json!({"model": "gpt-4o", "messages": [user("a")], "stream_options": {"include_usage": true}}), "The 'stream_options' parameter is only allowed when 'stream' is enabled.", json!("stream_options"), Value::Null).await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a")], "top_k": 5}),
        "Unrecognized request argument supplied: top_k",
        Value::Null,
        Value::Null,
    )
    .await;
    expect_400(&m, json!({"model": "gpt-4o", "messages": [user("a")], "stop": ["a", "b", "c", "d", "e"]}), "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 instead.", json!("stop"), json!("array_above_max_length")).await;
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [{"role": "user"}]}),
        "Missing required parameter: 'messages[0].content'.",
        json!("messages[0].content"),
        json!("missing_required_parameter"),
    )
    .await;
    // A tool message that answers nothing.
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a"), {"role": "tool", "tool_call_id": "call_x", "content": "42"}]}),
        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
        json!("messages.[1].role"),
        Value::Null,
    )
    .await;
    // A tool message whose id matches no call of the preceding assistant message.
    expect_400(
        &m,
        json!({"model": "gpt-4o", "messages": [user("a"),
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "42"}]}),
        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
        json!("messages.[2].role"),
        Value::Null,
    )
    .await;
    // Tool calls left unanswered.
    let (s, v) = m
        .openai_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [user("a"),
                {"role": "assistant", "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                user("b")]}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        error_message(&v).contains("did not have response messages: call_a"),
        "{v}"
    );
    // tool_choice without tools.
    let (s, v) = m
        .openai_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [user("a")], "tool_choice": "auto"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "tool_choice");
    // Reasoning models reject max_tokens.
    let (s, v) = m
        .openai_json(
            "/v1/chat/completions",
            &json!({"model": "o3-mini", "messages": [user("a")], "max_tokens": 5}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "unsupported_parameter");
    // ... but accept max_completion_tokens.
    let (s, _) = m
        .openai_json(
            "/v1/chat/completions",
            &json!({"model": "o3-mini", "messages": [user("a")], "max_completion_tokens": 5}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn model_errors() {
    let m = Mock::start().await;
    let (s, v) = m
        .openai_json("/v1/chat/completions", &chat("gpt-4o-2024-08-06", "hi"))
        .await;
    assert_eq!(s, 200, "dated snapshots are chat models: {v}");
    let (s, v) = m
        .openai_json("/v1/chat/completions", &chat("llama3", "hi"))
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        v,
        json!({"error": {"message": "The model `llama3` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
    );
    let (s, v) = m
        .openai_json(
            "/v1/completions",
            &json!({"model": "gpt-4o", "prompt": "hi"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        error_message(&v),
        "This is a chat model and not supported in the v1/completions endpoint. Did you mean to use v1/chat/completions?"
    );
    let (s, v) = m
        .openai_json(
            "/v1/chat/completions",
            &chat("gpt-3.5-turbo-instruct", "hi"),
        )
        .await;
    assert_eq!(s, 404);
    assert!(error_message(&v).contains("not a chat model"));
    let (s, v) = m
        .openai_json("/v1/embeddings", &json!({"model": "gpt-4o", "input": "hi"}))
        .await;
    assert_eq!(s, 400);
    assert!(error_message(&v).contains("embeddings"));
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "Hi there");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let r = m.openai("/v1/chat/completions", &req).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    let events = sse_json(&body);
    let first = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["usage"], Value::Null);
    assert!(first.get("usage").is_some());
    assert_eq!(
        first["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}])
    );
    let expected = "Hello from the mock openai model gpt-4o. You said: Hi there";
    assert_eq!(stream_content(&events, 0), expected);
    // one content chunk per word
    let words = expected.split(' ').count();
    assert_eq!(events.len(), 1 + words + 1 + 1);
    assert_eq!(
        events[1]["choices"][0]["delta"],
        json!({"content": "Hello "})
    );
    let fin = &events[events.len() - 2];
    assert_eq!(fin["choices"][0]["delta"], json!({}));
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    let usage = &events[events.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 2 + 4 + 3);
    assert_eq!(
        usage["usage"]["completion_tokens"],
        llm_mock::text::count_tokens(expected)
    );
    // all chunks share id/created/model
    for e in &events {
        assert_eq!(e["id"], first["id"]);
        assert_eq!(e["model"], "gpt-4o");
    }

    // Without include_usage: no usage field, no usage chunk.
    req.as_object_mut().unwrap().remove("stream_options");
    let body = m
        .openai("/v1/chat/completions", &req)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn n_choices_stream_and_not() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "yo");
    req["n"] = json!(3);
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(
            c["message"]["content"],
            format!("Hello from the mock openai model gpt-4o. You said: yo (choice {i})")
        );
    }
    req["stream"] = json!(true);
    let body = m
        .openai("/v1/chat/completions", &req)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    for i in 0..3u64 {
        assert_eq!(
            stream_content(&events, i),
            format!("Hello from the mock openai model gpt-4o. You said: yo (choice {i})")
        );
    }
    // Interleaved: the first three chunks are the role chunks of 0, 1, 2.
    let idx: Vec<u64> = events[..6]
        .iter()
        .map(|e| e["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1, 2, 0, 1, 2]);
}

#[tokio::test]
async fn max_tokens_and_stop() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "hi");
    req["max_tokens"] = json!(3);
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let mut req = chat("gpt-4o", "hi");
    req["max_completion_tokens"] = json!(2);
    req["stream"] = json!(true);
    let body = m
        .openai("/v1/chat/completions", &req)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    assert_eq!(stream_content(&events, 0), "Hello from");
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );

    let mut req = chat("gpt-4o", "hi");
    req["stop"] = json!(["mock", "zzz"]);
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    req["stop"] = json!("model");
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock openai "
    );
}

#[tokio::test]
async fn response_formats() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "json please");
    req["response_format"] = json!({"type": "json_object"});
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        content,
        json!({"reply": "Hello from the mock openai model gpt-4o. You said: json please"})
    );

    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "height": {"type": "number"},
            "member": {"type": "boolean"},
            "color": {"type": "string", "enum": ["red", "green"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"$ref": "#/$defs/Address"},
            "nick": {"anyOf": [{"type": "string"}, {"type": "null"}]}
        },
        "required": ["name"],
        "additionalProperties": false,
        "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}}}}
    }}});
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 200, "{v}");
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        content,
        json!({"name": "mock", "age": 1, "height": 1.5, "member": true, "color": "red",
               "tags": ["mock"], "address": {"city": "mock", "zip": 1}, "nick": "mock"})
    );

    req["response_format"] = json!({"type": "json_schema", "json_schema": {"schema": {}}});
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "response_format.json_schema.name");
    req["response_format"] = json!({"type": "yaml"});
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "invalid_value");
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"}
            },
            "required": ["location", "unit"]
        }}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
    ])
}

#[tokio::test]
async fn tool_calls_non_stream() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "Weather in Paris?");
    req["tools"] = weather_tools();
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["content"], Value::Null);
    let call = &c["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 29, "{id}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "mock", "unit": "celsius"}));

    // Named tool choice.
    req["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    // Unknown named tool.
    req["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
    let (s, _) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 400);
    // tool_choice none → text.
    req["tool_choice"] = json!("none");
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());

    // Answer the call → text reply about the tool result.
    let req = json!({"model": "gpt-4o", "tools": weather_tools(), "messages": [
        user("Weather in Paris?"),
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "22 degrees and sunny"}
    ]});
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Tool result received: 22 degrees and sunny"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // required forces a call even after a tool message.
    let mut req = req;
    req["tool_choice"] = json!("required");
    let (_, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    // Invalid tool definitions.
    let mut bad = chat("gpt-4o", "x");
    bad["tools"] = json!([{"type": "function", "function": {"name": "bad name!"}}]);
    let (s, v) = m.openai_json("/v1/chat/completions", &bad).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "tools[0].function.name");
    bad["tools"] = json!([{"type": "function"}]);
    let (s, v) = m.openai_json("/v1/chat/completions", &bad).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "missing_required_parameter");
}

#[tokio::test]
async fn tool_calls_stream() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "Weather in Paris?");
    req["tools"] = weather_tools();
    req["stream"] = json!(true);
    let body = m
        .openai("/v1/chat/completions", &req)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    let first = &events[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["content"], Value::Null);
    let tc = &first["tool_calls"][0];
    assert_eq!(tc["index"], 0);
    assert!(tc["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(tc["type"], "function");
    assert_eq!(
        tc["function"],
        json!({"name": "get_weather", "arguments": ""})
    );
    let fragments: Vec<&str> = events[1..]
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert!(fragments.len() >= 3, "{fragments:?}");
    for e in &events[1..events.len() - 1] {
        let tc = &e["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tc["index"], 0);
        assert!(tc.get("id").is_none());
    }
    let args: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(args, json!({"location": "mock", "unit": "celsius"}));
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn legacy_functions() {
    let m = Mock::start().await;
    let mut req = chat("gpt-4o", "call it");
    req["functions"] = json!([{"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]);
    let (s, v) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "function_call");
    assert_eq!(
        v["choices"][0]["message"]["function_call"],
        json!({"name": "lookup", "arguments": "{\"q\":\"mock\"}"})
    );
}

#[tokio::test]
async fn legacy_completions() {
    let m = Mock::start().await;
    let (s, v) = m
        .openai_json(
            "/v1/completions",
            &json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["one", "two"], "n": 2}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert_eq!(
        choices[3],
        json!({"text": "Hello from the mock openai model gpt-3.5-turbo-instruct. You said: two (choice 1)", "index": 3, "logprobs": null, "finish_reason": "stop"})
    );
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let (s, v) = m
        .openai_json("/v1/completions", &json!({"model": "davinci-002"}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(error_message(&v), "Missing required parameter: 'prompt'.");
    let (s, v) = m
        .openai_json(
            "/v1/completions",
            &json!({"model": "davinci-002", "prompt": "x", "messages": []}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        error_message(&v),
        "Unrecognized request argument supplied: messages"
    );

    let body = m
        .openai(
            "/v1/completions",
            &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "stream": true,
                    "stream_options": {"include_usage": true}, "max_tokens": 4}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from the mock");
    assert!(events.iter().all(|e| e["object"] == "text_completion"));
    let fin = &events[events.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn embeddings_float_base64_dimensions() {
    let m = Mock::start().await;
    let (s, v) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let vec0: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(vec0.len(), 1536);
    let norm: f64 = vec0.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");

    // base64 (the Python SDK's default) decodes to the same floats.
    let (_, b) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "hello world", "encoding_format": "base64"}),
        )
        .await;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 1536 * 4);
    let floats: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (a, b) in floats.iter().zip(&vec0) {
        assert!((f64::from(*a) - b).abs() < 1e-6);
    }

    // dimensions
    let (_, v) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-large", "input": "x", "dimensions": 256}),
        )
        .await;
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 256);
    let (_, v) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-large", "input": "x"}),
        )
        .await;
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3072);
    let (s, v) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-ada-002", "input": "x", "dimensions": 256}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        error_message(&v),
        "This model does not support specifying dimensions."
    );

    // token input
    let (s, v) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    for bad in [json!(""), json!([]), json!([""]), json!(5), json!([1, "a"])] {
        let (s, v) = m
            .openai_json(
                "/v1/embeddings",
                &json!({"model": "text-embedding-3-small", "input": bad}),
            )
            .await;
        assert_eq!(s, 400, "{bad}");
        assert!(
            error_message(&v).starts_with("'$.input' is invalid."),
            "{v}"
        );
    }
    let (s, v) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "encoding_format");
    let (s, _) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small"}),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn models_and_routing_errors() {
    let m = Mock::start().await;
    let auth = [("authorization", "Bearer sk-mock-openai")];
    let (s, v) = json(m.get("/v1/models", &auth).await).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o") && ids.contains(&"text-embedding-3-small"));
    let (s, v) = json(m.get("/v1/models/gpt-4o-mini", &auth).await).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "model");
    let (s, _) = json(m.get("/v1/models/nope", &auth).await).await;
    assert_eq!(s, 404);
    let (s, _) = json(m.get("/v1/models", &[]).await).await;
    assert_eq!(s, 401);

    let (s, v) = json(m.post("/v1/foo", &auth, "{}").await).await;
    assert_eq!(s, 404);
    assert_eq!(
        v,
        json!({"error": {"message": "Invalid URL (POST /v1/foo)", "type": "invalid_request_error", "param": null, "code": null}})
    );
    let r = m.get("/v1/chat/completions", &auth).await;
    assert_eq!(r.status(), 405);
    let (_, v) = json(r).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
}
