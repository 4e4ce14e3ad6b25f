"""Helpers for the quota tests (tests/e2e/test_quotas.py) and the quota
benchmark (scripts/bench-quotas.py): configs with extra callers, the
`/v1/usage` report, UTC minute windows, OpenAI's duration format, prices,
and the usage a provider (the mock) reports for a request it is sent again.

Nothing here is a test."""
from __future__ import annotations

import copy
import json
import math
import re
import struct
import time

import httpx

import gw

CHAT = "/v1/chat/completions"


# ----------------------------------------------------------------- config

def config_with(callers: dict[str, dict], quotas: dict | None,
                base: dict | None = None) -> tuple[dict, dict[str, str]]:
    """The shipped plugin config (or `base`) plus one keyed caller per entry
    of `callers` (id -> extra fields such as team or admin; models default
    to every model), with `quotas` as its quotas object (`None`: none).
    Returns the config and the minted keys by caller id."""
    cfg = copy.deepcopy(base if base is not None else gw.shipped_plugin_config())
    keys = {}
    for cid, extra in callers.items():
        key = gw.mint_key(cid)
        keys[cid] = key
        cfg["callers"].append({"id": cid, "key_sha256": gw.sha256_hex(key),
                               "models": ["*"], **extra})
    if quotas is None:
        cfg.pop("quotas", None)
    else:
        cfg["quotas"] = quotas
    return cfg, keys


def model_cfg(cfg: dict, name: str) -> dict:
    return next(m for m in cfg["models"] if m["name"] == name)


# ----------------------------------------------------------------- usage report

def usage(g: gw.Gateway, key: str, params: dict | None = None,
          client: httpx.Client | None = None) -> httpx.Response:
    c = client or g.http()
    return c.get("/v1/usage", headers=gw.auth(key), params=params or {})


def report(g: gw.Gateway, key: str, client: httpx.Client | None = None) -> dict:
    r = usage(g, key, client=client)
    assert r.status_code == 200, r.text
    return r.json()


def wait_in_flight(g: gw.Gateway, key: str, want: int, timeout: float = 2.0,
                   client: httpx.Client | None = None) -> dict:
    """Poll the caller's own report until its in-flight count (and its
    team's, if any) is `want`; returns the last report."""
    deadline = time.monotonic() + timeout
    while True:
        rep = report(g, key, client)
        team_ok = rep["team_usage"] is None or rep["team_usage"]["in_flight"] == want
        if rep["usage"]["in_flight"] == want and team_ok:
            return rep
        if time.monotonic() > deadline:
            raise AssertionError(
                f"in_flight not {want} after {timeout}s: caller {rep['usage']['in_flight']}, "
                f"team {rep['team_usage'] and rep['team_usage']['in_flight']}")
        time.sleep(0.05)


def limit_entry(rep: dict, kind: str, model: str | None = None) -> dict:
    found = [x for x in rep["limits"] if x["limit"] == kind and x["model"] == model]
    assert len(found) == 1, (kind, model, rep["limits"])
    return found[0]


# ----------------------------------------------------------------- windows

def now_ms() -> int:
    return int(time.time() * 1000)


def minute_of(ms: int) -> int:
    return ms // 60_000


def minute_end_ms(ms: int) -> int:
    return (ms // 60_000 + 1) * 60_000


def day_end_ms(ms: int) -> int:
    return (ms // 86_400_000 + 1) * 86_400_000


def fresh_minute(need_seconds: float) -> None:
    """Make sure at least `need_seconds` are left in the current UTC minute
    (the window of the per-minute limits): wait for the next one if not."""
    left = 60 - (time.time() % 60)
    if left < need_seconds:
        time.sleep(left + 0.05)


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration_ms(s: str) -> float:
    """OpenAI's `x-ratelimit-reset-*` format (Go durations: `20ms`, `1s`,
    `42.5s`, `6m0s`, `1h2m3s`) in milliseconds."""
    m = _DURATION.match(s)
    assert m and s and any(m.groups()), f"not a duration: {s!r}"
    h, mi, sec, ms = m.groups()
    return (int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)) * 1000 + int(ms or 0)


# ----------------------------------------------------------------- money

def micros_per_mtok(usd: float) -> int:
    return round(usd * 1_000_000)


def cost_micros(model: dict, prompt: int, completion: int, cached: int = 0) -> int:
    """What the gateway charges for a usage at `model`'s configured prices
    (micro-dollars, rounded up per request)."""
    price = model.get("price")
    if not price:
        return 0
    cached = min(cached, prompt)
    pico = (prompt - cached) * micros_per_mtok(price["input"]) \
        + cached * micros_per_mtok(price.get("cached_input", price["input"])) \
        + completion * micros_per_mtok(price["output"])
    return math.ceil(pico / 1_000_000)


def reservation(model: dict, body: bytes, completion: int) -> tuple[int, int]:
    """(tokens, micro-dollars) a request reserves: `completion` tokens for
    the answer plus one prompt token per 4 bytes of body."""
    prompt = max(1, math.ceil(len(body) / 4))
    return prompt + completion, cost_micros(model, prompt, completion)


# ----------------------------------------------------------------- provider usage

def sse_events(text: str) -> list[tuple[str | None, str]]:
    out, name, data = [], None, []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            if data:
                out.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        out.append((name, "\n".join(data)))
    return out


def eventstream_frames(raw: bytes) -> list[tuple[dict, bytes]]:
    """AWS event stream frames: (headers with string values, payload)."""
    frames, at = [], 0
    while at + 12 <= len(raw):
        total, hlen = struct.unpack(">II", raw[at:at + 8])
        hdr = raw[at + 12:at + 12 + hlen]
        payload = raw[at + 12 + hlen:at + total - 4]
        headers, i = {}, 0
        while i < len(hdr):
            n = hdr[i]
            name = hdr[i + 1:i + 1 + n].decode()
            i += 1 + n
            vtype = hdr[i]
            i += 1
            assert vtype == 7, f"header {name}: type {vtype}"  # string
            (vlen,) = struct.unpack(">H", hdr[i:i + 2])
            headers[name] = hdr[i + 2:i + 2 + vlen].decode()
            i += 2 + vlen
        frames.append((headers, payload))
        at += total
    return frames


def _json_usage(provider: str, d: dict) -> tuple[int, int]:
    if provider in ("openai", "azure", "ollama", "vllm"):
        u = d["usage"]
        return u["prompt_tokens"], u.get("completion_tokens", 0)
    if provider == "anthropic":
        u = d["usage"]
        return u["input_tokens"] + (u.get("cache_read_input_tokens") or 0) \
            + (u.get("cache_creation_input_tokens") or 0), u["output_tokens"]
    if provider in ("gemini", "vertex"):
        u = d["usageMetadata"]
        return u.get("promptTokenCount", 0), u.get("totalTokenCount", 0) - u.get("promptTokenCount", 0)
    if provider == "bedrock":
        u = d["usage"]
        return u["inputTokens"], u["outputTokens"]
    raise AssertionError(provider)


def provider_usage(provider: str, body: bytes) -> tuple[int, int]:
    """(prompt tokens, completion tokens) a provider's answer (whole or
    streamed) reports, read in the provider's own format."""
    if body.lstrip().startswith(b"{"):
        return _json_usage(provider, json.loads(body))
    if provider == "bedrock":
        for headers, payload in eventstream_frames(body):
            if headers.get(":event-type") == "metadata":
                u = json.loads(payload)["usage"]
                return u["inputTokens"], u["outputTokens"]
        raise AssertionError("no metadata event in the Bedrock stream")
    events = sse_events(body.decode())
    prompt = completion = None
    for name, data in events:
        if data == "[DONE]":
            continue
        d = json.loads(data)
        if provider in ("openai", "azure", "ollama", "vllm"):
            if d.get("usage"):
                prompt, completion = d["usage"]["prompt_tokens"], d["usage"]["completion_tokens"]
        elif provider == "anthropic":
            u = (d.get("message") or {}).get("usage") if name == "message_start" else d.get("usage")
            if u:
                if "input_tokens" in u:
                    prompt = u["input_tokens"] + (u.get("cache_read_input_tokens") or 0) \
                        + (u.get("cache_creation_input_tokens") or 0)
                if "output_tokens" in u:
                    completion = u["output_tokens"]
        elif provider in ("gemini", "vertex"):
            u = d.get("usageMetadata")
            if u:
                prompt = u.get("promptTokenCount", 0)
                completion = u.get("totalTokenCount", 0) - prompt
        else:
            raise AssertionError(provider)
    assert prompt is not None and completion is not None, f"no usage in the {provider} stream"
    return prompt, completion


def replay_usage(mock: gw.Mock, recorded: dict) -> tuple[int, int]:
    """Send a request the mock recorded to the mock again, exactly as the
    gateway sent it, and read the usage from the provider's own answer:
    what the provider says the request cost, independent of the gateway."""
    headers = {k: v for k, v in recorded["headers"].items() if k != "content-length"}
    url = mock.url + recorded["path"] + ("?" + recorded["query"] if recorded["query"] else "")
    # Not a recording client: the recorded headers hold provider keys.
    with httpx.Client(timeout=10) as c:
        r = c.post(url, headers=headers, content=recorded["body"].encode())
    assert r.status_code == 200, r.text[:300]
    return provider_usage(recorded["provider"], r.content)
