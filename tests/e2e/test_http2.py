"""The same gateway over HTTP/2 (h2c with prior knowledge; the shipped
listener's codec is AUTO): bodies arrive as DATA frames, streams share one
connection."""
import json

import httpx
import pytest

import gw

pytest.importorskip("h2")

CHAT = "/v1/chat/completions"


@pytest.fixture
def h2(gateway):
    t = gw.RecordingTransport(http1=False, http2=True)
    with httpx.Client(base_url=gateway.url, transport=t, timeout=30) as c:
        yield c


def test_chat_over_h2(h2, mock):
    token = gw.nonce("h2")
    r = h2.post(CHAT, headers=gw.auth(), json=gw.chat_body(token, "gpt-4o"))
    assert r.http_version == "HTTP/2"
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].endswith(token)
    gw.check_upstream(mock.find_one(token), "gpt-4o")


def test_stream_over_h2(h2):
    token = gw.nonce("h2s")
    with h2.stream("POST", CHAT, headers=gw.auth(),
                   json=gw.chat_body(token, "qwen2.5-7b", stream=True)) as r:
        assert r.http_version == "HTTP/2" and r.status_code == 200
        data = [ln[5:].strip() for ln in r.iter_lines() if ln.startswith("data:")]
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or ""
                   for d in data[:-1] if json.loads(d)["choices"])
    assert text.endswith(token)


def test_local_replies_over_h2(h2):
    r = h2.get("/v1/models", headers=gw.auth())
    assert r.status_code == 200
    assert len(r.json()["data"]) == len(gw.shipped_plugin_config()["models"])
    r = h2.post(CHAT, json=gw.chat_body("x"))
    gw.assert_openai_error(r, 401, "invalid_api_key")
    r = h2.post(CHAT, headers=gw.auth(), content=b"{" * (9 * 1024 * 1024))
    gw.assert_openai_error(r, 413, "request_too_large")
    r = h2.post(CHAT, headers={**gw.auth(), "x-mock-behavior": "fail=503"}, json=gw.chat_body("x"))
    gw.assert_openai_error(r, 503)
    # The connection is still usable after all of that.
    r = h2.post(CHAT, headers=gw.auth(), json=gw.chat_body("again"))
    assert r.status_code == 200


def test_many_streams_on_one_h2_connection(gateway):
    import asyncio

    async def main():
        t = gw.AsyncRecordingTransport(http1=False, http2=True)
        async with httpx.AsyncClient(base_url=gateway.url, transport=t, timeout=30) as c:
            tokens = [gw.nonce(f"h2m{i}") for i in range(12)]
            rs = await asyncio.gather(*(
                c.post(CHAT, headers={**gw.auth(), "x-mock-behavior": "stall=100"},
                       json=gw.chat_body(tok, ["gpt-4o-mini", "llama3.2", "azure-gpt-4o-mini"][i % 3]))
                for i, tok in enumerate(tokens)))
            return tokens, rs

    tokens, rs = asyncio.run(main())
    for tok, r in zip(tokens, rs):
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"].endswith(tok)
