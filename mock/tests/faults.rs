//! Fault-injection knobs, via header and via in-text markers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY: (&str, &str) = ("authorization", "Bearer sk-mock-openai");

async fn with_behavior(m: &Mock, path: &str, behavior: &str, body: &Value) -> reqwest::Response {
    m.post(
        path,
        &[KEY, ("x-mock-behavior", behavior)],
        body.to_string(),
    )
    .await
}

fn stream_req(text: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [user(text)], "stream": true})
}

#[tokio::test]
async fn fail_statuses_openai() {
    let m = Mock::start().await;
    let (s, v) =
        json(with_behavior(&m, "/v1/chat/completions", "fail=500", &chat("gpt-4o", "x")).await)
            .await;
    assert_eq!(s, 500);
    assert_eq!(
        v,
        json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}})
    );
    let (s, v) =
        json(with_behavior(&m, "/v1/chat/completions", "fail=503", &chat("gpt-4o", "x")).await)
            .await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        error_message(&v).contains("The engine is currently overloaded, please try again later")
    );
    let (s, v) =
        json(with_behavior(&m, "/v1/chat/completions", "fail=429", &chat("gpt-4o", "x")).await)
            .await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["code"], "insufficient_quota");
    let (s, v) =
        json(with_behavior(&m, "/v1/chat/completions", "fail=404", &chat("gpt-4o", "x")).await)
            .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let (s, v) =
        json(with_behavior(&m, "/v1/chat/completions", "fail=400", &chat("gpt-4o", "x")).await)
            .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, v) = json(
        with_behavior(
            &m,
            "/v1/embeddings",
            "fail=502",
            &json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(v["error"]["type"], "cf_bad_gateway");
    // Auth is still checked first.
    let (s, _) = json(
        m.post(
            "/v1/chat/completions",
            &[("x-mock-behavior", "fail=500")],
            chat("gpt-4o", "x").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn markers_in_text() {
    let m = Mock::start().await;
    // Last user message.
    let (s, _) = m
        .openai_json(
            "/v1/chat/completions",
            &chat("gpt-4o", "please [[mock:fail=503]] now"),
        )
        .await;
    assert_eq!(s, 503);
    // A marker in an earlier user message does not fire again.
    let req = json!({"model": "gpt-4o", "messages": [
        user("[[mock:fail=503]]"), {"role": "assistant", "content": "ok"}, user("again")]});
    let (s, _) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 200);
    // Text parts.
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "[[mock:fail=500]]"}]}]});
    let (s, _) = m.openai_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 500);
    // Prompt and embedding input.
    let (s, _) = m
        .openai_json(
            "/v1/completions",
            &json!({"model": "davinci-002", "prompt": ["ok", "[[mock:fail=500]]"]}),
        )
        .await;
    assert_eq!(s, 500);
    let (s, _) = m
        .openai_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "[[mock:throttle=1]]"}),
        )
        .await;
    assert_eq!(s, 429);
    // Azure and the compatible servers honour markers too.
    let (s, v) = json(
        m.azure(
            "gpt-4o",
            "chat/completions",
            &json!({"messages": [user("[[mock:fail=503]]")]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "ServiceUnavailable");
    let (s, v) = json(
        m.post(
            "/vllm/v1/chat/completions",
            &[],
            json!({"messages": [user("[[mock:fail=500]]")]}).to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 500);
    assert_eq!(v["error"]["type"], "InternalServerError");
    assert_eq!(v["error"]["code"], 500);
}

#[tokio::test]
async fn throttle() {
    let m = Mock::start().await;
    let r = with_behavior(
        &m,
        "/v1/chat/completions",
        "throttle=7",
        &chat("gpt-4o", "x"),
    )
    .await;
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["retry-after-ms"], "7000");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    let (_, v) = json(r).await;
    assert_eq!(v["error"]["type"], "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["param"], Value::Null);
    let msg = error_message(&v);
    assert!(msg.starts_with("Rate limit reached for"), "{msg}");
    assert!(msg.contains("Please try again in 7s."), "{msg}");

    let r = with_behavior(
        &m,
        "/v1/chat/completions",
        "throttle=0.5",
        &chat("gpt-4o", "x"),
    )
    .await;
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["retry-after-ms"], "500");

    let r = m
        .post(
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            &[("api-key", AZURE_KEY), ("x-mock-behavior", "throttle=3")],
            json!({"messages": [user("x")]}).to_string(),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let (_, v) = json(r).await;
    assert_eq!(v["error"]["code"], "429");
    assert!(error_message(&v).contains("Please retry after 3 seconds"));
}

#[tokio::test]
async fn stall_delays_headers() {
    let m = Mock::start().await;
    let t = Instant::now();
    let r = with_behavior(
        &m,
        "/v1/chat/completions",
        "stall=400",
        &chat("gpt-4o", "x"),
    )
    .await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.status(), 200);
    // Stall applies to error responses too.
    let t = Instant::now();
    let r = m
        .post(
            "/v1/chat/completions",
            &[("x-mock-behavior", "stall=200")],
            "{}",
        )
        .await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn drip_spaces_out_chunks() {
    let m = Mock::start().await;
    let t = Instant::now();
    let mut r = with_behavior(
        &m,
        "/v1/chat/completions",
        "drip=60,chunks=4",
        &stream_req("x"),
    )
    .await;
    let headers_at = t.elapsed();
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        arrivals.push(t.elapsed());
        body.extend_from_slice(&c);
    }
    let events = sse_json(std::str::from_utf8(&body).unwrap());
    // role + 4 content + finish + [DONE] = 7 frames, 6 gaps of 60ms.
    assert_eq!(events.len(), 6);
    let total = *arrivals.last().unwrap();
    assert!(total >= Duration::from_millis(6 * 60), "{total:?}");
    assert!(
        headers_at + Duration::from_millis(200) < total,
        "{headers_at:?}"
    );
    // Chunks really arrive separately, not all at the end.
    assert!(arrivals.len() >= 5, "{arrivals:?}");
    assert!(arrivals[0] < total - Duration::from_millis(200));
}

#[tokio::test]
async fn cut_aborts_stream_and_body() {
    let m = Mock::start().await;
    // Stream: 3 events then the connection is aborted.
    let mut r = with_behavior(
        &m,
        "/v1/chat/completions",
        "cut=3",
        &stream_req("a b c d e f"),
    )
    .await;
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
    let text = String::from_utf8(got).unwrap();
    assert_eq!(sse_data(&text).len(), 3, "{text}");
    assert!(!text.contains("[DONE]"));

    // Non-stream: headers and part of the body, then abort.
    let r = with_behavior(&m, "/v1/chat/completions", "cut=10", &chat("gpt-4o", "x")).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err());

    // Marker form.
    let r = m
        .openai("/v1/chat/completions", &stream_req("[[mock:cut=1]]"))
        .await;
    assert!(r.text().await.is_err());
}

/// Raw HTTP/1.1 exchange: returns everything the server sent until EOF.
async fn raw(m: &Mock, behavior: &str) -> String {
    let body = stream_req("a b").to_string();
    let headers = format!("host: x\r\nx-mock-behavior: {behavior}\r\n");
    raw_post(m, "/v1/chat/completions", &headers, &body).await
}

#[tokio::test]
async fn cut_vs_nodone_on_the_wire() {
    let m = Mock::start().await;
    let cut = raw(&m, "cut=2").await;
    assert!(cut.contains("transfer-encoding: chunked"), "{cut}");
    assert!(
        !cut.ends_with("0\r\n\r\n"),
        "cut must not terminate the chunked body: {cut}"
    );
    assert!(!cut.contains("[DONE]"));

    let nodone = raw(&m, "nodone").await;
    assert!(
        nodone.ends_with("0\r\n\r\n"),
        "nodone ends cleanly: {nodone}"
    );
    assert!(!nodone.contains("[DONE]"));
    assert!(nodone.contains("\"finish_reason\":\"stop\""));

    let normal = raw(&m, "").await;
    assert!(
        normal.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"),
        "{normal}"
    );
}

#[tokio::test]
async fn nodone_via_client() {
    let m = Mock::start().await;
    let r = with_behavior(&m, "/v1/chat/completions", "nodone", &stream_req("x")).await;
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    assert_ne!(data.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn html_and_badjson() {
    let m = Mock::start().await;
    let r = with_behavior(&m, "/v1/chat/completions", "html=502", &chat("gpt-4o", "x")).await;
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let text = r.text().await.unwrap();
    assert!(text.contains("<html>") && text.contains("502 Bad Gateway"));
    // html applies before auth, like a load balancer in front.
    let r = m
        .post(
            "/v1/chat/completions",
            &[("x-mock-behavior", "html=503")],
            "{}",
        )
        .await;
    assert_eq!(r.status(), 503);

    for req in [chat("gpt-4o", "x"), stream_req("x")] {
        let r = with_behavior(&m, "/v1/chat/completions", "badjson", &req).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let text = r.text().await.unwrap();
        assert!(text.starts_with("{\"id\":\"chatcmpl-"), "{text}");
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }
}

#[tokio::test]
async fn bytes_and_chunks() {
    let m = Mock::start().await;
    let (_, v) = json(
        with_behavior(
            &m,
            "/v1/chat/completions",
            "bytes=5000",
            &chat("gpt-4o", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        5000
    );
    let text = with_behavior(&m, "/v1/chat/completions", "bytes=100000", &stream_req("x"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(stream_content(&sse_json(&text), 0).len(), 100_000);

    for n in [1usize, 3, 40] {
        let mut req = stream_req("hello there");
        req["stream_options"] = json!({"include_usage": true});
        let text = with_behavior(&m, "/v1/chat/completions", &format!("chunks={n}"), &req)
            .await
            .text()
            .await
            .unwrap();
        let events = sse_json(&text);
        let content_chunks = events
            .iter()
            .filter(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
            .count();
        assert_eq!(content_chunks, n);
        let content = stream_content(&events, 0);
        assert!(content.starts_with("Hello from the mock"));
        assert_eq!(
            events.last().unwrap()["usage"]["completion_tokens"],
            llm_mock::text::count_tokens(&content)
        );
    }
}

#[tokio::test]
async fn reset_before_headers_sends_nothing() {
    let m = Mock::start().await;
    let out = raw(&m, "reset=before_headers").await;
    assert_eq!(out, "", "no response byte may be sent");
    // The connection is gone, not the server.
    assert!(raw(&m, "").await.matches("data: ").count() > 3);
}

#[tokio::test]
async fn reset_mid_stream_sends_half() {
    let m = Mock::start().await;
    let normal = raw(&m, "").await;
    let cut = raw(&m, "reset=mid_stream").await;
    let n_all = normal.matches("data: ").count();
    let n_cut = cut.matches("data: ").count();
    assert!(
        n_cut >= 1 && n_cut <= n_all / 2 + 1,
        "{n_cut} of {n_all}: {cut}"
    );
    assert!(!cut.ends_with("0\r\n\r\n"), "must not terminate: {cut}");
    assert!(!cut.contains("[DONE]"));
    // Whole answer: a content-length promising more than arrives.
    let r = with_behavior(
        &m,
        "/v1/chat/completions",
        "reset=mid_stream",
        &chat("gpt-4o", "x"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err());
}

#[tokio::test]
async fn trickle_sends_one_byte_at_a_time() {
    let m = Mock::start().await;
    let t0 = Instant::now();
    let mut r = with_behavior(
        &m,
        "/v1/chat/completions",
        "trickle=20,trickle_max=10",
        &chat("gpt-4o", "x"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut got = Vec::new();
    let mut chunks = 0;
    while let Some(c) = r.chunk().await.unwrap() {
        chunks += 1;
        got.extend_from_slice(&c);
    }
    assert_eq!(got.len(), len);
    assert!(chunks >= 5, "{chunks} chunks");
    assert!(
        t0.elapsed() >= Duration::from_millis(180),
        "{:?}",
        t0.elapsed()
    );
    let v: Value = serde_json::from_slice(&got).unwrap();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("x"));
    // A stream keeps its events.
    let r = with_behavior(&m, "/v1/chat/completions", "trickle=1", &stream_req("a b")).await;
    let text = r.text().await.unwrap();
    assert_eq!(sse_data(&text).last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn size_with_unit() {
    let m = Mock::start().await;
    let (s, v) =
        json(with_behavior(&m, "/v1/chat/completions", "size=2KB", &chat("gpt-4o", "x")).await)
            .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        2048
    );
}
