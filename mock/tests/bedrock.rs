//! Bedrock runtime: API-key and SigV4 auth, Converse validation and
//! answers, ConverseStream event-stream frames, tools, reasoning, Titan and
//! Cohere embeddings through InvokeModel, and fault knobs.

mod common;

use std::collections::HashMap;

use common::{json, Mock};
use llm_mock::sigv4::{format_amz_date, hex, hmac_sha256, sha256_hex};
use llm_mock::{now_unix, Config};
use serde_json::{json, Value};

const KEY: &str = "mock-bedrock-key";
const AKID: &str = "AKIDMOCKEXAMPLE";
const SECRET: &str = "mock/secret/EXAMPLEKEY";
/// An inference profile id: `:` must be sent percent-encoded.
const MODEL: &str = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";
const MODEL_ENC: &str = "us.anthropic.claude-3-5-sonnet-20241022-v2%3A0";

fn path(op: &str) -> String {
    format!("/model/{MODEL_ENC}/{op}")
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

fn assistant(content: Value) -> Value {
    json!({"role": "assistant", "content": content})
}

fn req(text: &str) -> Value {
    json!({"messages": [user(text)]})
}

fn weather_tools() -> Value {
    json!({"tools": [
        {"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                      "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}}},
        {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}}
    ]})
}

async fn call(m: &Mock, p: &str, extra: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let auth = format!("Bearer {KEY}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    m.post(p, &h, body.to_string()).await
}

async fn converse(m: &Mock, body: &Value) -> (u16, Value) {
    json(call(m, &path("converse"), &[], body).await).await
}

fn reply_text(v: &Value) -> String {
    v["output"]["message"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect()
}

/// Asserts a 400 ValidationException with exactly `message`.
async fn expect_validation(m: &Mock, body: &Value, message: &str) {
    let r = call(m, &path("converse"), &[], body).await;
    assert_eq!(r.status(), 400, "{body}");
    assert_eq!(
        r.headers()["x-amzn-errortype"],
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    );
    let (_, v) = json(r).await;
    assert_eq!(v["message"], message, "{body}");
}

// ---------------------------------------------------------------------------
// A small test-only SigV4 signer (client side, as botocore signs)

/// RFC 3986 unreserved characters pass, everything else is `%XX`.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Signer<'a> {
    key_id: &'a str,
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    amz_date: String,
    /// Encode each path segment again (the non-S3 rule). `false` signs the
    /// path as sent, the classic custom-signer bug.
    double_encode: bool,
}

impl Signer<'_> {
    fn new() -> Self {
        Signer {
            key_id: AKID,
            secret: SECRET,
            region: "us-east-1",
            service: "bedrock",
            amz_date: format_amz_date(now_unix()),
            double_encode: true,
        }
    }

    /// Headers to send for a POST of `body` to `sent_path` (already
    /// percent-encoded) on `host`; `content-type` is signed too.
    fn sign(&self, host: &str, sent_path: &str, body: &str) -> Vec<(String, String)> {
        let canonical_path = if self.double_encode {
            sent_path.split('/').map(enc).collect::<Vec<_>>().join("/")
        } else {
            sent_path.to_string()
        };
        let signed = "content-type;host;x-amz-date";
        let canonical = format!(
            "POST\n{canonical_path}\n\ncontent-type:application/json\nhost:{host}\nx-amz-date:{}\n\n{signed}\n{}",
            self.amz_date,
            sha256_hex(body.as_bytes())
        );
        let date = &self.amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            self.amz_date,
            sha256_hex(canonical.as_bytes())
        );
        let mut k = hmac_sha256(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        for part in [self.region, self.service, "aws4_request"] {
            k = hmac_sha256(&k, part.as_bytes());
        }
        let sig = hex(&hmac_sha256(&k, sts.as_bytes()));
        vec![
            ("x-amz-date".into(), self.amz_date.clone()),
            (
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}",
                    self.key_id
                ),
            ),
        ]
    }
}

async fn signed_post(
    m: &Mock,
    s: &Signer<'_>,
    host: Option<&str>,
    p: &str,
    body: &str,
    sent_body: Option<&str>,
) -> reqwest::Response {
    let real_host = host
        .map(str::to_string)
        .unwrap_or(m.server.addr.to_string());
    let headers = s.sign(&real_host, p, body);
    let mut r = m
        .client
        .post(m.url(p))
        .header("content-type", "application/json")
        .body(sent_body.unwrap_or(body).to_string());
    if let Some(h) = host {
        r = r.header("host", h);
    }
    for (k, v) in &headers {
        r = r.header(k, v);
    }
    r.send().await.unwrap()
}

async fn aws_error(r: reqwest::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (_, v) = json(r).await;
    (status, kind, v)
}

// ---------------------------------------------------------------------------
// An independent event-stream decoder

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[derive(Debug)]
struct Frame {
    headers: HashMap<String, String>,
    payload: Value,
}

impl Frame {
    fn event(&self) -> &str {
        self.headers
            .get(":event-type")
            .or_else(|| self.headers.get(":exception-type"))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Decodes every frame, checking both CRCs; `Err(i)` names the first bad frame.
fn decode(mut buf: &[u8]) -> Result<Vec<Frame>, usize> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let total = be(&buf[0..4]) as usize;
        let hlen = be(&buf[4..8]) as usize;
        if crc32(&buf[..8]) != be(&buf[8..12])
            || crc32(&buf[..total - 4]) != be(&buf[total - 4..total])
        {
            return Err(out.len());
        }
        let mut headers = HashMap::new();
        let mut i = 12;
        while i < 12 + hlen {
            let n = buf[i] as usize;
            let name = String::from_utf8(buf[i + 1..i + 1 + n].to_vec()).unwrap();
            i += 1 + n;
            assert_eq!(buf[i], 7, "string header");
            let len = u16::from_be_bytes([buf[i + 1], buf[i + 2]]) as usize;
            headers.insert(
                name,
                String::from_utf8(buf[i + 3..i + 3 + len].to_vec()).unwrap(),
            );
            i += 3 + len;
        }
        let payload = serde_json::from_slice(&buf[12 + hlen..total - 4]).unwrap();
        out.push(Frame { headers, payload });
        buf = &buf[total..];
    }
    Ok(out)
}

async fn stream(m: &Mock, behavior: &str, body: &Value) -> Result<Vec<Frame>, usize> {
    let r = call(
        m,
        &path("converse-stream"),
        &[("x-mock-behavior", behavior)],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    decode(&r.bytes().await.unwrap())
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(Frame::event).collect()
}

/// Concatenation of `delta.{key}[.sub]` over the frames of block `index`.
fn deltas(frames: &[Frame], index: u64, key: &str, sub: Option<&str>) -> String {
    frames
        .iter()
        .filter(|f| f.event() == "contentBlockDelta" && f.payload["contentBlockIndex"] == index)
        .filter_map(|f| {
            let d = &f.payload["delta"][key];
            match sub {
                Some(s) => d[s].as_str(),
                None => d.as_str(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn api_key_auth() {
    let m = Mock::start().await;
    let r = m.post(&path("converse"), &[], req("x").to_string()).await;
    let (s, kind, v) = aws_error(r).await;
    assert_eq!(s, 403);
    assert_eq!(
        kind,
        "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/"
    );
    assert_eq!(v, json!({"Message": "Authorization header is missing"}));
    let r = m
        .post(
            &path("converse"),
            &[("authorization", "Bearer wrong")],
            req("x").to_string(),
        )
        .await;
    let (s, kind, v) = aws_error(r).await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("AccessDeniedException:"));
    assert_eq!(
        v["Message"],
        "Authentication failed: Please make sure your API Key is valid."
    );
    let r = call(&m, &path("converse"), &[], &req("x")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-amzn-requestid"].len(), 36);
    let r = m
        .post(
            &path("converse"),
            &[("authorization", "Basic abc")],
            req("x").to_string(),
        )
        .await;
    let (s, kind, _) = aws_error(r).await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("IncompleteSignatureException:"));
    let m2 = Mock::with(Config {
        bedrock_api_keys: vec!["other".into()],
        ..Config::default()
    })
    .await;
    let r = m2
        .post(
            &path("converse"),
            &[("authorization", "Bearer other")],
            req("x").to_string(),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sigv4_accepts_a_correctly_signed_request() {
    let m = Mock::start().await;
    let body = req("signed hello").to_string();
    let r = signed_post(&m, &Signer::new(), None, &path("converse"), &body, None).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, v) = json(r).await;
    assert_eq!(
        reply_text(&v),
        format!("Hello from the mock bedrock model {MODEL}. You said: signed hello")
    );
    // An ARN (':' and '/' encoded) works the same way.
    let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-1-8b-instruct-v1%3A0";
    let p = format!("/model/{arn}/converse");
    let r = signed_post(&m, &Signer::new(), None, &p, &body, None).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A path sent with a raw ':' is signed with it encoded once.
    let r = signed_post(
        &m,
        &Signer::new(),
        None,
        &format!("/model/{MODEL}/converse"),
        &body,
        None,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // ConverseStream is signed the same way.
    let r = signed_post(
        &m,
        &Signer::new(),
        None,
        &path("converse-stream"),
        &body,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(decode(&r.bytes().await.unwrap()).is_ok());
    // The region in a bedrock-runtime Host must match the scope.
    let r = signed_post(
        &m,
        &Signer::new(),
        Some("bedrock-runtime.us-east-1.amazonaws.com"),
        &path("converse"),
        &body,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    // Custom credentials.
    let m2 = Mock::with(Config {
        aws_access_key_id: "AKIDOTHER".into(),
        aws_secret_access_key: "other-secret".into(),
        ..Config::default()
    })
    .await;
    let s = Signer {
        key_id: "AKIDOTHER",
        secret: "other-secret",
        ..Signer::new()
    };
    let r = signed_post(&m2, &s, None, &path("converse"), &body, None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sigv4_rejections() {
    let m = Mock::start().await;
    let body = req("x").to_string();
    let p = path("converse");
    // Signed over the path as sent (no second encoding): mismatch, and the
    // message shows the double-encoded canonical path.
    let single = Signer {
        double_encode: false,
        ..Signer::new()
    };
    let (s, kind, v) = aws_error(signed_post(&m, &single, None, &p, &body, None).await).await;
    assert_eq!(s, 403);
    assert_eq!(
        kind,
        "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"
    );
    let msg = v["message"].as_str().unwrap();
    assert!(msg.starts_with("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."));
    assert!(msg.contains("\n\nThe Canonical String for this request should have been\n'POST\n/model/us.anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse\n"), "{msg}");
    assert!(msg.contains("The String-to-Sign should have been\n'AWS4-HMAC-SHA256\n"));
    // Wrong secret.
    let wrong = Signer {
        secret: "nope",
        ..Signer::new()
    };
    let (s, kind, _) = aws_error(signed_post(&m, &wrong, None, &p, &body, None).await).await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("InvalidSignatureException:"));
    // Tampered body.
    let other = req("y").to_string();
    let (s, kind, _) =
        aws_error(signed_post(&m, &Signer::new(), None, &p, &body, Some(&other)).await).await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("InvalidSignatureException:"));
    // Unknown access key.
    let unknown = Signer {
        key_id: "AKIDUNKNOWN",
        ..Signer::new()
    };
    let (s, kind, v) = aws_error(signed_post(&m, &unknown, None, &p, &body, None).await).await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("UnrecognizedClientException:"));
    assert_eq!(
        v["message"],
        "The security token included in the request is invalid."
    );
    // Expired (10 minutes old) and from the future.
    let old = Signer {
        amz_date: format_amz_date(now_unix() - 600),
        ..Signer::new()
    };
    let (s, _, v) = aws_error(signed_post(&m, &old, None, &p, &body, None).await).await;
    assert_eq!(s, 403);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired: "),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().ends_with(" - 5 min.)"));
    let future = Signer {
        amz_date: format_amz_date(now_unix() + 600),
        ..Signer::new()
    };
    let (_, _, v) = aws_error(signed_post(&m, &future, None, &p, &body, None).await).await;
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("Signature not yet current: "));
    // Two minutes of skew is fine.
    let skewed = Signer {
        amz_date: format_amz_date(now_unix() - 120),
        ..Signer::new()
    };
    assert_eq!(
        signed_post(&m, &skewed, None, &p, &body, None)
            .await
            .status(),
        200
    );
    // Wrong service and wrong region for the host.
    let svc = Signer {
        service: "s3",
        ..Signer::new()
    };
    let (_, _, v) = aws_error(signed_post(&m, &svc, None, &p, &body, None).await).await;
    assert_eq!(
        v["message"],
        "Credential should be scoped to correct service: 'bedrock'. "
    );
    let (s, kind, v) = aws_error(
        signed_post(
            &m,
            &Signer::new(),
            Some("bedrock-runtime.eu-west-1.amazonaws.com"),
            &p,
            &body,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("InvalidSignatureException:"));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("Credential should be scoped to a valid region"));
    // Missing x-amz-date.
    let r = m
        .post(
            &p,
            &[("authorization", "AWS4-HMAC-SHA256 Credential=AKIDMOCKEXAMPLE/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00")],
            body.clone(),
        )
        .await;
    let (s, kind, _) = aws_error(r).await;
    assert_eq!(s, 403);
    assert!(kind.starts_with("IncompleteSignatureException:"));
}

// ---------------------------------------------------------------------------
// Converse

#[tokio::test]
async fn converse_validation() {
    let m = Mock::start().await;
    let alternate = "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.";
    expect_validation(&m, &json!({"messages": [user("a"), user("b")]}), alternate).await;
    let start = "A conversation must start with a user message. Try again with a conversation that starts with a user message.";
    expect_validation(
        &m,
        &json!({"messages": [assistant(json!([{"text": "a"}]))]}),
        start,
    )
    .await;
    expect_validation(&m, &json!({"messages": []}), start).await;
    expect_validation(
        &m,
        &json!({"messages": [{"role": "user", "content": []}]}),
        "The content field in the Message object at messages.0 is empty. Add a ContentBlock object to the content field and try again.",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [{"role": "user", "content": [{"text": "  "}]}]}),
        "The text field in the ContentBlock object at messages.0.content.0 is blank. Add text to the text field, and try again.",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [user("a"), {"role": "system", "content": [{"text": "x"}]}]}),
        "1 validation error detected: Value 'system' at 'messages.2.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [user("a")], "inferenceConfig": {"maxTokens": 0}}),
        "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [user("a")], "inferenceConfig": {"temperature": 1.5}}),
        "1 validation error detected: Value '1.5' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1",
    )
    .await;
    // Tool blocks need toolConfig, and results must answer the previous uses.
    let tool_use = assistant(
        json!([{"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]),
    );
    let result = |id: &str| json!({"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"text": "20C"}]}}]});
    expect_validation(
        &m,
        &json!({"messages": [user("a"), tool_use.clone(), result("tooluse_1")]}),
        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [user("a"), tool_use.clone(), result("tooluse_2")], "toolConfig": weather_tools()}),
        "The toolUseId tooluse_2 at messages.2.content.0.toolResult does not match any toolUse block of the previous turn.",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [user("a"), tool_use.clone(),
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "x"}]}}, {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "y"}]}}]}],
            "toolConfig": weather_tools()}),
        "The number of toolResult blocks at messages.2.content exceeds the number of toolUse blocks of previous turn.",
    )
    .await;
    expect_validation(
        &m,
        &json!({"messages": [user("a"), tool_use.clone(), user("no result")], "toolConfig": weather_tools()}),
        "Expected toolResult blocks at messages.2.content for the following Ids: tooluse_1",
    )
    .await;
    // Model ids.
    let r = call(&m, "/model/gpt-4o/converse", &[], &req("x")).await;
    let (s, _, v) = aws_error(r).await;
    assert_eq!(s, 400);
    assert_eq!(v["message"], "The provided model identifier is invalid.");
    let r = call(
        &m,
        "/model/amazon.titan-embed-text-v2%3A0/converse",
        &[],
        &req("x"),
    )
    .await;
    let (s, _, v) = aws_error(r).await;
    assert_eq!(s, 400);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("This action doesn't support the model"));
    // Wrong JSON types are serialization errors.
    let r = call(
        &m,
        &path("converse"),
        &[],
        &json!({"messages": [user("a")], "inferenceConfig": {"maxTokens": "ten"}}),
    )
    .await;
    let (s, kind, _) = aws_error(r).await;
    assert_eq!(s, 400);
    assert!(kind.starts_with("SerializationException:"));
    // Unknown path.
    let r = call(&m, &path("chat"), &[], &req("x")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn converse_answers() {
    let m = Mock::start().await;
    let body = json!({"messages": [user("Hello, world!")], "system": [{"text": "Be brief."}]});
    let (s, v) = converse(&m, &body).await;
    assert_eq!(s, 200, "{v}");
    let text = format!("Hello from the mock bedrock model {MODEL}. You said: Hello, world!");
    assert_eq!(reply_text(&v), text);
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert_eq!(v["stopReason"], "end_turn");
    let out = llm_mock::text::count_tokens(&text) as u64;
    // 3 + (4 + 4) + "Be brief." 3
    assert_eq!(
        v["usage"],
        json!({"inputTokens": 14, "outputTokens": out, "totalTokens": 14 + out})
    );
    assert!(v["metrics"]["latencyMs"].is_u64());
    // Stop sequences and max tokens.
    let (_, v) = converse(
        &m,
        &json!({"messages": [user("x")], "inferenceConfig": {"stopSequences": ["mock"]}}),
    )
    .await;
    assert_eq!(reply_text(&v), "Hello from the ");
    assert_eq!(v["stopReason"], "stop_sequence");
    assert_eq!(v["additionalModelResponseFields"]["stop_sequence"], "mock");
    let (_, v) = converse(
        &m,
        &json!({"messages": [user("x")], "inferenceConfig": {"maxTokens": 2}}),
    )
    .await;
    assert_eq!(reply_text(&v), "Hello from");
    assert_eq!(v["stopReason"], "max_tokens");
    // Images are counted and mentioned.
    let (_, v) = converse(
        &m,
        &json!({"messages": [{"role": "user", "content": [{"text": "see"}, {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]}]}),
    )
    .await;
    assert!(reply_text(&v).ends_with("You said: see [1 image]"));
    // Reasoning with Claude's thinking field.
    let (_, v) = converse(
        &m,
        &json!({"messages": [user("why")], "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}),
    )
    .await;
    let first = &v["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"];
    assert_eq!(first["text"], "Mock reasoning about: why");
    assert!(first["signature"].as_str().unwrap().len() > 20);
    assert!(v["output"]["message"]["content"][1]["text"].is_string());
}

#[tokio::test]
async fn converse_tools() {
    let m = Mock::start().await;
    let (s, v) = converse(
        &m,
        &json!({"messages": [user("weather?")], "toolConfig": weather_tools()}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stopReason"], "tool_use");
    let tu = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(tu["name"], "get_weather");
    assert_eq!(tu["input"], json!({"city": "mock"}));
    let id = tu["toolUseId"].as_str().unwrap().to_string();
    assert!(id.starts_with("tooluse_"));
    // Forced tool.
    let mut tc = weather_tools();
    tc["toolChoice"] = json!({"tool": {"name": "get_time"}});
    let (_, v) = converse(&m, &json!({"messages": [user("x")], "toolConfig": tc})).await;
    assert_eq!(
        v["output"]["message"]["content"][0]["toolUse"]["name"],
        "get_time"
    );
    // The result gets a text answer.
    let (s, v) = converse(
        &m,
        &json!({"messages": [user("weather?"),
            assistant(json!([{"toolUse": {"toolUseId": id, "name": "get_weather", "input": {"city": "mock"}}}])),
            {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"json": {"temp": "20C"}}]}}]}],
            "toolConfig": weather_tools()}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(reply_text(&v), r#"Tool result received: {"temp":"20C"}"#);
}

// ---------------------------------------------------------------------------
// ConverseStream

#[tokio::test]
async fn converse_stream_text() {
    let m = Mock::start().await;
    let body = req("Stream it");
    let (_, full) = converse(&m, &body).await;
    let frames = stream(&m, "", &body).await.expect("valid CRCs");
    let n = names(&frames);
    assert_eq!(n[0], "messageStart");
    assert_eq!(frames[0].payload["role"], "assistant");
    assert!(
        !n.contains(&"contentBlockStart"),
        "text blocks have no start event"
    );
    assert_eq!(
        &n[n.len() - 3..],
        ["contentBlockStop", "messageStop", "metadata"]
    );
    for f in &frames {
        assert_eq!(f.headers[":message-type"], "event");
        assert_eq!(f.headers[":content-type"], "application/json");
        assert!(f.payload["p"].is_string(), "padding field");
    }
    assert_eq!(deltas(&frames, 0, "text", None), reply_text(&full));
    let stop = &frames[frames.len() - 2].payload;
    assert_eq!(stop["stopReason"], "end_turn");
    let meta = &frames[frames.len() - 1].payload;
    assert_eq!(meta["usage"], full["usage"]);
    assert!(meta["metrics"]["latencyMs"].is_u64());
    // chunks=N.
    let frames = stream(&m, "chunks=3", &body).await.unwrap();
    assert_eq!(
        names(&frames)
            .iter()
            .filter(|e| **e == "contentBlockDelta")
            .count(),
        3
    );
    assert_eq!(deltas(&frames, 0, "text", None), reply_text(&full));
}

#[tokio::test]
async fn converse_stream_tools_and_reasoning() {
    let m = Mock::start().await;
    let body = json!({"messages": [user("weather?")], "toolConfig": weather_tools(),
                      "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}}});
    let (_, full) = converse(&m, &body).await;
    let frames = stream(&m, "", &body).await.unwrap();
    // Block 0: reasoning deltas then a signature.
    assert_eq!(
        deltas(&frames, 0, "reasoningContent", Some("text")),
        "Mock reasoning about: weather?"
    );
    assert_eq!(
        deltas(&frames, 0, "reasoningContent", Some("signature")),
        full["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]["signature"]
            .as_str()
            .unwrap()
    );
    // Block 1: a toolUse start, then input fragments that reassemble.
    let start = frames
        .iter()
        .find(|f| f.event() == "contentBlockStart")
        .unwrap();
    assert_eq!(start.payload["contentBlockIndex"], 1);
    let tu = &full["output"]["message"]["content"][1]["toolUse"];
    assert_eq!(
        start.payload["start"]["toolUse"]["toolUseId"],
        tu["toolUseId"]
    );
    assert_eq!(start.payload["start"]["toolUse"]["name"], "get_weather");
    let input: Value = serde_json::from_str(&deltas(&frames, 1, "toolUse", Some("input"))).unwrap();
    assert_eq!(input, tu["input"]);
    let stops: Vec<&Value> = frames
        .iter()
        .filter(|f| f.event() == "contentBlockStop")
        .map(|f| &f.payload["contentBlockIndex"])
        .collect();
    assert_eq!(stops, [&json!(0), &json!(1)]);
    let stop = frames.iter().find(|f| f.event() == "messageStop").unwrap();
    assert_eq!(stop.payload["stopReason"], "tool_use");
    assert_eq!(frames.last().unwrap().payload["usage"], full["usage"]);
}

#[tokio::test]
async fn converse_stream_faults() {
    let m = Mock::start().await;
    let body = req("one two three four five six seven");
    // A throttling exception mid-stream, then the end.
    let frames = stream(&m, "stream_exception=throttlingException", &body)
        .await
        .unwrap();
    let last = frames.last().unwrap();
    assert_eq!(last.headers[":message-type"], "exception");
    assert_eq!(last.headers[":exception-type"], "throttlingException");
    assert!(last.payload["message"]
        .as_str()
        .unwrap()
        .starts_with("Too many requests"));
    assert!(names(&frames).contains(&"contentBlockDelta"));
    assert!(!names(&frames).contains(&"messageStop"));
    // The marker form works too.
    let frames = stream(
        &m,
        "",
        &req("x [[mock:stream_exception=internalServerException]]"),
    )
    .await
    .unwrap();
    assert_eq!(
        frames.last().unwrap().headers[":exception-type"],
        "internalServerException"
    );
    // badcrc: the first delta frame fails its message CRC.
    let bad = stream(&m, "badcrc", &body).await.unwrap_err();
    assert_eq!(bad, 1);
    // nodone: no messageStop or metadata.
    let frames = stream(&m, "nodone", &body).await.unwrap();
    assert_eq!(names(&frames).last(), Some(&"contentBlockStop"));
    // cut=2: two frames, then the connection is aborted.
    let r = call(
        &m,
        &path("converse-stream"),
        &[("x-mock-behavior", "cut=2")],
        &body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err());
    // badjson: the non-stream body, cut in half.
    let r = call(
        &m,
        &path("converse-stream"),
        &[("x-mock-behavior", "badjson")],
        &body,
    )
    .await;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err());
}

#[tokio::test]
async fn http_faults() {
    let m = Mock::start().await;
    let (s, kind, v) = aws_error(
        call(
            &m,
            &path("converse"),
            &[("x-mock-behavior", "throttle=1")],
            &req("x"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(
        kind,
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    );
    assert_eq!(
        v["message"],
        "Too many requests, please wait before trying again."
    );
    let (s, kind, _) = aws_error(
        call(
            &m,
            &path("converse-stream"),
            &[],
            &req("x [[mock:fail=500]]"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 500);
    assert!(kind.starts_with("InternalServerException:"));
    let (s, kind, _) = aws_error(
        call(
            &m,
            &path("converse"),
            &[("x-mock-behavior", "fail=503")],
            &req("x"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 503);
    assert!(kind.starts_with("ServiceUnavailableException:"));
    // Auth comes before faults.
    let r = m
        .post(
            &path("converse"),
            &[("x-mock-behavior", "fail=500")],
            req("x").to_string(),
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = call(
        &m,
        &path("converse"),
        &[("x-mock-behavior", "html=503")],
        &req("x"),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("<html>"));
}

// ---------------------------------------------------------------------------
// InvokeModel embeddings

fn norm(v: &Value) -> f64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt()
}

#[tokio::test]
async fn titan_embeddings() {
    let m = Mock::start().await;
    let p = "/model/amazon.titan-embed-text-v2%3A0/invoke";
    let r = call(&m, p, &[], &json!({"inputText": "Hello, world!"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-amzn-bedrock-input-token-count"], "4");
    let (_, v) = json(r).await;
    assert_eq!(v["embedding"].as_array().unwrap().len(), 1024);
    assert_eq!(v["inputTextTokenCount"], 4);
    assert_eq!(v["embeddingsByType"]["float"], v["embedding"]);
    assert!((norm(&v["embedding"]) - 1.0).abs() < 1e-3);
    let (_, v) = json(
        call(
            &m,
            p,
            &[],
            &json!({"inputText": "x", "dimensions": 256, "normalize": false}),
        )
        .await,
    )
    .await;
    assert_eq!(v["embedding"].as_array().unwrap().len(), 256);
    assert!(norm(&v["embedding"]) > 1.5);
    let (s, _, v) = aws_error(call(&m, p, &[], &json!({"inputText": "x", "foo": 1})).await).await;
    assert_eq!(s, 400);
    assert_eq!(v["message"], "Malformed input request: #: extraneous key [foo] is not permitted, please reformat your input and try again.");
    let (_, _, v) = aws_error(call(&m, p, &[], &json!({"dimensions": 256})).await).await;
    assert_eq!(v["message"], "Malformed input request: #: required key [inputText] not found, please reformat your input and try again.");
    let (_, _, v) =
        aws_error(call(&m, p, &[], &json!({"inputText": "x", "dimensions": 100})).await).await;
    assert_eq!(v["message"], "Malformed input request: #/dimensions: 100 is not a valid enum value, please reformat your input and try again.");
    // A raw ':' also routes (clients that do not encode it).
    let (s, v) = json(
        call(
            &m,
            "/model/amazon.titan-embed-text-v2:0/invoke",
            &[],
            &json!({"inputText": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 1024);
    let (s, v) = json(
        call(
            &m,
            "/model/amazon.titan-embed-text-v1/invoke",
            &[],
            &json!({"inputText": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 1536);
    assert!(v.get("embeddingsByType").is_none());
}

#[tokio::test]
async fn cohere_embeddings() {
    let m = Mock::start().await;
    let p = "/model/cohere.embed-english-v3/invoke";
    let (s, v) = json(
        call(
            &m,
            p,
            &[],
            &json!({"texts": ["a", "b c"], "input_type": "search_document"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["response_type"], "embeddings_floats");
    assert_eq!(v["texts"], json!(["a", "b c"]));
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 1024);
    assert_eq!(v["id"].as_str().unwrap().len(), 36);
    let (_, v) = json(call(&m, p, &[], &json!({"texts": ["a"], "input_type": "search_query", "embedding_types": ["float", "int8"]})).await).await;
    assert_eq!(v["response_type"], "embeddings_by_type");
    assert_eq!(v["embeddings"]["float"][0].as_array().unwrap().len(), 1024);
    assert!(v["embeddings"]["int8"][0][0].is_i64());
    let (s, _, v) = aws_error(call(&m, p, &[], &json!({"texts": ["a"]})).await).await;
    assert_eq!(s, 400);
    assert_eq!(v["message"], "Malformed input request: #: required key [input_type] not found, please reformat your input and try again.");
    // Chat models are served through Converse only.
    let (s, _, _) = aws_error(
        call(
            &m,
            &path("invoke"),
            &[],
            &json!({"anthropic_version": "bedrock-2023-05-31"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn recorded() {
    let m = Mock::start().await;
    converse(&m, &req("a")).await;
    let (_, log) = json(m.get("/__mock/requests", &[]).await).await;
    assert_eq!(log[0]["provider"], "bedrock");
    assert_eq!(log[0]["path"], path("converse"));
    // The /bedrock prefix also routes here.
    let (s, _) =
        json(call(&m, &format!("/bedrock{}", path("converse")), &[], &req("x")).await).await;
    assert_eq!(s, 200);
}
