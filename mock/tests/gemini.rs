//! Gemini API (AI Studio) and Vertex AI: auth, request checks, answers,
//! tools, SSE streams, embeddings, countTokens and fault knobs.

mod common;

use common::{json, Mock};
use llm_mock::Config;
use serde_json::{json, Value};

const KEY: &str = "mock-gemini-key";
const TOKEN: &str = "mock-vertex-token";
const MODEL: &str = "gemini-2.5-flash";
const VERTEX: &str = "/v1/projects/proj-1/locations/us-central1/publishers/google/models";

fn gen_path(model: &str, method: &str) -> String {
    format!("/v1beta/models/{model}:{method}")
}

fn vertex_path(model: &str, method: &str) -> String {
    format!("{VERTEX}/{model}:{method}")
}

async fn studio(m: &Mock, path: &str, extra: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut h = vec![("x-goog-api-key", KEY)];
    h.extend_from_slice(extra);
    json(m.post(path, &h, body.to_string()).await).await
}

async fn generate(m: &Mock, body: &Value) -> (u16, Value) {
    studio(m, &gen_path(MODEL, "generateContent"), &[], body).await
}

async fn vertex(m: &Mock, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    json(
        m.post(path, &[("authorization", &auth)], body.to_string())
            .await,
    )
    .await
}

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

fn req(text: &str) -> Value {
    json!({"contents": [user(text)]})
}

fn reply_text(v: &Value, cand: usize) -> String {
    v["candidates"][cand]["content"]["parts"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str())
        .collect()
}

fn weather_tool() -> Value {
    json!({"functionDeclarations": [{
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "OBJECT",
                       "properties": {"city": {"type": "STRING"}, "unit": {"type": "STRING", "enum": ["c", "f"]}},
                       "required": ["city"]}
    }, {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
    }]})
}

async fn expect_400(m: &Mock, body: &Value, message: &str) -> Value {
    let (s, v) = generate(m, body).await;
    assert_eq!(s, 400, "{body} -> {v}");
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["message"], message, "{body}");
    v
}

/// The JSON payloads of an SSE body, checking the `data: ...\r\n\r\n` framing.
fn sse_events(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    body.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn stream_text(events: &[Value], cand: u64) -> String {
    events
        .iter()
        .flat_map(|e| e["candidates"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == cand)
        .flat_map(|c| {
            c["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect()
}

async fn sse(m: &Mock, behavior: &str, body: &Value) -> Vec<Value> {
    let path = format!("{}?alt=sse", gen_path(MODEL, "streamGenerateContent"));
    let r = m
        .post(
            &path,
            &[("x-goog-api-key", KEY), ("x-mock-behavior", behavior)],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    sse_events(&r.text().await.unwrap())
}

// ---------------------------------------------------------------------------
// Auth and routing

#[tokio::test]
async fn studio_auth() {
    let m = Mock::start().await;
    let path = gen_path(MODEL, "generateContent");
    // Missing key.
    let (s, v) = json(m.post(&path, &[], req("x").to_string()).await).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Method doesn't allow unregistered callers"));
    // Wrong key: 400 INVALID_ARGUMENT with ErrorInfo API_KEY_INVALID.
    let (s, v) = json(
        m.post(&path, &[("x-goog-api-key", "nope")], req("x").to_string())
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "API key not valid. Please pass a valid API key."
    );
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");
    assert_eq!(
        v["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    // ?key= works.
    let (s, _) = json(
        m.post(&format!("{path}?key={KEY}"), &[], req("x").to_string())
            .await,
    )
    .await;
    assert_eq!(s, 200);
    // Custom keys.
    let m2 = Mock::with(Config {
        gemini_keys: vec!["g-1".into(), "g-2".into()],
        ..Config::default()
    })
    .await;
    let (s, _) = json(
        m2.post(&path, &[("x-goog-api-key", "g-2")], req("x").to_string())
            .await,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = json(
        m2.post(&path, &[("x-goog-api-key", KEY)], req("x").to_string())
            .await,
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn vertex_auth() {
    let m = Mock::start().await;
    let path = vertex_path(MODEL, "generateContent");
    let (s, v) = json(m.post(&path, &[], req("x").to_string()).await).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request is missing required authentication credential."));
    assert_eq!(v["error"]["details"][0]["reason"], "CREDENTIALS_MISSING");
    let (s, v) = json(
        m.post(
            &path,
            &[("authorization", "Bearer ya29.wrong")],
            req("x").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request had invalid authentication credentials."));
    let (s, v) = json(
        m.post(&path, &[("x-goog-api-key", KEY)], req("x").to_string())
            .await,
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("API keys are not supported by this API."));
    let (s, v) = vertex(&m, &path, &req("hello")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        reply_text(&v, 0),
        "Hello from the mock vertex model gemini-2.5-flash. You said: hello"
    );
    assert_eq!(v["usageMetadata"]["trafficType"], "ON_DEMAND");
    assert!(v["createTime"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn routing_and_models() {
    let m = Mock::start().await;
    // AI Studio v1 with a method suffix goes to Gemini; plain /v1/models stays OpenAI.
    let (s, v) = studio(
        &m,
        "/v1/models/gemini-2.0-flash:generateContent",
        &[],
        &req("hi"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["modelVersion"], "gemini-2.0-flash");
    let r = m
        .get("/v1/models", &[("authorization", "Bearer sk-mock-openai")])
        .await;
    let (s, v) = json(r).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    // List and get.
    let (s, v) = json(m.get("/v1beta/models", &[("x-goog-api-key", KEY)]).await).await;
    assert_eq!(s, 200);
    assert!(v["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "models/gemini-2.5-flash"));
    let (s, v) = json(
        m.get(
            "/v1beta/models/text-embedding-004",
            &[("x-goog-api-key", KEY)],
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["supportedGenerationMethods"][0], "embedContent");
    // Unknown path: Google's HTML 404.
    let r = m
        .post(
            "/v1beta/models/gemini-2.5-flash:bogus",
            &[("x-goog-api-key", KEY)],
            "{}",
        )
        .await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("That’s an error."));
    // The /gemini prefix works too.
    let (s, _) = studio(
        &m,
        &format!("/gemini{}", gen_path(MODEL, "generateContent")),
        &[],
        &req("x"),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn unknown_models() {
    let m = Mock::start().await;
    let (s, v) = studio(&m, &gen_path("gpt-4o", "generateContent"), &[], &req("x")).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["status"], "NOT_FOUND");
    assert_eq!(
        v["error"]["message"],
        "models/gpt-4o is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
    );
    // An embedding model cannot generate.
    let (s, v) = studio(
        &m,
        &gen_path("text-embedding-004", "streamGenerateContent"),
        &[],
        &req("x"),
    )
    .await;
    assert_eq!(s, 404);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not supported for streamGenerateContent"));
    let (s, v) = vertex(&m, &vertex_path("claude-x", "generateContent"), &req("x")).await;
    assert_eq!(s, 404);
    assert_eq!(
        v["error"]["message"],
        "Publisher Model `projects/proj-1/locations/us-central1/publishers/google/models/claude-x` was not found or your project does not have access to it. Please ensure you are using a valid model version. For more information, see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
    );
}

// ---------------------------------------------------------------------------
// Request checks

#[tokio::test]
async fn proto_parse_errors() {
    let m = Mock::start().await;
    let v = expect_400(
        &m,
        &json!({"contents": [user("x")], "stream": true}),
        "Invalid JSON payload received. Unknown name \"stream\": Cannot find field.",
    )
    .await;
    assert_eq!(
        v["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert!(v["error"]["details"][0]["fieldViolations"][0]
        .get("field")
        .is_none());
    let v = expect_400(
        &m,
        &json!({"contents": [{"role": "user", "parts": [{"text": "x", "type": "text"}]}]}),
        "Invalid JSON payload received. Unknown name \"type\" at 'contents[0].parts[0]': Cannot find field.",
    )
    .await;
    assert_eq!(
        v["error"]["details"][0]["fieldViolations"][0]["field"],
        "contents[0].parts[0]"
    );
    // JSON Schema keywords the API does not know, inside a map value.
    expect_400(
        &m,
        &json!({"contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "string", "const": "x"}}}}]}]}),
        "Invalid JSON payload received. Unknown name \"const\" at 'tools[0].function_declarations[0].parameters.properties[0].value': Cannot find field.",
    )
    .await;
    // Scalar types, all violations together (in key order).
    let v = expect_400(
        &m,
        &json!({"contents": [user("x")], "generationConfig": {"temperature": "hot", "maxOutputTokens": 1.5, "candidateCount": true}}),
        "Invalid value at 'generation_config.candidate_count' (TYPE_INT32), true\nInvalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 1.5\nInvalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
    )
    .await;
    assert_eq!(
        v["error"]["details"][0]["fieldViolations"][2]["field"],
        "generation_config.temperature"
    );
    expect_400(
        &m,
        &json!({"contents": [user("x")], "safetySettings": [{"category": "HARM_CATEGORY_NOPE", "threshold": "BLOCK_NONE"}]}),
        "Invalid value at 'safety_settings[0].category' (type.googleapis.com/google.ai.generativelanguage.v1beta.HarmCategory), \"HARM_CATEGORY_NOPE\"",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("x")], "generationConfig": {"temperature": [1]}}),
        "Invalid JSON payload received. Unknown name \"temperature\" at 'generation_config': Proto field is not repeating, cannot start list.",
    )
    .await;
    // Numbers as strings, snake_case names and single values for repeated
    // fields are accepted, as the real parser accepts them.
    let (s, v) = generate(
        &m,
        &json!({"contents": {"role": "user", "parts": {"text": "hi"}},
                "system_instruction": {"parts": [{"text": "Be brief."}]},
                "generation_config": {"temperature": "0.5", "max_output_tokens": "64"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Malformed JSON.
    let r = m
        .post(
            &gen_path(MODEL, "generateContent"),
            &[("x-goog-api-key", KEY)],
            "{nope",
        )
        .await;
    let (s, v) = json(r).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON payload received. Unexpected token."));
}

#[tokio::test]
async fn semantic_checks() {
    let m = Mock::start().await;
    expect_400(
        &m,
        &json!({}),
        "* GenerateContentRequest.contents: contents is not specified\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": []}),
        "* GenerateContentRequest.contents: contents is not specified\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("a"), {"role": "model", "parts": []}]}),
        "* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [{"role": "user", "parts": [{"text": "a"}, {"thought": true}]}]}),
        "* GenerateContentRequest.contents[0].parts[1].data: required oneof field 'data' must have one initialized field\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}),
        "Please use a valid role: user, model.",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("a"), {"role": "assistant", "parts": [{"text": "x"}]}]}),
        "Please use a valid role: user, model.",
    )
    .await;
    // A function response must follow a function call turn...
    expect_400(
        &m,
        &json!({"contents": [user("a"), {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": true}}}]}]}),
        "Please ensure that function response turn comes immediately after a function call turn.",
    )
    .await;
    // ... with as many responses as calls ...
    expect_400(
        &m,
        &json!({"contents": [user("a"),
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "g", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": true}}}]}]}),
        "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.",
    )
    .await;
    // ... and a call turn must follow a user turn.
    expect_400(
        &m,
        &json!({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]}),
        "Please ensure that function call turn comes immediately after a user turn or after a function response turn.",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("a")], "tools": [{"functionDeclarations": [{"name": "bad name"}]}]}),
        "* GenerateContentRequest.tools[0].function_declarations[0].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("a")], "generationConfig": {"temperature": 3}}),
        "* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0, 2].\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("a")], "generationConfig": {"responseMimeType": "text/html"}}),
        "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n",
    )
    .await;
    expect_400(
        &m,
        &json!({"contents": [user("a")], "generationConfig": {"maxOutputTokens": 0}}),
        "* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be positive.\n",
    )
    .await;
    // Vertex requires a role and words ranges its own way.
    let (s, v) = vertex(
        &m,
        &vertex_path(MODEL, "generateContent"),
        &json!({"contents": [{"parts": [{"text": "x"}]}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "Please use a valid role: user, model."
    );
    let (s, v) = vertex(
        &m,
        &vertex_path(MODEL, "generateContent"),
        &json!({"contents": [user("x")], "generationConfig": {"candidateCount": 9}}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "Unable to submit request because it has a candidateCount value of 9 but the supported range is from 1 (inclusive) to 9 (exclusive). Update the value and try again."
    );
}

// ---------------------------------------------------------------------------
// Answers

#[tokio::test]
async fn basic_answer() {
    let m = Mock::start().await;
    let body = json!({"contents": [user("Hello, world!")],
                      "systemInstruction": {"parts": [{"text": "Be brief."}]}});
    let (s, v) = generate(&m, &body).await;
    assert_eq!(s, 200, "{v}");
    let text = "Hello from the mock gemini model gemini-2.5-flash. You said: Hello, world!";
    assert_eq!(reply_text(&v, 0), text);
    let c = &v["candidates"][0];
    assert_eq!(c["content"]["role"], "model");
    assert_eq!(c["finishReason"], "STOP");
    assert_eq!(c["index"], 0);
    // Prompt: "Hello, world!" (4) + "Be brief." (3).
    let u = &v["usageMetadata"];
    assert_eq!(u["promptTokenCount"], 7);
    let out = llm_mock::text::count_tokens(text) as u64;
    assert_eq!(u["candidatesTokenCount"], out);
    assert_eq!(u["totalTokenCount"], 7 + out);
    assert!(u.get("thoughtsTokenCount").is_none());
    assert_eq!(v["modelVersion"], MODEL);
    // Deterministic: same body, same response id.
    let (_, v2) = generate(&m, &body).await;
    assert_eq!(v["responseId"], v2["responseId"]);
    assert_eq!(v["responseId"].as_str().unwrap().len(), 23);
    // Images are counted.
    let (_, v) = generate(
        &m,
        &json!({"contents": [{"role": "user", "parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}]}),
    )
    .await;
    assert!(reply_text(&v, 0).ends_with("You said: look [1 image]"));
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 1 + 258);
}

#[tokio::test]
async fn generation_config() {
    let m = Mock::start().await;
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("hi")], "generationConfig": {"candidateCount": 3}}),
    )
    .await;
    assert_eq!(v["candidates"].as_array().unwrap().len(), 3);
    for i in 0..3 {
        assert_eq!(v["candidates"][i]["index"], i);
        assert!(reply_text(&v, i).ends_with(&format!("(candidate {i})")));
    }
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("hi")], "generationConfig": {"stopSequences": ["mock"]}}),
    )
    .await;
    assert_eq!(reply_text(&v, 0), "Hello from the ");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("hi")], "generationConfig": {"maxOutputTokens": 3}}),
    )
    .await;
    assert_eq!(reply_text(&v, 0), "Hello from the");
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    // JSON mode with an OpenAPI (uppercase) schema.
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("hi")], "generationConfig": {"responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER"}}, "required": ["name"]}}}),
    )
    .await;
    let parsed: Value = serde_json::from_str(&reply_text(&v, 0)).unwrap();
    assert_eq!(parsed, json!({"name": "mock", "age": 1}));
    let (_, v) = generate(&m, &json!({"contents": [user("hi")], "generationConfig": {"responseMimeType": "application/json"}})).await;
    let parsed: Value = serde_json::from_str(&reply_text(&v, 0)).unwrap();
    assert!(parsed["reply"]
        .as_str()
        .unwrap()
        .starts_with("Hello from the mock"));
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("hi")], "generationConfig": {"responseMimeType": "text/x.enum",
            "responseSchema": {"type": "STRING", "enum": ["red", "green"]}}}),
    )
    .await;
    assert_eq!(reply_text(&v, 0), "red");
}

#[tokio::test]
async fn thinking() {
    let m = Mock::start().await;
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("why")], "generationConfig": {"thinkingConfig": {"includeThoughts": true}}}),
    )
    .await;
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[0]["thought"], true);
    assert_eq!(parts[0]["text"], "Mock reasoning about: why");
    assert!(parts[1].get("thought").is_none());
    let u = &v["usageMetadata"];
    assert_eq!(u["thoughtsTokenCount"], 5);
    assert_eq!(
        u["totalTokenCount"].as_u64().unwrap(),
        u["promptTokenCount"].as_u64().unwrap() + u["candidatesTokenCount"].as_u64().unwrap() + 5
    );
    // A budget without includeThoughts: billed, not shown.
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("why")], "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}}),
    )
    .await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 5);
}

#[tokio::test]
async fn tools() {
    let m = Mock::start().await;
    let (s, v) = generate(
        &m,
        &json!({"contents": [user("weather?")], "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let part = &v["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert_eq!(part["functionCall"]["args"], json!({"city": "mock"}));
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        v["usageMetadata"]["candidatesTokenCount"],
        llm_mock::text::count_tokens("get_weather")
            + llm_mock::text::count_tokens(r#"{"city":"mock"}"#)
    );
    // ANY with allowedFunctionNames picks that function.
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("time?")], "tools": [weather_tool()],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}}),
    )
    .await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"tz": "mock"})
    );
    // NONE answers in text.
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("hi")], "tools": [weather_tool()],
                "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    )
    .await;
    assert!(reply_text(&v, 0).starts_with("Hello from the mock"));
    // A function response gets a text answer.
    let (s, v) = generate(
        &m,
        &json!({"contents": [user("weather?"),
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": "20C"}}}]}],
            "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(reply_text(&v, 0), r#"Tool result received: {"temp":"20C"}"#);
    // Thinking adds a thought signature to the call.
    let (_, v) = generate(
        &m,
        &json!({"contents": [user("weather?")], "tools": [weather_tool()],
                "generationConfig": {"thinkingConfig": {"thinkingBudget": -1}}}),
    )
    .await;
    assert!(v["candidates"][0]["content"]["parts"][0]["thoughtSignature"].is_string());
}

// ---------------------------------------------------------------------------
// Streams

#[tokio::test]
async fn sse_stream() {
    let m = Mock::start().await;
    let body = req("Stream me please");
    let (_, full) = generate(&m, &body).await;
    let events = sse(&m, "", &body).await;
    assert!(events.len() > 3);
    assert_eq!(stream_text(&events, 0), reply_text(&full, 0));
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"], full["usageMetadata"]);
    // Usage is cumulative; only the last chunk has a finish reason.
    let mut prev = 0;
    for e in &events[..events.len() - 1] {
        assert!(e["candidates"][0].get("finishReason").is_none());
        let c = e["usageMetadata"]["candidatesTokenCount"]
            .as_u64()
            .unwrap_or(0);
        assert!(c >= prev);
        prev = c;
        assert_eq!(e["modelVersion"], MODEL);
        assert_eq!(e["responseId"], events[0]["responseId"]);
    }
    // chunks=N and nodone.
    let events = sse(&m, "chunks=2", &body).await;
    assert_eq!(events.len(), 2);
    assert_eq!(stream_text(&events, 0), reply_text(&full, 0));
    let events = sse(&m, "nodone", &body).await;
    assert!(events
        .iter()
        .all(|e| e["candidates"][0].get("finishReason").is_none()));
    // Several candidates interleave.
    let events = sse(
        &m,
        "",
        &json!({"contents": [user("x")], "generationConfig": {"candidateCount": 2}}),
    )
    .await;
    assert!(stream_text(&events, 1).ends_with("(candidate 1)"));
    // Tools stream the call whole.
    let events = sse(
        &m,
        "",
        &json!({"contents": [user("w")], "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn json_array_stream_and_vertex_stream() {
    let m = Mock::start().await;
    let body = req("array please");
    let r = m
        .post(
            &gen_path(MODEL, "streamGenerateContent"),
            &[("x-goog-api-key", KEY)],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with('[') && text.ends_with(']'));
    let chunks: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(stream_text(&chunks, 0).ends_with("You said: array please"));
    let auth = format!("Bearer {TOKEN}");
    let r = m
        .post(
            &format!("{}?alt=sse", vertex_path(MODEL, "streamGenerateContent")),
            &[("authorization", &auth)],
            body.to_string(),
        )
        .await;
    let events = sse_events(&r.text().await.unwrap());
    assert!(stream_text(&events, 0).starts_with("Hello from the mock vertex model"));
    assert_eq!(
        events.last().unwrap()["usageMetadata"]["trafficType"],
        "ON_DEMAND"
    );
}

#[tokio::test]
async fn safety_knobs() {
    let m = Mock::start().await;
    let (s, v) = generate(&m, &req("bad [[mock:block]]")).await;
    assert_eq!(s, 200);
    assert!(v.get("candidates").is_none(), "{v}");
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0);
    let (_, v) = generate(&m, &req("bad [[mock:safety]]")).await;
    let c = &v["candidates"][0];
    assert_eq!(c["finishReason"], "SAFETY");
    assert!(c.get("content").is_none());
    assert_eq!(c["safetyRatings"][3]["blocked"], true);
    let events = sse(&m, "safety", &req("x")).await;
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "SAFETY");
    assert!(!stream_text(&events, 0).is_empty());
    let events = sse(&m, "block", &req("x")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["promptFeedback"]["blockReason"], "SAFETY");
}

// ---------------------------------------------------------------------------
// Embeddings and countTokens

fn norm(v: &[Value]) -> f64 {
    v.iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt()
}

#[tokio::test]
async fn embeddings() {
    let m = Mock::start().await;
    let content = json!({"parts": [{"text": "embed me"}]});
    let (s, v) = studio(
        &m,
        &gen_path("text-embedding-004", "embedContent"),
        &[],
        &json!({"content": content}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let values = v["embedding"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 768);
    assert!((norm(values) - 1.0).abs() < 1e-3);
    let (_, full) = studio(
        &m,
        &gen_path("gemini-embedding-001", "embedContent"),
        &[],
        &json!({"content": content, "taskType": "RETRIEVAL_DOCUMENT"}),
    )
    .await;
    let full = full["embedding"]["values"].as_array().unwrap().clone();
    assert_eq!(full.len(), 3072);
    let (_, short) = studio(
        &m,
        &gen_path("gemini-embedding-001", "embedContent"),
        &[],
        &json!({"content": content, "outputDimensionality": 256}),
    )
    .await;
    let short = short["embedding"]["values"].as_array().unwrap();
    // A truncated gemini-embedding-001 vector is the raw prefix (not normalised).
    assert_eq!(short.len(), 256);
    assert_eq!(short[..], full[..256]);
    assert!(norm(short) < 0.9);
    let (s, v) = studio(
        &m,
        &gen_path("text-embedding-004", "embedContent"),
        &[],
        &json!({"content": content, "outputDimensionality": 1000}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["message"], "* EmbedContentRequest.output_dimensionality: Output dimensionality must be between 1 and 768.\n");
    // Batch.
    let batch = json!({"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]});
    let (s, v) = studio(
        &m,
        &gen_path("text-embedding-004", "batchEmbedContents"),
        &[],
        &batch,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][1]["values"].as_array().unwrap().len(), 8);
    let bad = json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}}]});
    let (s, _) = studio(
        &m,
        &gen_path("text-embedding-004", "batchEmbedContents"),
        &[],
        &bad,
    )
    .await;
    assert_eq!(s, 400);
    // Embedding methods need an embedding model.
    let (s, _) = studio(
        &m,
        &gen_path(MODEL, "embedContent"),
        &[],
        &json!({"content": content}),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn vertex_predict() {
    let m = Mock::start().await;
    let body = json!({"instances": [{"content": "first text", "task_type": "RETRIEVAL_DOCUMENT"}, {"content": "second"}],
                      "parameters": {"outputDimensionality": 256}});
    let (s, v) = vertex(&m, &vertex_path("text-embedding-005", "predict"), &body).await;
    assert_eq!(s, 200, "{v}");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    assert_eq!(
        preds[0]["embeddings"]["values"].as_array().unwrap().len(),
        256
    );
    assert_eq!(preds[0]["embeddings"]["statistics"]["token_count"], 2);
    assert_eq!(preds[0]["embeddings"]["statistics"]["truncated"], false);
    assert_eq!(v["metadata"]["billableCharacterCount"], 15);
    let (_, v) = vertex(
        &m,
        &vertex_path("gemini-embedding-001", "predict"),
        &json!({"instances": [{"content": "x"}]}),
    )
    .await;
    assert_eq!(
        v["predictions"][0]["embeddings"]["values"]
            .as_array()
            .unwrap()
            .len(),
        3072
    );
    let (s, _) = vertex(
        &m,
        &vertex_path("text-embedding-005", "predict"),
        &json!({"instances": [{"text": "x"}]}),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn count_tokens() {
    let m = Mock::start().await;
    let body = json!({"contents": [user("Hello, world!")]});
    let (s, v) = studio(&m, &gen_path(MODEL, "countTokens"), &[], &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalTokens"], 4);
    let (_, g) = generate(&m, &body).await;
    assert_eq!(v["totalTokens"], g["usageMetadata"]["promptTokenCount"]);
    let (_, v) = studio(
        &m,
        &gen_path(MODEL, "countTokens"),
        &[],
        &json!({"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [user("Hello, world!")],
                                           "systemInstruction": {"parts": [{"text": "Be brief."}]}}}),
    )
    .await;
    assert_eq!(v["totalTokens"], 7);
    let (s, v) = studio(
        &m,
        &gen_path(MODEL, "countTokens"),
        &[],
        &json!({"contents": []}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "* CountTokensRequest.contents: contents is not specified\n"
    );
    let (s, v) = vertex(&m, &vertex_path(MODEL, "countTokens"), &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalTokens"], 4);
    assert_eq!(v["totalBillableCharacters"], 12);
}

// ---------------------------------------------------------------------------
// Faults and recording

#[tokio::test]
async fn faults() {
    let m = Mock::start().await;
    let (s, v) = studio(
        &m,
        &gen_path(MODEL, "generateContent"),
        &[("x-mock-behavior", "fail=503")],
        &req("x"),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["status"], "UNAVAILABLE");
    assert_eq!(
        v["error"]["message"],
        "The model is overloaded. Please try again later."
    );
    let (s, v) = generate(&m, &req("x [[mock:fail=500]]")).await;
    assert_eq!(s, 500);
    assert_eq!(v["error"]["status"], "INTERNAL");
    let (s, v) = generate(&m, &req("x [[mock:throttle=7]]")).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let retry = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
        .unwrap();
    assert_eq!(retry["retryDelay"], "7s");
    let (s, v) = vertex(
        &m,
        &vertex_path(MODEL, "generateContent"),
        &req("x [[mock:fail=429]]"),
    )
    .await;
    assert_eq!(s, 429);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Resource exhausted."));
    // Auth still comes first.
    let (s, _) = json(
        m.post(
            &gen_path(MODEL, "generateContent"),
            &[("x-mock-behavior", "fail=500")],
            req("x").to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    // html, badjson, cut.
    let r = m
        .post(
            &gen_path(MODEL, "generateContent"),
            &[("x-goog-api-key", KEY), ("x-mock-behavior", "html=502")],
            req("x").to_string(),
        )
        .await;
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = m
        .post(
            &format!("{}?alt=sse", gen_path(MODEL, "streamGenerateContent")),
            &[("x-goog-api-key", KEY), ("x-mock-behavior", "badjson")],
            req("x").to_string(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    let r = m
        .post(
            &format!("{}?alt=sse", gen_path(MODEL, "streamGenerateContent")),
            &[("x-goog-api-key", KEY), ("x-mock-behavior", "cut=2")],
            req("one two three four").to_string(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the connection is cut");
    let (_, v) = generate(&m, &req("[[mock:bytes=40]]")).await;
    assert_eq!(reply_text(&v, 0).len(), 40);
}

#[tokio::test]
async fn recorded() {
    let m = Mock::start().await;
    generate(&m, &req("a")).await;
    vertex(&m, &vertex_path(MODEL, "generateContent"), &req("b")).await;
    let (_, log) = json(m.get("/__mock/requests", &[]).await).await;
    let log = log.as_array().unwrap();
    assert_eq!(log[0]["provider"], "gemini");
    assert_eq!(log[0]["headers"]["x-goog-api-key"], KEY);
    assert_eq!(log[1]["provider"], "vertex");
    assert_eq!(log[1]["path"], vertex_path(MODEL, "generateContent"));
}

#[tokio::test]
async fn gce_metadata_token() {
    let m = Mock::with(Config {
        vertex_tokens: vec!["ya29.first".into(), "ya29.second".into()],
        ..Config::default()
    })
    .await;
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let r = m.get(path, &[]).await;
    assert_eq!(r.status().as_u16(), 403);
    let r = m.get(path, &[("metadata-flavor", "Google")]).await;
    assert_eq!(r.headers()["metadata-flavor"], "Google");
    let (status, v) = json(r).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"access_token": "ya29.first", "expires_in": 3599, "token_type": "Bearer"})
    );
    let r = m
        .get(
            "/computeMetadata/v1/instance/hostname",
            &[("metadata-flavor", "Google")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 404);
    let (_, recorded) = json(m.get("/__mock/requests", &[]).await).await;
    let n = recorded
        .as_array()
        .map(|a| a.iter().filter(|e| e["provider"] == "gce_metadata").count());
    assert_eq!(n, Some(3), "{recorded}");
}
