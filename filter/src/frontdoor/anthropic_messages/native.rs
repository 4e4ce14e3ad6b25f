//! Answers from an Anthropic provider to a Messages client: the bytes pass
//! as they are; usage for quotas is read on the way (the whole answer's
//! `usage`, or the stream's `message_start` and `message_delta` events,
//! where later counts replace earlier ones). A stream that ends without
//! `message_stop` or an `error` event gets an Anthropic `event: error`
//! appended (after closing a half-sent event), so the client sees an error
//! instead of a silently truncated answer. count_tokens answers count no
//! usage.

use super::{error_event, incomplete_stream};
use crate::providers::anthropic::types::{Message, Usage};
use crate::providers::ResponseTranslator;
use crate::sse::{SseEvent, SseParser};
use crate::usage::Usage as GatewayUsage;
use serde::Deserialize;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Default)]
pub struct Native {
    counting: bool,
    sse: SseParser,
    events: Vec<SseEvent>,
    usage: Option<Usage>,
    /// `message_stop` or `error` seen: the stream ended properly.
    ended: bool,
}

impl Native {
    pub fn new(counting: bool) -> Self {
        Native {
            counting,
            ..Native::default()
        }
    }

    fn merge(&mut self, u: &Usage) {
        self.usage.get_or_insert_with(Usage::default).merge(u);
    }

    fn read_events(&mut self) {
        for ev in std::mem::take(&mut self.events) {
            if !ev.data.trim_start().starts_with('{') {
                continue;
            }
            let Ok(e) = serde_json::from_str::<Event<'_>>(&ev.data) else {
                continue;
            };
            match e.kind.as_str() {
                "message_start" => {
                    if let Some(u) = e.message.as_ref().and_then(|m| m.usage.as_ref()) {
                        self.merge(u);
                    }
                }
                "message_delta" => {
                    if let Some(u) = e.usage.as_ref() {
                        self.merge(u);
                    }
                }
                "message_stop" | "error" => self.ended = true,
                _ => {}
            }
        }
    }
}

impl ResponseTranslator for Native {
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        self.sse.feed(chunk, &mut self.events);
        let mid_event = !self.sse.at_event_boundary();
        if end_of_stream {
            self.sse.finish(&mut self.events);
        }
        self.read_events();
        if end_of_stream && !self.ended {
            self.ended = true;
            let mut out = chunk.to_vec();
            if mid_event {
                out.extend_from_slice(b"\n\n");
            }
            out.extend_from_slice(&error_event(&incomplete_stream()));
            return Some(out);
        }
        None
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        if let Ok(m) = serde_json::from_slice::<Message<'_>>(body) {
            if let Some(u) = m.usage.as_ref() {
                self.merge(u);
            }
        }
        None
    }

    fn usage(&self) -> Option<GatewayUsage> {
        if self.counting {
            return None;
        }
        self.usage.map(|u| u.gateway())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn untouched_and_usage_at_every_split() {
        for i in 0..=STREAM.len() {
            let mut t = Native::new(false);
            let (a, b) = STREAM.split_at(i);
            assert_eq!(t.stream_chunk(a, false), None);
            assert_eq!(t.stream_chunk(b, false), None);
            assert_eq!(t.stream_chunk(b"", true), None, "split {i}");
            let u = t.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                (33, 12, 5),
                "split {i}"
            );
        }
    }

    #[test]
    fn cut_stream_gets_an_error_event() {
        let mut t = Native::new(false);
        assert_eq!(t.stream_chunk(&STREAM[..60], false), None);
        let out = String::from_utf8(t.stream_chunk(b"", true).unwrap()).unwrap();
        assert_eq!(
            out,
            "\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The provider ended the stream before it was complete.\"}}\n\n"
        );
        // An error event is a proper end.
        let mut t = Native::new(false);
        let ev = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(t.stream_chunk(ev, true), None);
    }

    #[test]
    fn whole_answers_and_count_tokens() {
        let mut t = Native::new(false);
        assert_eq!(
            t.full_body(br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":4,"output_tokens":6}}"#),
            None
        );
        assert_eq!(t.usage().unwrap().total_tokens, 10);
        let mut t = Native::new(true);
        assert_eq!(t.full_body(br#"{"input_tokens":42}"#), None);
        assert_eq!(t.usage(), None);
        let mut t = Native::new(false);
        assert_eq!(t.full_body(b"\xff garbage"), None);
        assert_eq!(t.usage(), None);
    }
}
