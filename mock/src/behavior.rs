//! Fault-injection knobs.
//!
//! A request asks for a behaviour with the header
//! `x-mock-behavior: k=v,k2=v2` or with a marker `[[mock:k=v,k2=v2]]`
//! anywhere in its text (last user message, prompt or embedding input).
//! Markers override the header key by key. Unknown keys are ignored.
//! A fault rule ([`crate::faults`]) that matches a request supplies knobs
//! as if they came first in the header: the header and the markers
//! override it key by key. Rules are parsed strictly
//! ([`Behavior::parse_strict`]).
//!
//! | key | effect |
//! |---|---|
//! | `fail=STATUS` | respond STATUS with the provider's realistic error body |
//! | `throttle=SECONDS` | 429 rate limit with `retry-after` (fractions allowed) |
//! | `stall=MS` | wait MS before sending response headers |
//! | `drip=MS` | wait MS between stream events |
//! | `cut=N` | stream: N events then abort the connection; non-stream: headers + first N body bytes, then abort |
//! | `nodone` | stream ends cleanly without `data: [DONE]` |
//! | `html=STATUS` | STATUS with a `text/html` body (load balancer page) |
//! | `badjson` | 200 `application/json` with a truncated JSON body |
//! | `bytes=N` | reply content is exactly N bytes of filler |
//! | `chunks=N` | stream the content in exactly N content events |
//! | `sse_error` | Anthropic streams: an `event: error` (`overloaded_error`) mid-stream, then the end |
//! | `block` | Gemini/Vertex: the prompt is blocked (`promptFeedback.blockReason: SAFETY`, no candidates) |
//! | `safety` | Gemini/Vertex: the candidate stops with `finishReason: SAFETY` |
//! | `stream_exception=NAME` | Bedrock ConverseStream: an exception frame (`:exception-type: NAME`) mid-stream, then the end |
//! | `badcrc` | Bedrock ConverseStream: one frame carries a wrong message CRC |
//! | `reset=before_headers` | close the connection without sending any response (the request was read) |
//! | `reset=mid_stream` | send the headers and the first half of the body (half the events of a stream, at least one; half the bytes of a whole answer), then abort the connection |
//! | `trickle=MS` | send the body one byte per write, MS between bytes (whole answers keep their `content-length`) |
//! | `trickle_max=N` | with `trickle`: only the first N bytes go one by one, the rest in one write |
//! | `size=N[KB\|MB]` | like `bytes`: the reply content is N bytes (KB = 1024, MB = 1024²) of filler |

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{Body, EventStream};

pub const HEADER: &str = "x-mock-behavior";
const MARKER_OPEN: &str = "[[mock:";
const MARKER_CLOSE: &str = "]]";

/// Parsed knobs; all off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Behavior {
    pub fail: Option<u16>,
    pub throttle: Option<f64>,
    pub stall: Option<Duration>,
    pub drip: Option<Duration>,
    pub cut: Option<usize>,
    pub nodone: bool,
    pub html: Option<u16>,
    pub badjson: bool,
    pub bytes: Option<usize>,
    pub chunks: Option<usize>,
    pub sse_error: bool,
    /// Gemini/Vertex: block the prompt (`promptFeedback.blockReason`).
    pub block: bool,
    /// Gemini/Vertex: stop the candidate with `finishReason: SAFETY`.
    pub safety: bool,
    /// Bedrock ConverseStream: exception frame type sent mid-stream
    /// (e.g. `throttlingException`).
    pub stream_exception: Option<String>,
    /// Bedrock ConverseStream: corrupt one frame's message CRC.
    pub badcrc: bool,
    /// Abort the connection before the headers or half way through the body.
    pub reset: Option<Reset>,
    /// Send the body one byte per write with this delay between bytes.
    pub trickle: Option<Duration>,
    /// With `trickle`: how many bytes go one by one (the rest in one write).
    pub trickle_max: Option<usize>,
}

/// Where `reset` aborts the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The request was read, no response byte is sent.
    BeforeHeaders,
    /// Headers and half the body are sent.
    MidStream,
}

/// Marker in a response's extensions: the server must drop the connection
/// instead of sending this response (see [`crate::serve`]).
#[derive(Clone, Copy, Debug)]
pub struct ResetConnection;

/// What [`Behavior::set`] made of one `k=v` item.
enum Knob {
    Ok,
    Unknown,
    BadValue,
}

/// The `k=v` items of a spec (`,` or `;` separated, trimmed; a bare `k`
/// has an empty value).
fn spec_items(spec: &str) -> impl Iterator<Item = (&str, &str)> {
    spec.split([',', ';']).filter_map(|item| {
        let item = item.trim();
        if item.is_empty() {
            return None;
        }
        Some(match item.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (item, ""),
        })
    })
}

/// `50MB`, `64KB`, `1000` → bytes.
fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let upper = v.to_ascii_uppercase();
    let (num, mul) = if let Some(n) = upper.strip_suffix("MB").or_else(|| upper.strip_suffix('M')) {
        (n.to_string(), 1024 * 1024)
    } else if let Some(n) = upper.strip_suffix("KB").or_else(|| upper.strip_suffix('K')) {
        (n.to_string(), 1024)
    } else {
        (upper.clone(), 1)
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mul)
}

impl Behavior {
    /// Knobs from the `x-mock-behavior` header (empty when absent).
    pub fn from_headers(headers: &HeaderMap) -> Behavior {
        let mut b = Behavior::default();
        b.apply_headers(headers);
        b
    }

    /// Applies the `x-mock-behavior` header(s) on top of these knobs, key
    /// by key.
    pub fn apply_headers(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(HEADER) {
            if let Ok(s) = v.to_str() {
                self.apply_spec(s);
            }
        }
    }

    /// Applies every `[[mock:...]]` marker found in `text`.
    pub fn apply_markers(&mut self, text: &str) {
        let mut rest = text;
        while let Some(start) = rest.find(MARKER_OPEN) {
            let after = &rest[start + MARKER_OPEN.len()..];
            match after.find(MARKER_CLOSE) {
                Some(end) => {
                    self.apply_spec(&after[..end]);
                    rest = &after[end + MARKER_CLOSE.len()..];
                }
                None => break,
            }
        }
    }

    /// Applies a `k=v,k2=v2` spec. Unknown keys are ignored; a malformed
    /// value turns its knob off.
    pub fn apply_spec(&mut self, spec: &str) {
        for (k, v) in spec_items(spec) {
            self.set(k, v);
        }
    }

    /// Parses a spec strictly (fault rules): every key must be a knob and
    /// every value valid, and there must be at least one knob. The error
    /// names the offending item.
    pub fn parse_strict(spec: &str) -> Result<Behavior, String> {
        let mut b = Behavior::default();
        let mut any = false;
        for (k, v) in spec_items(spec) {
            any = true;
            match b.set(k, v) {
                Knob::Ok => {}
                Knob::Unknown => return Err(format!("unknown knob {k:?}")),
                Knob::BadValue => return Err(format!("bad value {v:?} for knob {k:?}")),
            }
        }
        if any {
            Ok(b)
        } else {
            Err("no knob given (e.g. \"fail=503\")".to_string())
        }
    }

    /// Sets one knob; says whether the key is known and the value valid.
    fn set(&mut self, k: &str, v: &str) -> Knob {
        let ms = || v.parse::<u64>().ok().map(Duration::from_millis);
        let flag = || match v {
            "" | "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        };
        let ok = match k.to_ascii_lowercase().as_str() {
            "fail" => {
                self.fail = v.parse().ok().filter(|s| (100..=599).contains(s));
                self.fail.is_some()
            }
            "throttle" => {
                self.throttle = v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
                self.throttle.is_some()
            }
            "stall" => {
                self.stall = ms();
                self.stall.is_some()
            }
            "drip" => {
                self.drip = ms();
                self.drip.is_some()
            }
            "cut" => {
                self.cut = v.parse().ok();
                self.cut.is_some()
            }
            "nodone" => {
                self.nodone = flag() == Some(true);
                flag().is_some()
            }
            "html" => {
                self.html = v.parse().ok().filter(|s| (100..=599).contains(s));
                self.html.is_some()
            }
            "badjson" => {
                self.badjson = flag() == Some(true);
                flag().is_some()
            }
            "bytes" => {
                self.bytes = v.parse().ok();
                self.bytes.is_some()
            }
            "chunks" => {
                self.chunks = v.parse().ok().filter(|n| *n > 0);
                self.chunks.is_some()
            }
            "sse_error" => {
                self.sse_error = flag() == Some(true);
                flag().is_some()
            }
            "block" => {
                self.block = flag() == Some(true);
                flag().is_some()
            }
            "safety" => {
                self.safety = flag() == Some(true);
                flag().is_some()
            }
            "stream_exception" => {
                self.stream_exception = (!v.is_empty()).then(|| v.to_string());
                self.stream_exception.is_some()
            }
            "badcrc" => {
                self.badcrc = flag() == Some(true);
                flag().is_some()
            }
            "reset" => {
                self.reset = match v {
                    "before_headers" => Some(Reset::BeforeHeaders),
                    "mid_stream" | "mid_body" => Some(Reset::MidStream),
                    _ => None,
                };
                self.reset.is_some()
            }
            "trickle" => {
                self.trickle = ms();
                self.trickle.is_some()
            }
            "trickle_max" => {
                self.trickle_max = v.parse().ok();
                self.trickle_max.is_some()
            }
            "size" => {
                self.bytes = parse_size(v);
                self.bytes.is_some()
            }
            _ => return Knob::Unknown,
        };
        if ok {
            Knob::Ok
        } else {
            Knob::BadValue
        }
    }

    /// True when `text` may contain a marker (cheap pre-check on raw bytes).
    pub fn may_contain_marker(raw: &[u8]) -> bool {
        let needle = MARKER_OPEN.as_bytes();
        raw.windows(needle.len()).any(|w| w == needle)
    }

    /// Applies the transport-level knobs (`badjson`, `cut`, `drip`,
    /// `nodone`, `reset`, `trickle`) to a finished response.
    pub fn shape(&self, mut resp: Response<Body>) -> Response<Body> {
        if self.reset == Some(Reset::BeforeHeaders) {
            resp.extensions_mut().insert(ResetConnection);
            return resp;
        }
        if self.badjson && resp.status() == StatusCode::OK {
            if let Some(full) = resp.body().as_full() {
                let keep = truncate_point(full);
                let cut = Bytes::copy_from_slice(&full[..keep]);
                *resp.body_mut() = Body::full(cut);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp.headers_mut().remove(header::CONTENT_LENGTH);
            }
        }
        let body = std::mem::replace(resp.body_mut(), Body::empty());
        let body = match body {
            Body::Events(mut s) => {
                if self.nodone {
                    if let Some(last) = s.events.back() {
                        if last.as_ref() == b"data: [DONE]\n\n" {
                            s.events.pop_back();
                        }
                    }
                }
                s.drip = self.drip;
                if let Some(n) = self.cut {
                    s.abort_after = Some(n);
                }
                Body::Events(s)
            }
            Body::Full(b) => match self.cut {
                Some(n) => {
                    let full = b.unwrap_or_default();
                    let len = full.len();
                    let keep = n.min(len.saturating_sub(1));
                    resp.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                    let mut s = EventStream::new(Default::default());
                    if keep > 0 {
                        s.events.push_back(full.slice(..keep));
                    }
                    s.abort_after = Some(s.events.len());
                    Body::Events(s)
                }
                None => Body::Full(b),
            },
        };
        let body = match (self.reset, body) {
            (Some(Reset::MidStream), Body::Events(mut s)) => {
                s.abort_after = Some((s.events.len() / 2).max(1));
                Body::Events(s)
            }
            (Some(Reset::MidStream), Body::Full(b)) => {
                let full = b.unwrap_or_default();
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
                let mut s = EventStream::new(Default::default());
                let half = full.len() / 2;
                if half > 0 {
                    s.events.push_back(full.slice(..half));
                }
                s.abort_after = Some(s.events.len());
                Body::Events(s)
            }
            (_, body) => body,
        };
        let body = match (self.trickle, body) {
            (Some(delay), Body::Full(b)) => {
                let full = b.unwrap_or_default();
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
                let mut s = EventStream::new(trickle_frames(&full, self.trickle_max));
                s.drip = Some(delay);
                Body::Events(s)
            }
            (Some(delay), Body::Events(mut s)) => {
                let mut all = Vec::new();
                for ev in s.events.drain(..) {
                    all.extend_from_slice(&ev);
                }
                // A `cut` counts bytes now: keep the cut where it was.
                s.abort_after = None;
                s.events = trickle_frames(&all, self.trickle_max);
                s.drip = Some(delay);
                Body::Events(s)
            }
            (_, body) => body,
        };
        *resp.body_mut() = body;
        resp
    }
}

/// `bytes` as one-byte frames (the first `max` of them; the rest in one).
fn trickle_frames(bytes: &[u8], max: Option<usize>) -> VecDeque<Bytes> {
    let n = max.unwrap_or(usize::MAX).min(bytes.len());
    let mut out: VecDeque<Bytes> = bytes[..n]
        .iter()
        .map(|b| Bytes::copy_from_slice(&[*b]))
        .collect();
    if n < bytes.len() {
        out.push_back(Bytes::copy_from_slice(&bytes[n..]));
    }
    out
}

/// Where to cut a JSON body so it is certainly invalid: half way, but at a
/// char boundary and at least one byte short.
fn truncate_point(full: &[u8]) -> usize {
    let mut keep = (full.len() / 2).max(1).min(full.len().saturating_sub(1));
    while keep > 0 && keep < full.len() && (full[keep] & 0xC0) == 0x80 {
        keep -= 1;
    }
    keep
}

/// The HTML error page a load balancer would send for `status`.
pub fn html_response(status: u16) -> Response<Body> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = code.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{s} {reason}</title></head>\r\n<body>\r\n<center><h1>{s} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
        s = code.as_u16()
    );
    let mut resp = Response::new(Body::full(page));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("cloudflare"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let mut b = Behavior::default();
        b.apply_spec("fail=503, stall=20,nodone,chunks=3,bogus=1,throttle=0.5,sse_error,block,stream_exception=throttlingException,badcrc");
        assert_eq!(b.fail, Some(503));
        assert_eq!(b.stall, Some(Duration::from_millis(20)));
        assert!(b.nodone);
        assert_eq!(b.chunks, Some(3));
        assert_eq!(b.throttle, Some(0.5));
        assert!(b.sse_error);
        assert!(b.block && !b.safety && b.badcrc);
        assert_eq!(b.stream_exception.as_deref(), Some("throttlingException"));
        let mut b = Behavior::default();
        b.apply_spec("reset=before_headers,trickle=100,trickle_max=20,size=50MB");
        assert_eq!(b.reset, Some(Reset::BeforeHeaders));
        assert_eq!(b.trickle, Some(Duration::from_millis(100)));
        assert_eq!(b.trickle_max, Some(20));
        assert_eq!(b.bytes, Some(50 * 1024 * 1024));
        b.apply_spec("reset=mid_stream,size=3kb,trickle=x");
        assert_eq!(b.reset, Some(Reset::MidStream));
        assert_eq!(b.bytes, Some(3072));
        assert_eq!(b.trickle, None);
        b.apply_spec("reset=sideways,size=12");
        assert_eq!((b.reset, b.bytes), (None, Some(12)));
    }

    #[test]
    fn strict_specs() {
        let b = Behavior::parse_strict("fail=503; stall=20, nodone=0,reset=mid_stream,size=1KB");
        assert_eq!(
            b,
            Ok(Behavior {
                fail: Some(503),
                stall: Some(Duration::from_millis(20)),
                reset: Some(Reset::MidStream),
                bytes: Some(1024),
                ..Behavior::default()
            })
        );
        assert_eq!(
            Behavior::parse_strict("Fail=500,badjson").map(|b| (b.fail, b.badjson)),
            Ok((Some(500), true))
        );
        for bad in [
            "",
            " ,; ",
            "bogus=1",
            "fail=99",
            "fail=x",
            "throttle=-1",
            "chunks=0",
            "nodone=yes",
            "reset=later",
            "stream_exception",
            "size=12GB",
            "fail=503,stall=soon",
        ] {
            assert!(Behavior::parse_strict(bad).is_err(), "{bad:?}");
        }
        // The lax parser ignores what the strict one refuses.
        let mut b = Behavior::default();
        b.apply_spec("bogus=1,fail=503,nodone=yes");
        assert_eq!((b.fail, b.nodone), (Some(503), false));
    }

    #[test]
    fn trickle_frames_split() {
        let f = trickle_frames(b"abcdef", Some(3));
        assert_eq!(
            f,
            ["a", "b", "c", "def"].map(|s| Bytes::from_static(s.as_bytes()))
        );
        assert_eq!(trickle_frames(b"ab", None).len(), 2);
        assert_eq!(trickle_frames(b"", Some(3)).len(), 0);
    }

    #[test]
    fn markers() {
        let mut b = Behavior::default();
        b.apply_markers("hi [[mock:cut=2]] there [[mock:badjson]] [[mock:oops");
        assert_eq!(b.cut, Some(2));
        assert!(b.badjson);
        assert!(Behavior::may_contain_marker(b"xx[[mock:a]]"));
        assert!(!Behavior::may_contain_marker(b"xx[[moc"));
    }
}
