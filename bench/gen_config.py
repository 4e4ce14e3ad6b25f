"""The benchmark's "realistic" plugin configuration and LiteLLM's config.

Plugin config: 50 models over 8 providers of 5 kinds (every provider's
cluster is the one `mock` cluster of the bench Envoy), 1 000 callers in 20
teams with SHA-256 key digests and a mix of model globs, and quotas (when
the filter accepts them) with limits far above what the bench sends, so
that every counter is updated on every request but nothing is rejected.
Provider keys reach the filter through the VM environment (`auth.from:
env`, set as `vm_config.environment_variables.key_values` by the harness),
so the cluster is exactly plain Envoy's: no credential injector.

Keys are derived from a fixed seed: the bench is repeatable and the keys
are worthless outside it.

    python bench/gen_config.py OUT_DIR [--quotas on|off]
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

#: What the mock accepts (its defaults; see mock/README.md).
MOCK_KEYS = {
    "BENCH_OPENAI_KEY": "sk-mock-openai",
    "BENCH_AZURE_KEY": "mock-azure-key",
    "BENCH_ANTHROPIC_KEY": "sk-ant-mock",
    "BENCH_GEMINI_KEY": "mock-gemini-key",
}

#: The model every bench request asks for (an OpenAI pass-through model).
BENCH_MODEL = "gpt-4o-mini"
N_CALLERS = 1000
N_TEAMS = 20
#: The caller the bench sends as (in the middle of the list, with globs).
BENCH_CALLER = 617
SEED = "llmgw-bench-v1"

PROVIDERS = [
    {"name": "openai", "kind": "openai", "cluster": "mock", "host": "api.openai.com",
     "auth": {"from": "env", "env": "BENCH_OPENAI_KEY"}},
    {"name": "openai-eu", "kind": "openai", "cluster": "mock", "host": "eu.api.openai.com",
     "auth": {"from": "env", "env": "BENCH_OPENAI_KEY"}},
    {"name": "azure", "kind": "azure", "cluster": "mock", "host": "bench.openai.azure.com",
     "auth": {"from": "env", "env": "BENCH_AZURE_KEY"}, "options": {"api_version": "2024-10-21"}},
    {"name": "azure-eu", "kind": "azure", "cluster": "mock", "host": "bench-eu.openai.azure.com",
     "auth": {"from": "env", "env": "BENCH_AZURE_KEY"}, "options": {"api_version": "2024-10-21"}},
    {"name": "ollama", "kind": "openai_compatible", "cluster": "mock", "host": "localhost:11434",
     "base_path": "/ollama/v1", "auth": {"from": "none"}},
    {"name": "vllm", "kind": "openai_compatible", "cluster": "mock", "host": "vllm.local:8000",
     "base_path": "/vllm/v1", "auth": {"from": "none"}},
    {"name": "anthropic", "kind": "anthropic", "cluster": "mock", "host": "api.anthropic.com",
     "auth": {"from": "env", "env": "BENCH_ANTHROPIC_KEY"}},
    {"name": "gemini", "kind": "gemini", "cluster": "mock",
     "auth": {"from": "env", "env": "BENCH_GEMINI_KEY"}},
]


def models() -> list[dict]:
    out: list[dict] = []

    def add(name, provider, upstream=None, kind="chat", price=(1.0, 2.0), ctx=128000, aliases=()):
        m = {"name": name, "provider": provider, "kind": kind,
             "context_window": ctx, "max_output_tokens": 16384,
             "price": {"input": price[0], "output": price[1]}}
        if upstream:
            m["upstream_model"] = upstream
        if aliases:
            m["aliases"] = list(aliases)
        out.append(m)

    add("gpt-4o-mini", "openai", price=(0.15, 0.60), aliases=["gpt-4o-mini-2024-07-18"])
    add("gpt-4o", "openai", "gpt-4o-2024-08-06", price=(2.5, 10.0))
    add("gpt-4.1", "openai", price=(2.0, 8.0), ctx=1047576)
    add("gpt-4.1-mini", "openai", price=(0.4, 1.6), ctx=1047576)
    add("gpt-4.1-nano", "openai", price=(0.1, 0.4), ctx=1047576)
    add("gpt-5", "openai", price=(1.25, 10.0), ctx=400000)
    add("gpt-5-mini", "openai", price=(0.25, 2.0), ctx=400000)
    add("o3-mini", "openai", price=(1.1, 4.4), ctx=200000)
    add("gpt-3.5-turbo-instruct", "openai", kind="completion", price=(1.5, 2.0), ctx=4096)
    add("text-embedding-3-small", "openai", kind="embedding", price=(0.02, 0.0), ctx=8191)
    add("text-embedding-3-large", "openai", kind="embedding", price=(0.13, 0.0), ctx=8191)
    for i in range(1, 8):  # regional / fine-tuned deployments of the same API
        add(f"ft-gpt-4o-mini-team{i:02d}", "openai-eu", f"ft:gpt-4o-mini:acme:team{i:02d}", price=(0.3, 1.2))
    for name in ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini"]:
        add(f"azure-{name}", "azure", name, price=(0.2, 0.8))
        add(f"azure-eu-{name}", "azure-eu", name, price=(0.2, 0.8))
    add("azure-text-embedding-3-small", "azure", "text-embedding-3-small", kind="embedding", price=(0.02, 0.0))
    for name in ["llama3.2", "llama3.1:8b", "mistral", "qwen2.5:7b", "phi4", "gemma3", "deepseek-r1:8b", "codellama"]:
        add(name, "ollama", price=(0.0, 0.0))
    add("nomic-embed-text", "ollama", kind="embedding", price=(0.0, 0.0))
    for name, up in [("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct"), ("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct"),
                     ("mixtral-8x7b", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
                     ("deepseek-v3", "deepseek-ai/DeepSeek-V3")]:
        add(name, "vllm", up, price=(0.1, 0.1))
    for name, up in [("claude-sonnet-4-5", "claude-sonnet-4-5"), ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
                     ("claude-opus-4-1", "claude-opus-4-1"), ("claude-3-5-haiku", "claude-3-5-haiku-latest"), ("claude-opus-4-5", "claude-opus-4-5")]:
        add(name, "anthropic", up, price=(3.0, 15.0), ctx=200000)
    for name in ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-2.5-flash-lite"]:
        add(name, "gemini", price=(0.3, 2.5), ctx=1048576)
    add("gemini-embedding-001", "gemini", kind="embedding", price=(0.15, 0.0))
    assert len(out) == 50, len(out)
    return out


def caller_key(i: int) -> str:
    return "sk-llmgw-bench-" + hashlib.sha256(f"{SEED}/{i}".encode()).hexdigest()[:32]


def key_sha256(key: str) -> str:
    """README "Callers and keys": hex SHA-256 of the key as sent."""
    return hashlib.sha256(key.encode()).hexdigest()


GLOBS = [["*"], ["gpt-*", "claude-*"], ["gpt-4o*", "text-embedding-*"], ["azure-*", "gpt-4o-mini"],
         ["llama*", "qwen*", "mistral*", "gpt-4o-mini"], ["gemini-*", "gpt-*"]]


def callers(n: int = N_CALLERS, extra: list[dict] | None = None) -> list[dict]:
    out = []
    for i in range(n):
        c = {"id": f"caller-{i:04d}", "team": f"team-{i % N_TEAMS:02d}",
             "key_sha256": key_sha256(caller_key(i)), "models": GLOBS[i % len(GLOBS)],
             "labels": {"env": "bench", "cost_center": f"cc-{i % 7}"}}
        out.append(c)
    out[BENCH_CALLER]["models"] = ["gpt-*", "claude-*", "text-embedding-*"]
    return out + (extra or [])


BIG = 10**9


def quotas() -> dict:
    """Limits on every level, far above the bench's load: every request
    charges (and so CASes) per-caller, per-team and per-model counters."""
    lim = {"requests_per_minute": BIG, "tokens_per_minute": BIG * 10, "tokens_per_day": BIG * 100,
           "usd_per_day": 1e8, "usd_per_month": 1e9, "max_concurrent": 10000}
    return {
        "default": {**lim, "models": {BENCH_MODEL: {"requests_per_minute": BIG}}},
        "teams": {f"team-{t:02d}": dict(lim) for t in range(N_TEAMS)},
        "callers": {f"caller-{i:04d}": dict(lim) for i in range(0, N_CALLERS, 50)},
        "default_reserve_tokens": 1024,
    }


def plugin_config(with_quotas: bool, extra_callers: list[dict] | None = None,
                  quota_override: dict | None = None) -> dict:
    cfg = {
        "path_prefix": "/v1",
        "cluster_header": "x-llmgw-cluster",
        "max_body_bytes": 8388608,
        "providers": PROVIDERS,
        "models": models(),
        "callers": callers(extra=extra_callers),
    }
    if with_quotas:
        cfg["quotas"] = quota_override if quota_override is not None else quotas()
    return cfg


def litellm_config(mock_port: int, master_key: str) -> dict:
    """LiteLLM proxy config: the bench model (and the other OpenAI chat models
    of the plugin config) pointing at the mock's OpenAI path."""
    names = [m["name"] for m in models() if m["provider"] == "openai" and m["kind"] == "chat"]
    return {
        "model_list": [{"model_name": n,
                        "litellm_params": {"model": f"openai/{n}",
                                           "api_base": f"http://127.0.0.1:{mock_port}/v1",
                                           "api_key": MOCK_KEYS["BENCH_OPENAI_KEY"]}}
                       for n in names],
        "litellm_settings": {"telemetry": False, "request_timeout": 600},
        "general_settings": {"master_key": master_key},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--quotas", choices=["on", "off"], default="on")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "plugin.json").write_text(json.dumps(plugin_config(a.quotas == "on"), indent=1))
    print(a.out / "plugin.json")


if __name__ == "__main__":
    main()
