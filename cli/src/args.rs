//! A tiny command-line parser: `--flag`, `--flag VALUE`, `--flag=VALUE`,
//! `-h`, `-` (stdin) and `--` (end of options).

use crate::Fail;

#[derive(Debug, PartialEq, Eq)]
pub enum Arg {
    /// `--name` or `--name=value` (the inline value, if any).
    Long(String, Option<String>),
    /// `-x`.
    Short(char),
    /// Anything else, and everything after `--`.
    Pos(String),
}

pub struct Parser<'a> {
    raw: &'a [&'a str],
    at: usize,
    only_positional: bool,
}

impl<'a> Parser<'a> {
    pub fn new(raw: &'a [&'a str]) -> Self {
        Parser {
            raw,
            at: 0,
            only_positional: false,
        }
    }

    pub fn next_arg(&mut self) -> Result<Option<Arg>, Fail> {
        let Some(&a) = self.raw.get(self.at) else {
            return Ok(None);
        };
        self.at += 1;
        if self.only_positional || a == "-" || !a.starts_with('-') {
            return Ok(Some(Arg::Pos(a.to_string())));
        }
        if a == "--" {
            self.only_positional = true;
            return self.next_arg();
        }
        if let Some(long) = a.strip_prefix("--") {
            return Ok(Some(match long.split_once('=') {
                Some((n, v)) => Arg::Long(n.to_string(), Some(v.to_string())),
                None => Arg::Long(long.to_string(), None),
            }));
        }
        let mut chars = a.chars().skip(1);
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(Some(Arg::Short(c))),
            _ => Err(Fail::usage(format!("unknown option `{a}`"))),
        }
    }

    /// The value of `--name`: given inline (`--name=v`) or the next word.
    pub fn value(&mut self, name: &str, inline: Option<String>) -> Result<String, Fail> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.raw.get(self.at) {
            Some(v) => {
                self.at += 1;
                Ok((*v).to_string())
            }
            None => Err(Fail::usage(format!("--{name} needs a value"))),
        }
    }

    /// For flags that take no value: reject `--flag=value`.
    pub fn no_value(name: &str, inline: Option<String>) -> Result<(), Fail> {
        match inline {
            None => Ok(()),
            Some(_) => Err(Fail::usage(format!("--{name} takes no value"))),
        }
    }
}

pub fn unknown(arg: Arg) -> Fail {
    match arg {
        Arg::Long(n, _) => Fail::usage(format!("unknown option `--{n}`")),
        Arg::Short(c) => Fail::usage(format!("unknown option `-{c}`")),
        Arg::Pos(p) => Fail::usage(format!("unexpected argument `{p}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(raw: &[&str]) -> Vec<Arg> {
        let mut p = Parser::new(raw);
        let mut out = vec![];
        while let Ok(Some(a)) = p.next_arg() {
            out.push(a);
        }
        out
    }

    #[test]
    fn shapes() {
        assert_eq!(
            all(&["a", "--x", "--y=1", "-h", "-", "--", "--z"]),
            vec![
                Arg::Pos("a".into()),
                Arg::Long("x".into(), None),
                Arg::Long("y".into(), Some("1".into())),
                Arg::Short('h'),
                Arg::Pos("-".into()),
                Arg::Pos("--z".into()),
            ]
        );
    }

    #[test]
    fn values() {
        let raw = ["--team", "-odd-", "--env"];
        let mut p = Parser::new(&raw);
        let Ok(Some(Arg::Long(n, v))) = p.next_arg() else {
            panic!("long")
        };
        assert_eq!(p.value(&n, v).ok().as_deref(), Some("-odd-"));
        let Ok(Some(Arg::Long(n, v))) = p.next_arg() else {
            panic!("long")
        };
        assert!(p.value(&n, v).is_err());
    }
}
