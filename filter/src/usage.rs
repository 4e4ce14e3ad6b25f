//! Token usage as the OpenAI API reports it, read from answers and streams.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<RawUsage>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Self {
        Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r
                .total_tokens
                .unwrap_or(r.prompt_tokens + r.completion_tokens),
            cached_tokens: r
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            reasoning_tokens: r
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// The `usage` object of an OpenAI-shaped JSON document (a whole answer or
/// one stream chunk), if it has a non-null one.
pub fn openai_usage(json: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(json)
        .ok()
        .and_then(|w| w.usage)
        .map(Usage::from)
}

/// How much of the end of a non-streamed answer is kept to find `usage`
/// (OpenAI puts it after `choices`/`data`, near the end).
pub const TAIL_KEEP: usize = 16 * 1024;

/// Keeps the last [`TAIL_KEEP`] bytes of a body that is forwarded as it
/// arrives, so the usage can be read without holding the whole answer.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL_KEEP {
            self.buf.clear();
            self.buf
                .extend_from_slice(&chunk[chunk.len() - TAIL_KEEP..]);
            return;
        }
        let over = (self.buf.len() + chunk.len()).saturating_sub(TAIL_KEEP);
        if over > 0 {
            self.buf.drain(..over);
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The last top-level-looking `"usage":{...}` object in the tail. A
    /// `"usage"` inside a string is escaped (`\"usage\"`) and skipped.
    pub fn usage(&self) -> Option<Usage> {
        let pat = b"\"usage\"";
        let mut end = self.buf.len();
        while let Some(pos) = self.buf[..end].windows(pat.len()).rposition(|w| w == pat) {
            end = pos;
            if pos > 0 && self.buf[pos - 1] == b'\\' {
                continue;
            }
            let rest = &self.buf[pos + pat.len()..];
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            let Some(rest) = trim_colon(rest) else {
                continue;
            };
            let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<RawUsage>();
            if let Some(Ok(u)) = de.next() {
                return Some(u.into());
            }
        }
        None
    }
}

fn trim_colon(b: &[u8]) -> Option<&[u8]> {
    let i = b.iter().position(|c| !c.is_ascii_whitespace())?;
    let b = b[i..].strip_prefix(b":")?;
    let j = b.iter().position(|c| !c.is_ascii_whitespace())?;
    Some(&b[j..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_full_usage() {
        let u = openai_usage(br#"{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}"#).unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
                cached_tokens: 3,
                reasoning_tokens: 2
            }
        );
    }

    #[test]
    fn null_or_missing_usage() {
        assert_eq!(openai_usage(br#"{"usage":null}"#), None);
        assert_eq!(openai_usage(br#"{"choices":[]}"#), None);
        assert_eq!(openai_usage(b"not json"), None);
    }

    #[test]
    fn tail_finds_usage_at_every_split_and_ignores_quoted_usage() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 99} trick"}}],"usage": {"prompt_tokens":10,"completion_tokens":5,"total_tokens":15},"system_fingerprint":"fp"}"#;
        for i in 0..=body.len() {
            let mut t = Tail::default();
            t.push(&body[..i]);
            t.push(&body[i..]);
            assert_eq!(t.usage().unwrap().total_tokens, 15, "split {i}");
        }
        let mut t = Tail::default();
        t.push(br#"{"content":"\"usage\":{\"prompt_tokens\":1}"}"#);
        assert_eq!(t.usage(), None);
    }

    #[test]
    fn tail_is_bounded() {
        let mut t = Tail::default();
        for _ in 0..100 {
            t.push(&[b'x'; 1000]);
        }
        t.push(br#","usage":{"prompt_tokens":1,"completion_tokens":1}}"#);
        assert!(t.buf.len() <= TAIL_KEEP);
        assert_eq!(t.usage().unwrap().total_tokens, 2);
        t.push(&vec![b'y'; TAIL_KEEP * 2]);
        assert_eq!(t.buf.len(), TAIL_KEEP);
    }

    #[test]
    fn embeddings_usage_has_no_completion() {
        let u = openai_usage(br#"{"usage":{"prompt_tokens":8,"total_tokens":8}}"#).unwrap();
        assert_eq!(u.total_tokens, 8);
        assert_eq!(u.completion_tokens, 0);
    }
}
