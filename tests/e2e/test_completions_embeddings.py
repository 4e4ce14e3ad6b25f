"""Legacy completions and embeddings."""
import base64
import json
import math
import struct

import openai
import pytest

import gw


def test_legacy_completion(gateway, mock):
    token = gw.nonce("legacy")
    raw = gateway.client().completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt=f"Say hi {token}", max_tokens=50)
    assert raw.headers["x-llm-model"] == "gpt-3.5-turbo-instruct"
    comp = raw.parse()
    assert comp.object == "text_completion"
    assert token in comp.choices[0].text
    req = mock.find_one(token)
    assert (req["provider"], req["path"]) == ("openai", "/v1/completions")
    assert req["headers"]["authorization"] == "Bearer " + gw.OPENAI_KEY
    assert json.loads(req["body"])["model"] == "gpt-3.5-turbo-instruct"


def test_legacy_completion_streamed(gateway):
    token = gw.nonce("legacystream")
    text = "".join(c.choices[0].text for c in gateway.client().completions.create(
        model="gpt-3.5-turbo-instruct", prompt=f"Say hi {token}", stream=True) if c.choices)
    assert token in text


def test_legacy_completion_on_chat_model_is_400(gateway):
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().completions.create(model="gpt-4o", prompt="x")
    assert ei.value.code == "model_not_supported"
    assert ei.value.body["param"] == "model"


def decode(vec):
    if isinstance(vec, str):
        raw = base64.b64decode(vec)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return vec


@pytest.mark.parametrize("model,upstream_path,dims,expect_len", [
    ("text-embedding-3-small", "/v1/embeddings", 256, 256),
    ("azure-text-embedding-3-small",
     "/openai/deployments/text-embedding-3-small/embeddings", 512, 512),
    ("nomic-embed-text", "/ollama/v1/embeddings", None, None),
])
def test_embeddings(gateway, mock, model, upstream_path, dims, expect_len):
    token = gw.nonce("emb")
    kw = {"dimensions": dims} if dims else {}
    raw = gateway.client().embeddings.with_raw_response.create(
        model=model, input=f"hello {token}", **kw)
    assert raw.headers["x-llm-provider"] in ("openai", "azure", "ollama")
    res = raw.parse()
    assert len(res.data) == 1
    vec = res.data[0].embedding
    assert all(isinstance(x, float) and math.isfinite(x) for x in vec)
    if expect_len:
        assert len(vec) == expect_len
    else:
        assert len(vec) > 0
    req = mock.find_one(token)
    assert req["path"] == upstream_path
    body = json.loads(req["body"])
    # The SDK asks for base64 by default and decodes it; the gateway passes it through.
    assert body["encoding_format"] == "base64"
    if dims:
        assert body["dimensions"] == dims


def test_embeddings_float_raw(gateway):
    with gateway.http() as c:
        r = c.post("/v1/embeddings", headers=gw.auth(),
                   json={"model": "text-embedding-3-small", "input": "abc", "dimensions": 64,
                         "encoding_format": "float"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert isinstance(data[0]["embedding"], list) and len(data[0]["embedding"]) == 64


def test_embedding_batch_keeps_order(gateway):
    client = gateway.client()
    inputs = [f"item {i} {gw.nonce()}" for i in range(6)]
    batch = client.embeddings.create(model="text-embedding-3-small", input=inputs, dimensions=32)
    assert [d.index for d in batch.data] == list(range(6))
    singles = [client.embeddings.create(model="text-embedding-3-small", input=s,
                                        dimensions=32).data[0].embedding for s in inputs]
    for d, single in zip(batch.data, singles):
        assert d.embedding == pytest.approx(single)
    # The vectors differ between inputs (so the order check means something).
    assert len({tuple(v) for v in singles}) == 6


def test_embedding_model_on_chat_is_400(gateway):
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(
            model="text-embedding-3-small", messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 400
    assert ei.value.code == "model_not_supported"
    with gateway.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(),
                   json=gw.chat_body("hi", "nomic-embed-text"))
    gw.assert_openai_error(r, 400, "model_not_supported", "invalid_request_error", "model")


def test_chat_model_on_embeddings_is_400(gateway):
    with gateway.http() as c:
        r = c.post("/v1/embeddings", headers=gw.auth(), json={"model": "gpt-4o", "input": "x"})
    gw.assert_openai_error(r, 400, "model_not_supported", "invalid_request_error", "model")


@pytest.mark.timeout(60)
def test_max_size_embedding_batch(gateway, mock):
    inputs = [f"document number {i}" for i in range(2048)]
    try:
        res = gateway.client(timeout=50).embeddings.create(
            model="text-embedding-3-small", input=inputs)
        assert len(res.data) == 2048
        assert [d.index for d in res.data] == list(range(2048))
        assert all(len(d.embedding) == 1536 for d in res.data[:3])
    finally:
        mock.clear()
