"""Quotas in a real Envoy (4 workers): exact admission under concurrency,
token and spend limits reached by the mock's real usage, concurrency
limits, counters that always return to zero, the usage the gateway asks
for on the client's behalf, rate-limit headers, the official SDK's retry,
and `/v1/usage`.

The per-minute limits count in fixed UTC minutes: tests that depend on one
minute's counters first make sure enough of the minute is left
(`qu.fresh_minute`). Every test uses callers of its own, so the counters
of one test never reach another's.

A provider's own 429 passing through with its retry-after is tested in
test_provider_errors.py (the shipped config, with quotas on)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import time

import httpx
import openai
import pytest

import gw
import quota_util as qu
from quota_util import CHAT

# ----------------------------------------------------------------- the gateway

EXACT_TRIALS = 100        # trials of the exact-admission test
EXACT_SPARE = 10          # callers for trials voided by a minute boundary
BURST = 64                # concurrent requests per trial
EXACT_RPM = 10
TEAM_TRIALS = 20          # the same with a team-level limit
TEAM_SIZE = 4

TPM_LIMIT = 300
USD_LIMIT_MICROS = 2000   # $0.002 a day
CONCURRENT = 3
HDR_RPM, HDR_TPM = 20, 100_000
LLAMA_RESERVE = 77        # models[llama3.2].reserve_tokens
DEFAULT_RESERVE = 333     # quotas.default_reserve_tokens

END_CASES = ["client_disconnect", "client_gone_before_answer", "upstream_cut_stream", "upstream_cut_whole",
             "provider_5xx", "provider_429", "quota_refusal", "bad_request"]
INJECT_MODELS = ["gpt-4o-mini", "azure-gpt-4o-mini", "qwen2.5-7b", "llama3.2"]
TRANSLATED_MODELS = ["claude-haiku-4-5", "gemini-2.5-flash", "vertex-gemini-2.5-flash",
                     "bedrock-nova-lite", "bedrock-claude-sonnet-4-5"]


def exact_id(i: int) -> str:
    return f"exact-{i:03d}"


def team_member(t: int, j: int) -> str:
    return f"tx-{t:02d}-{j}"


def quota_callers() -> tuple[dict, dict]:
    """(callers, quotas) of the module's gateway."""
    callers: dict[str, dict] = {}
    limits: dict[str, dict] = {}
    teams: dict[str, dict] = {}
    for i in range(EXACT_TRIALS + EXACT_SPARE):
        callers[exact_id(i)] = {}
        limits[exact_id(i)] = {"requests_per_minute": EXACT_RPM}
    for t in range(TEAM_TRIALS + 4):
        teams[f"tx-{t:02d}"] = {"requests_per_minute": EXACT_RPM}
        for j in range(TEAM_SIZE):
            callers[team_member(t, j)] = {"team": f"tx-{t:02d}"}
    callers["tpm"] = {}
    limits["tpm"] = {"tokens_per_minute": TPM_LIMIT}
    callers["usd"] = {}
    limits["usd"] = {"usd_per_day": USD_LIMIT_MICROS / 1e6}
    callers["conc"] = {"team": "conc-team"}
    limits["conc"] = {"max_concurrent": CONCURRENT}
    callers["hdr"] = {}
    limits["hdr"] = {"requests_per_minute": HDR_RPM, "tokens_per_minute": HDR_TPM}
    callers["reserve"] = {}
    limits["reserve"] = {"tokens_per_minute": HDR_TPM}
    callers["retry"] = {}
    limits["retry"] = {"max_concurrent": 1}
    for case in END_CASES:
        callers[f"end-{case}"] = {"team": "end-team"}
    limits["end-quota_refusal"] = {"requests_per_minute": 1}
    for m in INJECT_MODELS + TRANSLATED_MODELS + ["completions", "with-usage", "said-no"]:
        callers[f"inj-{m}"] = {}
    for m in ("claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash", "limited"):
        callers[f"msg-{m}"] = {}
    limits["msg-limited"] = {"requests_per_minute": 1}
    callers["viewer"] = {"team": "vt"}
    callers["other"] = {"team": "vt2"}
    quotas = {
        "default": {"requests_per_minute": 600, "tokens_per_minute": 1_000_000},
        "teams": teams,
        "callers": limits,
        "default_reserve_tokens": DEFAULT_RESERVE,
    }
    return callers, quotas


def build_config() -> tuple[dict, dict[str, str]]:
    callers, quotas = quota_callers()
    cfg, keys = qu.config_with(callers, quotas)
    qu.model_cfg(cfg, "llama3.2")["reserve_tokens"] = LLAMA_RESERVE
    return cfg, keys


class QGateway:
    def __init__(self, g: gw.Gateway, cfg: dict, keys: dict[str, str]):
        self.g, self.cfg, self.keys = g, cfg, keys
        self.http = g.http()

    def model(self, name: str) -> dict:
        return qu.model_cfg(self.cfg, name)

    def report(self, caller: str) -> dict:
        return qu.report(self.g, self.keys[caller], self.http)

    def post(self, caller: str, body: dict | bytes, path: str = CHAT, behavior: str | None = None,
             client: httpx.Client | None = None) -> httpx.Response:
        h = gw.auth(self.keys[caller])
        if behavior:
            h["x-mock-behavior"] = behavior
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return (client or self.http).post(path, headers=h, content=content)


@pytest.fixture(scope="module")
def q(mock, tmp_path_factory):
    cfg, keys = build_config()
    g = gw.Gateway(tmp_path_factory.mktemp("gw-quotas"), mock.port, plugin_config=cfg,
                   concurrency=4)
    yield QGateway(g, cfg, keys)
    g.stop()


def encode(body: dict) -> bytes:
    return json.dumps(body).encode()


def data_events(text: str) -> list[str]:
    return [d for _, d in qu.sse_events(text)]


# ----------------------------------------------------------------- 1. exact admission

async def _burst(client: httpx.AsyncClient, url: str, key: str | list[str], n: int):
    keys = key if isinstance(key, list) else [key]

    async def one(i):
        r = await client.post(url, headers=gw.auth(keys[i % len(keys)]),
                              content=encode(gw.chat_body(f"burst {i}", "gpt-4o-mini",
                                                          max_tokens=5)))
        return r.status_code, r.headers, (r.json() if r.status_code == 429 else None)
    return await asyncio.gather(*(one(i) for i in range(n)))


async def _trials(q: QGateway, keysets: list, trials: int) -> list[dict]:
    """Run `trials` bursts of BURST concurrent requests, each with a fresh
    caller (or team) from `keysets`; a burst that straddles a UTC minute is
    voided and run again with the next one."""
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    url = q.g.url + CHAT
    results, pool = [], iter(keysets)
    async with httpx.AsyncClient(transport=gw.AsyncRecordingTransport(limits=limits),
                                 timeout=30) as client:
        while len(results) < trials:
            key = next(pool)
            t0 = qu.now_ms()
            out = await _burst(client, url, key, BURST)
            t1 = qu.now_ms()
            if qu.minute_of(t0) != qu.minute_of(t1):
                continue  # two windows: the limit may rightly admit twice
            results.append({"statuses": [s for s, _, _ in out], "answers": out,
                            "ms": t1 - t0})
    return results


def _check_trials(results: list[dict], label: str) -> None:
    admitted = [r["statuses"].count(200) for r in results]
    refused = [r["statuses"].count(429) for r in results]
    over = sum(max(0, a - EXACT_RPM) for a in admitted)
    under = sum(max(0, EXACT_RPM - a) for a in admitted)
    ms = sorted(r["ms"] for r in results)
    print(f"\n{label}: {len(results)} trials x {BURST} concurrent requests, limit {EXACT_RPM}/min: "
          f"admitted min {min(admitted)} max {max(admitted)}, over-admission {over}, "
          f"under-admission {under}; burst time p50 {ms[len(ms) // 2]} ms")
    for r in results:
        assert sorted(set(r["statuses"])) == [200, 429], r["statuses"]
        for status, headers, body in r["answers"]:
            if status == 429:
                assert body["error"]["code"] == "rate_limit_exceeded", body
                assert headers["x-llm-limit"] == "requests_per_minute"
                assert headers["x-ratelimit-remaining-requests"] == "0"
    assert over == 0, admitted
    assert admitted == [EXACT_RPM] * len(results), admitted
    assert refused == [BURST - EXACT_RPM] * len(results), refused


def _worker_connections(g: gw.Gateway) -> list[int]:
    """Downstream connections each Envoy worker accepted so far."""
    per = {}
    for name, v in g.stats().items():
        if name.startswith(f"listener.127.0.0.1_{g.port}.worker_") and \
                name.endswith(".downstream_cx_total"):
            per[int(name.split(".worker_")[1].split(".")[0])] = v
    return [per[w] for w in sorted(per)]


@pytest.mark.timeout(120)
def test_exact_admission_under_concurrency(q):
    """100 trials: 64 requests at once against requests_per_minute 10
    admit exactly 10 (4 Envoy workers, compare-and-swap on shared data)."""
    keys = [q.keys[exact_id(i)] for i in range(EXACT_TRIALS + EXACT_SPARE)]
    before = _worker_connections(q.g)
    t0 = time.monotonic()
    results = asyncio.run(_trials(q, keys, EXACT_TRIALS))
    elapsed = time.monotonic() - t0
    spread = [b - a for a, b in zip(before, _worker_connections(q.g))]
    print(f"exact admission: {EXACT_TRIALS * BURST} requests in {elapsed:.1f} s; "
          f"connections per Envoy worker {spread}")
    # The bursts really went through several workers (per-worker counters
    # would admit up to 10 per worker).
    assert len(spread) == 4 and sum(1 for n in spread if n > 0) >= 3, spread
    _check_trials(results, "caller limit")
    assert elapsed < 60


@pytest.mark.timeout(60)
def test_exact_admission_team_limit(q):
    """A team-level limit is one counter for the team: 64 concurrent
    requests spread over 4 callers of a team admit exactly 10."""
    teams = [[q.keys[team_member(t, j)] for j in range(TEAM_SIZE)] for t in range(TEAM_TRIALS + 4)]
    results = asyncio.run(_trials(q, teams, TEAM_TRIALS))
    _check_trials(results, "team limit")


# ----------------------------------------------------------------- 2. tokens and spend

def _check_retry_after(r: httpx.Response, t0: int, t1: int, end_ms) -> int:
    """retry-after-ms is the time from the refusal to the window's end;
    retry-after the same in whole seconds, rounded up."""
    ms = int(r.headers["retry-after-ms"])
    assert end_ms(t1) - t1 - 5 <= ms <= end_ms(t0) - t0 + 5, (ms, t0, t1)
    assert int(r.headers["retry-after"]) == max(1, math.ceil(ms / 1000)), dict(r.headers)
    return ms


def test_tokens_per_minute_reached_by_real_usage(q):
    """Each request reserves max_tokens + body/4 and is settled with the
    mock's usage; the request that would go over the limit is refused."""
    qu.fresh_minute(20)
    model = q.model("gpt-4o-mini")
    used, admitted = 0, 0
    for i in range(30):
        body = encode(gw.chat_body(f"tokens {i}", "gpt-4o-mini", max_tokens=40))
        reserve, _ = qu.reservation(model, body, 40)
        t0 = qu.now_ms()
        r = q.post("tpm", body)
        t1 = qu.now_ms()
        if used + reserve <= TPM_LIMIT:
            assert r.status_code == 200, r.text
            assert r.headers["x-ratelimit-limit-tokens"] == str(TPM_LIMIT)
            assert int(r.headers["x-ratelimit-remaining-tokens"]) == TPM_LIMIT - used - reserve
            u = r.json()["usage"]
            assert u["total_tokens"] < reserve  # the settlement gives some back
            used += u["total_tokens"]
            admitted += 1
            rep = q.report("tpm")
            assert rep["usage"]["tokens"]["minute"] == used
            assert rep["usage"]["models"]["gpt-4o-mini"]["tokens"]["minute"] == used
            continue
        err = gw.assert_openai_error(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
        msg = err["message"]
        assert "tokens_per_minute" in msg and "caller 'tpm'" in msg, msg
        assert f"limit {TPM_LIMIT}, used {used}, requested {reserve}." in msg, msg
        ms = _check_retry_after(r, t0, t1, qu.minute_end_ms)
        assert r.headers["x-llm-limit"] == "tokens_per_minute"
        assert r.headers["x-ratelimit-limit-tokens"] == str(TPM_LIMIT)
        assert r.headers["x-ratelimit-remaining-tokens"] == str(TPM_LIMIT - used)
        assert qu.parse_duration_ms(r.headers["x-ratelimit-reset-tokens"]) == ms
        assert "x-should-retry" not in r.headers  # worth retrying next minute
        assert qu.parse_duration_ms(msg.rsplit("try again in ", 1)[1].rstrip(".")) == ms
        break
    else:
        pytest.fail(f"never refused; used {used}")
    assert admitted >= 3, admitted
    # A request larger than the limit on its own: no retry can help.
    r = q.post("tpm", gw.chat_body("huge", "gpt-4o-mini", max_tokens=TPM_LIMIT + 1))
    err = gw.assert_openai_error(r, 429, "rate_limit_exceeded")
    assert "alone exceeds the limit" in err["message"], err
    assert r.headers["x-should-retry"] == "false"
    rep = q.report("tpm")
    assert rep["usage"]["tokens"]["minute"] == used
    assert rep["usage"]["requests"]["minute"] == admitted
    assert rep["usage"]["in_flight"] == 0
    lim = qu.limit_entry(rep, "tokens_per_minute")
    assert (lim["level"], lim["value"], lim["used"], lim["remaining"]) == \
        ("caller", TPM_LIMIT, used, TPM_LIMIT - used)


def _counting_sdk(g: gw.Gateway, key: str, max_retries: int):
    """An official SDK client whose every attempt's status lands in the
    returned list."""
    statuses: list[int] = []
    http = gw.recording_client(timeout=30, event_hooks={
        "response": [lambda resp: statuses.append(resp.status_code)]})
    g._clients.append(http)
    return openai.OpenAI(base_url=g.base_url, api_key=key, max_retries=max_retries,
                         http_client=http), statuses


def test_usd_per_day_reached_by_real_usage(q):
    """Spend is reserved at the model's prices (max_tokens and body/4) and
    settled at the price of the mock's usage; the budget's refusal is
    insufficient_quota, until the end of the UTC day, not to be retried."""
    left = 86_400 - time.time() % 86_400
    if left < 30:
        time.sleep(left + 0.1)
    model = q.model("gpt-4o")
    spent, admitted = 0, 0
    for i in range(30):
        body = encode(gw.chat_body(f"spend {i}", "gpt-4o", max_tokens=40))
        _, reserve = qu.reservation(model, body, 40)
        t0 = qu.now_ms()
        r = q.post("usd", body)
        t1 = qu.now_ms()
        if spent + reserve <= USD_LIMIT_MICROS:
            assert r.status_code == 200, r.text
            u = r.json()["usage"]
            cost = qu.cost_micros(model, u["prompt_tokens"], u["completion_tokens"],
                                  u["prompt_tokens_details"]["cached_tokens"])
            assert 0 < cost < reserve
            spent += cost
            admitted += 1
            rep = q.report("usd")
            assert rep["usage"]["usd_micros"]["day"] == spent
            assert rep["usage"]["usd"]["day"] == f"{spent / 1e6:.6f}"
            assert rep["usage"]["models"]["gpt-4o"]["usd_micros"]["month"] == spent
            continue
        err = gw.assert_openai_error(r, 429, "insufficient_quota", "insufficient_quota")
        msg = err["message"]
        assert msg.startswith("Budget reached for usd_per_day of caller 'usd'"), msg
        assert f"limit ${USD_LIMIT_MICROS / 1e6:.6f}, used ${spent / 1e6:.6f}, " \
               f"requested ${reserve / 1e6:.6f}." in msg, msg
        _check_retry_after(r, t0, t1, qu.day_end_ms)
        assert r.headers["x-should-retry"] == "false"
        assert r.headers["x-llm-limit"] == "usd_per_day"
        break
    else:
        pytest.fail(f"never refused; spent {spent}")
    assert admitted >= 2, admitted
    # The official SDK does not retry a budget refusal, even when allowed to.
    # (max_tokens: more than what is left, less than the whole budget)
    client, statuses = _counting_sdk(q.g, q.keys["usd"], max_retries=2)
    max_tokens = (USD_LIMIT_MICROS - spent) // 10 + 5
    assert max_tokens * 10 < USD_LIMIT_MICROS - 200
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="gpt-4o", max_tokens=max_tokens,
                                       messages=[{"role": "user", "content": "more"}])
    assert "alone exceeds" not in ei.value.message
    assert ei.value.code == "insufficient_quota"
    assert statuses == [429]
    rep = q.report("usd")
    assert rep["usage"]["usd_micros"]["day"] == spent
    lim = qu.limit_entry(rep, "usd_per_day")
    assert (lim["value"], lim["used"]) == (f"{USD_LIMIT_MICROS / 1e6:.6f}", f"{spent / 1e6:.6f}")


@pytest.mark.parametrize("case", ["max_tokens_n", "max_completion_tokens", "model_reserve",
                                  "default_reserve", "embedding"])
def test_reservation_sizes(q, case):
    """What a request reserves, as x-ratelimit-remaining-tokens shows it at
    admission: max_completion_tokens (or max_tokens) x n, else the model's
    reserve_tokens, else quotas.default_reserve_tokens; nothing for the
    answer of an embedding; plus a token per 4 bytes of body."""
    qu.fresh_minute(5)
    model_name, body, completion = {
        "max_tokens_n": ("gpt-4o-mini", gw.chat_body("r", "gpt-4o-mini", max_tokens=7, n=3), 21),
        "max_completion_tokens": ("gpt-4o-mini", gw.chat_body(
            "r", "gpt-4o-mini", max_tokens=50, max_completion_tokens=9), 9),
        "model_reserve": ("llama3.2", gw.chat_body("r", "llama3.2"), LLAMA_RESERVE),
        "default_reserve": ("qwen2.5-7b", gw.chat_body("r", "qwen2.5-7b"), DEFAULT_RESERVE),
        "embedding": ("text-embedding-3-small",
                      {"model": "text-embedding-3-small", "input": "reserve me"}, 0),
    }[case]
    raw = encode(body)
    reserve, _ = qu.reservation(q.model(model_name), raw, completion)
    used = q.report("reserve")["usage"]["tokens"]["minute"]
    path = "/v1/embeddings" if case == "embedding" else CHAT
    r = q.post("reserve", raw, path=path)
    assert r.status_code == 200, r.text
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == HDR_TPM - used - reserve
    real = r.json()["usage"]["total_tokens"]
    assert q.report("reserve")["usage"]["tokens"]["minute"] == used + real


def test_levels_teams_and_models(make_gateway):
    """A default-level limit counts per caller, a team-level limit once for
    the whole team, a caller-level one overrides both; a per-model limit
    counts that model only, in addition."""
    callers = {"d1": {}, "d2": {}, "s1": {"team": "shared"}, "s2": {"team": "shared"},
               "s3": {"team": "shared"}}
    quotas = {
        "default": {"requests_per_minute": 3, "tokens_per_day": 10**6, "usd_per_month": 100,
                    "models": {"gpt-4o": {"requests_per_minute": 1}}},
        "teams": {"shared": {"requests_per_minute": 4}},
        "callers": {"s3": {"requests_per_minute": 100}},
    }
    cfg, keys = qu.config_with(callers, quotas)
    g = make_gateway(plugin_config=cfg, concurrency=4)
    qu.fresh_minute(15)

    def post(cid, model="gpt-4o-mini"):
        with g.http() as c:
            return c.post(CHAT, headers=gw.auth(keys[cid]), json=gw.chat_body(cid, model))

    def refused(r, limit, whose):
        err = gw.assert_openai_error(r, 429, "rate_limit_exceeded")
        assert f"{limit} of {whose}" in err["message"], err["message"]
        return err["message"]

    # Per caller, from the default level; gpt-4o also limited on its own.
    assert post("d1", "gpt-4o").status_code == 200
    msg = refused(post("d1", "gpt-4o"), "requests_per_minute", "caller 'd1'")
    assert "on model gpt-4o" in msg and "limit 1," in msg
    assert [post("d1").status_code for _ in range(3)] == [200, 200, 429]
    assert [post("d2").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert post("d2", "gpt-4o").status_code == 429  # the caller's 3 are used up
    # One counter for the team.
    assert [post(c).status_code for c in ("s1", "s2", "s1", "s2")] == [200] * 4
    refused(post("s1"), "requests_per_minute", "team 'shared'")
    # s3's own limit replaces the team's (its requests still show in the team's usage).
    assert [post("s3").status_code for _ in range(5)] == [200] * 5
    refused(post("s2"), "requests_per_minute", "team 'shared'")
    rep = qu.report(g, keys["s1"])
    assert rep["usage"]["requests"]["minute"] == 2
    assert rep["team_usage"]["requests"]["minute"] == 9
    got = {(x["limit"], x["model"]): (x["level"], x["value"]) for x in rep["limits"]}
    assert got[("requests_per_minute", None)] == ("team", 4)
    assert got[("requests_per_minute", "gpt-4o")] == ("default", 1)
    assert got[("tokens_per_day", None)] == ("default", 10**6)
    assert got[("usd_per_month", None)] == ("default", "100.000000")
    rep = qu.report(g, keys["s3"])
    lim = qu.limit_entry(rep, "requests_per_minute")
    assert (lim["level"], lim["value"], lim["used"]) == ("caller", 100, 5)


SPOOF = {"x-llmgw-caller": "spoofed-caller", "x-llmgw-team": "spoofed-team",
         "x-llmgw-model": "spoofed-model"}


def test_descriptor_headers_never_from_the_client(q, mock):
    """Without global mode the descriptor headers a client sends are
    removed and none are added (global mode: test_global_ratelimit.py)."""
    token = gw.nonce("spoof")
    with q.g.http() as c:
        r = c.post(CHAT, headers={**gw.auth(q.keys["viewer"]), **SPOOF},
                   json=gw.chat_body(token, "gpt-4o-mini"))
    assert r.status_code == 200, r.text
    sent = mock.find_one(token)["headers"]
    assert not {h for h in sent if h.startswith("x-llmgw-")}, sent


# ----------------------------------------------------------------- 3. max_concurrent

def _stream_in_thread(url: str, key: str, behavior: str, body: dict) -> tuple[int, str, float]:
    t0 = time.monotonic()
    with gw.recording_client(timeout=30) as c:
        with c.stream("POST", url + CHAT, headers={**gw.auth(key), "x-mock-behavior": behavior},
                      content=encode(body)) as r:
            text = r.read().decode()
            return r.status_code, text, time.monotonic() - t0


def test_max_concurrent_with_stalled_streams(q):
    key = q.keys["conc"]
    behaviors = ["stall=2500", "stall=2500", "drip=250,chunks=10"][:CONCURRENT]
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as ex:
        futs = [ex.submit(_stream_in_thread, q.g.url, key, b,
                          gw.chat_body(f"held {i}", "gpt-4o-mini", stream=True))
                for i, b in enumerate(behaviors)]
        rep = qu.wait_in_flight(q.g, key, CONCURRENT, timeout=2)
        lim = qu.limit_entry(rep, "max_concurrent")
        assert (lim["value"], lim["used"], lim["remaining"]) == (CONCURRENT, CONCURRENT, 0)
        r = q.post("conc", gw.chat_body("one too many", "gpt-4o-mini", stream=True))
        err = gw.assert_openai_error(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
        assert "max_concurrent" in err["message"] and f"limit {CONCURRENT}," in err["message"]
        assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
        assert r.headers["x-llm-limit"] == "max_concurrent"
        assert "x-should-retry" not in r.headers
        assert not all(f.done() for f in futs), "the held streams ended too early for the test"
        done = [f.result() for f in futs]
    for status, text, _ in done:
        assert status == 200 and data_events(text)[-1] == "[DONE]", text[-300:]
    rep = qu.wait_in_flight(q.g, key, 0, timeout=1.5)
    assert rep["usage"]["requests"]["day"] == CONCURRENT  # the refused one is not counted
    r = q.post("conc", gw.chat_body("again", "gpt-4o-mini"))
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------- 4. counters back to 0

@pytest.mark.parametrize("case", END_CASES)
def test_in_flight_back_to_zero(q, case):
    """However a request ends, its in-flight count (caller and team) goes
    back to 0 and what it is charged follows what the provider said: the
    real usage; the reservation when the answer had started but no usage
    arrived (a cut, a client gone); nothing for an error answer; nothing at
    all for a request refused before it went out."""
    caller = f"end-{case}"
    key = q.keys[caller]
    qu.fresh_minute(10)
    stream_body = gw.chat_body(f"end {case}", "gpt-4o-mini", stream=True, max_tokens=30)
    whole_body = gw.chat_body(f"end {case}", "gpt-4o-mini", max_tokens=30)
    model = q.model("gpt-4o-mini")
    requests, charged = 1, None
    if case == "client_disconnect":
        raw = encode(stream_body)
        with httpx.Client(base_url=q.g.url, timeout=30) as c:
            with c.stream("POST", CHAT, content=raw,
                          headers={**gw.auth(key), "x-mock-behavior": "drip=200,chunks=40"}) as r:
                assert r.status_code == 200
                lines = r.iter_lines()  # (kept: a generator dropped closes the response)
                for line in lines:
                    if line.startswith("data:"):
                        break
                qu.wait_in_flight(q.g, key, 1, timeout=1)
                r.close()  # mid-stream: the connection is closed
        charged = qu.reservation(model, raw, 30)[0]
    elif case == "client_gone_before_answer":
        raw = encode(whole_body)
        with httpx.Client(base_url=q.g.url, timeout=0.5) as c:
            with pytest.raises(httpx.ReadTimeout):
                c.post(CHAT, content=raw, headers={**gw.auth(key), "x-mock-behavior": "stall=3000"})
        # Nothing came back: what the provider will bill is unknown, the
        # reservation stays charged.
        charged = qu.reservation(model, raw, 30)[0]
    elif case == "upstream_cut_stream":
        raw = encode(stream_body)
        try:
            r = q.post(caller, raw, behavior="cut=3")
            assert r.status_code == 200 and "[DONE]" not in r.text
        except httpx.HTTPError:
            pass  # the connection was reset mid-stream
        charged = qu.reservation(model, raw, 30)[0]
    elif case == "upstream_cut_whole":
        raw = encode(whole_body)
        try:
            r = q.post(caller, raw, behavior="cut=40")
            assert r.status_code >= 500 or not r.text.endswith("}"), r.text
        except httpx.HTTPError:
            pass  # the connection was reset: also a failure the client sees
        charged = qu.reservation(model, raw, 30)[0]
    elif case == "provider_5xx":
        r = q.post(caller, whole_body, behavior="fail=503")
        assert r.status_code == 503
        charged = 0
    elif case == "provider_429":
        r = q.post(caller, stream_body, behavior="throttle=2")
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert "x-llm-limit" not in r.headers  # the provider's, not ours
        charged = 0
    elif case == "quota_refusal":
        r = q.post(caller, whole_body)
        assert r.status_code == 200
        charged = r.json()["usage"]["total_tokens"]
        r = q.post(caller, stream_body)
        gw.assert_openai_error(r, 429, "rate_limit_exceeded")
    elif case == "bad_request":
        r = q.post(caller, {"model": "gpt-4o-mini", "messages": "not a list"})
        gw.assert_openai_error(r, 400)
        r = q.post(caller, gw.chat_body("x", "no-such-model"))
        gw.assert_openai_error(r, 404, "model_not_found")
        requests, charged = 0, 0
    rep = qu.wait_in_flight(q.g, key, 0, timeout=1.5)
    assert rep["usage"]["requests"]["minute"] == requests, rep["usage"]
    assert rep["usage"]["tokens"]["minute"] == charged, rep["usage"]
    assert rep["team_usage"]["in_flight"] == 0


def test_in_flight_back_to_zero_after_route_timeout(make_gateway):
    """Envoy's route timeout (1 s): before the answer started (504, nothing
    charged) and in the middle of a stream (the reservation charged)."""
    cfg, keys = qu.config_with({"slow": {"team": "slow-team"}},
                               {"default": {"requests_per_minute": 100, "max_concurrent": 5}})
    g = make_gateway(plugin_config=cfg, concurrency=4,
                     mutate=lambda doc: gw.llm_route(doc)["route"].__setitem__("timeout", "1s"))
    qu.fresh_minute(12)
    key = keys["slow"]
    h = {**gw.auth(key), "x-mock-behavior": "stall=2500"}
    with g.http() as c:
        r = c.post(CHAT, headers=h, json=gw.chat_body("slow", "gpt-4o-mini"))
        gw.assert_openai_error(r, 504, "upstream_timeout")
        r = c.post(CHAT, headers=h, json=gw.chat_body("slow", "gpt-4o-mini", stream=True))
        gw.assert_openai_error(r, 504, "upstream_timeout")
        rep = qu.wait_in_flight(g, key, 0)
        assert rep["usage"]["requests"]["minute"] == 2
        assert rep["usage"]["tokens"]["minute"] == 0
        raw = encode(gw.chat_body("slow stream", "gpt-4o-mini", stream=True, max_tokens=30))
        try:
            r = c.post(CHAT, content=raw,
                       headers={**gw.auth(key), "x-mock-behavior": "drip=300,chunks=10"})
            assert r.status_code == 200 and "[DONE]" not in r.text
        except httpx.HTTPError:
            pass  # reset mid-stream
        rep = qu.wait_in_flight(g, key, 0)
        assert rep["usage"]["requests"]["minute"] == 3
        assert rep["usage"]["tokens"]["minute"] == \
            qu.reservation(qu.model_cfg(cfg, "gpt-4o-mini"), raw, 30)[0]


# ----------------------------------------------------------------- 5. usage asked for the client

def _charged(q: QGateway, caller: str, model: str) -> int:
    m = q.report(caller)["usage"]["models"].get(model)
    return m["tokens"]["minute"] if m else 0


@pytest.mark.parametrize("model", INJECT_MODELS)
def test_usage_injected_and_hidden(q, mock, model):
    """A stream without include_usage: the provider is asked for it, the
    client sees no usage chunk, and the tokens charged are the provider's."""
    qu.fresh_minute(5)
    caller = f"inj-{model}"
    token = gw.nonce("inject")
    r = q.post(caller, gw.chat_body(token, model, stream=True))
    assert r.status_code == 200, r.text
    events = data_events(r.text)
    assert events[-1] == "[DONE]"
    for d in events[:-1]:
        chunk = json.loads(d)
        # Every chunk has choices (Azure's opening content-filter chunk aside).
        assert chunk["choices"] or "prompt_filter_results" in chunk, d
        assert chunk.get("usage") is None, d
    sent = mock.find_one(token)
    assert json.loads(sent["body"])["stream_options"] == {"include_usage": True}
    prompt, completion = qu.replay_usage(mock, sent)
    rep = qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert rep["usage"]["models"][model]["tokens"]["minute"] == prompt + completion
    assert rep["usage"]["usd_micros"]["day"] == \
        qu.cost_micros(q.model(model), prompt, completion)


def test_usage_injected_for_the_sdk_and_completions(q, mock):
    """The official SDK's stream (no stream_options) and a /v1/completions
    stream: every chunk the SDK yields has choices; the usage is charged."""
    qu.fresh_minute(5)
    caller = "inj-completions"
    client = openai.OpenAI(base_url=q.g.base_url, api_key=q.keys[caller], max_retries=0,
                           http_client=q.g.http())
    token = gw.nonce("sdk")
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": token}], stream=True))
    assert chunks and all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    chat_usage = qu.replay_usage(mock, mock.find_one(token))
    token2 = gw.nonce("cmpl")
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt=token2,
                                            stream=True))
    assert chunks and all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    sent = mock.find_one(token2)
    assert json.loads(sent["body"])["stream_options"] == {"include_usage": True}
    cmpl_usage = qu.replay_usage(mock, sent)
    qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert _charged(q, caller, "gpt-4o-mini") == sum(chat_usage)
    assert _charged(q, caller, "gpt-3.5-turbo-instruct") == sum(cmpl_usage)


def test_client_asking_for_usage_still_gets_it(q, mock):
    qu.fresh_minute(5)
    caller = "inj-with-usage"
    token = gw.nonce("withusage")
    r = q.post(caller, gw.chat_body(token, "gpt-4o-mini", stream=True,
                                    stream_options={"include_usage": True}))
    events = data_events(r.text)
    assert events[-1] == "[DONE]"
    usage_chunks = [json.loads(d) for d in events[:-1] if json.loads(d).get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
    sent = mock.find_one(token)
    assert json.loads(sent["body"])["stream_options"] == {"include_usage": True}
    prompt, completion = qu.replay_usage(mock, sent)
    u = usage_chunks[0]["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"]) == (prompt, completion)
    qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert _charged(q, caller, "gpt-4o-mini") == prompt + completion


@pytest.mark.parametrize("model", TRANSLATED_MODELS)
def test_translated_answers_charged_real_usage(q, mock, model):
    """Anthropic, Gemini, Vertex and Bedrock streams carry their usage in
    their own events, their whole answers in their own fields: what is
    charged is what the provider reported (read here from the provider's
    own answer to the same request, sent again to the mock)."""
    qu.fresh_minute(5)
    caller = f"inj-{model}"
    token = gw.nonce("translated")
    r = q.post(caller, gw.chat_body(token, model, stream=True))
    assert r.status_code == 200, r.text
    events = data_events(r.text)
    assert events[-1] == "[DONE]"
    assert all(json.loads(d)["choices"] for d in events[:-1])
    prompt, completion = qu.replay_usage(mock, mock.find_one(token))
    rep = qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert rep["usage"]["models"][model]["tokens"]["minute"] == prompt + completion
    cost = qu.cost_micros(q.model(model), prompt, completion)
    assert rep["usage"]["usd_micros"]["day"] == cost
    token = gw.nonce("translated-whole")
    r = q.post(caller, gw.chat_body(token + " a longer question this time", model))
    assert r.status_code == 200, r.text
    prompt2, completion2 = qu.replay_usage(mock, mock.find_one(token))
    u = r.json()["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"]) == (prompt2, completion2)
    rep = qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert rep["usage"]["models"][model]["tokens"]["minute"] == \
        prompt + completion + prompt2 + completion2
    assert rep["usage"]["usd_micros"]["day"] == \
        cost + qu.cost_micros(q.model(model), prompt2, completion2)


def test_usage_injected_when_the_client_said_no(q, mock):
    """stream_options.include_usage false: asked for anyway, still hidden."""
    qu.fresh_minute(5)
    caller = "inj-said-no"
    token = gw.nonce("saidno")
    r = q.post(caller, gw.chat_body(token, "gpt-4o-mini", stream=True,
                                    stream_options={"include_usage": False}))
    events = data_events(r.text)
    assert events[-1] == "[DONE]"
    assert all(json.loads(d)["choices"] and json.loads(d).get("usage") is None
               for d in events[:-1])
    sent = mock.find_one(token)
    assert json.loads(sent["body"])["stream_options"] == {"include_usage": True}
    prompt, completion = qu.replay_usage(mock, sent)
    qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert _charged(q, caller, "gpt-4o-mini") == prompt + completion


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash"])
def test_messages_front_door_streams_charged_real_usage(q, mock, model):
    """Anthropic's /v1/messages, streamed, to Anthropic itself and to other
    providers: the provider's usage is charged; count_tokens is not counted."""
    qu.fresh_minute(5)
    caller = f"msg-{model}"
    token = gw.nonce("messages")
    body = {"model": model, "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": token}]}
    r = q.post(caller, body, path="/v1/messages")
    assert r.status_code == 200, r.text
    assert "message_stop" in r.text
    prompt, completion = qu.replay_usage(mock, mock.find_one(token))
    rep = qu.wait_in_flight(q.g, q.keys[caller], 0)
    assert rep["usage"]["models"][model]["tokens"]["minute"] == prompt + completion
    r = q.post(caller, {"model": model, "messages": [{"role": "user", "content": "count"}]},
               path="/v1/messages/count_tokens")
    assert r.status_code == 200, r.text
    assert q.report(caller)["usage"]["requests"]["minute"] == 1


def test_refusal_in_anthropic_shape(q):
    """On /v1/messages a refusal is Anthropic's 429 (the Anthropic SDK's
    RateLimitError), with the same retry-after."""
    import anthropic
    qu.fresh_minute(10)
    client = anthropic.Anthropic(base_url=q.g.url, api_key=q.keys["msg-limited"], max_retries=0,
                                 default_headers={"anthropic-version": "2023-06-01"})
    msg = [{"role": "user", "content": "hello"}]
    assert client.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=msg).content
    with pytest.raises(anthropic.RateLimitError) as ei:
        client.messages.create(model="gpt-4o-mini", max_tokens=20, messages=msg)
    e = ei.value
    assert e.status_code == 429
    assert e.body["type"] == "error" and e.body["error"]["type"] == "rate_limit_error", e.body
    assert "requests_per_minute" in e.body["error"]["message"]
    assert 1 <= int(e.response.headers["retry-after"]) <= 60


# ----------------------------------------------------------------- 6. headers and /v1/usage

def test_headers_and_usage_report_match_what_was_sent(q):
    """x-ratelimit-* on every answer: the remaining requests fall by one per
    request, the remaining tokens by what the earlier requests really used
    plus this one's reservation, the resets count down to the end of the
    UTC minute (OpenAI's duration format); /v1/usage adds up the same
    numbers per model."""
    qu.fresh_minute(20)
    plan = [
        ("gpt-4o-mini", CHAT, gw.chat_body("h1", "gpt-4o-mini", max_tokens=20), 20),
        ("gpt-4o-mini", CHAT, gw.chat_body("h2", "gpt-4o-mini", max_tokens=25, stream=True,
                                           stream_options={"include_usage": True}), 25),
        ("gpt-4o", CHAT, gw.chat_body("h3", "gpt-4o", max_tokens=30), 30),
        ("gpt-3.5-turbo-instruct", "/v1/completions",
         {"model": "gpt-3.5-turbo-instruct", "prompt": "h4", "max_tokens": 16}, 16),
        ("text-embedding-3-small", "/v1/embeddings",
         {"model": "text-embedding-3-small", "input": ["h5", "h5b"]}, 0),
        ("claude-haiku-4-5", CHAT, gw.chat_body("h6", "claude-haiku-4-5", max_tokens=40,
                                                stream=True,
                                                stream_options={"include_usage": True}), 40),
    ]
    used = 0
    per_model: dict[str, dict] = {}
    for i, (model_name, path, body, completion) in enumerate(plan):
        model = q.model(model_name)
        raw = encode(body)
        reserve, _ = qu.reservation(model, raw, completion)
        t0 = qu.now_ms()
        r = q.post("hdr", raw, path=path)
        t1 = qu.now_ms()
        assert r.status_code == 200, r.text
        h = r.headers
        assert h["x-ratelimit-limit-requests"] == str(HDR_RPM)
        assert h["x-ratelimit-remaining-requests"] == str(HDR_RPM - i - 1)
        assert h["x-ratelimit-limit-tokens"] == str(HDR_TPM)
        assert h["x-ratelimit-remaining-tokens"] == str(HDR_TPM - used - reserve)
        for what in ("requests", "tokens"):
            reset = qu.parse_duration_ms(h[f"x-ratelimit-reset-{what}"])
            assert qu.minute_end_ms(t1) - t1 - 5 <= reset <= qu.minute_end_ms(t0) - t0 + 5, \
                (reset, t0, t1)
        if body.get("stream"):
            events = data_events(r.text)
            u = next(json.loads(d)["usage"] for d in events
                     if d != "[DONE]" and json.loads(d).get("usage"))
        else:
            u = r.json()["usage"]
        prompt = u["prompt_tokens"]
        completion_used = u.get("completion_tokens", 0)
        assert u["total_tokens"] == prompt + completion_used
        used += u["total_tokens"]
        m = per_model.setdefault(model_name, {"requests": 0, "tokens": 0, "usd": 0})
        m["requests"] += 1
        m["tokens"] += u["total_tokens"]
        m["usd"] += qu.cost_micros(model, prompt, completion_used)
    rep = q.report("hdr")
    assert rep["usage"]["requests"]["minute"] == len(plan)
    assert rep["usage"]["tokens"]["minute"] == used
    assert rep["usage"]["usd_micros"]["day"] == sum(m["usd"] for m in per_model.values())
    assert rep["usage"]["in_flight"] == 0
    assert set(rep["usage"]["models"]) == set(per_model)
    for name, m in per_model.items():
        got = rep["usage"]["models"][name]
        assert (got["requests"]["minute"], got["tokens"]["minute"], got["usd_micros"]["day"]) == \
            (m["requests"], m["tokens"], m["usd"]), name
        assert got["usd"]["day"] == f"{m['usd'] / 1e6:.6f}"
    lim = qu.limit_entry(rep, "requests_per_minute")
    assert (lim["level"], lim["value"], lim["used"], lim["remaining"]) == \
        ("caller", HDR_RPM, len(plan), HDR_RPM - len(plan))
    now = qu.now_ms()
    assert abs(lim["reset_ms"] - (qu.minute_end_ms(now) - now)) < 1000
    assert qu.parse_duration_ms(lim["reset"]) == lim["reset_ms"]
    lim = qu.limit_entry(rep, "tokens_per_minute")
    assert (lim["used"], lim["remaining"]) == (used, HDR_TPM - used)


def test_duration_format():
    """The parser the header checks use, on OpenAI's examples."""
    assert qu.parse_duration_ms("20ms") == 20
    assert qu.parse_duration_ms("1s") == 1000
    assert qu.parse_duration_ms("42.5s") == 42500
    assert qu.parse_duration_ms("6m0s") == 360000
    assert qu.parse_duration_ms("1h2m3.25s") == 3723250
    with pytest.raises(AssertionError):
        qu.parse_duration_ms("42")


# ----------------------------------------------------------------- 7. the SDK's retry

def test_sdk_retries_after_a_concurrency_refusal(q):
    """max_concurrent 1, one request held 1.5 s by the provider: the SDK's
    request is refused (retry-after 1), waits as told, and succeeds."""
    key = q.keys["retry"]
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        held = ex.submit(_stream_in_thread, q.g.url, key, "stall=1500",
                         gw.chat_body("held", "gpt-4o-mini", stream=True))
        qu.wait_in_flight(q.g, key, 1)
        client, statuses = _counting_sdk(q.g, key, max_retries=3)
        t0 = time.monotonic()
        out = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "patience"}])
        elapsed = time.monotonic() - t0
        assert held.result()[0] == 200
    assert out.choices[0].message.content
    print(f"\nSDK attempts {statuses}, {elapsed:.2f} s")
    assert statuses[0] == 429 and statuses[-1] == 200, statuses
    assert set(statuses[:-1]) == {429}
    assert elapsed >= 0.95 * (len(statuses) - 1), (elapsed, statuses)
    qu.wait_in_flight(q.g, key, 0)


# ----------------------------------------------------------------- 8. /v1/usage

def test_usage_endpoint_permissions(q, test_gateway, test_keys):
    viewer = q.keys["viewer"]
    c = q.http
    r = qu.usage(q.g, viewer, client=c)
    assert r.status_code == 200
    own = r.json()
    assert (own["object"], own["caller"], own["team"]) == ("usage", "viewer", "vt")
    assert own["team_usage"]["in_flight"] == 0
    assert {x["limit"] for x in own["limits"]} == {"requests_per_minute", "tokens_per_minute"}
    r = qu.usage(q.g, viewer, {"caller": "viewer"}, client=c)
    assert r.status_code == 200 and r.json()["caller"] == "viewer"
    r = qu.usage(q.g, viewer, {"team": "vt"}, client=c)  # its own team
    assert r.status_code == 200 and r.json()["object"] == "team_usage", r.text
    for params in ({"all": "true"}, {"caller": "other"}, {"team": "vt2"}, {"caller": "demo"}):
        r = qu.usage(q.g, viewer, params, client=c)
        err = gw.assert_openai_error(r, 403, "insufficient_permissions", "permission_error")
        assert "admin" in err["message"]
        assert '"requests"' not in r.text and "in_flight" not in r.text  # no counters
    # The demo caller of the shipped config is an admin.
    r = qu.usage(q.g, gw.DEMO_KEY, {"all": "true"}, client=c)
    assert r.status_code == 200, r.text
    everyone = r.json()
    assert everyone["object"] == "list"
    assert [x["caller"] for x in everyone["data"]] == [x["id"] for x in q.cfg["callers"]]
    teams = sorted({x["team"] for x in q.cfg["callers"] if x.get("team")})
    assert [t["team"] for t in everyone["teams"]] == teams
    assert all(t["object"] == "team_usage" for t in everyone["teams"])
    r = qu.usage(q.g, gw.DEMO_KEY, {"caller": "other"}, client=c)
    assert r.status_code == 200 and r.json()["caller"] == "other"
    r = qu.usage(q.g, gw.DEMO_KEY, {"team": "vt"}, client=c)
    assert r.status_code == 200 and r.json()["object"] == "team_usage" and r.json()["team"] == "vt"
    r = qu.usage(q.g, gw.DEMO_KEY, {"caller": "nobody"}, client=c)
    gw.assert_openai_error(r, 404, "caller_not_found")
    r = qu.usage(q.g, gw.DEMO_KEY, {"team": "nobody"}, client=c)
    gw.assert_openai_error(r, 404, "team_not_found")
    for key in (viewer, gw.DEMO_KEY):
        r = qu.usage(q.g, key, {"window": "day"}, client=c)
        gw.assert_openai_error(r, 400, "unknown_parameter", param="window")
    r = c.post("/v1/usage", headers=gw.auth(viewer))
    gw.assert_openai_error(r, 405)
    r = c.get("/v1/usage")
    gw.assert_openai_error(r, 401)
    # A gateway without quotas says so.
    with test_gateway.http() as t:
        r = t.get("/v1/usage", headers=gw.auth(test_keys["alice"]))
    gw.assert_openai_error(r, 404, "usage_not_enabled")


# ----------------------------------------------------------------- 9. the shipped demo limit

def test_shipped_demo_limit_by_hand(make_gateway):
    """The shipped config limits the demo caller to 5 requests a minute on
    gpt-3.5-turbo-instruct: the 6th within the minute is refused."""
    g = make_gateway(concurrency=4)
    qu.fresh_minute(15)
    client = g.client()
    for i in range(5):
        out = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=f"try {i}")
        assert out.choices[0].text
    with pytest.raises(openai.RateLimitError) as ei:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="one more")
    e = ei.value
    assert e.status_code == 429 and e.code == "rate_limit_exceeded"
    assert "requests_per_minute" in e.message and "gpt-3.5-turbo-instruct" in e.message
    assert e.response.headers["x-ratelimit-limit-requests"] == "5"
    assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(e.response.headers["retry-after"]) <= 60
    # Only that model is limited so tightly.
    assert client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "still fine"}]).choices
