//! OpenAI embeddings → Bedrock `InvokeModel` (`POST /model/{id}/invoke`)
//! for the two embedding families Bedrock serves, and their answers back
//! into OpenAI's `list` of `embedding`s.
//!
//! - **Titan Text Embeddings** (`amazon.titan-embed-text-v2:0`, and v1):
//!   `{"inputText", "dimensions", "normalize": true}` →
//!   `{"embedding": [...], "inputTextTokenCount"}`. v2 takes `dimensions`
//!   (256, 512 or 1024; Bedrock checks the value) and always gets
//!   `normalize: true` (OpenAI's embeddings are unit vectors, and clients
//!   compare them with a dot product); v1 takes text only, so `dimensions`
//!   is a 400 there. **One input per call**: Titan embeds one text per
//!   request, and answering a batch would take one upstream call per text,
//!   which the filter cannot make (it forwards the client's request; it
//!   does not originate requests), so an `input` array of more than one
//!   text is a 400 naming `input`.
//! - **Cohere Embed** (`cohere.embed-english-v3`,
//!   `cohere.embed-multilingual-v3`, `cohere.embed-v4:0`): `{"texts": [...],
//!   "input_type"}` → `{"embeddings": [[...], ...]}` (or
//!   `{"embeddings": {"float": [...]}}`, the by-type shape), a batch in one
//!   call. `input_type` (Cohere's `search_document`, `search_query`,
//!   `classification`, `clustering`) may be given as an extension
//!   parameter; default `search_document`. `dimensions` maps to v4's
//!   `output_dimension` and is a 400 for v3. Cohere reports no token count
//!   in the body; Bedrock's `x-amzn-bedrock-input-token-count` response
//!   header has it.
//!
//! The family is read from the upstream model id (`titan-embed`,
//! `cohere.embed`); other ids (including application inference profile
//! ARNs, which do not name the model) are a 400 `model_not_supported`.
//! Token-array inputs are a 400 (both families take text). `encoding_format`
//! `float` copies the numbers as Bedrock wrote them; `base64` packs them as
//! little-endian `f32`s, as OpenAI does. `user` is accepted and ignored.

use super::request::{Extra, Fields};
use super::response::invalid_answer;
use crate::config::Model;
use crate::error::{echo, ApiError};
use crate::providers::UnknownParams;
use crate::request::ClientRequest;
use crate::usage::Usage as GatewayUsage;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The response header with the input token count of an `InvokeModel`
/// call.
pub const INPUT_TOKENS_HEADER: &str = "x-amzn-bedrock-input-token-count";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    TitanV1,
    TitanV2,
    Cohere { v4: bool },
}

impl Family {
    pub fn of(model_id: &str) -> Option<Family> {
        let id = model_id.to_ascii_lowercase();
        if id.contains("cohere.embed") {
            Some(Family::Cohere {
                v4: id.contains("embed-v4"),
            })
        } else if id.contains("titan-embed-text-v2") {
            Some(Family::TitanV2)
        } else if id.contains("titan-embed-text-v1") || id.contains("titan-embed-g1-text") {
            Some(Family::TitanV1)
        } else {
            None
        }
    }
}

fn unsupported_param(param: &str, why: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        "unsupported_parameter",
        format!(
            "Unsupported parameter: '{param}' {why}. Remove it, or set drop_unsupported_params \
             on the model in the gateway's config."
        ),
    )
}

/// The `encoding_format` the client asked for: `true` for base64.
pub fn wants_base64(req: &ClientRequest<'_>) -> Result<bool, ApiError> {
    match req.field("encoding_format").map(|r| r.get()) {
        None | Some("null") | Some("\"float\"") => Ok(false),
        Some("\"base64\"") => Ok(true),
        Some(_) => Err(ApiError::invalid_param(
            "encoding_format",
            "invalid_value",
            "Invalid 'encoding_format': expected 'float' or 'base64'.",
        )),
    }
}

/// The `InvokeModel` body for an embeddings request.
pub fn translate(
    req: &ClientRequest<'_>,
    model: &Model,
    unknown: UnknownParams,
) -> Result<Vec<u8>, ApiError> {
    let family = Family::of(&model.upstream).ok_or_else(|| {
        ApiError::invalid_param(
            "model",
            "model_not_supported",
            format!(
                "`{}` is not an embedding model the gateway can call on Bedrock: it serves \
                 Titan Text Embeddings and Cohere Embed model ids.",
                model.name
            ),
        )
    })?;
    let drop = model.drop_unsupported_params;
    let cohere = matches!(family, Family::Cohere { .. });
    let known = req.endpoint.known_params();
    // Passed parameters, added after the body's own members.
    let mut extra = Vec::new();
    for (k, v) in &req.fields {
        let k = k.as_str();
        if known.contains(&k) || k == "input_type" {
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
            UnknownParams::Pass => {
                if !matches!(
                    k,
                    "inputText" | "dimensions" | "normalize" | "texts" | "output_dimension"
                ) {
                    extra.push((k, Extra::Raw(v)));
                }
            }
        }
    }
    wants_base64(req)?;
    let raw = req
        .field("input")
        .ok_or_else(|| ApiError::missing_param("input"))?;
    let texts: Vec<String> = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) => vec![s],
        Ok(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid_param(
                    "input",
                    "unsupported_value",
                    "Bedrock embedding models take text: token arrays are not supported.",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid_param(
                "input",
                "invalid_type",
                "Invalid type for 'input': expected a string or an array of strings.",
            ))
        }
    };
    let dimensions = match req.field("dimensions").filter(|r| r.get() != "null") {
        None => None,
        Some(r) => Some(
            serde_json::from_str::<u64>(r.get())
                .ok()
                .filter(|d| *d > 0)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "dimensions",
                        "invalid_value",
                        "Invalid 'dimensions': must be a positive integer.",
                    )
                })?,
        ),
    };
    let input_type = match req.field("input_type").filter(|r| r.get() != "null") {
        None => None,
        Some(_) if !cohere && drop => None,
        Some(_) if !cohere => {
            return Err(unsupported_param(
                "input_type",
                "is Cohere's and not supported with Titan embedding models",
            ))
        }
        Some(r) => Some(serde_json::from_str::<String>(r.get()).map_err(|_| {
            ApiError::invalid_param(
                "input_type",
                "invalid_type",
                "Invalid type for 'input_type': expected a string.",
            )
        })?),
    };
    let body = match family {
        Family::TitanV1 | Family::TitanV2 => {
            if texts.len() > 1 {
                return Err(ApiError::invalid_param(
                    "input",
                    "unsupported_value",
                    format!(
                        "Titan embedding models embed one text per request and the gateway \
                         makes one upstream call per request: send the {} texts in separate \
                         requests.",
                        texts.len()
                    ),
                ));
            }
            let v2 = family == Family::TitanV2;
            let dimensions = match dimensions {
                Some(_) if !v2 && drop => None,
                Some(_) if !v2 => {
                    return Err(unsupported_param(
                        "dimensions",
                        "is not supported by Titan Text Embeddings v1",
                    ))
                }
                d => d,
            };
            let text = texts.into_iter().next().unwrap_or_default();
            let mut body = vec![("inputText", Extra::Value(Value::String(text)))];
            if let Some(d) = dimensions {
                body.push(("dimensions", Extra::Value(Value::from(d))));
            }
            if v2 {
                body.push(("normalize", Extra::Value(Value::Bool(true))));
            }
            body.extend(extra);
            serde_json::to_vec(&Fields(body))
        }
        Family::Cohere { v4 } => {
            let output_dimension = match dimensions {
                Some(_) if !v4 && drop => None,
                Some(_) if !v4 => {
                    return Err(unsupported_param(
                        "dimensions",
                        "is not supported by Cohere Embed v3",
                    ))
                }
                d => d,
            };
            let input_type = input_type.unwrap_or_else(|| "search_document".to_string());
            let mut body = vec![
                (
                    "texts",
                    Extra::Value(Value::Array(texts.into_iter().map(Value::String).collect())),
                ),
                ("input_type", Extra::Value(Value::String(input_type))),
            ];
            if let Some(d) = output_dimension {
                body.push(("output_dimension", Extra::Value(Value::from(d))));
            }
            body.extend(extra);
            serde_json::to_vec(&Fields(body))
        }
    };
    body.map_err(|e| ApiError::invalid(format!("The request could not be translated: {e}.")))
}

// ---------------------------------------------------------------- answers

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    /// Titan.
    #[serde(default, borrow)]
    embedding: Option<&'a RawValue>,
    #[serde(default)]
    input_text_token_count: Option<u64>,
    /// Cohere: an array of arrays, or `{"float": [...]}`.
    #[serde(default, borrow)]
    embeddings: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ByType<'a> {
    #[serde(borrow)]
    float: Vec<&'a RawValue>,
}

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
    embedding: Vector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Raw(&'a RawValue),
    Base64(String),
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON array of numbers as OpenAI's base64 (little-endian `f32`s).
fn pack(raw: &RawValue) -> Option<String> {
    let v: Vec<f64> = serde_json::from_str(raw.get()).ok()?;
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&(x as f32).to_le_bytes());
    }
    Some(base64(&bytes))
}

/// Translator for an `InvokeModel` embeddings answer.
pub struct Translator {
    model: String,
    base64: bool,
    header_tokens: Option<u64>,
    usage: Option<GatewayUsage>,
}

impl Translator {
    pub fn new(model: &str, base64: bool) -> Self {
        Translator {
            model: model.to_string(),
            base64,
            header_tokens: None,
            usage: None,
        }
    }

    fn translate(&mut self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let bad = || invalid_answer("not an embeddings JSON object");
        let a: Answer<'_> = serde_json::from_slice(body).map_err(|_| bad())?;
        let vectors: Vec<&RawValue> = match (a.embedding, a.embeddings) {
            (Some(e), _) => vec![e],
            (None, Some(e)) if e.get().starts_with('{') => {
                serde_json::from_str::<ByType<'_>>(e.get())
                    .map_err(|_| bad())?
                    .float
            }
            (None, Some(e)) => serde_json::from_str(e.get()).map_err(|_| bad())?,
            (None, None) => return Err(bad()),
        };
        let mut data = Vec::with_capacity(vectors.len());
        for (index, v) in vectors.into_iter().enumerate() {
            if !v.get().starts_with('[') {
                return Err(bad());
            }
            let embedding = if self.base64 {
                Vector::Base64(pack(v).ok_or_else(bad)?)
            } else {
                Vector::Raw(v)
            };
            data.push(Item {
                object: "embedding",
                index,
                embedding,
            });
        }
        let tokens = a.input_text_token_count.or(self.header_tokens).unwrap_or(0);
        self.usage = Some(GatewayUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
            ..GatewayUsage::default()
        });
        serde_json::to_vec(&List {
            object: "list",
            data,
            model: &self.model,
            usage: OutUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        })
        .map_err(|_| bad())
    }
}

impl crate::providers::ResponseTranslator for Translator {
    fn stream_chunk(&mut self, chunk: &[u8], _end_of_stream: bool) -> Option<Vec<u8>> {
        Some(chunk.to_vec())
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        Some(self.translate(body).unwrap_or_else(|e| e.body()))
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.usage
    }

    fn response_headers(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        self.header_tokens = get(INPUT_TOKENS_HEADER).and_then(|v| v.trim().parse().ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ResponseTranslator;
    use crate::request::Endpoint;

    fn model(upstream: &str, drop: bool) -> Model {
        Model {
            name: "e".into(),
            aliases: vec![],
            provider: 0,
            upstream: upstream.into(),
            kind: crate::config::ModelKind::Embedding,
            context_window: None,
            max_output_tokens: None,
            price: Default::default(),
            created: 0,
            drop_unsupported_params: drop,
            reserve_tokens: None,
            deployments: Vec::new(),
            strategy: Default::default(),
            fallbacks: Vec::new(),
            context_fallback: None,
        }
    }

    fn go(upstream: &str, body: &str) -> Result<Value, ApiError> {
        let req = ClientRequest::parse(Endpoint::Embeddings, body.as_bytes())?;
        let out = translate(&req, &model(upstream, false), UnknownParams::Reject)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    const TITAN: &str = "amazon.titan-embed-text-v2:0";
    const COHERE: &str = "cohere.embed-english-v3";

    #[test]
    fn families() {
        assert_eq!(Family::of(TITAN), Some(Family::TitanV2));
        assert_eq!(
            Family::of("amazon.titan-embed-text-v1"),
            Some(Family::TitanV1)
        );
        assert_eq!(Family::of(COHERE), Some(Family::Cohere { v4: false }));
        assert_eq!(
            Family::of("us.cohere.embed-v4:0"),
            Some(Family::Cohere { v4: true })
        );
        assert_eq!(Family::of("anthropic.claude-v2"), None);
        let e = go("x.y", r#"{"model":"e","input":"a"}"#).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("model_not_supported"));
    }

    #[test]
    fn titan_bodies() {
        let v = go(TITAN, r#"{"model":"e","input":"hi","dimensions":256}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"inputText":"hi","dimensions":256,"normalize":true})
        );
        let v = go(
            TITAN,
            r#"{"model":"e","input":["hi"],"user":"u","encoding_format":"base64"}"#,
        )
        .unwrap();
        assert_eq!(v, serde_json::json!({"inputText":"hi","normalize":true}));
        let e = go(TITAN, r#"{"model":"e","input":["a","b"]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = go(TITAN, r#"{"model":"e","input":[[1,2]]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = go(
            "amazon.titan-embed-text-v1",
            r#"{"model":"e","input":"a","dimensions":8}"#,
        )
        .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("unsupported_parameter"));
        let e = go(
            TITAN,
            r#"{"model":"e","input":"a","input_type":"search_query"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input_type"));
        let e = go(
            TITAN,
            r#"{"model":"e","input":"a","encoding_format":"int8"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
        let e = go(TITAN, r#"{"model":"e","input":"a","truncate":"END"}"#).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("unknown_parameter"));
    }

    #[test]
    fn cohere_bodies() {
        let v = go(
            COHERE,
            r#"{"model":"e","input":["a","b"],"input_type":"search_query"}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"texts":["a","b"],"input_type":"search_query"})
        );
        let e = go(COHERE, r#"{"model":"e","input":"a","dimensions":8}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("dimensions"));
        let v = go(
            "cohere.embed-v4:0",
            r#"{"model":"e","input":"a","dimensions":256}"#,
        )
        .unwrap();
        assert_eq!(v["output_dimension"], 256);
        let req = ClientRequest::parse(
            Endpoint::Embeddings,
            br#"{"model":"e","input":"a","truncate":"END","texts":["x"]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(
            &translate(&req, &model(COHERE, false), UnknownParams::Pass).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"texts":["a"],"input_type":"search_document","truncate":"END"})
        );
    }

    #[test]
    fn answers() {
        let mut t = Translator::new("e", false);
        let out = t
            .full_body(br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25]}],"model":"e","usage":{"prompt_tokens":3,"total_tokens":3}})
        );
        let mut t = Translator::new("e", true);
        t.response_headers(&|h| (h == INPUT_TOKENS_HEADER).then(|| "7".to_string()));
        let out = t
            .full_body(br#"{"embeddings":{"float":[[1.0],[0.5]]},"id":"x","response_type":"embeddings_by_type"}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        // 1.0f32 = 00 00 80 3f, 0.5f32 = 00 00 00 3f (little-endian).
        assert_eq!(v["data"][0]["embedding"], "AACAPw==");
        assert_eq!(v["data"][1]["embedding"], "AAAAPw==");
        assert_eq!(t.usage().unwrap().prompt_tokens, 7);
        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"embedding\":5}",
            b"{\"embeddings\":[[\"x\"]]}",
        ] {
            let mut t = Translator::new("e", true);
            let v: Value = serde_json::from_slice(&t.full_body(bad).unwrap()).unwrap();
            assert!(v.get("error").is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
