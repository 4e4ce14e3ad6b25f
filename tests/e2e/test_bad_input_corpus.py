"""A corpus of bad requests against a real Envoy with the filter (the
shipped config): generated (truncated JSON, a wrong type at every field,
huge numbers, deep nesting, invalid UTF-8, NUL bytes, duplicate keys,
enormous headers, wrong content-types, chunked bodies cut at odd places,
HTTP/2, no key) plus the hand-written cases in testdata/badinput/, over the
chat, completions, embeddings, messages, count_tokens and models endpoints.

Every answer must be a 4xx with an OpenAI-shaped error body
(`{"error":{"message","type","param","code"}}`; Anthropic's
`{"type":"error","error":{"type","message"}}` on /v1/messages*), with the
expected status and code where the case says. One exception, accepted
explicitly: request headers beyond Envoy's limits (60 KiB in all,
`max_request_headers_kb`; 100 headers, `max_headers_count`) are refused by
Envoy's HTTP codec with its own `431 Request Header Fields Too Large`
(text/plain) before any filter runs — the filter never sees the request, so
it cannot shape that answer. Afterwards no wasm VM has failed and good
requests work.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import httpx
import pytest

import gw

CHAT = "/v1/chat/completions"
BADINPUT = gw.ROOT / "testdata" / "badinput"
SEED = 20261125
THREADS = 8
ANY = "*"

ANTHROPIC_PATHS = ("/v1/messages",)


@dataclass
class Case:
    name: str
    method: str = "POST"
    path: str = CHAT
    #: (name, value) pairs; None: the defaults (demo key, JSON content-type).
    headers: list | None = None
    body: bytes | None = b""
    status: int | None = None      # exact status; None: any 4xx
    code: str | None = ANY         # error code (OpenAI shape only)
    param: object = ANY            # error param (OpenAI shape only)
    envoy: bool = False            # Envoy answers itself, before the filter
    chunks: list[int] | None = None  # send chunked, in pieces of these sizes
    http2: bool = False
    category: str = "hand-written"

    def request_headers(self) -> list:
        return self.headers if self.headers is not None else default_headers()


def default_headers(auth: bool = True, content_type: str | None = "application/json") -> list:
    h = []
    if auth:
        h.append(("authorization", f"Bearer {gw.DEMO_KEY}"))
    if content_type is not None:
        h.append(("content-type", content_type))
    return h


def expand(s: str) -> str:
    return re.sub(r"@repeat:(.):(\d+)", lambda m: m.group(1) * int(m.group(2)), s)


def compact(v) -> bytes:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()


# ----------------------------------------------------------------- hand-written

def hand_written() -> list[Case]:
    cases = []
    files = sorted(BADINPUT.glob("*.json"))
    assert files, BADINPUT
    for f in files:
        for c in json.loads(f.read_text())["cases"]:
            extra = {k.lower(): v for k, v in c.get("headers", {}).items()}
            ct = extra.pop("content-type", "application/json")
            headers = default_headers(c.get("auth", True), ct)
            headers += [(k, expand(v)) for k, v in extra.items()]
            if "body_hex" in c:
                body = bytes.fromhex(c["body_hex"])
            elif "body_json" in c:
                body = compact(c["body_json"])
            else:
                body = c.get("body", "").encode("utf-8")
            e = c["expect"]
            cases.append(Case(
                name=f"{f.stem}: {c['name']}", method=c.get("method", "POST"),
                path=expand(c.get("path", CHAT)), headers=headers,
                body=body if c.get("method", "POST") != "GET" else None,
                status=e["status"], code=e.get("code", ANY), param=e.get("param", ANY),
                envoy=e.get("envoy", False)))
    return cases


# ----------------------------------------------------------------- generated

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "d",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def chat_base(model: str, **extra) -> tuple[str, dict]:
    return CHAT, {"model": model,
                  "messages": [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                  "temperature": 0.5, "top_p": 0.9, "max_tokens": 16, "stop": ["zz"],
                  "tools": TOOLS, "tool_choice": "auto", "stream": False, **extra}


#: (path, a valid body): the bodies the generators break.
BASES = [
    chat_base("gpt-4o-mini", n=1, user="u1"),
    chat_base("claude-haiku-4-5"),
    chat_base("gemini-2.5-flash"),
    chat_base("bedrock-nova-lite"),
    chat_base("azure-gpt-4o-mini"),
    ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 5,
                         "temperature": 0.2, "n": 1}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"],
                        "dimensions": 8, "encoding_format": "float"}),
    ("/v1/embeddings", {"model": "bedrock-titan-embed-v2", "input": "a", "dimensions": 256}),
    ("/v1/embeddings", {"model": "gemini-embedding-001", "input": ["a"]}),
    ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 16, "system": "s",
                      "temperature": 0.5,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    ("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 16, "top_k": 3,
                      "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages/count_tokens", {"model": "gemini-2.5-flash",
                                   "messages": [{"role": "user", "content": "hi"}]}),
]


def paths(v, prefix=()):
    """Every path into a JSON value (dict keys, list indexes)."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield prefix + (k,)
            yield from paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield prefix + (i,)
            yield from paths(x, prefix + (i,))


def get(v, path):
    for p in path:
        v = v[p]
    return v


def with_value(v, path, new):
    v = json.loads(json.dumps(v))
    get(v, path[:-1])[path[-1]] = new
    return v


def jtype(x) -> str:
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, (int, float)):
        return "number"
    return type(x).__name__


#: Values of every JSON type. `null` is left out: for an optional field it
#: means "not given", which is valid.
WRONG = [0, -1, 2.5, True, "x", "", [], {}, [None], {"a": 1}]
#: Fields whose value may be of several types or is free-form (schemas,
#: stop sequences, Anthropic's top_k to an OpenAI model is dropped, tool
#: descriptions...): a different type there can still be a valid request.
FREE_FORM = {"parameters", "properties", "city", "required", "stop", "description", "user",
             "system", "input", "prompt", "content", "text", "tool_choice", "top_k", "type"}

def wrong_values(path, orig):
    if set(p for p in path if isinstance(p, str)) & FREE_FORM:
        return []
    return [w for w in WRONG if jtype(w) != jtype(orig)]


def gen_wrong_types() -> list[Case]:
    out = []
    for path, base in BASES:
        for p in paths(base):
            orig = get(base, p)
            for w in wrong_values(p, orig):
                out.append(Case(f"{path} {base['model']} {'.'.join(map(str, p))}={w!r}",
                                path=path, body=compact(with_value(base, p, w)),
                                category="wrong type"))
    return out


HUGE = [1e308, -1e308, 18446744073709551616, -9223372036854775809, 10**40]


def gen_huge_numbers() -> list[Case]:
    out = []
    for path, base in BASES:
        for p in paths(base):
            if jtype(get(base, p)) != "number" or not isinstance(p[-1], str):
                continue
            where = f"{path} {base['model']} {'.'.join(map(str, p))}"
            for h in HUGE:
                out.append(Case(f"{where}={h}", path=path, body=compact(with_value(base, p, h)),
                                category="huge number"))
            # Beyond f64: a 400 (the gateway names the field; a field it
            # does not check, e.g. `dimensions`, the provider refuses).
            body = compact(base).replace(compact({p[-1]: get(base, p)})[1:-1],
                                         f'"{p[-1]}":1e400'.encode(), 1)
            out.append(Case(f"{where}=1e400", path=path, body=body, status=400,
                            category="huge number"))
    return out


def gen_truncated(rng: random.Random) -> list[Case]:
    out = []
    for path, base in BASES:
        raw = compact(base)
        cuts = sorted({0, 1, len(raw) - 1, len(raw) // 2, *rng.sample(range(1, len(raw)), 12)})
        for cut in cuts:
            out.append(Case(f"{path} {base['model']} cut at {cut}/{len(raw)}", path=path,
                            body=raw[:cut], status=400, code="invalid_json",
                            category="truncated JSON"))
    return out


def string_starts(raw: bytes) -> list[int]:
    """Offsets just after the opening quote of every string (keys too)."""
    out, i, in_str = [], 0, False
    while i < len(raw):
        c = raw[i:i + 1]
        if in_str:
            if c == b"\\":
                i += 1
            elif c == b'"':
                in_str = False
        elif c == b'"':
            in_str = True
            out.append(i + 1)
        i += 1
    return out


BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\xe2\x82", b"\x80"]


def gen_bytes(rng: random.Random) -> list[Case]:
    """Invalid UTF-8 and raw NUL bytes inside strings and between tokens."""
    out = []
    for path, base in BASES:
        raw = compact(base)
        starts = string_starts(raw)
        for pos in rng.sample(starts, min(6, len(starts))):
            for seq in BAD_UTF8:
                out.append(Case(f"{path} {base['model']} {seq.hex()}@{pos}", path=path,
                                body=raw[:pos] + seq + raw[pos:], status=400,
                                code="invalid_json", category="invalid UTF-8"))
            out.append(Case(f"{path} {base['model']} NUL@{pos}", path=path,
                            body=raw[:pos] + b"\x00" + raw[pos:], status=400,
                            code="invalid_json", category="NUL byte"))
        # Between tokens: after a comma or a colon.
        seps = [i + 1 for i, b in enumerate(raw) if b in b",:"]
        for pos in rng.sample(seps, min(4, len(seps))):
            out.append(Case(f"{path} {base['model']} NUL between tokens@{pos}", path=path,
                            body=raw[:pos] + b"\x00" + raw[pos:], status=400,
                            code="invalid_json", category="NUL byte"))
    return out


def gen_duplicates() -> list[Case]:
    out = []
    for path, base in BASES:
        raw = compact(base)
        for k, v in base.items():
            body = raw[:-1] + b"," + compact({k: v})[1:-1] + b"}"
            out.append(Case(f"{path} {base['model']} duplicate {k}", path=path, body=body,
                            status=400, code="invalid_json", category="duplicate key"))
    return out


def gen_deep() -> list[Case]:
    out = []
    for depth in (64, 127, 128, 129, 1000, 100_000):
        out.append(Case(f"top-level arrays {depth}", body=b"[" * depth + b"]" * depth,
                        status=400, code="invalid_json", category="deep nesting"))
        out.append(Case(f"top-level objects {depth}",
                        body=b'{"a":' * depth + b"1" + b"}" * depth,
                        status=400, category="deep nesting"))
        for path, base in BASES[:1] + BASES[5:7] + BASES[9:10]:
            field_name = {"/v1/completions": "prompt", "/v1/embeddings": "input"}.get(path)
            nested = b"[" * depth + b"]" * depth
            if field_name:
                body = compact({**base, field_name: "@@"}).replace(b'"@@"', nested)
            else:
                msgs = [{"role": "user", "content": "@@"}]
                body = compact({**base, "messages": msgs}).replace(b'"@@"', nested)
            out.append(Case(f"{path} {base['model']} nested {depth}", path=path, body=body,
                            category="deep nesting"))
            out.append(Case(f"{path} {base['model']} unclosed {depth}", path=path,
                            body=body[:len(body) // 2], status=400, category="deep nesting"))
    return out


def gen_content_types() -> list[Case]:
    out = []
    bad = ["text/plain", "text/html; charset=utf-8", "application/xml",
           "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
           "application/octet-stream", "application/jsonl", "image/png", "json", "*/*",
           "application/json-patch", "text/json"]
    for path, base in BASES:
        for ct in bad:
            out.append(Case(f"{path} {base['model']} content-type {ct}", path=path,
                            headers=default_headers(True, ct), body=compact(base),
                            status=415, code="unsupported_media_type",
                            category="wrong content-type"))
    return out


def gen_headers() -> list[Case]:
    """Enormous headers: beyond Envoy's limits its codec answers 431 itself;
    below them the filter answers."""
    out = []
    body = compact({"model": "gpt-4o-mini", "messages": []})
    for size in (61 * 1024, 64 * 1024, 100 * 1024, 1024 * 1024):
        out.append(Case(f"one {size}-byte header",
                        headers=default_headers() + [("x-huge", "h" * size)], body=body,
                        status=431, envoy=True, category="enormous headers"))
        out.append(Case(f"{size}-byte key", headers=default_headers(False) +
                        [("authorization", "Bearer " + "k" * size)], body=body,
                        status=431, envoy=True, category="enormous headers"))
    for n in (101, 150, 1000):
        out.append(Case(f"{n} headers",
                        headers=default_headers() + [(f"x-h{i}", "v") for i in range(n)],
                        body=body, status=431, envoy=True, category="enormous headers"))
    for size in (1024, 30 * 1024, 50 * 1024):
        out.append(Case(f"{size}-byte header the filter sees",
                        headers=default_headers() + [("x-big", "b" * size)], body=body,
                        status=400, code="empty_array", param="messages",
                        category="enormous headers"))
        out.append(Case(f"{size}-byte wrong key", headers=default_headers(False) +
                        [("x-api-key", "k" * size)], body=body, status=401,
                        code="invalid_api_key", category="enormous headers"))
    out.append(Case("90 headers the filter sees",
                    headers=default_headers() + [(f"x-h{i}", "v" * 100) for i in range(90)],
                    body=body, status=400, code="empty_array", category="enormous headers"))
    out.append(Case("70 KiB path", method="GET", path="/v1/models/" + "p" * 70 * 1024,
                    body=None, status=431, envoy=True, category="enormous headers"))
    out.append(Case("40 KiB path", method="GET", path="/v1/models/" + "p" * 40 * 1024,
                    body=None, status=404, code="model_not_found",
                    category="enormous headers"))
    return out


def gen_no_key(sample: list[Case]) -> list[Case]:
    out = []
    for c in sample:
        if c.envoy or c.method != "POST" or c.path == "/v1/messages/batches":
            continue
        out.append(replace(c, name=c.name + " (no key)", category="no key",
                           headers=[h for h in c.request_headers() if h[0] != "authorization"],
                           status=401, code="invalid_api_key", param=None))
    return out


def odd_splits(n: int, rng: random.Random) -> list[list[int]]:
    return [[1] * n, [rng.randint(1, 7) for _ in range(n)], [max(1, n // 2), n], [3, 1, 4, 1, 5, 9, n]]


def gen_chunked(sample: list[Case], rng: random.Random) -> list[Case]:
    out = []
    for c in sample:
        if c.envoy or c.body is None or not c.body or len(c.body) > 4000:
            continue
        for sizes in odd_splits(len(c.body), rng):
            out.append(replace(c, name=f"{c.name} chunked {sizes[:4]}", chunks=sizes,
                               category="chunked " + c.category))
    return out


def gen_h2(sample: list[Case]) -> list[Case]:
    return [replace(c, name=c.name + " (h2)", http2=True, category="HTTP/2 " + c.category)
            for c in sample if not c.envoy and c.category != "enormous headers"]


def corpus() -> list[Case]:
    rng = random.Random(SEED)
    base = (hand_written() + gen_truncated(rng) + gen_wrong_types() + gen_huge_numbers()
            + gen_bytes(rng) + gen_duplicates() + gen_deep() + gen_content_types()
            + gen_headers())
    sample = rng.sample(base, 120)
    return (base + gen_no_key(rng.sample(base, 60)) + gen_chunked(sample[:60], rng)
            + gen_h2(sample))


# ----------------------------------------------------------------- sending

_local = threading.local()


def client(http2: bool) -> httpx.Client:
    attr = "h2" if http2 else "h1"
    c = getattr(_local, attr, None)
    if c is None:
        c = httpx.Client(base_url=_local_base, timeout=30, http1=not http2, http2=http2)
        setattr(_local, attr, c)
        _clients.append(c)
    return c


_local_base = ""
_clients: list[httpx.Client] = []


def send_raw(case: Case) -> httpx.Response:
    """HTTP/1.1 through http.client, which sends a `content-length` that
    does not match the body and paths of any length (httpx refuses to)."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(_local_base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(case.method, case.path, skip_accept_encoding=True)
        for k, v in case.request_headers():
            conn.putheader(k, v)
        conn.endheaders(case.body or None)
        r = conn.getresponse()
        return httpx.Response(r.status, headers=r.getheaders(), content=r.read())
    finally:
        conn.close()


def send(case: Case) -> httpx.Response:
    if len(case.path) > 8192 or \
            any(k.lower() == "content-length" for k, _ in case.request_headers()):
        return send_raw(case)
    content = case.body
    if case.chunks is not None:
        body, sizes = case.body, case.chunks

        def pieces():
            i = 0
            for s in sizes:
                if i >= len(body):
                    break
                yield body[i:i + s]
                i += s
            if i < len(body):
                yield body[i:]
        content = pieces()
    return client(case.http2).request(case.method, case.path, headers=case.request_headers(),
                                      content=content)


def check(case: Case, r: httpx.Response) -> str | None:
    """None if the answer is right, else what is wrong."""
    if case.envoy:
        if r.status_code != case.status:
            return f"status {r.status_code}, Envoy's own {case.status} expected: {r.text[:200]}"
        return None
    if not 400 <= r.status_code < 500:
        return f"status {r.status_code} is not a 4xx: {r.text[:300]}"
    if case.status is not None and r.status_code != case.status:
        return f"status {r.status_code}, expected {case.status}: {r.text[:300]}"
    if not r.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {r.headers.get('content-type')!r}: {r.text[:200]}"
    if not r.headers.get("x-request-id"):
        return "no x-request-id"
    try:
        body = r.json()
    except ValueError:
        return f"body is not JSON: {r.content[:200]!r}"
    if case.path.startswith(ANTHROPIC_PATHS):
        ok = (isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error"
              and isinstance(body["error"], dict) and set(body["error"]) == {"type", "message"}
              and all(isinstance(body["error"][k], str) and body["error"][k]
                      for k in ("type", "message")))
        return None if ok else f"not Anthropic-shaped: {body}"
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)
            and set(body["error"]) == {"message", "type", "param", "code"}):
        return f"not OpenAI-shaped: {body}"
    err = body["error"]
    if not (isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
            and err["type"]):
        return f"empty message/type: {err}"
    if case.code != ANY and err["code"] != case.code:
        return f"code {err['code']!r}, expected {case.code!r}: {err}"
    if case.param != ANY and err["param"] != case.param:
        return f"param {err['param']!r}, expected {case.param!r}: {err}"
    return None


# ----------------------------------------------------------------- the test

@pytest.fixture(scope="module")
def cgw(mock, tmp_path_factory):
    g = gw.Gateway(tmp_path_factory.mktemp("gw-corpus"), mock.port,
                   # Thousands of requests in a few seconds would meet 429s
                   # (a 4xx the corpus accepts, but not what the hand-written
                   # cases and the good requests afterwards expect).
                   plugin_config=gw.roomy_quotas_config())
    yield g
    g.stop()


def wasm_stats(g: gw.Gateway) -> dict[str, int]:
    return {k: v for k, v in g.stats().items() if k.startswith("wasm")}


@pytest.mark.timeout(180)
def test_bad_input_corpus(cgw):
    global _local_base
    _local_base = cgw.url
    cases = corpus()
    names = Counter(c.name for c in cases)
    assert not [n for n, k in names.items() if k > 1][:5], "case names must be unique"
    assert len(cases) >= 1000, len(cases)
    before = wasm_stats(cgw)
    t0 = time.monotonic()

    def run(case):
        try:
            return case, check(case, send(case))
        except httpx.HTTPError as e:
            return case, f"transport error {e!r}"
    try:
        with ThreadPoolExecutor(THREADS) as ex:
            results = list(ex.map(run, cases))
    finally:
        for c in _clients:
            c.close()
        _clients.clear()
    elapsed = time.monotonic() - t0
    by_cat = Counter(c.category.split(" ")[0] if c.category.startswith(("chunked", "HTTP/2"))
                     else c.category for c in cases)
    print(f"\nbad-input corpus: {len(cases)} requests in {elapsed:.1f} s; {dict(by_cat)}")
    failures = [f"[{c.category}] {c.name}: {why}" for c, why in results if why]
    assert not failures, f"{len(failures)} of {len(cases)} wrong:\n" + "\n".join(failures[:40])
    assert cgw.alive()

    # Envoy's 431s come from its HTTP/1 codec (the access log's response
    # code details), before any filter: that is why they are not JSON.
    envoy_cases = [c for c in cases if c.envoy]
    deadline = time.monotonic() + 3
    while True:
        lines = [json.loads(ln) for ln in cgw.access_log.read_text().splitlines()
                 if ln.startswith("{")]
        refused = [ln.get("details") for ln in lines if ln.get("status") == 431]
        if len(refused) >= len(envoy_cases) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(refused) == len(envoy_cases), refused
    assert set(refused) <= {"http1.headers_too_large", "http1.too_many_headers"}, refused

    # No VM failed, none was reloaded, nothing panicked.
    now = wasm_stats(cgw)
    assert now["wasm.wasm_vm_count"] == before["wasm.wasm_vm_count"] >= 3, now
    assert now["wasm.envoy.wasm.runtime.v8.active"] == \
        before["wasm.envoy.wasm.runtime.v8.active"], now
    for k, v in now.items():
        if "fail" in k or k.endswith(("vm_reload", "vm_reload_backoff")):
            assert v == 0, (k, v)
    log = cgw.log_text()
    for bad in ("panicked", "wasm trap", "Function: proxy_on", "Uncaught", "Wasm VM failed",
                "crash", "unreachable"):
        assert bad not in log, bad

    # Good requests still work, on every endpoint.
    with cgw.http() as h:
        for _ in range(3):
            r = h.post(CHAT, headers=gw.auth(), json=gw.chat_body("after the corpus"))
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"].endswith("after the corpus")
        r = h.post(CHAT, headers=gw.auth(), json=gw.chat_body("after", "claude-haiku-4-5"))
        assert r.status_code == 200, r.text
        r = h.post("/v1/completions", headers=gw.auth(),
                   json={"model": "gpt-3.5-turbo-instruct", "prompt": "after"})
        assert r.status_code == 200, r.text
        r = h.post("/v1/embeddings", headers=gw.auth(),
                   json={"model": "bedrock-titan-embed-v2", "input": "after"})
        assert r.status_code == 200, r.text
        r = h.post("/v1/messages", headers=gw.auth(),
                   json={"model": "gemini-2.5-flash", "max_tokens": 20,
                         "messages": [{"role": "user", "content": "after"}]})
        assert r.status_code == 200 and r.json()["type"] == "message", r.text
        r = h.get("/v1/models", headers=gw.auth())
        assert r.status_code == 200 and r.json()["data"], r.text
    with httpx.Client(base_url=cgw.url, http1=False, http2=True, timeout=30) as h2:
        r = h2.post(CHAT, headers=gw.auth(), json=gw.chat_body("after, h2", "gpt-4o"))
        assert r.status_code == 200 and r.http_version == "HTTP/2", r.text
        # No bad request left a quota in-flight count behind.
        r = h2.get("/v1/usage", headers=gw.auth())
        assert r.status_code == 200, r.text
        u = r.json()
        assert u["object"] == "usage" and isinstance(u["usage"]["in_flight"], int), u
        assert u["usage"]["requests"]["minute"] > 100, u  # the corpus was counted
        for who in ("usage", "team_usage"):
            rec = u.get(who) or {}
            assert rec.get("in_flight", 0) == 0, (who, rec)
            for m, counts in (rec.get("models") or {}).items():
                assert counts.get("in_flight", 0) == 0, (who, m, counts)


def test_every_hand_written_case_is_well_formed():
    """The data files hold what the corpus needs (and nothing it ignores)."""
    keys = {"name", "method", "path", "auth", "headers", "body", "body_hex", "body_json",
            "expect"}
    n = 0
    for f in sorted(BADINPUT.glob("*.json")):
        for c in json.loads(f.read_text())["cases"]:
            n += 1
            assert set(c) <= keys, (f.name, c["name"], set(c) - keys)
            assert sum(k in c for k in ("body", "body_hex", "body_json")) <= 1, c["name"]
            assert set(c["expect"]) <= {"status", "code", "param", "envoy"}, c["name"]
            assert 400 <= c["expect"]["status"] < 500, c["name"]
    assert n >= 100, n
