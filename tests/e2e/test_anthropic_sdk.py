"""The official `anthropic` SDK against the gateway's Messages front door
(`POST /v1/messages`, `/v1/messages/count_tokens`;
filter/src/frontdoor/anthropic_messages.rs).

- To a Claude model the body passes through with only the model renamed,
  and the answer comes back unchanged.
- To any other model (OpenAI, Ollama here) the Messages body is translated
  into a chat-completions body and the answer (whole or streamed) back into
  Anthropic's shape; count_tokens is the gateway's estimate.
- Every failure is Anthropic-shaped, so the SDK raises its own classes.

The SDK uses `httpx2`, not `httpx`, so the recording transport of gw.py
cannot be given to it: `RecordingTransport2` below does the same (every
response goes into `gw.RESPONSES`, which test_zz_no_leaks greps) and also
keeps each request body, to compare with what the mock received.

The installed SDK sends `anthropic-version: {anthropic._constants.ANTHROPIC_API_VERSION}`
by default; the mock accepts only 2023-06-01 and 2023-01-01 (as documented
in mock/README.md), so the clients here pin 2023-06-01 except in the test
that checks the SDK's own value travels unchanged.
"""
import json
import math

import anthropic
import httpx
import httpx2
import pytest
from anthropic._constants import ANTHROPIC_API_VERSION

import gw

HAIKU, HAIKU_UP = "claude-haiku-4-5", "claude-haiku-4-5-20251001"
SONNET = "claude-sonnet-4-5"
SONNET_ALIAS = "claude-sonnet-4-5-20250929"
VERSION = "2023-06-01"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
           "60e6kgAAAABJRU5ErkJggg==")

#: Translated targets: model -> (mock provider, upstream model, max-tokens field).
OTHERS = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini", "max_completion_tokens"),
    "llama3.2": ("ollama", "llama3.2", "max_tokens"),
}

WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "input_schema": {"type": "object",
                            "properties": {"city": {"type": "string"},
                                           "unit": {"type": "string", "enum": ["c", "f"]}},
                            "required": ["city", "unit"]}}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ----------------------------------------------------------------- recording (httpx2)

#: Request bodies the SDK sent, in order (bytes).
SENT: list[bytes] = []


class _TeeStream2(httpx2.SyncByteStream):
    def __init__(self, inner, rec: gw.Record):
        self.inner, self.rec = inner, rec

    def __iter__(self):
        for chunk in self.inner:
            self.rec.body.extend(chunk)
            yield chunk

    def close(self):
        self.inner.close()


class RecordingTransport2(httpx2.HTTPTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        SENT.append(request.read())
        resp = super().handle_request(request)
        rec = gw.Record(request.method, str(request.url), resp.status_code,
                        [(k.decode("latin-1"), v.decode("latin-1"))
                         for k, v in resp.headers.raw])
        with gw._LOCK:
            gw.RESPONSES.append(rec)
        return httpx2.Response(resp.status_code, headers=resp.headers,
                               stream=_TeeStream2(resp.stream, rec),
                               extensions=resp.extensions, request=request)


def sdk(g: gw.Gateway, key: str = gw.DEMO_KEY, version: str | None = VERSION,
        **kw) -> anthropic.Anthropic:
    http = httpx2.Client(transport=RecordingTransport2(), timeout=30)
    g._clients.append(http)
    headers = {"anthropic-version": version} if version else {}
    return anthropic.Anthropic(base_url=g.url, api_key=key, max_retries=0, http_client=http,
                               default_headers=headers, **kw)


@pytest.fixture
def client(gateway):
    return sdk(gateway)


# ----------------------------------------------------------------- helpers

def reply(provider: str, upstream: str, said: str) -> str:
    return f"Hello from the mock {provider} model {upstream}. You said: {said}"


def replay(mock, rec: dict, path: str | None = None, drop=("stream", "stream_options")) -> dict:
    """The recorded upstream request sent straight to the mock, not
    streamed: the provider's own answer (and numbers) for that body. Not a
    recording client: the headers carry the provider key."""
    body = json.loads(rec["body"])
    for k in drop:
        body.pop(k, None)
    headers = {k: v for k, v in rec["headers"].items()
               if k in ("x-api-key", "authorization", "api-key", "anthropic-version",
                        "anthropic-beta")}
    url = mock.url + (path or rec["path"]) + (f"?{rec['query']}" if rec["query"] else "")
    with httpx.Client(timeout=10) as c:
        r = c.post(url, headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def raw_sse(data: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of an Anthropic event stream; every event has both."""
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        names = [ln[6:].strip() for ln in block.split("\n") if ln.startswith("event:")]
        datas = [ln[5:].strip() for ln in block.split("\n") if ln.startswith("data:")]
        assert len(names) == 1 and len(datas) == 1, block
        out.append((names[0], json.loads(datas[0])))
    return out


ORDER_RE = ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop")


def assert_anthropic_order(names: list[str], blocks: int = 1) -> None:
    """message_start, then per block start / delta+ / stop, then
    message_delta, message_stop (pings allowed anywhere)."""
    names = [n for n in names if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    body = names[1:-2]
    seen = 0
    i = 0
    while i < len(body):
        assert body[i] == "content_block_start", names
        i += 1
        n = 0
        while i < len(body) and body[i] == "content_block_delta":
            i += 1
            n += 1
        assert n >= 1, names
        assert body[i] == "content_block_stop", names
        i += 1
        seen += 1
    assert seen == blocks, names


def error_body(e: anthropic.APIStatusError, etype: str) -> str:
    """The error is Anthropic's shape exactly; returns the message."""
    body = e.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert set(body) <= {"type", "error", "request_id"}, body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == etype, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert e.response.headers["content-type"].startswith("application/json")
    return body["error"]["message"]


# ================================================================= Claude: pass-through

@pytest.mark.parametrize("model,upstream", [(HAIKU, HAIKU_UP), (SONNET_ALIAS, SONNET)])
def test_create_passes_through(gateway, mock, client, model, upstream):
    token = gw.nonce("msgpass")
    # The model name also appears inside the prompt: only the top-level one
    # is renamed.
    said = f'Say hi {token} "model":"{model}"'
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=321, system="Be terse.",
        messages=[{"role": "user", "content": said}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31,foo-2025-01-01"})
    sent = SENT[-1]
    assert raw.headers["x-llm-provider"] == "anthropic"
    assert raw.headers["x-llm-model"] == upstream
    assert raw.headers["x-llm-upstream-request-id"] == raw.headers["request-id"]
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.id.startswith("msg_01")
    assert msg.model == upstream
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == reply("anthropic", upstream, said)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None

    rec = mock.find_one(token)
    assert rec["provider"] == "anthropic"
    assert rec["path"] == "/v1/messages"
    h = rec["headers"]
    assert h["host"] == "api.anthropic.com"
    assert h["x-api-key"] == gw.ANTHROPIC_KEY
    assert "authorization" not in h and "api-key" not in h
    assert gw.DEMO_KEY not in json.dumps(h) and gw.DEMO_KEY not in rec["body"]
    assert h["anthropic-version"] == VERSION
    assert h["anthropic-beta"] == "prompt-caching-2024-07-31,foo-2025-01-01"
    assert "x-llmgw-cluster" not in h
    # The body is the SDK's, byte for byte, with only the model renamed.
    expected = sent.decode().replace(f'"model":"{model}"', f'"model":"{upstream}"', 1)
    assert expected != sent.decode()
    assert rec["body"] == expected
    assert f'"model":"{model}"' in json.loads(rec["body"])["messages"][0]["content"]
    assert int(h["content-length"]) == len(rec["body"].encode())
    # The answer is the provider's, unchanged.
    direct = replay(mock, rec)
    assert msg.model_dump(mode="json", exclude_none=True) == \
        anthropic.types.Message.model_validate(direct).model_dump(mode="json", exclude_none=True)


def test_no_beta_header_unless_sent(gateway, mock, client):
    token = gw.nonce("msgnobeta")
    client.messages.create(model=HAIKU, max_tokens=10,
                           messages=[{"role": "user", "content": token}])
    h = mock.find_one(token)["headers"]
    assert "anthropic-beta" not in h
    assert h["anthropic-version"] == VERSION


def test_sdk_default_version_travels_unchanged(gateway, mock):
    """Without pinning, the SDK's own anthropic-version reaches the provider
    as it was sent (the gateway does not rewrite it); the mock knows only
    2023-06-01/2023-01-01 and answers newer values with a 400, which comes
    back in Anthropic's shape."""
    token = gw.nonce("msgversion")
    c = sdk(gateway, version=None)
    try:
        c.messages.create(model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": token}])
        accepted = True
    except anthropic.BadRequestError as e:
        accepted = False
        assert ANTHROPIC_API_VERSION in error_body(e, "invalid_request_error")
    assert mock.find_one(token)["headers"]["anthropic-version"] == ANTHROPIC_API_VERSION
    assert accepted == (ANTHROPIC_API_VERSION in ("2023-06-01", "2023-01-01"))


def test_default_version_when_the_client_sends_none(gateway, mock):
    token = gw.nonce("msgnoversion")
    with gateway.http() as c:
        r = c.post("/v1/messages", headers={"x-api-key": gw.DEMO_KEY},
                   json={"model": HAIKU, "max_tokens": 20,
                         "messages": [{"role": "user", "content": token}]})
    assert r.status_code == 200, r.text
    assert mock.find_one(token)["headers"]["anthropic-version"] == "2023-06-01"


def test_stream_passes_through(gateway, mock, client):
    token = gw.nonce("msgstream")
    said = f"Stream this {token}"
    with client.messages.stream(model=HAIKU, max_tokens=200,
                                messages=[{"role": "user", "content": said}]) as s:
        assert s.response.headers["x-llm-provider"] == "anthropic"
        assert s.response.headers["content-type"].startswith("text/event-stream")
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == reply("anthropic", HAIKU_UP, said)
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.model == HAIKU_UP
    rec = mock.find_one(token)
    assert json.loads(rec["body"])["stream"] is True
    direct = replay(mock, rec)
    assert final.usage.input_tokens == direct["usage"]["input_tokens"]
    assert final.usage.output_tokens == direct["usage"]["output_tokens"]
    assert final.id.startswith("msg_01")


def test_stream_events_are_the_providers(gateway, mock):
    """On the wire: Anthropic's events as the provider sent them, ping
    included (the translated route sends none)."""
    token = gw.nonce("msgrawstream")
    with gateway.http() as c:
        with c.stream("POST", "/v1/messages", headers={"x-api-key": gw.DEMO_KEY,
                                                       "anthropic-version": VERSION},
                      json={"model": SONNET, "max_tokens": 100, "stream": True,
                            "messages": [{"role": "user", "content": token}]}) as r:
            assert r.status_code == 200
            data = r.read()
    events = raw_sse(data)
    names = [n for n, _ in events]
    assert all(d["type"] == n for n, d in events)
    assert "ping" in names
    assert_anthropic_order(names)
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0


def test_tool_use_round_trip_native(gateway, mock, client):
    token = gw.nonce("msgtool")
    messages = [{"role": "user", "content": f"Weather in Rome? {token}"}]
    first = client.messages.create(model=SONNET, max_tokens=300, tools=[WEATHER],
                                   messages=messages)
    assert first.stop_reason == "tool_use"
    [tu] = first.content
    assert tu.type == "tool_use" and tu.name == "get_weather"
    assert tu.id.startswith("toolu_")
    assert tu.input == {"city": "mock", "unit": "c"}
    messages.append({"role": "assistant", "content": [tu.model_dump(exclude_none=True)]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tu.id, "content": f"sunny 25 {token}"}]})
    second = client.messages.create(model=SONNET, max_tokens=300, tools=[WEATHER],
                                    messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == f"Tool result received: sunny 25 {token}"
    sent = [json.loads(r["body"]) for r in mock.find(token)]
    assert len(sent) == 2
    assert sent[0]["tools"] == [WEATHER]
    turns = sent[1]["messages"]
    assert turns[1]["content"][0]["type"] == "tool_use"
    assert turns[1]["content"][0]["id"] == tu.id
    assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": tu.id,
                                      "content": f"sunny 25 {token}"}


def test_count_tokens_passes_through(gateway, mock, client):
    token = gw.nonce("msgcount")
    raw = client.messages.with_raw_response.count_tokens(
        model=HAIKU, system="Count me too.", tools=[WEATHER],
        messages=[{"role": "user", "content": f"How many tokens is this {token}?"}])
    assert "x-llm-token-count" not in raw.headers
    assert raw.headers["x-llm-provider"] == "anthropic"
    n = raw.parse().input_tokens
    rec = mock.find_one(token)
    assert rec["path"] == "/v1/messages/count_tokens"
    assert rec["headers"]["x-api-key"] == gw.ANTHROPIC_KEY
    assert json.loads(rec["body"])["model"] == HAIKU_UP
    assert n == replay(mock, rec)["input_tokens"]
    # count_tokens agrees with what a real request is billed.
    billed = client.messages.create(
        model=HAIKU, max_tokens=5, system="Count me too.", tools=[WEATHER], tool_choice={"type": "none"},
        messages=[{"role": "user", "content": f"How many tokens is this {token}?"}])
    assert billed.usage.input_tokens == n


# ================================================================= other providers: translated

@pytest.mark.parametrize("model", list(OTHERS))
def test_create_translated(gateway, mock, client, model):
    provider, upstream, max_field = OTHERS[model]
    token = gw.nonce("msgtr")
    said = f"Hello there {token}"
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=300, system=[{"type": "text", "text": "Be brief."},
                                             {"type": "text", "text": "Be kind."}],
        messages=[{"role": "user", "content": said}],
        extra_headers={"anthropic-beta": "foo-2025-01-01"})
    assert raw.headers["x-llm-provider"] == gw.CHAT_MODELS[model][0]
    assert raw.headers["x-llm-model"] == upstream
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == upstream
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == reply(provider, upstream, said)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None

    rec = mock.find_one(token)
    body = gw.check_upstream(rec, model)  # path, host, provider key, no caller key
    # Anthropic's headers mean nothing to an OpenAI-shaped API: not sent.
    assert "anthropic-version" not in rec["headers"]
    assert "anthropic-beta" not in rec["headers"]
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "system", "content": "Be kind."},
                                {"role": "user", "content": said}]
    assert body[max_field] == 300
    other = ({"max_tokens", "max_completion_tokens"} - {max_field}).pop()
    assert other not in body
    direct = replay(mock, rec)
    assert msg.id == "msg_" + direct["id"].removeprefix("chatcmpl-")
    assert msg.usage.input_tokens == direct["usage"]["prompt_tokens"]
    assert msg.usage.output_tokens == direct["usage"]["completion_tokens"]
    assert msg.usage.cache_read_input_tokens == 0


@pytest.mark.parametrize("model", list(OTHERS))
def test_stream_translated(gateway, mock, client, model):
    provider, upstream, _ = OTHERS[model]
    token = gw.nonce("msgtrstream")
    said = f"Stream it {token}"
    with client.messages.stream(model=model, max_tokens=300,
                                messages=[{"role": "user", "content": said}]) as s:
        names = [e.type for e in s if e.type in ORDER_RE]
        final = s.get_final_message()
    assert_anthropic_order(names)
    assert names.count("content_block_delta") == len(reply(provider, upstream, said).split())
    assert final.content[0].text == reply(provider, upstream, said)
    assert final.stop_reason == "end_turn"
    assert final.model == upstream
    rec = mock.find_one(token)
    body = json.loads(rec["body"])
    # The gateway asks for usage to fill message_delta.
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    direct = replay(mock, rec)
    assert final.usage.input_tokens == direct["usage"]["prompt_tokens"]
    assert final.usage.output_tokens == direct["usage"]["completion_tokens"]


def test_translated_stream_on_the_wire(gateway):
    with gateway.http() as c:
        with c.stream("POST", "/v1/messages", headers={"x-api-key": gw.DEMO_KEY},
                      json={"model": "gpt-4o-mini", "max_tokens": 100, "stream": True,
                            "messages": [{"role": "user", "content": "a b c"}]}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            data = r.read()
    events = raw_sse(data)
    assert all(d["type"] == n for n, d in events)
    names = [n for n, _ in events]
    assert_anthropic_order(names)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and len(start["id"]) > 10
    assert start["model"] == "gpt-4o-mini"
    assert start["content"] == [] and start["stop_reason"] is None
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0 and delta["usage"]["input_tokens"] > 0
    assert b"[DONE]" not in data and b"chat.completion" not in data


@pytest.mark.parametrize("model", list(OTHERS))
def test_tool_use_round_trip_translated(gateway, mock, client, model):
    token = gw.nonce("msgtrtool")
    messages = [{"role": "user", "content": f"Weather in Rome? {token}"}]
    first = client.messages.create(model=model, max_tokens=300, tools=[WEATHER],
                                   messages=messages)
    assert first.stop_reason == "tool_use"
    [tu] = first.content
    assert tu.type == "tool_use" and tu.name == "get_weather"
    assert tu.input == {"city": "mock", "unit": "c"}  # a dict, not a JSON string
    up1 = json.loads(mock.find_one(token)["body"])
    assert up1["tools"] == [{"type": "function", "function": {
        "name": WEATHER["name"], "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"]}}]

    messages.append({"role": "assistant", "content": [tu.model_dump(exclude_none=True)]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tu.id, "content": f"sunny 25 {token}"}]})
    second = client.messages.create(model=model, max_tokens=300, tools=[WEATHER],
                                    messages=messages)
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == f"Tool result received: sunny 25 {token}"
    sent = [json.loads(r["body"]) for r in mock.find(token)]
    assert len(sent) == 2
    turns = sent[1]["messages"]
    assert turns[1]["role"] == "assistant"
    [call] = turns[1]["tool_calls"]
    assert call["id"] == tu.id and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == tu.input
    assert turns[2] == {"role": "tool", "tool_call_id": tu.id, "content": f"sunny 25 {token}"}


@pytest.mark.parametrize("model", list(OTHERS))
def test_tool_use_streamed_translated(gateway, mock, client, model):
    token = gw.nonce("msgtrtoolstream")
    with client.messages.stream(model=model, max_tokens=300, tools=[WEATHER],
                                tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": f"Weather? {token}"}]) as s:
        events = [e for e in s if e.type in ORDER_RE]
        final = s.get_final_message()
    assert_anthropic_order([e.type for e in events])
    starts = [e for e in events if e.type == "content_block_start"]
    assert [b.content_block.type for b in starts] == ["tool_use"]
    assert starts[0].content_block.name == "get_weather"
    parts = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert all(e.delta.type == "input_json_delta" for e in events
               if e.type == "content_block_delta")
    assert json.loads("".join(parts)) == {"city": "mock", "unit": "c"}
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "mock", "unit": "c"}
    assert final.content[0].id == starts[0].content_block.id
    assert json.loads(mock.find_one(token)["body"])["tool_choice"] == "required"


def test_image_and_stop_sequences_translated(gateway, mock, client):
    token = gw.nonce("msgtrimg")
    msg = client.messages.create(
        model="gpt-4o-mini", max_tokens=100, stop_sequences=["STOPHERE"],
        metadata={"user_id": "user-7"},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": f"look {token}"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_B64}}]}])
    assert msg.content[0].text == reply("openai", "gpt-4o-mini", f"look {token}") + " [1 image]"
    body = json.loads(mock.find_one(token)["body"])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": f"look {token}"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]
    assert body["stop"] == ["STOPHERE"]
    assert body["user"] == "user-7"


@pytest.mark.parametrize("thinking,extra,effort", [
    ({"type": "enabled", "budget_tokens": 1024}, {}, "low"),
    ({"type": "enabled", "budget_tokens": 4095}, {}, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, {}, "medium"),
    ({"type": "enabled", "budget_tokens": 16383}, {}, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, {}, "high"),
    ({"type": "adaptive"}, {}, None),
    ({"type": "disabled"}, {}, None),
    # output_config.effort wins over thinking; `max` is OpenAI's xhigh.
    ({"type": "enabled", "budget_tokens": 2048}, {"output_config": {"effort": "max"}}, "xhigh"),
])
def test_thinking_becomes_reasoning_effort(mock, client, thinking, extra, effort):
    token = gw.nonce("msgeffort")
    msg = client.messages.create(model="llama3.2", max_tokens=30000, thinking=thinking,
                                 extra_body=extra or None,
                                 messages=[{"role": "user", "content": token}])
    assert msg.content[-1].text == reply("ollama", "llama3.2", token)
    body = json.loads(mock.find_one(token)["body"])
    assert body.get("reasoning_effort") == effort
    assert "thinking" not in body and "output_config" not in body


def test_output_format_becomes_response_format(mock, client):
    token = gw.nonce("msgformat")
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}
    msg = client.messages.create(
        model="gpt-4o-mini", max_tokens=300, messages=[{"role": "user", "content": token}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert json.loads(msg.content[0].text) == {"a": "mock", "b": 1}
    body = json.loads(mock.find_one(token)["body"])
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": schema}}


def test_tool_results_become_tool_messages_in_order(mock, client):
    """Each tool_result is its own `tool` message in order (list content
    joined by newlines, is_error as an `Error: ` prefix); text after the
    results is a user message after them."""
    token = gw.nonce("msgresults")
    tool = {"name": "f", "input_schema": {"type": "object"}}
    msg = client.messages.create(model="llama3.2", max_tokens=300, tools=[tool], messages=[
        {"role": "user", "content": f"go {token}"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Calling both."},
            {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}},
            {"type": "tool_use", "id": "toolu_b", "name": "f", "input": {"x": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a",
             "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}]},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "boom", "is_error": True},
            {"type": "text", "text": f"Now answer {token}"}]}])
    assert msg.stop_reason == "tool_use"  # the last turn is the user's: the mock calls again
    body = json.loads(mock.find_one(token)["body"])
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Calling both.", "tool_calls": [
            {"id": "toolu_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "toolu_b", "type": "function",
             "function": {"name": "f", "arguments": '{"x":1}'}}]},
        {"role": "tool", "content": "line 1\nline 2", "tool_call_id": "toolu_a"},
        {"role": "tool", "content": "Error: boom", "tool_call_id": "toolu_b"},
        {"role": "user", "content": f"Now answer {token}"},
    ]


@pytest.mark.parametrize("model", list(OTHERS))
def test_count_tokens_estimate(gateway, mock, client, model):
    token = gw.nonce("msgest")
    text = f"Count these words please {token}"
    system = "You are a counter."
    raw = client.messages.with_raw_response.count_tokens(
        model=model, system=system,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_B64}}]},
                  {"role": "assistant", "content": "Ok."},
                  {"role": "user", "content": "Go."}])
    assert raw.status_code == 200
    assert raw.headers["x-llm-token-count"] == "estimate"
    assert raw.headers["x-llm-provider"] == gw.CHAT_MODELS[model][0]
    assert raw.headers["x-llm-model"] == OTHERS[model][1]
    # ceil(text bytes / 4) + 4 per message (system included) + 1600 per image.
    n_bytes = len(system) + len(text) + len("Ok.") + len("Go.")
    assert raw.parse().input_tokens == math.ceil(n_bytes / 4) + 4 * 4 + 1600
    # Answered by the gateway: nothing went to the provider.
    assert mock.find(token, wait=0.3) == []


# ================================================================= errors

def test_wrong_caller_key(gateway, mock):
    token = gw.nonce("msgbadkey")
    with pytest.raises(anthropic.AuthenticationError) as ei:
        sdk(gateway, key="sk-llmgw-not-a-key").messages.create(
            model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": token}])
    assert ei.value.status_code == 401
    assert ei.value.response.headers.get("x-request-id")
    error_body(ei.value, "authentication_error")
    assert mock.find(token, wait=0.3) == []


def test_missing_caller_key(gateway):
    with gateway.http() as c:
        r = c.post("/v1/messages", json={"model": HAIKU, "max_tokens": 5,
                                         "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}


def test_unknown_model(gateway, mock, client):
    token = gw.nonce("msgnomodel")
    with pytest.raises(anthropic.NotFoundError) as ei:
        client.messages.create(model="claude-opus-99", max_tokens=10,
                               messages=[{"role": "user", "content": token}])
    assert ei.value.status_code == 404
    assert "claude-opus-99" in error_body(ei.value, "not_found_error")
    assert mock.find(token, wait=0.3) == []


def test_embedding_model_is_refused(client):
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.messages.create(model="text-embedding-3-small", max_tokens=10,
                               messages=[{"role": "user", "content": "x"}])
    assert "embedding" in error_body(ei.value, "invalid_request_error")


@pytest.mark.parametrize("model", [HAIKU, "gpt-4o-mini"])
def test_missing_max_tokens(gateway, mock, client, model):
    token = gw.nonce("msgnomax")
    # The SDK's `create` requires max_tokens; its generic post does not.
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.post("/v1/messages", cast_to=object,
                    body={"model": model, "messages": [{"role": "user", "content": token}]})
    assert ei.value.status_code == 400
    assert "max_tokens" in error_body(ei.value, "invalid_request_error")
    assert mock.find(token, wait=0.3) == []


def test_unknown_field_translated(gateway, mock, client):
    token = gw.nonce("msgextra")
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.messages.create(model="llama3.2", max_tokens=10, extra_body={"bogus": 1},
                               messages=[{"role": "user", "content": token}])
    assert error_body(ei.value, "invalid_request_error") == \
        "bogus: Extra inputs are not permitted"
    assert mock.find(token, wait=0.3) == []


def test_model_outside_the_callers_list_is_404(test_gateway, test_keys, mock):
    """As on the OpenAI routes, a model the caller may not use looks like
    one that does not exist."""
    c = sdk(test_gateway, key=test_keys["restricted"])
    token = gw.nonce("msgperm")
    with pytest.raises(anthropic.NotFoundError) as ei:
        c.messages.create(model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": token}])
    assert ei.value.status_code == 404
    denied = error_body(ei.value, "not_found_error")
    with pytest.raises(anthropic.NotFoundError) as ei:
        c.messages.create(model="claude-nope", max_tokens=10,
                          messages=[{"role": "user", "content": token}])
    assert error_body(ei.value, "not_found_error") == denied.replace(HAIKU, "claude-nope")
    assert mock.find(token, wait=0.3) == []
    ok = c.messages.create(model="llama3.2", max_tokens=100,
                           messages=[{"role": "user", "content": token}])
    assert ok.content[0].text == reply("ollama", "llama3.2", token)


@pytest.mark.parametrize("stream", [False, True])
def test_provider_rate_limit_through_openai(gateway, client, stream):
    kw = dict(model="gpt-4o-mini", max_tokens=10,
              messages=[{"role": "user", "content": "x [[mock:throttle=4]]"}])
    with pytest.raises(anthropic.RateLimitError) as ei:
        if stream:
            with client.messages.stream(**kw) as s:
                s.get_final_message()
        else:
            client.messages.create(**kw)
    e = ei.value
    assert e.status_code == 429
    assert e.response.headers["retry-after"] == "4"
    assert "try again in 4s" in error_body(e, "rate_limit_error")


def test_claude_rate_limit(gateway, client):
    with pytest.raises(anthropic.RateLimitError) as ei:
        client.messages.create(model=HAIKU, max_tokens=10,
                               messages=[{"role": "user", "content": "x [[mock:throttle=3]]"}])
    assert ei.value.response.headers["retry-after"] == "3"
    error_body(ei.value, "rate_limit_error")


@pytest.mark.parametrize("stream", [False, True])
def test_claude_overloaded_is_503(gateway, client, stream):
    """Anthropic's 529 is 503 on every route (documented); the body keeps
    `overloaded_error`, and the SDK's class for 503 is a subclass of
    InternalServerError."""
    kw = dict(model=HAIKU, max_tokens=10,
              messages=[{"role": "user", "content": "x [[mock:fail=529]]"}])
    with pytest.raises(anthropic.InternalServerError) as ei:
        if stream:
            with client.messages.stream(**kw) as s:
                s.get_final_message()
        else:
            client.messages.create(**kw)
    e = ei.value
    assert e.status_code == 503
    assert type(e) is anthropic.ServiceUnavailableError
    assert error_body(e, "overloaded_error") == "Overloaded"


@pytest.mark.parametrize("model,status,etype", [
    ("gpt-4o-mini", 503, "api_error"),
    ("llama3.2", 500, "api_error"),
    (HAIKU, 500, "api_error"),
    (HAIKU, 400, "invalid_request_error"),
])
def test_provider_errors_in_anthropic_shape(client, model, status, etype):
    with pytest.raises(anthropic.APIStatusError) as ei:
        client.messages.create(model=model, max_tokens=10,
                               messages=[{"role": "user", "content": f"x [[mock:fail={status}]]"}])
    assert ei.value.status_code == status
    error_body(ei.value, etype)


@pytest.mark.timeout(30)
def test_claude_mid_stream_error_event(client):
    said = "a b c d e f g h [[mock:sse_error]]"
    text = ""
    with pytest.raises(anthropic.APIStatusError) as ei:
        with client.messages.stream(model=HAIKU, max_tokens=100,
                                    messages=[{"role": "user", "content": said}]) as s:
            for t in s.text_stream:
                text += t
    assert ei.value.body == {"type": "error",
                             "error": {"type": "overloaded_error", "message": "Overloaded"}}
    full = reply("anthropic", HAIKU_UP, said)
    assert text and text != full and full.startswith(text)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", [HAIKU, "gpt-4o-mini"])
def test_stream_without_its_end_gets_an_error_event(client, model):
    with pytest.raises(anthropic.APIStatusError) as ei:
        with client.messages.stream(model=model, max_tokens=100,
                                    messages=[{"role": "user", "content": "x [[mock:nodone]]"}]) as s:
            s.get_final_message()
    assert ei.value.body["type"] == "error"
    assert ei.value.body["error"]["type"] == "api_error"
    assert "ended the stream" in ei.value.body["error"]["message"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", [HAIKU, "gpt-4o-mini"])
def test_cut_stream_is_an_error(gateway, model):
    c = sdk(gateway)
    with pytest.raises((anthropic.APIError, httpx2.HTTPError)):
        with c.messages.stream(model=model, max_tokens=100,
                               messages=[{"role": "user", "content": "a b c [[mock:cut=4]]"}]) as s:
            s.get_final_message()


@pytest.fixture(scope="module")
def wrong_key_gateway(mock, tmp_path_factory):
    g = gw.Gateway(tmp_path_factory.mktemp("gw-msgbadkey"), mock.port,
                   secrets_override={"anthropic": gw.WRONG_ANTHROPIC_KEY})
    yield g
    g.stop()


@pytest.mark.parametrize("call", ["create", "stream", "count_tokens"])
def test_wrong_provider_key_is_502(wrong_key_gateway, mock, call):
    c = sdk(wrong_key_gateway)
    token = gw.nonce("msgprovkey")
    messages = [{"role": "user", "content": token}]
    with pytest.raises(anthropic.InternalServerError) as ei:
        if call == "create":
            c.messages.create(model=SONNET, max_tokens=10, messages=messages)
        elif call == "stream":
            with c.messages.stream(model=SONNET, max_tokens=10, messages=messages) as s:
                s.get_final_message()
        else:
            c.messages.count_tokens(model=SONNET, messages=messages)
    e = ei.value
    assert e.status_code == 502
    assert "not a problem with your key" in error_body(e, "api_error")
    assert mock.find_one(token)["headers"]["x-api-key"] == gw.WRONG_ANTHROPIC_KEY
    text = e.response.text + json.dumps(dict(e.response.headers))
    for pat in gw.key_fragment_patterns(gw.WRONG_ANTHROPIC_KEY):
        assert not pat.search(text), pat.pattern
    assert "invalid x-api-key" not in text and "authentication_error" not in text


# ----------------------------------------------------------------- Bearer auth

@pytest.mark.parametrize("model", [HAIKU, "gpt-4o-mini"])
def test_bearer_key_on_messages(gateway, mock, model):
    token = gw.nonce("msgbearer")
    with gateway.http() as c:
        r = c.post("/v1/messages", headers={"authorization": f"Bearer {gw.DEMO_KEY}",
                                            "anthropic-version": VERSION},
                   json={"model": model, "max_tokens": 100,
                         "messages": [{"role": "user", "content": token}]})
    assert r.status_code == 200, r.text
    msg = r.json()
    assert msg["type"] == "message" and msg["content"][0]["text"].endswith(token)
    rec = mock.find_one(token)
    h = rec["headers"]
    assert gw.DEMO_KEY not in json.dumps(h)
    if model == HAIKU:
        assert h["x-api-key"] == gw.ANTHROPIC_KEY and "authorization" not in h
    else:
        gw.check_upstream(rec, model)
        assert "x-api-key" not in h


# ----------------------------------------------------------------- known bugs

def test_azure_stream_message_start_has_id_and_model(client):
    with client.messages.stream(model="azure-gpt-4o-mini", max_tokens=100,
                                messages=[{"role": "user", "content": "a b"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == reply("azure", "gpt-4o-mini", "a b")
    assert final.model == "gpt-4o-mini"
    assert final.id.startswith("msg_") and len(final.id) > len("msg_")
