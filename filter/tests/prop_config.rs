#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of config validation (`Config::parse`): any JSON, any
//! bytes, and the fixture and shipped configs broken at any place give a
//! `Config` or a `ConfigError` whose `field` names a place in the document
//! (`(config)` for the document itself), never a panic.

mod prop_common;

use llm_gateway::config::{Config, ConfigError};
use prop_common::*;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::OnceLock;

fn bases() -> &'static [Value] {
    static B: OnceLock<Vec<Value>> = OnceLock::new();
    B.get_or_init(|| {
        vec![
            serde_json::from_slice(&fixture_config_text()).unwrap(),
            serde_json::from_str(&shipped_config_text()).unwrap(),
        ]
    })
}

/// The error names the document, or a field whose first steps exist in
/// `doc` (the last step may be a field that is missing, e.g. a required
/// one or an unknown one, or the entry of a list that is too short). Keys
/// may hold dots (`gpt-3.5-turbo-instruct`): the longest key that fits is
/// taken at each step.
fn names_a_field(e: &ConfigError, doc: Option<&Value>) -> Result<(), String> {
    if e.message.is_empty() {
        return Err(format!("empty message for {}", e.field));
    }
    if e.field == "(config)" {
        return Ok(());
    }
    if e.field.is_empty() {
        return Err(format!("no field: {e}"));
    }
    let Some(mut v) = doc else {
        return Ok(());
    };
    let mut rest = e.field.as_str();
    let mut first = true;
    loop {
        if !first {
            // The separator after a key (an index follows without one).
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
        first = false;
        if rest.is_empty() {
            return Ok(());
        }
        let next = match v {
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| {
                    rest.strip_prefix(k.as_str())
                        .is_some_and(|a| a.is_empty() || a.starts_with(['.', '[']))
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(k, x)| (x, &rest[k.len()..])),
            Value::Array(a) => rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(n, after)| {
                    n.parse::<usize>()
                        .ok()
                        .and_then(|i| a.get(i))
                        .map(|x| (x, after))
                }),
            _ => None,
        };
        match next {
            Some((x, after)) => {
                v = x;
                rest = after;
            }
            // The last step may be absent (a missing field, an entry past
            // the end of a list).
            None if !rest.trim_start_matches('[').contains(['.', '[']) => return Ok(()),
            None => return Err(format!("{e}: no {rest} in the document")),
        }
    }
}

fn check(bytes: &[u8], doc: Option<&Value>) -> Result<(), TestCaseError> {
    match Config::parse(bytes, &env) {
        Ok(c) => {
            prop_assert!(!c.providers.is_empty() && !c.models.is_empty());
            for m in &c.models {
                prop_assert!(m.provider < c.providers.len());
            }
        }
        Err(e) => names_a_field(&e, doc).map_err(TestCaseError::fail)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(prop_common::config(1000))]

    #[test]
    fn any_json_document(v in any_json()) {
        check(&serde_json::to_vec(&v).unwrap(), Some(&v))?;
    }

    #[test]
    fn any_bytes_document(b in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&b, None)?;
    }

    /// The fixture config (every provider kind and option) and the shipped
    /// one, with one to three edits: a value replaced by any JSON, a key
    /// removed, a key added.
    #[test]
    fn configs_mutated(
        which in 0usize..2,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any_json(), key()), 1..4),
    ) {
        let mut v = bases()[which].clone();
        for (pick, op, new, k) in edits {
            mutate(&mut v, pick, op, new, &k);
        }
        check(&serde_json::to_vec(&v).unwrap(), Some(&v))?;
    }

    /// The configs' text cut anywhere.
    #[test]
    fn configs_truncated(which in 0usize..2, cut in any::<usize>()) {
        let text = serde_json::to_vec(&bases()[which]).unwrap();
        let cut = cut % text.len();
        match Config::parse(&text[..cut], &env) {
            Ok(_) => prop_assert!(false, "a cut config parsed"),
            Err(e) => prop_assert!(!e.message.is_empty() && !e.field.is_empty(), "{e}"),
        }
    }
}

#[test]
fn the_two_bases_are_valid() {
    for b in bases() {
        Config::parse(&serde_json::to_vec(b).unwrap(), &env).unwrap();
    }
}

#[test]
fn an_empty_key_is_named_by_the_document() {
    // (Found by `any_json_document`: the field was an empty string.)
    let e = Config::parse(br#"{"": 1}"#, &env).unwrap_err();
    assert_eq!(e.field, "(config)", "{e}");
    let e = Config::parse(
        br#"{"providers":[{"name":"a","kind":"openai","cluster":"c","":1}],"models":[]}"#,
        &env,
    )
    .unwrap_err();
    assert!(e.field.starts_with("providers[0]"), "{e}");
}
