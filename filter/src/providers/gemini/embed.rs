//! OpenAI embeddings ↔ Gemini's two embedding APIs.
//!
//! - **Gemini API** (`POST …/models/{model}:batchEmbedContents`): one
//!   request per input, `{"model": "models/{model}", "content": {"parts":
//!   [{"text"}]}, "outputDimensionality"?}`; the answer is `{"embeddings":
//!   [{"values": [...]}]}` in input order (at most 100 inputs a call).
//! - **Vertex AI** (`POST …/models/{model}:predict`): `{"instances":
//!   [{"content"}], "parameters": {"outputDimensionality"}?}`; the answer is
//!   `{"predictions": [{"embeddings": {"values", "statistics":
//!   {"token_count", "truncated"}}}]}` (at most 250 inputs a call for the
//!   `text-embedding-*` models, one for `gemini-embedding-001`: more is the
//!   provider's 400).
//!
//! `dimensions` → `outputDimensionality`. `input` is a string or an array
//! of strings; token arrays have no Gemini equivalent (a 400). Unknown
//! parameters follow the provider's `unknown_params`; with `pass` they are
//! copied into every request (Gemini API: `taskType`, `title`) or instance
//! (Vertex: `task_type`, `title`): the per-input options those APIs take.
//! `user` is accepted and ignored.
//!
//! The answer is OpenAI's list, order kept: `embedding` is the float array
//! (each number the same `f64` Google wrote, printed back shortest-form), or with
//! `encoding_format: base64` the base64 of the little-endian `f32`s, which
//! is what OpenAI sends and its SDKs decode. `model` is the model name the
//! client asked for (the answers do not name one). Usage: Vertex's
//! `statistics.token_count` summed; the Gemini API reports no tokens for
//! embeddings (its `usageMetadata.promptTokenCount` is used if an answer
//! ever carries one), so the gateway estimates `ceil(UTF-8 bytes / 4)` per
//! input, the rule of thumb Google gives for Gemini tokens (and the one the
//! `/v1/messages/count_tokens` estimate uses).

use super::response::invalid_answer;
use super::types::list_at;
use crate::error::{echo, ApiError};
use crate::providers::ResponseTranslator;
use crate::providers::UnknownParams;
use crate::request::ClientRequest;
use crate::usage::Usage;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Which embedding API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `:batchEmbedContents` (Gemini API).
    Batch,
    /// `:predict` (Vertex AI).
    Predict,
}

/// The client's inputs, checked.
fn inputs(req: &ClientRequest<'_>) -> Result<Vec<String>, ApiError> {
    let raw = req
        .field("input")
        .ok_or_else(|| ApiError::missing_param("input"))?;
    let bad = || {
        ApiError::invalid_param(
            "input",
            "unsupported_value",
            "Gemini embedding models take text: 'input' must be a string or an array of \
             strings (token arrays are not supported).",
        )
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) => Ok(vec![s]),
        Ok(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// The gateway's token estimate for `inputs`.
fn estimate(inputs: &[String]) -> u64 {
    inputs.iter().map(|s| (s.len() as u64).div_ceil(4)).sum()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

fn encoding(req: &ClientRequest<'_>) -> Result<Encoding, ApiError> {
    match req.field("encoding_format").map(|r| r.get()) {
        None | Some("null") | Some("\"float\"") => Ok(Encoding::Float),
        Some("\"base64\"") => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::invalid_param(
            "encoding_format",
            "invalid_value",
            format!(
                "Invalid 'encoding_format': {}. Expected 'float' or 'base64'.",
                echo(other)
            ),
        )),
    }
}

/// The request body for `req` (model `upstream`).
pub fn body(
    api: Api,
    req: &ClientRequest<'_>,
    upstream: &str,
    unknown: UnknownParams,
) -> Result<Vec<u8>, ApiError> {
    let known = req.endpoint.known_params();
    let mut extra: Vec<(&str, &RawValue)> = Vec::new();
    for (k, v) in &req.fields {
        let k = k.as_str();
        if known.contains(&k) {
            continue;
        }
        match unknown {
            UnknownParams::Reject => {
                return Err(ApiError::invalid_param(
                    k,
                    "unknown_parameter",
                    format!("Unrecognized request argument supplied: {}", echo(k)),
                ))
            }
            UnknownParams::Drop => {}
            UnknownParams::Pass => extra.push((k, *v)),
        }
    }
    let inputs = inputs(req)?;
    encoding(req)?;
    let dims = match req.field("dimensions").filter(|r| r.get() != "null") {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Number(n)) if n.as_u64().is_some_and(|d| d >= 1) => Some(n),
            _ => {
                return Err(ApiError::invalid_param(
                    "dimensions",
                    "invalid_value",
                    "Invalid 'dimensions': must be a positive integer.",
                ))
            }
        },
    };
    let with_extra = |mut o: Map<String, Value>, reserved: &[&str]| {
        for (k, v) in &extra {
            if !reserved.contains(k) {
                if let Ok(v) = serde_json::from_str::<Value>(v.get()) {
                    o.insert((*k).to_string(), v);
                }
            }
        }
        Value::Object(o)
    };
    let doc = match api {
        Api::Batch => {
            let model = format!("models/{upstream}");
            let requests: Vec<Value> = inputs
                .into_iter()
                .map(|text| {
                    let mut o = Map::new();
                    o.insert("model".into(), Value::String(model.clone()));
                    o.insert(
                        "content".into(),
                        serde_json::json!({ "parts": [{ "text": text }] }),
                    );
                    if let Some(d) = &dims {
                        o.insert("outputDimensionality".into(), Value::Number(d.clone()));
                    }
                    with_extra(o, &["model", "content", "outputDimensionality"])
                })
                .collect();
            serde_json::json!({ "requests": requests })
        }
        Api::Predict => {
            let instances: Vec<Value> = inputs
                .into_iter()
                .map(|text| {
                    let mut o = Map::new();
                    o.insert("content".into(), Value::String(text));
                    with_extra(o, &["content"])
                })
                .collect();
            let mut doc = Map::new();
            doc.insert("instances".into(), Value::Array(instances));
            if let Some(d) = dims {
                doc.insert(
                    "parameters".into(),
                    serde_json::json!({ "outputDimensionality": d }),
                );
            }
            Value::Object(doc)
        }
    };
    serde_json::to_vec(&doc)
        .map_err(|e| ApiError::invalid(format!("The request could not be translated: {e}.")))
}

// ------------------------------------------------------------------ answers

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item<'a>>,
    model: &'a str,
    usage: OutUsage,
}

#[derive(Serialize)]
struct Item<'a> {
    object: &'static str,
    index: usize,
    embedding: Embedding<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding<'a> {
    Floats(&'a Value),
    Base64(String),
}

#[derive(Serialize, Clone, Copy)]
struct OutUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A float array → base64 of its little-endian `f32`s.
fn to_base64(values: &[Value]) -> Option<String> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&(v.as_f64()? as f32).to_le_bytes());
    }
    Some(base64(&bytes))
}

/// Translator for an embeddings answer.
pub struct EmbedTranslator {
    api: Api,
    model: String,
    base64: bool,
    estimate: u64,
    usage: Option<Usage>,
}

impl EmbedTranslator {
    pub fn new(api: Api, req: &ClientRequest<'_>) -> Self {
        EmbedTranslator {
            api,
            model: req.model.as_ref().map(|m| m.0.clone()).unwrap_or_default(),
            base64: encoding(req) == Ok(Encoding::Base64),
            estimate: inputs(req).map(|i| estimate(&i)).unwrap_or(0),
            usage: None,
        }
    }

    fn translate(&mut self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let answer: Value = std::str::from_utf8(body)
            .ok()
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| invalid_answer("not JSON"))?;
        // The vectors (`values` of each embedding) and the token count.
        let (vectors, tokens): (Vec<Option<&Value>>, u64) = match self.api {
            Api::Batch => {
                let tokens = answer
                    .get("usageMetadata")
                    .and_then(|u| u.get("promptTokenCount"))
                    .and_then(Value::as_u64)
                    .unwrap_or(self.estimate);
                let vectors = list_at(&answer, "embeddings")
                    .iter()
                    .map(|e| e.get("values"))
                    .collect();
                (vectors, tokens)
            }
            Api::Predict => {
                let mut counted = None::<u64>;
                let mut vectors = Vec::new();
                for p in list_at(&answer, "predictions") {
                    let e = p.get("embeddings");
                    if let Some(n) = e
                        .and_then(|e| e.get("statistics"))
                        .and_then(|s| s.get("token_count"))
                        .and_then(Value::as_f64)
                    {
                        counted = Some(counted.unwrap_or(0).saturating_add(n.max(0.0) as u64));
                    }
                    vectors.push(e.and_then(|e| e.get("values")));
                }
                (vectors, counted.unwrap_or(self.estimate))
            }
        };
        if vectors.is_empty()
            && answer.get("embeddings").is_none()
            && answer.get("predictions").is_none()
        {
            return Err(invalid_answer("it has no embeddings"));
        }
        let mut data = Vec::with_capacity(vectors.len());
        for (index, v) in vectors.into_iter().enumerate() {
            let floats = v
                .filter(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_number)))
                .ok_or_else(|| invalid_answer("an embedding is not an array of numbers"))?;
            let embedding = if self.base64 {
                let list = floats.as_array().map(Vec::as_slice).unwrap_or(&[]);
                Embedding::Base64(
                    to_base64(list).ok_or_else(|| invalid_answer("an embedding is not numbers"))?,
                )
            } else {
                Embedding::Floats(floats)
            };
            data.push(Item {
                object: "embedding",
                index,
                embedding,
            });
        }
        self.usage = Some(Usage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            total_tokens: tokens,
            cached_tokens: 0,
            reasoning_tokens: 0,
        });
        let list = List {
            object: "list",
            data,
            model: &self.model,
            usage: OutUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        };
        serde_json::to_vec(&list).map_err(|_| invalid_answer("serialisation"))
    }
}

impl ResponseTranslator for EmbedTranslator {
    fn stream_chunk(&mut self, chunk: &[u8], _end_of_stream: bool) -> Option<Vec<u8>> {
        Some(chunk.to_vec())
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        Some(self.translate(body).unwrap_or_else(|e| e.body()))
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Endpoint;

    #[test]
    fn base64_matches_the_standard() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xff, 0xfe, 0x00, 0x80][..], "//4AgA=="),
        ] {
            assert_eq!(base64(input), want);
        }
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(
            to_base64(&[serde_json::json!(1.0), serde_json::json!(-2)]).unwrap(),
            base64(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0])
        );
    }

    #[test]
    fn bodies_and_errors() {
        let req = ClientRequest::parse(
            Endpoint::Embeddings,
            br#"{"model":"e","input":["a","bb"],"dimensions":8,"task_type":"RETRIEVAL_QUERY"}"#,
        )
        .unwrap();
        let e = body(Api::Batch, &req, "m", UnknownParams::Reject).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("task_type"));
        let v: Value =
            serde_json::from_slice(&body(Api::Predict, &req, "m", UnknownParams::Pass).unwrap())
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"instances":[{"content":"a","task_type":"RETRIEVAL_QUERY"},
                {"content":"bb","task_type":"RETRIEVAL_QUERY"}],"parameters":{"outputDimensionality":8}})
        );
        let req = ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"e","input":[[1,2]]}"#)
            .unwrap();
        let e = body(Api::Batch, &req, "m", UnknownParams::Reject).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let req = ClientRequest::parse(
            Endpoint::Embeddings,
            br#"{"model":"e","input":"x","encoding_format":"int8"}"#,
        )
        .unwrap();
        assert!(body(Api::Batch, &req, "m", UnknownParams::Reject).is_err());
    }

    #[test]
    fn garbage_answers_do_not_panic() {
        let req = ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"e","input":"abcde"}"#)
            .unwrap();
        for api in [Api::Batch, Api::Predict] {
            for body in [
                &b""[..],
                b"[]",
                b"{\"embeddings\":[{}]}",
                b"{\"predictions\":[{\"embeddings\":{\"values\":\"x\"}}]}",
                b"{\"embeddings\":[{\"values\":[\"a\"]}]}",
            ] {
                let mut t = EmbedTranslator::new(api, &req);
                let out = t.full_body(body).unwrap();
                let v: Value = serde_json::from_slice(&out).unwrap();
                assert!(v.get("error").is_some() || v.get("data").is_some(), "{v}");
            }
        }
        let mut t = EmbedTranslator::new(Api::Batch, &req);
        t.full_body(br#"{"embeddings":[]}"#);
        assert_eq!(t.usage().unwrap().prompt_tokens, 2);
    }
}
