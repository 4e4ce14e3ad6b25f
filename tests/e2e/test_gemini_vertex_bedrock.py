"""The official `openai` SDK (and the `anthropic` SDK's `/v1/messages`
front door) against the Google Gemini (AI Studio), Vertex AI and Amazon
Bedrock models of the shipped config: requests translated into
`generateContent` / Converse / embedding calls (filter/src/providers/gemini.rs,
vertex.rs, bedrock.rs) and the answers, whole or streamed (Gemini SSE,
Bedrock's binary event stream), translated back.

What the provider (the mock) received is checked exactly: path, host, the
credential (Gemini `x-goog-api-key` and Vertex's bearer token injected by
Envoy from the SDS files, Bedrock's SigV4 `Authorization` computed by the
filter from BEDROCK_* in the VM environment; the mock verifies the
signature, and `sigv4_signature` below recomputes it independently), and
nothing of the caller's key.

Token counts are compared with what the mock answers when the recorded
upstream request is replayed to it directly (`replay`), so they are the
provider's numbers, not the gateway's arithmetic.

The gateways with wrong provider credentials add their keys to
`gw.PROVIDER_KEYS` at import time, so test_zz_no_leaks.py greps every
response and Envoy log of the session for them too.
"""
import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import struct
import time
import urllib.parse
from datetime import datetime, timezone

import anthropic
import httpx
import httpx2
import openai
import pytest

import gw

GEMINI, VERTEX = "gemini-2.5-flash", "vertex-gemini-2.5-flash"
BR_CLAUDE, NOVA = "bedrock-claude-sonnet-4-5", "bedrock-nova-lite"
CLAUDE_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA_ID = "amazon.nova-lite-v1:0"
VERTEX_BASE = "/v1/projects/llmgw-demo/locations/us-central1/publishers/google/models"
AWS_REGION = "us-east-1"
#: The mock's default Bedrock API key (`--bedrock-api-key`): used only by
#: `replay`, which talks to the mock directly, never through a gateway.
MOCK_BEDROCK_API_KEY = "mock-bedrock-key"

#: model -> (provider name = kind, mock provider / reply name, upstream model,
#:           generate path, stream path, stream query, host)
MODELS = {
    GEMINI: ("gemini", "gemini", "gemini-2.5-flash",
             "/v1beta/models/gemini-2.5-flash:generateContent",
             "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse",
             "generativelanguage.googleapis.com"),
    VERTEX: ("vertex", "vertex", "gemini-2.5-flash",
             f"{VERTEX_BASE}/gemini-2.5-flash:generateContent",
             f"{VERTEX_BASE}/gemini-2.5-flash:streamGenerateContent", "alt=sse",
             "us-central1-aiplatform.googleapis.com"),
    BR_CLAUDE: ("bedrock", "bedrock", CLAUDE_ID,
                "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
                "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream", "",
                "bedrock-runtime.us-east-1.amazonaws.com"),
    NOVA: ("bedrock", "bedrock", NOVA_ID,
           "/model/amazon.nova-lite-v1%3A0/converse",
           "/model/amazon.nova-lite-v1%3A0/converse-stream", "",
           "bedrock-runtime.us-east-1.amazonaws.com"),
}
GOOGLE = [GEMINI, VERTEX]
BEDROCK = [BR_CLAUDE, NOVA]
ALL = list(MODELS)

#: Wrong provider credentials some gateways get on purpose.
WRONG_GEMINI_KEY = "gm-wrongcanary-" + secrets.token_hex(6)
WRONG_VERTEX_TOKEN = "ya29.wrongcanary-" + secrets.token_hex(6)
WRONG_AWS_SECRET = "wrong/canary/" + secrets.token_hex(10)
WRONG_AWS_ACCESS_KEY_ID = "AKIDWRONGCANARY" + secrets.token_hex(3).upper()
# test_zz_no_leaks greps every response and Envoy log for these.
gw.PROVIDER_KEYS.extend([WRONG_GEMINI_KEY, WRONG_VERTEX_TOKEN, WRONG_AWS_SECRET])

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"},
                                  "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
PERSON = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"], "additionalProperties": False}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ----------------------------------------------------------------- helpers

def reply(model: str, said: str) -> str:
    _, mock_provider, upstream = MODELS[model][:3]
    return f"Hello from the mock {mock_provider} model {upstream}. You said: {said}"


def sigv4_signature(req: dict, secret: str, amz_date: str, scope_date: str) -> str:
    """AWS SigV4 (service `bedrock`) of a request as the mock recorded it,
    computed here from scratch: the path segments URI-encoded once more
    (`%3A` → `%253A`: every service but S3), the signed headers, the body's
    SHA-256."""
    h = req["headers"]
    signed = re.search(r"SignedHeaders=([^,]+)", h["authorization"]).group(1).split(";")
    path = "/".join(urllib.parse.quote(seg, safe="-._~") for seg in req["path"].split("/"))
    query = "&".join(sorted(req["query"].split("&"))) if req["query"] else ""
    canonical = "\n".join([
        req["method"], path, query,
        "".join(f"{k}:{' '.join(h[k].split())}\n" for k in signed),
        ";".join(signed), hashlib.sha256(req["body"].encode()).hexdigest()])
    scope = f"{scope_date}/{AWS_REGION}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (scope_date, AWS_REGION, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


SIGV4_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/bedrock/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})")


def check_sigv4(req: dict, secret: str = gw.AWS_SECRET_ACCESS_KEY,
                akid: str = gw.AWS_ACCESS_KEY_ID) -> None:
    h = req["headers"]
    m = SIGV4_RE.fullmatch(h["authorization"])
    assert m, h["authorization"]
    assert m["akid"] == akid and m["region"] == AWS_REGION
    assert m["signed"] == "content-type;host;x-amz-content-sha256;x-amz-date"
    assert h["x-amz-content-sha256"] == hashlib.sha256(req["body"].encode()).hexdigest()
    amz_date = h["x-amz-date"]
    assert amz_date[:8] == m["date"]
    signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert abs(time.time() - signed_at.timestamp()) < 300
    assert m["sig"] == sigv4_signature(req, secret, amz_date, m["date"])


def check_upstream(req: dict, model: str, *, stream: bool = False,
                   path: str | None = None, query: str | None = None) -> dict:
    """The request the mock recorded went where `model` says, with the
    provider's credential and nothing of the caller's; returns its body."""
    kind, mock_provider, _, gen_path, stream_path, stream_query, host = MODELS[model]
    h = req["headers"]
    assert req["provider"] == mock_provider
    assert req["method"] == "POST"
    assert req["path"] == (path or (stream_path if stream else gen_path))
    assert req["query"] == (query if query is not None else (stream_query if stream else ""))
    assert h["host"] == host
    creds = {"authorization", "api-key", "x-api-key", "x-goog-api-key"} & set(h)
    if kind == "gemini":
        assert creds == {"x-goog-api-key"}, h.keys()
        assert h["x-goog-api-key"] == gw.GEMINI_KEY
    elif kind == "vertex":
        assert creds == {"authorization"}, h.keys()
        assert h["authorization"] == "Bearer " + gw.VERTEX_TOKEN
    else:
        assert creds == {"authorization"}, h.keys()
        check_sigv4(req)
        assert not any(k.startswith("x-amz-") for k in h
                       if k not in ("x-amz-date", "x-amz-content-sha256")), h.keys()
    assert gw.DEMO_KEY not in json.dumps(h) and gw.DEMO_KEY not in req["body"]
    assert gw.AWS_SECRET_ACCESS_KEY not in json.dumps(h) + req["body"]
    assert "x-llmgw-cluster" not in h
    assert "anthropic-version" not in h
    assert h["content-type"] == "application/json"
    assert int(h["content-length"]) == len(req["body"].encode())
    return json.loads(req["body"])


def replay(mock, rec: dict) -> dict:
    """The recorded upstream request sent straight to the mock, not
    streamed: the provider's own answer (and numbers) for that body. Not a
    recording client: the headers carry provider credentials."""
    path = rec["path"].replace(":streamGenerateContent", ":generateContent") \
        .replace("/converse-stream", "/converse")
    headers = {"content-type": "application/json"}
    if rec["provider"] == "gemini":
        headers["x-goog-api-key"] = gw.GEMINI_KEY
    elif rec["provider"] == "vertex":
        headers["authorization"] = "Bearer " + gw.VERTEX_TOKEN
    else:
        headers["authorization"] = "Bearer " + MOCK_BEDROCK_API_KEY
    with httpx.Client(timeout=10) as c:
        r = c.post(mock.url + path, headers=headers, content=rec["body"].encode())
    assert r.status_code == 200, r.text
    return r.json()


def provider_usage(answer: dict) -> tuple[int, int]:
    """(prompt, completion) tokens of a provider's own answer."""
    if "usageMetadata" in answer:
        u = answer["usageMetadata"]
        completion = u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
        return u["promptTokenCount"], completion
    u = answer["usage"]
    return u["inputTokens"], u["outputTokens"]


def sse_data(data: bytes) -> list[str]:
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        lines = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def raw_stream(g: gw.Gateway, body: dict, timeout: float = 10) -> tuple[httpx.Response, list[str]]:
    """POST a streamed chat request; (response, data of each SSE event)."""
    with g.http(timeout=timeout) as c:
        with c.stream("POST", "/v1/chat/completions", headers=gw.auth(), json=body) as r:
            data = r.read()
    return r, sse_data(data)


def collect(stream) -> tuple[str, Exception | None, list[str]]:
    """Read an SDK stream; (text, exception, finish reasons seen)."""
    text, finish = "", []
    try:
        for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
                if c.choices[0].finish_reason:
                    finish.append(c.choices[0].finish_reason)
    except (openai.APIError, httpx.HTTPError) as e:
        return text, e, finish
    return text, None, finish


def stream_tool_call(stream) -> tuple[str | None, str, str, str | None]:
    """(id, name, arguments, finish_reason) of the one tool call of a stream."""
    call_id, name, args, finish = None, "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for tc in chunk.choices[0].delta.tool_calls or []:
            assert tc.index == 0
            call_id = tc.id or call_id
            if tc.function:
                name += tc.function.name or ""
                args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return call_id, name, args, finish


def finish_reasons(chunks) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks
            if c.choices and c.choices[0].finish_reason]


def decode_b64(vec: str) -> list[float]:
    raw = base64.b64decode(vec)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# ================================================================= chat

@pytest.mark.parametrize("model", ALL)
def test_chat(gateway, mock, model):
    kind, _, upstream = MODELS[model][:3]
    token = gw.nonce("gvbchat")
    said = f"Hi {token}"
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": said}],
        temperature=0.2, max_tokens=100)
    assert raw.status_code == 200
    assert raw.headers["x-llm-provider"] == kind
    assert raw.headers["x-llm-provider-kind"] == kind
    assert raw.headers["x-llm-model"] == upstream
    assert raw.headers.get("x-request-id")
    assert raw.headers["content-type"].startswith("application/json")
    comp = raw.parse()
    assert comp.object == "chat.completion"
    assert comp.created > 1_600_000_000
    assert len(comp.choices) == 1
    msg = comp.choices[0].message
    assert msg.role == "assistant"
    assert msg.content == reply(model, said)
    assert msg.tool_calls is None
    assert comp.choices[0].finish_reason == "stop"

    rec = mock.find_one(token)
    body = check_upstream(rec, model)
    if kind == "bedrock":
        # Converse has no id or model: AWS's request id, the client's name.
        assert comp.id == "chatcmpl-" + raw.headers["x-llm-upstream-request-id"]
        assert comp.model == model
        assert body == {"system": [{"text": "Be brief."}],
                        "messages": [{"role": "user", "content": [{"text": said}]}],
                        "inferenceConfig": {"maxTokens": 100, "temperature": 0.2}}
    else:
        # chatcmpl- + responseId; model is Gemini's modelVersion.
        assert comp.id.startswith("chatcmpl-") and len(comp.id) > 12
        assert comp.model == upstream
        assert body == {"systemInstruction": {"parts": [{"text": "Be brief."}]},
                        "contents": [{"role": "user", "parts": [{"text": said}]}],
                        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 100}}
    prompt, completion = provider_usage(replay(mock, rec))
    assert comp.usage.prompt_tokens == prompt
    assert comp.usage.completion_tokens == completion
    assert comp.usage.total_tokens == prompt + completion


def test_sigv4_checker_rejects_a_wrong_signature(gateway, mock):
    """`check_sigv4` can fail: the same recorded request does not verify
    with another secret, or with one byte of the body changed."""
    token = gw.nonce("gvbsig")
    gateway.client().chat.completions.create(model=NOVA,
                                             messages=[{"role": "user", "content": token}])
    rec = mock.find_one(token)
    check_sigv4(rec)
    with pytest.raises(AssertionError):
        check_sigv4(rec, secret=WRONG_AWS_SECRET)
    tampered = dict(rec, body=rec["body"].replace(token, token.upper()))
    m = SIGV4_RE.fullmatch(rec["headers"]["authorization"])
    assert m["sig"] != sigv4_signature(tampered, gw.AWS_SECRET_ACCESS_KEY,
                                       rec["headers"]["x-amz-date"], m["date"])


def test_bedrock_default_max_tokens(gateway, mock):
    """Without max_tokens: Claude's configured max_output_tokens (64000);
    Nova has none configured, so Bedrock's default (no inferenceConfig)."""
    t1, t2 = gw.nonce("gvbmax"), gw.nonce("gvbmax")
    c = gateway.client()
    c.chat.completions.create(model=BR_CLAUDE, messages=[{"role": "user", "content": t1}])
    c.chat.completions.create(model=NOVA, messages=[{"role": "user", "content": t2}])
    assert check_upstream(mock.find_one(t1), BR_CLAUDE)["inferenceConfig"] == {"maxTokens": 64000}
    assert "inferenceConfig" not in check_upstream(mock.find_one(t2), NOVA)


# ================================================================= streaming

@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("model", ALL)
def test_stream(gateway, mock, model, include_usage):
    kind, _, upstream = MODELS[model][:3]
    token = gw.nonce("gvbstream")
    said = f"stream for me {token}"
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": said}], stream=True, **extra)
    # Bedrock's binary event stream is answered as SSE too.
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-llm-provider"] == kind
    assert raw.headers["x-llm-model"] == upstream
    chunks = list(raw.parse())
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c for c in chunks if c.choices and c.choices[0].delta.role] == [chunks[0]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply(model, said)
    # One content chunk per word, as the provider's deltas came.
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == \
        len(reply(model, said).split())
    finish = finish_reasons(chunks)
    assert finish == ["stop"]

    rec = mock.find_one(token)
    body = check_upstream(rec, model, stream=True)
    assert "stream" not in body and "stream_options" not in body
    if include_usage:
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert all(c.usage is None for c in chunks[:-1])
        prompt, completion = provider_usage(replay(mock, rec))
        assert last.usage.prompt_tokens == prompt
        assert last.usage.completion_tokens == completion
        assert last.usage.total_tokens == prompt + completion
    else:
        assert all(c.usage is None for c in chunks)
        assert all(c.choices for c in chunks)


@pytest.mark.parametrize("model", [GEMINI, NOVA])
def test_stream_on_the_wire(gateway, model):
    """Translated streams are plain OpenAI SSE: JSON chunks (nothing of the
    binary frames), one `[DONE]` last, no error event, no content-length."""
    r, events = raw_stream(gateway, gw.chat_body("a b c", model, stream=True,
                                                 stream_options={"include_usage": True}))
    assert r.status_code == 200
    assert "content-length" not in r.headers
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    for e in events[:-1]:
        assert ":event-type" not in e and ":message-type" not in e
        obj = json.loads(e)
        assert "error" not in obj
        assert obj["object"] == "chat.completion.chunk"
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0


# ================================================================= tools

@pytest.mark.parametrize("model", ALL)
def test_tool_call_round_trip(gateway, mock, model):
    kind = MODELS[model][0]
    client = gateway.client()
    token = gw.nonce("gvbtool")
    messages = [{"role": "user", "content": f"What is the weather in Paris? {token}"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert args == {"city": "mock"}  # the schema's required properties
    fn = WEATHER["function"]
    up1 = check_upstream(mock.find_one(token), model)
    if kind == "bedrock":
        assert re.fullmatch(r"tooluse_\w+", call.id), call.id
        assert up1["toolConfig"] == {"tools": [{"toolSpec": {
            "name": fn["name"], "description": fn["description"],
            "inputSchema": {"json": fn["parameters"]}}}]}
    else:
        # Gemini's calls have no id: the gateway makes one.
        assert re.fullmatch(r"call_[0-9a-f]{24}", call.id), call.id
        assert up1["tools"] == [{"functionDeclarations": [{
            "name": fn["name"], "description": fn["description"],
            "parameters": fn["parameters"]}]}]

    result = {"temp_c": 21, "sky": "clear", "ref": token}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    content = second.choices[0].message.content
    assert content.startswith("Tool result received: ") and token in content
    sent = mock.find(token)
    assert len(sent) == 2
    up2 = check_upstream(sent[1], model)
    if kind == "bedrock":
        assert up2["messages"][1:] == [
            {"role": "assistant", "content": [{"toolUse": {
                "toolUseId": call.id, "name": "get_weather", "input": args}}]},
            {"role": "user", "content": [{"toolResult": {
                "toolUseId": call.id, "content": [{"text": json.dumps(result)}]}}]}]
    else:
        # Gemini pairs calls and results by name and order: no ids sent.
        assert up2["contents"][1:] == [
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": args}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                              "response": result}}]}]


@pytest.mark.parametrize("model", ALL)
def test_tool_call_streamed_round_trip(gateway, mock, model):
    kind = MODELS[model][0]
    client = gateway.client()
    token = gw.nonce("gvbtoolstream")
    messages = [{"role": "user", "content": f"Weather in Oslo? {token}"}]
    call_id, name, args, finish = stream_tool_call(client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], tool_choice="required", stream=True))
    assert finish == "tool_calls"
    assert call_id and name == "get_weather"
    assert json.loads(args) == {"city": "mock"}
    up1 = check_upstream(mock.find_one(token), model, stream=True)
    if kind == "bedrock":
        assert up1["toolConfig"]["toolChoice"] == {"any": {}}
    else:
        assert up1["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": f"sunny {token}"})
    text, exc, finish = collect(client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], stream=True))
    assert exc is None and finish == ["stop"]
    if kind == "bedrock":
        assert text == f"Tool result received: sunny {token}"
    else:
        assert text == 'Tool result received: {"content":"sunny %s"}' % token
    sent = mock.find(token)
    assert len(sent) == 2
    up2 = check_upstream(sent[1], model, stream=True)
    if kind == "bedrock":
        [use] = up2["messages"][1]["content"]
        [res] = up2["messages"][2]["content"]
        assert use["toolUse"]["toolUseId"] == call_id == res["toolResult"]["toolUseId"]
        assert use["toolUse"]["name"] == "get_weather"
        assert res["toolResult"]["content"] == [{"text": f"sunny {token}"}]
    else:
        [fc] = up2["contents"][1]["parts"]
        [fr] = up2["contents"][2]["parts"]
        assert fc["functionCall"] == {"name": "get_weather", "args": json.loads(args)}
        # A text result is wrapped, as Gemini wants an object.
        assert fr["functionResponse"] == {"name": "get_weather",
                                          "response": {"content": f"sunny {token}"}}


# ================================================================= structured output

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ALL)
def test_json_schema(gateway, mock, model, stream):
    token = gw.nonce("gvbjson")
    kw = dict(model=model, messages=[{"role": "user", "content": f"A person. {token}"}],
              response_format={"type": "json_schema",
                               "json_schema": {"name": "person", "strict": True, "schema": PERSON}})
    if stream:
        chunks = list(gateway.client().chat.completions.create(stream=True, **kw))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = finish_reasons(chunks)
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    else:
        comp = gateway.client().chat.completions.create(**kw)
        content = comp.choices[0].message.content
        finish = [comp.choices[0].finish_reason]
        assert comp.choices[0].message.tool_calls is None
    assert finish == ["stop"]
    v = json.loads(content)
    assert set(v) == {"name", "age", "tags"}
    assert isinstance(v["name"], str) and isinstance(v["age"], int)
    assert all(isinstance(t, str) for t in v["tags"])
    body = check_upstream(mock.find_one(token), model, stream=stream)
    if MODELS[model][0] == "bedrock":
        # A tool named after the schema, forced.
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "person"}}
        [tool] = body["toolConfig"]["tools"]
        assert tool["toolSpec"]["name"] == "person"
        assert tool["toolSpec"]["inputSchema"] == {"json": PERSON}
    else:
        gc = body["generationConfig"]
        assert gc["responseMimeType"] == "application/json"
        assert gc["responseSchema"]["required"] == ["name", "age", "tags"]
        assert gc["responseSchema"]["propertyOrdering"] == ["name", "age", "tags"]
        assert "additionalProperties" not in gc["responseSchema"]


# ================================================================= more mapping

@pytest.mark.parametrize("model", BEDROCK)
def test_non_ascii_and_large_bodies_are_signed_right(gateway, mock, model):
    """SigV4 covers the UTF-8 bytes of the final body: non-ASCII text and a
    300 KB prompt (sent chunked by the client) both verify."""
    token = gw.nonce("gvbutf8")
    said = f"café 😀 日本語 {token} " + "z" * 300_000
    body = json.dumps(gw.chat_body(said, model)).encode()

    def gen():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", content=gen(),
                   headers={**gw.auth(), "content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["choices"][0]["message"]["content"] == reply(model, said[:200])
    rec = mock.find_one(token)
    check_upstream(rec, model)  # includes the independent signature check
    assert json.loads(rec["body"])["messages"][0]["content"][0]["text"] == said


@pytest.mark.parametrize("model", ALL)
def test_caller_sent_provider_credentials_never_reach_upstream(gateway, mock, model):
    """A client cannot smuggle its own provider credential or signing
    headers: the upstream request carries only the gateway's."""
    token = gw.nonce("gvbsmuggle")
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", json=gw.chat_body(token, model), headers={
            **gw.auth(), "x-goog-api-key": "client-goog-key", "x-amz-security-token": "client-sts",
            "x-amz-date": "20200101T000000Z", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert r.status_code == 200, r.text
    rec = mock.find_one(token)
    check_upstream(rec, model)
    text = json.dumps(rec["headers"])
    assert "client-goog-key" not in text and "client-sts" not in text
    if MODELS[model][0] == "bedrock":
        assert rec["headers"]["x-amz-date"] != "20200101T000000Z"


@pytest.mark.parametrize("model", [GEMINI, BR_CLAUDE])
def test_reasoning_effort(gateway, mock, model):
    token = gw.nonce("gvbthink")
    comp = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": token}], reasoning_effort="low")
    msg = comp.choices[0].message
    assert msg.content == reply(model, token)
    assert msg.model_extra["reasoning_content"] == f"Mock reasoning about: {token}"
    body = check_upstream(mock.find_one(token), model)
    if model == GEMINI:
        assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048,
                                                              "includeThoughts": True}
        # Thoughts are billed as output: in completion_tokens and the details.
        assert comp.usage.completion_tokens_details.reasoning_tokens > 0
    else:
        assert body["additionalModelRequestFields"] == {
            "thinking": {"type": "enabled", "budget_tokens": 2048}}
        [block] = msg.model_extra["thinking_blocks"]
        assert block["type"] == "thinking" and block["signature"]
    streamed = list(gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": token}], reasoning_effort="low",
        stream=True))
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == f"Mock reasoning about: {token}"
    assert "".join(d.content or "" for d in deltas) == reply(model, token)


def test_reasoning_effort_on_nova_is_400(gateway, mock):
    token = gw.nonce("gvbnovathink")
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(
            model=NOVA, messages=[{"role": "user", "content": token}], reasoning_effort="low")
    assert ei.value.param == "reasoning_effort" and ei.value.code == "unsupported_value"
    assert mock.find(token, wait=0.3) == []


def test_gemini_n_candidates(gateway, mock):
    token = gw.nonce("gvbn")
    client = gateway.client()
    messages = [{"role": "user", "content": token}]
    comp = client.chat.completions.create(model=GEMINI, messages=messages, n=2)
    assert [c.message.content for c in comp.choices] == [
        f"{reply(GEMINI, token)} (candidate {i})" for i in (0, 1)]
    assert check_upstream(mock.find(token)[0], GEMINI)["generationConfig"] == {"candidateCount": 2}
    texts, finish = {0: "", 1: ""}, {}
    for ch in client.chat.completions.create(model=GEMINI, messages=messages, n=2, stream=True):
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert texts == {i: f"{reply(GEMINI, token)} (candidate {i})" for i in (0, 1)}
    assert finish == {0: "stop", 1: "stop"}


@pytest.mark.parametrize("param,value", [("n", 2), ("logprobs", True), ("seed", 7),
                                         ("parallel_tool_calls", False)])
def test_bedrock_unsupported_parameters_are_400(gateway, mock, param, value):
    token = gw.nonce("gvbunsup")
    extra = {"tools": [WEATHER]} if param == "parallel_tool_calls" else {}
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(
            model=BR_CLAUDE, messages=[{"role": "user", "content": token}],
            **{param: value}, **extra)
    assert ei.value.param == param and ei.value.code == "unsupported_parameter"
    assert mock.find(token, wait=0.3) == []


@pytest.mark.parametrize("model", [GEMINI, NOVA])
def test_max_tokens_cut_is_length(gateway, mock, model):
    token = gw.nonce("gvblen")
    comp = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": token}], max_completion_tokens=3)
    assert comp.choices[0].finish_reason == "length"
    assert reply(model, token).startswith(comp.choices[0].message.content)
    assert comp.usage.completion_tokens <= 3
    body = check_upstream(mock.find_one(token), model)
    if model == GEMINI:
        assert body["generationConfig"] == {"maxOutputTokens": 3}
    else:
        assert body["inferenceConfig"] == {"maxTokens": 3}


# ================================================================= embeddings

def test_gemini_embeddings(gateway, mock):
    token = gw.nonce("gvbemb")
    said = f"hello {token}"
    raw = gateway.client().embeddings.with_raw_response.create(
        model="gemini-embedding-001", input=said)
    assert raw.headers["x-llm-provider"] == "gemini"
    assert raw.headers["x-llm-model"] == "gemini-embedding-001"
    res = raw.parse()
    assert res.model == "gemini-embedding-001"
    [d] = res.data
    assert len(d.embedding) == 3072
    assert all(isinstance(x, float) and math.isfinite(x) for x in d.embedding)
    rec = mock.find_one(token)
    body = check_upstream(rec, GEMINI,
                          path="/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert body == {"requests": [{"model": "models/gemini-embedding-001",
                                  "content": {"parts": [{"text": said}]}}]}
    # Google's vector, as the mock gave it (the SDK's base64 is f32).
    direct = replay(mock, rec)["embeddings"][0]["values"]
    assert d.embedding == pytest.approx(direct, rel=1e-6, abs=1e-7)
    # The Gemini API reports no embedding tokens: the gateway's estimate.
    assert res.usage.prompt_tokens == math.ceil(len(said.encode()) / 4)


def test_gemini_embedding_batch_with_dimensions_keeps_order(gateway, mock):
    client = gateway.client()
    token = gw.nonce("gvbembb")
    inputs = [f"item {i} {secrets.token_hex(4)} {token}" for i in range(4)]
    batch = client.embeddings.create(model="gemini-embedding-001", input=inputs, dimensions=16)
    assert [d.index for d in batch.data] == [0, 1, 2, 3]
    # One upstream call for the batch, in order.
    body = json.loads(mock.find_one(token)["body"])
    assert [r["content"]["parts"][0]["text"] for r in body["requests"]] == inputs
    assert {r["outputDimensionality"] for r in body["requests"]} == {16}
    singles = [client.embeddings.create(model="gemini-embedding-001", input=s,
                                        dimensions=16).data[0].embedding for s in inputs]
    for d, single in zip(batch.data, singles):
        assert len(d.embedding) == 16
        assert d.embedding == pytest.approx(single)
    assert len({tuple(v) for v in singles}) == 4


def test_vertex_embeddings_with_dimensions(gateway, mock):
    token = gw.nonce("gvbvemb")
    raw = gateway.client().embeddings.with_raw_response.create(
        model="vertex-text-embedding-005", input=[f"one {token}", f"two {token}"], dimensions=64)
    assert raw.headers["x-llm-provider"] == "vertex"
    assert raw.headers["x-llm-model"] == "text-embedding-005"
    res = raw.parse()
    assert [d.index for d in res.data] == [0, 1]
    assert all(len(d.embedding) == 64 for d in res.data)
    assert res.data[0].embedding != res.data[1].embedding
    rec = mock.find_one(token)
    body = check_upstream(rec, VERTEX, path=f"{VERTEX_BASE}/text-embedding-005:predict")
    assert body == {"instances": [{"content": f"one {token}"}, {"content": f"two {token}"}],
                    "parameters": {"outputDimensionality": 64}}
    direct = replay(mock, rec)["predictions"]
    for d, p in zip(res.data, direct):
        assert d.embedding == pytest.approx(p["embeddings"]["values"], rel=1e-6, abs=1e-7)
    # Vertex's own token counts, summed.
    assert res.usage.prompt_tokens == \
        sum(p["embeddings"]["statistics"]["token_count"] for p in direct)


@pytest.mark.parametrize("inp", ["single", "list-of-one"])
def test_titan_embedding(gateway, mock, inp):
    token = gw.nonce("gvbtitan")
    said = f"hello {token}"
    raw = gateway.client().embeddings.with_raw_response.create(
        model="bedrock-titan-embed-v2", input=said if inp == "single" else [said])
    assert raw.headers["x-llm-provider"] == "bedrock"
    assert raw.headers["x-llm-model"] == "amazon.titan-embed-text-v2:0"
    res = raw.parse()
    [d] = res.data
    assert len(d.embedding) == 1024
    assert sum(x * x for x in d.embedding) == pytest.approx(1.0, rel=1e-4)  # normalised
    rec = mock.find_one(token)
    body = check_upstream(rec, NOVA, path="/model/amazon.titan-embed-text-v2%3A0/invoke")
    assert body == {"inputText": said, "normalize": True}
    direct = replay(mock, rec)
    assert d.embedding == pytest.approx(direct["embedding"], rel=1e-6, abs=1e-7)
    assert res.usage.prompt_tokens == direct["inputTextTokenCount"]


def test_titan_embedding_dimensions(gateway, mock):
    token = gw.nonce("gvbtitand")
    res = gateway.client().embeddings.create(model="bedrock-titan-embed-v2", input=token,
                                             dimensions=256)
    assert len(res.data[0].embedding) == 256
    body = json.loads(mock.find_one(token)["body"])
    assert body["dimensions"] == 256


def test_titan_embedding_batch_is_400_naming_input(gateway, mock):
    token = gw.nonce("gvbtitanb")
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().embeddings.create(model="bedrock-titan-embed-v2",
                                           input=[f"a {token}", f"b {token}"])
    e = ei.value
    assert e.status_code == 400
    assert e.param == "input"
    assert e.type == "invalid_request_error"
    assert set(e.body) == {"message", "type", "param", "code"}
    assert "one text per request" in e.message
    # Refused by the gateway: nothing went upstream.
    assert mock.find(token, wait=0.3) == []


def test_cohere_embedding_batch_keeps_order(gateway, mock):
    client = gateway.client()
    token = gw.nonce("gvbcohere")
    inputs = [f"doc {i} {token}" for i in range(5)]
    raw = client.embeddings.with_raw_response.create(model="bedrock-cohere-embed", input=inputs)
    assert raw.headers["x-llm-model"] == "cohere.embed-english-v3"
    batch = raw.parse()
    assert [d.index for d in batch.data] == list(range(5))
    assert all(len(d.embedding) == 1024 for d in batch.data)
    rec = mock.find_one(token)
    body = check_upstream(rec, NOVA, path="/model/cohere.embed-english-v3/invoke")
    assert body == {"texts": inputs, "input_type": "search_document"}
    direct = replay(mock, rec)["embeddings"]
    for d, v in zip(batch.data, direct):
        assert d.embedding == pytest.approx(v, rel=1e-6, abs=1e-7)
    assert len({tuple(v) for v in direct}) == 5  # so the order check means something
    # Cohere's count comes from Bedrock's header.
    assert batch.usage.prompt_tokens > 0


@pytest.mark.parametrize("model", ["gemini-embedding-001", "vertex-text-embedding-005",
                                   "bedrock-titan-embed-v2", "bedrock-cohere-embed"])
def test_embedding_base64_is_the_sdks_default(gateway, mock, model):
    """The SDK asks for base64 (little-endian f32) and decodes it; the
    gateway encodes the provider's floats (the providers have no such
    option: nothing of it goes upstream). `float` gives the same numbers."""
    token = gw.nonce("gvbb64")
    with gateway.http() as c:
        r64 = c.post("/v1/embeddings", headers=gw.auth(),
                     json={"model": model, "input": token, "encoding_format": "base64"})
        rfl = c.post("/v1/embeddings", headers=gw.auth(),
                     json={"model": model, "input": token, "encoding_format": "float"})
    assert r64.status_code == 200 and rfl.status_code == 200, (r64.text[:300], rfl.text[:300])
    b64 = r64.json()["data"][0]["embedding"]
    floats = rfl.json()["data"][0]["embedding"]
    assert isinstance(b64, str) and isinstance(floats, list)
    assert decode_b64(b64) == pytest.approx(floats, rel=1e-6, abs=1e-7)
    sdk = gateway.client().embeddings.create(model=model, input=token)
    assert sdk.data[0].embedding == pytest.approx(floats, rel=1e-6, abs=1e-7)
    for rec in mock.find(token):
        assert "encoding_format" not in rec["body"] and "base64" not in rec["body"]


# ================================================================= provider errors

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ALL)
def test_throttling_is_429(gateway, mock, model, stream):
    token = gw.nonce("gvb429")
    with pytest.raises(openai.RateLimitError) as ei:
        gateway.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"{token} [[mock:throttle=3]]"}],
            stream=stream)
    e = ei.value
    assert e.status_code == 429
    assert e.type == "rate_limit_error" and e.code == "rate_limit_exceeded"
    assert set(e.body) == {"message", "type", "param", "code"}
    # Refused before streaming: a JSON error, not SSE.
    assert e.response.headers["content-type"].startswith("application/json")
    assert e.response.headers["x-llm-provider"] == MODELS[model][0]
    assert len(mock.find(token)) == 1


@pytest.mark.parametrize("model", [GEMINI])
def test_google_retry_delay_becomes_retry_after(gateway, model):
    """The Gemini API gives the wait only in the body (RetryInfo.retryDelay
    "3s"); the gateway turns it into the headers the SDKs honour. (Vertex's
    429 carries no RetryInfo, and none is made up.)"""
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body("x [[mock:throttle=3]]", model))
    gw.assert_openai_error(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "3"
    assert r.headers["retry-after-ms"] == "3000"


@pytest.mark.parametrize("status,code", [(500, "upstream_error"), (503, "upstream_unavailable")])
@pytest.mark.parametrize("model", ALL)
def test_server_errors_keep_status(gateway, model, status, code):
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(f"x [[mock:fail={status}]]", model))
    gw.assert_openai_error(r, status, code, "server_error", None)
    assert r.headers["x-llm-provider"] == MODELS[model][0]
    with pytest.raises(openai.InternalServerError) as ei:
        gateway.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"x [[mock:fail={status}]]"}],
            stream=True)
    assert ei.value.status_code == status and ei.value.code == code


@pytest.mark.parametrize("model,fail,status,code", [
    (NOVA, 408, 504, "upstream_timeout"),   # ModelTimeoutException
    (BR_CLAUDE, 424, 502, "model_error"),   # ModelErrorException
    (GEMINI, 504, 504, "upstream_timeout"),  # DEADLINE_EXCEEDED
    (VERTEX, 504, 504, "upstream_timeout"),
])
def test_provider_specific_statuses(gateway, model, fail, status, code):
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(f"x [[mock:fail={fail}]]", model))
    gw.assert_openai_error(r, status, code, "server_error", None)


# ----------------------------------------------------------------- safety

@pytest.mark.parametrize("model", GOOGLE)
def test_blocked_prompt_is_a_content_filter_error(gateway, mock, model):
    """promptFeedback.blockReason without candidates: OpenAI's
    `content_filter` error (type invalid_request_error), status 400 (the
    glue holds the headers of whole translated answers to set it)."""
    token = gw.nonce("gvbblock")
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(f"{token} [[mock:block]]", model))
    err = gw.assert_openai_error(r, 400, "content_filter", "invalid_request_error", None)
    assert "blockReason: SAFETY" in err["message"]
    assert r.headers["x-llm-provider"] == MODELS[model][0]
    check_upstream(mock.find_one(token), model)
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x [[mock:block]]"}])
    assert ei.value.code == "content_filter"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", GOOGLE)
def test_blocked_prompt_streamed_is_an_error_event(gateway, model):
    r, events = raw_stream(gateway, gw.chat_body("x [[mock:block]]", model, stream=True))
    assert r.status_code == 200
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["code"] == "content_filter"
    text, exc, finish = collect(gateway.client(timeout=10).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x [[mock:block]]"}], stream=True))
    assert isinstance(exc, openai.APIError) and exc.code == "content_filter", exc
    assert text == "" and finish == []


@pytest.mark.parametrize("model", GOOGLE)
def test_safety_finish_is_content_filter(gateway, model):
    comp = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x [[mock:safety]]"}])
    assert comp.choices[0].finish_reason == "content_filter"
    assert comp.choices[0].message.content is None
    assert comp.usage.completion_tokens == 0


@pytest.mark.parametrize("model", GOOGLE)
def test_safety_finish_streamed(gateway, model):
    chunks = list(gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a b c d [[mock:safety]]"}],
        stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text  # a few words came before the filter stopped it
    finish = finish_reasons(chunks)
    assert finish == ["content_filter"]


# ----------------------------------------------------------------- broken Bedrock streams

@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", BEDROCK)
def test_bedrock_mid_stream_throttling_exception(gateway, model):
    said = "one two three four five six seven eight [[mock:stream_exception=throttlingException]]"
    t0 = time.monotonic()
    text, exc, finish = collect(gateway.client(timeout=10).chat.completions.create(
        model=model, messages=[{"role": "user", "content": said}], stream=True,
        stream_options={"include_usage": True}))
    assert time.monotonic() - t0 < 8
    assert isinstance(exc, openai.APIError), f"stream ended as if complete: {text!r}"
    assert finish == []
    assert exc.code == "rate_limit_exceeded"
    assert exc.type == "rate_limit_error"
    assert text and text != reply(model, said) and reply(model, said).startswith(text)
    # On the wire: the text so far, then one error event; no finish, no
    # usage, no [DONE].
    r, events = raw_stream(gateway, gw.chat_body(said, model, stream=True,
                                                 stream_options={"include_usage": True}))
    assert r.status_code == 200
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last) == {"error"} and last["error"]["code"] == "rate_limit_exceeded"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(ch["choices"] and ch["choices"][0]["finish_reason"] is None for ch in chunks)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", BEDROCK)
def test_bedrock_bad_crc_is_an_error_event(gateway, model):
    said = "a b c d e f [[mock:badcrc]]"
    t0 = time.monotonic()
    r, events = raw_stream(gateway, gw.chat_body(said, model, stream=True))
    assert time.monotonic() - t0 < 8  # never a hang
    assert r.status_code == 200
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "upstream_invalid_response"
    assert "CRC" in last["error"]["message"]
    # The corrupt frame's text never reaches the client.
    assert all(not json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1])
    text, exc, finish = collect(gateway.client(timeout=10).chat.completions.create(
        model=model, messages=[{"role": "user", "content": said}], stream=True))
    assert isinstance(exc, openai.APIError) and exc.code == "upstream_invalid_response", exc
    assert text == "" and finish == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model,knob", [(GEMINI, "nodone"), (NOVA, "nodone"),
                                        (VERTEX, "cut=3"), (BR_CLAUDE, "cut=3")])
def test_incomplete_streams_never_end_clean(gateway, model, knob):
    """Gemini without its final finishReason, Bedrock without messageStop,
    or either connection cut: an error, never a clean end."""
    events, failed = [], None
    try:
        r, events = raw_stream(gateway, gw.chat_body(f"a b c [[mock:{knob}]]", model, stream=True))
    except httpx.HTTPError as e:
        failed = e
    assert "[DONE]" not in events
    assert failed is not None or json.loads(events[-1])["error"]["code"] == \
        "upstream_stream_incomplete", events[-2:]


# ================================================================= wrong provider credentials

@pytest.fixture(scope="module")
def bad_creds_gateway(mock, tmp_path_factory):
    """The shipped config with a wrong Gemini key and Vertex token in the
    SDS files and a wrong AWS secret access key in the VM environment."""
    g = gw.Gateway(tmp_path_factory.mktemp("gw-gvb-badcreds"), mock.port,
                   secrets_override={"gemini": WRONG_GEMINI_KEY,
                                     "vertex": "Bearer " + WRONG_VERTEX_TOKEN},
                   env={"BEDROCK_SECRET_ACCESS_KEY": WRONG_AWS_SECRET})
    yield g
    g.stop()


def no_credential_in(text: str) -> None:
    for key in (WRONG_GEMINI_KEY, WRONG_VERTEX_TOKEN, WRONG_AWS_SECRET, gw.GEMINI_KEY,
                gw.VERTEX_TOKEN, gw.AWS_SECRET_ACCESS_KEY):
        for pat in gw.key_fragment_patterns(key):
            assert not pat.search(text), pat.pattern
    for key in (WRONG_GEMINI_KEY, WRONG_VERTEX_TOKEN, WRONG_AWS_SECRET):
        assert key[-6:] not in text
    # Nothing of the providers' own answers either.
    for phrase in ("API key not valid", "API_KEY_INVALID", "invalid authentication credentials",
                   "signature we calculated", "Canonical String", "String-to-Sign",
                   "AKIDMOCKEXAMPLE", "security token"):
        assert phrase not in text, phrase


def assert_auth_failed(e: openai.APIStatusError, provider: str) -> None:
    assert e.status_code == 502
    assert e.code == "upstream_auth_failed" and e.type == "server_error"
    assert set(e.body) == {"message", "type", "param", "code"}
    assert "not a problem with your key" in e.message
    assert f"`{provider}`" in e.message
    no_credential_in(e.response.text + json.dumps(dict(e.response.headers)))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", [VERTEX, BR_CLAUDE, NOVA])
def test_wrong_credentials_are_502(bad_creds_gateway, mock, model, stream):
    token = gw.nonce("gvbbad")
    with pytest.raises(openai.InternalServerError) as ei:
        bad_creds_gateway.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": token}], stream=stream)
    assert_auth_failed(ei.value, MODELS[model][0])
    assert ei.value.response.headers["content-type"].startswith("application/json")
    # The provider did get the wrong credential (so the test means something).
    rec = mock.find_one(token)
    if model == VERTEX:
        assert rec["headers"]["authorization"] == "Bearer " + WRONG_VERTEX_TOKEN
    else:
        check_sigv4(rec, secret=WRONG_AWS_SECRET)
        with pytest.raises(AssertionError):
            check_sigv4(rec)


@pytest.mark.parametrize("stream", [False, True])
def test_wrong_gemini_key_is_502(bad_creds_gateway, mock, stream):
    token = gw.nonce("gvbbadgem")
    with pytest.raises(openai.APIStatusError) as ei:
        bad_creds_gateway.client().chat.completions.create(
            model=GEMINI, messages=[{"role": "user", "content": token}], stream=stream)
    assert mock.find_one(token)["headers"]["x-goog-api-key"] == WRONG_GEMINI_KEY
    assert_auth_failed(ei.value, "gemini")


@pytest.mark.parametrize("stream", [False, True])
def test_wrong_gemini_key_is_upstream_auth_failed_without_the_key(bad_creds_gateway, mock, stream):
    """The body for a wrong Gemini key: the gateway's own message, nothing of
    Google's (the status is checked above)."""
    token = gw.nonce("gvbbadgem2")
    with pytest.raises(openai.APIStatusError) as ei:
        bad_creds_gateway.client().chat.completions.create(
            model=GEMINI, messages=[{"role": "user", "content": token}], stream=stream)
    e = ei.value
    assert e.status_code == 502
    assert e.code == "upstream_auth_failed" and e.type == "server_error"
    assert "not a problem with your key" in e.message
    no_credential_in(e.response.text + json.dumps(dict(e.response.headers)))
    assert mock.find_one(token)["headers"]["x-goog-api-key"] == WRONG_GEMINI_KEY


@pytest.mark.parametrize("model,provider", [("vertex-text-embedding-005", "vertex"),
                                            ("bedrock-titan-embed-v2", "bedrock"),
                                            ("bedrock-cohere-embed", "bedrock")])
def test_wrong_credentials_on_embeddings(bad_creds_gateway, model, provider):
    with pytest.raises(openai.InternalServerError) as ei:
        bad_creds_gateway.client().embeddings.create(model=model, input="x")
    assert_auth_failed(ei.value, provider)


def test_wrong_aws_access_key_id_is_502(make_gateway, mock):
    g = make_gateway(env={"BEDROCK_ACCESS_KEY_ID": WRONG_AWS_ACCESS_KEY_ID})
    token = gw.nonce("gvbakid")
    with pytest.raises(openai.InternalServerError) as ei:
        g.client().chat.completions.create(model=NOVA,
                                           messages=[{"role": "user", "content": token}])
    assert_auth_failed(ei.value, "bedrock")
    rec = mock.find_one(token)
    check_sigv4(rec, akid=WRONG_AWS_ACCESS_KEY_ID)
    assert WRONG_AWS_ACCESS_KEY_ID not in ei.value.response.text


def test_bad_creds_gateway_logs_hold_no_credential(bad_creds_gateway):
    """This module's own check (test_zz_no_leaks greps the whole session):
    the Envoy logs of the gateway with wrong credentials hold none of them."""
    time.sleep(0.5)  # access log flush (0.2 s)
    logs = bad_creds_gateway.log_text() + bad_creds_gateway.access_log.read_text(errors="replace")
    assert "wasm log llm-gateway" in logs
    for key in (WRONG_GEMINI_KEY, WRONG_VERTEX_TOKEN, WRONG_AWS_SECRET):
        for pat in gw.key_fragment_patterns(key):
            assert not pat.search(logs), pat.pattern


# ================================================================= anthropic SDK front door

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
    """The anthropic SDK uses httpx2: record its responses in gw.RESPONSES
    as gw's transport does for httpx (test_zz_no_leaks greps them)."""

    def handle_request(self, request):
        resp = super().handle_request(request)
        rec = gw.Record(request.method, str(request.url), resp.status_code,
                        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.raw])
        with gw._LOCK:
            gw.RESPONSES.append(rec)
        return httpx2.Response(resp.status_code, headers=resp.headers,
                               stream=_TeeStream2(resp.stream, rec),
                               extensions=resp.extensions, request=request)


@pytest.fixture
def anthropic_client(gateway):
    http = httpx2.Client(transport=RecordingTransport2(), timeout=30)
    gateway._clients.append(http)
    return anthropic.Anthropic(base_url=gateway.url, api_key=gw.DEMO_KEY, max_retries=0,
                               http_client=http,
                               default_headers={"anthropic-version": "2023-06-01"})


FRONT_DOOR = [GEMINI, NOVA]


@pytest.mark.parametrize("model", FRONT_DOOR)
def test_messages_front_door_create(gateway, mock, anthropic_client, model):
    token = gw.nonce("gvbmsg")
    said = f"Hello there {token}"
    raw = anthropic_client.messages.with_raw_response.create(
        model=model, max_tokens=300, system="Be brief.",
        messages=[{"role": "user", "content": said}])
    assert raw.headers["x-llm-provider"] == MODELS[model][0]
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == reply(model, said)
    assert msg.stop_reason == "end_turn"
    rec = mock.find_one(token)
    body = check_upstream(rec, model)
    assert "x-api-key" not in rec["headers"]
    if model == NOVA:
        assert body == {"system": [{"text": "Be brief."}],
                        "messages": [{"role": "user", "content": [{"text": said}]}],
                        "inferenceConfig": {"maxTokens": 300}}
    else:
        assert body == {"systemInstruction": {"parts": [{"text": "Be brief."}]},
                        "contents": [{"role": "user", "parts": [{"text": said}]}],
                        "generationConfig": {"maxOutputTokens": 300}}
    prompt, completion = provider_usage(replay(mock, rec))
    assert msg.usage.input_tokens == prompt
    assert msg.usage.output_tokens == completion


@pytest.mark.parametrize("model", FRONT_DOOR)
def test_messages_front_door_stream(gateway, mock, anthropic_client, model):
    token = gw.nonce("gvbmsgstream")
    said = f"Stream it {token}"
    with anthropic_client.messages.stream(model=model, max_tokens=300,
                                          messages=[{"role": "user", "content": said}]) as s:
        names = [e.type for e in s if e.type != "text"]
        final = s.get_final_message()
    names = [n for n in names if n != "ping"]
    n_words = len(reply(model, said).split())
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * n_words + \
        ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].text == reply(model, said)
    assert final.stop_reason == "end_turn"
    rec = mock.find_one(token)
    check_upstream(rec, model, stream=True)
    prompt, completion = provider_usage(replay(mock, rec))
    assert final.usage.input_tokens == prompt
    assert final.usage.output_tokens == completion


# ================================================================= no credential anywhere

def test_credentials_never_in_responses_or_logs(gateway):
    """Every response this session saw so far and every Envoy log: none of
    the Gemini key, the Vertex token, the AWS secret or the wrong ones
    (test_zz_no_leaks repeats this for all keys at the very end)."""
    # Material of its own, in case it runs alone: one signed request.
    gateway.client().chat.completions.create(model=NOVA,
                                             messages=[{"role": "user", "content": "x"}])
    time.sleep(0.5)
    keys = [gw.GEMINI_KEY, gw.VERTEX_TOKEN, gw.AWS_SECRET_ACCESS_KEY,
            WRONG_GEMINI_KEY, WRONG_VERTEX_TOKEN, WRONG_AWS_SECRET]
    pats = [p for k in keys for p in gw.key_fragment_patterns(k)]
    texts = list(gw.iter_texts())
    assert any("x-llm-provider: bedrock" in t for _, t in texts)
    for where, text in texts:
        for p in pats:
            m = p.search(text)
            assert not m, f"{p.pattern} in {where}: {text[max(0, m.start() - 60):m.end() + 20]!r}"
