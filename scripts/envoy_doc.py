"""Finding the gateway's parts in an Envoy bootstrap (a dict from
yaml.safe_load), shared by the generators and tests/validate.

A shipped bootstrap has the main listener (its HTTP connection manager holds
the filter in its downstream role), and with routing across deployments
(README "Routing across deployments") also:
  - one loopback listener per deployment (`deployment_*`, an HCM with only
    the router, routing to the provider's cluster);
  - the routing cluster (`routing.cluster` of the plugin config, default
    llmgw_deployments): one STATIC endpoint per deployment with metadata
    filter_metadata.llm.deployment, the override_host policy, and in its
    upstream http_filters the same filter again with root_id llmgw-upstream,
    sharing the downstream filter's vm_config and configuration (YAML
    anchors in the hand-written files, the same object after
    yaml.safe_load, and so anchors again when dumped).
"""
from __future__ import annotations

import json

WASM_NAME = "envoy.filters.http.wasm"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_NAME = "envoy.filters.network.http_connection_manager"
#: root_id of the filter's upstream role (filter/src/glue.rs UPSTREAM_ROOT_ID).
UPSTREAM_ROOT_ID = "llmgw-upstream"
#: Defaults of the plugin config's `routing` (filter/src/routing.rs).
DEFAULT_ROUTING_CLUSTER = "llmgw_deployments"
DEFAULT_ENDPOINT_HEADER = "x-llmgw-endpoints"
PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def walk(node, fn):
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


def wasm_filters(node) -> list[dict]:
    """Every Wasm HTTP filter entry ({name, typed_config}) under `node`."""
    found = []
    walk(node, lambda d: found.append(d) if d.get("name") == WASM_NAME
         and isinstance(d.get("typed_config"), dict) else None)
    return found


def is_upstream(f: dict) -> bool:
    return f["typed_config"]["config"].get("root_id") == UPSTREAM_ROOT_ID


def downstream_wasm_filter(doc: dict) -> dict:
    """The filter in its downstream role (the main listener's)."""
    found = [f for f in wasm_filters(doc) if not is_upstream(f)]
    assert len(found) == 1, f"expected one downstream wasm filter, found {len(found)}"
    return found[0]


def upstream_wasm_filters(doc: dict) -> list[dict]:
    return [f for f in wasm_filters(doc) if is_upstream(f)]


def hcms(node) -> list[dict]:
    found = []
    walk(node, lambda d: found.append(d["typed_config"]) if d.get("name") == HCM_NAME else None)
    return found


def main_hcm(doc: dict) -> dict:
    """The HTTP connection manager that runs the downstream filter."""
    found = [h for h in hcms(doc["static_resources"]["listeners"])
             if any(not is_upstream(f) for f in wasm_filters(h.get("http_filters", [])))]
    assert len(found) == 1, f"expected one http_connection_manager with the filter, found {len(found)}"
    return found[0]


def main_listener(doc: dict) -> dict:
    hcm = main_hcm(doc)
    found = [lst for lst in doc["static_resources"]["listeners"] if any(h is hcm for h in hcms(lst))]
    assert len(found) == 1
    return found[0]


def plugin_config(doc: dict) -> dict:
    return json.loads(downstream_wasm_filter(doc)["typed_config"]["config"]["configuration"]["value"])


def routing_settings(cfg: dict) -> tuple[str, str]:
    """(routing cluster, endpoint header) of a plugin config."""
    r = cfg.get("routing") or {}
    return r.get("cluster", DEFAULT_ROUTING_CLUSTER), r.get("endpoint_header", DEFAULT_ENDPOINT_HEADER)


def deployments(cfg: dict) -> list[tuple[dict, dict]]:
    """(model, deployment) for every deployment of the plugin config, with
    the deployment's default name filled in as the filter does."""
    out = []
    for m in cfg["models"]:
        for d in m.get("deployments", []):
            out.append((m, {**d, "name": d.get("name", f"{m['name']}@{d['provider']}")}))
    return out


def cluster(doc: dict, name: str) -> dict | None:
    return next((c for c in doc["static_resources"]["clusters"] if c["name"] == name), None)


def endpoint_of(lb_endpoint: dict) -> str:
    sa = lb_endpoint["endpoint"]["address"]["socket_address"]
    return f"{sa['address']}:{sa['port_value']}"


def listener_address(lst: dict) -> str:
    sa = lst["address"]["socket_address"]
    return f"{sa['address']}:{sa['port_value']}"


def share_wasm_config(doc: dict) -> None:
    """Make every upstream filter use the downstream filter's vm_config and
    configuration objects (dumped as one anchor and its aliases). Call it
    after changing the downstream filter: the two roles must read the same
    plugin config (the upstream role looks deployments up in it)."""
    down = downstream_wasm_filter(doc)["typed_config"]["config"]
    for f in upstream_wasm_filters(doc):
        up = f["typed_config"]["config"]
        up["vm_config"] = down["vm_config"]
        up["configuration"] = down["configuration"]
