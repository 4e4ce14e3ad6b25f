"""Routing across deployments in every shipped Envoy config: the plugin
config's deployments, the routing cluster's endpoints and the deployment
listeners agree one to one, and the filter's two roles (the listener's
downstream filter, the routing cluster's upstream filter) run the same VM
and the same plugin config. `envoy --mode validate` cannot see any of this:
a deployment whose endpoint is missing from the cluster, or whose listener
goes to the wrong provider, is a valid Envoy config that routes wrongly."""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import envoy_doc as ed  # noqa: E402
from test_shipped import ENVOY_CONFIGS  # noqa: E402

CONFIGS = ENVOY_CONFIGS + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "k8s").rglob("envoy.yaml"))
UPSTREAM_CODEC = "envoy.filters.http.upstream_codec"


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def test_configs_with_deployments_are_covered():
    routed = [c for c in CONFIGS if ed.deployments(ed.plugin_config(load(c)))]
    assert "envoy/envoy.yaml" in routed and "envoy/examples/real-providers.yaml" in routed
    assert "k8s/overlays/standalone/envoy.yaml" in routed
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS)
def test_deployments_endpoints_and_listeners_agree(path):
    doc = load(path)
    cfg = ed.plugin_config(doc)
    deps = [d for _, d in ed.deployments(cfg)]
    if not deps:
        pytest.skip("no models with deployments")
    cluster_name, header = ed.routing_settings(cfg)
    providers = {p["name"]: p for p in cfg["providers"]}
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}

    # The routing cluster: exactly one STATIC endpoint per deployment, named
    # by its metadata; override_host follows the filter's header.
    rc = clusters[cluster_name]
    assert rc["type"] == "STATIC"
    eps = [(ed.endpoint_of(e), e["metadata"]["filter_metadata"]["llm"]["deployment"])
           for g in rc["load_assignment"]["endpoints"] for e in g["lb_endpoints"]]
    assert sorted(eps) == sorted((d["endpoint"], d["name"]) for d in deps)
    assert len({a for a, _ in eps}) == len(eps)
    policy = rc["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    assert policy["typed_config"]["override_host_sources"] == [{"header": header}]
    # Envoy's default allows 3 retries in flight per cluster; here every
    # routed request may retry.
    assert rc["circuit_breakers"]["thresholds"][0]["max_retries"] >= 1000

    # One loopback listener per deployment, at its endpoint, with only the
    # router, to its provider's cluster; and no deployment listener besides.
    main = ed.main_listener(doc)
    by_addr: dict[str, list] = {}
    for lst in doc["static_resources"]["listeners"]:
        by_addr.setdefault(ed.listener_address(lst), []).append(lst)
    for d in deps:
        assert ipaddress.ip_address(d["endpoint"].rsplit(":", 1)[0]).is_loopback, d
        lsts = by_addr.get(d["endpoint"], [])
        assert len(lsts) == 1, f"{d['name']}: {len(lsts)} listeners on {d['endpoint']}"
        lst = lsts[0]
        assert lst is not main
        hcm, = ed.hcms(lst)
        assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
        route, = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
        cluster = providers[d["provider"]]["cluster"]
        assert route["route"]["cluster"] == cluster, d["name"]
        assert cluster in clusters
        # The routing headers end at the deployment listener.
        assert {header, "x-envoy-max-retries"} <= set(route["request_headers_to_remove"])
    dep_addrs = {d["endpoint"] for d in deps}
    for lst in doc["static_resources"]["listeners"]:
        if lst["name"].startswith("deployment_"):
            assert ed.listener_address(lst) in dep_addrs, lst["name"]

    # The main listener's route to the routing cluster, before the route on
    # the cluster header, with a retry policy; attempts are counted.
    hcm = ed.main_hcm(doc)
    vh, = hcm["route_config"]["virtual_hosts"]
    assert vh["include_request_attempt_count"] is True
    routes = vh["routes"]
    to_rc = [i for i, r in enumerate(routes) if r.get("route", {}).get("cluster") == cluster_name]
    by_header = [i for i, r in enumerate(routes) if "cluster_header" in r.get("route", {})]
    assert len(to_rc) == 1 and len(by_header) == 1 and to_rc[0] < by_header[0]
    r = routes[to_rc[0]]
    assert r["match"]["headers"] == [{"name": cfg.get("cluster_header", "x-llmgw-cluster"),
                                      "string_match": {"exact": cluster_name}}]
    retry = r["route"]["retry_policy"]
    assert {"5xx", "reset", "connect-failure", "retriable-status-codes"} <= set(retry["retry_on"].split(","))
    assert 429 in retry["retriable_status_codes"]
    assert "rate_limited_retry_back_off" not in retry  # it would delay the move to another deployment
    fields = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fields["deployment"] == "%FILTER_STATE(wasm.llmgw_deployment:PLAIN)%"
    assert fields["attempts"] == "%FILTER_STATE(wasm.llmgw_attempts:PLAIN)%"


@pytest.mark.parametrize("path", CONFIGS)
def test_both_roles_share_the_vm_and_the_plugin_config(path):
    doc = load(path)
    cfg = ed.plugin_config(doc)
    ups = ed.upstream_wasm_filters(doc)
    if not ed.deployments(cfg):
        assert not ups
        return
    cluster_name, _ = ed.routing_settings(cfg)
    rc = ed.cluster(doc, cluster_name)
    # The upstream role: only in the routing cluster, once, before the codec.
    assert len(ups) == 1
    filters = rc["typed_extension_protocol_options"][ed.PROTOCOL_OPTIONS]["http_filters"]
    assert [f["name"] for f in filters] == [ed.WASM_NAME, UPSTREAM_CODEC]
    assert filters[0] is ups[0]
    up = ups[0]["typed_config"]["config"]
    down = ed.downstream_wasm_filter(doc)["typed_config"]["config"]
    assert up["root_id"] == ed.UPSTREAM_ROOT_ID != down["root_id"]
    assert up["allow_on_headers_stop_iteration"] is True and up["fail_open"] is False
    # One object after yaml.safe_load: a YAML anchor and its alias in the
    # file, so the two can never drift apart.
    assert up["vm_config"] is down["vm_config"]
    assert up["configuration"] is down["configuration"]
    json.loads(up["configuration"]["value"])


def test_compose_deployment_listeners_stay_on_loopback():
    """Only the API listener is published in the container; a deployment
    listener passes requests on with the provider keys."""
    doc = load("envoy/envoy.compose.yaml")
    main = ed.main_listener(doc)
    assert main["address"]["socket_address"]["address"] == "0.0.0.0"
    others = [lst for lst in doc["static_resources"]["listeners"] if lst is not main]
    assert others
    for lst in others:
        assert lst["address"]["socket_address"]["address"] == "127.0.0.1", lst["name"]
