//! `llmgw`: the gateway's admin command.
//!
//! * `llmgw key new ID ...` mints a caller key and prints the `callers`
//!   entry (with the key's SHA-256) to paste into the plugin config.
//! * `llmgw key hash` prints the SHA-256 of a key read from stdin.
//! * `llmgw config check FILE...` validates plugin configs exactly as the
//!   filter does inside Envoy, wherever they are embedded (plain JSON, Envoy
//!   bootstrap or ECDS YAML, Istio EnvoyFilter / WasmPlugin, ConfigMap).
//!
//! Exit codes: 0 success, 1 a config has errors (or a key could not be
//! made), 2 usage error, unreadable input, or no plugin config found.

mod args;
mod check;
mod key;

use std::process::ExitCode;

pub const USAGE: &str = "\
llmgw: admin command for the LLM gateway (Envoy proxy-wasm filter)

Usage:
  llmgw key new ID [--team TEAM] [--models GLOB[,GLOB...]] [--label KEY=VALUE]...
  llmgw key hash                 (reads the key from stdin)
  llmgw config check FILE... [--env NAME=VALUE]... [--assume-env]
  llmgw --version

Run `llmgw key new --help`, `llmgw key hash --help` or
`llmgw config check --help` for details.
";

/// A failure that ends the command: message for stderr and the exit code.
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub message: String,
}

impl Fail {
    pub fn usage(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("llmgw: {}", f.message);
            if f.code == 2 && !f.message.contains("--help") {
                eprintln!("(run `llmgw --help` for usage)");
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(argv: &[String]) -> Result<u8, Fail> {
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            Ok(0)
        }
        ["-V" | "--version"] => {
            println!("llmgw {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        ["key", "new", rest @ ..] => key::new(rest),
        ["key", "hash", rest @ ..] => key::hash(rest),
        ["config", "check", rest @ ..] => check::run(rest),
        ["key"] | ["key", "-h" | "--help"] => {
            print!("{}{}", key::NEW_USAGE, key::HASH_USAGE);
            Ok(0)
        }
        ["config"] | ["config", "-h" | "--help"] => {
            print!("{}", check::USAGE);
            Ok(0)
        }
        ["key", other, ..] => Err(Fail::usage(format!(
            "unknown command `key {other}` (use `key new` or `key hash`)"
        ))),
        ["config", other, ..] => Err(Fail::usage(format!(
            "unknown command `config {other}` (use `config check`)"
        ))),
        [other, ..] => Err(Fail::usage(format!("unknown command `{other}`"))),
    }
}
