"""Global quotas: Envoy's rate limit filter (envoy/envoy-global-ratelimit.yaml)
asking a rate limit service, here the in-process gRPC stand-in
`rls_server.RlsServer` that records every ShouldRateLimit call.

The gateway is envoy.yaml with the committed file's additions copied in (the
rate limit filter, the provider route's per-route actions, the `ratelimit`
cluster, pointed at the test server's port); test_global_envoy_config.py
checks that those additions are all that file adds. The plugin config is the
global file's (quotas.global.descriptor_headers: true) plus callers of this
test: one with a team, one without."""
from __future__ import annotations

import copy
import json
import os
import time

import pytest
import yaml

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # Envoy is spawned while the server runs

import gw  # noqa: E402
import rls_server  # noqa: E402

GLOBAL = gw.ROOT / "envoy" / "envoy-global-ratelimit.yaml"
RL = "envoy.filters.http.ratelimit"
KINDS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")
TOKEN_KINDS = KINDS[1:]


def global_doc() -> dict:
    return yaml.safe_load(GLOBAL.read_text())


def plugin_config(keys: dict[str, str]) -> dict:
    cfg = json.loads(gw._wasm_filter(global_doc())["config"]["configuration"]["value"])
    assert cfg["quotas"]["global"]["descriptor_headers"] is True
    cfg["callers"] += [
        {"id": "rl-teamed", "team": "rl-team", "key_sha256": gw.sha256_hex(keys["rl-teamed"]), "models": ["*"]},
        {"id": "rl-solo", "key_sha256": gw.sha256_hex(keys["rl-solo"]), "models": ["*"]},
    ]
    return cfg


def add_global_parts(rls_port: int):
    """mutate= for gw.Gateway: the committed file's rate limit parts."""
    g = global_doc()

    def mutate(doc):
        filters = gw.hcm(doc)["http_filters"]
        rl = next(f for f in gw.hcm(g)["http_filters"] if f["name"] == RL)
        i = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm")
        filters.insert(i + 1, copy.deepcopy(rl))
        gw.llm_route(doc)["typed_per_filter_config"] = copy.deepcopy(gw.llm_route(g)["typed_per_filter_config"])
        # The routing route (models with deployments) carries the same actions.
        gw.routing_route(doc)["typed_per_filter_config"] = copy.deepcopy(
            gw.routing_route(g)["typed_per_filter_config"])
        c = copy.deepcopy(gw.cluster(g, "ratelimit"))
        gw.set_cluster_port(c, rls_port)
        doc["static_resources"]["clusters"].append(c)
    return mutate


@pytest.fixture(scope="module")
def rls():
    s = rls_server.RlsServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keys():
    return {n: gw.mint_key(n) for n in ("rl-teamed", "rl-solo")}


@pytest.fixture(scope="module")
def ggw(built, mock, rls, keys, tmp_path_factory):
    g = gw.Gateway(tmp_path_factory.mktemp("gw-global"), mock.port,
                   plugin_config=plugin_config(keys), mutate=add_global_parts(rls.port))
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(rls):
    rls.reset()
    yield
    rls.settle()  # a late stream-done call must not land in the next test


# ------------------------------------------------------------------ helpers

def is_request_path(call: rls_server.Call) -> bool:
    return any(d.get("generic_key") == "requests_per_minute" for d in call.descriptors)


def request_calls(calls):
    return [c for c in calls if is_request_path(c)]


def done_calls(calls):
    return [c for c in calls if not is_request_path(c)]


def expected_request_descriptors(caller, team, model):
    """What Envoy must send on the request path for one request."""
    vals = {"caller": caller, "team": team, "model": model}
    out = []
    for kind in KINDS:
        for shape in (("caller",), ("team",), ("caller", "model"), ("team", "model")):
            if any(vals[k] is None for k in shape):
                continue
            # requests count 1 (no own hits_addend); tokens are only checked (0).
            addend = None if kind == "requests_per_minute" else 0
            out.append(((("generic_key", kind),) + tuple((k, vals[k]) for k in shape), addend))
    return sorted(out, key=repr)


def expected_charge(caller, team, model, tokens):
    vals = {"caller": caller, "team": team, "model": model}
    out = []
    for kind in TOKEN_KINDS:
        for shape in (("caller",), ("team",), ("caller", "model"), ("team", "model")):
            if any(vals[k] is None for k in shape):
                continue
            out.append(((("generic_key", kind),) + tuple((k, vals[k]) for k in shape), tokens))
    return sorted(out, key=repr)


def got(call):
    return sorted(((d.entries, d.hits_addend) for d in call.descriptors), key=repr)


def wait_done(rls, n=1, timeout=5.0):
    """The stream-done calls, once `n` arrived."""
    return done_calls(rls.wait_for(lambda calls: len(done_calls(calls)) >= n, timeout))


# ------------------------------------------------------------------ descriptors

@pytest.mark.parametrize("who", ["demo", "rl-teamed", "rl-solo"])
def test_request_descriptors_carry_caller_team_and_model(ggw, rls, keys, mock, who):
    key = gw.DEMO_KEY if who == "demo" else keys[who]
    team = {"demo": "demo-team", "rl-teamed": "rl-team", "rl-solo": None}[who]
    # The alias names the configured model gpt-4o-mini; a client's own
    # x-llmgw-* headers must not reach the descriptors.
    said = gw.nonce("desc")
    r = ggw.http().post("/v1/chat/completions", headers={
        **gw.auth(key), "x-llmgw-caller": "someone-else", "x-llmgw-team": "other-team",
        "x-llmgw-model": "gpt-4o"}, json=gw.chat_body(said, model="gpt-4o-mini-2024-07-18"))
    assert r.status_code == 200, r.text
    # The descriptors come from filter state: the provider never learns who
    # called (no x-llmgw-* header, the client's nor the filter's).
    sent = mock.find_one(said)["headers"]
    assert not {h for h in sent if h.startswith("x-llmgw-")}, sent
    calls = request_calls(rls.wait_for(lambda c: len(request_calls(c)) >= 1))
    assert len(calls) == 1
    c = calls[0]
    assert c.domain == "llm-gateway"
    assert c.hits_addend == 0
    assert got(c) == expected_request_descriptors(who, team, "gpt-4o-mini")


def test_no_call_for_requests_the_filter_answers_itself(ggw, rls):
    h = ggw.http()
    assert h.post("/v1/chat/completions", headers=gw.auth("sk-llmgw-wrong"),
                  json=gw.chat_body("x")).status_code == 401
    assert h.get("/v1/models", headers=gw.auth()).status_code == 200
    assert h.post("/v1/chat/completions", headers=gw.auth(),
                  json=gw.chat_body("x", model="no-such-model")).status_code in (400, 404)
    time.sleep(0.5)
    assert rls.snapshot() == []


# ------------------------------------------------------------------ token charges

@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5", "llama3.2"])
def test_non_streamed_answer_charges_its_total_tokens(ggw, rls, model):
    resp = ggw.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": gw.nonce("charge")}])
    total = resp.usage.total_tokens
    assert total == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    done = wait_done(rls)
    assert len(done) == 1
    assert got(done[0]) == expected_charge("demo", "demo-team", model, total)
    assert done[0].domain == "llm-gateway"


def test_routed_model_is_checked_once_and_charged_once_across_attempts(ggw, rls, mock):
    """gpt-4o-ha with its OpenAI deployment failing: two attempts, one
    request-path check and one charge (the answer's tokens), under the
    public model's name."""
    mock.clear_faults()
    mock.add_fault(provider="openai", behavior="fail=503")
    mock.add_fault(provider="azure", behavior="fail=503", count=1)
    try:
        raw = ggw.client().chat.completions.with_raw_response.create(
            model="gpt-4o-ha", messages=[{"role": "user", "content": gw.nonce("routed")}])
    finally:
        mock.clear_faults()
    resp = raw.parse()
    assert raw.headers["x-llm-attempts"] == "3"
    assert raw.headers["x-llm-deployment"] == "claude-sonnet-4-5-ha@anthropic"
    calls = request_calls(rls.wait_for(lambda c: len(request_calls(c)) >= 1))
    assert len(calls) == 1
    assert got(calls[0]) == expected_request_descriptors("demo", "demo-team", "gpt-4o-ha")
    done = wait_done(rls)
    assert len(done) == 1
    assert got(done[0]) == expected_charge("demo", "demo-team", "gpt-4o-ha", resp.usage.total_tokens)


def test_streamed_answer_charges_its_total_tokens(ggw, rls):
    stream = ggw.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": gw.nonce("stream")}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].total_tokens > 0
    done = wait_done(rls)
    assert len(done) == 1
    assert got(done[0]) == expected_charge("demo", "demo-team", "gpt-4o-mini", usage[0].total_tokens)


def test_stream_without_usage_is_charged_too(ggw, rls):
    """The client did not ask for usage; the charge is still the real
    count: the same as the usage of the same question asked with it."""
    said = gw.nonce("same")
    c = ggw.client()
    list(c.chat.completions.create(model="gpt-4o-mini", stream=True,
                                   messages=[{"role": "user", "content": said}]))
    first = wait_done(rls)[0]
    rls.reset()
    chunks = list(c.chat.completions.create(
        model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": said}]))
    total = next(ch.usage for ch in chunks if ch.usage is not None).total_tokens
    assert got(first) == expected_charge("demo", "demo-team", "gpt-4o-mini", total)


def test_embeddings_charge_their_tokens(ggw, rls, keys):
    resp = ggw.client(keys["rl-solo"]).embeddings.create(
        model="text-embedding-3-small", input=["one two three", gw.nonce("emb")])
    total = resp.usage.total_tokens
    assert total > 0
    done = wait_done(rls)
    assert got(done[0]) == expected_charge("rl-solo", None, "text-embedding-3-small", total)


# ------------------------------------------------------------------ over limit

def _caller_key(kind, caller="demo"):
    return (("generic_key", kind), ("caller", caller))


def test_over_limit_is_an_openai_429(ggw, rls, mock):
    from openai import RateLimitError
    rls.reset(limits={_caller_key("requests_per_minute"): 1})
    c = ggw.client()
    first = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "first"}])
    remaining_before = int(first.headers["x-ratelimit-remaining-requests"])
    said = gw.nonce("blocked")
    with pytest.raises(RateLimitError) as ei:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": said}])
    assert ei.value.status_code == 429
    assert ei.value.code == "rate_limit_exceeded"
    r = ggw.http().post("/v1/chat/completions", headers=gw.auth(),
                        json=gw.chat_body(said, stream=True))
    gw.assert_openai_error(r, 429, code="rate_limit_exceeded")
    # retry-after: the service's seconds until its window ends (the test
    # server answers with the rest of the current minute).
    assert 1 <= int(r.headers["retry-after"]) <= 60, r.headers
    assert int(r.headers["retry-after-ms"]) == 1000 * int(r.headers["retry-after"])
    # Neither rejected request reached the provider.
    assert mock.find(said, wait=0.5) == []
    assert [c.answer for c in request_calls(rls.snapshot())] == [1, 2, 2]
    # ... nor counts against the local quotas: the next admitted request
    # sees only the first one (and itself) in this minute.
    rls.reset(mode="ok")
    ok = ggw.http().post("/v1/chat/completions", headers=gw.auth(), json=gw.chat_body("again"))
    assert ok.status_code == 200, ok.text
    remaining = int(ok.headers["x-ratelimit-remaining-requests"])
    if remaining <= remaining_before:  # (a new minute resets the count)
        assert remaining == remaining_before - 1, (remaining_before, ok.headers)
    # The refusal is in the audit log.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = [json.loads(l) for l in ggw.access_log.read_text().splitlines()
                 if l.startswith("{")]
        if [l for l in lines if l.get("quota") == "refused:global"]:
            break
        time.sleep(0.1)
    assert len([l for l in lines if l.get("quota") == "refused:global"]) == 2


def test_tokens_over_limit_block_the_next_request(ggw, rls, keys):
    """Token limit 1 a minute: the first answer is charged (at stream end),
    which puts the caller over, so the next request's check says OVER_LIMIT."""
    from openai import RateLimitError
    rls.reset(limits={_caller_key("tokens_per_minute", "rl-solo"): 1})
    c = ggw.client(keys["rl-solo"])
    first = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    wait_done(rls)
    assert rls.hits[_caller_key("tokens_per_minute", "rl-solo")] == first.usage.total_tokens > 1
    with pytest.raises(RateLimitError) as ei:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
    assert ei.value.code == "rate_limit_exceeded"


# ------------------------------------------------------------------ service down

@pytest.mark.parametrize("mode", ["fail", "slow"])
def test_rate_limit_service_down_fails_open(ggw, rls, mode):
    """failure_mode_deny: false (docs/global-ratelimit.md): when the service
    errors or is slower than the filter's timeout, requests pass."""
    before = ggw.stats().get("cluster.openai.ratelimit.failure_mode_allowed", 0)
    if mode == "fail":
        rls.reset(mode="fail")
    else:
        rls.reset(mode="over", delay=1.0)  # its OVER_LIMIT would come too late
    resp = ggw.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "still served"}])
    assert resp.choices[0].message.content
    deadline = time.monotonic() + 3
    while ggw.stats().get("cluster.openai.ratelimit.failure_mode_allowed", 0) <= before:
        assert time.monotonic() < deadline, "failure_mode_allowed did not move"
        time.sleep(0.05)
