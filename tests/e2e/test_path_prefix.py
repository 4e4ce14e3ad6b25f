"""A gateway serving under /llm/v1 (plugin `path_prefix`), with no
default model. The shipped route config works unchanged: routing is on the
cluster header only."""
import copy

import openai
import pytest

import gw


@pytest.fixture(scope="module")
def prefixed(mock, tmp_path_factory, test_config, test_keys):
    cfg = copy.deepcopy(test_config)
    cfg["path_prefix"] = "/llm/v1"
    del cfg["default_model"]
    g = gw.Gateway(tmp_path_factory.mktemp("gw-prefix"), mock.port, plugin_config=cfg)
    yield g
    g.stop()


@pytest.fixture
def client(prefixed, test_keys):
    return prefixed.client(test_keys["alice"], base_path="/llm/v1")


def test_serves_under_the_prefix(prefixed, client, mock, test_config):
    assert [m.id for m in client.models.list().data] == [m["name"] for m in test_config["models"]]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    token = gw.nonce("prefix")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": token}])
    assert raw.headers["x-llm-model"] == "gpt-4o-2024-08-06"
    assert raw.parse().choices[0].message.content.endswith(token)
    up = mock.find_one(token)
    # The provider's path does not depend on the gateway's prefix.
    assert up["path"] == "/v1/chat/completions"
    emb = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=16)
    assert len(emb.data[0].embedding) == 16
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="azure-gpt-4o", messages=[{"role": "user", "content": token}], stream=True)
        if c.choices)
    assert text.endswith(token)
    up = [r for r in mock.find(token) if r["provider"] == "azure"]
    assert up[0]["path"] == "/openai/deployments/gpt-4o/chat/completions"
    comp = client.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": token}])
    assert comp.choices[0].message.content.endswith(token)
    up = [r for r in mock.find(token) if r["provider"] == "anthropic"]
    assert up[0]["path"] == "/v1/messages"


@pytest.mark.parametrize("method,path", [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                         ("POST", "/llm/v1x/chat/completions"),
                                         ("POST", "/llm/chat/completions")])
def test_plain_v1_is_404(prefixed, test_keys, mock, method, path):
    token = gw.nonce("old")
    with prefixed.http() as c:
        r = c.request(method, path, headers=gw.auth(test_keys["alice"]),
                      json=gw.chat_body(token, "gpt-4o") if method == "POST" else None)
    gw.assert_openai_error(r, 404, "unknown_url", request_id=False)
    assert mock.find(token, wait=0.2) == []


def test_plain_v1_sdk_is_404(prefixed, test_keys):
    with pytest.raises(openai.NotFoundError):
        prefixed.client(test_keys["alice"]).models.list()


def test_unknown_path_under_prefix(prefixed, test_keys):
    with prefixed.http() as c:
        r = c.post("/llm/v1/responses", headers=gw.auth(test_keys["alice"]), json={})
    err = gw.assert_openai_error(r, 404, "unknown_url")
    assert "/llm/v1/responses" in err["message"]


def test_missing_model_without_default_is_400(client, prefixed, test_keys):
    with prefixed.http() as c:
        r = c.post("/llm/v1/chat/completions", headers=gw.auth(test_keys["alice"]),
                   json={"messages": [{"role": "user", "content": "hi"}]})
    gw.assert_openai_error(r, 400, "missing_required_parameter", "invalid_request_error", "model")
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model=openai.NOT_GIVEN, input="x")
    assert ei.value.param == "model"


def test_error_messages_name_the_prefix(prefixed, test_keys):
    with prefixed.http() as c:
        r = c.post("/llm/v1/embeddings", headers=gw.auth(test_keys["alice"]),
                   json={"model": "gpt-4o", "input": "x"})
    err = gw.assert_openai_error(r, 400, "model_not_supported")
    assert "/llm/v1/embeddings" in err["message"]
