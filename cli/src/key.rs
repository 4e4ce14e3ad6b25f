//! `llmgw key new` and `llmgw key hash`.

use crate::args::{self, Arg, Parser};
use crate::Fail;
use llm_gateway::auth::key_digest;
use llm_gateway::config::Config;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

pub const NEW_USAGE: &str = "\
Usage: llmgw key new ID [--team TEAM] [--models GLOB[,GLOB...]] [--label KEY=VALUE]...

Mint a caller key. Prints the key once, on a line of its own starting with
`key: `, then the `callers` entry to paste into the plugin config (it holds
only the key's SHA-256). The key is stored nowhere: hand it to the caller.

  ID                   the caller's id (non-empty, no whitespace); appears in
                       audit logs and usage metrics
  --team TEAM          the caller's team (for cost reports)
  --models GLOBS       models the caller may use, comma-separated globs
                       (`*` any run, `?` one character); repeatable;
                       default `*` (every model)
  --label KEY=VALUE    a label for logs and metrics; repeatable
  -h, --help           this help
";

pub const HASH_USAGE: &str = "\
Usage: llmgw key hash < FILE

Read a caller key (one line) from stdin and print its SHA-256 as 64 hex
digits, the form `callers[].key_sha256` takes. The key is never echoed.
Use it to re-register a key you already hold, or to add a second key to a
caller while rotating (`key_sha256` may be a list).

  -h, --help   this help
";

const KEY_PREFIX: &str = "sk-llmgw-";
const KEY_RANDOM_CHARS: usize = 40;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The `callers` entry printed by `key new`, fields in this order.
#[derive(Serialize)]
struct CallerSnippet {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    key_sha256: String,
    models: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// `n` characters drawn uniformly from base62 using the OS RNG. Bytes of 248
/// or more are rejected (248 = 4 * 62), so `b % 62` has no modulo bias.
fn random_base62(n: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)?;
        for &b in &buf {
            if out.len() == n {
                break;
            }
            if b < 248 {
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

pub fn generate_key() -> Result<String, Fail> {
    let random = random_base62(KEY_RANDOM_CHARS).map_err(|e| Fail {
        code: 1,
        message: format!("the OS random number generator failed: {e}"),
    })?;
    Ok(format!("{KEY_PREFIX}{random}"))
}

fn check_name(what: &str, s: &str) -> Result<(), Fail> {
    if s.is_empty() {
        return Err(Fail::usage(format!("{what} must not be empty")));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Fail::usage(format!(
            "{what} must not contain whitespace or control characters: {s:?}"
        )));
    }
    if s.len() > 256 {
        return Err(Fail::usage(format!("{what} must be at most 256 bytes")));
    }
    Ok(())
}

pub fn new(raw: &[&str]) -> Result<u8, Fail> {
    let mut p = Parser::new(raw);
    let mut id: Option<String> = None;
    let mut team: Option<String> = None;
    let mut models: Vec<String> = vec![];
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    while let Some(arg) = p.next_arg()? {
        if is_help(&arg) {
            print!("{NEW_USAGE}");
            return Ok(0);
        }
        match arg {
            Arg::Long(n, v) if n == "team" => {
                if team.is_some() {
                    return Err(Fail::usage("--team given twice"));
                }
                team = Some(p.value(&n, v)?);
            }
            Arg::Long(n, v) if n == "models" => {
                let list = p.value(&n, v)?;
                for g in list.split(',').map(str::trim) {
                    if g.is_empty() {
                        return Err(Fail::usage(format!(
                            "--models: empty glob in {list:?} (use a comma-separated list)"
                        )));
                    }
                    check_name("--models glob", g)?;
                    models.push(g.to_string());
                }
            }
            Arg::Long(n, v) if n == "label" => {
                let kv = p.value(&n, v)?;
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(Fail::usage(format!("--label needs KEY=VALUE, got {kv:?}")));
                };
                if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(Fail::usage(format!(
                        "--label: the key must be non-empty without whitespace, got {k:?}"
                    )));
                }
                if labels.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(Fail::usage(format!("--label {k} given twice")));
                }
            }
            Arg::Pos(s) if id.is_none() => id = Some(s),
            other => return Err(args::unknown(other)),
        }
    }
    let Some(id) = id else {
        return Err(Fail::usage(
            "key new needs the caller's ID: llmgw key new ID [--team TEAM] [--models GLOBS]",
        ));
    };
    check_name("ID", &id)?;
    if let Some(t) = &team {
        check_name("--team", t)?;
    }
    if models.is_empty() {
        models.push("*".to_string());
    }

    let key = generate_key()?;
    let snippet = CallerSnippet {
        id,
        team,
        key_sha256: hex(&key_digest(&key)),
        models,
        labels,
    };
    let json = serde_json::to_string_pretty(&snippet).map_err(|e| Fail {
        code: 1,
        message: format!("cannot format the caller entry: {e}"),
    })?;
    // The entry must pass the filter's own validation before a key is shown.
    validate_snippet(&json)?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "key: {key}")
        .and_then(|_| writeln!(out, "{json}"))
        .and_then(|_| out.flush())
        .map_err(|e| Fail {
            code: 1,
            message: format!("cannot write to stdout: {e}"),
        })?;
    eprintln!(
        "llmgw: the key above is shown only now and is stored nowhere (the config holds only its SHA-256); give it to the caller over a secure channel."
    );
    Ok(0)
}

fn validate_snippet(caller_json: &str) -> Result<(), Fail> {
    let doc = format!(
        r#"{{"providers":[{{"name":"p","kind":"openai","cluster":"c"}}],
            "models":[{{"name":"m","provider":"p"}}],
            "callers":[{caller_json}]}}"#
    );
    Config::parse(doc.as_bytes(), &|_| None)
        .map(|_| ())
        .map_err(|e| Fail::usage(format!("the caller entry would be rejected: {e}")))
}

fn is_help(arg: &Arg) -> bool {
    matches!(arg, Arg::Short('h')) || matches!(arg, Arg::Long(n, None) if n == "help")
}

pub fn hash(raw: &[&str]) -> Result<u8, Fail> {
    let mut p = Parser::new(raw);
    if let Some(arg) = p.next_arg()? {
        if is_help(&arg) {
            print!("{HASH_USAGE}");
            return Ok(0);
        }
        return Err(match arg {
            Arg::Pos(_) => Fail::usage(
                "key hash reads the key from stdin, not from the command line \
                 (arguments end up in shell history): llmgw key hash < key.txt",
            ),
            other => args::unknown(other),
        });
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Paste the key and press Enter: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| Fail {
        code: 2,
        message: format!("cannot read the key from stdin: {e}"),
    })?;
    let key = line.trim();
    if key.is_empty() {
        return Err(Fail::usage("no key on stdin"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Fail::usage(
            "the key contains whitespace or control characters (one key, one line)",
        ));
    }
    println!("{}", hex(&key_digest(key)));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_right_shape() {
        let k = generate_key().unwrap_or_default();
        assert!(k.starts_with(KEY_PREFIX));
        let rest = &k[KEY_PREFIX.len()..];
        assert_eq!(rest.len(), KEY_RANDOM_CHARS);
        assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn base62_is_roughly_uniform() {
        // 62 * 1000 draws; each symbol expected 1000 times. A biased mapping
        // (plain b % 62) would over-draw the first 8 symbols by ~3%; this
        // only guards against gross mistakes (e.g. a symbol never drawn).
        let s = random_base62(62_000).unwrap_or_default();
        let mut counts = [0u32; 62];
        for b in s.bytes() {
            if let Some(i) = BASE62.iter().position(|&c| c == b) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts.iter().sum::<u32>(), 62_000);
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
