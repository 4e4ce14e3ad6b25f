"""Streamed chat (SSE) through the gateway."""
import json
import time

import pytest

import gw

CHAT = gw.CHAT_MODELS
check_upstream = gw.check_upstream


def expected_reply(model: str, said: str) -> str:
    mock_provider, upstream = CHAT[model][1], CHAT[model][2]
    return f"Hello from the mock {mock_provider} model {upstream}. You said: {said}"


@pytest.mark.parametrize("model", list(CHAT))
def test_stream_with_usage(gateway, mock, model):
    token = gw.nonce("stream")
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": token}],
        stream=True, stream_options={"include_usage": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-llm-provider"] == CHAT[model][0]
    assert raw.headers["x-llm-model"] == CHAT[model][2]
    chunks = list(raw.parse())
    assert len(chunks) >= 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_reply(model, token)
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    u = usage[0].usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens > 0
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    body = check_upstream(mock.find_one(token), model)
    assert body["stream"] is True
    if CHAT[model][0] != "anthropic":
        assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "llama3.2", "claude-haiku-4-5"])
def test_stream_without_usage(gateway, model):
    token = gw.nonce("nousage")
    stream = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": token}], stream=True)
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        expected_reply(model, token)


def sse_events(data: bytes) -> list[str]:
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        lines = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def test_raw_stream_is_untouched_and_ends_with_done(gateway):
    """A complete stream passes byte for byte: one `[DONE]` at the end, no
    error event added, no content-length."""
    token = gw.nonce("raw")
    with gateway.http() as c:
        with c.stream("POST", "/v1/chat/completions", headers=gw.auth(),
                      json=gw.chat_body(token, "gpt-4o", stream=True,
                                        stream_options={"include_usage": True})) as r:
            assert r.status_code == 200
            assert "content-length" not in r.headers
            data = r.read()
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1
    for e in events[:-1]:
        obj = json.loads(e)
        assert "error" not in obj
        assert obj["object"] == "chat.completion.chunk"
        assert obj["model"] == "gpt-4o-2024-08-06"


def test_many_small_chunks_reassemble(gateway):
    token = gw.nonce("chunks")
    stream = gateway.client().chat.completions.create(
        model="qwen2.5-7b", messages=[{"role": "user", "content": f"{token} [[mock:chunks=40]]"}],
        stream=True)
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 40
    # (the mock pads short replies with filler to make 40 pieces)
    assert "".join(content).startswith(expected_reply("qwen2.5-7b", f"{token} [[mock:chunks=40]]"))


def test_stream_is_not_buffered(gateway):
    """Events reach the client as the provider sends them: with 300 ms between
    events, the first arrives long before the last."""
    token = gw.nonce("drip")
    t0 = time.monotonic()
    arrivals = []
    stream = gateway.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": token}], stream=True,
        extra_headers={"x-mock-behavior": "drip=300,chunks=4"})
    for c in stream:
        arrivals.append(time.monotonic() - t0)
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 1.0, arrivals
    assert arrivals[0] < 1.0, arrivals
