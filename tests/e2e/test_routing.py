"""Routing across deployments (issue 9) in a real Envoy with the mock.

A public model is backed by several deployments; the filter plans the
attempts (strategy, cooldown, pinning, fallbacks), Envoy's override_host
policy and retry_policy carry them out, and the filter's upstream role
translates each attempt for the provider it reaches. Failures are switched
on per deployment with the mock's fault rules (`POST /__mock/faults`), since
every attempt carries the same client headers and body.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest

import gw

KEYS = {name: gw.mint_key(name) for name in ("router", "eu-app", "gdpr-app")}
CHAT = "/v1/chat/completions"

#: name -> (provider cluster, public model, deployment fields)
DEPLOYMENTS = {
    # gpt-4o-r: weighted 3:1, OpenAI (us) and Azure (eu), Claude as fallback.
    "r-oai": ("openai", "gpt-4o-r", {"provider": "openai", "upstream_model": "gpt-4o-2024-08-06",
                                     "weight": 3, "region": "us"}),
    "r-az": ("azure", "gpt-4o-r", {"provider": "azure", "upstream_model": "gpt-4o", "weight": 1,
                                   "region": "eu", "tags": ["gdpr"]}),
    "r-ant-us": ("anthropic", "claude-r", {"provider": "anthropic", "upstream_model": "claude-sonnet-4-5",
                                           "region": "us"}),
    "r-ant-eu": ("anthropic", "claude-r", {"provider": "anthropic",
                                           "upstream_model": "claude-haiku-4-5-20251001",
                                           "region": "eu", "priority": 1}),
    # prio-r: strict failover OpenAI → Azure → (fallback) Claude.
    "p-oai": ("openai", "prio-r", {"provider": "openai", "upstream_model": "gpt-4.1", "region": "us"}),
    "p-az": ("azure", "prio-r", {"provider": "azure", "upstream_model": "gpt-4o-mini", "region": "eu"}),
    # lif-r: least in flight between a slow and a fast deployment.
    "l-slow": ("openai", "lif-r", {"provider": "openai", "upstream_model": "gpt-4-turbo"}),
    "l-fast": ("openai", "lif-r", {"provider": "openai", "upstream_model": "gpt-4.1-mini"}),
    # emb-r: embeddings on OpenAI then Azure.
    "e-oai": ("openai", "emb-r", {"provider": "openai", "upstream_model": "text-embedding-3-small"}),
    "e-az": ("azure", "emb-r", {"provider": "azure", "upstream_model": "text-embedding-3-small"}),
}

MODELS = {
    "gpt-4o-r": {"strategy": "weighted", "fallbacks": ["claude-r"]},
    "claude-r": {},
    "prio-r": {"strategy": "priority", "fallbacks": ["claude-r"]},
    "lif-r": {"strategy": "least_in_flight"},
    "emb-r": {"strategy": "priority", "kind": "embedding"},
}


def routing_config(endpoints: dict[str, str], cooldown: dict) -> dict:
    models = []
    for name, extra in MODELS.items():
        deps = [{"name": d, "endpoint": endpoints[d], **fields}
                for d, (_, m, fields) in DEPLOYMENTS.items() if m == name]
        models.append({"name": name, "deployments": deps, **extra})
    models += [
        {"name": "small-ctx", "provider": "openai", "upstream_model": "gpt-4o-mini",
         "context_window": 60, "context_window_fallback": "big-ctx"},
        {"name": "big-ctx", "provider": "openai", "upstream_model": "gpt-4.1", "context_window": 100000},
        {"name": "nofb-ctx", "provider": "openai", "upstream_model": "gpt-4o-mini", "context_window": 60},
    ]
    return {
        "providers": [
            {"name": "openai", "kind": "openai", "cluster": "openai", "host": "api.openai.com",
             "auth": {"from": "injector"}},
            {"name": "azure", "kind": "azure", "cluster": "azure", "host": "e2e.openai.azure.com",
             "auth": {"from": "injector"}, "options": {"api_version": "2024-10-21"}},
            {"name": "anthropic", "kind": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com",
             "auth": {"from": "injector"}},
        ],
        "models": models,
        "callers": [
            {"id": "router", "team": "us", "key_sha256": gw.sha256_hex(KEYS["router"]), "admin": True},
            {"id": "eu-app", "team": "eu", "key_sha256": gw.sha256_hex(KEYS["eu-app"])},
            {"id": "gdpr-app", "team": "other", "key_sha256": gw.sha256_hex(KEYS["gdpr-app"])},
        ],
        "routing": {
            "cooldown": cooldown,
            "pinning": [{"team": "eu", "regions": ["eu"]}, {"caller": "gdpr-app", "tags": ["gdpr"]}],
        },
    }


def start(make_gateway, cooldown: dict):
    endpoints = {d: f"127.0.0.1:{gw.free_port()}" for d in DEPLOYMENTS}
    cfg = routing_config(endpoints, cooldown)
    return make_gateway(
        plugin_config=cfg,
        mutate=lambda doc: gw.set_deployments(
            doc, {d: (DEPLOYMENTS[d][0], ep) for d, ep in endpoints.items()}))


@pytest.fixture(scope="module")
def rgw(mock, tmp_path_factory):
    """Cooldown off: failures in one test must not steer the next."""
    endpoints = {d: f"127.0.0.1:{gw.free_port()}" for d in DEPLOYMENTS}
    g = gw.Gateway(tmp_path_factory.mktemp("gw-routing"), mock.port,
                   plugin_config=routing_config(endpoints, {"failures": 0, "window_seconds": 1,
                                                            "seconds": 1}),
                   mutate=lambda doc: gw.set_deployments(
                       doc, {d: (DEPLOYMENTS[d][0], ep) for d, ep in endpoints.items()}))
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def no_faults(mock):
    mock.clear_faults()
    yield
    mock.clear_faults()


def client(g, who="router", **kw) -> openai.OpenAI:
    return g.client(KEYS[who], **kw)


def chat_raw(g, model, text, *, who="router", stream=False):
    """(headers, answer text, finish_reason) through the openai SDK."""
    raw = client(g, who).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], stream=stream)
    if not stream:
        c = raw.parse()
        assert c.object == "chat.completion"
        return raw.headers, c.choices[0].message.content, c.choices[0].finish_reason
    parts, finish = [], None
    for chunk in raw.parse():
        if chunk.object == "" and not chunk.choices:
            continue  # Azure's prompt_filter_results chunk (as Azure sends it)
        assert chunk.object == "chat.completion.chunk"
        for ch in chunk.choices:
            parts.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    return raw.headers, "".join(parts), finish


def upstream_hits(mock, token) -> list[tuple[str, str]]:
    """(provider, model as the provider saw it) of each attempt carrying token."""
    out = []
    for r in mock.find(token):
        if r["provider"] == "azure":
            model = r["path"].split("/")[3]
        else:
            model = json.loads(r["body"]).get("model")
        out.append((r["provider"], model))
    return out


# ----------------------------------------------------------------- strategies

def test_weighted_split_of_2000_requests(rgw):
    """Weights 3:1 → 75 % / 25 %; binomial sd at n=2000 is 0.97 pp, the
    tolerance (±4 pp) is over 4 sd."""
    n = 2000
    http = httpx.Client(base_url=rgw.url, timeout=30,
                        limits=httpx.Limits(max_connections=16))

    def one(i):
        r = http.post(CHAT, headers=gw.auth(KEYS["router"]),
                      json=gw.chat_body(f"split {i}", "gpt-4o-r"))
        assert r.status_code == 200, r.text
        # The answer is the deployment's own: its upstream model name.
        dep, model = r.headers["x-llm-deployment"], r.json()["model"]
        assert (dep, model) in {("r-oai", "gpt-4o-2024-08-06"), ("r-az", "gpt-4o")}, (dep, model)
        assert r.headers["x-llm-attempts"] == "1"
        return dep

    with ThreadPoolExecutor(8) as ex:
        counts = collections.Counter(ex.map(one, range(n)))
    http.close()
    share = counts["r-oai"] / n
    assert abs(share - 0.75) < 0.04, counts


def test_least_in_flight_avoids_a_slow_deployment(rgw, mock):
    """l-slow takes 700 ms to answer, l-fast answers at once: with 10
    clients at a time, least-in-flight keeps sending to l-fast (weighted
    random would give each half)."""
    mock.add_fault(provider="openai", model="gpt-4-turbo", behavior="stall=700")
    http = httpx.Client(base_url=rgw.url, timeout=30, limits=httpx.Limits(max_connections=16))

    def one(i):
        r = http.post(CHAT, headers=gw.auth(KEYS["router"]), json=gw.chat_body(f"lif {i}", "lif-r"))
        assert r.status_code == 200, r.text
        return r.headers["x-llm-deployment"]

    with ThreadPoolExecutor(10) as ex:
        counts = collections.Counter(ex.map(one, range(80)))
    http.close()
    print("least-in-flight split:", dict(counts))
    assert counts["l-slow"] <= 16, counts
    assert counts["l-fast"] >= 64, counts


# ----------------------------------------------------------------- failover

FAILURES = {
    "503": "fail=503",
    "429": "throttle=1",
    "reset": "reset=before_headers",
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", list(FAILURES))
def test_failover_to_the_next_deployment_then_to_another_provider(rgw, mock, kind, stream):
    behavior = FAILURES[kind]
    # OpenAI fails: Azure answers, second attempt.
    mock.add_fault(provider="openai", behavior=behavior)
    token = gw.nonce("fo1")
    h, text, finish = chat_raw(rgw, "prio-r", token, stream=stream)
    assert (h["x-llm-deployment"], h["x-llm-attempts"]) == ("p-az", "2")
    assert h["x-llm-provider"] == "azure"
    assert text.startswith("Hello from the mock azure model gpt-4o-mini") and token in text
    assert finish == "stop"
    assert upstream_hits(mock, token) == [("openai", "gpt-4.1"), ("azure", "gpt-4o-mini")]
    # OpenAI and Azure fail: the fallback model on Anthropic, translated.
    mock.add_fault(provider="azure", behavior=behavior)
    token = gw.nonce("fo2")
    h, text, finish = chat_raw(rgw, "prio-r", token, stream=stream)
    assert (h["x-llm-deployment"], h["x-llm-attempts"]) == ("r-ant-us", "3")
    assert (h["x-llm-provider"], h["x-llm-model"]) == ("anthropic", "claude-sonnet-4-5")
    assert text.startswith("Hello from the mock anthropic model claude-sonnet-4-5") and token in text
    assert finish == "stop"
    assert upstream_hits(mock, token) == [
        ("openai", "gpt-4.1"), ("azure", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")]


def test_anthropic_request_used_on_the_other_provider_has_no_openai_leftovers(rgw, mock):
    """The attempts share one header map: Azure's attempt must not carry
    OpenAI's authorization, Anthropic's not Azure's api-key or path."""
    mock.add_fault(provider="openai", behavior="fail=503")
    mock.add_fault(provider="azure", behavior="fail=503")
    token = gw.nonce("hdr")
    chat_raw(rgw, "prio-r", token)
    reqs = {r["provider"]: r for r in mock.find(token)}
    assert reqs["openai"]["headers"]["authorization"] == f"Bearer {gw.OPENAI_KEY}"
    az = reqs["azure"]["headers"]
    assert "authorization" not in az and az["api-key"] == gw.AZURE_KEY
    assert az["host"] == "e2e.openai.azure.com"
    ant = reqs["anthropic"]
    assert ant["path"] == "/v1/messages"
    assert ant["headers"]["x-api-key"] == gw.ANTHROPIC_KEY
    assert "api-key" not in ant["headers"] and "authorization" not in ant["headers"]
    assert ant["headers"]["host"] == "api.anthropic.com"
    for r in reqs.values():
        # Nothing about the routing reaches a provider.
        assert not any(k.startswith("x-llmgw") for k in r["headers"]), r["headers"]
        assert "x-envoy-max-retries" not in r["headers"]


def test_every_deployment_failing_gives_one_error(rgw, mock):
    for p in ("openai", "azure", "anthropic"):
        mock.add_fault(provider=p, behavior="fail=503")
    r = rgw.http().post(CHAT, headers=gw.auth(KEYS["router"]),
                        json=gw.chat_body(gw.nonce("all"), "prio-r"))
    gw.assert_openai_error(r, 503)
    # p-oai, p-az, r-ant-us, r-ant-eu: max_attempts (4) attempts.
    assert r.headers["x-llm-attempts"] == "4"
    assert r.headers["x-llm-deployment"] == "r-ant-eu"


def test_a_stalled_deployment_times_out_per_try_and_the_next_answers(make_gateway, mock):
    """The route's per_try_timeout (here 1 s) bounds the wait for a
    deployment's answer headers; then the next deployment is tried."""
    endpoints = {d: f"127.0.0.1:{gw.free_port()}" for d in DEPLOYMENTS}

    def mutate(doc):
        gw.set_deployments(doc, {d: (DEPLOYMENTS[d][0], ep) for d, ep in endpoints.items()})
        routes = gw.hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
        route = next(r for r in routes if r["route"].get("cluster") == gw.ROUTING_CLUSTER)
        route["route"]["retry_policy"]["per_try_timeout"] = "1s"

    g = make_gateway(plugin_config=routing_config(endpoints, {"failures": 0, "window_seconds": 1,
                                                              "seconds": 1}), mutate=mutate)
    mock.add_fault(provider="openai", behavior="stall=4000")
    for stream in (False, True):
        t0 = time.monotonic()
        h, text, _ = chat_raw(g, "prio-r", gw.nonce("stall"), stream=stream)
        took = time.monotonic() - t0
        assert (h["x-llm-deployment"], h["x-llm-attempts"]) == ("p-az", "2")
        assert 0.9 < took < 3.5, took


def test_a_stream_that_failed_after_its_first_byte_is_not_retried(rgw, mock):
    mock.add_fault(provider="openai", behavior="reset=mid_stream,chunks=8")
    token = gw.nonce("mid")
    got = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream = client(rgw).chat.completions.create(
            model="prio-r", messages=[{"role": "user", "content": token}], stream=True)
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
        # The SDK may end quietly at a cut: that is a failure too.
        raise httpx.RemoteProtocolError("stream ended without finish")
    assert got, "the first events arrived"
    assert upstream_hits(mock, token) == [("openai", "gpt-4.1")]


def test_async_clients_fail_over_concurrently(rgw, mock):
    mock.add_fault(provider="openai", behavior="fail=500")

    async def main():
        c = rgw.async_client(KEYS["router"])
        try:
            async def one(i):
                raw = await c.chat.completions.with_raw_response.create(
                    model="prio-r", messages=[{"role": "user", "content": f"async {i}"}])
                return raw.headers["x-llm-deployment"], raw.parse().choices[0].message.content
            return await asyncio.gather(*(one(i) for i in range(20)))
        finally:
            await c.close()

    for dep, text in asyncio.run(main()):
        assert dep == "p-az" and text.startswith("Hello from the mock azure")


def test_anthropic_sdk_on_a_routed_model(rgw, mock):
    mock.add_fault(provider="openai", behavior="fail=503")
    # The mock knows versions 2023-06-01 and 2023-01-01 only (see test_anthropic_sdk.py).
    c = anthropic.Anthropic(base_url=rgw.url, api_key=KEYS["router"], max_retries=0,
                            default_headers={"anthropic-version": "2023-06-01"})
    raw = c.messages.with_raw_response.create(
        model="prio-r", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    m = raw.parse()
    assert m.type == "message" and m.content[0].text.startswith("Hello from the mock azure")
    assert raw.headers["x-llm-deployment"] == "p-az"
    # The other way round: fallback to Anthropic, native Messages passthrough.
    mock.add_fault(provider="azure", behavior="fail=503")
    raw = c.messages.with_raw_response.create(
        model="prio-r", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().content[0].text.startswith("Hello from the mock anthropic model claude-sonnet-4-5")
    assert raw.headers["x-llm-attempts"] == "3"


def test_embeddings_fail_over(rgw, mock):
    mock.add_fault(provider="openai", behavior="fail=503")
    raw = client(rgw).embeddings.with_raw_response.create(model="emb-r", input="hello")
    e = raw.parse()
    assert len(e.data[0].embedding) > 0
    assert raw.headers["x-llm-deployment"] == "e-az"


# ----------------------------------------------------------------- pinning

def test_pinned_team_never_leaves_its_region(rgw, mock):
    for i in range(20):
        h, _, _ = chat_raw(rgw, "gpt-4o-r", f"eu {i}", who="eu-app")
        assert h["x-llm-deployment"] == "r-az"
    # Azure EU down: the fallback model's EU deployment, not OpenAI US.
    mock.add_fault(provider="azure", behavior="fail=503")
    token = gw.nonce("eu")
    h, text, _ = chat_raw(rgw, "gpt-4o-r", token, who="eu-app")
    assert (h["x-llm-deployment"], h["x-llm-attempts"]) == ("r-ant-eu", "2")
    assert "claude-haiku-4-5-20251001" in text
    assert upstream_hits(mock, token) == [("azure", "gpt-4o"), ("anthropic", "claude-haiku-4-5-20251001")]
    # Both EU deployments down: an error, even though US ones are healthy.
    mock.add_fault(provider="anthropic", model="claude-haiku-4-5-20251001", behavior="fail=503")
    token = gw.nonce("eu-down")
    r = rgw.http().post(CHAT, headers=gw.auth(KEYS["eu-app"]), json=gw.chat_body(token, "gpt-4o-r"))
    gw.assert_openai_error(r, 503)
    assert upstream_hits(mock, token) == [("azure", "gpt-4o"), ("anthropic", "claude-haiku-4-5-20251001")]
    # Unpinned callers still get the US deployments.
    h, _, _ = chat_raw(rgw, "gpt-4o-r", gw.nonce("us"))
    assert h["x-llm-deployment"] in {"r-oai", "r-ant-us"}


def test_pin_with_no_deployment_is_a_403(rgw, mock):
    r = rgw.http().post(CHAT, headers=gw.auth(KEYS["gdpr-app"]), json=gw.chat_body("x", "claude-r"))
    err = gw.assert_openai_error(r, 403, "deployment_not_allowed")
    assert "tags gdpr" in err["message"]
    # Its gdpr-tagged deployment serves it, and only that one.
    mock.add_fault(provider="azure", behavior="fail=503")
    r = rgw.http().post(CHAT, headers=gw.auth(KEYS["gdpr-app"]), json=gw.chat_body("x", "gpt-4o-r"))
    gw.assert_openai_error(r, 503)
    assert r.headers["x-llm-attempts"] == "1"


# ----------------------------------------------------------------- context window

def test_context_window_fallback_and_context_length_exceeded(rgw):
    short = "hi"
    long = "word " * 80  # ~460 bytes of body: ~115 tokens > 60
    raw = client(rgw).chat.completions.with_raw_response.create(
        model="small-ctx", messages=[{"role": "user", "content": short}])
    assert raw.headers["x-llm-model"] == "gpt-4o-mini"
    raw = client(rgw).chat.completions.with_raw_response.create(
        model="small-ctx", messages=[{"role": "user", "content": long}])
    assert raw.headers["x-llm-model"] == "gpt-4.1"
    assert raw.parse().model == "gpt-4.1"
    with pytest.raises(openai.BadRequestError) as e:
        client(rgw).chat.completions.create(
            model="nofb-ctx", messages=[{"role": "user", "content": long}])
    assert e.value.code == "context_length_exceeded"
    assert e.value.body["param"] == "messages"


# ----------------------------------------------------------------- cooldown

def test_cooldown_skips_a_failing_deployment_and_lets_it_back(make_gateway, mock):
    g = start(make_gateway, {"failures": 2, "window_seconds": 10, "seconds": 6})
    mock.add_fault(provider="openai", model="gpt-4.1", behavior="fail=503", count=2)
    # Two failures of p-oai within 10 s (each request still answered by p-az).
    for i in range(2):
        h, _, _ = chat_raw(g, "prio-r", f"cd {i}")
        assert (h["x-llm-deployment"], h["x-llm-attempts"]) == ("p-az", "2")
    cooled_at = time.monotonic()
    # Cooling: p-oai is not even tried, by either worker (a new connection
    # each time, so both workers of --concurrency 2 take some).
    fresh = httpx.Client(base_url=g.url, timeout=30,
                         limits=httpx.Limits(max_keepalive_connections=0))
    for i in range(10):
        token = gw.nonce("cool")
        r = fresh.post(CHAT, headers=gw.auth(KEYS["router"]), json=gw.chat_body(token, "prio-r"))
        assert r.status_code == 200, r.text
        assert (r.headers["x-llm-deployment"], r.headers["x-llm-attempts"]) == ("p-az", "1")
        assert upstream_hits(mock, token) == [("azure", "gpt-4o-mini")]
    fresh.close()
    state = {d["deployment"]: d for d in routing_state(g)}
    assert 0 < state["p-oai"]["cooling_down_for_ms"] <= 6000
    assert state["p-az"]["cooling_down_for_ms"] == 0
    prom = g.admin_get("/stats/prometheus").text
    assert re.search(r'llmgw_deployment_cooldowns\{deployment="p-oai"\} 1\b', prom), prom[-2000:]
    # Back by itself after 6 s (the rule is used up: p-oai answers again).
    time.sleep(max(0.0, cooled_at + 6.3 - time.monotonic()))
    h, _, _ = chat_raw(g, "prio-r", gw.nonce("back"))
    assert (h["x-llm-deployment"], h["x-llm-attempts"]) == ("p-oai", "1")


def test_every_deployment_cooling_is_a_503_with_retry_after(make_gateway, mock):
    g = start(make_gateway, {"failures": 1, "window_seconds": 10, "seconds": 30})
    mock.add_fault(provider="openai", model="text-embedding-3-small", behavior="fail=503")
    mock.add_fault(provider="azure", behavior="fail=503")
    r = g.http().post("/v1/embeddings", headers=gw.auth(KEYS["router"]),
                      json={"model": "emb-r", "input": "x"})
    gw.assert_openai_error(r, 503)
    r = g.http().post("/v1/embeddings", headers=gw.auth(KEYS["router"]),
                      json={"model": "emb-r", "input": "x"})
    err = gw.assert_openai_error(r, 503, "no_deployment_available")
    assert "cooling down" in err["message"]
    assert 25 <= int(r.headers["retry-after"]) <= 30


# ----------------------------------------------------------------- audit, metrics

def test_audit_line_and_metrics_carry_deployment_and_attempts(rgw, mock):
    mock.add_fault(provider="openai", behavior="fail=503")
    token = gw.nonce("audit")
    raw = rgw.http().post(CHAT, headers=gw.auth(KEYS["router"]), json=gw.chat_body(token, "prio-r"))
    assert raw.status_code == 200
    rid = raw.headers["x-request-id"]
    deadline = time.monotonic() + 5
    line = None
    while time.monotonic() < deadline and line is None:
        for ln in rgw.access_log.read_text().splitlines():
            if rid in ln:
                line = json.loads(ln)
        time.sleep(0.1)
    assert line, "access log line"
    assert (line["deployment"], line["attempts"], line["provider"]) == ("p-az", "2", "azure")
    assert (line["model"], line["upstream_model"]) == ("prio-r", "gpt-4o-mini")
    assert int(line["prompt_tokens"]) > 0
    prom = rgw.admin_get("/stats/prometheus").text
    assert re.search(r'llmgw_deployment_requests\{[^}]*gen_ai_request_model="prio-r"[^}]*'
                     r'deployment="p-az"[^}]*status_class="2xx"\} [1-9]', prom) or \
        re.search(r'llmgw_deployment_requests\{[^}]*deployment="p-az"', prom), prom[-3000:]
    assert re.search(r'llmgw_deployment_failures\{[^}]*deployment="p-oai"[^}]*reason="5xx"[^}]*\} [1-9]',
                     prom), prom[-3000:]


def routing_state(g) -> list[dict]:
    r = g.http().get("/v1/routing", headers=gw.auth(KEYS["router"]))
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_routing_state_is_admin_only_and_in_flight_returns_to_zero(rgw):
    """After the load above (2000 requests, slow and failing attempts,
    streams, resets), every deployment's in-flight count is back to 0: each
    attempt's start was matched by exactly one end."""
    r = rgw.http().get("/v1/routing", headers=gw.auth(KEYS["eu-app"]))
    gw.assert_openai_error(r, 403, "not_admin")
    deadline = time.monotonic() + 5
    while True:
        state = routing_state(rgw)
        if all(d["in_flight"] == 0 for d in state) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(d["deployment"], d["in_flight"]) for d in state if d["in_flight"]] == []
    by = {d["deployment"]: d for d in state}
    assert set(by) == set(DEPLOYMENTS)
    assert by["r-az"]["region"] == "eu" and by["r-az"]["tags"] == ["gdpr"]
    assert by["l-slow"]["latency_ms"] >= 500 > by["l-fast"]["latency_ms"]


# ----------------------------------------------------------------- shipped demo

def test_shipped_demo_model_falls_over_to_anthropic(gateway, mock):
    """make run's gpt-4o-ha: OpenAI and Azure deployments, Claude fallback,
    switched by hand with the mock's failure switch (README)."""
    seen = {chat_raw_demo(gateway)[0] for _ in range(20)}
    assert seen == {"gpt-4o-ha@openai", "gpt-4o-ha@azure"}
    mock.add_fault(provider="openai", behavior="fail=503")
    mock.add_fault(provider="azure", behavior="fail=503")
    dep, attempts, text = chat_raw_demo(gateway)
    assert (dep, attempts) == ("claude-sonnet-4-5-ha@anthropic", "3")
    assert text.startswith("Hello from the mock anthropic model claude-sonnet-4-5")
    models = {m.id: m.owned_by for m in gateway.client().models.list()}
    assert models["gpt-4o-ha"] == "openai" and models["claude-sonnet-4-5-ha"] == "anthropic"


def chat_raw_demo(g):
    raw = g.client().chat.completions.with_raw_response.create(
        model="gpt-4o-ha", messages=[{"role": "user", "content": "hello"}])
    return raw.headers["x-llm-deployment"], raw.headers["x-llm-attempts"], \
        raw.parse().choices[0].message.content
