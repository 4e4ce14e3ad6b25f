"""Errors the gateway answers itself: auth, routing, bad input. Each is an
OpenAI-shaped body with the right status, checked raw and through the SDK."""
import json

import openai
import pytest

import gw

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def baseline(gateway):
    """Wasm stats before this module's abuse."""
    return {k: v for k, v in gateway.stats().items() if k.startswith("wasm")}


@pytest.fixture(autouse=True)
def _baseline_first(baseline):
    pass


@pytest.fixture
def h(gateway):
    with gateway.http() as c:
        yield c


# ----------------------------------------------------------------- auth

def test_missing_key(h):
    r = h.post(CHAT, json=gw.chat_body("hi"))
    err = gw.assert_openai_error(r, 401, "invalid_api_key", "invalid_request_error", None)
    assert "API key" in err["message"]


@pytest.mark.parametrize("headers", [
    {"authorization": "Bearer sk-llmgw-demo-WRONG"},
    {"authorization": "Bearer  nokey"},
    {"authorization": gw.DEMO_KEY + "x"},
    {"api-key": "nope"},
    {"x-api-key": gw.DEMO_KEY[:-1]},
])
def test_bad_key(h, headers):
    r = h.post(CHAT, headers=headers, json=gw.chat_body("hi"))
    err = gw.assert_openai_error(r, 401, "invalid_api_key")
    # The presented key is never echoed.
    for v in headers.values():
        token = v.split()[-1] if v.split() else v
        if len(token) > 3:
            assert token not in r.text and token[:8] not in err["message"]


def test_bad_key_sdk(gateway):
    with pytest.raises(openai.AuthenticationError) as ei:
        gateway.client("sk-llmgw-not-a-real-key").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    e = ei.value
    assert e.status_code == 401 and e.code == "invalid_api_key"
    assert set(e.body) == {"message", "type", "param", "code"}
    assert "sk-llmgw-not" not in str(e)


def test_a_wrong_key_beats_a_good_one_in_another_header(h):
    """authorization is looked at first; a wrong key there is a 401 even
    with a valid key in api-key."""
    r = h.post(CHAT, headers={"authorization": "Bearer wrong", "api-key": gw.DEMO_KEY},
               json=gw.chat_body("hi"))
    gw.assert_openai_error(r, 401, "invalid_api_key")


@pytest.mark.parametrize("header", ["api-key", "x-api-key"])
def test_key_headers_accepted_for_models(h, header):
    r = h.get("/v1/models", headers={header: gw.DEMO_KEY})
    assert r.status_code == 200 and r.json()["object"] == "list"


# ----------------------------------------------------------------- models

def test_unknown_model(h, gateway):
    r = h.post(CHAT, headers=gw.auth(), json=gw.chat_body("hi", "gpt-5-imaginary"))
    err = gw.assert_openai_error(r, 404, "model_not_found", "invalid_request_error", "model")
    assert "gpt-5-imaginary" in err["message"]
    with pytest.raises(openai.NotFoundError) as ei:
        gateway.client().chat.completions.create(
            model="gpt-5-imaginary", messages=[{"role": "user", "content": "hi"}])
    assert ei.value.code == "model_not_found"


def test_model_not_allowed_is_404_like_unknown(test_gateway, test_keys, mock):
    token = gw.nonce("denied")
    client = test_gateway.client(test_keys["restricted"])
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "user", "content": token}])
    assert ei.value.status_code == 404 and ei.value.code == "model_not_found"
    assert ei.value.body["param"] == "model"
    assert mock.find(token, wait=0.3) == []
    # ... while its own models work.
    ok = client.chat.completions.create(model="llama3.2",
                                        messages=[{"role": "user", "content": token}])
    assert ok.choices[0].message.content.endswith(token)


def test_missing_model_without_usable_default(test_gateway, test_keys):
    """The test config's default model (gpt-4o-mini) is not allowed for the
    restricted caller: a missing model is then a missing parameter."""
    with test_gateway.http() as c:
        r = c.post(CHAT, headers=gw.auth(test_keys["restricted"]),
                   json={"messages": [{"role": "user", "content": "hi"}]})
    gw.assert_openai_error(r, 400, "missing_required_parameter", "invalid_request_error", "model")


@pytest.mark.parametrize("path,body", [
    ("/v1/embeddings", {"input": "x"}),
    ("/v1/completions", {"prompt": "x"}),
])
def test_default_model_only_stands_in_for_its_own_endpoint(h, path, body):
    """The shipped default model (gpt-4o-mini) is a chat model: a missing
    model elsewhere is a missing parameter."""
    r = h.post(path, headers=gw.auth(), json=body)
    gw.assert_openai_error(r, 400, "missing_required_parameter", "invalid_request_error", "model")


def test_huge_model_name(h):
    r = h.post(CHAT, headers=gw.auth(), json=gw.chat_body("hi", "m" * 5000))
    gw.assert_openai_error(r, 404, "model_not_found")
    assert len(r.content) < 1024


# ----------------------------------------------------------------- routing

@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/responses"), ("POST", "/v1/chat/completion"), ("GET", "/v1/"),
    ("GET", "/v1"), ("POST", "/v1/images/generations"), ("GET", "/v1/models/"),
])
def test_unknown_path_under_v1(h, method, path):
    r = h.request(method, path, headers=gw.auth(), json={})
    gw.assert_openai_error(r, 404, "unknown_url")


def test_unknown_path_sdk(gateway):
    with pytest.raises(openai.NotFoundError) as ei:
        gateway.client().responses.create(model="gpt-4o", input="hi")
    assert ei.value.code == "unknown_url"


@pytest.mark.parametrize("method,path,allow", [
    ("GET", CHAT, "POST"), ("PUT", "/v1/embeddings", "POST"), ("DELETE", "/v1/completions", "POST"),
    ("POST", "/v1/models", "GET"), ("DELETE", "/v1/models/gpt-4o", "GET"),
])
def test_wrong_method(h, method, path, allow):
    r = h.request(method, path, headers=gw.auth())
    gw.assert_openai_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


def test_wrong_method_sdk(gateway):
    with pytest.raises(openai.APIStatusError) as ei:
        gateway.client().get("/chat/completions", cast_to=object)
    assert type(ei.value) is openai.APIStatusError
    assert ei.value.status_code == 405


@pytest.mark.parametrize("path", ["/", "/healthz", "/v2/chat/completions", "/v1x/models",
                                  "/openai/deployments/gpt-4o/chat/completions"])
def test_path_outside_v1_is_404_json(h, mock, path):
    token = gw.nonce("outside")
    r = h.post(path, headers=gw.auth(), json=gw.chat_body(token))
    err = gw.assert_openai_error(r, 404, "unknown_url", request_id=False)
    assert "/v1" in err["message"]
    assert mock.find(token, wait=0.2) == []


def test_client_cannot_choose_the_cluster(h, mock):
    """x-llmgw-cluster from the client is removed before routing: outside /v1
    it does not reach a provider, inside /v1 the model decides."""
    token = gw.nonce("spoof")
    r = h.post("/v2/anything", headers={**gw.auth(), "x-llmgw-cluster": "openai"},
               json=gw.chat_body(token))
    assert r.status_code == 404
    r = h.get("/healthz", headers={"x-llmgw-cluster": "vllm"})
    assert r.status_code == 404
    r = h.post(CHAT, headers={**gw.auth(), "x-llmgw-cluster": "vllm"},
               json=gw.chat_body(token, "llama3.2"))
    assert r.status_code == 200
    got = mock.find(token)
    assert [(g["provider"], g["path"]) for g in got] == [("ollama", "/ollama/v1/chat/completions")]
    assert "x-llmgw-cluster" not in got[0]["headers"]


def test_client_cannot_drive_envoy_retries_or_timeouts(h, mock):
    """x-envoy-* control headers from the client change nothing: no retry
    amplification against the provider, no shortened timeout."""
    token = gw.nonce("xenvoy")
    r = h.post(CHAT, headers={**gw.auth(), "x-envoy-retry-on": "5xx,reset",
                              "x-envoy-max-retries": "5", "x-mock-behavior": "fail=500"},
               json=gw.chat_body(token))
    assert r.status_code == 500
    assert len(mock.find(token)) == 1
    r = h.post(CHAT, headers={**gw.auth(), "x-envoy-upstream-rq-timeout-ms": "50",
                              "x-mock-behavior": "stall=400"}, json=gw.chat_body("x"))
    assert r.status_code == 200


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("name,body,code,param", [
    ("not json", b"hello", "invalid_json", None),
    ("truncated", b'{"model":"gpt-4o-mini","messages":[', "invalid_json", None),
    ("array", b'[{"model":"gpt-4o-mini"}]', "invalid_json", None),
    ("string", b'"hi"', "invalid_json", None),
    ("whitespace", b"   \n ", "invalid_json", None),
    ("duplicate key", b'{"model":"gpt-4o-mini","model":"gpt-4o","messages":[{"role":"user","content":"x"}]}',
     "invalid_json", None),
    ("invalid utf-8", b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\xff\xfe"}]}',
     "invalid_json", None),
    ("model number", b'{"model":5,"messages":[{"role":"user","content":"x"}]}', "invalid_type", "model"),
    ("messages string", b'{"model":"gpt-4o-mini","messages":"hi"}', "invalid_type", "messages"),
    ("stream string", b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
     "invalid_type", "stream"),
    ("messages empty", b'{"model":"gpt-4o-mini","messages":[]}', "empty_array", "messages"),
    ("role missing", b'{"model":"gpt-4o-mini","messages":[{"content":"x"}]}',
     "missing_required_parameter", "messages[0].role"),
    ("role bad", b'{"model":"gpt-4o-mini","messages":[{"role":"king","content":"x"}]}',
     "invalid_value", "messages[0].role"),
    ("temperature", b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"temperature":7}',
     "invalid_value", "temperature"),
    ("n zero", b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"n":0}',
     "invalid_value", "n"),
    ("stream_options without stream",
     b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}',
     "invalid_value", "stream_options"),
    ("missing messages", b'{"model":"gpt-4o-mini"}', "missing_required_parameter", "messages"),
])
def test_bad_chat_body(h, mock, name, body, code, param):
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"}, content=body)
    gw.assert_openai_error(r, 400, code, "invalid_request_error", param)


def test_empty_body(h):
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"}, content=b"")
    gw.assert_openai_error(r, 400, "invalid_json")


@pytest.mark.parametrize("path,body,param", [
    ("/v1/embeddings", {"model": "text-embedding-3-small"}, "input"),
    ("/v1/completions", {"model": "gpt-3.5-turbo-instruct"}, "prompt"),
    (CHAT, {"model": "gpt-4o"}, "messages"),
])
def test_missing_required(h, path, body, param):
    r = h.post(path, headers=gw.auth(), json=body)
    gw.assert_openai_error(r, 400, "missing_required_parameter", "invalid_request_error", param)


def test_bad_types_sdk(gateway):
    c = gateway.client()
    with pytest.raises(openai.BadRequestError) as ei:
        c.chat.completions.create(model=5, messages=[{"role": "user", "content": "x"}])
    assert (ei.value.code, ei.value.param) == ("invalid_type", "model")
    with pytest.raises(openai.BadRequestError) as ei:
        c.embeddings.create(model="text-embedding-3-small", input="")
    assert ei.value.param == "input"


def test_unknown_parameter_rejected_for_openai(gateway, mock):
    token = gw.nonce("unknown")
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": token}],
            extra_body={"top_k": 5})
    assert ei.value.code == "unknown_parameter"
    assert ei.value.param == "top_k"
    assert mock.find(token, wait=0.3) == []


def test_unknown_parameter_passes_for_vllm(gateway, mock):
    token = gw.nonce("vllmextra")
    comp = gateway.client().chat.completions.create(
        model="qwen2.5-7b", messages=[{"role": "user", "content": token}],
        extra_body={"top_k": 5, "repetition_penalty": 1.1, "guided_choice": ["a", "b"]})
    assert comp.choices[0].message.content.endswith(token)
    body = json.loads(mock.find_one(token)["body"])
    assert body["top_k"] == 5 and body["repetition_penalty"] == 1.1
    assert body["guided_choice"] == ["a", "b"]
    assert body["model"] == "Qwen/Qwen2.5-7B-Instruct"


def test_form_content_type_is_415(h, gateway):
    r = h.post(CHAT, headers=gw.auth(), data={"model": "gpt-4o-mini", "messages": "x"})
    gw.assert_openai_error(r, 415, "unsupported_media_type")
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "text/plain"},
               content=json.dumps(gw.chat_body("x")))
    gw.assert_openai_error(r, 415, "unsupported_media_type")
    # application/json with a charset is fine.
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json; charset=utf-8"},
               content=json.dumps(gw.chat_body("x")))
    assert r.status_code == 200


MIB = 1024 * 1024


def big_body(size: int) -> bytes:
    head = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def test_too_large_with_content_length(h, mock):
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"},
               content=big_body(9 * MIB))
    gw.assert_openai_error(r, 413, "request_too_large")


def test_too_large_chunked(h):
    body = big_body(9 * MIB)

    def gen():
        for i in range(0, len(body), 64 * 1024):
            yield body[i:i + 64 * 1024]
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"}, content=gen())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    gw.assert_openai_error(r, 413, "request_too_large")


def test_too_large_sdk(gateway):
    with pytest.raises(openai.APIStatusError) as ei:
        gateway.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a" * (9 * MIB)}])
    assert ei.value.status_code == 413 and ei.value.code == "request_too_large"


def test_just_under_the_limit_goes_through(h, mock):
    # A large inline image (an 8 MiB text prompt would be over the model's
    # context window: 400 context_length_exceeded, see test_routing.py).
    token = gw.nonce("big")
    head = ('{"model":"llama3.2","messages":[{"role":"user","content":[{"type":"text","text":"'
            + token + '"},{"type":"image_url","image_url":{"url":"data:image/png;base64,').encode()
    body = head + b"A" * (8 * MIB - len(head) - 200) + b'"}}]}]}'
    assert len(body) < 8 * MIB
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"}, content=body)
    assert r.status_code == 200, r.text[:300]
    assert token in r.json()["choices"][0]["message"]["content"]
    mock.clear()  # keep later look-ups of the request log small


@pytest.mark.parametrize("where", ["top", "inside"])
def test_deep_nesting(h, gateway, where):
    if where == "top":
        body = b"[" * 100_000
    else:
        body = (b'{"model":"llama3.2","messages":[{"role":"user","content":' +
                b"[" * 100_000 + b"]" * 100_000 + b"}]}")
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"}, content=body)
    # Rejected by the gateway (top) or by the provider (inside): never a
    # crash, and the answer is OpenAI-shaped.
    gw.assert_openai_error(r, 400)
    assert gateway.alive()


def test_nul_and_control_bytes_in_strings(h):
    r = h.post(CHAT, headers={**gw.auth(), "content-type": "application/json"},
               content=b'{"model":"gpt\x00-4o","messages":[{"role":"user","content":"x"}]}')
    gw.assert_openai_error(r, 400, "invalid_json")
    r = h.post(CHAT, headers=gw.auth(), json=gw.chat_body("x", "gpt-4o\u0000\n"))
    gw.assert_openai_error(r, 404, "model_not_found")


def test_non_utf8_header_does_not_break_anything(gateway):
    with gateway.http() as c:
        r = c.post(CHAT, headers=[(b"authorization", b"Bearer \xff\xfe"),
                                  (b"x-odd", b"\xc3\x28")], json=gw.chat_body("x"))
    gw.assert_openai_error(r, 401, "invalid_api_key")


# ----------------------------------------------------------------- afterwards

def test_zz_gateway_still_healthy(gateway, baseline, mock):
    """After every bad input above: a good request works on the same Envoy,
    and no wasm VM failed or was reloaded."""
    token = gw.nonce("after")
    for _ in range(4):  # reach both workers
        comp = gateway.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": token}])
        assert comp.choices[0].message.content.endswith(token)
    assert gateway.alive()
    now = {k: v for k, v in gateway.stats().items() if k.startswith("wasm")}
    assert now["wasm.wasm_vm_count"] == baseline["wasm.wasm_vm_count"] >= 3
    assert now["wasm.envoy.wasm.runtime.v8.active"] == baseline["wasm.envoy.wasm.runtime.v8.active"]
    for k, v in now.items():
        if k.startswith("wasmcustom."):
            continue  # the filter's own metrics (llmgw.deployment.failures counts provider failures)
        if "fail" in k or k.endswith(("vm_reload", "vm_reload_backoff")):
            assert v == 0, (k, v)
    log = gateway.log_text()
    for bad in ("panicked", "wasm trap", "Function: proxy_on", "Uncaught", "Wasm VM failed",
                "crash", "unreachable"):
        assert bad not in log, bad
