//! Shared helpers: an in-process mock on an ephemeral port and a client.
#![allow(dead_code)]

use llm_mock::{start, Config, ServerHandle};
use serde_json::Value;

pub const OPENAI_KEY: &str = "sk-mock-openai";
pub const AZURE_KEY: &str = "mock-azure-key";

pub struct Mock {
    pub server: ServerHandle,
    pub client: reqwest::Client,
}

impl Mock {
    pub async fn start() -> Self {
        Self::with(Config::default()).await
    }

    pub async fn with(config: Config) -> Self {
        let server = start("127.0.0.1:0", config).await.expect("start mock");
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Mock { server, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    /// POST with the default OpenAI key.
    pub async fn openai(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post(
            path,
            &[("authorization", &format!("Bearer {OPENAI_KEY}"))],
            body.to_string(),
        )
        .await
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("send")
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("send")
    }

    /// POST an OpenAI request and decode the JSON answer.
    pub async fn openai_json(&self, path: &str, body: &Value) -> (u16, Value) {
        json(self.openai(path, body).await).await
    }

    pub async fn azure(&self, deployment: &str, op: &str, body: &Value) -> reqwest::Response {
        self.post(
            &format!("/openai/deployments/{deployment}/{op}?api-version=2024-10-21"),
            &[("api-key", AZURE_KEY)],
            body.to_string(),
        )
        .await
    }
}

pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// The `data:` payloads of an SSE body, in order (including `[DONE]`).
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad event {e:?}"))
                .to_string()
        })
        .collect()
}

/// Parsed JSON events of an SSE body, asserting it ends with `[DONE]`.
pub fn sse_json(body: &str) -> Vec<Value> {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect()
}

/// Concatenated `delta.content` of choice `index`.
pub fn stream_content(events: &[Value], index: u64) -> String {
    events
        .iter()
        .flat_map(|e| e["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

pub fn user(text: &str) -> Value {
    serde_json::json!({"role": "user", "content": text})
}

/// A basic chat request for `model`.
pub fn chat(model: &str, text: &str) -> Value {
    serde_json::json!({"model": model, "messages": [user(text)]})
}

pub fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// A raw HTTP/1.1 POST of a JSON `body` to `target` with the OpenAI key,
/// `headers` (whole lines, each ending in CRLF) and `connection: close`;
/// returns what the server sent until EOF (at most 5 s).
pub async fn raw_post(m: &Mock, target: &str, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(m.server.addr).await.unwrap();
    let req = format!(
        "POST {target} HTTP/1.1\r\n{headers}authorization: Bearer {OPENAI_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
