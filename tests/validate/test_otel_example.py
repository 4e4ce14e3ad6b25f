"""envoy/examples/otel-tracing.yaml merged into envoy/envoy.yaml is a valid
Envoy config (the e2e test tests/e2e/test_otel_tracing.py runs it)."""
import os
import subprocess

import yaml

from test_shipped import ENV, ENVOY, ROOT, localize


def test_otel_example_validates(tmp_path):
    example = yaml.safe_load((ROOT / "envoy/examples/otel-tracing.yaml").read_text())
    assert set(example) == {"tracing", "clusters"}
    doc = yaml.safe_load(localize(ROOT / "envoy/envoy.yaml", tmp_path).read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["tracing"] = example["tracing"]
    doc["static_resources"]["clusters"] += example["clusters"]
    merged = tmp_path / "otel.yaml"
    merged.write_text(yaml.safe_dump(doc))
    r = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(merged), "-l", "warning"],
                       capture_output=True, text=True, env={**os.environ, **ENV}, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    tags = {t["tag"] for t in example["tracing"]["custom_tags"]}
    assert {"gen_ai.request.model", "gen_ai.provider.name", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens"} <= tags
