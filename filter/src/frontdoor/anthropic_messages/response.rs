//! A whole `chat.completion` → an Anthropic `message`, and the pieces the
//! stream shares (ids, stop reasons, usage, errors).
//!
//! OpenAI-shaped answers are read leniently: every field may be missing or
//! `null` (compatible servers differ), unknown fields are skipped.

use super::error_body;
use crate::error::{invalid_answer, ApiError};
use crate::providers::ResponseTranslator;
use crate::usage::Usage as GatewayUsage;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// ------------------------------------------------------------ OpenAI input

#[derive(Deserialize, Default)]
pub struct ChatUsage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Default)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
pub struct ChatToolCall {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<ChatFunction>,
}

#[derive(Deserialize, Default)]
pub struct ChatFunction {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

/// `message` of a whole answer, or `delta` of a chunk.
#[derive(Deserialize, Default)]
pub struct ChatMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    /// What vLLM (newer), Ollama and OpenRouter call `reasoning_content`.
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ChatToolCall>>,
}

impl ChatMessage {
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|s| !s.is_empty())
    }
}

#[derive(Deserialize, Default)]
pub struct ChatChoice {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub message: Option<ChatMessage>,
    #[serde(default)]
    pub delta: Option<ChatMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// vLLM: the stop string (or token id) that ended the answer.
    #[serde(default)]
    pub stop_reason: Option<serde_json::Value>,
}

/// A whole answer or one stream chunk.
#[derive(Deserialize, Default)]
pub struct ChatAnswer {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Option<Vec<ChatChoice>>,
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

impl ChatAnswer {
    /// The first choice (the gateway never asks for more than one).
    pub fn choice(&self) -> Option<&ChatChoice> {
        self.choices
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.index.unwrap_or(0) == 0))
    }
}

// ---------------------------------------------------------- shared pieces

/// `msg_` + the chat completion id without its `chatcmpl-` prefix.
pub fn message_id(chat_id: &str) -> String {
    format!(
        "msg_{}",
        chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id)
    )
}

/// The stop sequence that ended the answer, when the provider says (vLLM's
/// `stop_reason`) and it is one the client asked for.
pub fn matched_stop(choice: &ChatChoice, stop_sequences: &[String]) -> Option<String> {
    match choice.stop_reason.as_ref() {
        Some(serde_json::Value::String(s)) if stop_sequences.contains(s) => Some(s.clone()),
        _ => None,
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason` (and `stop_sequence`).
pub fn stop_reason(
    finish: Option<&str>,
    tool_calls: bool,
    refusal: bool,
    matched: Option<String>,
) -> (&'static str, Option<String>) {
    match finish {
        Some("length") => ("max_tokens", None),
        Some("content_filter") => ("refusal", None),
        Some("tool_calls") | Some("function_call") => ("tool_use", None),
        _ if tool_calls => ("tool_use", None),
        _ if refusal => ("refusal", None),
        _ => match matched {
            Some(s) => ("stop_sequence", Some(s)),
            None => ("end_turn", None),
        },
    }
}

/// Anthropic's `usage`.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutUsage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

impl OutUsage {
    /// Anthropic counts cache reads apart from `input_tokens`; OpenAI counts
    /// them inside `prompt_tokens`.
    pub fn from_chat(u: &ChatUsage) -> Self {
        let cached = u
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        OutUsage {
            input_tokens: u.prompt_tokens.unwrap_or(0).saturating_sub(cached),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
            output_tokens: u.completion_tokens.unwrap_or(0),
        }
    }

    pub fn gateway(&self) -> GatewayUsage {
        let prompt = self
            .input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_creation_input_tokens);
        GatewayUsage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt.saturating_add(self.output_tokens),
            cached_tokens: self.cache_read_input_tokens,
            reasoning_tokens: 0,
        }
    }
}

/// An OpenAI error object (from a 200 body or a stream event) as a gateway
/// error: its message, and a status from its type so the Anthropic type
/// fits.
pub fn openai_error(v: &serde_json::Value) -> ApiError {
    let get = |k: &str| v.get(k).and_then(|x| x.as_str());
    let message = get("message")
        .map(crate::error::echo)
        .unwrap_or_else(|| "The provider reported an error.".to_string());
    let kind = get("type").unwrap_or("server_error");
    let status = match kind {
        "invalid_request_error" => 400,
        "rate_limit_error" | "requests" | "tokens" | "insufficient_quota" => 429,
        _ => 502,
    };
    let mut e = ApiError::new(status, kind.to_string(), message);
    e.code = get("code").map(str::to_string);
    e
}

/// Tool call arguments as the `input` object (`{}` when they are not one).
pub fn tool_input(args: &str) -> Box<RawValue> {
    let args = args.trim();
    if args.starts_with('{') {
        if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(args) {
            return raw;
        }
    }
    RawValue::from_string("{}".to_string()).unwrap_or_else(|_| Box::<RawValue>::default())
}

// ------------------------------------------------------------------ output

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutBlock {
    Thinking {
        thinking: String,
        signature: String,
    },
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Box<RawValue>,
    },
}

#[derive(Serialize)]
struct OutMessage<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: Vec<OutBlock>,
    model: &'a str,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    usage: OutUsage,
}

/// Translate a whole answer; `Err` is the error to report instead.
pub fn translate(
    body: &[u8],
    stop_sequences: &[String],
) -> Result<(Vec<u8>, Option<OutUsage>), ApiError> {
    let not_object = || invalid_answer("not a chat completion JSON object");
    // (serde would also read a struct from an array)
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_object());
    }
    let a: ChatAnswer = serde_json::from_slice(body).map_err(|_| not_object())?;
    if let Some(err) = a.error.as_ref().filter(|e| e.is_object()) {
        return Err(openai_error(err));
    }
    let id = message_id(a.id.as_deref().unwrap_or(""));
    let empty = ChatChoice::default();
    let choice = a.choice().unwrap_or(&empty);
    let empty_msg = ChatMessage::default();
    let m = choice.message.as_ref().unwrap_or(&empty_msg);
    let mut content = Vec::new();
    if let Some(r) = m.reasoning() {
        content.push(OutBlock::Thinking {
            thinking: r.to_string(),
            signature: String::new(),
        });
    }
    let refusal = m.refusal.as_deref().filter(|r| !r.is_empty());
    let calls = m.tool_calls.as_deref().unwrap_or(&[]);
    match (m.content.as_deref(), refusal) {
        (_, Some(r)) => content.push(OutBlock::Text {
            text: r.to_string(),
        }),
        (Some(t), None) if !t.is_empty() || (calls.is_empty() && content.is_empty()) => content
            .push(OutBlock::Text {
                text: t.to_string(),
            }),
        _ => {}
    }
    for (i, c) in calls.iter().enumerate() {
        let f = c.function.as_ref();
        content.push(OutBlock::ToolUse {
            id: c
                .id
                .clone()
                .unwrap_or_else(|| format!("toolu_{}_{i}", id.trim_start_matches("msg_"))),
            name: f.and_then(|f| f.name.clone()).unwrap_or_default(),
            input: tool_input(f.and_then(|f| f.arguments.as_deref()).unwrap_or("")),
        });
    }
    let (stop, seq) = stop_reason(
        choice.finish_reason.as_deref(),
        !calls.is_empty(),
        refusal.is_some(),
        matched_stop(choice, stop_sequences),
    );
    let usage = a.usage.as_ref().map(OutUsage::from_chat);
    let out = OutMessage {
        id,
        kind: "message",
        role: "assistant",
        content,
        model: a.model.as_deref().unwrap_or(""),
        stop_reason: stop,
        stop_sequence: seq,
        usage: usage.unwrap_or_default(),
    };
    let bytes = serde_json::to_vec(&out).map_err(|_| invalid_answer("serialisation"))?;
    Ok((bytes, usage))
}

/// Translator for a whole (non-streamed) answer.
pub struct WholeOut {
    stop_sequences: Vec<String>,
    usage: Option<OutUsage>,
}

impl WholeOut {
    pub fn new(stop_sequences: Vec<String>) -> Self {
        WholeOut {
            stop_sequences,
            usage: None,
        }
    }
}

impl ResponseTranslator for WholeOut {
    fn stream_chunk(&mut self, _chunk: &[u8], _end_of_stream: bool) -> Option<Vec<u8>> {
        // Not a stream: the exchange buffers the answer.
        None
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        match translate(body, &self.stop_sequences) {
            Ok((out, usage)) => {
                self.usage = usage;
                Some(out)
            }
            Err(e) => Some(error_body(&e)),
        }
    }

    fn usage(&self) -> Option<GatewayUsage> {
        self.usage.map(|u| u.gateway())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontdoor::anthropic_messages::error_type;
    use serde_json::{json, Value};

    fn openai_error_type(v: &Value) -> &'static str {
        error_type(&openai_error(v))
    }

    fn tr(answer: Value) -> Value {
        tr_stop(answer, &[])
    }

    fn tr_stop(answer: Value, stops: &[&str]) -> Value {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut t = WholeOut::new(stops);
        let out = t.full_body(&serde_json::to_vec(&answer).unwrap()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn text_answer() {
        let v = tr(
            json!({"id":"chatcmpl-abc","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hi!","refusal":null},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":20,"completion_tokens":3,"total_tokens":23,"prompt_tokens_details":{"cached_tokens":8}}}),
        );
        assert_eq!(
            v,
            json!({"id":"msg_abc","type":"message","role":"assistant","model":"gpt-4o-mini-2024-07-18",
                "content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":8,"output_tokens":3}})
        );
    }

    #[test]
    fn tools_reasoning_and_reasons() {
        let v = tr(
            json!({"id":"x1","model":"m","choices":[{"message":{"content":null,"reasoning_content":"think",
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"b\":1,\"a\":2}"}},
                          {"id":"call_2","type":"function","function":{"name":"g","arguments":"not json"}}]},
            "finish_reason":"tool_calls"}]}),
        );
        assert_eq!(v["id"], "msg_x1");
        assert_eq!(
            v["content"],
            json!([{"type":"thinking","thinking":"think","signature":""},
                   {"type":"tool_use","id":"call_1","name":"f","input":{"b":1,"a":2}},
                   {"type":"tool_use","id":"call_2","name":"g","input":{}}])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        // Key order of the input survives.
        let mut t = WholeOut::new(vec![]);
        let out = t
            .full_body(br#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"z\":1,\"a\":2}"}}]},"finish_reason":"stop"}]}"#)
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""input":{"z":1,"a":2}"#), "{s}");
        assert!(s.contains(r#""stop_reason":"tool_use""#), "{s}");
        for (finish, want) in [
            ("length", "max_tokens"),
            ("content_filter", "refusal"),
            ("stop", "end_turn"),
            ("weird", "end_turn"),
        ] {
            let v = tr(json!({"choices":[{"message":{"content":"x"},"finish_reason":finish}]}));
            assert_eq!(v["stop_reason"], want, "{finish}");
        }
        let v = tr(
            json!({"choices":[{"message":{"content":null,"refusal":"I can't."},"finish_reason":"stop"}]}),
        );
        assert_eq!(v["content"], json!([{"type":"text","text":"I can't."}]));
        assert_eq!(v["stop_reason"], "refusal");
    }

    #[test]
    fn stop_sequence_when_known() {
        let v = tr_stop(
            json!({"choices":[{"message":{"content":"1 2"},"finish_reason":"stop","stop_reason":"END"}]}),
            &["END"],
        );
        assert_eq!(
            (v["stop_reason"].clone(), v["stop_sequence"].clone()),
            (json!("stop_sequence"), json!("END"))
        );
        let v = tr_stop(
            json!({"choices":[{"message":{"content":"1 2"},"finish_reason":"stop","stop_reason":null}]}),
            &["END"],
        );
        assert_eq!(v["stop_reason"], "end_turn");
    }

    #[test]
    fn empty_answers_and_errors() {
        let v = tr(json!({"choices":[{"message":{"content":""},"finish_reason":"stop"}]}));
        assert_eq!(v["content"], json!([{"type":"text","text":""}]));
        let v = tr(json!({"choices":[]}));
        assert_eq!(v["content"], json!([]));
        let v = tr(json!({"error":{"message":"slow down","type":"rate_limit_error"}}));
        assert_eq!(
            v,
            json!({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})
        );
        for body in [&b""[..], b"null", b"[]", b"\xff", b"{\"choices\":5}"] {
            let mut t = WholeOut::new(vec![]);
            let v: Value = serde_json::from_slice(&t.full_body(body).unwrap()).unwrap();
            assert_eq!(v["type"], "error", "{body:?}");
            assert_eq!(v["error"]["type"], "api_error");
        }
        assert_eq!(
            openai_error_type(&json!({"type":"server_error","code":"upstream_overloaded"})),
            "overloaded_error"
        );
    }

    #[test]
    fn usage_for_quotas() {
        let mut t = WholeOut::new(vec![]);
        t.full_body(br#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#);
        let u = t.usage().unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens
            ),
            (10, 2, 12, 4)
        );
    }
}
