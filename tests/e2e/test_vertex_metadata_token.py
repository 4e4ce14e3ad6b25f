"""Vertex AI with the bearer token fetched by the filter itself from the
GCE/GKE metadata server (`options.token_source: gce_metadata`, see
filter/src/providers/vertex.rs and filter/src/token.rs).

The mock plays the metadata server (`GET /computeMetadata/v1/instance/
service-accounts/default/token`, `Metadata-Flavor: Google` required) and
Vertex. The provider's cluster here has no `credential_injector`, so the
`authorization` the mock sees can only come from the filter. One fetch
serves both workers (Envoy shared data, a compare-and-swap lease); without
a token a request is answered at once with a 502.
"""
import concurrent.futures
import copy
import time

import httpx

import gw

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
MODEL = "vertex-md-flash"


def plugin_config() -> dict:
    cfg = gw.shipped_plugin_config()
    cfg["providers"].append({
        "name": "vertex-md", "kind": "vertex", "cluster": "vertex_md",
        "host": "us-central1-aiplatform.googleapis.com",
        "options": {"project": "llmgw-md", "location": "us-central1",
                    "token_source": {"type": "gce_metadata", "cluster": "gcp_metadata"}},
    })
    cfg["models"].append({"name": MODEL, "provider": "vertex-md",
                          "upstream_model": "gemini-2.5-flash"})
    return cfg


def add_clusters(metadata_port: int | None):
    """`vertex_md` (the mock, no credential injector) and `gcp_metadata`
    (the mock, or `metadata_port` when given)."""
    def mutate(doc):
        clusters = doc["static_resources"]["clusters"]
        openai = gw.cluster(doc, "openai")
        for name in ("vertex_md", "gcp_metadata"):
            c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": copy.deepcopy(openai["load_assignment"])}
            c["load_assignment"]["cluster_name"] = name
            if name == "gcp_metadata" and metadata_port is not None:
                gw.set_cluster_port(c, metadata_port)
            clusters.append(c)
    return mutate


def chat(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/v1/chat/completions",
                       headers={"authorization": "Bearer " + gw.DEMO_KEY},
                       json=gw.chat_body(text, model=MODEL))


def metadata_fetches(mock) -> list[dict]:
    return [r for r in mock.requests() if r["provider"] == "gce_metadata"]


def test_token_from_metadata_server(make_gateway, mock):
    mock.clear()
    g = make_gateway(plugin_config=plugin_config(), mutate=add_clusters(None))
    http = g.http(timeout=10)
    deadline = time.monotonic() + 5
    while True:
        r = chat(http, gw.nonce("warm"))
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        gw.assert_openai_error(r, 502, "upstream_credentials_unavailable")
        time.sleep(0.1)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["x-llm-provider"] == "vertex-md"

    tags = [gw.nonce("md") for _ in range(20)]
    for t in tags[:8]:
        r = chat(http, t)
        assert r.status_code == 200, r.text[:500]

    def one(t):
        with httpx.Client(base_url=g.url, timeout=10) as c:
            return chat(c, t)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
        for r in ex.map(one, tags[8:]):
            assert r.status_code == 200, r.text[:500]

    for t in tags:
        rec = mock.find_one(t)
        assert rec["provider"] == "vertex"
        assert rec["path"].startswith("/v1/projects/llmgw-md/locations/us-central1/"), rec["path"]
        assert rec["headers"]["authorization"] == "Bearer " + gw.VERTEX_TOKEN
        assert gw.DEMO_KEY not in str(rec["headers"])

    fetches = metadata_fetches(mock)
    assert len(fetches) == 1, fetches
    f = fetches[0]
    assert (f["method"], f["path"]) == ("GET", TOKEN_PATH)
    assert f["headers"]["metadata-flavor"] == "Google"
    assert f["headers"]["host"] == "metadata.google.internal"

    log = g.log_text()
    assert "access token of provider vertex-md fetched from the metadata server" in log
    assert gw.VERTEX_TOKEN not in log
    assert g.alive()


def test_metadata_server_down_is_a_quick_502(make_gateway, mock):
    closed = gw.free_port()
    g = make_gateway(plugin_config=plugin_config(), mutate=add_clusters(closed))
    http = g.http(timeout=10)
    time.sleep(1.5)  # a fetch has been tried and failed
    for _ in range(3):
        t0 = time.monotonic()
        r = chat(http, gw.nonce("down"))
        assert time.monotonic() - t0 < 2
        err = gw.assert_openai_error(r, 502, "upstream_credentials_unavailable")
        assert "vertex-md" in err["message"]
    # The other providers are unaffected.
    r = http.post("/v1/chat/completions", headers={"authorization": "Bearer " + gw.DEMO_KEY},
                  json=gw.chat_body("hello"))
    assert r.status_code == 200, r.text[:300]
    deadline = time.monotonic() + 3
    while "fetching the access token of provider vertex-md" not in g.log_text() \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "fetching the access token of provider vertex-md" in g.log_text()
    assert g.alive()
