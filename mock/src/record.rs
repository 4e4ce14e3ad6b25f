//! Recording of the requests received on provider routes, for tests that
//! want to see exactly what the gateway sent upstream
//! (`GET /__mock/requests`, `DELETE /__mock/requests`).
//!
//! Recording is cheap: the header map is cloned and the body is a
//! reference-counted `Bytes`; JSON is only rendered when asked for.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{Map, Value};

struct Entry {
    provider: &'static str,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A bounded log of the most recent requests, oldest first.
pub struct Recorder {
    limit: usize,
    entries: Mutex<VecDeque<Entry>>,
}

impl Recorder {
    pub fn new(limit: usize) -> Self {
        Recorder {
            limit,
            entries: Mutex::new(VecDeque::with_capacity(limit.min(1024))),
        }
    }

    pub fn record(
        &self,
        provider: &'static str,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) {
        if self.limit == 0 {
            return;
        }
        let entry = Entry {
            provider,
            method: method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            headers: headers.clone(),
            body: body.clone(),
        };
        let mut q = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() >= self.limit {
            q.pop_front();
        }
        q.push_back(entry);
    }

    /// Removes everything; returns how many entries there were.
    pub fn clear(&self) -> usize {
        let mut q = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len();
        q.clear();
        n
    }

    /// The log as a JSON array:
    /// `[{"provider","method","path","query","headers":{name: value},"body": "<string>"}]`.
    /// Repeated headers are joined with `", "`.
    pub fn to_json(&self) -> Value {
        let q = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Value::Array(q.iter().map(entry_json).collect())
    }
}

fn entry_json(e: &Entry) -> Value {
    let mut headers = Map::new();
    for (name, value) in &e.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    let mut m = Map::new();
    m.insert("provider".into(), Value::from(e.provider));
    m.insert("method".into(), Value::from(e.method.as_str()));
    m.insert("path".into(), Value::from(e.path.as_str()));
    m.insert("query".into(), Value::from(e.query.as_str()));
    m.insert("headers".into(), Value::Object(headers));
    m.insert(
        "body".into(),
        Value::from(String::from_utf8_lossy(&e.body).into_owned()),
    );
    Value::Object(m)
}
