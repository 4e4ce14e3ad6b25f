//! The built binary: CLI flags, the "listening" line, port 0, SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn http(addr: &str, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Start the built binary with `args`; its address from the "listening"
/// line it prints first.
fn spawn_mock(args: &[&str], stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-mock"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("llm-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    (child, addr)
}

fn post(addr: &str, path: &str, auth: &str, body: &str) -> String {
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn binary_serves_and_exits_on_sigterm() {
    let (mut child, addr) = spawn_mock(
        &[
            "--listen",
            "127.0.0.1:0",
            "--openai-key",
            "key-one",
            "--openai-key",
            "key-two",
            "--vllm-key",
            "vk",
            "--quiet",
        ],
        Stdio::piped(),
    );
    assert!(!addr.ends_with(":0"), "{addr}");

    let health = http(
        &addr,
        "GET /__mock/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"));

    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    for key in ["key-one", "key-two"] {
        let r = post(
            &addr,
            "/v1/chat/completions",
            &format!("authorization: Bearer {key}\r\n"),
            chat,
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    // The default key is replaced when --openai-key is given.
    let r = post(
        &addr,
        "/v1/chat/completions",
        "authorization: Bearer sk-mock-openai\r\n",
        chat,
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = post(&addr, "/vllm/v1/chat/completions", "", chat);
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = post(
        &addr,
        "/vllm/v1/chat/completions",
        "authorization: Bearer vk\r\n",
        chat,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Azure defaults still apply.
    let r = post(
        &addr,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        "api-key: mock-azure-key\r\n",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_fail() {
    let out = Command::new(env!("CARGO_BIN_EXE_llm-mock"))
        .arg("--nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_llm-mock"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--azure-deployment"));
}

#[test]
fn fault_flag_installs_rules() {
    let (mut child, addr) = spawn_mock(
        &[
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--fault",
            r#"{"provider":"azure","model":"gpt-4o","behavior":"fail=503","count":1}"#,
            r#"--fault={"provider":"openai","behavior":"fail=500"}"#,
        ],
        Stdio::null(),
    );
    let list = http(
        &addr,
        "GET /__mock/faults HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    let rules: serde_json::Value = list
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        rules,
        serde_json::json!([
            {"id": 1, "provider": "azure", "model": "gpt-4o", "host": null,
             "behavior": "fail=503", "count": 1, "remaining": 1, "fired": 0},
            {"id": 2, "provider": "openai", "model": null, "host": null,
             "behavior": "fail=500", "count": null, "remaining": null, "fired": 0}
        ])
    );

    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let azure = |dep: &str| {
        post(
            &addr,
            &format!("/openai/deployments/{dep}/chat/completions?api-version=2024-10-21"),
            "api-key: mock-azure-key\r\n",
            chat,
        )
    };
    let r = azure("gpt-4o");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("x-mock-fault: 1\r\n"), "{r}");
    assert!(azure("gpt-4o").starts_with("HTTP/1.1 200"), "count=1");
    assert!(azure("gpt-4o-mini").starts_with("HTTP/1.1 200"));
    let openai = || {
        post(
            &addr,
            "/v1/chat/completions",
            "authorization: Bearer sk-mock-openai\r\n",
            chat,
        )
    };
    assert!(openai().starts_with("HTTP/1.1 500"));
    // Cleared at run time like any rule.
    let cleared = http(
        &addr,
        "DELETE /__mock/faults HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(cleared.ends_with(r#"{"cleared":1}"#), "{cleared}");
    assert!(openai().starts_with("HTTP/1.1 200"));

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn bad_fault_flag_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_llm-mock"))
        .args(["--fault", r#"{"provider":"azure","behavior":"fial=503"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("behavior: unknown knob \"fial\""), "{err}");
}
