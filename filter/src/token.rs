//! Access tokens the filter fetches itself (Vertex AI's `token_source:
//! gce_metadata`), kept in Envoy shared data so that one fetch serves every
//! worker. Plain Rust: the glue does the host calls, this decides.
//!
//! Shared data, per provider (`{KEY_PREFIX}{provider name}`):
//! - the token: `"<expires_at unix seconds> <token>"`;
//! - `…/lease`: `"<deadline unix seconds>"`, taken with compare-and-swap by
//!   the VM that fetches, so only one fetch runs at a time in the process.
//!
//! A request uses the token while it is valid for [`MIN_VALIDITY`] more
//! seconds; the timer refetches it [`REFRESH_BEFORE`] seconds before expiry.

/// Shared-data key prefix; the provider's name follows.
pub const KEY_PREFIX: &str = "llm-gateway/token/";
/// A request does not use a token that expires within this many seconds.
pub const MIN_VALIDITY: u64 = 30;
/// The timer fetches a new token this many seconds before expiry.
pub const REFRESH_BEFORE: u64 = 300;
/// How long a fetch lease holds (longer than the fetch's timeout).
pub const LEASE_SECONDS: u64 = 10;
/// Timeout of the fetch.
pub const FETCH_TIMEOUT_SECONDS: u64 = 5;

/// Where a provider's token comes from: the metadata server, reached
/// through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    /// Envoy cluster of the metadata server.
    pub cluster: String,
    /// `:authority` of the fetch.
    pub host: String,
    /// `:path` of the fetch.
    pub path: String,
}

/// One token the glue keeps fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFetch {
    /// Provider name (for logs and replies).
    pub provider: String,
    /// Shared-data key of the token.
    pub key: String,
    pub cluster: String,
    pub host: String,
    pub path: String,
}

impl TokenFetch {
    /// Shared-data key of this fetch's lease.
    pub fn lease_key(&self) -> String {
        format!("{}/lease", self.key)
    }
}

/// The shared-data key of a provider's token.
pub fn key_for(provider: &str) -> String {
    format!("{KEY_PREFIX}{provider}")
}

/// A cached token.
#[derive(Clone, PartialEq, Eq)]
pub struct Cached {
    pub expires_at: u64,
    pub token: String,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cached {{ expires_at: {}, token: *** }}",
            self.expires_at
        )
    }
}

impl Cached {
    /// The shared-data value.
    pub fn format(&self) -> Vec<u8> {
        format!("{} {}", self.expires_at, self.token).into_bytes()
    }

    /// Read a shared-data value (`None` if absent or unreadable).
    pub fn parse(value: Option<&[u8]>) -> Option<Cached> {
        let s = std::str::from_utf8(value?).ok()?;
        let (exp, token) = s.split_once(' ')?;
        let expires_at = exp.parse().ok()?;
        let ok = !token.is_empty() && !token.bytes().any(|b| b.is_ascii_control() || b == b' ');
        ok.then(|| Cached {
            expires_at,
            token: token.to_string(),
        })
    }

    /// Good enough for a request sent now.
    pub fn usable(&self, now: u64) -> bool {
        self.expires_at >= now.saturating_add(MIN_VALIDITY)
    }
}

/// Whether the timer should fetch a new token (none, or one that expires
/// within [`REFRESH_BEFORE`] seconds).
pub fn needs_refresh(cached: Option<&Cached>, now: u64) -> bool {
    cached.is_none_or(|c| c.expires_at < now.saturating_add(REFRESH_BEFORE))
}

/// Whether a lease (its shared-data value) may be taken now: absent,
/// unreadable or past its deadline.
pub fn lease_free(value: Option<&[u8]>, now: u64) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_none_or(|deadline| deadline <= now)
}

/// The value of a lease taken now.
pub fn lease_value(now: u64) -> Vec<u8> {
    now.saturating_add(LEASE_SECONDS).to_string().into_bytes()
}

/// The token to cache from a metadata-server answer (`status`, `body`)
/// fetched at `now`, or why there is none (never containing the token).
pub fn from_answer(status: Option<u16>, body: &[u8], now: u64) -> Result<Cached, String> {
    match status {
        Some(200) => {}
        Some(s) => return Err(format!("the metadata server answered HTTP {s}")),
        None => return Err("the metadata server's answer has no status".to_string()),
    }
    let (header, expires_in) =
        crate::providers::vertex::access_token(body).map_err(str::to_string)?;
    if expires_in <= MIN_VALIDITY {
        return Err(format!(
            "the metadata server's token expires in {expires_in} s"
        ));
    }
    let token = header
        .0
        .strip_prefix("Bearer ")
        .unwrap_or(&header.0)
        .to_string();
    Ok(Cached {
        expires_at: now.saturating_add(expires_in),
        token,
    })
}

/// Of the cached token and a new one, the one to keep (the later expiry).
pub fn keep_newer(old: Option<Cached>, new: Cached) -> Option<Cached> {
    match old {
        Some(o) if o.expires_at >= new.expires_at => None,
        _ => Some(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_parse_and_freshness() {
        let c = Cached {
            expires_at: 1000,
            token: "ya29.abc".into(),
        };
        assert_eq!(c.format(), b"1000 ya29.abc");
        assert_eq!(Cached::parse(Some(&c.format())), Some(c.clone()));
        assert!(!format!("{c:?}").contains("ya29"));
        assert_eq!(Cached::parse(None), None);
        assert_eq!(Cached::parse(Some(b"x ya29")), None);
        assert_eq!(Cached::parse(Some(b"1000 ")), None);
        assert_eq!(Cached::parse(Some(b"1000 a b")), None);
        assert!(c.usable(970));
        assert!(!c.usable(971));
        assert!(needs_refresh(None, 0));
        assert!(!needs_refresh(Some(&c), 700));
        assert!(needs_refresh(Some(&c), 701));
    }

    #[test]
    fn lease() {
        assert!(lease_free(None, 5));
        assert!(lease_free(Some(b"junk"), 5));
        assert!(lease_free(Some(b"5"), 5));
        assert!(!lease_free(Some(b"6"), 5));
        assert_eq!(lease_value(5), b"15");
        assert!(!lease_free(Some(&lease_value(5)), 14));
        let f = TokenFetch {
            provider: "v".into(),
            key: key_for("v"),
            cluster: "c".into(),
            host: "h".into(),
            path: "/p".into(),
        };
        assert_eq!(f.lease_key(), "llm-gateway/token/v/lease");
    }

    #[test]
    fn answers() {
        let body = br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#;
        let c = from_answer(Some(200), body, 100).unwrap();
        assert_eq!((c.expires_at, c.token.as_str()), (3699, "ya29.x"));
        let e = from_answer(Some(403), body, 100).unwrap_err();
        assert!(e.contains("403") && !e.contains("ya29"), "{e}");
        assert!(from_answer(None, body, 100).is_err());
        assert!(from_answer(Some(200), b"nope", 100).is_err());
        let short = br#"{"access_token":"ya29.x","expires_in":10}"#;
        assert!(from_answer(Some(200), short, 100).is_err());
        let newer = Cached {
            expires_at: 10,
            token: "b".into(),
        };
        let older = Cached {
            expires_at: 5,
            token: "a".into(),
        };
        assert_eq!(keep_newer(None, older.clone()), Some(older.clone()));
        assert_eq!(keep_newer(Some(newer.clone()), older.clone()), None);
        assert_eq!(keep_newer(Some(older), newer.clone()), Some(newer));
    }
}
