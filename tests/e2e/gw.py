"""Harness for the end-to-end tests: the mock provider and real Envoy
processes running the built filter, plus recording HTTP clients.

Nothing here is a test. `conftest.py` turns it into fixtures.

Every process started here is registered in `PROCESSES` and stopped by pid
(SIGTERM, wait, SIGKILL) at teardown; `stop_all()` is the safety net that the
session finaliser and `atexit` both call.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from netutil import free_port, port_open, tail  # noqa: E402,F401  (gw.free_port etc. for the tests)
import envoy_doc  # noqa: E402
#: The routing cluster of the shipped config.
from envoy_doc import DEFAULT_ROUTING_CLUSTER as ROUTING_CLUSTER  # noqa: E402
from envoy_doc import walk as _walk  # noqa: E402

ENVOY = ROOT / ".venv" / "bin" / "envoy"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
MOCK_BIN = ROOT / "target" / "release" / "llm-mock"
SHIPPED_ENVOY = ROOT / "envoy" / "envoy.yaml"
TEST_CONFIG = ROOT / "testdata" / "e2e" / "gateway.json"

# ----------------------------------------------------------------- keys

#: The demo caller key of the shipped config (its sha256 is in envoy.yaml).
DEMO_KEY = "sk-llmgw-demo-6vDq9aowcjXAfTg475JWOpXt8MDVC5Qp"

#: Provider keys the mock accepts.
OPENAI_KEY = "sk-mock-openai"
ROTATED_OPENAI_KEY = "sk-rotated-openai"
AZURE_KEY = "mock-azure-key"
ANTHROPIC_KEY = "sk-ant-mock"
#: vLLM key: Envoy's VLLM_API_KEY (host_env_keys) and the mock's --vllm-key.
VLLM_KEY = "vllm-e2e-" + secrets.token_hex(8)

#: Wrong provider keys some gateways are given on purpose (the mock answers
#: 401 and, for OpenAI, quotes a masked fragment of the key).
WRONG_OPENAI_KEY = "sk-wrongcanary-" + secrets.token_hex(6) + "-QZXW"
WRONG_AZURE_KEY = "az-wrongcanary-" + secrets.token_hex(6)
WRONG_VLLM_KEY = "vllm-wrongcanary-" + secrets.token_hex(6)
WRONG_ANTHROPIC_KEY = "sk-ant-wrongcanary-" + secrets.token_hex(6)

#: Gemini / Vertex / Bedrock demo credentials (the mock's defaults): Gemini's
#: and Vertex's reach the provider through the credential injector, the AWS
#: pair is handed to the VM (BEDROCK_* host_env_keys) and signs requests.
GEMINI_KEY = "mock-gemini-key"
VERTEX_TOKEN = "mock-vertex-token"
AWS_ACCESS_KEY_ID = "AKIDMOCKEXAMPLE"
AWS_SECRET_ACCESS_KEY = "mock/secret/EXAMPLEKEY"
BEDROCK_ENV = {"BEDROCK_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
               "BEDROCK_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY}

PROVIDER_KEYS = [OPENAI_KEY, ROTATED_OPENAI_KEY, AZURE_KEY, VLLM_KEY, ANTHROPIC_KEY,
                 WRONG_OPENAI_KEY, WRONG_AZURE_KEY, WRONG_VLLM_KEY, WRONG_ANTHROPIC_KEY,
                 GEMINI_KEY, VERTEX_TOKEN, AWS_SECRET_ACCESS_KEY]


def mint_key(name: str) -> str:
    """A fresh caller key (what `llmgw key new` would print)."""
    return f"sk-llmgw-{name}-{secrets.token_urlsafe(24)}"


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def mask_key(key: str) -> str:
    """The masking OpenAI (and the mock) use in a 401 message: first 6
    characters, one `*` per hidden character, last 4."""
    if len(key) <= 10:
        shown = min(len(key), 2)
        return key[:shown] + "*" * (len(key) - shown)
    return key[:6] + "*" * (len(key) - 10) + key[-4:]


def key_fragment_patterns(key: str) -> list[re.Pattern]:
    """Regexes for what a provider 401 message may quote of `key`."""
    pats = [re.escape(key), re.escape(mask_key(key))]
    if len(key) > 10:
        pats.append(re.escape(key[:6]) + r"\*{2,}")
        pats.append(r"\*{2,}" + re.escape(key[-4:]))
    return [re.compile(p) for p in pats]


# ----------------------------------------------------------------- processes

PROCESSES: list[subprocess.Popen] = []
_LOCK = threading.Lock()


def stop_process(p: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL; by pid only."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            p.wait(timeout=timeout)
    with _LOCK:
        if p in PROCESSES:
            PROCESSES.remove(p)


def stop_all() -> None:
    for p in list(PROCESSES):
        stop_process(p)


atexit.register(stop_all)


try:  # Linux: children get SIGTERM if the test process dies without cleaning up.
    import ctypes
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover
    _LIBC = None


def _die_with_parent():
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], *, env=None, stdout=None, stderr=None) -> subprocess.Popen:
    p = subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr,
                         stdin=subprocess.DEVNULL, cwd=str(ROOT),
                         preexec_fn=_die_with_parent)
    with _LOCK:
        PROCESSES.append(p)
    return p


# ----------------------------------------------------------------- recording

@dataclass
class Record:
    """One response a test saw (through a recording client)."""
    method: str
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)

    def text(self) -> str:
        hdrs = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.method} {self.url} -> {self.status}\n{hdrs}\n\n" + \
            self.body.decode("utf-8", errors="replace")


#: Every response seen through `recording_client` / `openai_client`.
RESPONSES: list[Record] = []
#: Every Envoy log file of the session (its log and its access log).
LOG_FILES: list[Path] = []


def _record(request: httpx.Request, response: httpx.Response) -> Record:
    rec = Record(request.method, str(request.url), response.status_code,
                 [(k.decode("latin-1"), v.decode("latin-1"))
                  for k, v in response.headers.raw])
    with _LOCK:
        RESPONSES.append(rec)
    return rec


class _TeeStream(httpx.SyncByteStream):
    def __init__(self, inner, rec: Record):
        self.inner, self.rec = inner, rec

    def __iter__(self):
        for chunk in self.inner:
            self.rec.body.extend(chunk)
            yield chunk

    def close(self):
        self.inner.close()


class _AsyncTeeStream(httpx.AsyncByteStream):
    def __init__(self, inner, rec: Record):
        self.inner, self.rec = inner, rec

    async def __aiter__(self):
        async for chunk in self.inner:
            self.rec.body.extend(chunk)
            yield chunk

    async def aclose(self):
        await self.inner.aclose()


class RecordingTransport(httpx.HTTPTransport):
    """An HTTP transport that keeps every response (status, headers, body
    as far as it was read) in `RESPONSES`."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = super().handle_request(request)
        rec = _record(request, resp)
        return httpx.Response(resp.status_code, headers=resp.headers,
                              stream=_TeeStream(resp.stream, rec),
                              extensions=resp.extensions, request=request)


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await super().handle_async_request(request)
        rec = _record(request, resp)
        return httpx.Response(resp.status_code, headers=resp.headers,
                              stream=_AsyncTeeStream(resp.stream, rec),
                              extensions=resp.extensions, request=request)


def recording_client(base_url: str = "", *, local_address: str | None = None,
                     timeout: float = 30.0, **kw) -> httpx.Client:
    t = RecordingTransport(local_address=local_address) if local_address \
        else RecordingTransport()
    return httpx.Client(base_url=base_url, transport=t, timeout=timeout, **kw)


def async_recording_client(*, local_address: str | None = None,
                           timeout: float = 30.0, **kw) -> httpx.AsyncClient:
    t = AsyncRecordingTransport(local_address=local_address) if local_address \
        else AsyncRecordingTransport()
    return httpx.AsyncClient(transport=t, timeout=timeout, **kw)


# ----------------------------------------------------------------- mock

class Mock:
    """The mock provider (`llm-mock`) on a free port."""

    def __init__(self, tmp: Path, *, openai_keys=(OPENAI_KEY, ROTATED_OPENAI_KEY),
                 azure_keys=(AZURE_KEY,), vllm_keys=(VLLM_KEY,),
                 anthropic_keys=(ANTHROPIC_KEY,)):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.out = tmp / "mock.out"
        self.log = tmp / "mock.log"
        args = [str(MOCK_BIN), "--listen", "127.0.0.1:0", "--record-limit", "5000"]
        for k in openai_keys:
            args += ["--openai-key", k]
        for k in azure_keys:
            args += ["--azure-key", k]
        for k in vllm_keys:
            args += ["--vllm-key", k]
        for k in anthropic_keys:
            args += ["--anthropic-key", k]
        with open(self.out, "wb") as out, open(self.log, "wb") as err:
            self.proc = _spawn(args, stdout=out, stderr=err)
        deadline = time.monotonic() + 15
        self.port = None
        while time.monotonic() < deadline:
            m = re.search(r"llm-mock listening on 127\.0\.0\.1:(\d+)",
                          self.out.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"llm-mock did not start:\n{tail(self.log)}")
        self.url = f"http://127.0.0.1:{self.port}"
        # Not a recording client: /__mock/requests holds provider keys.
        self._http = httpx.Client(base_url=self.url, timeout=10)

    def requests(self) -> list[dict]:
        r = self._http.get("/__mock/requests")
        r.raise_for_status()
        return r.json()

    def clear(self) -> None:
        self._http.delete("/__mock/requests").raise_for_status()

    def find(self, token: str, wait: float = 2.0) -> list[dict]:
        """Recorded requests whose body or headers contain `token`."""
        deadline = time.monotonic() + wait
        while True:
            found = [r for r in self.requests()
                     if token in r["body"] or token in json.dumps(r["headers"])]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def add_fault(self, **rule) -> dict:
        """A failure switch (`POST /__mock/faults`): e.g. provider="openai",
        behavior="fail=503", count=2. Cleared by `clear_faults`."""
        r = self._http.post("/__mock/faults", json=rule)
        assert r.status_code == 201, r.text
        return r.json()

    def faults(self) -> list[dict]:
        return self._http.get("/__mock/faults").json()

    def clear_faults(self) -> None:
        self._http.delete("/__mock/faults").raise_for_status()

    def find_one(self, token: str) -> dict:
        found = self.find(token)
        assert len(found) == 1, f"expected one upstream request with {token!r}, got {len(found)}"
        return found[0]

    def stop(self) -> None:
        stop_process(self.proc)
        if getattr(self, "_http", None):
            self._http.close()


# ----------------------------------------------------------------- envoy config

def load_test_config(keys: dict[str, str]) -> dict:
    """testdata/e2e/gateway.json with each keyed caller's `key_sha256`
    replaced by the sha256 of the key minted for it in this session."""
    cfg = json.loads(TEST_CONFIG.read_text())
    for c in cfg["callers"]:
        if "key_sha256" in c:
            c["key_sha256"] = sha256_hex(keys[c["id"]])
    return cfg


def shipped_plugin_config() -> dict:
    return json.loads(_wasm_filter(yaml.safe_load(SHIPPED_ENVOY.read_text()))
                      ["config"]["configuration"]["value"])


def roomy_quotas_config() -> dict:
    """The shipped plugin config with its demo quota limits out of reach,
    for tests that send thousands of requests (or huge answers) in a minute,
    which would otherwise meet 429s. Admission, in-flight counting and
    settlement still run on every request, so a leaked in-flight count
    shows."""
    cfg = shipped_plugin_config()
    q = cfg.get("quotas")
    if q:
        q["default"] = {"requests_per_minute": 10**7, "tokens_per_minute": 10**12,
                        "tokens_per_day": 10**13, "usd_per_day": 10**8,
                        "usd_per_month": 10**8, "max_concurrent": 10**4}
        q.pop("teams", None)
        q.pop("callers", None)
    return cfg


def wasm_filters(doc: dict) -> list[dict]:
    """The typed_config of every Wasm filter (both roles)."""
    return [f["typed_config"] for f in envoy_doc.wasm_filters(doc)]


def _wasm_filter(doc: dict) -> dict:
    """The downstream (listener) wasm filter's typed_config."""
    return envoy_doc.downstream_wasm_filter(doc)["typed_config"]


def _deployment_listener(name: str, port: int, cluster: str) -> dict:
    return {
        "name": f"deployment_{name}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": f"deployment_{name}",
                "stream_idle_timeout": "300s", "request_timeout": "0s",
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                "route_config": {"virtual_hosts": [{"name": "d", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "600s"},
                    "request_headers_to_remove": ["x-llmgw-endpoints", "x-envoy-max-retries"]}]}]},
            }}]}],
    }


def set_deployments(doc: dict, deployments: dict[str, tuple[str, str]]) -> None:
    """Replace the routing cluster's endpoints and the per-deployment
    listeners with `deployments`: name -> (provider cluster, "127.0.0.1:port")
    (ports from `free_port()`, the same endpoints as the plugin config's)."""
    listeners = doc["static_resources"]["listeners"]
    listeners[1:] = [_deployment_listener(n.replace("@", "_"), int(ep.rsplit(":", 1)[1]), c)
                     for n, (c, ep) in deployments.items()]
    rc = cluster(doc, ROUTING_CLUSTER)
    rc["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": int(ep.rsplit(":", 1)[1])}}},
         "metadata": {"filter_metadata": {"llm": {"deployment": n}}}}
        for n, (c, ep) in deployments.items()]}]


def hcm(doc: dict) -> dict:
    found = []
    _walk(doc, lambda d: found.append(d["typed_config"])
          if d.get("name") == "envoy.filters.network.http_connection_manager" else None)
    return found[0]


def llm_route(doc: dict) -> dict:
    """The route that forwards on the cluster header."""
    routes = hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    return next(r for r in routes if "cluster_header" in r.get("route", {}))


def routing_route(doc: dict) -> dict:
    """The route of models with deployments (to the routing cluster)."""
    routes = hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    return next(r for r in routes if r.get("route", {}).get("cluster") == ROUTING_CLUSTER)


def cluster(doc: dict, name: str) -> dict:
    return next(c for c in doc["static_resources"]["clusters"] if c["name"] == name)


def set_cluster_port(c: dict, port: int) -> None:
    def fn(d):
        if "socket_address" in d:
            d["socket_address"]["port_value"] = port
    _walk(c["load_assignment"], fn)


def move_deployment_ports(doc: dict) -> dict[int, int]:
    """Move the per-deployment listeners (every listener after the first)
    to free ports, and the routing cluster's endpoints with them. Returns
    old port -> new port, for the plugin config (`moved_endpoints`)."""
    port_map: dict[int, int] = {}
    for lst in doc["static_resources"]["listeners"][1:]:
        sa = lst["address"]["socket_address"]
        port_map[sa["port_value"]] = free_port()
        sa["port_value"] = port_map[sa["port_value"]]
    rc = next((c for c in doc["static_resources"]["clusters"] if c["name"] == ROUTING_CLUSTER), None)
    if rc is not None:
        _walk(rc["load_assignment"], lambda d: d["socket_address"].update(
            port_value=port_map.get(d["socket_address"]["port_value"], d["socket_address"]["port_value"]))
            if "socket_address" in d else None)
    return port_map


def moved_endpoints(plugin_config: str, port_map: dict[int, int]) -> str:
    """A plugin config (JSON text) with its deployments' endpoints moved as
    `move_deployment_ports` moved the listeners."""
    for old, new in port_map.items():
        plugin_config = plugin_config.replace(f'"127.0.0.1:{old}"', f'"127.0.0.1:{new}"')
    return plugin_config


def render_envoy(tmp: Path, *, port: int, admin_port: int, mock_port: int,
                 plugin_config: dict | str | None = None,
                 secrets_override: dict[str, str] | None = None,
                 mutate: Callable[[dict], None] | None = None) -> Path:
    """The shipped envoy/envoy.yaml with only the ports, SDS paths (to copies
    in `tmp/secrets`), the wasm filename and optionally the plugin config
    changed; `mutate` may change more for special cases."""
    doc = yaml.safe_load(SHIPPED_ENVOY.read_text())
    listeners = doc["static_resources"]["listeners"]
    listeners[0]["address"]["socket_address"]["port_value"] = port
    doc["admin"]["address"]["socket_address"]["port_value"] = admin_port
    port_map = move_deployment_ports(doc)
    for c in doc["static_resources"]["clusters"]:
        if c["name"] != ROUTING_CLUSTER:
            set_cluster_port(c, mock_port)
    sec_dir = tmp / "secrets"
    sec_dir.mkdir(parents=True, exist_ok=True)

    def fix_sds(d):
        pcs = d.get("path_config_source")
        if isinstance(pcs, dict) and "path" in pcs:
            src = ROOT / pcs["path"]
            dst = sec_dir / src.name
            if secrets_override and src.stem in secrets_override:
                write_secret(dst, _secret_name(src), secrets_override[src.stem])
            else:
                shutil.copy(src, dst)
            pcs["path"] = str(dst)
    _walk(doc, fix_sds)
    wasm = _wasm_filter(doc)
    wasm["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    if plugin_config is not None:
        value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config, indent=1)
        wasm["config"]["configuration"]["value"] = value
    wasm["config"]["configuration"]["value"] = moved_endpoints(wasm["config"]["configuration"]["value"],
                                                               port_map)
    for f in wasm_filters(doc):
        # The upstream role: same VM and configuration (YAML anchors in the
        # shipped file; kept the same here when a test replaces either).
        f["config"]["vm_config"] = wasm["config"]["vm_config"]
        f["config"]["configuration"] = wasm["config"]["configuration"]
    if mutate:
        mutate(doc)
    out = tmp / "envoy.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _secret_name(path: Path) -> str:
    return yaml.safe_load(path.read_text())["resources"][0]["name"]


def write_secret(path: Path, name: str, value: str, atomic: bool = False) -> None:
    doc = {"resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "generic_secret": {"secret": {"inline_string": value}},
    }]}
    text = yaml.safe_dump(doc, sort_keys=False)
    if atomic:
        tmp = path.with_name(path.name + ".new")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        path.write_text(text)


# ----------------------------------------------------------------- envoy

class StartupFailed(RuntimeError):
    def __init__(self, msg: str, gw: "Gateway"):
        super().__init__(msg)
        self.gateway = gw


class Gateway:
    """A real Envoy with the filter, on free ports."""

    def __init__(self, tmp: Path, mock_port: int, *, plugin_config=None,
                 secrets_override=None, mutate=None, env: dict | None = None,
                 vllm_key: str | None = VLLM_KEY, wait: bool = True,
                 start_timeout: float = 30.0, concurrency: int = 2):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port, self.admin_port = free_port(), free_port()
        self.config_path = render_envoy(
            tmp, port=self.port, admin_port=self.admin_port, mock_port=mock_port,
            plugin_config=plugin_config, secrets_override=secrets_override, mutate=mutate)
        self.log = tmp / "envoy.log"
        self.access_log = tmp / "access.log"
        LOG_FILES.extend([self.log, self.access_log])
        e = dict(os.environ)
        e.pop("VLLM_API_KEY", None)
        if vllm_key is not None:
            e["VLLM_API_KEY"] = vllm_key
        e.update(BEDROCK_ENV)
        if env:
            e.update(env)
        args = [str(ENVOY), "-c", str(self.config_path), "--concurrency", str(concurrency),
                "--disable-hot-restart", "-l", "info",
                # Access log lines reach the file within 0.2 s (default 10 s),
                # so tests can read them.
                "--file-flush-interval-msec", "200"]
        with open(self.access_log, "wb") as out, open(self.log, "wb") as err:
            self.proc = _spawn(args, env=e, stdout=out, stderr=err)
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self._admin = httpx.Client(base_url=self.admin, timeout=5)
        self._clients: list = []  # closed at stop()
        if wait:
            self.wait_ready(start_timeout)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartupFailed(
                    f"envoy exited with {self.proc.returncode}:\n{tail(self.log)}", self)
            try:
                r = self._admin.get("/ready")
                if r.status_code == 200 and r.text.strip() == "LIVE" and port_open(self.port):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise StartupFailed(f"envoy not ready after {timeout}s:\n{tail(self.log)}", self)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def admin_get(self, path: str) -> httpx.Response:
        return self._admin.get(path)

    def stats(self) -> dict[str, int]:
        out = {}
        for line in self.admin_get("/stats").text.splitlines():
            name, _, value = line.partition(": ")
            try:
                out[name] = int(value)
            except ValueError:
                pass
        return out

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self, *, local_address: str | None = None, **kw) -> httpx.Client:
        """A raw recording client for this gateway."""
        c = recording_client(self.url, local_address=local_address, **kw)
        self._clients.append(c)
        return c

    def client(self, key: str | None = DEMO_KEY, *, local_address: str | None = None,
               max_retries: int = 0, timeout: float = 30.0, base_path: str = "/v1", **kw):
        from openai import OpenAI
        http = recording_client(local_address=local_address, timeout=timeout)
        self._clients.append(http)
        return OpenAI(base_url=self.url + base_path, api_key=key if key is not None else "",
                      max_retries=max_retries, http_client=http, **kw)

    def async_client(self, key: str = DEMO_KEY, *, max_retries: int = 0, **kw):
        from openai import AsyncOpenAI
        return AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries,
                           http_client=async_recording_client(), **kw)

    def stop(self) -> None:
        stop_process(self.proc)
        self._admin.close()
        for c in self._clients:
            c.close()


# ----------------------------------------------------------------- assertions

def nonce(tag: str = "n") -> str:
    return f"{tag}-{secrets.token_hex(6)}"


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = "*",
                        etype: str | None = None, param: str | None = "*",
                        request_id: bool = True) -> dict:
    """`resp` is an OpenAI-shaped error with all four keys; returns `error`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if code != "*":
        assert err["code"] == code, err
    if etype is not None:
        assert err["type"] == etype, err
    if param != "*":
        assert err["param"] == param, err
    if request_id:
        assert resp.headers.get("x-request-id"), dict(resp.headers)
    return err


def chat_body(content: str, model: str | None = "gpt-4o-mini", **extra) -> dict:
    b = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        b["model"] = model
    return b


# ----------------------------------------------------------------- chat models

# model -> (provider name, mock provider, upstream model, path, query, host,
#           credential header, credential value)
CHAT_MODELS = {
    "gpt-4o-mini": ("openai", "openai", "gpt-4o-mini", "/v1/chat/completions", "",
                    "api.openai.com", "authorization", "Bearer " + OPENAI_KEY),
    "gpt-4o": ("openai", "openai", "gpt-4o-2024-08-06", "/v1/chat/completions", "",
               "api.openai.com", "authorization", "Bearer " + OPENAI_KEY),
    "azure-gpt-4o-mini": ("azure", "azure", "gpt-4o-mini",
                          "/openai/deployments/gpt-4o-mini/chat/completions",
                          "api-version=2024-10-21", "demo.openai.azure.com",
                          "api-key", AZURE_KEY),
    "llama3.2": ("ollama", "ollama", "llama3.2", "/ollama/v1/chat/completions", "",
                 "localhost:11434", None, None),
    "qwen2.5-7b": ("vllm", "vllm", "Qwen/Qwen2.5-7B-Instruct", "/vllm/v1/chat/completions", "",
                   "vllm.local:8000", "authorization", "Bearer " + VLLM_KEY),
    "claude-sonnet-4-5": ("anthropic", "anthropic", "claude-sonnet-4-5", "/v1/messages", "",
                          "api.anthropic.com", "x-api-key", ANTHROPIC_KEY),
    "claude-haiku-4-5": ("anthropic", "anthropic", "claude-haiku-4-5-20251001", "/v1/messages", "",
                         "api.anthropic.com", "x-api-key", ANTHROPIC_KEY),
}
#: Chat models whose provider speaks OpenAI's API (the body passes through).
OPENAI_SHAPED = [m for m, v in CHAT_MODELS.items() if v[0] != "anthropic"]
CREDENTIAL_HEADERS = {"authorization", "api-key", "x-api-key"}


def check_upstream(req: dict, model: str, caller_key: str = DEMO_KEY) -> dict:
    """The request as the mock recorded it went where `model` says, with the
    provider's credential and nothing of the caller's."""
    provider, mock_provider, upstream, path, query, host, cred_h, cred_v = CHAT_MODELS[model]
    h = req["headers"]
    assert req["provider"] == mock_provider
    assert req["method"] == "POST"
    assert req["path"] == path
    assert req["query"] == query
    assert h["host"] == host
    present = CREDENTIAL_HEADERS & set(h)
    if cred_h is None:
        assert not present, h.keys()
    else:
        assert present == {cred_h}, h.keys()
        assert h[cred_h] == cred_v
    assert caller_key not in json.dumps(h)
    assert caller_key not in req["body"]
    assert "x-llmgw-cluster" not in h
    assert "accept-encoding" not in h
    assert h["content-type"] == "application/json"
    body = json.loads(req["body"])
    assert int(h["content-length"]) == len(req["body"].encode())
    assert body["model"] == upstream
    if mock_provider == "anthropic":
        assert h["anthropic-version"] == "2023-06-01"
    return body


def auth(key: str = DEMO_KEY) -> dict:
    return {"authorization": f"Bearer {key}"}


def iter_texts() -> Iterable[tuple[str, str]]:
    """(where, text) for every recorded response and every log file."""
    for i, r in enumerate(list(RESPONSES)):
        yield f"response #{i} {r.method} {r.url}", r.text()
    for p in LOG_FILES:
        if p.exists():
            yield str(p), p.read_text(errors="replace")


# ----------------------------------------------------------------- raw upstream

class RawUpstream:
    """A minimal provider stand-in for answers the mock cannot give: it
    answers with the status in the request header `x-raw-status`, the body in
    `x-raw-body` (default empty) and, when given, `retry-after` from
    `x-raw-retry-after`. Runs in a thread of the test process."""

    def __init__(self):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                status = int(self.headers.get("x-raw-status") or 200)
                body = (self.headers.get("x-raw-body") or "").encode()
                self.send_response(status)
                if body:
                    self.send_header("content-type", self.headers.get("x-raw-type") or "text/plain")
                ra = self.headers.get("x-raw-retry-after")
                if ra:
                    self.send_header("retry-after", ra)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
