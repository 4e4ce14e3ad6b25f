"""Non-streamed chat on every chat model of the shipped default config, and
what the provider (the mock) received."""
import json

import pytest

import gw

CHAT = gw.CHAT_MODELS
check_upstream = gw.check_upstream


@pytest.mark.parametrize("model", list(CHAT))
def test_chat(gateway, mock, model):
    provider, mock_provider, upstream = CHAT[model][:3]
    token = gw.nonce("chat")
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": f"Hi {token}"}],
        temperature=0.2, max_tokens=100)
    assert raw.status_code == 200
    assert raw.headers["x-llm-provider"] == provider
    assert raw.headers["x-llm-model"] == upstream
    assert raw.headers.get("x-request-id")
    comp = raw.parse()
    assert comp.object == "chat.completion"
    assert len(comp.choices) == 1
    assert comp.choices[0].message.role == "assistant"
    assert comp.choices[0].message.content == \
        f"Hello from the mock {mock_provider} model {upstream}. You said: Hi {token}"
    assert comp.choices[0].finish_reason == "stop"
    assert comp.usage.total_tokens == comp.usage.prompt_tokens + comp.usage.completion_tokens > 0

    body = check_upstream(mock.find_one(token), model)
    if provider == "anthropic":
        # Translated to the Messages API: the system prompt moves out.
        assert body["system"] == "Be brief."
        assert body["messages"] == [{"role": "user", "content": f"Hi {token}"}]
    else:
        # Everything but the model went through unchanged.
        assert body["messages"][1]["content"] == f"Hi {token}"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 100


def test_default_model_when_model_missing(gateway, mock):
    """The shipped config has default_model gpt-4o-mini."""
    token = gw.nonce("default")
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json={"messages": [{"role": "user", "content": token}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-model"] == "gpt-4o-mini"
    body = check_upstream(mock.find_one(token), "gpt-4o-mini")
    assert body["model"] == "gpt-4o-mini"


def test_alias_goes_to_the_canonical_upstream(gateway, mock):
    token = gw.nonce("alias")
    comp = gateway.client().chat.completions.create(
        model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": token}])
    assert comp.choices[0].message.content.endswith(token)
    body = check_upstream(mock.find_one(token), "gpt-4o-mini")
    assert body["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("header,value", [("api-key", gw.DEMO_KEY), ("x-api-key", gw.DEMO_KEY),
                                          ("authorization", "bearer " + gw.DEMO_KEY)])
def test_key_in_other_headers(gateway, mock, header, value):
    token = gw.nonce("hdr")
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers={header: value},
                   json=gw.chat_body(token, "azure-gpt-4o-mini"))
    assert r.status_code == 200, r.text
    check_upstream(mock.find_one(token), "azure-gpt-4o-mini")


def test_body_bytes_kept_except_model(gateway, mock):
    """The model is replaced by a targeted edit: unusual but valid JSON
    (unicode escapes, spacing, key order, big numbers) reaches the provider
    byte for byte apart from the model value."""
    token = gw.nonce("bytes")
    raw = ('{ "messages" : [ {"role":"user","content":"' + token +
           ' caf\\u00e9 \\ud83d\\ude00"} ],\n  "model":"gpt-4o",  "seed": 12345678901234567 }')
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers={**gw.auth(), "content-type": "application/json"},
                   content=raw.encode())
    assert r.status_code == 200, r.text
    req = mock.find_one(token)
    assert req["body"] == raw.replace('"gpt-4o"', '"gpt-4o-2024-08-06"')
    assert r.json()["choices"][0]["message"]["content"].endswith("café 😀")


def test_response_is_the_providers(gateway, mock):
    """Non-streamed answers pass unchanged (apart from headers)."""
    token = gw.nonce("pass")
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body(token, "azure-gpt-4o-mini"))
    assert r.status_code == 200
    body = r.json()
    # Azure's content filter annotations come through untouched.
    assert "prompt_filter_results" in body
    assert "content_filter_results" in body["choices"][0]
    assert "content-length" not in r.headers or int(r.headers["content-length"]) == len(r.content)


def test_chunked_request_body(gateway, mock):
    """A body that arrives in many small chunks (no content-length) is
    assembled before the model is read, and reaches the provider intact."""
    token = gw.nonce("chunked")
    body = json.dumps(gw.chat_body(token + " " + "z" * 200_000, "gpt-4o")).encode()

    def gen():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers={**gw.auth(), "content-type": "application/json"},
                   content=gen())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 200, r.text[:300]
    up = mock.find_one(token)
    assert up["body"] == body.decode().replace('"gpt-4o"', '"gpt-4o-2024-08-06"')
    assert int(up["headers"]["content-length"]) == len(up["body"])
