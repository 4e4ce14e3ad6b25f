"""Provider failures (the mock's fault knobs) as the client sees them."""
import json
import time

import httpx
import openai
import pytest

import gw

CHAT = "/v1/chat/completions"


@pytest.fixture
def h(gateway):
    with gateway.http() as c:
        yield c


def post(h, model, behavior, token=None, **extra):
    return h.post(CHAT, headers={**gw.auth(), "x-mock-behavior": behavior},
                  json=gw.chat_body(token or gw.nonce("fault"), model, **extra))


# ----------------------------------------------------------------- 429

@pytest.mark.parametrize("model", ["gpt-4o-mini", "azure-gpt-4o-mini", "qwen2.5-7b",
                                   "claude-haiku-4-5"])
def test_rate_limit_passes_through(h, model):
    r = post(h, model, "throttle=7")
    err = gw.assert_openai_error(r, 429)
    # OpenAI's own 429 type (`requests`: which limit was hit) is kept; other
    # providers' get OpenAI's generic one.
    assert err["type"] == ("requests" if model == "gpt-4o-mini" else "rate_limit_error"), err
    assert r.headers["retry-after"] == "7"
    if not model.startswith("claude"):  # Anthropic sends retry-after only
        assert r.headers["retry-after-ms"] == "7000"
    assert r.headers["x-llm-provider"]
    assert err["code"]


def test_rate_limit_sdk(gateway):
    with pytest.raises(openai.RateLimitError) as ei:
        gateway.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi [[mock:throttle=3]]"}])
    e = ei.value
    assert e.status_code == 429
    assert e.response.headers["retry-after"] == "3"
    assert e.code == "rate_limit_exceeded"
    assert e.type == "requests"


def test_rate_limit_on_a_stream_request(gateway):
    """The provider refuses before streaming: a plain JSON 429, not SSE."""
    with pytest.raises(openai.RateLimitError) as ei:
        gateway.client().chat.completions.create(
            model="azure-gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True,
            extra_headers={"x-mock-behavior": "throttle=2"})
    r = ei.value.response
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["retry-after"] == "2"
    assert set(ei.value.body) == {"message", "type", "param", "code"}


def test_sdk_retries_after_the_providers_delay(gateway, mock):
    """With retries on, the SDK waits what retry-after-ms says (the gateway
    keeps the header) and tries again."""
    token = gw.nonce("retry")
    client = gateway.client(max_retries=2)
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{token} [[mock:throttle=0.4]]"}])
    elapsed = time.monotonic() - t0
    assert len(mock.find(token)) == 3
    assert 0.7 < elapsed < 5, elapsed


# ----------------------------------------------------------------- 4xx/5xx

@pytest.mark.parametrize("model,status,sdk_error", [
    ("gpt-4o-mini", 500, openai.InternalServerError),
    ("gpt-4o-mini", 503, openai.InternalServerError),
    ("gpt-4o-mini", 400, openai.BadRequestError),
    ("gpt-4o-mini", 404, openai.NotFoundError),
    ("gpt-4o-mini", 409, openai.ConflictError),
    ("azure-gpt-4o-mini", 500, openai.InternalServerError),
    ("azure-gpt-4o-mini", 503, openai.InternalServerError),
    ("azure-gpt-4o-mini", 404, openai.NotFoundError),
    ("qwen2.5-7b", 500, openai.InternalServerError),
    ("llama3.2", 503, openai.InternalServerError),
    ("claude-haiku-4-5", 500, openai.InternalServerError),
    ("claude-haiku-4-5", 400, openai.BadRequestError),
])
def test_provider_error_keeps_status(h, gateway, model, status, sdk_error):
    r = post(h, model, f"fail={status}")
    err = gw.assert_openai_error(r, status)
    if status >= 500:
        assert err["type"] == "server_error"
    else:
        assert err["type"] == "invalid_request_error"
    assert r.headers["x-llm-model"]
    with pytest.raises(sdk_error) as ei:
        gateway.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"x [[mock:fail={status}]]"}])
    assert ei.value.status_code == status


def test_anthropic_overloaded_is_503(h, gateway):
    """Anthropic's 529 (overloaded) has no OpenAI equivalent: 503."""
    r = post(h, "claude-sonnet-4-5", "fail=529")
    gw.assert_openai_error(r, 503, "upstream_overloaded", "server_error")
    with pytest.raises(openai.InternalServerError) as ei:
        gateway.client().chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x [[mock:fail=529]]"}])
    assert ei.value.status_code == 503


def test_azure_error_shape_is_translated(h):
    """Azure's {"error":{"code","message"}} gains type and param."""
    r = post(h, "azure-gpt-4o-mini", "fail=404")
    err = gw.assert_openai_error(r, 404, "DeploymentNotFound", "invalid_request_error", None)
    assert "deployment" in err["message"].lower()


@pytest.mark.parametrize("model", ["gpt-4o-mini", "azure-gpt-4o-mini", "llama3.2",
                                   "claude-sonnet-4-5"])
def test_html_error_page_becomes_json(h, model):
    r = post(h, model, "html=502")
    err = gw.assert_openai_error(r, 502, etype="server_error")
    assert "<html" not in r.text.lower()
    assert "502" in err["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_provider_auth_answer_is_502(h, gateway, status):
    """A 401/403 from the provider is the gateway's problem: 502."""
    r = post(h, "gpt-4o-mini", f"fail={status}")
    gw.assert_openai_error(r, 502, "upstream_auth_failed", "server_error")
    assert "sk-" not in r.text
    with pytest.raises(openai.InternalServerError) as ei:
        gateway.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"x [[mock:fail={status}]]"}])
    assert ei.value.status_code == 502


# ----------------------------------------------------------------- wrong provider keys, timeouts

@pytest.fixture(scope="module")
def bad_keys_gateway(mock, tmp_path_factory):
    """Every provider key wrong (SDS files and VLLM_API_KEY), and a 2 s route
    timeout."""
    def mutate(doc):
        gw.llm_route(doc)["route"]["timeout"] = "2s"
    g = gw.Gateway(tmp_path_factory.mktemp("gw-badkeys"), mock.port,
                   secrets_override={"openai": "Bearer " + gw.WRONG_OPENAI_KEY,
                                     "azure": gw.WRONG_AZURE_KEY,
                                     "anthropic": gw.WRONG_ANTHROPIC_KEY},
                   vllm_key=gw.WRONG_VLLM_KEY, mutate=mutate)
    yield g
    g.stop()


@pytest.mark.parametrize("model,key", [("gpt-4o", gw.WRONG_OPENAI_KEY),
                                       ("azure-gpt-4o-mini", gw.WRONG_AZURE_KEY),
                                       ("qwen2.5-7b", gw.WRONG_VLLM_KEY),
                                       ("claude-haiku-4-5", gw.WRONG_ANTHROPIC_KEY)])
def test_wrong_provider_key_is_502_and_never_echoed(bad_keys_gateway, mock, model, key):
    token = gw.nonce("badkey")
    with bad_keys_gateway.http() as c:
        r = c.post(CHAT, headers=gw.auth(), json=gw.chat_body(token, model))
    err = gw.assert_openai_error(r, 502, "upstream_auth_failed", "server_error")
    assert "not a problem with your key" in err["message"]
    # The mock did get the wrong key and answered 401 ...
    upstream = mock.find_one(token)
    assert key in json.dumps(upstream["headers"])
    # ... whose message (for OpenAI) quotes a masked fragment of it.
    text = r.text + json.dumps(dict(r.headers))
    for pat in gw.key_fragment_patterns(key):
        assert not pat.search(text), pat.pattern
    assert "Incorrect API key provided:" not in text


def test_wrong_provider_key_streamed(bad_keys_gateway):
    with pytest.raises(openai.InternalServerError) as ei:
        bad_keys_gateway.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True)
    assert ei.value.status_code == 502 and ei.value.code == "upstream_auth_failed"
    assert gw.WRONG_OPENAI_KEY[:6] not in str(ei.value.body)


def test_route_timeout_is_504(bad_keys_gateway):
    with bad_keys_gateway.http() as c:
        t0 = time.monotonic()
        r = c.post(CHAT, headers={**gw.auth(), "x-mock-behavior": "stall=4000"},
                   json=gw.chat_body("slow", "llama3.2"))
        elapsed = time.monotonic() - t0
    gw.assert_openai_error(r, 504, "upstream_timeout", "server_error")
    assert 1.5 < elapsed < 3.9, elapsed
    with pytest.raises(openai.InternalServerError) as ei:
        bad_keys_gateway.client().chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "x [[mock:stall=4000]]"}],
            stream=True)
    assert ei.value.status_code == 504


def test_provider_down_is_503(make_gateway):
    dead = gw.free_port()  # nothing listens there
    g = make_gateway(mock_port=dead)
    with g.http() as c:
        r = c.post(CHAT, headers=gw.auth(), json=gw.chat_body("anyone?", "gpt-4o-mini"))
        err = gw.assert_openai_error(r, 503, "upstream_unavailable", "server_error")
        assert "openai" in err["message"]
        r = c.post(CHAT, headers=gw.auth(),
                   json=gw.chat_body("anyone?", "qwen2.5-7b", stream=True))
        gw.assert_openai_error(r, 503, "upstream_unavailable")
    with pytest.raises(openai.InternalServerError) as ei:
        g.client().embeddings.create(model="nomic-embed-text", input="x")
    assert ei.value.status_code == 503
    # /v1/models does not need a provider.
    assert len(g.client().models.list().data) == len(gw.shipped_plugin_config()["models"])


# ----------------------------------------------------------------- broken streams

def collect(stream, limit=30.0):
    """Read a stream; return (text, exception)."""
    t0 = time.monotonic()
    text = ""
    try:
        for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
            assert time.monotonic() - t0 < limit
    except (openai.APIError, httpx.HTTPError) as e:
        return text, e
    return text, None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", ["gpt-4o-mini", "azure-gpt-4o-mini", "qwen2.5-7b",
                                   "claude-haiku-4-5"])
def test_stream_cut_is_an_error(gateway, model):
    stream = gateway.client(timeout=10).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "tell me [[mock:cut=3]]"}],
        stream=True)
    text, exc = collect(stream)
    assert exc is not None, f"a cut stream ended as if complete: {text!r}"


@pytest.mark.timeout(30)
def test_stream_cut_raw(h):
    """What the wire shows for a cut stream: no [DONE]; the connection is
    reset or an error event ends it."""
    events, failed = [], None
    try:
        with h.stream("POST", CHAT, headers=gw.auth(),
                      json=gw.chat_body("x [[mock:cut=3]]", "gpt-4o", stream=True)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:"):
                    events.append(line[5:].strip())
    except httpx.HTTPError as e:
        failed = e
    assert "[DONE]" not in events
    assert failed is not None or "upstream_stream_incomplete" in events[-1], events


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", ["gpt-4o-mini", "azure-gpt-4o-mini", "llama3.2",
                                   "claude-sonnet-4-5"])
def test_stream_without_done_ends_with_error_event(gateway, h, model):
    with h.stream("POST", CHAT, headers=gw.auth(),
                  json=gw.chat_body("x [[mock:nodone]]", model, stream=True)) as r:
        assert r.status_code == 200
        data = [ln[5:].strip() for ln in r.iter_lines() if ln.startswith("data:")]
    assert "[DONE]" not in data
    last = json.loads(data[-1])
    assert last["error"]["code"] == "upstream_stream_incomplete"
    assert set(last["error"]) == {"message", "type", "param", "code"}
    # The SDK turns it into an exception instead of a silently short answer.
    stream = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x [[mock:nodone]]"}], stream=True)
    text, exc = collect(stream)
    assert isinstance(exc, openai.APIError), exc
    assert "ended the stream" in str(exc)


@pytest.mark.timeout(30)
def test_slow_stream_within_timeouts(gateway):
    """drip between events does not trip any timeout (stream_idle 300 s)."""
    text, exc = collect(gateway.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "slow [[mock:drip=150,chunks=6]]"}],
        stream=True))
    assert exc is None and text.startswith("Hello from the mock openai model gpt-4o-mini")


@pytest.mark.timeout(30)
def test_non_streamed_answer_cut_is_an_error(gateway):
    """A provider that dies half way through a JSON answer: the client gets
    an error (the connection is reset), never a silently truncated 200."""
    with pytest.raises((openai.APIConnectionError, openai.APIStatusError)):
        gateway.client(timeout=10).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x [[mock:cut=30]]"}])
