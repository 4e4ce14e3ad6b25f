#!/usr/bin/env python3
"""Derive envoy/envoy.compose.yaml (the config docker-compose mounts) from
envoy/envoy.yaml, so the two never drift: the API listener on 0.0.0.0, the
provider clusters at the `mock` service, the .wasm and the secrets at their
container paths. Nothing else changes: the per-deployment listeners stay on
the container's loopback (they pass requests on to the providers with their
keys, so they must not be reachable from outside) and the routing cluster
keeps its STATIC loopback endpoints. `--check` exits 1 if the committed file
is out of date."""
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_doc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "envoy" / "envoy.yaml"
DST = ROOT / "envoy" / "envoy.compose.yaml"
HEADER = (
    "# GENERATED from envoy/envoy.yaml by scripts/gen_compose_config.py: do not edit.\n"
    "# Used by envoy/docker-compose.yaml: listener on 0.0.0.0:8080, providers at\n"
    "# the `mock` service, the filter and secrets mounted under /etc/envoy.\n"
)


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, _str)


walk = envoy_doc.walk


def render() -> str:
    doc = yaml.safe_load(SRC.read_text())
    envoy_doc.main_listener(doc)["address"]["socket_address"]["address"] = "0.0.0.0"

    def fix(d):
        if "filename" in d and str(d["filename"]).endswith(".wasm"):
            d["filename"] = "/etc/envoy/llm_gateway.wasm"
        if "path_config_source" in d:
            d["path_config_source"]["path"] = "/etc/envoy/secrets/" + Path(d["path_config_source"]["path"]).name

    walk(doc, fix)
    for c in doc["static_resources"]["clusters"]:
        at_mock = []

        def to_mock(d):
            if "socket_address" in d and d["socket_address"].get("port_value") == 18080:
                d["socket_address"]["address"] = "mock"
                at_mock.append(d)

        walk(c.get("load_assignment", {}), to_mock)
        if at_mock:
            c["type"] = "STRICT_DNS"
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120)


if __name__ == "__main__":
    out = render()
    if "--check" in sys.argv:
        if not DST.exists() or DST.read_text() != out:
            print(f"{DST} is out of date: run scripts/gen_compose_config.py", file=sys.stderr)
            sys.exit(1)
    else:
        DST.write_text(out)
