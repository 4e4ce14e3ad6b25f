//! OpenAI output shared by the translating providers (Anthropic, Bedrock,
//! Gemini): the `chat.completion` shape, the `chat.completion.chunk` delta
//! shapes and the SSE writer of chunks, usage chunks and error events.

use crate::error::invalid_answer;
use crate::providers::anthropic::types::ThinkingBlock;
use serde::Serialize;

// ------------------------------------------------------- chat.completion

/// A whole answer. `C` is the choices (an array or a `Vec`), `U` the
/// provider's `usage` shape.
#[derive(Serialize)]
pub(crate) struct Completion<'a, C, U> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: C,
    pub usage: U,
}

/// One choice of a whole answer; `T` is the provider's tool-call shape.
#[derive(Serialize)]
pub(crate) struct Choice<T> {
    pub index: u32,
    pub message: OutMessage<T>,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Serialize)]
pub(crate) struct OutMessage<T> {
    pub role: &'static str,
    pub content: Option<String>,
    pub refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<ThinkingBlock>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<T>,
}

/// The bytes of a `chat.completion` with one choice (Anthropic's and
/// Bedrock's answers). `json` is the JSON-mode tool's input: when there is
/// one it is the content (text around it would break the JSON); else the
/// text is, if the answer had any.
pub(crate) struct OneChoice<'a, T, U> {
    pub id: String,
    pub created: u64,
    pub model: &'a str,
    pub text: Option<String>,
    pub json: Option<String>,
    pub reasoning: Option<String>,
    pub thinking_blocks: Vec<ThinkingBlock>,
    pub tool_calls: Vec<T>,
    pub finish_reason: &'static str,
    pub usage: U,
}

impl<T: Serialize, U: Serialize> OneChoice<'_, T, U> {
    pub fn into_bytes(self) -> Vec<u8> {
        let out = Completion {
            id: self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            choices: [Choice {
                index: 0,
                message: OutMessage {
                    role: "assistant",
                    content: self.json.or(self.text),
                    refusal: None,
                    reasoning_content: self.reasoning,
                    thinking_blocks: self.thinking_blocks,
                    tool_calls: self.tool_calls,
                },
                logprobs: None,
                finish_reason: self.finish_reason,
            }],
            usage: self.usage,
        };
        serde_json::to_vec(&out).unwrap_or_else(|_| invalid_answer("serialisation").body())
    }
}

// ------------------------------------------------- chat.completion.chunk

/// A choice's `delta`. `E` is what a tool-call delta carries in
/// `extra_content` (only Gemini has one).
#[derive(Serialize)]
pub(crate) struct Delta<'a, E = ()> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<[StreamThinking<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolDelta<'a, E>; 1]>,
}

impl<E> Default for Delta<'_, E> {
    fn default() -> Self {
        Delta {
            role: None,
            content: None,
            reasoning_content: None,
            thinking_blocks: None,
            tool_calls: None,
        }
    }
}

/// A whole thinking (reasoning) block in a delta. `index` counts the
/// answer's thinking blocks, so clients that merge list deltas by `index`
/// (the OpenAI SDKs' stream helpers) collect them like tool calls.
#[derive(Serialize)]
pub(crate) struct StreamThinking<'a> {
    pub index: usize,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct ToolDelta<'a, E = ()> {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<E>,
}

#[derive(Serialize)]
pub(crate) struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

#[derive(Serialize)]
struct Chunk<'a, C, U> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: C,
    /// Present (null, or the totals on the last chunk) only when the client
    /// asked for `include_usage`, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<U>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a, E> {
    index: u32,
    delta: Delta<'a, E>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// What every chunk of one answer repeats.
#[derive(Clone, Copy)]
pub(crate) struct ChunkHead<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    /// The client asked for `stream_options.include_usage`: every chunk has
    /// `usage: null`.
    pub include_usage: bool,
}

impl ChunkHead<'_> {
    /// A chunk with one choice's `delta` (and `finish_reason`).
    pub fn write<E: Serialize>(
        self,
        out: &mut Vec<u8>,
        index: u32,
        delta: Delta<'_, E>,
        finish: Option<&'static str>,
    ) {
        let chunk = Chunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            choices: [ChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None::<()>),
        };
        write_json(out, &chunk);
    }

    /// The usage chunk (`choices: []`).
    pub fn write_usage<U: Serialize>(self, out: &mut Vec<u8>, usage: U) {
        let chunk = Chunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            choices: [(); 0],
            usage: Some(Some(usage)),
        };
        write_json(out, &chunk);
    }
}

/// `data: <json>\n\n`.
pub(crate) fn write_json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    if let Ok(bytes) = serde_json::to_vec(v) {
        write_data(out, &bytes);
    }
}

/// `data: <bytes>\n\n`.
pub(crate) fn write_data(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\n\n");
}

/// The end of a stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// The chunks of an answer with one choice (Anthropic's and Bedrock's
/// streams): a role chunk (`role: assistant`, `content: ""`) before
/// anything else, thinking blocks numbered in order.
pub(crate) struct ChoiceStream {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
    /// The role chunk went out.
    pub started: bool,
    next_thinking: usize,
}

impl ChoiceStream {
    pub fn new(id: String, model: String, include_usage: bool) -> Self {
        ChoiceStream {
            id,
            model,
            created: 0,
            include_usage,
            started: false,
            next_thinking: 0,
        }
    }

    pub fn head(&self) -> ChunkHead<'_> {
        ChunkHead {
            id: &self.id,
            created: self.created,
            model: &self.model,
            include_usage: self.include_usage,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish: Option<&'static str>) {
        self.head().write(out, 0, delta, finish);
    }

    /// The role chunk, if it has not gone out.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.write(
                out,
                Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    ..Delta::default()
                },
                None,
            );
        }
    }

    /// A `content` delta (none for empty text).
    pub fn content(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.start(out);
        self.write(
            out,
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        );
    }

    pub fn tool_delta(&mut self, out: &mut Vec<u8>, tool: ToolDelta<'_>) {
        self.start(out);
        self.write(
            out,
            Delta {
                tool_calls: Some([tool]),
                ..Delta::default()
            },
            None,
        );
    }

    /// A tool call's first delta: `id`, `type`, `name` and `arguments: ""`.
    pub fn tool_start(&mut self, out: &mut Vec<u8>, index: usize, id: &str, name: &str) {
        self.tool_delta(
            out,
            ToolDelta {
                index,
                id: Some(id),
                kind: Some("function"),
                function: FunctionDelta {
                    name: Some(name),
                    arguments: "",
                },
                extra_content: None,
            },
        );
    }

    /// A fragment of a tool call's `arguments`.
    pub fn tool_args(&mut self, out: &mut Vec<u8>, index: usize, arguments: &str) {
        self.tool_delta(
            out,
            ToolDelta {
                index,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments,
                },
                extra_content: None,
            },
        );
    }

    /// A whole thinking block with its signature.
    pub fn thinking(&mut self, out: &mut Vec<u8>, thinking: &str, signature: &str) {
        self.thinking_block(
            out,
            StreamThinking {
                index: 0,
                kind: "thinking",
                thinking: Some(thinking),
                signature: Some(signature),
                data: None,
            },
        );
    }

    /// A whole redacted thinking block.
    pub fn redacted_thinking(&mut self, out: &mut Vec<u8>, data: &str) {
        self.thinking_block(
            out,
            StreamThinking {
                index: 0,
                kind: "redacted_thinking",
                thinking: None,
                signature: None,
                data: Some(data),
            },
        );
    }

    /// A whole thinking block; its `index` is set here.
    pub fn thinking_block(&mut self, out: &mut Vec<u8>, mut block: StreamThinking<'_>) {
        block.index = self.next_thinking;
        self.next_thinking += 1;
        self.start(out);
        self.write(
            out,
            Delta {
                thinking_blocks: Some([block]),
                ..Delta::default()
            },
            None,
        );
    }
}
