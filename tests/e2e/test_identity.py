"""Mesh identities (testdata/e2e/gateway.json): an `x-caller-id` header
trusted only from 127.0.0.2, `x-forwarded-client-cert` trusted only from
127.0.0.3; callers matched by `principals`."""
import json

import openai
import pytest

import gw

CHAT = "/v1/chat/completions"
TEAM_A = "spiffe://cluster.local/ns/team-a/sa/app"
TEAM_B = "spiffe://cluster.local/ns/team-b/sa/app"
NOBODY = "spiffe://cluster.local/ns/evil/sa/app"


def xfcc(uri: str) -> str:
    return (f'By=spiffe://cluster.local/ns/llm/sa/gateway;Hash=0123abcd;'
            f'Subject="CN=app,O=team";URI={uri}')


def no_key(**headers):
    """Per-call headers for a caller without a key: the SDK's Authorization
    header is omitted, the identity header added."""
    return {"Authorization": openai.Omit(), **headers}


def test_header_identity_from_trusted_address(test_gateway, mock):
    client = test_gateway.client("unused", local_address="127.0.0.2")
    h = no_key(**{"x-caller-id": TEAM_A})
    models = client.models.list(extra_headers=h)
    assert [m.id for m in models.data] == ["gpt-4o-mini", "llama3.2"]
    token = gw.nonce("mesh")
    comp = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": token}], extra_headers=h)
    assert comp.choices[0].message.content.endswith(token)
    up = mock.find_one(token)
    assert up["headers"]["authorization"] == "Bearer " + gw.OPENAI_KEY
    # Not one of its models: 404 like any unknown model.
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert ei.value.code == "model_not_found"


def test_header_identity_streams(test_gateway):
    client = test_gateway.client("unused", local_address="127.0.0.2")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hey"}], stream=True,
        extra_headers=no_key(**{"x-caller-id": TEAM_A})) if c.choices)
    assert text == "Hello from the mock ollama model llama3.2. You said: hey"


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.3"])
def test_header_identity_from_untrusted_address_is_401(test_gateway, source):
    with test_gateway.http(local_address=source) as c:
        r = c.post(CHAT, headers={"x-caller-id": TEAM_A}, json=gw.chat_body("x"))
    gw.assert_openai_error(r, 401, "invalid_api_key")
    client = test_gateway.client("unused", local_address=source)
    with pytest.raises(openai.AuthenticationError):
        client.models.list(extra_headers=no_key(**{"x-caller-id": TEAM_A}))


def test_xfcc_identity_from_trusted_proxy(test_gateway, mock):
    client = test_gateway.client("unused", local_address="127.0.0.3")
    h = no_key(**{"x-forwarded-client-cert": xfcc(TEAM_B)})
    assert [m.id for m in client.models.list(extra_headers=h).data] == ["llama3.2"]
    token = gw.nonce("xfcc")
    comp = client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": token}], extra_headers=h)
    assert comp.choices[0].message.content.endswith(token)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers=h)


def test_xfcc_uses_the_last_element(test_gateway):
    """With several proxies, the element the nearest one appended counts."""
    with test_gateway.http(local_address="127.0.0.3") as c:
        r = c.get("/v1/models", headers={
            "x-forwarded-client-cert": xfcc(TEAM_A) + "," + xfcc(TEAM_B)})
        assert r.status_code == 200
        assert [m["id"] for m in r.json()["data"]] == ["llama3.2"]
        r = c.get("/v1/models", headers={
            "x-forwarded-client-cert": xfcc(TEAM_B) + "," + xfcc(NOBODY)})
        gw.assert_openai_error(r, 401, "invalid_api_key")


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"])
def test_xfcc_from_untrusted_address_is_401(test_gateway, source):
    with test_gateway.http(local_address=source) as c:
        r = c.post(CHAT, headers={"x-forwarded-client-cert": xfcc(TEAM_B)},
                   json=gw.chat_body("x", "llama3.2"))
    gw.assert_openai_error(r, 401, "invalid_api_key")


@pytest.mark.parametrize("source,header,value", [
    ("127.0.0.2", "x-caller-id", NOBODY),
    ("127.0.0.3", "x-forwarded-client-cert", xfcc(NOBODY)),
    ("127.0.0.2", "x-caller-id", "spiffe://cluster.local/ns/team-b/sa/other"),
])
def test_principal_matching_no_caller_is_401(test_gateway, source, header, value):
    client = test_gateway.client("unused", local_address=source)
    with pytest.raises(openai.AuthenticationError) as ei:
        client.chat.completions.create(model="llama3.2",
                                       messages=[{"role": "user", "content": "x"}],
                                       extra_headers=no_key(**{header: value}))
    assert ei.value.status_code == 401 and ei.value.code == "invalid_api_key"


def test_key_takes_precedence_over_identity(test_gateway, test_keys):
    with test_gateway.http(local_address="127.0.0.2") as c:
        # A valid key: that caller, not the mesh one (gpt-4o is allowed for alice).
        r = c.post(CHAT, headers={**gw.auth(test_keys["alice"]), "x-caller-id": TEAM_A},
                   json=gw.chat_body("x", "gpt-4o"))
        assert r.status_code == 200
        # A wrong key is a 401 even with a trusted identity.
        r = c.post(CHAT, headers={**gw.auth("sk-wrong"), "x-caller-id": TEAM_A},
                   json=gw.chat_body("x", "llama3.2"))
        gw.assert_openai_error(r, 401, "invalid_api_key")


def test_identity_headers_not_forwarded_to_provider(test_gateway, mock):
    token = gw.nonce("idfwd")
    with test_gateway.http(local_address="127.0.0.2") as c:
        r = c.post(CHAT, headers={"x-caller-id": TEAM_A},
                   json=gw.chat_body(token, "llama3.2"))
    assert r.status_code == 200
    with test_gateway.http(local_address="127.0.0.3") as c:
        r = c.post(CHAT, headers={"x-forwarded-client-cert": xfcc(TEAM_B)},
                   json=gw.chat_body(token, "llama3.2"))
    assert r.status_code == 200
    sent = mock.find(token)
    assert len(sent) == 2
    for req in sent:
        assert "x-caller-id" not in req["headers"]
        assert "x-forwarded-client-cert" not in req["headers"]
        assert "spiffe://" not in json.dumps(req["headers"])


def test_xfcc_is_stripped_by_shipped_hcm(make_gateway, test_config):
    """With the shipped HCM (forward_client_cert_details unset = SANITIZE)
    Envoy removes x-forwarded-client-cert from plaintext connections before
    the filter runs, so an `xfcc` identity source can never match there. A
    deployment behind a trusted proxy needs forward_client_cert_details:
    ALWAYS_FORWARD_ONLY (or mTLS to the proxy and APPEND_FORWARD)."""
    g = make_gateway(plugin_config=test_config)
    with g.http(local_address="127.0.0.3") as c:
        r = c.get("/v1/models", headers={"x-forwarded-client-cert": xfcc(TEAM_B)})
    gw.assert_openai_error(r, 401, "invalid_api_key")
    # The header source is not affected.
    with g.http(local_address="127.0.0.2") as c:
        assert c.get("/v1/models", headers={"x-caller-id": TEAM_A}).status_code == 200
