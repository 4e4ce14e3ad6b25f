#!/usr/bin/env python3
"""Derive envoy/envoy-global-ratelimit.yaml (global quotas through Envoy's
rate limit filter and envoyproxy/ratelimit) from envoy/envoy.yaml, so the
two never drift. Added, nothing else changed:

  - `quotas.global.descriptor_headers: true` in the plugin config (the filter
    then sets the filter state wasm.llmgw_caller / _team / _model on every request
    it forwards, and filter state `llmgw_tokens` when the answer ends);
  - the HTTP filter `envoy.filters.http.ratelimit` after the Wasm filter and
    before the router, asking the gRPC cluster `ratelimit` (domain
    llm-gateway);
  - on the provider route and on the route to the routing cluster (models
    with deployments), `typed_per_filter_config` for that filter with the
    rate limit actions (route-level `rate_limits` cannot carry
    `hits_addend`: Envoy only honours it in RateLimitPerRoute.rate_limits or
    the filter's own `rate_limits`); the same object on both routes, so one
    list and a YAML alias in the output;
  - the cluster `ratelimit` (HTTP/2, 127.0.0.1:8081, envoyproxy/ratelimit's
    gRPC port).

The deployment listeners, the routing cluster and the filter's upstream
role (root_id llmgw-upstream) are kept as they are; the upstream filter keeps
sharing the downstream filter's vm_config and configuration (one object,
dumped as an anchor and its alias), so both read the edited plugin config.

`--check` exits 1 if the committed file is out of date.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_doc  # noqa: E402
from gen_ratelimit_config import (  # noqa: E402
    DESCRIPTORS, DOMAIN, FILTER_STATE, KINDS, TOKENS_FILTER_STATE)

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "envoy" / "envoy.yaml"
DST = ROOT / "envoy" / "envoy-global-ratelimit.yaml"
RLS_CLUSTER = "ratelimit"
RLS_ADDRESS = ("127.0.0.1", 8081)
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
HEADER = """\
# GENERATED from envoy/envoy.yaml by scripts/gen_global_envoy_config.py: do not edit.
# envoy/envoy.yaml plus global quotas (docs/global-ratelimit.md): the filter
# publishes caller / team / model as request headers and the answer's tokens as
# filter state; Envoy's rate limit filter asks the rate limit service
# (envoyproxy/ratelimit + Redis, gRPC on 127.0.0.1:8081; its config:
# scripts/gen_ratelimit_config.py) for requests and tokens across replicas.
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, _str)


def hcm(doc: dict) -> dict:
    """The main listener's HTTP connection manager (the one running the
    filter in its downstream role; deployment listeners have their own)."""
    return envoy_doc.main_hcm(doc)


def provider_route(doc: dict) -> dict:
    routes = hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    found = [r for r in routes if "cluster_header" in r.get("route", {})]
    assert len(found) == 1, "expected one route on the cluster header"
    return found[0]


def routing_routes(doc: dict) -> list[dict]:
    """The routes to the routing cluster (models with deployments): none
    when the config has no such route."""
    cluster, _ = envoy_doc.routing_settings(envoy_doc.plugin_config(doc))
    routes = hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    return [r for r in routes if r.get("route", {}).get("cluster") == cluster]


def wasm_filter(doc: dict) -> dict:
    """The filter in its downstream role (not the routing cluster's
    upstream one)."""
    f = envoy_doc.downstream_wasm_filter(doc)
    assert any(f is g for g in hcm(doc)["http_filters"]), "the downstream filter is not in the main HCM"
    return f


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the JSON object whose `{` is at `start`."""
    depth, i, in_str = 0, start, False
    while i < len(text):
        ch = text[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced JSON")


def _top_level_value(text: str, key: str) -> int:
    """Index of the `{` of the top-level object member `key`."""
    depth, i = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            token = text[i + 1:j]
            rest = text[j + 1:].lstrip()
            if depth == 1 and token == key and rest.startswith(":"):
                return text.index("{", j)
            i = j + 1
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        i += 1
    raise ValueError(f"no top-level {key!r}")


def enable_descriptor_headers(text: str) -> str:
    """The plugin config JSON with quotas.global.descriptor_headers = true,
    added as one line to the text as written (so the two files stay easy to
    compare); re-serialised only when `quotas.global` already exists."""
    cfg = json.loads(text)
    line = '"global": {"descriptor_headers": true}'
    quotas = cfg.get("quotas")
    if quotas is None:
        end = _closing_brace(text, text.index("{"))
        out = text[:end].rstrip() + ',\n  "quotas": {' + line + '}\n' + text[end:]
    elif "global" not in quotas:
        pos = _top_level_value(text, "quotas")
        end = _closing_brace(text, pos)
        body = text[pos + 1:end]
        indent = body[len(body.rstrip(" ")):] if "\n" in body else ""
        item_indent = " " * (len(indent) + 2) if indent else " "
        out = text[:end].rstrip() + ("," if body.strip() else "") + "\n" + item_indent + line + \
            ("\n" + indent if indent else " ") + text[end:]
    else:
        quotas["global"]["descriptor_headers"] = True
        return json.dumps(cfg, indent=2) + "\n"
    want = json.loads(text)
    want.setdefault("quotas", {}).setdefault("global", {})["descriptor_headers"] = True
    assert json.loads(out) == want, "inserting quotas.global went wrong"
    return out


def expr_action(key: str) -> dict:
    """A descriptor entry read from the filter's filter state with a CEL
    expression. When the state is absent (no team), evaluating fails and,
    with skip_if_error false, Envoy sends no descriptor at all for this
    rate limit (never one without the entry)."""
    return {"extension": {
        "name": "envoy.rate_limit_descriptors.expr",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.rate_limit_descriptors.expr.v3.Descriptor",
            "descriptor_key": key,
            "text": f"filter_state['{FILTER_STATE[key]}']",
        },
    }}


def rate_limits() -> list[dict]:
    """Per kind and descriptor shape: requests count 1 on the request path;
    tokens are checked on the request path (hits_addend 0: the service only
    says whether the total is over) and charged at stream end."""
    out = []
    for kind in KINDS:
        for shape in DESCRIPTORS:
            actions = [{"generic_key": {"descriptor_value": kind}}]
            actions += [expr_action(k) for k in shape]
            if kind.startswith("requests"):
                out.append({"actions": actions})
            else:
                out.append({"actions": copy.deepcopy(actions), "hits_addend": {"number": 0}})
                out.append({"actions": copy.deepcopy(actions),
                            "hits_addend": {"format": TOKENS_FILTER_STATE},
                            "apply_on_stream_done": True})
    return out


def ratelimit_filter() -> dict:
    return {
        "name": RATELIMIT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": DOMAIN,
            # Fail open: when the rate limit service cannot be asked (down,
            # slower than `timeout`), requests pass and only each gateway's
            # local quotas hold (stat cluster.<provider>.ratelimit.failure_mode_allowed
            # counts them). failure_mode_deny: true would turn an RLS or Redis
            # outage into an outage of the whole API.
            "failure_mode_deny": False,
            "timeout": "0.25s",
            # X-RateLimit-Limit / -Remaining / -Reset from the service's answer
            # (the descriptor closest to its limit), beside the filter's own
            # x-ratelimit-*-requests / -tokens headers. The filter takes the
            # retry-after of its OpenAI 429 from X-RateLimit-Reset.
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": RLS_CLUSTER}},
                "transport_api_version": "V3",
            },
        },
    }


def rls_cluster() -> dict:
    host, port = RLS_ADDRESS
    return {
        "name": RLS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": RLS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
    }


def transform(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    down = wasm_filter(doc)["typed_config"]["config"]
    for f in envoy_doc.upstream_wasm_filters(doc):
        up = f["typed_config"]["config"]
        assert up["vm_config"] == down["vm_config"] and up["configuration"] == down["configuration"], \
            "the upstream filter must run the downstream filter's vm_config and configuration"
    conf = down["configuration"]
    conf["value"] = enable_descriptor_headers(conf["value"])
    envoy_doc.share_wasm_config(doc)
    filters = hcm(doc)["http_filters"]
    i = filters.index(wasm_filter(doc))
    assert filters[-1]["name"] == "envoy.filters.http.router"
    filters.insert(i + 1, ratelimit_filter())
    # Routed models are charged like the others: the filter sets the same
    # descriptor state before sending them to the routing cluster.
    per_route = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
        "rate_limits": rate_limits(),
    }
    for route in [provider_route(doc)] + routing_routes(doc):
        route.setdefault("typed_per_filter_config", {})[RATELIMIT_FILTER] = per_route
    doc["static_resources"]["clusters"].append(rls_cluster())
    return doc


def render() -> str:
    doc = transform(yaml.safe_load(SRC.read_text()))
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120)


if __name__ == "__main__":
    out = render()
    if "--check" in sys.argv:
        if not DST.exists() or DST.read_text() != out:
            print(f"{DST} is out of date: run scripts/gen_global_envoy_config.py", file=sys.stderr)
            sys.exit(1)
    else:
        DST.write_text(out)
