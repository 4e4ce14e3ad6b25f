"""The official `openai` SDK talking to Claude models through the gateway:
`/v1/chat/completions` translated into Anthropic's Messages API
(filter/src/providers/anthropic.rs) and the answers translated back.

Extends the Claude cases of test_chat / test_streaming / test_tools /
test_provider_errors (which run the generic checks on every model) with what
is specific to the translation: the exact Messages body the provider got,
token counts equal to the provider's, parallel tool calls, thinking, JSON
mode through a forced tool, and Anthropic's failures (429, 529, 5xx, a
mid-stream `event: error`, a cut stream, a rejected provider key).

Token counts are compared with what the mock answers when the recorded
upstream request is replayed to it directly (`replay`), so they are the
provider's numbers, not the gateway's arithmetic.
"""
import json

import httpx
import openai
import pytest

import gw

HAIKU, HAIKU_UP = "claude-haiku-4-5", "claude-haiku-4-5-20251001"
SONNET = "claude-sonnet-4-5"
SONNET_ALIAS = "claude-sonnet-4-5-20250929"

# A 1x1 PNG.
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
           "60e6kgAAAABJRU5ErkJggg==")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"},
                                  "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a time zone",
    "parameters": {"type": "object",
                   "properties": {"tz": {"type": "string"},
                                  "fmt": {"type": "string", "enum": ["iso", "unix"]}},
                   "required": ["tz", "fmt"]}}}


def reply(upstream: str, said: str) -> str:
    return f"Hello from the mock anthropic model {upstream}. You said: {said}"


def max_output_tokens(model: str) -> int:
    return next(m for m in gw.shipped_plugin_config()["models"]
                if m["name"] == model)["max_output_tokens"]


def anthropic_tool(t: dict) -> dict:
    f = t["function"]
    return {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}


def replay(mock, rec: dict) -> dict:
    """Send a recorded upstream request straight to the mock (not streamed)
    and return its JSON answer: the provider's own numbers for that body.
    Not a recording client: the headers carry the provider key."""
    body = json.loads(rec["body"])
    body.pop("stream", None)
    body.pop("stream_options", None)
    headers = {k: v for k, v in rec["headers"].items()
               if k in ("x-api-key", "authorization", "api-key", "anthropic-version")}
    url = mock.url + rec["path"] + (f"?{rec['query']}" if rec["query"] else "")
    with httpx.Client(timeout=10) as c:
        r = c.post(url, headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def sse_data(data: bytes) -> list[str]:
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        lines = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


# ----------------------------------------------------------------- plain chat

@pytest.mark.parametrize("model,canonical,upstream", [
    (HAIKU, HAIKU, HAIKU_UP),          # upstream_model differs from the name
    (SONNET_ALIAS, SONNET, SONNET),    # an alias goes to the canonical model
])
def test_chat_is_translated_to_messages(gateway, mock, model, canonical, upstream):
    token = gw.nonce("antchat")
    said = f"Hi there {token}"
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": said}])
    assert raw.status_code == 200
    assert raw.headers["x-llm-provider"] == "anthropic"
    assert raw.headers["x-llm-provider-kind"] == "anthropic"
    assert raw.headers["x-llm-model"] == upstream
    # Anthropic's own request id is kept next to Envoy's.
    assert raw.headers["x-llm-upstream-request-id"].startswith("req_")
    assert raw.headers["x-llm-upstream-request-id"] == raw.headers["request-id"]
    assert raw.headers["x-request-id"] != raw.headers["request-id"]
    comp = raw.parse()
    assert comp.object == "chat.completion"
    assert comp.id.startswith("chatcmpl-msg_")
    assert comp.model == upstream
    assert comp.created > 1_600_000_000
    assert len(comp.choices) == 1
    msg = comp.choices[0].message
    assert msg.role == "assistant"
    assert msg.content == reply(upstream, said)
    assert msg.tool_calls is None
    assert comp.choices[0].finish_reason == "stop"

    rec = mock.find_one(token)
    # check_upstream: POST /v1/messages on api.anthropic.com, only
    # `x-api-key: sk-ant-mock` as credential, anthropic-version 2023-06-01,
    # nothing of the caller's key, model renamed.
    body = gw.check_upstream(rec, canonical)
    assert "authorization" not in rec["headers"]
    # No max_tokens from the client: the model's max_output_tokens.
    assert body == {"model": upstream, "messages": [{"role": "user", "content": said}],
                    "max_tokens": max_output_tokens(canonical)}

    direct = replay(mock, rec)
    assert comp.usage.prompt_tokens == direct["usage"]["input_tokens"]
    assert comp.usage.completion_tokens == direct["usage"]["output_tokens"]
    assert comp.usage.total_tokens == comp.usage.prompt_tokens + comp.usage.completion_tokens
    assert comp.usage.prompt_tokens_details.cached_tokens == 0


def test_max_completion_tokens_becomes_max_tokens(gateway, mock):
    token = gw.nonce("antmax")
    comp = gateway.client().chat.completions.create(
        model=HAIKU, messages=[{"role": "user", "content": token}], max_completion_tokens=5)
    assert comp.choices[0].finish_reason == "length"
    assert reply(HAIKU_UP, token).startswith(comp.choices[0].message.content)
    assert comp.usage.completion_tokens <= 5
    body = gw.check_upstream(mock.find_one(token), HAIKU)
    assert body["max_tokens"] == 5
    assert "max_completion_tokens" not in body


# ----------------------------------------------------------------- streaming

def test_stream_with_usage_has_the_providers_counts(gateway, mock):
    token = gw.nonce("antstream")
    said = f"stream for me {token}"
    chunks = list(gateway.client().chat.completions.create(
        model=HAIKU, messages=[{"role": "user", "content": said}],
        stream=True, stream_options={"include_usage": True}))
    # The role comes first, once.
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c for c in chunks if c.choices and c.choices[0].delta.role] == [chunks[0]]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-msg_")
    assert {c.model for c in chunks} == {HAIKU_UP}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply(HAIKU_UP, said)
    # One content chunk per word, as Anthropic's text_delta events came.
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == \
        len(reply(HAIKU_UP, said).split())
    finish = [(i, c.choices[0].finish_reason) for i, c in enumerate(chunks)
              if c.choices and c.choices[0].finish_reason]
    assert finish == [(len(chunks) - 2, "stop")]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])

    rec = mock.find_one(token)
    body = gw.check_upstream(rec, HAIKU)
    assert body["stream"] is True
    assert "stream_options" not in body  # Anthropic has no such parameter
    direct = replay(mock, rec)
    assert last.usage.prompt_tokens == direct["usage"]["input_tokens"]
    assert last.usage.completion_tokens == direct["usage"]["output_tokens"]
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_stream_without_usage_on_the_wire(gateway, mock):
    """`include_usage: false`: no usage chunk; every event is a chunk and the
    stream ends with exactly one [DONE]."""
    token = gw.nonce("antnousage")
    with gateway.http() as c:
        with c.stream("POST", "/v1/chat/completions", headers=gw.auth(),
                      json=gw.chat_body(token, SONNET, stream=True,
                                        stream_options={"include_usage": False})) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-llm-provider"] == "anthropic"
            data = r.read()
    events = sse_data(data)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert all(ch.get("usage") is None for ch in chunks)
    assert all(len(ch["choices"]) == 1 for ch in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks) == \
        reply(SONNET, token)
    assert gw.check_upstream(mock.find_one(token), SONNET)["stream"] is True


# ----------------------------------------------------------------- tools

def test_parallel_tool_calls_round_trip(gateway, mock):
    client = gateway.client()
    token = gw.nonce("anttools")
    messages = [{"role": "user", "content": f"Weather and time in Oslo? {token}"}]
    first = client.chat.completions.create(model=SONNET, messages=messages,
                                           tools=[WEATHER, CLOCK])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    # The mock calls every tool once (Anthropic's parallel tool use).
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert all(c.type == "function" and c.id.startswith("toolu_") for c in calls)
    assert len({c.id for c in calls}) == 2
    assert json.loads(calls[0].function.arguments) == {"city": "mock"}
    assert json.loads(calls[1].function.arguments) == {"tz": "mock", "fmt": "iso"}

    up1 = json.loads(mock.find_one(token)["body"])
    assert up1["tools"] == [anthropic_tool(WEATHER), anthropic_tool(CLOCK)]
    assert "tool_choice" not in up1

    messages.append(choice.message.model_dump(exclude_none=True))
    for c in calls:
        messages.append({"role": "tool", "tool_call_id": c.id,
                         "content": f"{c.function.name}-result-{token}"})
    second = client.chat.completions.create(model=SONNET, messages=messages,
                                            tools=[WEATHER, CLOCK])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == \
        f"Tool result received: get_weather-result-{token} get_time-result-{token}"

    sent = [json.loads(r["body"]) for r in mock.find(token)]
    assert len(sent) == 2
    turns = sent[1]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    # tool_calls -> tool_use blocks (arguments parsed into `input`) ...
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": c.id, "name": c.function.name,
         "input": json.loads(c.function.arguments)} for c in calls]
    # ... and both tool messages -> tool_result blocks of one user turn.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": c.id,
         "content": f"{c.function.name}-result-{token}"} for c in calls]


def test_named_tool_choice_and_no_parallel_calls(gateway, mock):
    token = gw.nonce("antchoice")
    comp = gateway.client().chat.completions.create(
        model=HAIKU, messages=[{"role": "user", "content": token}], tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False)
    calls = comp.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    body = json.loads(mock.find_one(token)["body"])
    assert body["tool_choice"] == {"type": "tool", "name": "get_time",
                                   "disable_parallel_tool_use": True}


def collect_tool_stream(stream):
    """(calls by index {index: [id, name, args]}, text, finish, chunks)."""
    calls, text, finish, chunks = {}, "", None, []
    for chunk in stream:
        chunks.append(chunk)
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        text += d.content or ""
        for tc in d.tool_calls or []:
            slot = calls.setdefault(tc.index, [None, "", ""])
            if tc.id:
                assert slot[0] is None, "a tool call id was sent twice"
                slot[0] = tc.id
            if tc.function:
                slot[1] += tc.function.name or ""
                slot[2] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return calls, text, finish, chunks


def test_parallel_tool_calls_streamed_round_trip(gateway, mock):
    client = gateway.client()
    token = gw.nonce("anttoolstream")
    messages = [{"role": "user", "content": f"Weather and time? {token}"}]
    calls, text, finish, chunks = collect_tool_stream(client.chat.completions.create(
        model=HAIKU, messages=messages, tools=[WEATHER, CLOCK], stream=True,
        stream_options={"include_usage": True}))
    assert finish == "tool_calls"
    assert text == ""
    assert sorted(calls) == [0, 1]
    assert [calls[i][1] for i in (0, 1)] == ["get_weather", "get_time"]
    assert all(calls[i][0].startswith("toolu_") for i in (0, 1))
    args = [json.loads(calls[i][2]) for i in (0, 1)]
    assert args == [{"city": "mock"}, {"tz": "mock", "fmt": "iso"}]
    # The arguments came in several fragments (Anthropic's input_json_delta).
    n_frag = sum(1 for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])
                 if tc.function and tc.function.arguments)
    assert n_frag > 2
    rec = mock.find_one(token)
    direct = replay(mock, rec)
    assert chunks[-1].usage.completion_tokens == direct["usage"]["output_tokens"]
    assert chunks[-1].usage.prompt_tokens == direct["usage"]["input_tokens"]

    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[i][0], "type": "function",
         "function": {"name": calls[i][1], "arguments": calls[i][2]}} for i in (0, 1)]})
    for i in (0, 1):
        messages.append({"role": "tool", "tool_call_id": calls[i][0], "content": f"r{i}-{token}"})
    _, text2, finish2, _ = collect_tool_stream(client.chat.completions.create(
        model=HAIKU, messages=messages, tools=[WEATHER, CLOCK], stream=True))
    assert finish2 == "stop"
    assert text2 == f"Tool result received: r0-{token} r1-{token}"

    second = [json.loads(r["body"]) for r in mock.find(token)
              if json.loads(r["body"])["messages"][-1]["role"] == "user"
              and isinstance(json.loads(r["body"])["messages"][-1]["content"], list)]
    assert len(second) == 1
    turns = second[0]["messages"]
    assert [b["type"] for b in turns[1]["content"]] == ["tool_use", "tool_use"]
    assert [b["id"] for b in turns[1]["content"]] == [calls[0][0], calls[1][0]]
    assert [b["input"] for b in turns[1]["content"]] == args
    assert [(b["type"], b["tool_use_id"]) for b in turns[2]["content"]] == \
        [("tool_result", calls[0][0]), ("tool_result", calls[1][0])]


# ----------------------------------------------------------------- content

def test_system_developer_and_images(gateway, mock):
    """System and developer messages, wherever they are, become top-level
    `system` text blocks in their order; a data-URL image becomes a base64
    image block, an https one a url block."""
    token = gw.nonce("antsys")
    client = gateway.client()
    comp = client.chat.completions.create(model=SONNET, messages=[
        {"role": "system", "content": f"System first {token}."},
        {"role": "user", "content": [
            {"type": "text", "text": f"Describe these {token}"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]},
        {"role": "developer", "content": [{"type": "text", "text": "Developer second."}]},
    ])
    assert comp.choices[0].message.content == reply(SONNET, f"Describe these {token}") + \
        " [2 images]"
    body = gw.check_upstream(mock.find_one(token), SONNET)
    assert body["system"] == [{"type": "text", "text": f"System first {token}."},
                              {"type": "text", "text": "Developer second."}]
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": f"Describe these {token}"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]}]
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


def test_unsupported_content_part_is_a_400(gateway, mock):
    token = gw.nonce("antaudio")
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(model=HAIKU, messages=[
            {"role": "user", "content": [
                {"type": "text", "text": token},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert ei.value.param == "messages[0].content[1]"
    assert "input_audio" in ei.value.message
    assert mock.find(token, wait=0.3) == []


# ----------------------------------------------------------------- JSON mode

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                   "capital": {"type": "boolean"}, "nickname": {"type": "string"}},
    "required": ["city", "population", "capital"],
}


def test_json_schema_through_a_forced_tool(gateway, mock):
    token = gw.nonce("antjson")
    comp = gateway.client().chat.completions.create(
        model=HAIKU, messages=[{"role": "user", "content": f"A city. {token}"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city_info", "schema": SCHEMA}})
    choice = comp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    value = json.loads(choice.message.content)
    assert set(SCHEMA["required"]) <= set(value) <= set(SCHEMA["properties"])
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert value["capital"] is True
    body = json.loads(mock.find_one(token)["body"])
    assert [t["name"] for t in body["tools"]] == ["city_info"]
    assert body["tools"][0]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "city_info"}
    assert "response_format" not in body


def test_json_schema_streamed(gateway, mock):
    token = gw.nonce("antjsonstream")
    calls, text, finish, chunks = collect_tool_stream(gateway.client().chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": f"A city. {token}"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city_info", "schema": SCHEMA}},
        stream=True))
    # The forced tool's input arrives as content, never as a tool call.
    assert calls == {}
    assert finish == "stop"
    assert set(SCHEMA["required"]) <= set(json.loads(text)) <= set(SCHEMA["properties"])
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert json.loads(mock.find_one(token)["body"])["tool_choice"] == \
        {"type": "tool", "name": "city_info"}


# ----------------------------------------------------------------- thinking

def test_reasoning_effort_turns_on_thinking(gateway, mock):
    token = gw.nonce("antthink")
    said = f"Think about it {token}"
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=HAIKU, messages=[{"role": "user", "content": said}], reasoning_effort="low")
    # The SDK's types do not declare the extension fields: read the JSON.
    msg = json.loads(raw.text)["choices"][0]["message"]
    assert msg["content"] == reply(HAIKU_UP, said)
    assert msg["reasoning_content"] == f"Mock reasoning about: {said}"
    [block] = msg["thinking_blocks"]
    assert block["type"] == "thinking"
    assert block["thinking"] == msg["reasoning_content"]
    assert len(block["signature"]) > 20
    body = gw.check_upstream(mock.find_one(token), HAIKU)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == max_output_tokens(HAIKU)
    assert "reasoning_effort" not in body and "temperature" not in body


def test_reasoning_streamed_before_the_answer(gateway, mock):
    """`reasoning_effort: medium` with a small max_completion_tokens: the
    budget (8192) does not fit, so max_tokens becomes budget + requested."""
    token = gw.nonce("antthinkstream")
    said = f"Ponder {token}"
    with gateway.http() as c:
        with c.stream("POST", "/v1/chat/completions", headers=gw.auth(),
                      json=gw.chat_body(said, HAIKU, stream=True, reasoning_effort="medium",
                                        max_completion_tokens=500)) as r:
            assert r.status_code == 200
            data = r.read()
    events = sse_data(data)
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    kinds = [("r" if d.get("reasoning_content") else "c" if d.get("content") else "-")
             for d in deltas]
    # All reasoning before any answer text.
    assert "r" in kinds and "c" in kinds
    assert kinds.index("c") > max(i for i, k in enumerate(kinds) if k == "r")
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == \
        f"Mock reasoning about: {said}"
    assert "".join(d.get("content") or "" for d in deltas) == reply(HAIKU_UP, said)
    sigs = [b["signature"] for d in deltas for b in d.get("thinking_blocks") or []]
    assert len(sigs) == 1 and sigs[0]
    body = gw.check_upstream(mock.find_one(token), HAIKU)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 8192 + 500


def test_thinking_blocks_sent_back_with_tool_results(gateway, mock):
    """With thinking on, Anthropic wants the tool-use turn sent back to start
    with its thinking block: the `thinking_blocks` of the answer do that."""
    client = gateway.client()
    token = gw.nonce("antthinktool")
    messages = [{"role": "user", "content": f"Weather in Bergen? {token}"}]
    first = client.chat.completions.with_raw_response.create(
        model=HAIKU, messages=messages, tools=[WEATHER], reasoning_effort="low")
    msg = json.loads(first.text)["choices"][0]["message"]
    assert msg["tool_calls"][0]["function"]["name"] == "get_weather"
    assert msg["thinking_blocks"][0]["signature"]
    messages.append(msg)
    messages.append({"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"],
                     "content": f"rainy {token}"})
    second = client.chat.completions.with_raw_response.create(
        model=HAIKU, messages=messages, tools=[WEATHER], reasoning_effort="low")
    msg2 = json.loads(second.text)["choices"][0]["message"]
    assert msg2["content"] == f"Tool result received: rainy {token}"
    sent = [json.loads(r["body"]) for r in mock.find(token)]
    assert len(sent) == 2
    assistant = sent[1]["messages"][1]
    assert assistant["content"][0] == msg["thinking_blocks"][0]
    assert assistant["content"][1]["type"] == "tool_use"
    assert assistant["content"][1]["id"] == msg["tool_calls"][0]["id"]


def test_thinking_rejects_a_forced_tool_and_temperature(gateway, mock):
    token = gw.nonce("antthinkbad")
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": token}],
                                       reasoning_effort="high", temperature=0.3)
    assert (ei.value.param, ei.value.code) == ("temperature", "unsupported_value")
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": token}],
                                       reasoning_effort="low", tools=[WEATHER],
                                       tool_choice="required")
    assert (ei.value.param, ei.value.code) == ("tool_choice", "unsupported_value")
    assert mock.find(token, wait=0.3) == []


# ----------------------------------------------------------------- parameters

def test_stop_becomes_stop_sequences(gateway, mock):
    token = gw.nonce("antstop")
    said = f"one two STOPHERE three {token}"
    client = gateway.client()
    comp = client.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": said}],
                                          stop=["STOPHERE", "never-seen"])
    assert comp.choices[0].finish_reason == "stop"
    assert comp.choices[0].message.content == reply(HAIKU_UP, "one two ")
    body = json.loads(mock.find_one(token)["body"])
    assert body["stop_sequences"] == ["STOPHERE", "never-seen"]
    assert "stop" not in body
    # A single string is a list of one.
    token2 = gw.nonce("antstop1")
    client.chat.completions.create(model=HAIKU, stop="STOPHERE",
                                   messages=[{"role": "user", "content": f"a STOPHERE {token2}"}])
    assert json.loads(mock.find_one(token2)["body"])["stop_sequences"] == ["STOPHERE"]


def test_user_and_top_k(gateway, mock):
    token = gw.nonce("antuser")
    gateway.client().chat.completions.create(
        model=HAIKU, messages=[{"role": "user", "content": token}], user="user-42",
        temperature=0.5, extra_body={"top_k": 7})
    body = json.loads(mock.find_one(token)["body"])
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["temperature"] == 0.5 and body["top_k"] == 7
    assert "user" not in body


@pytest.mark.parametrize("param,value", [("n", 2), ("seed", 7), ("logprobs", True),
                                         ("presence_penalty", 0.5)])
def test_unsupported_parameters_are_400_and_not_sent(gateway, mock, param, value):
    token = gw.nonce("antunsup")
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(token, SONNET, **{param: value}))
    err = gw.assert_openai_error(r, 400, "unsupported_parameter", "invalid_request_error", param)
    assert "drop_unsupported_params" in err["message"]
    assert mock.find(token, wait=0.3) == []


def test_neutral_values_of_unsupported_parameters_pass(gateway, mock):
    token = gw.nonce("antneutral")
    comp = gateway.client().chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": token}], n=1, presence_penalty=0,
        logprobs=False)
    assert comp.choices[0].message.content == reply(SONNET, token)
    body = json.loads(mock.find_one(token)["body"])
    assert not {"n", "presence_penalty", "logprobs"} & set(body)


def test_prompt_caching_usage(gateway, mock):
    """`cache_control` on a system part is passed on; Anthropic's cache
    writes and reads come back as prompt_tokens_details (prompt_tokens =
    input + cache reads + cache writes = the whole prompt)."""
    token = gw.nonce("antcache")
    prefix = "The reference manual says: " + "lorem ipsum dolor sit amet " * 40 + token
    client = gateway.client()

    def ask(question, stream=False):
        msgs = [{"role": "system", "content": [
                    {"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": f"{question} {token}"}]
        if stream:
            chunks = list(client.chat.completions.create(
                model=HAIKU, messages=msgs, stream=True, stream_options={"include_usage": True}))
            return chunks[-1].usage.model_dump()
        raw = client.chat.completions.with_raw_response.create(model=HAIKU, messages=msgs)
        return json.loads(raw.text)["usage"]

    first = ask("first question")
    recs = mock.find(token)
    assert len(recs) == 1
    body = json.loads(recs[0]["body"])
    assert body["system"] == [{"type": "text", "text": prefix,
                               "cache_control": {"type": "ephemeral"}}]
    with httpx.Client(timeout=10) as c:  # the provider's own count of the whole prompt
        total = c.post(mock.url + "/v1/messages/count_tokens",
                       headers={"x-api-key": gw.ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
                       json={k: body[k] for k in ("model", "system", "messages")}).json()
    written = first["prompt_tokens_details"]["cache_creation_tokens"]
    assert written > 100
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    assert first["prompt_tokens"] == total["input_tokens"]

    second = ask("first question")  # same prompt: the prefix is read
    assert second["prompt_tokens_details"] == {"cached_tokens": written,
                                               "cache_creation_tokens": 0}
    assert second["prompt_tokens"] == total["input_tokens"]
    streamed = ask("first question", stream=True)
    assert streamed["prompt_tokens_details"]["cached_tokens"] == written
    assert streamed["prompt_tokens"] == total["input_tokens"]


# ----------------------------------------------------------------- provider errors

def test_rate_limit_keeps_retry_after(gateway, mock):
    token = gw.nonce("ant429")
    with pytest.raises(openai.RateLimitError) as ei:
        gateway.client().chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": f"{token} [[mock:throttle=5]]"}])
    e = ei.value
    assert e.status_code == 429
    assert e.response.headers["retry-after"] == "5"
    assert e.response.headers["x-llm-provider"] == "anthropic"
    assert e.type == "rate_limit_error" and e.code == "rate_limit_exceeded"
    assert set(e.body) == {"message", "type", "param", "code"}
    assert "rate limit" in e.message
    assert len(mock.find(token)) == 1


def test_rate_limit_on_a_stream_request_is_json(gateway):
    with pytest.raises(openai.RateLimitError) as ei:
        gateway.client().chat.completions.create(
            model=HAIKU, messages=[{"role": "user", "content": "x [[mock:throttle=2]]"}],
            stream=True)
    r = ei.value.response
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["retry-after"] == "2"


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_529_is_503(gateway, stream):
    with pytest.raises(openai.InternalServerError) as ei:
        gateway.client().chat.completions.create(
            model=HAIKU, messages=[{"role": "user", "content": "x [[mock:fail=529]]"}],
            stream=stream)
    e = ei.value
    assert e.status_code == 503
    assert e.code == "upstream_overloaded" and e.type == "server_error"
    assert e.body["message"] == "Overloaded"
    assert e.response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("stream", [False, True])
def test_internal_error_500(gateway, stream):
    with pytest.raises(openai.InternalServerError) as ei:
        gateway.client().chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": "x [[mock:fail=500]]"}],
            stream=stream)
    e = ei.value
    assert e.status_code == 500
    assert e.type == "server_error"
    assert set(e.body) == {"message", "type", "param", "code"}


@pytest.mark.timeout(30)
def test_mid_stream_error_event_raises(gateway):
    """Anthropic's `event: error` half way through the stream: the SDK gets
    the text so far, then raises with the provider's error."""
    said = "one two three four five six seven eight [[mock:sse_error]]"
    stream = gateway.client(timeout=10).chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": said}], stream=True)
    text, exc = "", None
    try:
        for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
                assert c.choices[0].finish_reason is None, "finished despite the error"
    except openai.APIError as e:
        exc = e
    assert exc is not None, f"stream ended as if complete: {text!r}"
    assert exc.code == "upstream_overloaded"
    assert exc.message == "Overloaded"
    assert text and text != reply(SONNET, said) and reply(SONNET, said).startswith(text)


@pytest.mark.timeout(30)
def test_mid_stream_error_event_on_the_wire(gateway):
    with gateway.http() as c:
        with c.stream("POST", "/v1/chat/completions", headers=gw.auth(),
                      json=gw.chat_body("a b c d e f g [[mock:sse_error]]", HAIKU, stream=True,
                                        stream_options={"include_usage": True})) as r:
            assert r.status_code == 200
            data = r.read()
    events = sse_data(data)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last == {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                              "code": "upstream_overloaded"}}
    # No usage chunk and no finish: the answer is incomplete.
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(ch["choices"] and ch["choices"][0]["finish_reason"] is None for ch in chunks)


@pytest.mark.timeout(30)
def test_cut_stream_never_ends_clean(gateway):
    events, failed = [], None
    try:
        with gateway.http(timeout=10) as c:
            with c.stream("POST", "/v1/chat/completions", headers=gw.auth(),
                          json=gw.chat_body("x [[mock:cut=5]]", SONNET, stream=True)) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        events.append(line[5:].strip())
    except httpx.HTTPError as e:
        failed = e
    assert "[DONE]" not in events
    assert failed is not None or "upstream_stream_incomplete" in events[-1], events
    # What did arrive is the start of the answer, translated.
    first = json.loads(events[0])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


# ----------------------------------------------------------------- wrong provider key

@pytest.fixture(scope="module")
def wrong_key_gateway(mock, tmp_path_factory):
    """The shipped config with a wrong Anthropic key in the SDS secret."""
    g = gw.Gateway(tmp_path_factory.mktemp("gw-antbadkey"), mock.port,
                   secrets_override={"anthropic": gw.WRONG_ANTHROPIC_KEY})
    yield g
    g.stop()


def no_key_fragment(text: str) -> None:
    for pat in gw.key_fragment_patterns(gw.WRONG_ANTHROPIC_KEY):
        assert not pat.search(text), pat.pattern
    assert gw.WRONG_ANTHROPIC_KEY[-6:] not in text
    assert "x-api-key" not in text


@pytest.mark.parametrize("stream", [False, True])
def test_wrong_provider_key_is_502(wrong_key_gateway, mock, stream):
    token = gw.nonce("antbadkey")
    with pytest.raises(openai.InternalServerError) as ei:
        wrong_key_gateway.client().chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": token}], stream=stream)
    e = ei.value
    assert e.status_code == 502
    assert e.code == "upstream_auth_failed" and e.type == "server_error"
    assert "not a problem with your key" in e.message
    # The mock got the wrong key (so the test means something) and said 401 ...
    rec = mock.find_one(token)
    assert rec["headers"]["x-api-key"] == gw.WRONG_ANTHROPIC_KEY
    # ... but nothing of that answer or of the key reaches the client.
    text = e.response.text + json.dumps(dict(e.response.headers))
    no_key_fragment(text)
    assert "invalid x-api-key" not in text
    assert "authentication_error" not in text
