//! `llm-mock` command line: parses flags, binds, prints
//! `llm-mock listening on ADDR` and serves until SIGTERM/SIGINT.

use std::io::Write;
use std::process::ExitCode;

use llm_mock::faults::RuleSpec;
use llm_mock::{serve, Config};

const USAGE: &str = "\
usage: llm-mock [--listen ADDR] [--openai-key K]... [--azure-key K]... [--vllm-key K]...
                [--anthropic-key K]... [--azure-deployment NAME]... [--gemini-key K]...
                [--vertex-token T]... [--bedrock-api-key K]... [--aws-access-key-id ID]
                [--aws-secret-access-key SECRET] [--record-limit N] [--fault JSON]...
                [--verbose] [--quiet]

  --listen ADDR            address to bind (default 127.0.0.1:18080; port 0 = any free port)
  --openai-key K           accepted OpenAI bearer key; repeatable (default: sk-mock-openai)
  --azure-key K            accepted Azure api-key; repeatable (default: mock-azure-key)
  --vllm-key K             required vLLM bearer key; repeatable (default: no auth)
  --anthropic-key K        accepted Anthropic x-api-key; repeatable (default: sk-ant-mock)
  --azure-deployment NAME  known Azure deployment; repeatable
                           (default: gpt-4o-mini gpt-4o text-embedding-3-small gpt-35-turbo-instruct)
  --gemini-key K           accepted Gemini API key (x-goog-api-key or ?key=); repeatable
                           (default: mock-gemini-key)
  --vertex-token T         accepted Vertex AI bearer token; repeatable (default: mock-vertex-token)
  --bedrock-api-key K      accepted Bedrock API key (Authorization: Bearer); repeatable
                           (default: mock-bedrock-key)
  --aws-access-key-id ID   access key id for Bedrock SigV4 (default: AKIDMOCKEXAMPLE)
  --aws-secret-access-key SECRET
                           its secret (default: mock/secret/EXAMPLEKEY)
  --record-limit N         requests kept for GET /__mock/requests (default 200; 0 = off)
  --fault JSON             install a fault rule at start, as POST /__mock/faults would;
                           repeatable, e.g. --fault '{\"provider\":\"openai\",\"behavior\":\"fail=503\"}'
  --verbose                log one line per request to stderr
  --quiet                  print nothing but the 'listening' line
";

struct Cli {
    listen: String,
    config: Config,
    quiet: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut listen = "127.0.0.1:18080".to_string();
    let mut config = Config::default();
    let (mut openai, mut azure, mut vllm, mut anthropic, mut deployments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut gemini, mut vertex, mut bedrock) = (Vec::new(), Vec::new(), Vec::new());
    let mut quiet = false;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => listen = value("--listen")?,
            "--openai-key" => openai.push(value("--openai-key")?),
            "--azure-key" => azure.push(value("--azure-key")?),
            "--vllm-key" => vllm.push(value("--vllm-key")?),
            "--anthropic-key" => anthropic.push(value("--anthropic-key")?),
            "--azure-deployment" => deployments.push(value("--azure-deployment")?),
            "--gemini-key" => gemini.push(value("--gemini-key")?),
            "--vertex-token" => vertex.push(value("--vertex-token")?),
            "--bedrock-api-key" => bedrock.push(value("--bedrock-api-key")?),
            "--aws-access-key-id" => config.aws_access_key_id = value("--aws-access-key-id")?,
            "--aws-secret-access-key" => {
                config.aws_secret_access_key = value("--aws-secret-access-key")?
            }
            "--record-limit" => {
                config.record_limit = value("--record-limit")?
                    .parse()
                    .map_err(|_| "--record-limit needs a number".to_string())?
            }
            "--fault" => {
                let rule = value("--fault")?;
                let spec =
                    RuleSpec::parse(rule.as_bytes()).map_err(|e| format!("--fault {rule}: {e}"))?;
                config.faults.push(spec);
            }
            "--verbose" => config.verbose = true,
            "--quiet" => quiet = true,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if !openai.is_empty() {
        config.openai_keys = openai;
    }
    if !azure.is_empty() {
        config.azure_keys = azure;
    }
    config.vllm_keys = vllm;
    if !anthropic.is_empty() {
        config.anthropic_keys = anthropic;
    }
    if !deployments.is_empty() {
        config.azure_deployments = deployments;
    }
    if !gemini.is_empty() {
        config.gemini_keys = gemini;
    }
    if !vertex.is_empty() {
        config.vertex_tokens = vertex;
    }
    if !bedrock.is_empty() {
        config.bedrock_api_keys = bedrock;
    }
    Ok(Some(Cli {
        listen,
        config,
        quiet,
    }))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("llm-mock: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llm-mock: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&cli.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("llm-mock: cannot listen on {}: {e}", cli.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("llm-mock: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !cli.quiet {
            let c = &cli.config;
            eprintln!(
                "llm-mock: openai keys: {}, azure keys: {}, vllm auth: {}, anthropic keys: {}, azure deployments: {}, gemini keys: {}, vertex tokens: {}, bedrock api keys: {}, aws access key id: {}",
                c.openai_keys.len(),
                c.azure_keys.len(),
                if c.vllm_keys.is_empty() { "off" } else { "on" },
                c.anthropic_keys.len(),
                c.azure_deployments.join(" "),
                c.gemini_keys.len(),
                c.vertex_tokens.len(),
                c.bedrock_api_keys.len(),
                c.aws_access_key_id
            );
            if !c.faults.is_empty() {
                eprintln!("llm-mock: {} fault rule(s) installed", c.faults.len());
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "llm-mock listening on {addr}");
        let _ = out.flush();
        drop(out);
        match serve(listener, cli.config, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("llm-mock: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        match parse_args(args.iter().map(|s| s.to_string())) {
            Ok(Some(c)) => c,
            _ => panic!("parse failed"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&[]);
        assert_eq!(c.listen, "127.0.0.1:18080");
        assert_eq!(c.config.openai_keys, vec!["sk-mock-openai"]);
        assert_eq!(c.config.azure_keys, vec!["mock-azure-key"]);
        assert!(c.config.vllm_keys.is_empty());
        assert_eq!(c.config.anthropic_keys, vec!["sk-ant-mock"]);
        assert_eq!(c.config.azure_deployments.len(), 4);
        assert_eq!(c.config.gemini_keys, vec!["mock-gemini-key"]);
        assert_eq!(c.config.vertex_tokens, vec!["mock-vertex-token"]);
        assert_eq!(c.config.bedrock_api_keys, vec!["mock-bedrock-key"]);
        assert_eq!(c.config.aws_access_key_id, "AKIDMOCKEXAMPLE");
        assert_eq!(c.config.aws_secret_access_key, "mock/secret/EXAMPLEKEY");
    }

    #[test]
    fn cloud_flags() {
        let c = parse(&[
            "--gemini-key",
            "g1",
            "--gemini-key=g2",
            "--vertex-token",
            "ya29.t",
            "--bedrock-api-key",
            "b1",
            "--aws-access-key-id",
            "AKIDX",
            "--aws-secret-access-key=s/x",
        ]);
        assert_eq!(c.config.gemini_keys, vec!["g1", "g2"]);
        assert_eq!(c.config.vertex_tokens, vec!["ya29.t"]);
        assert_eq!(c.config.bedrock_api_keys, vec!["b1"]);
        assert_eq!(c.config.aws_access_key_id, "AKIDX");
        assert_eq!(c.config.aws_secret_access_key, "s/x");
    }

    #[test]
    fn repeated_flags() {
        let c = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--openai-key",
            "a",
            "--openai-key=b",
            "--vllm-key",
            "v",
            "--anthropic-key",
            "k1",
            "--anthropic-key=k2",
            "--azure-deployment",
            "d1",
            "--quiet",
        ]);
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.config.openai_keys, vec!["a", "b"]);
        assert_eq!(c.config.vllm_keys, vec!["v"]);
        assert_eq!(c.config.anthropic_keys, vec!["k1", "k2"]);
        assert_eq!(c.config.azure_deployments, vec!["d1"]);
        assert!(c.quiet);
    }

    #[test]
    fn fault_flags() {
        let c = parse(&[
            "--fault",
            r#"{"provider":"openai","behavior":"fail=503"}"#,
            r#"--fault={"model":"gpt-4o","behavior":"stall=10","count":2}"#,
        ]);
        assert_eq!(c.config.faults.len(), 2);
        assert_eq!(
            c.config.faults[0].provider,
            Some(llm_mock::Provider::OpenAi)
        );
        assert_eq!(c.config.faults[1].count, Some(2));
        for bad in [
            r#"{"provider":"openia","behavior":"fail=503"}"#,
            r#"{"behavior":"fail=abc"}"#,
            "not json",
        ] {
            let e = match parse_args(["--fault".to_string(), bad.to_string()].into_iter()) {
                Err(e) => e,
                Ok(_) => panic!("{bad} accepted"),
            };
            assert!(e.starts_with("--fault "), "{e}");
        }
    }

    #[test]
    fn errors() {
        assert!(parse_args(["--bogus".to_string()].into_iter()).is_err());
        assert!(parse_args(["--listen".to_string()].into_iter()).is_err());
        assert!(matches!(
            parse_args(["--help".to_string()].into_iter()),
            Ok(None)
        ));
    }
}
