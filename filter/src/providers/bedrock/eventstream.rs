//! AWS event stream (`application/vnd.amazon.eventstream`) decoding: the
//! binary framing of Bedrock's `ConverseStream` answers.
//!
//! A message ("frame") is:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | total length, big-endian, the whole frame including itself and both CRCs |
//! | 4 | headers length, big-endian |
//! | 4 | prelude CRC: CRC32 of the 8 bytes before it |
//! | headers length | headers |
//! | total − headers − 16 | payload |
//! | 4 | message CRC: CRC32 of everything before it |
//!
//! A header is a name (length `u8`, UTF-8 bytes), a value type (`u8`) and
//! the value: 0 true, 1 false (no bytes), 2 `i8`, 3 `i16`, 4 `i32`, 5 `i64`,
//! 6 bytes (`u16` length + bytes), 7 string (`u16` length + UTF-8), 8
//! timestamp (`i64` milliseconds), 9 UUID (16 bytes); integers big-endian.
//! The CRC is CRC-32/ISO-HDLC (zlib's, polynomial 0xEDB88320 reflected).
//!
//! [`Decoder`] takes the bytes in any split (a carry-over buffer holds a
//! partial frame), checks the prelude CRC as soon as the prelude is there
//! (a corrupt length is caught before anything is buffered for it), caps a
//! frame at [`MAX_FRAME`] bytes, checks the message CRC and the header
//! encoding, and fails for good on the first bad frame: nothing after a
//! corrupt frame can be trusted to be a frame boundary.

use std::fmt;

/// Largest frame accepted (16 MiB; Bedrock's events are kilobytes).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Largest headers section accepted (AWS's own limit, 128 KiB).
pub const MAX_HEADERS: usize = 128 * 1024;

/// Prelude (12) + message CRC (4).
const OVERHEAD: usize = 16;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (the one zlib, gzip and AWS event streams use).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    Timestamp(i64),
    Uuid([u8; 16]),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A string header's value (`:event-type`, `:message-type`, …).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why a stream could not be decoded. Describes the framing only, never
/// the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    PreludeCrc,
    MessageCrc,
    /// Total length below 16, or headers longer than the frame allows.
    BadLength,
    TooLarge(usize),
    BadHeader,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::PreludeCrc => f.write_str("a frame's prelude CRC does not match"),
            DecodeError::MessageCrc => f.write_str("a frame's message CRC does not match"),
            DecodeError::BadLength => f.write_str("a frame has impossible lengths"),
            DecodeError::TooLarge(n) => {
                write!(f, "a frame of {n} bytes is over the {MAX_FRAME}-byte limit")
            }
            DecodeError::BadHeader => f.write_str("a frame's headers are malformed"),
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(s))
}

/// A bounds-checked reader over a headers section.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn value(&mut self) -> Option<HeaderValue> {
        Some(match self.u8()? {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(self.array()?)),
            3 => HeaderValue::Short(i16::from_be_bytes(self.array()?)),
            4 => HeaderValue::Int(i32::from_be_bytes(self.array()?)),
            5 => HeaderValue::Long(i64::from_be_bytes(self.array()?)),
            6 => {
                let n = usize::from(self.u16()?);
                HeaderValue::Bytes(self.take(n)?.to_vec())
            }
            7 => {
                let n = usize::from(self.u16()?);
                HeaderValue::String(String::from_utf8(self.take(n)?.to_vec()).ok()?)
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(self.array()?)),
            9 => HeaderValue::Uuid(self.array()?),
            _ => return None,
        })
    }
}

fn parse_headers(b: &[u8]) -> Option<Vec<(String, HeaderValue)>> {
    let mut c = Cursor { b, at: 0 };
    let mut out = Vec::new();
    while c.at < b.len() {
        let n = usize::from(c.u8()?);
        if n == 0 {
            return None;
        }
        let name = String::from_utf8(c.take(n)?.to_vec()).ok()?;
        let value = c.value()?;
        out.push((name, value));
    }
    Some(out)
}

/// Incremental decoder: feed it the body in any split.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// The stream is corrupt: nothing more is decoded.
    failed: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode every frame `bytes` completes into `out`. After an error the
    /// decoder stays failed and ignores further input.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), DecodeError> {
        if self.failed {
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let result = loop {
            match self.next_frame(start) {
                Ok(Some((frame, len))) => {
                    out.push(frame);
                    start += len;
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    self.failed = true;
                    break Err(e);
                }
            }
        };
        if self.failed {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..start.min(self.buf.len()));
        }
        result
    }

    /// Bytes of a frame not complete yet (a stream that ends with some was
    /// cut short).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The frame at `start`, with its length, if it is all there.
    fn next_frame(&self, start: usize) -> Result<Option<(Frame, usize)>, DecodeError> {
        let b = self.buf.get(start..).unwrap_or(&[]);
        let (Some(total), Some(hlen), Some(pcrc)) = (be32(b, 0), be32(b, 4), be32(b, 8)) else {
            return Ok(None);
        };
        if crc32(b.get(..8).unwrap_or(&[])) != pcrc {
            return Err(DecodeError::PreludeCrc);
        }
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        let hlen = usize::try_from(hlen).unwrap_or(usize::MAX);
        if total > MAX_FRAME {
            return Err(DecodeError::TooLarge(total));
        }
        if total < OVERHEAD || hlen > total - OVERHEAD || hlen > MAX_HEADERS {
            return Err(DecodeError::BadLength);
        }
        let Some(frame) = b.get(..total) else {
            return Ok(None);
        };
        let body_end = total - 4;
        if Some(crc32(frame.get(..body_end).unwrap_or(&[]))) != be32(frame, body_end) {
            return Err(DecodeError::MessageCrc);
        }
        let headers = frame
            .get(12..12 + hlen)
            .and_then(parse_headers)
            .ok_or(DecodeError::BadHeader)?;
        let payload = frame.get(12 + hlen..body_end).unwrap_or(&[]).to_vec();
        Ok(Some((Frame { headers, payload }, total)))
    }
}

/// Encode a frame with string headers (tests and fixtures build streams
/// with it; the filter only decodes).
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut out = total.to_be_bytes().to_vec();
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let pcrc = crc32(&out);
    out.extend_from_slice(&pcrc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let mcrc = crc32(&out);
    out.extend_from_slice(&mcrc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// A frame with one header of every type, built by hand from the spec
    /// (not through `encode`, which writes strings only), so each decoder
    /// branch runs.
    fn all_types_frame() -> Vec<u8> {
        let mut h = Vec::new();
        let mut put = |name: &str, ty: u8, value: &[u8]| {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(ty);
            h.extend_from_slice(value);
        };
        put("t", 0, &[]);
        put("f", 1, &[]);
        put("b", 2, &[0xff]);
        put("s", 3, &[0x01, 0x00]);
        put("i", 4, &[0, 0, 1, 0]);
        put("l", 5, &[0, 0, 0, 0, 0, 0, 0, 7]);
        put("y", 6, &[0, 2, 0xde, 0xad]);
        put("str", 7, &[0, 2, b'h', b'i']);
        put("ts", 8, &[0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        put("u", 9, &[7; 16]);
        let total = (16 + h.len() + 2) as u32;
        let mut out = total.to_be_bytes().to_vec();
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let c = crc32(&out);
        out.extend_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(b"{}");
        let c = crc32(&out);
        out.extend_from_slice(&c.to_be_bytes());
        out
    }

    #[test]
    fn every_header_type() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&all_types_frame(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.payload, b"{}");
        assert_eq!(
            f.headers.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![
                HeaderValue::Bool(true),
                HeaderValue::Bool(false),
                HeaderValue::Byte(-1),
                HeaderValue::Short(256),
                HeaderValue::Int(256),
                HeaderValue::Long(7),
                HeaderValue::Bytes(vec![0xde, 0xad]),
                HeaderValue::String("hi".into()),
                HeaderValue::Timestamp(1000),
                HeaderValue::Uuid([7; 16]),
            ]
        );
        assert_eq!(f.header("str"), Some("hi"));
        assert_eq!(f.header("t"), None);
    }

    #[test]
    fn empty_frame_vector() {
        // aws-c-event-stream's `encoded/positive/empty_message` vector (no
        // headers, no payload; both CRCs also checked with Python's zlib).
        let bytes = [
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff,
        ];
        let mut out = Vec::new();
        Decoder::new().feed(&bytes, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Frame {
                headers: vec![],
                payload: vec![]
            }]
        );
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let mut stream = encode(&[(":event-type", "a")], b"{\"x\":1}");
        stream.extend(encode(&[], b""));
        stream.extend(all_types_frame());
        let mut whole = Vec::new();
        Decoder::new().feed(&stream, &mut whole).unwrap();
        assert_eq!(whole.len(), 3);
        for i in 0..=stream.len() {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            d.feed(&stream[..i], &mut out).unwrap();
            d.feed(&stream[i..], &mut out).unwrap();
            assert_eq!(out, whole, "split at {i}");
            assert_eq!(d.pending(), 0);
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn corruption_is_an_error_never_a_panic() {
        let good = encode(&[(":event-type", "a")], b"{\"x\":1}");
        // Every single-byte flip is caught by one of the CRCs.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let mut d = Decoder::new();
            let mut out = Vec::new();
            let r = d.feed(&bad, &mut out);
            assert!(r.is_err() || d.pending() > 0, "flip at {i}");
            assert!(out.is_empty(), "flip at {i}");
        }
        // After an error the decoder stays failed.
        let mut d = Decoder::new();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut out = Vec::new();
        assert_eq!(d.feed(&bad, &mut out), Err(DecodeError::MessageCrc));
        assert_eq!(d.feed(&good, &mut out), Ok(()));
        assert!(out.is_empty());
    }

    #[test]
    fn bad_lengths_and_headers() {
        let frame = |total: u32, hlen: u32| {
            let mut p = total.to_be_bytes().to_vec();
            p.extend_from_slice(&hlen.to_be_bytes());
            let c = crc32(&p);
            p.extend_from_slice(&c.to_be_bytes());
            p
        };
        let mut out = Vec::new();
        assert_eq!(
            Decoder::new().feed(&frame(8, 0), &mut out),
            Err(DecodeError::BadLength)
        );
        assert_eq!(
            Decoder::new().feed(&frame(20, 5), &mut out),
            Err(DecodeError::BadLength)
        );
        assert_eq!(
            Decoder::new().feed(&frame(u32::MAX, 0), &mut out),
            Err(DecodeError::TooLarge(u32::MAX as usize))
        );
        // Headers that run past their section, an unknown value type, a
        // zero-length name, a string that is not UTF-8.
        for h in [
            &[3u8, b'a'][..],
            &[1, b'a', 42],
            &[0, 7, 0, 0],
            &[1, b'a', 7, 0, 1, 0xff],
        ] {
            let total = (16 + h.len()) as u32;
            let mut p = total.to_be_bytes().to_vec();
            p.extend_from_slice(&(h.len() as u32).to_be_bytes());
            let c = crc32(&p);
            p.extend_from_slice(&c.to_be_bytes());
            p.extend_from_slice(h);
            let c = crc32(&p);
            p.extend_from_slice(&c.to_be_bytes());
            assert_eq!(
                Decoder::new().feed(&p, &mut out),
                Err(DecodeError::BadHeader),
                "{h:?}"
            );
        }
        assert!(out.is_empty());
    }
}
