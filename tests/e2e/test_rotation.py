"""Provider key rotation through the SDS files the credential injector
reads: replacing a file atomically switches the key without a restart."""
import time

import pytest

import gw


def upstream_key(g, mock, model, header):
    token = gw.nonce("rot")
    with g.http() as c:
        r = c.post("/v1/chat/completions", headers=gw.auth(), json=gw.chat_body(token, model))
    return r, mock.find_one(token)["headers"].get(header)


def wait_for_key(g, mock, model, header, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        r, got = upstream_key(g, mock, model, header)
        seen.append(got)
        if got == want:
            return r, time.monotonic()
        time.sleep(0.1)
    pytest.fail(f"key never switched to the rotated one; saw {sorted(set(seen))[:3]} ...")


@pytest.mark.timeout(90)
def test_rotate_openai_key_without_restart(make_gateway, mock):
    g = make_gateway()
    pid = g.pid
    r, key = upstream_key(g, mock, "gpt-4o-mini", "authorization")
    assert (r.status_code, key) == (200, "Bearer " + gw.OPENAI_KEY)

    secret = g.tmp / "secrets" / "openai.yaml"
    t0 = time.monotonic()
    gw.write_secret(secret, "openai-key", "Bearer " + gw.ROTATED_OPENAI_KEY, atomic=True)
    r, t1 = wait_for_key(g, mock, "gpt-4o-mini", "authorization", "Bearer " + gw.ROTATED_OPENAI_KEY)
    assert r.status_code == 200
    assert t1 - t0 < 5, f"rotation took {t1 - t0:.1f}s"
    # Every later request (both workers, other models on the cluster) uses it.
    for model in ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini", "gpt-4o"]:
        r, key = upstream_key(g, mock, model, "authorization")
        assert (r.status_code, key) == (200, "Bearer " + gw.ROTATED_OPENAI_KEY)
    # Other providers are untouched.
    r, key = upstream_key(g, mock, "azure-gpt-4o-mini", "api-key")
    assert (r.status_code, key) == (200, gw.AZURE_KEY)
    # Same process throughout.
    assert g.alive() and g.pid == pid
    assert g.admin_get("/ready").text.strip() == "LIVE"


@pytest.mark.timeout(90)
def test_rotating_to_a_wrong_key_and_back(make_gateway, mock):
    """A wrong key after rotation shows as 502 upstream_auth_failed (never the
    key), and rotating back heals the gateway, again without a restart."""
    g = make_gateway()
    pid = g.pid
    secret = g.tmp / "secrets" / "azure.yaml"
    gw.write_secret(secret, "azure-key", gw.WRONG_AZURE_KEY, atomic=True)
    r, _ = wait_for_key(g, mock, "azure-gpt-4o-mini", "api-key", gw.WRONG_AZURE_KEY)
    err = gw.assert_openai_error(r, 502, "upstream_auth_failed")
    assert gw.WRONG_AZURE_KEY not in r.text
    assert "azure" in err["message"]
    gw.write_secret(secret, "azure-key", gw.AZURE_KEY, atomic=True)
    r, _ = wait_for_key(g, mock, "azure-gpt-4o-mini", "api-key", gw.AZURE_KEY)
    assert r.status_code == 200
    assert g.alive() and g.pid == pid
    stats = g.stats()
    updates = {k: v for k, v in stats.items() if k.startswith("sds.azure-key.")}
    assert updates.get("sds.azure-key.update_success", 0) >= 3, updates
    assert updates.get("sds.azure-key.update_rejected", 0) == 0, updates
