"""Provider errors without a body (load balancers, API gateways and some
servers answer `401`/`503`/`429` with `content-length: 0`). The mock always
sends a body, so a minimal in-process upstream (gw.RawUpstream) stands in."""
import openai
import pytest

import gw

CHAT = "/v1/chat/completions"

BUG = (
    "BUG (filter/src/glue.rs, Http::on_http_response_headers): when the "
    "provider's error has no body, the response headers arrive with "
    "end_of_stream=true; the filter then skips the content-type "
    "(`if end_of_stream && k == \"content-type\"`) and the :status rewrite "
    "(`if !end_of_stream { ... }`), and on_http_response_body never runs, "
    "so the error goes out as the provider sent it: an empty body, and a "
    "provider 401 stays 401 (the SDK raises AuthenticationError: the client "
    "is told its own key is wrong).")


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


@pytest.mark.xfail(strict=True, reason=BUG)
def test_bodiless_401_is_502(raw_gateway):
    r = call(raw_gateway, 401)
    gw.assert_openai_error(r, 502, "upstream_auth_failed", "server_error")


@pytest.mark.xfail(strict=True, reason=BUG)
def test_bodiless_401_sdk(raw_gateway):
    with pytest.raises(openai.InternalServerError):
        raw_gateway.client().chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-raw-status": "401"})


@pytest.mark.xfail(strict=True, reason=BUG)
@pytest.mark.parametrize("status", [500, 502, 503])
def test_bodiless_5xx_is_openai_shaped(raw_gateway, status):
    r = call(raw_gateway, status)
    gw.assert_openai_error(r, status, etype="server_error")


@pytest.mark.xfail(strict=True, reason=BUG)
def test_bodiless_429_is_openai_shaped(raw_gateway):
    r = call(raw_gateway, 429, **{"x-raw-retry-after": "3"})
    assert r.headers.get("retry-after") == "3"
    gw.assert_openai_error(r, 429, etype="rate_limit_error")
