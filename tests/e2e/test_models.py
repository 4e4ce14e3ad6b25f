"""GET /v1/models and /v1/models/{id}: answered by the filter itself."""
import openai
import pytest

import gw

SHIPPED = gw.shipped_plugin_config()
KIND = {p["name"]: p["kind"] for p in SHIPPED["providers"]}

# What `make run` serves (the shipped default config), spelled out so that a
# change to the shipped model list is noticed here.
DEFAULT_MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    # Models with deployments: the first deployment's provider kind.
    ("gpt-4o-ha", "openai"),
    ("claude-sonnet-4-5-ha", "anthropic"),
    ("gpt-3.5-turbo-instruct", "openai"),
    ("text-embedding-3-small", "openai"),
    ("azure-gpt-4o-mini", "azure"),
    ("azure-text-embedding-3-small", "azure"),
    ("llama3.2", "openai_compatible"),
    ("nomic-embed-text", "openai_compatible"),
    ("qwen2.5-7b", "openai_compatible"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("gemini-2.5-flash", "gemini"),
    ("gemini-embedding-001", "gemini"),
    ("vertex-gemini-2.5-flash", "vertex"),
    ("vertex-text-embedding-005", "vertex"),
    ("bedrock-claude-sonnet-4-5", "bedrock"),
    ("bedrock-nova-lite", "bedrock"),
    ("bedrock-titan-embed-v2", "bedrock"),
    ("bedrock-cohere-embed", "bedrock"),
]


def test_list_is_exactly_the_shipped_models(gateway):
    page = gateway.client().models.list()
    got = [(m.id, m.owned_by) for m in page.data]
    assert got == [(m["name"], KIND[m.get("provider") or m["deployments"][0]["provider"]])
                   for m in SHIPPED["models"]]
    assert got == DEFAULT_MODELS
    for m in page.data:
        assert m.object == "model"
        assert isinstance(m.created, int) and m.created > 0


def test_list_raw_shape(gateway):
    with gateway.http() as c:
        r = c.get("/v1/models", headers=gw.auth())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    body = r.json()
    assert body["object"] == "list"
    assert {tuple(sorted(m)) for m in body["data"]} == {("created", "id", "object", "owned_by")}


@pytest.mark.parametrize("model,owner", [("gpt-4o", "openai"), ("azure-gpt-4o-mini", "azure"),
                                         ("qwen2.5-7b", "openai_compatible"),
                                         ("claude-haiku-4-5", "anthropic")])
def test_retrieve(gateway, model, owner):
    m = gateway.client().models.retrieve(model)
    assert (m.id, m.owned_by, m.object) == (model, owner, "model")


def test_retrieve_alias_answers_the_canonical_model(gateway):
    m = gateway.client().models.retrieve("gpt-4o-mini-2024-07-18")
    assert (m.id, m.owned_by) == ("gpt-4o-mini", "openai")
    m = gateway.client().models.retrieve("claude-sonnet-4-5-20250929")
    assert (m.id, m.owned_by) == ("claude-sonnet-4-5", "anthropic")


def test_head_models(gateway):
    with gateway.http() as c:
        r = c.head("/v1/models", headers=gw.auth())
    assert r.status_code == 200
    assert r.content == b""


def test_retrieve_unknown_is_404(gateway):
    with pytest.raises(openai.NotFoundError) as ei:
        gateway.client().models.retrieve("gpt-9-ultra")
    assert ei.value.status_code == 404
    assert ei.value.code == "model_not_found"
    with gateway.http() as c:
        r = c.get("/v1/models/gpt-9-ultra", headers=gw.auth())
    gw.assert_openai_error(r, 404, "model_not_found", "invalid_request_error", "model")


def test_models_need_a_key(gateway):
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-not-a-caller").models.list()
    with gateway.http() as c:
        r = c.get("/v1/models")
    gw.assert_openai_error(r, 401, "invalid_api_key")


def test_restricted_caller_sees_only_its_models(test_gateway, test_keys):
    c = test_gateway.client(test_keys["restricted"])
    assert [m.id for m in c.models.list().data] == ["llama3.2", "qwen2.5-7b"]
    assert c.models.retrieve("llama3.2").id == "llama3.2"
    with pytest.raises(openai.NotFoundError) as ei:
        c.models.retrieve("gpt-4o")
    assert ei.value.code == "model_not_found"
    # Same answer for a model that exists and one that does not.
    with test_gateway.http() as h:
        a = h.get("/v1/models/gpt-4o", headers=gw.auth(test_keys["restricted"]))
        b = h.get("/v1/models/no-such-model", headers=gw.auth(test_keys["restricted"]))
    ea = gw.assert_openai_error(a, 404, "model_not_found")
    eb = gw.assert_openai_error(b, 404, "model_not_found")
    assert ea["message"].replace("gpt-4o", "X") == eb["message"].replace("no-such-model", "X")


def test_unrestricted_test_caller_sees_all(test_gateway, test_keys, test_config):
    c = test_gateway.client(test_keys["alice"])
    assert [m.id for m in c.models.list().data] == [m["name"] for m in test_config["models"]]
