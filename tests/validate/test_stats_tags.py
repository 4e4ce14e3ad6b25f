"""The `stats_tags` of every shipped Envoy config are the filter's own list
(`telemetry::STATS_TAGS`), so every metric label reaches Prometheus."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def filter_tags():
    src = (ROOT / "filter/src/telemetry.rs").read_text()
    block = src[src.index("pub const STATS_TAGS"):]
    block = block[:block.index("];")]
    tags = re.findall(r'\("(\w+)", r"([^"]+)"\)', block)
    assert len(tags) >= 9
    # A fixed-size array: its declared length says the regex above got all.
    declared = re.search(r"STATS_TAGS: \[\(&str, &str\); (\d+)\]", src)
    assert declared is None or int(declared.group(1)) == len(tags)
    return tags


def shipped_configs():
    """envoy/ (local, compose, global, examples) and the Kubernetes
    standalone bootstraps (k8s/overlays/*/envoy.yaml)."""
    return sorted(p for top in ("envoy", "k8s") for p in (ROOT / top).rglob("*.yaml")
                  if "static_resources" in p.read_text())


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_stats_tags_match_the_filter(path):
    doc = yaml.safe_load(path.read_text())
    got = [(t["tag_name"], t["regex"]) for t in doc["stats_config"]["stats_tags"]]
    assert got == filter_tags()


def test_tag_regexes_extract_labels():
    name = ("gen_ai.client.token.usage.caller=demo.model=gpt-4o-mini"
            ".provider=openai.token_type=input")
    values = {}
    for tag, rx in filter_tags():
        m = re.search(rx, name)
        if m:
            values[tag] = m.group(2)
    assert values == {"caller": "demo", "gen_ai_request_model": "gpt-4o-mini",
                      "gen_ai_provider_name": "openai", "gen_ai_token_type": "input"}
