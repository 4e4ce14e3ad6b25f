"""Fixtures: the mock provider, the gateway on the shipped config, the
gateway on testdata/e2e/gateway.json, and a factory for function-scoped
gateways (tests that must restart Envoy)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.register_assert_rewrite("gw")

import gw  # noqa: E402

DEFAULT_TIMEOUT = 60  # seconds per test (pytest-timeout)


def pytest_configure(config):
    config.addinivalue_line("markers", "last: run after every other e2e test")


def pytest_collection_modifyitems(session, config, items):
    here = Path(__file__).resolve().parent
    # A per-test timeout for these tests unless one is given (--timeout or a
    # marker): a hung stream must fail the test, not the session.
    if not config.getoption("timeout", None):
        for item in items:
            if Path(str(item.fspath)).resolve().parent == here and \
                    item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))
    # The leak check greps what every other test produced: run it last.
    last = [i for i in items if i.get_closest_marker("last")]
    items[:] = [i for i in items if not i.get_closest_marker("last")] + last


@pytest.fixture(scope="session", autouse=True)
def _stop_everything():
    yield
    gw.stop_all()


@pytest.fixture(scope="session")
def built():
    missing = [p for p in (gw.ENVOY, gw.WASM, gw.MOCK_BIN) if not p.exists()]
    if missing:
        pytest.fail(f"build first (make build): missing {', '.join(map(str, missing))}")


@pytest.fixture(scope="session")
def mock(built, tmp_path_factory):
    m = gw.Mock(tmp_path_factory.mktemp("mock"))
    yield m
    m.stop()


@pytest.fixture(scope="session")
def gateway(mock, tmp_path_factory):
    """Envoy on the shipped envoy/envoy.yaml, default plugin config."""
    g = gw.Gateway(tmp_path_factory.mktemp("gw-main"), mock.port)
    yield g
    g.stop()


@pytest.fixture(scope="session")
def test_keys():
    """Caller keys minted for this session; their sha256 go into the config."""
    return {name: gw.mint_key(name) for name in ("alice", "restricted")}


@pytest.fixture(scope="session")
def test_config(test_keys):
    return gw.load_test_config(test_keys)


@pytest.fixture(scope="session")
def test_gateway(mock, tmp_path_factory, test_config):
    """Envoy on the shipped envoy.yaml with testdata/e2e/gateway.json as the
    plugin config. One Envoy setting beyond the brief's list is changed:
    `forward_client_cert_details: ALWAYS_FORWARD_ONLY`, without which Envoy
    removes `x-forwarded-client-cert` from plaintext connections before any
    filter runs (see test_identity.py::test_xfcc_is_stripped_by_shipped_hcm)."""
    def mutate(doc):
        gw.hcm(doc)["forward_client_cert_details"] = "ALWAYS_FORWARD_ONLY"
    g = gw.Gateway(tmp_path_factory.mktemp("gw-test"), mock.port,
                   plugin_config=test_config, mutate=mutate)
    yield g
    g.stop()


@pytest.fixture
def make_gateway(mock, tmp_path):
    """Factory for gateways that live for one test."""
    made: list[gw.Gateway] = []
    n = [0]

    def make(**kw) -> gw.Gateway:
        n[0] += 1
        mock_port = kw.pop("mock_port", mock.port)
        try:
            g = gw.Gateway(tmp_path / f"gw{n[0]}", mock_port, **kw)
        except gw.StartupFailed as e:
            made.append(e.gateway)
            raise
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop()
