//! Who is calling: a caller key (stored only as its SHA-256) or a mesh
//! identity from a source the config trusts.

use crate::config::{Config, IdentitySource, Trust};
use crate::error::{echo, ApiError};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// What the filter can ask Envoy about the request. The proxy-wasm glue
/// implements it; tests use a map.
pub trait RequestView {
    /// A request header (lower-case name).
    fn header(&self, name: &str) -> Option<String>;
    /// An Envoy property (attribute path), raw bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
}

/// Headers a caller key may arrive in, in order of precedence.
pub const KEY_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// The caller key the client sent, if any.
pub fn presented_key(view: &dyn RequestView) -> Option<String> {
    if let Some(a) = view.header("authorization") {
        let a = a.trim();
        let key = match a.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => a,
        };
        return Some(key.to_string());
    }
    view.header("api-key")
        .or_else(|| view.header("x-api-key"))
        .map(|k| k.trim().to_string())
}

pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// How a caller was recognised (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Key,
    Principal(String),
}

fn direct_peer_ip(view: &dyn RequestView) -> Option<IpAddr> {
    let raw = view.property(&["source", "address"])?;
    let s = String::from_utf8(raw).ok()?;
    s.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

fn peer_san(view: &dyn RequestView) -> Option<String> {
    let raw = view.property(&["connection", "uri_san_peer_certificate"])?;
    String::from_utf8(raw).ok().filter(|s| !s.is_empty())
}

fn trusted(view: &dyn RequestView, t: &Trust) -> bool {
    if t.any {
        return true;
    }
    if !t.cidrs.is_empty() {
        if let Some(ip) = direct_peer_ip(view) {
            if t.cidrs.iter().any(|c| c.contains(ip)) {
                return true;
            }
        }
    }
    if !t.peers.is_empty() {
        if let Some(san) = peer_san(view) {
            if t.peers.iter().any(|p| crate::glob::matches(p, &san)) {
                return true;
            }
        }
    }
    false
}

/// The `URI=` of the last element of an `x-forwarded-client-cert` value: the
/// element the nearest (trusted) proxy appended about its own client.
pub fn xfcc_uri(value: &str) -> Option<String> {
    // Split on commas and semicolons outside double quotes.
    let mut elements: Vec<Vec<String>> = vec![vec![]];
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            ';' if !quoted => {
                if let Some(e) = elements.last_mut() {
                    e.push(std::mem::take(&mut cur));
                }
            }
            ',' if !quoted => {
                if let Some(e) = elements.last_mut() {
                    e.push(std::mem::take(&mut cur));
                }
                elements.push(vec![]);
            }
            _ => cur.push(c),
        }
    }
    if let Some(e) = elements.last_mut() {
        e.push(cur);
    }
    let last = elements.last()?;
    last.iter().find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k.eq_ignore_ascii_case("uri") && !v.is_empty()).then(|| v.to_string())
    })
}

/// The first mesh identity a configured source yields.
pub fn principal(cfg: &Config, view: &dyn RequestView) -> Option<String> {
    for s in &cfg.identity_sources {
        let found = match s {
            IdentitySource::PeerCertificate => peer_san(view),
            IdentitySource::Xfcc(t) => {
                if trusted(view, t) {
                    view.header("x-forwarded-client-cert")
                        .and_then(|v| xfcc_uri(&v))
                } else {
                    None
                }
            }
            IdentitySource::Header { header, trust } => {
                if trusted(view, trust) {
                    view.header(header)
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                } else {
                    None
                }
            }
            IdentitySource::Metadata { path } => {
                let mut p: Vec<&str> = vec!["metadata", "filter_metadata"];
                p.extend(path.iter().map(String::as_str));
                view.property(&p)
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|v| !v.is_empty())
            }
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Identify the caller: index into `cfg.callers`.
///
/// A presented key must be valid (a wrong key is a 401 even when a mesh
/// identity is there too). Keys are looked up by their SHA-256; the digest
/// found is compared again in constant time. Looking up by digest leaks at
/// most something about *digests*, from which no key can be recovered.
pub fn identify(cfg: &Config, view: &dyn RequestView) -> Result<(usize, Via), ApiError> {
    if let Some(key) = presented_key(view) {
        let digest = key_digest(&key);
        if let Some((stored, &idx)) = cfg.key_index.get_key_value(&digest) {
            if bool::from(stored.ct_eq(&digest)) {
                return Ok((idx, Via::Key));
            }
        }
        return Err(ApiError::invalid_api_key(
            "Incorrect API key provided. Ask the gateway's administrators for a key.",
        ));
    }
    if let Some(p) = principal(cfg, view) {
        if let Some(idx) = cfg
            .callers
            .iter()
            .position(|c| c.principals.iter().any(|g| crate::glob::matches(g, &p)))
        {
            return Ok((idx, Via::Principal(p)));
        }
        return Err(ApiError::invalid_api_key(format!(
            "The identity `{}` is not a caller of this gateway.",
            echo(&p)
        )));
    }
    Err(ApiError::invalid_api_key(
        "You didn't provide an API key. Send it as `Authorization: Bearer YOUR_KEY` \
         (or in `api-key` / `x-api-key`).",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct Fake {
        pub headers: HashMap<String, String>,
        pub props: HashMap<String, Vec<u8>>,
    }

    impl RequestView for Fake {
        fn header(&self, name: &str) -> Option<String> {
            self.headers.get(name).cloned()
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.props.get(&path.join(".")).cloned()
        }
    }

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cfg(extra: &str) -> Config {
        let doc = format!(
            r#"{{"providers":[{{"name":"o","kind":"openai","cluster":"c"}}],
            "models":[{{"name":"m","provider":"o"}}],
            "callers":[
              {{"id":"alice","key_sha256":"{}","models":["m"]}},
              {{"id":"mesh-a","principals":["spiffe://cluster.local/ns/a/*"]}}
            ]{extra}}}"#,
            hex(key_digest("sk-alice"))
        );
        Config::parse(doc.as_bytes(), &|_| None).unwrap()
    }

    fn view(h: &[(&str, &str)], p: &[(&str, &str)]) -> Fake {
        Fake {
            headers: h
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            props: p
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn key_in_each_header() {
        let c = cfg("");
        for (h, v) in [
            ("authorization", "Bearer sk-alice"),
            ("authorization", "bearer  sk-alice "),
            ("api-key", "sk-alice"),
            ("x-api-key", "sk-alice"),
        ] {
            assert_eq!(
                identify(&c, &view(&[(h, v)], &[])).unwrap(),
                (0, Via::Key),
                "{h}"
            );
        }
    }

    #[test]
    fn wrong_or_missing_key() {
        let c = cfg("");
        let e = identify(&c, &view(&[("authorization", "Bearer sk-bob")], &[])).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (401, Some("invalid_api_key"))
        );
        assert!(!e.message.contains("sk-bob"));
        let e = identify(&c, &view(&[], &[])).unwrap_err();
        assert_eq!(e.status, 401);
    }

    #[test]
    fn peer_certificate_identity() {
        let c = cfg(r#","identity_sources":[{"type":"peer_certificate"}]"#);
        let v = view(
            &[],
            &[(
                "connection.uri_san_peer_certificate",
                "spiffe://cluster.local/ns/a/sa/app",
            )],
        );
        assert_eq!(identify(&c, &v).unwrap().0, 1);
        let v = view(
            &[],
            &[(
                "connection.uri_san_peer_certificate",
                "spiffe://cluster.local/ns/b/sa/app",
            )],
        );
        assert_eq!(identify(&c, &v).unwrap_err().status, 401);
    }

    #[test]
    fn header_identity_only_from_trusted_sources() {
        let c = cfg(
            r#","identity_sources":[{"type":"header","header":"x-caller","trusted_cidrs":["10.0.0.0/8"]}]"#,
        );
        let h = [("x-caller", "spiffe://cluster.local/ns/a/sa/x")];
        assert_eq!(
            identify(&c, &view(&h, &[("source.address", "10.1.2.3:5555")]))
                .unwrap()
                .0,
            1
        );
        assert_eq!(
            identify(&c, &view(&h, &[("source.address", "192.168.0.1:5555")]))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(identify(&c, &view(&h, &[])).unwrap_err().status, 401);
    }

    #[test]
    fn xfcc_identity() {
        let c = cfg(
            r#","identity_sources":[{"type":"xfcc","trusted_peers":["spiffe://cluster.local/ns/istio-system/*"]}]"#,
        );
        let h = [(
            "x-forwarded-client-cert",
            r#"By=spiffe://x;Hash=abc;Subject="CN=a,O=b";URI=spiffe://cluster.local/ns/a/sa/app"#,
        )];
        let trusted = [(
            "connection.uri_san_peer_certificate",
            "spiffe://cluster.local/ns/istio-system/sa/gw",
        )];
        assert_eq!(identify(&c, &view(&h, &trusted)).unwrap().0, 1);
        assert_eq!(identify(&c, &view(&h, &[])).unwrap_err().status, 401);
    }

    #[test]
    fn xfcc_parsing() {
        assert_eq!(xfcc_uri("URI=spiffe://a").as_deref(), Some("spiffe://a"));
        assert_eq!(
            xfcc_uri("By=x;URI=spiffe://a,By=y;URI=spiffe://b").as_deref(),
            Some("spiffe://b")
        );
        assert_eq!(
            xfcc_uri(r#"Subject="a,b;c";URI=spiffe://q"#).as_deref(),
            Some("spiffe://q")
        );
        assert_eq!(xfcc_uri("Hash=1"), None);
    }

    #[test]
    fn metadata_identity() {
        let c = cfg(
            r#","identity_sources":[{"type":"metadata","path":["envoy.filters.http.jwt_authn","jwt_payload","sub"]}]"#,
        );
        let v = view(
            &[],
            &[(
                "metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload.sub",
                "spiffe://cluster.local/ns/a/sa/jwt",
            )],
        );
        assert_eq!(identify(&c, &v).unwrap().0, 1);
    }

    #[test]
    fn key_beats_identity_and_must_be_valid() {
        let c = cfg(r#","identity_sources":[{"type":"peer_certificate"}]"#);
        let v = view(
            &[("authorization", "Bearer nope")],
            &[(
                "connection.uri_san_peer_certificate",
                "spiffe://cluster.local/ns/a/sa/app",
            )],
        );
        assert_eq!(identify(&c, &v).unwrap_err().status, 401);
    }
}
