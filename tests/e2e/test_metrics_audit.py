"""Metrics in /stats/prometheus with their labels and the right sums, and the
audit line the shipped access log writes for every request (never a prompt,
a completion or a key)."""
import json
import re
import time

import pytest

import gw

PROMPT = "The secret ingredient is cardamom-7f3a"


def prom(g: gw.Gateway) -> dict[tuple[str, frozenset], float]:
    """/stats/prometheus as {(name, labels): value} (histogram buckets kept
    under their `_bucket` name)."""
    out = {}
    for line in g.admin_get("/stats/prometheus").text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(p, name, **labels):
    want = set(labels.items())
    return [v for (n, l), v in p.items() if n == name and want <= set(l)]


def audit_lines(g: gw.Gateway, request_ids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(l) for l in g.access_log.read_text().splitlines() if l.startswith("{")]
        found = {l["request_id"]: l for l in lines if l.get("request_id") in request_ids}
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture
def fresh(make_gateway):
    return make_gateway()


def test_prometheus_series_and_token_sums(fresh):
    c = fresh.client()
    sums = {}
    for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "qwen2.5-7b"):
        for _ in range(2):
            r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            s = sums.setdefault(model, [0, 0])
            s[0] += r.usage.prompt_tokens
            s[1] += r.usage.completion_tokens
    # A stream whose usage the client did not ask for is still counted.
    list(c.chat.completions.create(model="gpt-4o-mini", stream=True,
                                   messages=[{"role": "user", "content": "stream"}]))
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}])
    # A provider error.
    with pytest.raises(Exception):
        c.with_options(max_retries=0).chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-behavior": "fail=503"})
    p = prom(fresh)
    priced = {m["name"]: bool(m.get("price")) for m in gw.shipped_plugin_config()["models"]}
    provider = {"gpt-4o-mini": "openai", "claude-haiku-4-5": "anthropic",
                "gemini-2.5-flash": "gemini", "qwen2.5-7b": "vllm"}
    for model, (inp, outp) in sums.items():
        label = model.replace(".", "_")
        extra = r.usage if model == "gpt-4o-mini" else None
        got_in = series(p, "gen_ai_client_token_usage", caller="demo", gen_ai_request_model=label,
                        gen_ai_provider_name=provider[model], gen_ai_token_type="input")
        got_out = series(p, "gen_ai_client_token_usage", caller="demo", gen_ai_request_model=label,
                         gen_ai_provider_name=provider[model], gen_ai_token_type="output")
        # gpt-4o-mini also served the stream and `r`, both with r's prompt
        # (the mock's answers are deterministic), so twice r's usage.
        want_in = inp + (2 * extra.prompt_tokens if extra else 0)
        want_out = outp + (2 * extra.completion_tokens if extra else 0)
        assert got_in == [want_in], (model, got_in, want_in)
        assert got_out == [want_out], (model, got_out, want_out)
        assert series(p, "llmgw_requests", caller="demo", gen_ai_request_model=label,
                      status_class="2xx") == [2 + (2 if extra else 0)]
        assert series(p, "llmgw_requests_in_flight", gen_ai_request_model=label) == [0]
        cost = series(p, "llmgw_cost_usd_micros", caller="demo", gen_ai_request_model=label)
        if priced[model]:
            assert len(cost) == 1 and cost[0] > 0, model
        else:
            assert cost == [], "a model without a price costs nothing"
    assert series(p, "llmgw_provider_errors", gen_ai_provider_name="ollama", status_class="5xx") == [1]
    assert series(p, "llmgw_requests", gen_ai_request_model="llama3_2", status_class="5xx") == [1]
    # No series name has a label value baked in.
    assert not [n for (n, _) in p if "caller=" in n or "model=" in n or "demo" in n]
    # Histograms reach Prometheus at Envoy's stats flush (every 5 s).
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        p = prom(fresh)
        if series(p, "gen_ai_server_time_to_first_token_count", gen_ai_request_model="gpt-4o-mini"):
            if series(p, "gen_ai_server_time_to_first_token_count",
                      gen_ai_request_model="gpt-4o-mini")[0] >= 1:
                break
        time.sleep(0.5)
    assert series(p, "gen_ai_server_time_to_first_token_count", gen_ai_request_model="gpt-4o-mini",
                  gen_ai_provider_name="openai") == [1]
    assert series(p, "gen_ai_server_request_duration_count", gen_ai_request_model="claude-haiku-4-5",
                  gen_ai_provider_name="anthropic") == [2]


def test_quota_rejections_are_counted(fresh):
    c = fresh.client().with_options(max_retries=0)
    codes = []
    for _ in range(7):
        try:
            c.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", max_tokens=5)
            codes.append(200)
        except Exception as e:  # noqa: BLE001
            codes.append(getattr(e, "status_code", 0))
    if codes.count(429) < 2:
        pytest.skip("a minute boundary fell inside the burst")
    p = prom(fresh)
    assert series(p, "llmgw_quota_rejections", caller="demo",
                  quota_limit="requests_per_minute") == [codes.count(429)]


def test_audit_line_per_request_without_content(fresh):
    c = fresh.client()
    h = fresh.http()
    ids = []
    r = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    body = r.parse()
    ids.append(r.headers["x-request-id"])
    s = c.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": PROMPT}])
    chunks = list(s.parse())
    ids.append(s.headers["x-request-id"])
    bad = h.post("/v1/chat/completions", headers=gw.auth(),
                 json={"model": "no-such-model", "messages": [{"role": "user", "content": PROMPT}]})
    ids.append(bad.headers["x-request-id"])
    lines = audit_lines(fresh, ids)
    assert set(lines) == set(ids)
    a = lines[ids[0]]
    assert a["caller"] == "demo" and a["team"] == "demo-team"
    assert a["model"] == "gpt-4o-mini" and a["provider"] == "openai"
    assert a["upstream_model"] == "gpt-4o-mini" and a["status"] == 200
    assert int(a["prompt_tokens"]) == body.usage.prompt_tokens
    assert int(a["completion_tokens"]) == body.usage.completion_tokens
    assert int(a["cost_usd_micros"]) > 0 and a["stream"] == "false" and a["quota"] == "admitted"
    b = lines[ids[1]]
    assert b["stream"] == "true" and b["provider"] == "anthropic"
    assert int(b["completion_tokens"]) == chunks[-1].usage.completion_tokens
    assert b["ttft_ms"] != "" and int(b["ttft_ms"]) >= 0
    e = lines[ids[2]]
    assert e["status"] == 404 and e["caller"] == "demo" and e["model"] in ("", None, "-")
    # Nothing of the conversation and no key.
    text = fresh.access_log.read_text()
    assert "cardamom" not in text
    answer = body.choices[0].message.content
    assert answer[:20] not in text
    assert gw.DEMO_KEY not in text and gw.DEMO_KEY[-12:] not in text
