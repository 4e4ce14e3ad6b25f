//! Google Gemini API (AI Studio, `generativelanguage.googleapis.com`) and
//! Vertex AI (`aiplatform.googleapis.com`) generateContent, embeddings and
//! countTokens.
//!
//! AI Studio: `POST /v1beta/models/{model}:{method}` (also `/v1` and
//! `/v1alpha`) with `generateContent`, `streamGenerateContent`
//! (`?alt=sse`: `data: {GenerateContentResponse}\r\n\r\n` events; without
//! it a streamed JSON array), `countTokens`, `embedContent` and
//! `batchEmbedContents`; `GET /v1beta/models[/{model}]`. Auth with
//! `x-goog-api-key` or `?key=`.
//!
//! Vertex AI: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`
//! (also `/v1beta1`) with `generateContent`, `streamGenerateContent`,
//! `countTokens` and `predict` (text embeddings). Auth with
//! `Authorization: Bearer`.
//!
//! The request body is checked the way Google's JSON-to-proto front end
//! does: unknown names (`Invalid JSON payload received. Unknown name "x" at
//! 'generation_config': Cannot find field.`), scalar types
//! (`Invalid value at 'generation_config.temperature' (TYPE_FLOAT), "hot"`)
//! and enum values, all reported together with `google.rpc.BadRequest`
//! field violations. Both `camelCase` and `snake_case` names are accepted,
//! numbers may be sent as strings, and a repeated field may be given a
//! single value, as the real parser allows. Then come the model (404) and
//! the semantic checks (`* GenerateContentRequest.contents: contents is not
//! specified`, roles, function call/response turns, ranges).

use std::collections::VecDeque;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::behavior::{html_response, Behavior};
use crate::body::Body;
use crate::openai::{bearer, set};
use crate::text::{self, count_tokens, first_chars};
use crate::{now_unix, Ctx, Provider, State};

/// Default accepted Gemini API key.
pub const DEFAULT_KEY: &str = "mock-gemini-key";
/// Default accepted Vertex AI bearer token.
pub const DEFAULT_VERTEX_TOKEN: &str = "mock-vertex-token";
/// Tokens charged for an `inlineData` / `fileData` part (Gemini charges
/// 258 tokens for a small image).
pub const MEDIA_TOKENS: u64 = 258;
/// Largest `candidateCount`.
pub const MAX_CANDIDATES: i64 = 8;
/// Default embedding size of `text-embedding-004` and friends.
pub const DEFAULT_EMBEDDING_DIMS: usize = 768;
/// Size of `gemini-embedding-001`.
pub const GEMINI_EMBEDDING_DIMS: usize = 3072;

const STUDIO_METHODS: &[&str] = &[
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
];
const VERTEX_METHODS: &[&str] = &[
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "predict",
];
const RESPONSE_MIME_TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "application/xml",
    "application/yaml",
    "text/x.enum",
];

/// True for `/v1/models/{model}:{method}` with a Gemini method (the
/// OpenAI `/v1/models/{id}` routes never carry one).
pub fn is_studio_v1_method(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/models/") else {
        return false;
    };
    match rest.rsplit_once(':') {
        Some((model, method)) => {
            !model.is_empty() && !model.contains('/') && STUDIO_METHODS.contains(&method)
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Errors

/// A Google API error: `{"error":{"code","message","status","details"}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct GoogleError {
    pub status: StatusCode,
    pub message: String,
    pub details: Vec<Value>,
}

type R<T> = Result<T, GoogleError>;

/// The canonical `google.rpc.Code` name for an HTTP status.
pub fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        c if c >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

impl GoogleError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        GoogleError {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400 `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    fn with(mut self, detail: Value) -> Self {
        self.details.push(detail);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), Value::from(self.status.as_u16()));
        e.insert("message".into(), Value::from(self.message.as_str()));
        e.insert(
            "status".into(),
            Value::from(status_name(self.status.as_u16())),
        );
        if !self.details.is_empty() {
            e.insert("details".into(), Value::Array(self.details.clone()));
        }
        json!({ "error": e })
    }

    pub fn into_response(self) -> Response<Body> {
        json_response(self.status, &self.body())
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

/// 400 with `google.rpc.BadRequest` field violations (JSON-to-proto errors).
fn bad_request(violations: &[(String, String)]) -> GoogleError {
    let message = violations
        .iter()
        .map(|(_, d)| d.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let fv: Vec<Value> = violations
        .iter()
        .map(|(field, d)| {
            if field.is_empty() {
                json!({ "description": d })
            } else {
                json!({ "field": field, "description": d })
            }
        })
        .collect();
    GoogleError::invalid(message).with(json!({
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": fv,
    }))
}

/// `* Request.path: message\n` (the backend's validation style).
fn field_error(req: &str, path: &str, message: &str) -> GoogleError {
    GoogleError::invalid(format!("* {req}.{path}: {message}\n"))
}

fn error_info(reason: &str, service: &str, method: Option<&str>) -> Value {
    let mut meta = Map::new();
    meta.insert("service".into(), Value::from(service));
    if let Some(m) = method {
        meta.insert("method".into(), Value::from(m));
    }
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": meta,
    })
}

/// Google's HTML 404 page for an unknown URL.
fn not_found_page(path: &str) -> Response<Body> {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{}</code> was not found on this server.  <ins>That’s all we know.</ins>\n",
        path.replace('<', "&lt;")
    );
    let mut resp = Response::new(Body::full(page));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    resp
}

// ---------------------------------------------------------------------------
// Routes

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Studio,
    Vertex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Generate,
    Stream,
    Count,
    Embed,
    BatchEmbed,
    Predict,
    ListModels,
    GetModel,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Generate => "generateContent",
            Op::Stream => "streamGenerateContent",
            Op::Count => "countTokens",
            Op::Embed => "embedContent",
            Op::BatchEmbed => "batchEmbedContents",
            Op::Predict => "predict",
            Op::ListModels | Op::GetModel => "getModel",
        }
    }

    fn rpc(self) -> &'static str {
        match self {
            Op::Generate => "GenerateContent",
            Op::Stream => "StreamGenerateContent",
            Op::Count => "CountTokens",
            Op::Embed => "EmbedContent",
            Op::BatchEmbed => "BatchEmbedContents",
            Op::Predict => "Predict",
            Op::ListModels => "ListModels",
            Op::GetModel => "GetModel",
        }
    }
}

struct Route {
    flavor: Flavor,
    version: String,
    model: String,
    op: Op,
    project: String,
    location: String,
}

fn op_of(name: &str) -> Option<Op> {
    Some(match name {
        "generateContent" => Op::Generate,
        "streamGenerateContent" => Op::Stream,
        "countTokens" => Op::Count,
        "embedContent" => Op::Embed,
        "batchEmbedContents" => Op::BatchEmbed,
        "predict" => Op::Predict,
        _ => return None,
    })
}

fn parse_route(sub: &str, flavor: Flavor) -> Option<Route> {
    let rest = sub.strip_prefix('/')?;
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let mut route = Route {
        flavor,
        version: version.to_string(),
        model: String::new(),
        op: Op::ListModels,
        project: String::new(),
        location: String::new(),
    };
    match flavor {
        Flavor::Studio => {
            if !matches!(version, "v1" | "v1beta" | "v1alpha") {
                return None;
            }
            if rest == "models" {
                return Some(route);
            }
            let m = rest.strip_prefix("models/")?;
            if m.contains('/') || m.is_empty() {
                return None;
            }
            match m.rsplit_once(':') {
                Some((model, method)) => {
                    route.op = op_of(method).filter(|_| STUDIO_METHODS.contains(&method))?;
                    route.model = crate::sigv4::percent_decode(model);
                }
                None => {
                    route.op = Op::GetModel;
                    route.model = crate::sigv4::percent_decode(m);
                }
            }
        }
        Flavor::Vertex => {
            if !matches!(version, "v1" | "v1beta1") {
                return None;
            }
            let parts: Vec<&str> = rest.split('/').collect();
            let ["projects", project, "locations", location, "publishers", "google", "models", last] =
                parts.as_slice()
            else {
                return None;
            };
            let (model, method) = last.rsplit_once(':')?;
            route.op = op_of(method).filter(|_| VERTEX_METHODS.contains(&method))?;
            route.model = crate::sigv4::percent_decode(model);
            route.project = (*project).to_string();
            route.location = (*location).to_string();
        }
    }
    (!route.model.is_empty() || route.op == Op::ListModels).then_some(route)
}

/// Chat models: `gemini-*` (not embeddings), and on AI Studio `gemma-*`
/// and `learnlm-*`.
fn chat_model(model: &str, flavor: Flavor) -> bool {
    let m = model.strip_prefix("models/").unwrap_or(model);
    if m.contains("embedding") {
        return false;
    }
    m.starts_with("gemini-")
        || (flavor == Flavor::Studio && (m.starts_with("gemma-") || m.starts_with("learnlm-")))
}

/// Embedding models and their (full) size.
fn embedding_dims(model: &str, flavor: Flavor) -> Option<usize> {
    let m = model.strip_prefix("models/").unwrap_or(model);
    if m.starts_with("gemini-embedding") || m == "text-embedding-large-exp-03-07" {
        return Some(GEMINI_EMBEDDING_DIMS);
    }
    let known: &[&str] = match flavor {
        Flavor::Studio => &["text-embedding-004", "embedding-001"],
        Flavor::Vertex => &[
            "text-embedding-005",
            "text-embedding-004",
            "text-multilingual-embedding-002",
            "textembedding-gecko@003",
            "textembedding-gecko-multilingual@001",
        ],
    };
    known.contains(&m).then_some(DEFAULT_EMBEDDING_DIMS)
}

fn model_not_found(route: &Route) -> GoogleError {
    match route.flavor {
        Flavor::Studio => GoogleError::new(
            404,
            format!(
                "models/{} is not found for API version {}, or is not supported for {}. Call ListModels to see the list of available models and their supported methods.",
                route.model.strip_prefix("models/").unwrap_or(&route.model),
                route.version,
                route.op.name()
            ),
        ),
        Flavor::Vertex => GoogleError::new(
            404,
            format!(
                "Publisher Model `projects/{}/locations/{}/publishers/google/models/{}` was not found or your project does not have access to it. Please ensure you are using a valid model version. For more information, see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
                route.project, route.location, route.model
            ),
        ),
    }
}

fn check_model(route: &Route) -> R<()> {
    let ok = match route.op {
        Op::Generate | Op::Stream => chat_model(&route.model, route.flavor),
        Op::Count => {
            chat_model(&route.model, route.flavor)
                || embedding_dims(&route.model, route.flavor).is_some()
        }
        Op::Embed | Op::BatchEmbed | Op::Predict => {
            embedding_dims(&route.model, route.flavor).is_some()
        }
        Op::ListModels | Op::GetModel => {
            chat_model(&route.model, route.flavor)
                || embedding_dims(&route.model, route.flavor).is_some()
        }
    };
    if ok {
        Ok(())
    } else if route.op == Op::GetModel {
        Err(GoogleError::new(
            404,
            format!(
                "models/{} is not found for API version {}, or is not supported for getModel.",
                route.model, route.version
            ),
        ))
    } else {
        Err(model_not_found(route))
    }
}

// ---------------------------------------------------------------------------
// JSON-to-proto checks

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    Float,
    Int,
    Bool,
    Enum(&'static str, &'static [&'static str]),
    Msg(&'static Msg),
    /// `google.protobuf.Struct`: any object.
    Struct,
    /// `google.protobuf.Value` or a message the mock does not look into.
    Any,
    /// `map<string, Msg>`.
    Map(&'static Msg),
}

struct F {
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

struct Msg {
    name: &'static str,
    fields: &'static [F],
}

const fn f(name: &'static str, ty: Ty) -> F {
    F {
        name,
        ty,
        repeated: false,
    }
}

const fn r(name: &'static str, ty: Ty) -> F {
    F {
        name,
        ty,
        repeated: true,
    }
}

const TYPE_ENUM: Ty = Ty::Enum(
    "Type",
    &[
        "TYPE_UNSPECIFIED",
        "STRING",
        "NUMBER",
        "INTEGER",
        "BOOLEAN",
        "ARRAY",
        "OBJECT",
        "NULL",
    ],
);
const MODE_ENUM: Ty = Ty::Enum(
    "FunctionCallingConfig.Mode",
    &["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"],
);
const HARM_CATEGORY: Ty = Ty::Enum(
    "HarmCategory",
    &[
        "HARM_CATEGORY_UNSPECIFIED",
        "HARM_CATEGORY_DEROGATORY",
        "HARM_CATEGORY_TOXICITY",
        "HARM_CATEGORY_VIOLENCE",
        "HARM_CATEGORY_SEXUAL",
        "HARM_CATEGORY_MEDICAL",
        "HARM_CATEGORY_DANGEROUS",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
    ],
);
const HARM_THRESHOLD: Ty = Ty::Enum(
    "SafetySetting.HarmBlockThreshold",
    &[
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ],
);
const MODALITY: Ty = Ty::Enum(
    "GenerationConfig.Modality",
    &["MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"],
);
const TASK_TYPE: Ty = Ty::Enum(
    "TaskType",
    &[
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    ],
);
const THINKING_LEVEL: Ty = Ty::Enum(
    "ThinkingConfig.ThinkingLevel",
    &[
        "THINKING_LEVEL_UNSPECIFIED",
        "MINIMAL",
        "LOW",
        "MEDIUM",
        "HIGH",
    ],
);

static BLOB: Msg = Msg {
    name: "Blob",
    fields: &[
        f("mimeType", Ty::Str),
        f("data", Ty::Bytes),
        f("displayName", Ty::Str),
    ],
};
static FILE_DATA: Msg = Msg {
    name: "FileData",
    fields: &[
        f("mimeType", Ty::Str),
        f("fileUri", Ty::Str),
        f("displayName", Ty::Str),
    ],
};
static FUNCTION_CALL: Msg = Msg {
    name: "FunctionCall",
    fields: &[
        f("id", Ty::Str),
        f("name", Ty::Str),
        f("args", Ty::Struct),
        r("partialArgs", Ty::Any),
        f("willContinue", Ty::Bool),
    ],
};
static FUNCTION_RESPONSE: Msg = Msg {
    name: "FunctionResponse",
    fields: &[
        f("id", Ty::Str),
        f("name", Ty::Str),
        f("response", Ty::Struct),
        r("parts", Ty::Any),
        f("willContinue", Ty::Bool),
        f("scheduling", Ty::Any),
    ],
};
static PART: Msg = Msg {
    name: "Part",
    fields: &[
        f("text", Ty::Str),
        f("inlineData", Ty::Msg(&BLOB)),
        f("fileData", Ty::Msg(&FILE_DATA)),
        f("functionCall", Ty::Msg(&FUNCTION_CALL)),
        f("functionResponse", Ty::Msg(&FUNCTION_RESPONSE)),
        f("executableCode", Ty::Any),
        f("codeExecutionResult", Ty::Any),
        f("thought", Ty::Bool),
        f("thoughtSignature", Ty::Bytes),
        f("videoMetadata", Ty::Any),
        f("partMetadata", Ty::Any),
        f("mediaResolution", Ty::Any),
    ],
};
static CONTENT: Msg = Msg {
    name: "Content",
    fields: &[f("role", Ty::Str), r("parts", Ty::Msg(&PART))],
};
static SCHEMA: Msg = Msg {
    name: "Schema",
    fields: &[
        f("type", TYPE_ENUM),
        f("format", Ty::Str),
        f("title", Ty::Str),
        f("description", Ty::Str),
        f("nullable", Ty::Bool),
        r("enum", Ty::Str),
        f("maxItems", Ty::Int),
        f("minItems", Ty::Int),
        f("properties", Ty::Map(&SCHEMA)),
        r("required", Ty::Str),
        f("minProperties", Ty::Int),
        f("maxProperties", Ty::Int),
        f("minLength", Ty::Int),
        f("maxLength", Ty::Int),
        f("pattern", Ty::Str),
        f("example", Ty::Any),
        r("anyOf", Ty::Msg(&SCHEMA)),
        r("propertyOrdering", Ty::Str),
        f("default", Ty::Any),
        f("items", Ty::Msg(&SCHEMA)),
        f("minimum", Ty::Float),
        f("maximum", Ty::Float),
    ],
};
static FUNCTION_DECLARATION: Msg = Msg {
    name: "FunctionDeclaration",
    fields: &[
        f("name", Ty::Str),
        f("description", Ty::Str),
        f("parameters", Ty::Msg(&SCHEMA)),
        f("parametersJsonSchema", Ty::Any),
        f("response", Ty::Msg(&SCHEMA)),
        f("responseJsonSchema", Ty::Any),
        f("behavior", Ty::Any),
    ],
};
static TOOL: Msg = Msg {
    name: "Tool",
    fields: &[
        r("functionDeclarations", Ty::Msg(&FUNCTION_DECLARATION)),
        f("googleSearchRetrieval", Ty::Any),
        f("codeExecution", Ty::Any),
        f("googleSearch", Ty::Any),
        f("urlContext", Ty::Any),
        f("computerUse", Ty::Any),
        f("fileSearch", Ty::Any),
        f("googleMaps", Ty::Any),
        f("retrieval", Ty::Any),
        f("enterpriseWebSearch", Ty::Any),
    ],
};
static FUNCTION_CALLING_CONFIG: Msg = Msg {
    name: "FunctionCallingConfig",
    fields: &[f("mode", MODE_ENUM), r("allowedFunctionNames", Ty::Str)],
};
static TOOL_CONFIG: Msg = Msg {
    name: "ToolConfig",
    fields: &[
        f("functionCallingConfig", Ty::Msg(&FUNCTION_CALLING_CONFIG)),
        f("retrievalConfig", Ty::Any),
    ],
};
static SAFETY_SETTING: Msg = Msg {
    name: "SafetySetting",
    fields: &[
        f("category", HARM_CATEGORY),
        f("threshold", HARM_THRESHOLD),
        f("method", Ty::Any),
    ],
};
static THINKING_CONFIG: Msg = Msg {
    name: "ThinkingConfig",
    fields: &[
        f("includeThoughts", Ty::Bool),
        f("thinkingBudget", Ty::Int),
        f("thinkingLevel", THINKING_LEVEL),
    ],
};
static GENERATION_CONFIG: Msg = Msg {
    name: "GenerationConfig",
    fields: &[
        r("stopSequences", Ty::Str),
        f("responseMimeType", Ty::Str),
        f("responseSchema", Ty::Msg(&SCHEMA)),
        f("responseJsonSchema", Ty::Any),
        r("responseModalities", MODALITY),
        f("candidateCount", Ty::Int),
        f("maxOutputTokens", Ty::Int),
        f("temperature", Ty::Float),
        f("topP", Ty::Float),
        f("topK", Ty::Float),
        f("seed", Ty::Int),
        f("presencePenalty", Ty::Float),
        f("frequencyPenalty", Ty::Float),
        f("responseLogprobs", Ty::Bool),
        f("logprobs", Ty::Int),
        f("enableEnhancedCivicAnswers", Ty::Bool),
        f("speechConfig", Ty::Any),
        f("thinkingConfig", Ty::Msg(&THINKING_CONFIG)),
        f("imageConfig", Ty::Any),
        f("mediaResolution", Ty::Any),
        f("audioTimestamp", Ty::Bool),
        f("routingConfig", Ty::Any),
        f("modelSelectionConfig", Ty::Any),
    ],
};
static GENERATE_REQUEST: Msg = Msg {
    name: "GenerateContentRequest",
    fields: &[
        f("model", Ty::Str),
        r("contents", Ty::Msg(&CONTENT)),
        r("tools", Ty::Msg(&TOOL)),
        f("toolConfig", Ty::Msg(&TOOL_CONFIG)),
        r("safetySettings", Ty::Msg(&SAFETY_SETTING)),
        f("systemInstruction", Ty::Msg(&CONTENT)),
        f("generationConfig", Ty::Msg(&GENERATION_CONFIG)),
        f("cachedContent", Ty::Str),
        f("labels", Ty::Any),
    ],
};
static EMBED_REQUEST: Msg = Msg {
    name: "EmbedContentRequest",
    fields: &[
        f("model", Ty::Str),
        f("content", Ty::Msg(&CONTENT)),
        f("taskType", TASK_TYPE),
        f("title", Ty::Str),
        f("outputDimensionality", Ty::Int),
    ],
};
static BATCH_EMBED_REQUEST: Msg = Msg {
    name: "BatchEmbedContentsRequest",
    fields: &[r("requests", Ty::Msg(&EMBED_REQUEST))],
};
static COUNT_REQUEST: Msg = Msg {
    name: "CountTokensRequest",
    fields: &[
        f("model", Ty::Str),
        r("contents", Ty::Msg(&CONTENT)),
        f("generateContentRequest", Ty::Msg(&GENERATE_REQUEST)),
        r("instances", Ty::Any),
        r("tools", Ty::Msg(&TOOL)),
        f("systemInstruction", Ty::Msg(&CONTENT)),
        f("generationConfig", Ty::Msg(&GENERATION_CONFIG)),
    ],
};
static PREDICT_REQUEST: Msg = Msg {
    name: "PredictRequest",
    fields: &[r("instances", Ty::Any), f("parameters", Ty::Any)],
};

/// `system_instruction` → `systemInstruction`.
fn to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `functionDeclarations` → `function_declarations`.
fn to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Collects JSON-to-proto violations.
struct Walk {
    prefix: String,
    violations: Vec<(String, String)>,
}

impl Walk {
    fn type_url(&self, name: &str) -> String {
        format!("type.googleapis.com/{}.{name}", self.prefix)
    }

    fn bad_value(&mut self, path: &str, ty: &str, v: &Value) {
        self.violations.push((
            path.to_string(),
            format!("Invalid value at '{path}' ({ty}), {v}"),
        ));
    }

    fn msg(&mut self, v: &Value, m: &'static Msg, path: &str) {
        let Value::Object(o) = v else {
            let url = self.type_url(m.name);
            self.bad_value(path, &url, v);
            return;
        };
        for (key, val) in o {
            let camel = to_camel(key);
            match m.fields.iter().find(|fd| fd.name == camel) {
                None => {
                    let at = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" at '{path}'")
                    };
                    self.violations.push((
                        path.to_string(),
                        format!("Invalid JSON payload received. Unknown name \"{key}\"{at}: Cannot find field."),
                    ));
                }
                Some(fd) => {
                    let p = join(path, &to_snake(fd.name));
                    self.field(val, fd, key, path, &p);
                }
            }
        }
    }

    fn field(&mut self, v: &Value, fd: &F, key: &str, parent: &str, path: &str) {
        if v.is_null() {
            return;
        }
        if fd.repeated {
            match v {
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        self.single(x, fd.ty, &format!("{path}[{i}]"));
                    }
                }
                x => self.single(x, fd.ty, path),
            }
        } else if v.is_array() && !matches!(fd.ty, Ty::Any) {
            let at = if parent.is_empty() {
                String::new()
            } else {
                format!(" at '{parent}'")
            };
            self.violations.push((
                parent.to_string(),
                format!("Invalid JSON payload received. Unknown name \"{key}\"{at}: Proto field is not repeating, cannot start list."),
            ));
        } else {
            self.single(v, fd.ty, path);
        }
    }

    fn single(&mut self, v: &Value, ty: Ty, path: &str) {
        match ty {
            Ty::Any => {}
            Ty::Str if !v.is_string() => self.bad_value(path, "TYPE_STRING", v),
            Ty::Bytes if !v.is_string() => self.bad_value(path, "TYPE_BYTES", v),
            Ty::Bool if !v.is_boolean() => self.bad_value(path, "TYPE_BOOL", v),
            Ty::Float => {
                let ok = v.is_number()
                    || v.as_str()
                        .is_some_and(|s| s.trim().parse::<f64>().is_ok_and(f64::is_finite));
                if !ok {
                    self.bad_value(path, "TYPE_FLOAT", v);
                }
            }
            Ty::Int => {
                let ok = v.is_i64()
                    || v.is_u64()
                    || v.as_f64().is_some_and(|x| x.fract() == 0.0)
                    || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok());
                if !ok {
                    self.bad_value(path, "TYPE_INT32", v);
                }
            }
            Ty::Enum(name, values) => {
                let ok = match v {
                    Value::String(s) => values.iter().any(|x| x.eq_ignore_ascii_case(s)),
                    Value::Number(n) => n.as_u64().is_some_and(|i| (i as usize) < values.len()),
                    _ => false,
                };
                if !ok {
                    let url = self.type_url(name);
                    self.bad_value(path, &url, v);
                }
            }
            Ty::Msg(m) => self.msg(v, m, path),
            Ty::Struct if !v.is_object() => {
                self.bad_value(path, "type.googleapis.com/google.protobuf.Struct", v)
            }
            Ty::Map(m) => match v {
                Value::Object(o) => {
                    for (i, (_, val)) in o.iter().enumerate() {
                        self.msg(val, m, &format!("{path}[{i}].value"));
                    }
                }
                _ => self.bad_value(path, "TYPE_MESSAGE", v),
            },
            _ => {}
        }
    }
}

fn proto_prefix(route: &Route) -> String {
    match route.flavor {
        Flavor::Studio => format!("google.ai.generativelanguage.{}", route.version),
        Flavor::Vertex => format!("google.cloud.aiplatform.{}", route.version),
    }
}

fn check_proto(v: &Value, m: &'static Msg, route: &Route) -> R<()> {
    let mut w = Walk {
        prefix: proto_prefix(route),
        violations: Vec::new(),
    };
    w.msg(v, m, "");
    if w.violations.is_empty() {
        Ok(())
    } else {
        Err(bad_request(&w.violations))
    }
}

// ---------------------------------------------------------------------------
// Accessors (camelCase or snake_case, null = absent)

fn get<'a>(o: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    o.get(camel)
        .or_else(|| o.get(&to_snake(camel)))
        .filter(|v| !v.is_null())
}

fn obj<'a>(o: &'a Map<String, Value>, camel: &str) -> Option<&'a Map<String, Value>> {
    get(o, camel).and_then(Value::as_object)
}

/// A repeated field: an array, or a single value.
fn list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
    }
}

fn num(o: &Map<String, Value>, camel: &str) -> Option<f64> {
    get(o, camel).and_then(|v| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn int(o: &Map<String, Value>, camel: &str) -> Option<i64> {
    num(o, camel).map(|x| x as i64)
}

fn string<'a>(o: &'a Map<String, Value>, camel: &str) -> Option<&'a str> {
    get(o, camel).and_then(Value::as_str)
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

// ---------------------------------------------------------------------------
// Request model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    User,
    Model,
}

enum PartK<'a> {
    Text(&'a str),
    Thought,
    Media { image: bool },
    Call { name: &'a str, args: &'a Value },
    Response { name: &'a str, response: &'a Value },
    Other,
}

impl PartK<'_> {
    fn tokens(&self) -> u64 {
        match self {
            PartK::Text(t) => u64::from(count_tokens(t)),
            PartK::Thought | PartK::Other => 0,
            PartK::Media { .. } => MEDIA_TOKENS,
            PartK::Call { name, args } => {
                u64::from(count_tokens(name)) + u64::from(count_tokens(&args.to_string()))
            }
            PartK::Response { name, response } => {
                u64::from(count_tokens(name)) + u64::from(count_tokens(&response.to_string()))
            }
        }
    }
}

struct Turn<'a> {
    role: Role,
    parts: Vec<PartK<'a>>,
}

impl Turn<'_> {
    fn calls(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p, PartK::Call { .. }))
            .count()
    }

    fn responses(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p, PartK::Response { .. }))
            .count()
    }
}

struct FnDecl<'a> {
    name: &'a str,
    schema: Option<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Any,
    None,
}

struct Ask<'a> {
    model: &'a str,
    turns: Vec<Turn<'a>>,
    prompt_tokens: u64,
    tools: Vec<FnDecl<'a>>,
    mode: Mode,
    allowed: Vec<&'a str>,
    stop: Vec<String>,
    mime: Option<String>,
    schema: Option<Value>,
    n: usize,
    max_tokens: Option<u64>,
    thinking: bool,
    include_thoughts: bool,
}

/// Lowercases OpenAPI `type` values (`OBJECT` → `object`) so
/// [`crate::schema`] can read a Gemini schema.
fn normalize_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let x = match (k.as_str(), x) {
                        ("type", Value::String(s)) => Value::String(s.to_ascii_lowercase()),
                        _ => normalize_schema(x),
                    };
                    (to_camel(k), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize_schema).collect()),
        x => x.clone(),
    }
}

fn parse_content<'a>(
    c: &'a Value,
    path: &str,
    req: &str,
    flavor: Flavor,
    system: bool,
) -> R<Turn<'a>> {
    let Some(o) = c.as_object() else {
        return Err(field_error(req, path, "must be a Content object"));
    };
    let role = match c.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("model") => Role::Model,
        None | Some("") if system || flavor == Flavor::Studio => Role::User,
        _ if system => Role::User,
        _ => {
            return Err(GoogleError::invalid(
                "Please use a valid role: user, model.",
            ))
        }
    };
    let parts = list(get(o, "parts"));
    if parts.is_empty() {
        return Err(field_error(
            req,
            &format!("{path}.parts"),
            "contents.parts must not be empty.",
        ));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let Some(po) = p.as_object() else {
            continue;
        };
        let thought = get(po, "thought").and_then(Value::as_bool) == Some(true);
        let kind = if let Some(t) = string(po, "text") {
            if t.is_empty() && !thought {
                return Err(GoogleError::invalid(
                    "Unable to submit request because it has an empty text parameter. Add a value to the parameter and try again. Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/send-multimodal-prompts",
                ));
            }
            if thought {
                PartK::Thought
            } else {
                PartK::Text(t)
            }
        } else if let Some(d) = obj(po, "inlineData").or_else(|| obj(po, "fileData")) {
            let image = string(d, "mimeType").is_some_and(|m| m.starts_with("image/"));
            PartK::Media { image }
        } else if let Some(fc) = obj(po, "functionCall") {
            PartK::Call {
                name: string(fc, "name").unwrap_or(""),
                args: get(fc, "args").unwrap_or(&Value::Null),
            }
        } else if let Some(fr) = obj(po, "functionResponse") {
            PartK::Response {
                name: string(fr, "name").unwrap_or(""),
                response: get(fr, "response").unwrap_or(&Value::Null),
            }
        } else if get(po, "executableCode").is_some() || get(po, "codeExecutionResult").is_some() {
            PartK::Other
        } else {
            return Err(field_error(
                req,
                &format!("{path}.parts[{j}].data"),
                "required oneof field 'data' must have one initialized field",
            ));
        };
        out.push(kind);
    }
    Ok(Turn { role, parts: out })
}

fn check_turn_order(turns: &[Turn<'_>]) -> R<()> {
    for (i, t) in turns.iter().enumerate() {
        let prev = i.checked_sub(1).map(|k| &turns[k]);
        if t.responses() > 0 {
            match prev {
                Some(p) if p.role == Role::Model && p.calls() > 0 => {
                    if p.calls() != t.responses() {
                        return Err(GoogleError::invalid("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn."));
                    }
                }
                _ => {
                    return Err(GoogleError::invalid(
                        "Please ensure that function response turn comes immediately after a function call turn.",
                    ))
                }
            }
        }
        if t.role == Role::Model && t.calls() > 0 {
            match prev {
                Some(p) if p.role == Role::User => {}
                _ => {
                    return Err(GoogleError::invalid("Please ensure that function call turn comes immediately after a user turn or after a function response turn."))
                }
            }
        }
    }
    Ok(())
}

fn valid_function_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

/// Range check with AI Studio's or Vertex's wording.
fn range_error(
    flavor: Flavor,
    req: &str,
    path: &str,
    camel: &str,
    x: f64,
    lo: f64,
    hi: f64,
) -> GoogleError {
    match flavor {
        Flavor::Vertex => GoogleError::invalid(format!(
            "Unable to submit request because it has a {camel} value of {} but the supported range is from {} (inclusive) to {} (exclusive). Update the value and try again.",
            fmt_num(x),
            fmt_num(lo),
            fmt_num(if hi.fract() == 0.0 { hi + 1.0 } else { hi + 0.0001 })
        )),
        Flavor::Studio => field_error(
            req,
            path,
            &format!(
                "{} must be in the range [{}, {}].",
                to_snake(camel),
                fmt_num(lo),
                fmt_num(hi)
            ),
        ),
    }
}

/// Semantic checks and extraction of a (structurally valid) generate
/// request. `base` is the path of the request inside the body (empty, or
/// `generate_content_request` for countTokens).
fn parse_generate<'a>(
    o: &'a Map<String, Value>,
    route: &Route,
    req: &str,
    base: &str,
    model: &'a str,
) -> R<Ask<'a>> {
    let flavor = route.flavor;
    let contents = list(get(o, "contents"));
    if contents.is_empty() {
        return Err(field_error(
            req,
            &join(base, "contents"),
            "contents is not specified",
        ));
    }
    let mut turns = Vec::with_capacity(contents.len());
    for (i, c) in contents.iter().enumerate() {
        turns.push(parse_content(
            c,
            &format!("{}[{i}]", join(base, "contents")),
            req,
            flavor,
            false,
        )?);
    }
    check_turn_order(&turns)?;
    let mut prompt_tokens: u64 = turns
        .iter()
        .flat_map(|t| t.parts.iter())
        .map(PartK::tokens)
        .sum();
    if let Some(sys) = get(o, "systemInstruction") {
        if let Ok(t) = parse_content(sys, &join(base, "system_instruction"), req, flavor, true) {
            prompt_tokens += t.parts.iter().map(PartK::tokens).sum::<u64>();
        }
    }

    let mut tools = Vec::new();
    for (ti, tool) in list(get(o, "tools")).into_iter().enumerate() {
        let Some(to) = tool.as_object() else { continue };
        for (di, d) in list(get(to, "functionDeclarations"))
            .into_iter()
            .enumerate()
        {
            let Some(d) = d.as_object() else { continue };
            let name = string(d, "name").unwrap_or("");
            if !valid_function_name(name) {
                return Err(field_error(
                    req,
                    &format!(
                        "{}[{ti}].function_declarations[{di}].name",
                        join(base, "tools")
                    ),
                    "Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.",
                ));
            }
            let schema = get(d, "parametersJsonSchema")
                .cloned()
                .or_else(|| get(d, "parameters").map(normalize_schema));
            let tokens = u64::from(count_tokens(name))
                + string(d, "description").map_or(0, |s| u64::from(count_tokens(s)))
                + schema
                    .as_ref()
                    .map_or(0, |s| u64::from(count_tokens(&s.to_string())));
            prompt_tokens += tokens;
            tools.push(FnDecl { name, schema });
        }
    }
    let fcc = obj(o, "toolConfig").and_then(|t| obj(t, "functionCallingConfig"));
    let mode = match fcc
        .and_then(|c| string(c, "mode"))
        .map(str::to_ascii_uppercase)
    {
        Some(m) if m == "ANY" || m == "VALIDATED" => Mode::Any,
        Some(m) if m == "NONE" => Mode::None,
        _ => Mode::Auto,
    };
    let allowed: Vec<&str> = fcc
        .map(|c| list(get(c, "allowedFunctionNames")))
        .unwrap_or_default()
        .into_iter()
        .filter_map(Value::as_str)
        .collect();

    let gc_path = join(base, "generation_config");
    let empty = Map::new();
    let gc = obj(o, "generationConfig").unwrap_or(&empty);
    if let Some(t) = num(gc, "temperature") {
        if !(0.0..=2.0).contains(&t) {
            return Err(range_error(
                flavor,
                req,
                &format!("{gc_path}.temperature"),
                "temperature",
                t,
                0.0,
                2.0,
            ));
        }
    }
    if let Some(p) = num(gc, "topP") {
        if !(0.0..=1.0).contains(&p) {
            return Err(range_error(
                flavor,
                req,
                &format!("{gc_path}.top_p"),
                "topP",
                p,
                0.0,
                1.0,
            ));
        }
    }
    let n = int(gc, "candidateCount").unwrap_or(1);
    if !(1..=MAX_CANDIDATES).contains(&n) {
        return Err(range_error(
            flavor,
            req,
            &format!("{gc_path}.candidate_count"),
            "candidateCount",
            n as f64,
            1.0,
            MAX_CANDIDATES as f64,
        ));
    }
    let max_tokens = match int(gc, "maxOutputTokens") {
        Some(m) if m < 1 => {
            return Err(match flavor {
                Flavor::Vertex => {
                    range_error(flavor, req, "", "maxOutputTokens", m as f64, 1.0, 65536.0)
                }
                Flavor::Studio => field_error(
                    req,
                    &format!("{gc_path}.max_output_tokens"),
                    "max_output_tokens must be positive.",
                ),
            })
        }
        m => m.map(|m| m as u64),
    };
    let mime = string(gc, "responseMimeType").map(str::to_string);
    if let Some(m) = &mime {
        if !RESPONSE_MIME_TYPES.contains(&m.as_str()) {
            return Err(field_error(
                req,
                &format!("{gc_path}.response_mime_type"),
                "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.",
            ));
        }
    }
    let schema = get(gc, "responseJsonSchema")
        .cloned()
        .or_else(|| get(gc, "responseSchema").map(normalize_schema));
    if schema.is_some()
        && !matches!(
            mime.as_deref(),
            Some("application/json") | Some("text/x.enum")
        )
    {
        return Err(field_error(
            req,
            &format!("{gc_path}.response_schema"),
            "response_mime_type must be `application/json` or `text/x.enum` when response_schema is set.",
        ));
    }
    let stop: Vec<String> = list(get(gc, "stopSequences"))
        .into_iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let tc = obj(gc, "thinkingConfig");
    let include_thoughts = tc
        .and_then(|t| get(t, "includeThoughts"))
        .and_then(Value::as_bool)
        == Some(true);
    let budget = tc.and_then(|t| int(t, "thinkingBudget"));
    let level = tc.and_then(|t| string(t, "thinkingLevel"));
    let thinking = include_thoughts
        || budget.is_some_and(|b| b > 0 || b == -1)
        || level.is_some_and(|l| !l.eq_ignore_ascii_case("THINKING_LEVEL_UNSPECIFIED"));

    Ok(Ask {
        model,
        turns,
        prompt_tokens,
        tools,
        mode,
        allowed,
        stop,
        mime,
        schema,
        n: n as usize,
        max_tokens,
        thinking,
        include_thoughts,
    })
}

// ---------------------------------------------------------------------------
// Answer

enum OutPart {
    Thought(String),
    Text(String),
    Call {
        name: String,
        args: Value,
        signature: Option<String>,
    },
}

impl OutPart {
    fn json(&self) -> Value {
        match self {
            OutPart::Thought(t) => json!({ "text": t, "thought": true }),
            OutPart::Text(t) => json!({ "text": t }),
            OutPart::Call {
                name,
                args,
                signature,
            } => {
                let mut m = Map::new();
                m.insert("functionCall".into(), json!({ "name": name, "args": args }));
                if let Some(s) = signature {
                    m.insert("thoughtSignature".into(), Value::from(s.as_str()));
                }
                Value::Object(m)
            }
        }
    }

    fn tokens(&self) -> u64 {
        match self {
            OutPart::Thought(_) => 0,
            OutPart::Text(t) => u64::from(count_tokens(t)),
            OutPart::Call { name, args, .. } => {
                u64::from(count_tokens(name)) + u64::from(count_tokens(&args.to_string()))
            }
        }
    }
}

struct Cand {
    parts: Vec<OutPart>,
    finish: &'static str,
}

struct Answer {
    blocked: bool,
    cands: Vec<Cand>,
    thoughts_tokens: u64,
}

impl Answer {
    fn candidates_tokens(&self) -> u64 {
        self.cands
            .iter()
            .flat_map(|c| c.parts.iter())
            .map(OutPart::tokens)
            .sum()
    }
}

fn image_suffix(images: usize) -> String {
    match images {
        0 => String::new(),
        1 => " [1 image]".to_string(),
        n => format!(" [{n} images]"),
    }
}

fn thought_signature(seed: u64) -> String {
    let mut rng = text::SplitMix64(seed ^ 0x7468_6f75_6768_7473);
    let mut bytes = Vec::with_capacity(48);
    for _ in 0..6 {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn answer(a: &Ask<'_>, provider: &str, seed: u64, beh: &Behavior) -> Answer {
    if beh.block {
        return Answer {
            blocked: true,
            cands: Vec::new(),
            thoughts_tokens: 0,
        };
    }
    let last_user = a.turns.iter().rev().find(|t| t.role == Role::User);
    let mut user_text = Vec::new();
    let mut results = Vec::new();
    let mut images = 0;
    for p in last_user.map(|t| t.parts.as_slice()).unwrap_or_default() {
        match p {
            PartK::Text(t) => user_text.push((*t).to_string()),
            PartK::Media { image: true } => images += 1,
            PartK::Response { response, .. } => results.push(response.to_string()),
            _ => {}
        }
    }
    let user_text = user_text.join(" ");
    let result_text = results.join(" ");
    let has_results = !results.is_empty();

    let about = if has_results {
        &result_text
    } else {
        &user_text
    };
    let thought_text = format!("Mock reasoning about: {}", first_chars(about, 200));
    let thoughts_tokens = if a.thinking {
        u64::from(count_tokens(&thought_text))
    } else {
        0
    };

    let call = !a.tools.is_empty()
        && match a.mode {
            Mode::None => false,
            Mode::Auto => !has_results,
            Mode::Any => true,
        };
    let mut cands = Vec::with_capacity(a.n);
    for i in 0..a.n {
        let mut parts = Vec::new();
        if a.include_thoughts {
            parts.push(OutPart::Thought(thought_text.clone()));
        }
        if beh.safety {
            cands.push(Cand {
                parts: Vec::new(),
                finish: "SAFETY",
            });
            continue;
        }
        if call {
            let target = match (a.mode, a.allowed.first()) {
                (Mode::Any, Some(name)) => a.tools.iter().find(|t| t.name == *name),
                _ => None,
            }
            .unwrap_or(&a.tools[0]);
            let args = match &target.schema {
                Some(s) => crate::schema::generate(s, true),
                None => Value::Object(Map::new()),
            };
            let args = if args.is_object() {
                args
            } else {
                Value::Object(Map::new())
            };
            parts.push(OutPart::Call {
                name: target.name.to_string(),
                args,
                signature: a.thinking.then(|| thought_signature(seed ^ (i as u64 + 1))),
            });
            cands.push(Cand {
                parts,
                finish: "STOP",
            });
            continue;
        }
        let base = match beh.bytes {
            Some(n) => text::filler(n),
            None if has_results => {
                format!("Tool result received: {}", first_chars(&result_text, 200))
            }
            None => format!(
                "Hello from the mock {provider} model {}. You said: {}{}",
                a.model,
                first_chars(&user_text, 200),
                image_suffix(images)
            ),
        };
        let base = if a.n > 1 {
            format!("{base} (candidate {i})")
        } else {
            base
        };
        let mut reply = match a.mime.as_deref() {
            Some("application/json") => match &a.schema {
                Some(s) => crate::schema::generate(s, false).to_string(),
                None => json!({ "reply": base }).to_string(),
            },
            Some("text/x.enum") => match a
                .schema
                .as_ref()
                .and_then(|s| s.get("enum"))
                .and_then(Value::as_array)
                .and_then(|e| e.first())
                .and_then(Value::as_str)
            {
                Some(e) => e.to_string(),
                None => base,
            },
            _ => base,
        };
        let mut finish = "STOP";
        if let Some(pos) = a
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| reply.find(s.as_str()))
            .min()
        {
            reply.truncate(pos);
        }
        if let Some(max) = a.max_tokens {
            let (cut, was_cut) = text::cut_to_tokens(&reply, max.saturating_sub(thoughts_tokens));
            if was_cut {
                reply = cut;
                finish = "MAX_TOKENS";
            }
        }
        if !reply.is_empty() {
            parts.push(OutPart::Text(reply));
        }
        cands.push(Cand { parts, finish });
    }
    Answer {
        blocked: false,
        cands,
        thoughts_tokens,
    }
}

fn safety_ratings(blocked: bool) -> Value {
    let rating = |cat: &str, prob: &str, b: bool| {
        let mut m = Map::new();
        m.insert("category".into(), Value::from(cat));
        m.insert("probability".into(), Value::from(prob));
        if b {
            m.insert("blocked".into(), Value::Bool(true));
        }
        Value::Object(m)
    };
    json!([
        rating("HARM_CATEGORY_SEXUALLY_EXPLICIT", "NEGLIGIBLE", false),
        rating("HARM_CATEGORY_HATE_SPEECH", "NEGLIGIBLE", false),
        rating("HARM_CATEGORY_HARASSMENT", "NEGLIGIBLE", false),
        rating(
            "HARM_CATEGORY_DANGEROUS_CONTENT",
            if blocked { "HIGH" } else { "NEGLIGIBLE" },
            blocked
        ),
    ])
}

// ---------------------------------------------------------------------------
// Response JSON

struct Meta<'a> {
    flavor: Flavor,
    model: &'a str,
    response_id: &'a str,
    create_time: &'a str,
}

fn usage(flavor: Flavor, prompt: u64, candidates: u64, thoughts: Option<u64>) -> Value {
    let mut m = Map::new();
    m.insert("promptTokenCount".into(), Value::from(prompt));
    if candidates > 0 {
        m.insert("candidatesTokenCount".into(), Value::from(candidates));
    }
    m.insert(
        "totalTokenCount".into(),
        Value::from(prompt + candidates + thoughts.unwrap_or(0)),
    );
    if let Some(t) = thoughts {
        m.insert("thoughtsTokenCount".into(), Value::from(t));
    }
    m.insert(
        "promptTokensDetails".into(),
        json!([{ "modality": "TEXT", "tokenCount": prompt }]),
    );
    if flavor == Flavor::Vertex {
        if candidates > 0 {
            m.insert(
                "candidatesTokensDetails".into(),
                json!([{ "modality": "TEXT", "tokenCount": candidates }]),
            );
        }
        m.insert("trafficType".into(), Value::from("ON_DEMAND"));
    }
    Value::Object(m)
}

fn envelope(meta: &Meta<'_>, candidates: Option<Vec<Value>>, usage: Value) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(c) = candidates {
        m.insert("candidates".into(), Value::Array(c));
    }
    m.insert("usageMetadata".into(), usage);
    m.insert("modelVersion".into(), Value::from(meta.model));
    if meta.flavor == Flavor::Vertex {
        m.insert("createTime".into(), Value::from(meta.create_time));
    }
    m.insert("responseId".into(), Value::from(meta.response_id));
    m
}

fn candidate_json(index: usize, parts: Vec<Value>, finish: Option<&str>) -> Value {
    let mut c = Map::new();
    if !parts.is_empty() || finish != Some("SAFETY") {
        let mut content = Map::new();
        if !parts.is_empty() {
            content.insert("parts".into(), Value::Array(parts));
        }
        content.insert("role".into(), Value::from("model"));
        c.insert("content".into(), Value::Object(content));
    }
    if let Some(f) = finish {
        c.insert("finishReason".into(), Value::from(f));
        if f == "SAFETY" {
            c.insert("safetyRatings".into(), safety_ratings(true));
        }
    }
    c.insert("index".into(), Value::from(index));
    Value::Object(c)
}

fn blocked_json(meta: &Meta<'_>, prompt: u64) -> Value {
    let mut m = envelope(meta, None, usage(meta.flavor, prompt, 0, None));
    m.insert(
        "promptFeedback".into(),
        json!({ "blockReason": "SAFETY", "safetyRatings": safety_ratings(true) }),
    );
    Value::Object(m)
}

fn full_json(meta: &Meta<'_>, ans: &Answer, prompt: u64, thinking: bool) -> Value {
    if ans.blocked {
        return blocked_json(meta, prompt);
    }
    let cands = ans
        .cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            candidate_json(
                i,
                c.parts.iter().map(OutPart::json).collect(),
                Some(c.finish),
            )
        })
        .collect();
    Value::Object(envelope(
        meta,
        Some(cands),
        usage(
            meta.flavor,
            prompt,
            ans.candidates_tokens(),
            thinking.then_some(ans.thoughts_tokens),
        ),
    ))
}

/// Stream pieces of one candidate: `(part, tokens)` in order.
fn pieces(c: &Cand, chunks: Option<usize>) -> Vec<OutPart> {
    let mut out = Vec::new();
    for p in &c.parts {
        match p {
            OutPart::Thought(t) => out.extend(
                text::split_words(t)
                    .into_iter()
                    .map(|w| OutPart::Thought(w.to_string())),
            ),
            OutPart::Text(t) => {
                let words: Vec<String> = match chunks {
                    Some(n) => text::split_into(t, n),
                    None => text::split_words(t)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                };
                out.extend(words.into_iter().map(OutPart::Text));
            }
            OutPart::Call {
                name,
                args,
                signature,
            } => out.push(OutPart::Call {
                name: name.clone(),
                args: args.clone(),
                signature: signature.clone(),
            }),
        }
    }
    out
}

/// The stream chunks (each a `GenerateContentResponse`): candidate pieces
/// interleaved, cumulative `usageMetadata` on every chunk, `finishReason`
/// on each candidate's last piece.
fn stream_chunks(
    meta: &Meta<'_>,
    ans: &Answer,
    prompt: u64,
    thinking: bool,
    beh: &Behavior,
) -> Vec<Value> {
    if ans.blocked {
        return vec![blocked_json(meta, prompt)];
    }
    let mut per: Vec<Vec<OutPart>> = ans.cands.iter().map(|c| pieces(c, beh.chunks)).collect();
    if beh.safety {
        // Half of a normal reply, then the SAFETY stop.
        for (p, c) in per.iter_mut().zip(&ans.cands) {
            if c.finish == "SAFETY" && p.iter().all(|x| matches!(x, OutPart::Thought(_))) {
                let words = text::split_words("I can certainly help with that request, here is");
                p.extend(words.into_iter().map(|w| OutPart::Text(w.to_string())));
            }
        }
    }
    let rounds = per.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut out = Vec::with_capacity(rounds + 1);
    let mut cand_tokens = 0;
    for k in 0..rounds {
        let mut cands = Vec::new();
        for (i, (p, c)) in per.iter().zip(&ans.cands).enumerate() {
            let last = k + 1 == p.len().max(1);
            let finish = (last && c.finish != "SAFETY").then_some(c.finish);
            match p.get(k) {
                Some(piece) => {
                    cand_tokens += piece.tokens();
                    cands.push(candidate_json(i, vec![piece.json()], finish));
                }
                None if k == 0 => cands.push(candidate_json(i, Vec::new(), finish)),
                None => {}
            }
        }
        // Thinking happens before the answer: its tokens are billed from
        // the first chunk on.
        let thoughts = thinking.then_some(ans.thoughts_tokens);
        out.push(Value::Object(envelope(
            meta,
            Some(cands),
            usage(meta.flavor, prompt, cand_tokens, thoughts),
        )));
    }
    if beh.safety {
        let cands = ans
            .cands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.finish == "SAFETY")
            .map(|(i, _)| candidate_json(i, Vec::new(), Some("SAFETY")))
            .collect();
        out.push(Value::Object(envelope(
            meta,
            Some(cands),
            usage(
                meta.flavor,
                prompt,
                cand_tokens,
                thinking.then_some(ans.thoughts_tokens),
            ),
        )));
    }
    if beh.nodone {
        if let Some(Value::Object(last)) = out.last_mut() {
            if let Some(Value::Array(cs)) = last.get_mut("candidates") {
                for c in cs {
                    if let Some(o) = c.as_object_mut() {
                        o.remove("finishReason");
                        o.remove("safetyRatings");
                    }
                }
            }
        }
    }
    out
}

fn stream_response(chunks: Vec<Value>, sse: bool) -> Response<Body> {
    let n = chunks.len();
    let mut events: VecDeque<Bytes> = VecDeque::with_capacity(n + 1);
    for (i, c) in chunks.iter().enumerate() {
        let mut buf = Vec::with_capacity(256);
        if sse {
            buf.extend_from_slice(b"data: ");
            let _ = serde_json::to_writer(&mut buf, c);
            buf.extend_from_slice(b"\r\n\r\n");
        } else {
            buf.extend_from_slice(if i == 0 { b"[" } else { b",\r\n" });
            let _ = serde_json::to_writer(&mut buf, c);
            if i + 1 == n {
                buf.extend_from_slice(b"]");
            }
        }
        events.push_back(Bytes::from(buf));
    }
    let mut resp = Response::new(Body::events(events));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if sse {
            "text/event-stream"
        } else {
            "application/json; charset=UTF-8"
        }),
    );
    resp
}

// ---------------------------------------------------------------------------
// Embeddings

/// The vector for `text` with `dims` of a model of size `full`.
/// `gemini-embedding-*` vectors are normalised at full size only (shorter
/// ones are the raw prefix, as Google documents); the others are the
/// re-normalised prefix.
fn embed_vector(model: &str, text_in: &str, dims: usize, full: usize) -> Vec<f32> {
    if full == GEMINI_EMBEDDING_DIMS && dims < full {
        let mut v = text::embedding(text_in.as_bytes(), full);
        v.truncate(dims);
        v
    } else {
        let _ = model;
        text::embedding(text_in.as_bytes(), dims)
    }
}

fn content_text(v: Option<&Value>) -> String {
    let Some(o) = v.and_then(Value::as_object) else {
        return String::new();
    };
    list(get(o, "parts"))
        .into_iter()
        .filter_map(|p| p.as_object().and_then(|p| string(p, "text")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn dims_for(o: &Map<String, Value>, key: &str, full: usize, req: &str, path: &str) -> R<usize> {
    match int(o, key) {
        None => Ok(full),
        Some(d) if d >= 1 && d as usize <= full => Ok(d as usize),
        Some(_) => Err(field_error(
            req,
            path,
            &format!("Output dimensionality must be between 1 and {full}."),
        )),
    }
}

fn embed_one(
    o: &Map<String, Value>,
    route: &Route,
    full: usize,
    req: &str,
    path: &str,
) -> R<Value> {
    let content = get(o, "content");
    let parts = content
        .and_then(Value::as_object)
        .map(|c| list(get(c, "parts")))
        .unwrap_or_default();
    if parts.is_empty() {
        return Err(field_error(
            req,
            &join(path, "content.parts"),
            "contents.parts must not be empty.",
        ));
    }
    let dims = dims_for(
        o,
        "outputDimensionality",
        full,
        req,
        &join(path, "output_dimensionality"),
    )?;
    let t = content_text(content);
    Ok(json!({ "values": embed_vector(&route.model, &t, dims, full) }))
}

fn strip_models(m: &str) -> &str {
    m.strip_prefix("models/").unwrap_or(m)
}

fn embed(v: &Value, route: &Route) -> R<Value> {
    let full = embedding_dims(&route.model, route.flavor).unwrap_or(DEFAULT_EMBEDDING_DIMS);
    let o = v.as_object().cloned().unwrap_or_default();
    match route.op {
        Op::Embed => {
            let e = embed_one(&o, route, full, "EmbedContentRequest", "")?;
            Ok(json!({ "embedding": e }))
        }
        _ => {
            let reqs = list(get(&o, "requests"));
            if reqs.is_empty() {
                return Err(field_error(
                    "BatchEmbedContentsRequest",
                    "requests",
                    "requests is not specified",
                ));
            }
            let mut out = Vec::with_capacity(reqs.len());
            for (i, r) in reqs.iter().enumerate() {
                let ro = r.as_object().cloned().unwrap_or_default();
                let path = format!("requests[{i}]");
                match string(&ro, "model") {
                    Some(m) if strip_models(m) == strip_models(&route.model) => {}
                    Some(m) => {
                        return Err(field_error(
                            "BatchEmbedContentsRequest",
                            &format!("{path}.model"),
                            &format!(
                                "Model names should match the batch request model name: models/{}, got: {m}",
                                strip_models(&route.model)
                            ),
                        ))
                    }
                    None => {
                        return Err(field_error(
                            "BatchEmbedContentsRequest",
                            &format!("{path}.model"),
                            "model is not specified",
                        ))
                    }
                }
                out.push(embed_one(
                    &ro,
                    route,
                    full,
                    "BatchEmbedContentsRequest",
                    &path,
                )?);
            }
            Ok(json!({ "embeddings": out }))
        }
    }
}

/// Vertex `:predict` for text embedding models.
fn predict(v: &Value, route: &Route) -> R<Value> {
    let full = embedding_dims(&route.model, route.flavor).unwrap_or(DEFAULT_EMBEDDING_DIMS);
    let instances = list(v.get("instances"));
    if instances.is_empty() {
        return Err(GoogleError::invalid(
            "Unable to submit request because it has no instances. Add at least one instance and try again.",
        ));
    }
    let params = v.get("parameters").and_then(Value::as_object);
    let dims = match params {
        Some(p) => match int(p, "outputDimensionality") {
            None => full,
            Some(d) if d >= 1 && d as usize <= full => d as usize,
            Some(d) => {
                return Err(GoogleError::invalid(format!(
                    "Unable to submit request because it has an outputDimensionality value of {d} but the supported range is from 1 (inclusive) to {} (exclusive). Update the value and try again.",
                    full + 1
                )))
            }
        },
        None => full,
    };
    let mut preds = Vec::with_capacity(instances.len());
    let mut chars = 0usize;
    for (i, inst) in instances.iter().enumerate() {
        let Some(content) = inst.get("content").and_then(Value::as_str) else {
            return Err(GoogleError::invalid(format!(
                "Unable to submit request because instances[{i}] is missing the required `content` field. Add the field and try again."
            )));
        };
        chars += content.chars().filter(|c| !c.is_whitespace()).count();
        preds.push(json!({
            "embeddings": {
                "statistics": { "truncated": false, "token_count": count_tokens(content) },
                "values": embed_vector(&route.model, content, dims, full),
            }
        }));
    }
    Ok(json!({
        "predictions": preds,
        "metadata": { "billableCharacterCount": chars },
    }))
}

// ---------------------------------------------------------------------------
// Models list (AI Studio)

fn model_json(name: &str) -> Value {
    let embedding = name.contains("embedding");
    let methods: Vec<&str> = if embedding {
        vec!["embedContent", "batchEmbedContents", "countTokens"]
    } else {
        vec![
            "generateContent",
            "streamGenerateContent",
            "countTokens",
            "createCachedContent",
            "batchGenerateContent",
        ]
    };
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": name,
        "description": format!("Mock {name}"),
        "inputTokenLimit": if embedding { 2048 } else { 1_048_576 },
        "outputTokenLimit": if embedding { 1 } else { 65_536 },
        "supportedGenerationMethods": methods,
    })
}

const LISTED_MODELS: &[&str] = &[
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "text-embedding-004",
    "gemini-embedding-001",
];

// ---------------------------------------------------------------------------
// Auth

fn studio_key<'a>(ctx: &'a Ctx<'_>) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(k) = ctx
        .headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Some(k.into());
    }
    ctx.query_param("key")
        .filter(|k| !k.is_empty())
        .map(|k| crate::sigv4::percent_decode(k).into())
}

fn check_auth(ctx: &Ctx<'_>, route: &Route) -> Option<GoogleError> {
    let state: &State = ctx.state;
    match route.flavor {
        Flavor::Studio => {
            if let Some(key) = studio_key(ctx) {
                if state.config.gemini_keys.iter().any(|k| k == key.as_ref()) {
                    return None;
                }
                return Some(
                    GoogleError::invalid("API key not valid. Please pass a valid API key.")
                        .with(error_info(
                            "API_KEY_INVALID",
                            "generativelanguage.googleapis.com",
                            None,
                        ))
                        .with(json!({
                            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                            "locale": "en-US",
                            "message": "API key not valid. Please pass a valid API key.",
                        })),
                );
            }
            match bearer(ctx.headers) {
                // OAuth access tokens work on the Gemini API too.
                Some(t) if state.config.vertex_tokens.iter().any(|k| k == t) => None,
                Some(_) => Some(invalid_credentials("generativelanguage.googleapis.com", route)),
                None => Some(GoogleError::new(
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                )),
            }
        }
        Flavor::Vertex => match bearer(ctx.headers) {
            Some(t) if state.config.vertex_tokens.iter().any(|k| k == t) => None,
            Some(_) => Some(invalid_credentials("aiplatform.googleapis.com", route)),
            None if studio_key(ctx).is_some() => Some(
                GoogleError::new(
                    401,
                    "API keys are not supported by this API. Expected OAuth2 access token or other authentication credentials that assert a principal. See https://cloud.google.com/docs/authentication",
                )
                .with(error_info(
                    "CREDENTIALS_MISSING",
                    "aiplatform.googleapis.com",
                    Some(&vertex_method(route)),
                )),
            ),
            None => Some(
                GoogleError::new(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                )
                .with(error_info(
                    "CREDENTIALS_MISSING",
                    "aiplatform.googleapis.com",
                    Some(&vertex_method(route)),
                )),
            ),
        },
    }
}

fn vertex_method(route: &Route) -> String {
    format!(
        "google.cloud.aiplatform.{}.PredictionService.{}",
        route.version,
        route.op.rpc()
    )
}

fn invalid_credentials(service: &str, route: &Route) -> GoogleError {
    let method = match route.flavor {
        Flavor::Vertex => vertex_method(route),
        Flavor::Studio => format!(
            "google.ai.generativelanguage.{}.GenerativeService.{}",
            route.version,
            route.op.rpc()
        ),
    };
    GoogleError::new(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    )
    .with(error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", service, Some(&method)))
}

// ---------------------------------------------------------------------------
// Faults

/// The error body for `fail=STATUS`.
fn fault_error(status: u16, route: &Route) -> GoogleError {
    match status {
        400 => GoogleError::invalid("Request contains an invalid argument."),
        401 => invalid_credentials(
            match route.flavor {
                Flavor::Studio => "generativelanguage.googleapis.com",
                Flavor::Vertex => "aiplatform.googleapis.com",
            },
            route,
        ),
        403 => GoogleError::new(403, "The caller does not have permission"),
        404 => model_not_found(route),
        429 => quota_error(route, 1.0),
        500 => GoogleError::new(
            500,
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        ),
        503 => GoogleError::new(503, "The model is overloaded. Please try again later."),
        504 => GoogleError::new(504, "Deadline expired before operation could complete."),
        s => GoogleError::new(
            s,
            StatusCode::from_u16(s)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("Error"),
        ),
    }
}

/// 429 `RESOURCE_EXHAUSTED` (with `RetryInfo` on AI Studio).
fn quota_error(route: &Route, secs: f64) -> GoogleError {
    match route.flavor {
        Flavor::Vertex => GoogleError::new(
            429,
            "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
        ),
        Flavor::Studio => {
            let delay = format!("{}s", secs.ceil().max(0.0) as u64);
            GoogleError::new(
                429,
                format!("You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. Please retry in {}s.", fmt_num(secs)),
            )
            .with(json!({
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    "quotaDimensions": { "location": "global", "model": strip_models(&route.model) },
                    "quotaValue": "10",
                }],
            }))
            .with(json!({
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }],
            }))
            .with(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": delay,
            }))
        }
    }
}

// ---------------------------------------------------------------------------
// Handler

/// The text that may carry `[[mock:...]]` markers: the last user content
/// (text parts and function responses), or the embedding inputs.
pub fn request_text(v: &Value) -> String {
    let mut out = String::new();
    let contents = v
        .get("contents")
        .or_else(|| {
            v.get("generateContentRequest")
                .and_then(|g| g.get("contents"))
        })
        .or_else(|| {
            v.get("generate_content_request")
                .and_then(|g| g.get("contents"))
        });
    let turns = list(contents);
    if let Some(last) = turns
        .iter()
        .rev()
        .find(|c| matches!(c.get("role").and_then(Value::as_str), None | Some("user")))
    {
        for p in list(last.get("parts")) {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                out.push_str(t);
                out.push(' ');
            }
            if let Some(r) = p
                .get("functionResponse")
                .or_else(|| p.get("function_response"))
            {
                out.push_str(&r.to_string());
            }
        }
    }
    if let Some(c) = v.get("content") {
        out.push_str(&content_text(Some(c)));
    }
    for r in list(v.get("requests")) {
        out.push_str(&content_text(r.get("content")));
        out.push('\n');
    }
    for i in list(v.get("instances")) {
        if let Some(c) = i.get("content").and_then(Value::as_str) {
            out.push_str(c);
            out.push('\n');
        }
    }
    out
}

fn add_headers(mut resp: Response<Body>, started: Instant) -> Response<Body> {
    let h = resp.headers_mut();
    set(h, "server", "scaffolding on HTTPServer2");
    set(h, "x-content-type-options", "nosniff");
    set(h, "vary", "Origin, X-Origin, Referer");
    set(
        h,
        "server-timing",
        &format!("gfet4t7; dur={}", started.elapsed().as_millis()),
    );
    resp
}

/// Serves AI Studio (`Provider::Gemini`) and Vertex AI (`Provider::Vertex`).
pub async fn handle(ctx: Ctx<'_>, provider: Provider) -> Response<Body> {
    let started = Instant::now();
    let flavor = if provider == Provider::Vertex {
        Flavor::Vertex
    } else {
        Flavor::Studio
    };
    let Some(route) = parse_route(ctx.sub, flavor) else {
        return not_found_page(ctx.path);
    };
    let want = match route.op {
        Op::ListModels | Op::GetModel => Method::GET,
        _ => Method::POST,
    };
    if *ctx.method != want {
        return not_found_page(ctx.path);
    }
    let json: Option<Result<Value, serde_json::Error>> =
        (want == Method::POST).then(|| serde_json::from_slice(ctx.body));
    let mut beh = ctx.behavior((!route.model.is_empty()).then_some(route.model.as_str()));
    if let Some(Ok(v)) = &json {
        if Behavior::may_contain_marker(ctx.body) {
            beh.apply_markers(&request_text(v));
        }
    }
    if let Some(d) = beh.stall {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = beh.html {
        return html_response(status);
    }
    let resp = 'resp: {
        if let Some(e) = check_auth(&ctx, &route) {
            break 'resp e.into_response();
        }
        if let Some(secs) = beh.throttle {
            break 'resp quota_error(&route, secs).into_response();
        }
        if let Some(status) = beh.fail {
            break 'resp fault_error(status, &route).into_response();
        }
        match serve(&ctx, &route, json, &beh) {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    };
    beh.shape(add_headers(resp, started))
}

fn serve(
    ctx: &Ctx<'_>,
    route: &Route,
    json: Option<Result<Value, serde_json::Error>>,
    beh: &Behavior,
) -> R<Response<Body>> {
    if route.op == Op::ListModels {
        let models: Vec<Value> = LISTED_MODELS.iter().map(|m| model_json(m)).collect();
        return Ok(json_response(StatusCode::OK, &json!({ "models": models })));
    }
    if route.op == Op::GetModel {
        check_model(route)?;
        return Ok(json_response(
            StatusCode::OK,
            &model_json(strip_models(&route.model)),
        ));
    }
    let v = match json {
        Some(Ok(v)) => v,
        _ => {
            let shown = String::from_utf8_lossy(&ctx.body[..ctx.body.len().min(64)]).into_owned();
            return Err(bad_request(&[(
                String::new(),
                format!("Invalid JSON payload received. Unexpected token.\n{shown}\n^"),
            )]));
        }
    };
    let msg: &'static Msg = match route.op {
        Op::Generate | Op::Stream => &GENERATE_REQUEST,
        Op::Count => &COUNT_REQUEST,
        Op::Embed => &EMBED_REQUEST,
        Op::BatchEmbed => &BATCH_EMBED_REQUEST,
        _ => &PREDICT_REQUEST,
    };
    check_proto(&v, msg, route)?;
    check_model(route)?;
    let seed = text::fnv1a(ctx.body);
    match route.op {
        Op::Embed | Op::BatchEmbed => Ok(json_response(StatusCode::OK, &embed(&v, route)?)),
        Op::Predict => Ok(json_response(StatusCode::OK, &predict(&v, route)?)),
        Op::Count => {
            let o = v.as_object().cloned().unwrap_or_default();
            let (inner, base) = match obj(&o, "generateContentRequest") {
                Some(g) => (g.clone(), "generate_content_request"),
                None => (o.clone(), ""),
            };
            let ask = parse_generate(&inner, route, "CountTokensRequest", base, &route.model)?;
            let total = ask.prompt_tokens;
            let mut out = json!({
                "totalTokens": total,
                "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": total }],
            });
            if route.flavor == Flavor::Vertex {
                let chars: usize = request_text(&v)
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .count();
                out["totalBillableCharacters"] = Value::from(chars);
            }
            Ok(json_response(StatusCode::OK, &out))
        }
        _ => {
            let o = v.as_object().cloned().unwrap_or_default();
            let model = strip_models(&route.model).to_string();
            let ask = parse_generate(&o, route, "GenerateContentRequest", "", &model)?;
            let provider = match route.flavor {
                Flavor::Studio => "gemini",
                Flavor::Vertex => "vertex",
            };
            let ans = answer(&ask, provider, seed, beh);
            let response_id = text::base62_id(seed ^ 0x7265_7370, 23);
            let create_time = crate::anthropic::rfc3339(now_unix());
            let meta = Meta {
                flavor: route.flavor,
                model: &model,
                response_id: &response_id,
                create_time: &create_time,
            };
            if route.op == Op::Stream && !beh.badjson {
                let sse = ctx.query_param("alt") == Some("sse");
                let chunks = stream_chunks(&meta, &ans, ask.prompt_tokens, ask.thinking, beh);
                return Ok(stream_response(chunks, sse));
            }
            Ok(json_response(
                StatusCode::OK,
                &full_json(&meta, &ans, ask.prompt_tokens, ask.thinking),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = parse_route(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Flavor::Studio,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.op), ("gemini-2.5-flash", Op::Generate));
        assert!(parse_route("/v1beta/models/x:bogus", Flavor::Studio).is_none());
        let r = parse_route(
            "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict",
            Flavor::Vertex,
        )
        .unwrap();
        assert_eq!(
            (r.project.as_str(), r.location.as_str()),
            ("p", "us-central1")
        );
        assert_eq!(r.op, Op::Predict);
        assert!(is_studio_v1_method(
            "/v1/models/gemini-2.0-flash:generateContent"
        ));
        assert!(!is_studio_v1_method("/v1/models/ft:gpt-4o:acme::abc"));
        assert!(!is_studio_v1_method("/v1/models/gpt-4o"));
    }

    #[test]
    fn case_conversions() {
        assert_eq!(to_camel("system_instruction"), "systemInstruction");
        assert_eq!(to_snake("functionDeclarations"), "function_declarations");
        assert_eq!(to_camel("text"), "text");
    }

    #[test]
    fn proto_violations() {
        let route = parse_route(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Flavor::Studio,
        )
        .unwrap();
        let v = json!({
            "contents": [{"parts": [{"text": "hi", "bogus": 1}]}],
            "generationConfig": {"temperature": "hot", "maxOutputTokens": "12"},
            "stream": true
        });
        let e = check_proto(&v, &GENERATE_REQUEST, &route).unwrap_err();
        assert!(
            e.message
                .contains("Unknown name \"bogus\" at 'contents[0].parts[0]': Cannot find field."),
            "{}",
            e.message
        );
        assert!(e
            .message
            .contains("Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\""));
        assert!(e
            .message
            .contains("Unknown name \"stream\": Cannot find field."));
        assert!(!e.message.contains("max_output_tokens"));
    }
}
