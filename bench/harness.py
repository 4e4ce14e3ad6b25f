"""Processes and measurements shared by `make bench` and `make soak`.

Starts the mock (`--record-limit 0`), plain Envoy, Envoy + the filter and the
LiteLLM proxy on free loopback ports; reads CPU time and RSS of a process
(tree) from /proc; runs wrk with a Lua script; a small raw-socket HTTP/1.1
client for time-to-first-byte / time-to-last-byte of streams. Every process
started here is stopped by pid at exit (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ENVOY = ROOT / ".venv" / "bin" / "envoy"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
MOCK_BIN = ROOT / "target" / "release" / "llm-mock"
LLMGW = ROOT / "target" / "release" / "llmgw"
LITELLM = BENCH / ".venv-litellm" / "bin" / "litellm"
RUN = BENCH / ".run"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

sys.path.insert(0, str(BENCH))
import gen_config  # noqa: E402
sys.path.insert(0, str(ROOT / "scripts"))
from netutil import free_port, port_open, tail  # noqa: E402,F401

# ----------------------------------------------------------------- processes

PROCS: list[subprocess.Popen] = []

try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover
    _LIBC = None


def _die_with_parent():
    os.setpgrp()  # own process group: LiteLLM's children are stopped with it
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(args, *, env=None, log: Path, cwd=ROOT) -> subprocess.Popen:
    with open(log, "wb") as out:
        p = subprocess.Popen([str(a) for a in args], env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=str(cwd), preexec_fn=_die_with_parent)
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen, timeout: float = 8.0) -> None:
    """SIGTERM to the process group we created for it (by its id), wait,
    then SIGKILL."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=timeout)
    else:  # the leader is gone; children of its group may remain
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in PROCS:
        PROCS.remove(p)


def stop_all() -> None:
    for p in list(reversed(PROCS)):
        stop(p)


atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# ----------------------------------------------------------------- /proc

def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo += _children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its live descendants (seconds)."""
    total = 0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # fields 14, 15: utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """VmRSS of the process and its live descendants."""
    total = 0
    for p in tree(pid):
        try:
            m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text(), re.M)
            total += int(m.group(1)) * 1024 if m else 0
        except OSError:
            pass
    return total


# ----------------------------------------------------------------- servers

@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    key: str            # the Authorization bearer the client sends
    path: str           # chat completions path
    log: Path
    admin_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def wait_port(p: subprocess.Popen, port: int, log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited with {p.returncode}:\n{tail(log)}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening after {timeout}s:\n{tail(log)}")


def start_mock(tmp: Path) -> Server:
    port = free_port()
    log = tmp / "mock.log"
    p = spawn([MOCK_BIN, "--listen", f"127.0.0.1:{port}", "--record-limit", "0", "--quiet"], log=log)
    wait_port(p, port, log, 15, "llm-mock")
    return Server("mock", p, port, gen_config.MOCK_KEYS["BENCH_OPENAI_KEY"], "/v1/chat/completions", log)


def envoy_yaml(*, port: int, admin_port: int, mock_port: int, plugin: dict | None,
               hcm_extra: dict | None = None, plain_route: bool = False) -> dict:
    """One listener and one `mock` cluster; with `plugin`, the wasm filter in
    front of the router and a route on the filter's cluster header, else a
    plain route to the same cluster."""
    if plugin is None or plain_route:
        routes = [{"match": {"prefix": "/"}, "route": {"cluster": "mock", "timeout": "600s"}}]
    if plugin is None:
        filters = []
    else:
        routes = [
            {"match": {"prefix": "/", "headers": [{"name": plugin["cluster_header"], "present_match": True}]},
             "route": {"cluster_header": plugin["cluster_header"], "timeout": "600s"},
             "request_headers_to_remove": [plugin["cluster_header"]]},
            {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
        ] if not plain_route else routes
        filters = [{
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "llm-gateway", "root_id": "llm-gateway", "fail_open": False,
                    "allow_on_headers_stop_iteration": True,
                    "vm_config": {
                        "vm_id": "llm-gateway", "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": str(WASM)}},
                        "environment_variables": {"key_values": dict(gen_config.MOCK_KEYS)},
                    },
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": json.dumps(plugin)},
                },
            },
        }]
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    doc = {
        "node": {"id": "llmgw-bench", "cluster": "llmgw-bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "llm_api",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "per_connection_buffer_limit_bytes": 16777216,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "llm_api",
                        "stream_idle_timeout": "300s",
                        "request_timeout": "0s",
                        "route_config": {"name": "bench", "virtual_hosts": [
                            {"name": "bench", "domains": ["*"], "routes": routes}]},
                        "http_filters": filters,
                        **(hcm_extra or {}),
                    }}]}],
            }],
            "clusters": [{
                "name": "mock", "type": "STATIC", "connect_timeout": "5s",
                "load_assignment": {"cluster_name": "mock", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                 "port_value": mock_port}}}}]}]},
                # No circuit breaker trips at the bench's concurrency.
                "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                                                     "max_requests": 100000}]},
            }],
        },
    }
    # The shipped config's tag extraction for the filter's metric labels (on
    # both Envoys: it costs only when a stat is created).
    shipped = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    if "stats_config" in shipped:
        doc["stats_config"] = shipped["stats_config"]
    return doc


def start_envoy(tmp: Path, name: str, mock_port: int, plugin: dict | None, key: str,
                concurrency: int = 2, hcm_extra: dict | None = None, plain_route: bool = False) -> Server:
    port, admin = free_port(), free_port()
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(envoy_yaml(port=port, admin_port=admin, mock_port=mock_port,
                                             plugin=plugin, hcm_extra=hcm_extra, plain_route=plain_route),
                                  sort_keys=False))
    log = tmp / f"{name}.log"
    p = spawn([ENVOY, "-c", cfg, "--concurrency", str(concurrency), "--disable-hot-restart",
               "-l", "warning"], log=log)
    wait_port(p, port, log, 60, name)
    return Server(name, p, port, key, "/v1/chat/completions", log, admin_port=admin)


def start_litellm(tmp: Path, mock_port: int) -> Server:
    port = free_port()
    master = "sk-bench-litellm-master"
    cfg = tmp / "litellm.yaml"
    cfg.write_text(yaml.safe_dump(gen_config.litellm_config(mock_port, master), sort_keys=False))
    env = dict(os.environ)
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map at start
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
        "DISABLE_ADMIN_UI": "True",
        "PYTHONUNBUFFERED": "1",
    })
    for k in ("DATABASE_URL", "REDIS_HOST", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(k, None)
    log = tmp / "litellm.log"
    p = spawn([LITELLM, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
               "--num_workers", "1"], env=env, log=log)
    wait_port(p, port, log, 180, "litellm")
    return Server("litellm", p, port, master, "/v1/chat/completions", log)


def plugin_accepts_quotas() -> bool:
    """Does this branch's filter accept `quotas`? Checked with the filter's
    own validation (`llmgw config check`), which parses like the filter."""
    RUN.mkdir(parents=True, exist_ok=True)
    probe = RUN / "quota-probe.json"
    probe.write_text(json.dumps(gen_config.plugin_config(True)))
    r = subprocess.run([LLMGW, "config", "check", str(probe), "--assume-env"],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return True
    if "unknown field `quotas`" in r.stdout + r.stderr:
        return False
    raise RuntimeError(f"llmgw config check failed on the bench config:\n{r.stdout}{r.stderr}")


def admin_get(server: Server, path: str) -> str:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}{path}", timeout=10) as r:
        return r.read().decode()


def envoy_stats(server: Server) -> dict[str, float]:
    out = {}
    for line in admin_get(server, "/stats").splitlines():
        name, _, value = line.partition(": ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


# ----------------------------------------------------------------- clients

def chat_body(content: str, stream: bool = False) -> bytes:
    body = {"model": gen_config.BENCH_MODEL, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def padded_body(size: int, prefix: str = "", stream: bool = False) -> bytes:
    """A chat body of exactly `size` bytes (prose filler after `prefix`)."""
    words = ("the gateway forwards this prompt to the provider and reads the usage "
             "of the answer so that quotas and costs stay exact ").split()
    base = len(chat_body(prefix, stream))
    need = size - base
    text, i = prefix, 0
    while len(text) - len(prefix) < need:
        text += ("" if text == "" else " ") + words[i % len(words)]
        i += 1
    text = text[:len(prefix) + need]
    b = chat_body(text, stream)
    assert len(b) == size, (len(b), size)
    return b


def request_bytes(server: Server, body: bytes) -> bytes:
    return (f"POST {server.path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Conn:
    """A keep-alive HTTP/1.1 connection that times one exchange."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None

    def _recv(self) -> bytes:
        d = self.sock.recv(262144)
        if not d:
            raise ConnectionError("connection closed mid-response")
        return d

    def exchange(self, req: bytes):
        """(status, body, ttfb_s, ttlb_s): ttfb = first byte of the body."""
        if self.sock is None:
            self._connect()
        t0 = time.perf_counter()
        self.sock.sendall(req)
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        ttfb = None
        body = bytearray()
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            if buf and n:
                ttfb = time.perf_counter() - t0
            while len(buf) < n:
                buf += self._recv()
                if ttfb is None:
                    ttfb = time.perf_counter() - t0
            body += buf[:n]
            self.buf = buf[n:]
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in buf:
                    buf += self._recv()
                size_line, _, buf = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    buf += self._recv()
                if size and ttfb is None:
                    ttfb = time.perf_counter() - t0
                body += buf[:size]
                buf = buf[size + 2:]
                if size == 0:
                    break
            self.buf = buf
        else:  # read to close
            try:
                while True:
                    buf += self._recv()
                    if ttfb is None:
                        ttfb = time.perf_counter() - t0
            except ConnectionError:
                pass
            body += buf
            self.close()
        ttlb = time.perf_counter() - t0
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, bytes(body), (ttfb if ttfb is not None else ttlb), ttlb


def check_answer(status: int, body: bytes, stream: bool, chunks: int | None = None) -> str | None:
    """None if the answer is a real chat completion, else what is wrong."""
    if status != 200:
        return f"status {status}: {body[:300]!r}"
    if stream:
        events = [ln for ln in body.split(b"\n") if ln.startswith(b"data:")]
        if not events or events[-1].strip() != b"data: [DONE]":
            return f"stream without [DONE]: {body[-300:]!r}"
        content = 0
        for e in events[:-1]:
            d = json.loads(e[5:])
            for c in d.get("choices", []):
                if c.get("delta", {}).get("content"):
                    content += 1
        if chunks is not None and content != chunks:
            return f"{content} content chunks, expected {chunks}"
        return None
    try:
        d = json.loads(body)
        d["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"not a chat completion: {body[:300]!r}"
    return None


# ----------------------------------------------------------------- wrk

WRK_LUA = BENCH / "wrk" / "post.lua"


def wrk(server: Server, body_file: Path, *, connections: int, seconds: float,
        threads: int | None = None, script: Path = WRK_LUA, extra_env: dict | None = None) -> dict:
    threads = threads or min(2, connections)
    if not shutil.which("wrk"):
        if script != WRK_LUA or (extra_env or {}).get("BENCH_KEYS"):
            raise RuntimeError("this run needs wrk's Lua scripting (apt-get install wrk)")
        return oha(server, body_file, connections=connections, seconds=seconds)
    env = dict(os.environ)
    env.update({"BENCH_BODY": str(body_file), "BENCH_KEY": server.key, "BENCH_PATH": server.path})
    if extra_env:
        env.update(extra_env)
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(script), server.url(server.path)]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds * 4 + 120)
    m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(m.group(1))


def oha_path() -> str | None:
    for c in (shutil.which("oha"), str(Path.home() / ".cargo" / "bin" / "oha")):
        if c and os.access(c, os.X_OK):
            return c
    return None


def oha(server: Server, body_file: Path, *, connections: int, seconds: float) -> dict:
    """The wrk summary, from oha (the fallback where wrk is not installed)."""
    exe = oha_path()
    if not exe:
        raise RuntimeError("neither wrk nor oha is installed (bench/setup.sh)")
    args = [exe, "-z", f"{max(1, round(seconds))}s", "-c", str(connections), "-m", "POST", "-D", str(body_file),
            "-H", f"Authorization: Bearer {server.key}", "-H", "Content-Type: application/json",
            "--no-tui", "--output-format", "json", "-w", server.url(server.path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=seconds * 4 + 120)
    if r.returncode != 0:
        raise RuntimeError(f"oha failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    d = json.loads(r.stdout)
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = sum((d.get("errorDistribution") or {}).values())
    lat = d.get("latencyPercentiles") or {}
    us = lambda k: int((lat.get(k) or 0) * 1e6)  # noqa: E731
    return {"requests": sum(codes.values()), "duration_us": int(d["summary"]["total"] * 1e6),
            "bytes": d["summary"].get("totalData", 0), "connect_errors": 0, "read_errors": errors,
            "write_errors": 0, "status_errors": sum(v for k, v in codes.items() if not 200 <= k < 400),
            "timeouts": 0, "p50_us": us("p50"), "p90_us": us("p90"), "p99_us": us("p99"),
            "max_us": int((d["summary"].get("slowest") or 0) * 1e6),
            "mean_us": (d["summary"].get("average") or 0) * 1e6, "tool": "oha"}


def machine_info() -> dict:
    cpu = "?"
    try:
        cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    mem = "?"
    try:
        kb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass

    def ver(args):
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=60)
            return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    envoy_v = ver([str(ENVOY), "--version"])
    m = re.search(r"version: [0-9a-f]+/([^/\s]+)/", envoy_v)
    litellm_v = "not installed"
    pip = BENCH / ".venv-litellm" / "bin" / "pip"
    if pip.exists():
        r = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True)
        mm = re.search(r"^Version: (\S+)", r.stdout, re.M)
        litellm_v = mm.group(1) if mm else "?"
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always"],
                         capture_output=True, text=True).stdout.strip()
    # Dirty = changed sources; the bench's own outputs do not count.
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", ".",
                              ":!bench/results.md", ":!bench/*.json", ":!bench/*.png"],
                             capture_output=True, text=True).stdout.strip()
    git += "-dirty" if changed else ""
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
        "kernel": os.uname().release,
        "envoy": m.group(1) if m else envoy_v,
        "litellm": litellm_v,
        "wrk": ver(["wrk", "-v"]).split(" [")[0] if shutil.which("wrk") else
        (ver([oha_path(), "--version"]) + " (no wrk)" if oha_path() else "none"),
        "python": sys.version.split()[0],
        "commit": git,
        "wasm_bytes": WASM.stat().st_size if WASM.exists() else None,
        "load_before": Path("/proc/loadavg").read_text().split()[:3],
    }
