"""Every shipped Envoy config, compose file and plugin config is validated
offline: `envoy --mode validate`, the Compose JSON schema, and the filter's
own config parser (`llmgw config check`)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
ENVOY = VENV_BIN / "envoy"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
CLI = ROOT / "target" / "release" / "llmgw"
SCHEMAS = ROOT.parent / "shared" / "schemas"

# Every Envoy bootstrap we ship.
ENVOY_CONFIGS = [
    "envoy/envoy.yaml",
    "envoy/envoy.compose.yaml",
    "envoy/envoy-global-ratelimit.yaml",
    "envoy/examples/real-providers.yaml",
]
ENV = {"VLLM_API_KEY": "x", "AZURE_OPENAI_API_KEY": "x", "BEDROCK_ACCESS_KEY_ID": "x",
       "BEDROCK_SECRET_ACCESS_KEY": "x"}


def shipped_envoy_configs():
    found = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "envoy").rglob("*.yaml")
        if "static_resources" in p.read_text()
    )
    return found


def test_every_envoy_config_is_listed():
    assert sorted(ENVOY_CONFIGS) == shipped_envoy_configs()


def localize(path: Path, tmp: Path) -> Path:
    """Point container paths (/etc/envoy/..., /etc/llm-secrets/...) at local
    copies so `--mode validate` can open them. Nothing else changes."""
    text = path.read_text()
    text = text.replace("/etc/envoy/llm_gateway.wasm", "@WASM@")
    text = text.replace("target/wasm32-wasip1/release/llm_gateway.wasm", "@WASM@")
    text = text.replace("@WASM@", str(WASM))
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    for f in (ROOT / "envoy" / "secrets").glob("*.yaml"):
        shutil.copy(f, secrets / f.name)
    text = text.replace("/etc/envoy/secrets/", "@SECRETS@/")
    text = text.replace("envoy/secrets/", "@SECRETS@/")
    text = text.replace("@SECRETS@", str(secrets))
    # Secret volumes (/etc/llm-secrets/NAME/NAME.yaml): an SDS document
    # holding NAME-key, as `scripts/mesh.py secret` writes it.
    for name in set(re.findall(r"/etc/llm-secrets/([\w-]+)/\1\.yaml", text)):
        k8s = tmp / "llm-secrets" / name
        k8s.mkdir(parents=True, exist_ok=True)
        (k8s / f"{name}.yaml").write_text(yaml.safe_dump({"resources": [{
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": f"{name}-key", "generic_secret": {"secret": {"inline_string": "test-key"}}}]}))
    text = text.replace("/etc/llm-secrets/", f"{tmp}/llm-secrets/")
    out = tmp / path.name
    out.write_text(text)
    return out


@pytest.mark.parametrize("cfg", ENVOY_CONFIGS)
def test_envoy_validate(cfg, tmp_path):
    local = localize(ROOT / cfg, tmp_path)
    r = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(local), "-l", "warning"],
        capture_output=True, text=True, env={**os.environ, **ENV}, cwd=ROOT, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr


def wasm_filter_configs(doc):
    out = []

    def walk(n):
        if isinstance(n, dict):
            if n.get("@type", "").endswith("envoy.extensions.filters.http.wasm.v3.Wasm"):
                out.append(n["config"])
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(doc)
    return out


@pytest.mark.parametrize("cfg", ENVOY_CONFIGS)
def test_wasm_filter_may_hold_headers(cfg):
    """The filter pauses in the request-headers phase until the body names
    the model; without this flag Envoy 1.35+ never delivers the body."""
    doc = yaml.safe_load((ROOT / cfg).read_text())
    configs = wasm_filter_configs(doc)
    assert configs, "no wasm filter found"
    for c in configs:
        assert c.get("allow_on_headers_stop_iteration") is True
        assert c.get("fail_open") is False


@pytest.mark.parametrize("cfg", ENVOY_CONFIGS)
def test_plugin_config_passes_the_filters_own_check(cfg):
    r = subprocess.run(
        [str(CLI), "config", "check", str(ROOT / cfg)] + [a for k in ENV for a in ("--env", f"{k}=x")],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_plugin_config_check_rejects_a_broken_config(tmp_path):
    doc = (ROOT / "envoy" / "envoy.yaml").read_text().replace('"provider": "ollama"', '"provider": "olama"', 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(doc)
    r = subprocess.run([str(CLI), "config", "check", str(bad)] + [a for k in ENV for a in ("--env", f"{k}=x")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    models = json.loads(wasm_filter_configs(yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text()))[0]
                        ["configuration"]["value"])["models"]
    i = next(i for i, m in enumerate(models) if m.get("provider") == "ollama")
    out = r.stdout + r.stderr
    assert f"models[{i}].provider" in out
    # Both the listener's filter and the routing cluster's upstream filter
    # are checked (each reads the plugin config).
    assert out.count(f"models[{i}].provider") == len(wasm_filter_configs(yaml.safe_load(doc))) == 2


def test_compose_config_is_generated_from_envoy_yaml():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_compose_config.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_compose_file_matches_the_compose_schema():
    r = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--schemafile", str(SCHEMAS / "compose-spec.json"),
         str(ROOT / "envoy" / "docker-compose.yaml")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_mounts_exist():
    doc = yaml.safe_load((ROOT / "envoy" / "docker-compose.yaml").read_text())
    base = ROOT / "envoy"
    for vol in doc["services"]["envoy"]["volumes"]:
        src = vol.split(":")[0]
        assert (base / src).resolve().exists(), src
    build = doc["services"]["mock"]["build"]
    assert (base / build["context"] / build["dockerfile"]).resolve().exists()
