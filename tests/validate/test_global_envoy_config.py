"""envoy/envoy-global-ratelimit.yaml is envoy/envoy.yaml plus the global
rate limit parts, nothing else: generated (scripts/gen_global_envoy_config.py
--check), and compared here part by part with envoy.yaml. `envoy --mode
validate`, the filter's own config check and the Wasm filter flags run on it
in test_shipped.py like on every shipped Envoy config."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import envoy_doc  # noqa: E402
import gen_global_envoy_config as envgen  # noqa: E402
import gen_ratelimit_config as rlgen  # noqa: E402

BASE = ROOT / "envoy" / "envoy.yaml"
GLOBAL = ROOT / "envoy" / "envoy-global-ratelimit.yaml"
RL = "envoy.filters.http.ratelimit"
TOKENS = "%FILTER_STATE(wasm.llmgw_tokens:PLAIN)%"


def _hcm(doc):
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(doc):
    return _hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]


def _plugin(doc):
    f = next(f for f in _hcm(doc)["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    return json.loads(f["typed_config"]["config"]["configuration"]["value"])


def test_generated_from_envoy_yaml():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_global_envoy_config.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_everything_but_the_rate_limit_parts_equals_envoy_yaml():
    base = yaml.safe_load(BASE.read_text())
    glob = yaml.safe_load(GLOBAL.read_text())
    # The plugin config: the same, plus quotas.global.descriptor_headers.
    bp, gp = _plugin(base), _plugin(glob)
    assert gp["quotas"]["global"] == {"descriptor_headers": True}
    gp = copy.deepcopy(gp)
    del gp["quotas"]["global"]
    if not gp["quotas"]:
        del gp["quotas"]
    assert gp == bp
    # Strip the additions; what is left must be envoy.yaml.
    g = copy.deepcopy(glob)
    filters = _hcm(g)["http_filters"]
    names = [f["name"] for f in filters]
    assert names.index(RL) == names.index("envoy.filters.http.wasm") + 1
    assert names[-1] == "envoy.filters.http.router"
    filters.pop(names.index(RL))
    provider = [r for r in _routes(g) if "cluster_header" in r.get("route", {})]
    assert len(provider) == 1
    tpfc = provider[0].pop("typed_per_filter_config")
    assert set(tpfc) == {RL}
    # Routed models (the route to the routing cluster) are charged the same.
    routed = _routing_routes(g)
    assert len(routed) == 1
    assert routed[0].pop("typed_per_filter_config") == tpfc
    for r in _routes(g):
        assert "typed_per_filter_config" not in r and "rate_limits" not in r.get("route", {})
    clusters = g["static_resources"]["clusters"]
    assert [c["name"] for c in clusters if c["name"] == "ratelimit"] == ["ratelimit"]
    g["static_resources"]["clusters"] = [c for c in clusters if c["name"] != "ratelimit"]
    for doc in (g, base):
        for f in envoy_doc.wasm_filters(doc):
            f["typed_config"]["config"]["configuration"]["value"] = None
    assert g == base


def _routing_routes(doc):
    cluster, _ = envoy_doc.routing_settings(_plugin(doc))
    return [r for r in _routes(doc) if r.get("route", {}).get("cluster") == cluster]


def test_the_upstream_filter_reads_the_global_plugin_config():
    """The routing cluster's upstream filter runs the same VM and the same
    (edited) plugin config as the downstream one."""
    glob = yaml.safe_load(GLOBAL.read_text())
    down = envoy_doc.downstream_wasm_filter(glob)["typed_config"]["config"]
    ups = envoy_doc.upstream_wasm_filters(glob)
    assert len(ups) == 1
    up = ups[0]["typed_config"]["config"]
    assert up["vm_config"] == down["vm_config"]
    assert up["configuration"] == down["configuration"]
    assert json.loads(up["configuration"]["value"])["quotas"]["global"] == {"descriptor_headers": True}
    # In the file: one anchor, one alias (nothing to keep in step by hand).
    text = GLOBAL.read_text()
    assert "vm_config: *" in text and "configuration: *" in text


def test_rate_limit_filter_and_cluster():
    glob = yaml.safe_load(GLOBAL.read_text())
    rl = next(f for f in _hcm(glob)["http_filters"] if f["name"] == RL)["typed_config"]
    assert rl["@type"].endswith("envoy.extensions.filters.http.ratelimit.v3.RateLimit")
    assert rl["domain"] == rlgen.DOMAIN
    assert rl["failure_mode_deny"] is False  # see docs/global-ratelimit.md
    assert not rl.get("rate_limited_as_resource_exhausted")
    assert not rl.get("disable_x_envoy_ratelimited_header")  # the filter maps 429s by it
    # The filter's retry-after comes from X-RateLimit-Reset.
    assert rl["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
    assert rl["rate_limit_service"]["transport_api_version"] == "V3"
    cluster_name = rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    c = next(c for c in glob["static_resources"]["clusters"] if c["name"] == cluster_name)
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]  # gRPC


def test_actions_send_the_descriptors_the_service_config_expects():
    """Every (kind, shape) of gen_ratelimit_config: requests counted on the
    request path; tokens checked there with hits_addend 0 and charged at
    stream end with the filter's token count. Nothing else."""
    glob = yaml.safe_load(GLOBAL.read_text())
    route = next(r for r in _routes(glob) if "cluster_header" in r.get("route", {}))
    per_route = route["typed_per_filter_config"][RL]
    for r in _routing_routes(glob):
        assert r["typed_per_filter_config"][RL] == per_route
    assert per_route["@type"].endswith("envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute")
    seen = []
    for rl in per_route["rate_limits"]:
        acts = rl["actions"]
        assert list(acts[0]) == ["generic_key"] and set(acts[0]["generic_key"]) == {"descriptor_value"}
        kind = acts[0]["generic_key"]["descriptor_value"]
        shape = []
        for a in acts[1:]:
            assert list(a) == ["extension"]
            assert a["extension"]["name"] == "envoy.rate_limit_descriptors.expr"
            h = a["extension"]["typed_config"]
            assert h["text"] == f"filter_state['{rlgen.FILTER_STATE[h['descriptor_key']]}']"
            assert not h.get("skip_if_error")  # no team state: no team descriptor at all
            shape.append(h["descriptor_key"])
        if "apply_on_stream_done" in rl:
            assert rl["apply_on_stream_done"] is True
            assert rl["hits_addend"] == {"format": TOKENS}
            phase = "charge"
        elif "hits_addend" in rl:
            assert rl["hits_addend"] == {"number": 0}
            phase = "check"
        else:
            phase = "count"
        assert set(rl) <= {"actions", "hits_addend", "apply_on_stream_done"}
        seen.append((kind, tuple(shape), phase))
    want = []
    for kind in rlgen.KINDS:
        for shape in rlgen.DESCRIPTORS:
            if kind.startswith("requests"):
                want.append((kind, shape, "count"))
            else:
                want += [(kind, shape, "check"), (kind, shape, "charge")]
    assert sorted(seen) == sorted(want)


# ------------------------------------------------------------- the plugin config edit

WANT = {"descriptor_headers": True}


def _check(text: str) -> str:
    out = envgen.enable_descriptor_headers(text)
    want = json.loads(text)
    want.setdefault("quotas", {}).setdefault("global", {}).update(WANT)
    assert json.loads(out) == want
    return out


def test_descriptor_headers_added_without_quotas():
    text = '{\n  "a": "}{\\"quotas\\": {",\n  "b": [1, {"c": 2}]\n}\n'
    out = _check(text)
    assert out.startswith(text.rstrip()[:-1].rstrip())  # the rest kept as written


def test_descriptor_headers_added_into_existing_quotas_as_one_line():
    text = ('{\n  "default_model": "quotas",\n  "quotas": {\n    "default": {"requests_per_minute": 5}\n  },\n'
            '  "x": {"quotas": {}}\n}\n')
    out = _check(text)
    assert out.count("\n") == text.count("\n") + 1
    assert '    "global": {"descriptor_headers": true}\n' in out
    assert json.loads(out)["x"] == {"quotas": {}}


def test_descriptor_headers_into_empty_or_one_line_quotas():
    _check('{"quotas": {}}')
    _check('{"quotas": {"default": {"tokens_per_day": 1}}, "z": 1}')


def test_descriptor_headers_with_quotas_global_present():
    _check('{"quotas": {"global": {"descriptor_headers": false}}}')
