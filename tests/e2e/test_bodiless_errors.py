"""Provider errors without a body (load balancers, API gateways and some
servers answer `401`/`503`/`429` with `content-length: 0`). The mock always
sends a body, so a minimal in-process upstream (gw.RawUpstream) stands in."""
import openai
import pytest

import gw

CHAT = "/v1/chat/completions"

@pytest.fixture(scope="module")
def raw_gateway(tmp_path_factory):
    raw = gw.RawUpstream()
    g = gw.Gateway(tmp_path_factory.mktemp("gw-raw"), raw.port)
    yield g
    g.stop()
    raw.stop()


def call(g, status, body="", **headers):
    with g.http() as c:
        return c.post(CHAT, headers={**gw.auth(), "x-raw-status": str(status), "x-raw-body": body,
                                     **headers},
                      json=gw.chat_body("x", "llama3.2"))


def test_raw_upstream_works(raw_gateway):
    """The stand-in is reachable through the gateway and errors with a body
    are mapped (so the failures below are about the missing body)."""
    r = call(raw_gateway, 500, "Internal Server Error")
    gw.assert_openai_error(r, 500, "upstream_error", "server_error")
    r = call(raw_gateway, 401, "denied")
    gw.assert_openai_error(r, 502, "upstream_auth_failed")


def test_bodiless_401_is_502(raw_gateway):
    r = call(raw_gateway, 401)
    gw.assert_openai_error(r, 502, "upstream_auth_failed", "server_error")


def test_bodiless_401_sdk(raw_gateway):
    with pytest.raises(openai.InternalServerError):
        raw_gateway.client().chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-raw-status": "401"})


@pytest.mark.parametrize("status", [500, 502, 503])
def test_bodiless_5xx_is_openai_shaped(raw_gateway, status):
    r = call(raw_gateway, status)
    gw.assert_openai_error(r, status, etype="server_error")


def test_bodiless_429_is_openai_shaped(raw_gateway):
    r = call(raw_gateway, 429, **{"x-raw-retry-after": "3"})
    assert r.headers.get("retry-after") == "3"
    gw.assert_openai_error(r, 429, etype="rate_limit_error")
