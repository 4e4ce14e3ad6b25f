//! Incremental Server-Sent Events parser.
//!
//! Envoy hands the filter a stream in chunks whose boundaries follow the
//! network, not the events. The parser keeps the incomplete tail of the last
//! chunk and yields each event once its terminating blank line has arrived.
//! Lines end in `\n`, `\r\n` or `\r` (per the SSE spec); a `\r` at the very
//! end of a chunk waits for the next byte before it is read as a line end.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// A `\r` ended the previous chunk: a `\n` starting the next one belongs to it.
    pending_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

/// Upper bound for one line kept across chunks; beyond it the line is cut
/// (an event that large is not a model's token stream).
const MAX_LINE: usize = 16 * 1024 * 1024;

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one chunk; completed events are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        if chunk.is_empty() {
            // Envoy can hand over empty chunks (an empty HTTP/2 DATA frame):
            // a `\r` that ended the previous chunk still waits for its `\n`.
            return;
        }
        let mut i = 0;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                i = 1;
            }
        }
        let mut start = i;
        while i < chunk.len() {
            let b = chunk[i];
            if b == b'\n' || b == b'\r' {
                self.push_line_bytes(&chunk[start..i]);
                self.end_line(out);
                if b == b'\r' {
                    if i + 1 == chunk.len() {
                        self.pending_cr = true;
                    } else if chunk[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        if start < chunk.len() {
            self.push_line_bytes(&chunk[start..]);
        }
    }

    /// No event or line is half-read: everything fed so far ended with the
    /// blank line of an event (or nothing was fed).
    pub fn at_event_boundary(&self) -> bool {
        self.line.is_empty() && self.data.is_none() && self.event.is_none()
    }

    /// The stream ended: a final event not followed by a blank line is
    /// dispatched (browsers drop it; being lenient here loses nothing).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                let v = v.strip_prefix(b" ").unwrap_or(v);
                (&line[..p], v)
            }
            None => (&line[..], &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            _ => {} // id, retry and unknown fields are not needed here
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = vec![];
        for c in chunks {
            p.feed(c, &mut out);
        }
        p.finish(&mut out);
        out
    }

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: message_start\ndata: {\"b\":2}\r\n\r\ndata: line1\ndata: line2\r\rdata:nospace\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: None,
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"b\":2}".into(),
            },
            SseEvent {
                event: None,
                data: "line1\nline2".into(),
            },
            SseEvent {
                event: None,
                data: "nospace".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn whole_stream() {
        assert_eq!(parse_all(&[STREAM]), expected());
    }

    #[test]
    fn every_single_split_point() {
        for i in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(i);
            assert_eq!(parse_all(&[a, b]), expected(), "split at {i}");
        }
    }

    #[test]
    fn every_pair_of_split_points() {
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let (a, rest) = STREAM.split_at(i);
                let (b, c) = rest.split_at(j - i);
                assert_eq!(parse_all(&[a, b, c]), expected(), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&chunks), expected());
    }

    #[test]
    fn empty_chunk_between_cr_and_lf() {
        let want = parse_all(&[b"data: a\r\ndata: b\r\n\r\n"]);
        assert_eq!(want.len(), 1);
        assert_eq!(
            parse_all(&[b"data: a\r", b"", b"\ndata: b\r", b"", b"", b"\n\r\n"]),
            want
        );
    }

    #[test]
    fn trailing_event_without_blank_line() {
        assert_eq!(
            parse_all(&[b"data: x"]),
            vec![SseEvent {
                event: None,
                data: "x".into()
            }]
        );
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        let out = parse_all(&[b"data: \xff\xfe\n\n"]);
        assert_eq!(out.len(), 1);
    }
}
