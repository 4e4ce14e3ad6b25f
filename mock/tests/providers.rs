//! Azure OpenAI, Ollama and vLLM routes.

mod common;

use common::*;
use llm_mock::Config;
use serde_json::{json, Value};

const AZ_401: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

#[tokio::test]
async fn azure_auth_and_routing_errors() {
    let m = Mock::start().await;
    let path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    let body = json!({"messages": [user("hi")]}).to_string();

    let (s, v) = json(m.post(path, &[], body.clone()).await).await;
    assert_eq!(s, 401);
    assert_eq!(v, json!({"error": {"code": "401", "message": AZ_401}}));
    let (s, _) = json(m.post(path, &[("api-key", "wrong")], body.clone()).await).await;
    assert_eq!(s, 401);
    // OpenAI keys are not Azure keys.
    let (s, _) = json(
        m.post(
            path,
            &[("authorization", "Bearer sk-mock-openai")],
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    // Entra-style bearer with an Azure key is accepted.
    let r = m
        .post(
            path,
            &[("authorization", &format!("Bearer {AZURE_KEY}"))],
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), 200);

    for bad in [
        "/openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions?api-version=latest",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-1-01",
        "/openai/deployments/gpt-4o/images/generations?api-version=2024-10-21",
        "/openai/whatever?api-version=2024-10-21",
    ] {
        let (s, v) = json(m.post(bad, &[("api-key", AZURE_KEY)], body.clone()).await).await;
        assert_eq!(s, 404, "{bad}");
        assert_eq!(
            v,
            json!({"error": {"code": "404", "message": "Resource not found"}}),
            "{bad}"
        );
    }
    let (s, v) = json(
        m.post(
            "/openai/deployments/nope/chat/completions?api-version=2025-01-01-preview",
            &[("api-key", AZURE_KEY)],
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "DeploymentNotFound");
    assert_eq!(v["error"]["message"], "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.");

    // Embeddings on a chat deployment.
    let (s, v) = json(
        m.azure("gpt-4o", "embeddings", &json!({"input": "x"}))
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "OperationNotSupported");

    // Validation errors use OpenAI's shape.
    let (s, v) = json(
        m.azure(
            "gpt-4o",
            "chat/completions",
            &json!({"messages": [user("x")], "bogus": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"error": {"message": "Unrecognized request argument supplied: bogus", "type": "invalid_request_error", "param": null, "code": null}})
    );
    // Azure extension accepted.
    let (s, _) = json(
        m.azure(
            "gpt-4o",
            "chat/completions",
            &json!({"messages": [user("x")], "data_sources": []}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn azure_chat_shapes() {
    let m = Mock::start().await;
    let r = m
        .azure(
            "gpt-4o-mini",
            "chat/completions",
            &json!({"messages": [user("Hi Azure")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("apim-request-id"));
    assert!(r.headers().contains_key("x-ms-region"));
    let (_, v) = json(r).await;
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock azure model gpt-4o-mini. You said: Hi Azure"
    );
    assert_eq!(v["prompt_filter_results"][0]["prompt_index"], 0);
    assert_eq!(
        v["prompt_filter_results"][0]["content_filter_results"]["hate"],
        json!({"filtered": false, "severity": "safe"})
    );
    assert_eq!(
        v["choices"][0]["content_filter_results"]["violence"],
        json!({"filtered": false, "severity": "safe"})
    );
    // The body's model is ignored: the deployment decides.
    let (_, v) = json(
        m.azure(
            "gpt-4o",
            "chat/completions",
            &json!({"model": "whatever", "messages": [user("x")]}),
        )
        .await,
    )
    .await;
    assert_eq!(v["model"], "gpt-4o");

    // Streaming: a first event with prompt_filter_results and no choices.
    let body = m
        .azure(
            "gpt-4o",
            "chat/completions",
            &json!({"messages": [user("stream me")], "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    assert_eq!(events[0]["choices"], json!([]));
    assert_eq!(events[0]["id"], "");
    assert!(events[0]["prompt_filter_results"].is_array());
    assert_eq!(events[1]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(events[1]["choices"][0]["content_filter_results"], json!({}));
    assert!(events[2]["choices"][0]["content_filter_results"]["hate"].is_object());
    assert_eq!(
        stream_content(&events, 0),
        "Hello from the mock azure model gpt-4o. You said: stream me"
    );
    assert!(
        events.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn azure_embeddings_and_completions() {
    let m = Mock::with(Config {
        azure_deployments: vec![
            "text-embedding-3-small".into(),
            "my-ada-embedding".into(),
            "gpt-35-turbo-instruct".into(),
        ],
        ..Config::default()
    })
    .await;
    let (s, v) = json(
        m.azure(
            "text-embedding-3-small",
            "embeddings",
            &json!({"input": ["a", "b"], "dimensions": 64}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 64);
    let (s, v) = json(
        m.azure(
            "my-ada-embedding",
            "embeddings",
            &json!({"input": "a", "dimensions": 64}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        error_message(&v),
        "This model does not support specifying dimensions."
    );
    let (s, v) = json(
        m.azure(
            "gpt-35-turbo-instruct",
            "completions",
            &json!({"prompt": "Once"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["choices"][0]["text"],
        "Hello from the mock azure model gpt-35-turbo-instruct. You said: Once"
    );
    assert!(v["choices"][0]["content_filter_results"].is_object());
    // gpt-4o is not configured on this server.
    let (s, _) = json(
        m.azure(
            "gpt-4o",
            "chat/completions",
            &json!({"messages": [user("x")]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn ollama_compat() {
    let m = Mock::start().await;
    // No auth at all; any Authorization is ignored; extra params accepted.
    let (s, v) = json(
        m.post(
            "/ollama/v1/chat/completions",
            &[("authorization", "Bearer whatever")],
            json!({"model": "llama3.2", "messages": [user("hey")], "top_k": 3, "keep_alive": "5m", "options": {"num_ctx": 4096}})
                .to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock ollama model llama3.2. You said: hey"
    );
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert!(v.get("service_tier").is_none());
    let (s, v) = json(
        m.post(
            "/ollama/v1/embeddings",
            &[],
            json!({"model": "nomic-embed-text", "input": "x"}).to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 768);
    let (s, v) = json(m.get("/ollama/v1/models", &[]).await).await;
    assert_eq!(s, 200);
    assert!(!v["data"].as_array().unwrap().is_empty());
    let (s, v) = json(
        m.post(
            "/ollama/v1/chat/completions",
            &[],
            json!({"messages": [user("x")]}).to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(error_message(&v), "model is required");
    let r = m.post("/ollama/v1/nope", &[], "{}").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "404 page not found");
    let body = m
        .post(
            "/ollama/v1/completions",
            &[],
            json!({"model": "qwen2.5:0.5b", "prompt": "p", "stream": true}).to_string(),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = sse_json(&body);
    assert!(events.len() > 2);
}

#[tokio::test]
async fn vllm_compat_and_auth() {
    let open = Mock::start().await;
    let (s, v) = json(
        open.post(
            "/vllm/v1/chat/completions",
            &[],
            json!({"messages": [user("hi")], "repetition_penalty": 1.1, "top_k": 20}).to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(v["choices"][0]["stop_reason"], Value::Null);
    assert_eq!(v["choices"][0]["message"]["tool_calls"], json!([]));
    // vLLM error shape.
    let (s, v) = json(
        open.post(
            "/vllm/v1/chat/completions",
            &[],
            json!({"model": "m", "messages": []}).to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "BadRequestError");
    assert_eq!(v["error"]["code"], 400);
    let (s, v) = json(open.post("/vllm/v1/bogus", &[], "{}").await).await;
    assert_eq!(s, 404);
    assert_eq!(v, json!({"detail": "Not Found"}));

    let locked = Mock::with(Config {
        vllm_keys: vec!["vk-1".into(), "vk-2".into()],
        ..Config::default()
    })
    .await;
    let body = json!({"model": "m", "messages": [user("hi")]}).to_string();
    for headers in [vec![], vec![("authorization", "Bearer nope")]] {
        let (s, v) = json(
            locked
                .post("/vllm/v1/chat/completions", &headers, body.clone())
                .await,
        )
        .await;
        assert_eq!(s, 401);
        assert_eq!(v, json!({"error": "Unauthorized"}));
    }
    for key in ["vk-1", "vk-2"] {
        let r = locked
            .post(
                "/vllm/v1/chat/completions",
                &[("authorization", &format!("Bearer {key}"))],
                body.clone(),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn recording_endpoint() {
    let m = Mock::with(Config {
        record_limit: 3,
        ..Config::default()
    })
    .await;
    let r = m.get("/__mock/health", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    m.openai("/v1/chat/completions", &chat("gpt-4o", "first"))
        .await;
    m.post(
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        &[("api-key", "k"), ("X-Custom", "Yes")],
        "raw body",
    )
    .await;
    m.post("/ollama/v1/chat/completions", &[], "{}").await;
    m.post("/vllm/v1/embeddings", &[], "{}").await;
    let (s, v) = json(m.get("/__mock/requests", &[]).await).await;
    assert_eq!(s, 200);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 3, "limit keeps the newest");
    assert_eq!(list[0]["provider"], "azure");
    assert_eq!(list[0]["method"], "POST");
    assert_eq!(
        list[0]["path"],
        "/openai/deployments/gpt-4o/chat/completions"
    );
    assert_eq!(list[0]["query"], "api-version=2024-10-21");
    assert_eq!(list[0]["headers"]["x-custom"], "Yes");
    assert_eq!(list[0]["headers"]["api-key"], "k");
    assert_eq!(list[0]["body"], "raw body");
    assert_eq!(list[1]["provider"], "ollama");
    assert_eq!(list[2]["provider"], "vllm");
    assert_eq!(list[2]["path"], "/vllm/v1/embeddings");

    let r = m
        .client
        .delete(m.url("/__mock/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = json(m.get("/__mock/requests", &[]).await).await;
    assert_eq!(v, json!([]));
    // Control requests are not recorded.
    m.get("/__mock/health", &[]).await;
    let (_, v) = json(m.get("/__mock/requests", &[]).await).await;
    assert_eq!(v, json!([]));
}
