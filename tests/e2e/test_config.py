"""Bad plugin configurations and provider keys from the environment.

What Envoy 1.40 does (measured): the filter's on_configure returns false,
Envoy logs `llm-gateway: invalid configuration: <field>: <message>`, then
`Wasm VM failed Failed to configure base Wasm plugin`, `Plugin configured to
fail closed failed to load`, `Unable to create Wasm plugin llm-gateway`, and
the process exits with status 1 during start-up, before the listener is
bound: no request is ever answered, let alone forwarded."""
import copy
import json
import subprocess

import httpx
import pytest

import gw


def start_broken(make_gateway, mock, **kw):
    """Start a gateway that must not come up; return it after it exited."""
    with pytest.raises(gw.StartupFailed) as ei:
        make_gateway(start_timeout=20, **kw)
    g = ei.value.gateway
    assert g.wait_exit(10) == 1, "envoy should exit with status 1"
    # Nothing listens, nothing reached the provider.
    token = gw.nonce("never")
    with httpx.Client(timeout=2) as c:
        with pytest.raises(httpx.ConnectError):
            c.post(g.url + "/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(token))
    assert mock.find(token, wait=0.2) == []
    return g


def shipped():
    return copy.deepcopy(gw.shipped_plugin_config())


def broken(edit):
    cfg = shipped()
    edit(cfg)
    return cfg


BROKEN = {
    "unknown provider": (
        broken(lambda c: c["models"][0].update(provider="openia")),
        "models[0].provider", "unknown provider 'openia'"),
    "default model": (
        broken(lambda c: c.update(default_model="gpt-5")),
        "default_model", "'gpt-5' is not a model name or alias"),
    "bad key hash": (
        broken(lambda c: c["callers"][0].update(key_sha256="abc")),
        "callers[0].key_sha256[0]", "must be the hex SHA-256"),
    "duplicate model": (
        broken(lambda c: c["models"][1].update(name="gpt-4o-mini")),
        "models[1].name", "already the name or an alias"),
    "untrusted header identity": (
        broken(lambda c: c["identity_sources"].append({"type": "header", "header": "x-who"})),
        "identity_sources[1].trusted_cidrs", "trusted_cidrs or trusted_peers"),
    "azure api version": (
        broken(lambda c: c["providers"][1]["options"].update(api_version="latest!")),
        "providers[1].options.api_version", "must look like"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_invalid_plugin_config_stops_envoy(make_gateway, mock, name):
    cfg, field, message = BROKEN[name]
    g = start_broken(make_gateway, mock, plugin_config=cfg)
    log = g.log_text()
    assert f"llm-gateway: invalid configuration: {field}: " in log, log[-2000:]
    assert message in log
    assert "Unable to create Wasm plugin llm-gateway" in log
    assert "Plugin configured to fail closed failed to load" in log


def test_unknown_field_is_named(make_gateway, mock):
    cfg = shipped()
    cfg["models"][2]["max_tokens"] = 10
    g = start_broken(make_gateway, mock, plugin_config=cfg)
    log = g.log_text()
    assert "invalid configuration: models[2]" in log
    assert "unknown field `max_tokens`" in log


def test_config_not_json_names_the_document(make_gateway, mock):
    g = start_broken(make_gateway, mock, plugin_config="{not json")
    log = g.log_text()
    assert "invalid configuration: (config): " in log, \
        [ln for ln in log.splitlines() if "invalid configuration" in ln]


def test_config_not_json_stops_envoy(make_gateway, mock):
    g = start_broken(make_gateway, mock, plugin_config="{not json")
    assert "llm-gateway: invalid configuration: " in g.log_text()
    assert "key must be a string at line 1 column 2" in g.log_text()


def test_env_key_missing_stops_envoy(make_gateway, mock):
    """providers[3] (vllm) takes its key from VLLM_API_KEY (host_env_keys):
    without it in Envoy's environment the config is rejected."""
    g = start_broken(make_gateway, mock, vllm_key=None)
    log = g.log_text()
    assert ("llm-gateway: invalid configuration: providers[3].auth.env: "
            "environment variable VLLM_API_KEY is not set") in log


def test_env_key_empty_stops_envoy(make_gateway, mock):
    g = start_broken(make_gateway, mock, vllm_key="")
    assert "providers[3].auth.env" in g.log_text()


def test_env_key_is_used(make_gateway, mock):
    """The value of VLLM_API_KEY in Envoy's environment is the key the vLLM
    provider gets; it is never written to Envoy's log or config dump."""
    token = gw.nonce("envkey")
    g = make_gateway(vllm_key=gw.VLLM_KEY)
    with g.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(token, "qwen2.5-7b"))
    assert r.status_code == 200
    assert mock.find_one(token)["headers"]["authorization"] == "Bearer " + gw.VLLM_KEY
    assert gw.VLLM_KEY not in g.log_text()
    dump = g.admin_get("/config_dump").text
    assert gw.VLLM_KEY not in dump
    assert json.loads(dump)  # the dump itself is fine


def test_test_config_passes_the_cli_check():
    """testdata/e2e/gateway.json is a valid plugin config on its own (its
    key hashes are placeholders the harness replaces with minted keys)."""
    cli = gw.ROOT / "target" / "release" / "llmgw"
    if not cli.exists():
        pytest.skip("llmgw not built")
    out = subprocess.run([str(cli), "config", "check", "--assume-env", str(gw.TEST_CONFIG)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
