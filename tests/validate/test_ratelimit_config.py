"""scripts/gen_ratelimit_config.py: the envoyproxy/ratelimit config made from
the plugin config's quotas. Checked by simulating the service's matching
rules (README "Examples 2-4": key/value before key only, the request's
descriptor depth must equal the config's, the limit of the last level
applies) on the descriptors Envoy sends, against the quota rules of the
plugin config (most specific level wins; a team limit is one counter for the
team; a default limit counts per caller; model limits in addition)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_ratelimit_config as gen  # noqa: E402

SCRIPT = ROOT / "scripts" / "gen_ratelimit_config.py"
SHIPPED = ROOT / "envoy" / "ratelimit-config.yaml"
GLOBAL_ENVOY = ROOT / "envoy" / "envoy-global-ratelimit.yaml"


def test_shipped_service_config_is_generated_from_the_shipped_plugin_config():
    r = subprocess.run([sys.executable, str(SCRIPT), str(GLOBAL_ENVOY), "--check", str(SHIPPED)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(SHIPPED.read_text())
    assert cfg["domain"] == "llm-gateway" and cfg["descriptors"]


# ------------------------------------------------------------- a model of envoyproxy/ratelimit

def rls_limit(config: dict, entries: list[tuple[str, str]]):
    """The rate_limit block envoyproxy/ratelimit applies to one descriptor,
    or None (no limit)."""
    level = config["descriptors"]
    limit = None
    for i, (k, v) in enumerate(entries):
        node = next((n for n in level if n["key"] == k and n.get("value") == v), None)
        if node is None:
            node = next((n for n in level if n["key"] == k and "value" not in n), None)
        if node is None:
            return None
        if i == len(entries) - 1:
            limit = node.get("rate_limit")
        level = node.get("descriptors") or []
        if not level and i < len(entries) - 1:
            return None
    return limit


def sent_descriptors(caller: str, team: str | None, model: str, kind: str):
    """What Envoy sends for one request (gen_global_envoy_config's actions)."""
    values = {"caller": caller, "team": team, "model": model}
    out = []
    for shape in gen.DESCRIPTORS:
        if any(values[k] is None for k in shape):
            continue  # expr action without its filter state: no descriptor
        out.append([("generic_key", kind)] + [(k, values[k]) for k in shape])
    return out


def counters(config: dict, caller: str, team: str | None, model: str, kind: str) -> set:
    """{(counter identity, limit)}: the limits the service enforces on one
    request. A key-only match counts per value, so the counter is the full
    descriptor."""
    out = set()
    for d in sent_descriptors(caller, team, model, kind):
        rl = rls_limit(config, d)
        if rl is None or rl.get("unlimited"):
            continue
        assert rl["unit"] == gen.KINDS[kind]
        out.add((tuple(d), rl["requests_per_unit"]))
    return out


def expected(plugin: dict, caller: str, model: str, kind: str) -> set:
    """The quota rules of the plugin config, as counters."""
    q = plugin.get("quotas") or {}
    team = next((c.get("team") for c in plugin["callers"] if c["id"] == caller), None)
    levels = [("caller", (q.get("callers") or {}).get(caller)),
              ("team", (q.get("teams") or {}).get(team) if team else None),
              ("default", q.get("default"))]
    gk = ("generic_key", kind)
    out = set()

    def pick(get):
        for name, lvl in levels:
            v = get(lvl or {})
            if v is not None:
                return name, v
        return None

    top = pick(lambda lvl: lvl.get(kind))
    if top:
        name, v = top
        who = ("team", team) if name == "team" else ("caller", caller)
        out.add(((gk, who), v))
    m = pick(lambda lvl: ((lvl.get("models") or {}).get(model) or {}).get(kind))
    if m:
        name, v = m
        who = ("team", team) if name == "team" else ("caller", caller)
        out.add(((gk, who, ("model", model)), v))
    # The one documented difference: a team limit also holds callers of the
    # team that have their own limit.
    t = (q.get("teams") or {}).get(team) if team else None
    if t and t.get(kind) is not None and top and top[0] == "caller":
        out.add(((gk, ("team", team)), t[kind]))
    tm = ((t or {}).get("models") or {}).get(model) or {}
    if tm.get(kind) is not None and m and m[0] == "caller":
        out.add(((gk, ("team", team), ("model", model)), tm[kind]))
    return out


PLUGIN = {
    "providers": [], "models": [],
    "callers": [
        {"id": "alice", "team": "platform"},
        {"id": "bob", "team": "platform"},
        {"id": "carol", "team": "research"},
        {"id": "dave"},
        {"id": "ci-bot", "team": "platform"},
        {"id": "erin", "team": "research"},
    ],
    "quotas": {
        "default": {"requests_per_minute": 60, "tokens_per_minute": 100000, "tokens_per_day": 1000000,
                    "usd_per_day": 5.0, "max_concurrent": 8,
                    "models": {"gpt-4o": {"requests_per_minute": 10},
                               "claude-sonnet-4-5": {"tokens_per_day": 50000}}},
        "teams": {"platform": {"requests_per_minute": 300, "usd_per_month": 50.0,
                               "models": {"gpt-4o": {"requests_per_minute": 40}}},
                  "research": {"tokens_per_day": 5000000}},
        "callers": {"ci-bot": {"requests_per_minute": 5, "admin": True,
                               "models": {"gpt-4o": {"tokens_per_minute": 1000}}},
                    "erin": {"tokens_per_day": 10},
                    "jwt-user": {"tokens_per_minute": 7}},
        "default_reserve_tokens": 1024,
        "global": {"descriptor_headers": True},
    },
}


def render_config(tmp_path: Path, plugin: dict) -> dict:
    src = tmp_path / "plugin.json"
    src.write_text(json.dumps(plugin))
    return yaml.safe_load(gen.render(src))


@pytest.mark.parametrize("kind", list(gen.KINDS))
@pytest.mark.parametrize("caller", ["alice", "bob", "carol", "dave", "ci-bot", "erin", "stranger"])
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5", "gpt-4o-mini"])
def test_limits_follow_the_quota_rules(tmp_path, kind, caller, model):
    cfg = render_config(tmp_path, PLUGIN)
    team = next((c.get("team") for c in PLUGIN["callers"] if c["id"] == caller), None)
    assert counters(cfg, caller, team, model, kind) == expected(PLUGIN, caller, model, kind)


def test_spot_checks(tmp_path):
    """A few limits written out by hand (the rules above, spelled out)."""
    cfg = render_config(tmp_path, PLUGIN)
    rpm = "requests_per_minute"
    # dave: no team, default limits, per caller.
    assert counters(cfg, "dave", None, "gpt-4o", rpm) == {
        ((("generic_key", rpm), ("caller", "dave")), 60),
        ((("generic_key", rpm), ("caller", "dave"), ("model", "gpt-4o")), 10)}
    # alice (platform): the team's 300 shared, the team's gpt-4o limit 40 shared.
    assert counters(cfg, "alice", "platform", "gpt-4o", rpm) == {
        ((("generic_key", rpm), ("team", "platform")), 300),
        ((("generic_key", rpm), ("team", "platform"), ("model", "gpt-4o")), 40)}
    # ci-bot: its own 5 (and its team's 300, the documented difference).
    assert ((("generic_key", rpm), ("caller", "ci-bot")), 5) in counters(cfg, "ci-bot", "platform", "gpt-4o", rpm)
    # erin: her own 10 tokens a day; carol: the research team's 5M a day.
    tpd = "tokens_per_day"
    assert ((("generic_key", tpd), ("caller", "erin")), 10) in counters(cfg, "erin", "research", "x", tpd)
    assert counters(cfg, "carol", "research", "x", tpd) == {((("generic_key", tpd), ("team", "research")), 5000000)}
    # A caller only the quotas name (e.g. from a JWT): its own limit.
    assert counters(cfg, "jwt-user", None, "x", "tokens_per_minute") == {
        ((("generic_key", "tokens_per_minute"), ("caller", "jwt-user")), 7)}


def test_units_and_domain(tmp_path):
    cfg = render_config(tmp_path, PLUGIN)
    assert cfg["domain"] == "llm-gateway"
    units = {}

    def walk(nodes, kind):
        for n in nodes:
            rl = n.get("rate_limit")
            if rl and not rl.get("unlimited"):
                units.setdefault(kind, set()).add(rl["unit"])
            walk(n.get("descriptors") or [], kind)
    for top in cfg["descriptors"]:
        assert top["key"] == "generic_key" and "rate_limit" not in top
        walk(top["descriptors"], top["value"])
    assert units == {"requests_per_minute": {"minute"}, "tokens_per_minute": {"minute"},
                     "tokens_per_day": {"day"}}


def test_usd_and_concurrency_are_named_as_local_only(tmp_path):
    src = tmp_path / "p.json"
    src.write_text(json.dumps(PLUGIN))
    out = gen.render(src)
    header = [line for line in out.splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "usd_per_day (default)" in text
    assert "usd_per_month (teams.platform)" in text
    assert "max_concurrent (default)" in text
    assert "usd" not in yaml.safe_dump(yaml.safe_load(out))


def test_no_quotas_no_limits(tmp_path):
    plugin = {k: v for k, v in PLUGIN.items() if k != "quotas"}
    cfg = render_config(tmp_path, plugin)
    assert cfg == {"domain": "llm-gateway", "descriptors": []}


def test_only_usd_quotas_give_no_descriptors(tmp_path):
    plugin = dict(PLUGIN, quotas={"default": {"usd_per_day": 1.0}})
    assert render_config(tmp_path, plugin)["descriptors"] == []


@pytest.mark.parametrize("bad", [1.5, -1, 2**32, True, "10"])
def test_a_limit_the_service_cannot_hold_is_an_error(tmp_path, bad):
    src = tmp_path / "p.json"
    src.write_text(json.dumps(dict(PLUGIN, quotas={"default": {"tokens_per_day": bad}})))
    r = subprocess.run([sys.executable, str(SCRIPT), str(src)], capture_output=True, text=True)
    assert r.returncode == 2, r.stdout
    assert "tokens_per_day" in r.stderr


# ------------------------------------------------------------- where the plugin config comes from

def _envoy_yaml(plugin: dict) -> str:
    return yaml.safe_dump({"static_resources": {"listeners": [{"filter_chains": [{"filters": [{
        "typed_config": {"http_filters": [{"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": json.dumps(plugin)}}}}]}}]}]}]}})


def _wasm_plugin(plugin: dict) -> str:
    return yaml.safe_dump({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                           "metadata": {"name": "llm-gateway"}, "spec": {"pluginConfig": plugin}})


def _config_map(plugin: dict) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                           "data": {"plugin.json": json.dumps(plugin), "run.sh": "#!/bin/sh\necho hi: [\n"}})


@pytest.mark.parametrize("shape", ["json", "envoy", "wasmplugin", "configmap", "stream"])
def test_reads_every_file_shape_llmgw_reads(tmp_path, shape):
    text = {"json": lambda p: json.dumps(p), "envoy": _envoy_yaml, "wasmplugin": _wasm_plugin,
            "configmap": _config_map,
            "stream": lambda p: "---\n" + _config_map(p) + "---\n" + _wasm_plugin(p)}[shape](PLUGIN)
    src = tmp_path / "src.yaml"
    src.write_text(text)
    want = gen.build(PLUGIN)
    assert yaml.safe_load(gen.render(src)) == want


def test_different_plugin_configs_in_one_file_are_refused(tmp_path):
    other = json.loads(json.dumps(PLUGIN))
    other["quotas"]["default"]["requests_per_minute"] = 61
    src = tmp_path / "two.yaml"
    src.write_text(_wasm_plugin(PLUGIN) + "---\n" + _wasm_plugin(other))
    r = subprocess.run([sys.executable, str(SCRIPT), str(src)], capture_output=True, text=True)
    assert r.returncode == 2 and "several plugin configs" in r.stderr


def test_a_file_without_plugin_config_is_refused(tmp_path):
    src = tmp_path / "x.yaml"
    src.write_text("a: 1\n")
    r = subprocess.run([sys.executable, str(SCRIPT), str(src)], capture_output=True, text=True)
    assert r.returncode == 2 and "no llm-gateway plugin config" in r.stderr


def test_check_mode(tmp_path):
    src = tmp_path / "p.json"
    src.write_text(json.dumps(PLUGIN))
    out = tmp_path / "ratelimit.yaml"
    assert subprocess.run([sys.executable, str(SCRIPT), str(src), "-o", str(out)]).returncode == 0
    ok = subprocess.run([sys.executable, str(SCRIPT), str(src), "--check", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    changed = json.loads(json.dumps(PLUGIN))
    changed["quotas"]["teams"]["platform"]["requests_per_minute"] = 301
    src.write_text(json.dumps(changed))
    stale = subprocess.run([sys.executable, str(SCRIPT), str(src), "--check", str(out)], capture_output=True, text=True)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    missing = subprocess.run([sys.executable, str(SCRIPT), str(src), "--check", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 1
