"""x-request-id on every answer, and the same id at the provider and in
Envoy's access log.

What Envoy 1.40 does with the shipped HCM (generate_request_id: true,
use_remote_address unset = false, preserve_external_request_id unset): the
request is not an "edge" request (Envoy only treats requests as edge when it
uses the remote address), so a client-supplied x-request-id is KEPT; one is
generated only when the client sent none."""
import json
import re
import time
import uuid

import pytest

import gw

CHAT = "/v1/chat/completions"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def access_log(gateway, rid, wait=3.0):
    deadline = time.monotonic() + wait
    while True:
        lines = [json.loads(ln) for ln in gateway.access_log.read_text().splitlines()
                 if ln.startswith("{")]
        found = [ln for ln in lines if ln.get("request_id") == rid]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_generated_id_reaches_provider_and_log(gateway, mock):
    token = gw.nonce("rid")
    with gateway.http() as c:
        r = c.post(CHAT, headers=gw.auth(), json=gw.chat_body(token, "gpt-4o"))
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert UUID.match(rid), rid
    assert r.headers.get_list("x-request-id") == [rid]
    up = mock.find_one(token)
    assert up["headers"]["x-request-id"] == rid
    # The provider's own id is kept apart.
    assert r.headers["x-llm-upstream-request-id"].startswith("req_")
    log = access_log(gateway, rid)
    assert len(log) == 1
    assert (log[0]["status"], log[0]["cluster"], log[0]["method"]) == (200, "openai", "POST")


def test_client_id_is_kept(gateway, mock):
    token = gw.nonce("rid")
    rid = "abc"
    with gateway.http() as c:
        r = c.post(CHAT, headers={**gw.auth(), "x-request-id": rid},
                   json=gw.chat_body(token, "qwen2.5-7b"))
    assert r.status_code == 200
    assert r.headers.get_list("x-request-id") == [rid]
    assert mock.find_one(token)["headers"]["x-request-id"] == rid
    assert any(ln["cluster"] == "vllm" for ln in access_log(gateway, rid))


@pytest.mark.parametrize("name,do", [
    ("models", lambda c: c.get("/v1/models", headers=gw.auth())),
    ("model", lambda c: c.get("/v1/models/gpt-4o", headers=gw.auth())),
    ("401", lambda c: c.post(CHAT, json=gw.chat_body("x"))),
    ("404 model", lambda c: c.post(CHAT, headers=gw.auth(), json=gw.chat_body("x", "nope"))),
    ("404 url", lambda c: c.post("/v1/nope", headers=gw.auth())),
    ("405", lambda c: c.get(CHAT, headers=gw.auth())),
    ("400", lambda c: c.post(CHAT, headers=gw.auth(), content=b"{")),
    ("413", lambda c: c.post(CHAT, headers=gw.auth(), content=b"{" * (9 * 1024 * 1024))),
    ("415", lambda c: c.post(CHAT, headers={**gw.auth(), "content-type": "text/csv"}, content=b"a")),
    ("provider 500", lambda c: c.post(CHAT, headers={**gw.auth(), "x-mock-behavior": "fail=500"},
                                      json=gw.chat_body("x"))),
    ("provider 429", lambda c: c.post(CHAT, headers={**gw.auth(), "x-mock-behavior": "throttle=1"},
                                      json=gw.chat_body("x", "azure-gpt-4o-mini"))),
    ("stream", lambda c: c.post(CHAT, headers=gw.auth(), json=gw.chat_body("x", stream=True))),
])
def test_every_gateway_answer_has_an_id(gateway, name, do):
    with gateway.http() as c:
        r = do(c)
        assert r.status_code in (200, 400, 401, 404, 405, 413, 415, 429, 500), r.status_code
        rid = r.headers.get("x-request-id")
        assert rid and UUID.match(rid), (name, dict(r.headers))
        assert len(access_log(gateway, rid)) == 1
        # A client-chosen id comes back on the same kind of answer.
        mine = str(uuid.uuid4())
        r2 = do(httpx_with_id(c, mine))
        assert r2.headers.get_list("x-request-id") == [mine]


class httpx_with_id:
    """Wraps a client so every request carries a given x-request-id."""

    def __init__(self, c, rid):
        self.c, self.rid = c, rid

    def _h(self, kw):
        kw["headers"] = {**(kw.get("headers") or {}), "x-request-id": self.rid}
        return kw

    def get(self, url, **kw):
        return self.c.get(url, **self._h(kw))

    def post(self, url, **kw):
        return self.c.post(url, **self._h(kw))


@pytest.mark.parametrize("path", ["/", "/healthz", "/v2/chat/completions"])
def test_envoy_direct_response_has_an_id(gateway, path):
    with gateway.http() as c:
        r = c.post(path, headers=gw.auth(), json={})
    assert r.status_code == 404
    assert r.headers.get("x-request-id")


def test_envoy_local_reply_has_an_id(make_gateway):
    """503 from Envoy itself (provider unreachable) still carries the id."""
    g = make_gateway(mock_port=gw.free_port())
    with g.http() as c:
        r = c.post(CHAT, headers={**gw.auth(), "x-request-id": "dead-1"}, json=gw.chat_body("x"))
    assert r.status_code == 503
    assert r.headers.get_list("x-request-id") == ["dead-1"]
