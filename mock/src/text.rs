//! Deterministic text helpers: token counting, reply shaping, ids and
//! embedding vectors. Everything here is a pure function of its inputs so
//! that tests (and the gateway's accounting) can predict the mock's output.

/// Counts "tokens" the way the mock reports them in `usage`.
///
/// The rule is deterministic and documented so tests can predict it:
/// the text is split on whitespace; every resulting word contributes
/// * one token for each ASCII punctuation character it contains,
/// * one token for each "wide" character (UTF-8 length >= 3: CJK, emoji, ...),
/// * plus one token if it contains any other character (letters, digits, ...).
///
/// So `"Hello, world!"` is 4 tokens, `"gpt-4o."` is 3, `"你好"` is 2 and the
/// empty string is 0. This is close to real BPE counts for English prose.
pub fn count_tokens(text: &str) -> u32 {
    text.split_whitespace().map(word_tokens).sum()
}

fn word_tokens(word: &str) -> u32 {
    let mut n = 0;
    let mut other = false;
    for c in word.chars() {
        if c.is_ascii_punctuation() || c.len_utf8() >= 3 {
            n += 1;
        } else {
            other = true;
        }
    }
    n + u32::from(other)
}

/// Splits `text` into pieces of "word plus the whitespace that follows it"
/// (leading whitespace sticks to the first piece). Concatenating the pieces
/// gives back `text`.
pub fn split_words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    // Skip leading whitespace (it belongs to the first piece).
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    while i < bytes.len() {
        // word
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        // following whitespace
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push(&text[start..i]);
        start = i;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Splits `text` into exactly `n` non-empty pieces (for the `chunks=N`
/// knob). With more words than `n`, words are grouped; with fewer, filler
/// words are appended. Returns the pieces; their concatenation is the
/// (possibly padded) content.
pub fn split_into(text: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let words = split_words(text);
    if words.len() >= n {
        let base = words.len() / n;
        let extra = words.len() % n;
        let mut out = Vec::with_capacity(n);
        let mut idx = 0;
        for i in 0..n {
            let take = base + usize::from(i < extra);
            out.push(words[idx..idx + take].concat());
            idx += take;
        }
        return out;
    }
    let mut out: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
    if let Some(last) = out.last_mut() {
        if !last.ends_with(char::is_whitespace) {
            last.push(' ');
        }
    }
    let filler = FILLER_WORDS;
    let mut k = 0;
    while out.len() < n {
        let w = filler[k % filler.len()];
        k += 1;
        if out.len() + 1 == n {
            out.push(w.to_string());
        } else {
            out.push(format!("{w} "));
        }
    }
    out
}

const FILLER_WORDS: [&str; 10] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
];

/// `n` bytes of ASCII filler text made of words and spaces.
pub fn filler(n: usize) -> String {
    const PATTERN: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
    let mut s = String::with_capacity(n);
    while s.len() + PATTERN.len() <= n {
        s.push_str(PATTERN);
    }
    s.push_str(&PATTERN[..n - s.len()]);
    s
}

/// Keeps whole words (with their separators) while the running token count
/// stays within `max_tokens`. Returns the kept prefix (trailing whitespace
/// removed) and whether anything was cut.
pub fn cut_to_tokens(text: &str, max_tokens: u64) -> (String, bool) {
    let mut used: u64 = 0;
    let mut end = 0;
    for piece in split_words(text) {
        let t = u64::from(count_tokens(piece));
        if used + t > max_tokens {
            return (text[..end].trim_end().to_string(), true);
        }
        used += t;
        end += piece.len();
    }
    (text.to_string(), false)
}

/// First `n` characters of `s`.
pub fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64: tiny, fast, good-enough PRNG for deterministic output.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_signed_unit(&mut self) -> f32 {
        let x = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32; // [0,1)
        x * 2.0 - 1.0
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` base62 characters derived deterministically from `seed`.
pub fn base62_id(seed: u64, len: usize) -> String {
    let mut rng = SplitMix64(seed);
    (0..len)
        .map(|_| BASE62[(rng.next_u64() % 62) as usize] as char)
        .collect()
}

/// `len` lowercase hex characters derived deterministically from `seed`.
pub fn hex_id(seed: u64, len: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    let mut rng = SplitMix64(seed);
    let mut out = String::with_capacity(len);
    let mut word = 0u64;
    for i in 0..len {
        if i % 16 == 0 {
            word = rng.next_u64();
        }
        out.push(HEX[(word & 0xf) as usize] as char);
        word >>= 4;
    }
    out
}

/// A UUID-looking (version 4 layout) string derived from `seed`.
pub fn uuid(seed: u64) -> String {
    let h = hex_id(seed, 32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Deterministic, L2-normalised embedding of `dims` floats for `text`.
///
/// The vector is seeded from the FNV-1a hash of the text only (not the
/// model), so the same text always embeds identically. Like the real
/// `text-embedding-3-*` models, a shortened vector (`dimensions`) is the
/// re-normalised prefix of the full one.
pub fn embedding(text: &[u8], dims: usize) -> Vec<f32> {
    let mut rng = SplitMix64(fnv1a(text));
    let mut v: Vec<f32> = (0..dims).map(|_| rng.next_signed_unit()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello, world!"), 4);
        assert_eq!(count_tokens("gpt-4o."), 3);
        assert_eq!(count_tokens("你好"), 2);
        assert_eq!(count_tokens("  a  b \n c "), 3);
        assert_eq!(count_tokens("!"), 1);
    }

    #[test]
    fn words_roundtrip() {
        for s in ["", "a", " a b  c ", "Hello from the mock.", "x\ny"] {
            assert_eq!(split_words(s).concat(), s);
        }
        assert_eq!(split_words("a b c"), vec!["a ", "b ", "c"]);
    }

    #[test]
    fn split_exact() {
        let p = split_into("a b c d e", 2);
        assert_eq!(p, vec!["a b c ", "d e"]);
        let p = split_into("a b", 4);
        assert_eq!(p.len(), 4);
        assert_eq!(p.concat(), "a b lorem ipsum");
        let p = split_into("", 3);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn cut() {
        assert_eq!(
            cut_to_tokens("Hello from the mock", 2),
            ("Hello from".to_string(), true)
        );
        assert_eq!(cut_to_tokens("a b", 5), ("a b".to_string(), false));
    }

    #[test]
    fn filler_len() {
        for n in [0, 1, 10, 63, 64, 1000] {
            assert_eq!(filler(n).len(), n);
        }
    }

    #[test]
    fn embedding_norm_and_prefix() {
        let a = embedding(b"hi", 1536);
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
        let b = embedding(b"hi", 8);
        let ratio = a[0] / b[0];
        assert!((a[1] / b[1] - ratio).abs() < 1e-3);
        assert_ne!(embedding(b"ho", 4), embedding(b"hi", 4));
    }

    #[test]
    fn first_chars_unicode() {
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(first_chars("ab", 5), "ab");
    }
}
