//! What every OpenAI-shaped provider (OpenAI, Azure, compatible servers)
//! shares: the request body edit, the credential header, and the
//! pass-through answer reader that still parses the SSE stream for usage.

use super::{Credential, ProviderCommon, ResponseTranslator, UnknownParams};
use crate::config::{ConfigError, Model};
use crate::error::ApiError;
use crate::request::ClientRequest;
use crate::sse::{SseEvent, SseParser};
use crate::usage::{openai_usage, Tail, Usage};

/// The body for an OpenAI-shaped provider: the model renamed (targeted
/// edit), unknown parameters handled per the provider's setting.
pub fn body(
    common: &ProviderCommon,
    req: &ClientRequest<'_>,
    model: &Model,
) -> Result<Vec<u8>, ApiError> {
    if !asks_usage_for_client(req) {
        return body_as_asked(common, req, model, &[]);
    }
    // The client's own `stream_options` (if any) is dropped and written
    // again with `include_usage: true`.
    let drop: &[&str] = if req.field("stream_options").is_some() {
        &["stream_options"]
    } else {
        &[]
    };
    let body = body_as_asked(common, req, model, drop)?;
    Ok(with_usage_requested(req, body))
}

/// A stream whose usage the gateway asks for although the client did not
/// (`stream_options.include_usage: true` is added upstream and the usage
/// chunk taken out of what the client sees): quotas, metrics and the audit
/// record need the real token counts of every stream.
pub fn asks_usage_for_client(req: &ClientRequest<'_>) -> bool {
    use crate::request::Endpoint;
    req.stream
        && !req.include_usage
        && matches!(
            req.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions
        )
}

/// `body` (a JSON object the gateway built, without `stream_options`) with
/// the client's stream options plus `include_usage: true` added before its
/// closing brace; the rest of the bytes stay as they are.
fn with_usage_requested(req: &ClientRequest<'_>, body: Vec<u8>) -> Vec<u8> {
    let mut opts = req
        .field("stream_options")
        .and_then(|v| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(v.get()).ok()
        })
        .unwrap_or_default();
    opts.insert("include_usage".into(), serde_json::Value::Bool(true));
    let (Ok(opts), Some(end)) = (
        serde_json::to_vec(&opts),
        body.iter().rposition(|&b| b == b'}'),
    ) else {
        return body;
    };
    let empty = body[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut out = Vec::with_capacity(body.len() + opts.len() + 20);
    out.extend_from_slice(&body[..end]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"stream_options\":");
    out.extend_from_slice(&opts);
    out.extend_from_slice(&body[end..]);
    out
}

/// The body with the model renamed, unknown parameters handled per the
/// provider's setting, and the top-level fields in `drop` removed.
fn body_as_asked(
    common: &ProviderCommon,
    req: &ClientRequest<'_>,
    model: &Model,
    drop: &[&str],
) -> Result<Vec<u8>, ApiError> {
    let known = req.endpoint.known_params();
    match common.unknown_params {
        UnknownParams::Pass => Ok(req.rewrite(&model.upstream, drop)),
        UnknownParams::Reject => match req.unknown_param(known) {
            Some(p) => Err(ApiError::invalid_param(
                p,
                "unknown_parameter",
                format!(
                    "Unrecognized request argument supplied: {}",
                    crate::error::echo(p)
                ),
            )),
            None => Ok(req.rewrite(&model.upstream, drop)),
        },
        UnknownParams::Drop => {
            let unknown: Vec<&str> = req
                .fields
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !known.contains(k))
                .chain(drop.iter().copied())
                .collect();
            Ok(req.rewrite(&model.upstream, &unknown))
        }
    }
}

/// Headers that carry the credential, when the filter sets it itself.
pub fn credential_headers(common: &ProviderCommon) -> Vec<(String, String)> {
    match &common.credential {
        Credential::Header { header, value } => vec![(header.clone(), value.0.clone())],
        Credential::Injected | Credential::None => vec![],
    }
}

/// An `options` object for a kind that takes none.
pub fn no_options(options: Option<&serde_json::Value>, path: &str) -> Result<(), ConfigError> {
    match options {
        None => Ok(()),
        Some(serde_json::Value::Object(o)) if o.is_empty() => Ok(()),
        Some(_) => Err(ConfigError::new(
            format!("{path}.options"),
            "this provider kind takes no options",
        )),
    }
}

/// Answers already in OpenAI's shape pass unchanged; the stream is still
/// parsed event by event (across any chunk split) to read the final usage.
#[derive(Default)]
pub struct PassThrough {
    sse: SseParser,
    events: Vec<SseEvent>,
    usage: Option<Usage>,
    saw_event: bool,
    done: bool,
    /// End of a non-streamed answer, for its usage.
    tail: Tail,
    /// The gateway asked for the usage chunk: take it out of the stream.
    hide_usage: bool,
    /// A non-streamed chat or completions answer: read whole and checked
    /// before it goes out, so a broken one becomes a clean 502 instead of a
    /// 200 with half a document. (Embeddings, which can be tens of MB, pass
    /// as they arrive.)
    check_whole: bool,
    /// The whole answer was not JSON.
    invalid: bool,
}

impl PassThrough {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// The reader for `req`'s answer (hiding the usage chunk the gateway
    /// asked for on the client's behalf).
    pub fn for_request(req: &ClientRequest<'_>) -> Self {
        use crate::request::Endpoint;
        PassThrough {
            hide_usage: asks_usage_for_client(req),
            check_whole: !req.stream
                && matches!(
                    req.endpoint,
                    Endpoint::ChatCompletions | Endpoint::Completions
                ),
            ..Self::default()
        }
    }

    /// Events re-emitted as they arrived, without the usage-only chunk.
    fn without_usage_chunk(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for ev in &self.events {
            let data = ev.data.trim();
            if data.contains("\"usage\"") && is_usage_only_chunk(data) {
                continue;
            }
            if let Some(name) = &ev.event {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
            }
            for line in ev.data.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            out.push(b'\n');
        }
        out
    }

    fn read_events(&mut self) {
        for ev in self.events.drain(..) {
            self.saw_event = true;
            let data = ev.data.trim();
            if data == "[DONE]" {
                self.done = true;
            } else if data.contains("\"usage\"") {
                if let Some(u) = openai_usage(data.as_bytes()) {
                    self.usage = Some(u);
                }
            }
        }
    }
}

/// The event that ends a stream the provider cut short, so that the client
/// sees an error instead of a silently truncated answer.
pub fn incomplete_stream_event() -> Vec<u8> {
    let e = ApiError::server(
        502,
        "upstream_stream_incomplete",
        "The provider ended the stream before it was complete.",
    );
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&e.body());
    out.extend_from_slice(b"\n\n");
    out
}

/// The chunk OpenAI adds for `include_usage`: no choices, a usage object.
fn is_usage_only_chunk(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_str::<Probe>(data) {
        Ok(p) => p.usage.is_some() && p.choices.as_ref().is_none_or(|c| c.is_empty()),
        Err(_) => false,
    }
}

impl ResponseTranslator for PassThrough {
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        self.sse.feed(chunk, &mut self.events);
        // A half-sent event is closed first, so the error is an event of its own.
        let mid_event = !self.sse.at_event_boundary();
        if end_of_stream {
            self.sse.finish(&mut self.events);
        }
        if self.hide_usage {
            let mut out = self.without_usage_chunk();
            self.read_events();
            if end_of_stream && !self.done {
                out.extend_from_slice(&incomplete_stream_event());
            }
            return Some(out);
        }
        self.read_events();
        if end_of_stream && !self.done {
            let mut out = chunk.to_vec();
            if mid_event {
                out.extend_from_slice(b"\n\n");
            }
            out.extend_from_slice(&incomplete_stream_event());
            return Some(out);
        }
        None
    }

    fn needs_whole_body(&self) -> bool {
        self.check_whole
    }

    fn body_chunk(&mut self, chunk: &[u8], end_of_stream: bool) {
        self.tail.push(chunk);
        if end_of_stream {
            self.usage = self.tail.usage();
        }
    }

    fn full_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            self.invalid = true;
            return Some(crate::error::invalid_answer("it is not valid JSON").body());
        }
        self.usage = openai_usage(body);
        None
    }

    fn status(&self) -> Option<u16> {
        self.invalid.then_some(502)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\ndata: [DONE]\n\n";

    #[test]
    fn usage_read_at_every_split_and_stream_untouched() {
        for i in 0..=STREAM.len() {
            let mut t = PassThrough::new();
            let (a, b) = STREAM.split_at(i);
            assert_eq!(t.stream_chunk(a, false), None);
            assert_eq!(t.stream_chunk(b, false), None);
            assert_eq!(t.stream_chunk(b"", true), None);
            assert_eq!(t.usage().unwrap().total_tokens, 9, "split {i}");
        }
    }

    #[test]
    fn cut_stream_gets_an_error_event() {
        let mut t = PassThrough::new();
        assert_eq!(t.stream_chunk(&STREAM[..40], false), None);
        let end = t.stream_chunk(b"", true).unwrap();
        let s = String::from_utf8(end).unwrap();
        assert!(s.contains("upstream_stream_incomplete"), "{s}");
    }

    #[test]
    fn forwarded_body_usage() {
        let mut t = PassThrough::new();
        assert!(!t.needs_whole_body());
        t.body_chunk(br#"{"data":[],"usage":{"prompt_tok"#, false);
        t.body_chunk(br#"ens":4,"total_tokens":4}}"#, true);
        assert_eq!(t.usage().unwrap().prompt_tokens, 4);
    }

    #[test]
    fn broken_whole_answer_is_a_502() {
        let req = ClientRequest::parse(
            crate::request::Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let mut t = PassThrough::for_request(&req);
        assert!(t.needs_whole_body());
        let out = t
            .full_body(br#"{"id":"chatcmpl-1","choices":[{"mess"#)
            .unwrap();
        assert_eq!(t.status(), Some(502));
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("upstream_invalid_response"));
        let mut ok = PassThrough::for_request(&req);
        assert_eq!(ok.full_body(br#"{"usage":{"prompt_tokens":1}}"#), None);
        assert_eq!(ok.status(), None);
        let emb = ClientRequest::parse(
            crate::request::Endpoint::Embeddings,
            br#"{"model":"m","input":"x"}"#,
        )
        .unwrap();
        assert!(!PassThrough::for_request(&emb).needs_whole_body());
    }

    #[test]
    fn full_body_usage() {
        let mut t = PassThrough::new();
        assert_eq!(
            t.full_body(br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#),
            None
        );
        assert_eq!(t.usage().unwrap().total_tokens, 2);
    }
}
