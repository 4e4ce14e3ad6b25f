"""`make bench`: the filter's cost against plain Envoy, the mock itself and
LiteLLM, on the same upstream (the native mock, `--record-limit 0`).

Rows: client → mock; plain Envoy (same listener and cluster, no wasm);
Envoy + filter (50 models, 1 000 callers, quotas when the filter accepts
them, metrics as built); LiteLLM proxy (1 worker, the same models on the
mock's OpenAI path). Workloads: 1 KB chat at concurrency 1 and 32 (wrk), a
200-chunk stream (raw-socket client: time to first and last byte), a 100 KB
prompt (wrk), and a dripping 200-chunk stream (1 ms between events) that
shows whether chunks are forwarded as they come. Repeats are interleaved
(every row once per workload, then again); medians and min–max spread are
reported. Writes bench/results.json, the bench section of bench/results.md
and bench/bench.png; the headline line is printed last.

    python bench/bench.py [--quick] [--repeats N] [--rows mock,envoy,filter,litellm]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import harness as H
import gen_config
import report

WORKLOADS = {
    # name: (kind, concurrency, body, what)
    "chat_c1": ("wrk", 1, "chat1k.json", "1 KB chat, non-streaming, concurrency 1"),
    "chat_c32": ("wrk", 32, "chat1k.json", "1 KB chat, non-streaming, concurrency 32"),
    "stream": ("stream", 1, "stream200.json", "200-chunk stream, concurrency 1"),
    "prompt100k": ("wrk", 1, "prompt100k.json", "100 KB prompt, non-streaming, concurrency 1"),
    "stream_drip": ("drip", 1, "stream200drip.json", "200-chunk stream, 1 ms between chunks"),
}
ROWS = ["mock", "envoy", "filter", "litellm"]


def write_bodies(d: Path) -> dict[str, Path]:
    files = {
        "chat1k.json": H.padded_body(1024),
        "stream200.json": H.padded_body(1024, "[[mock:chunks=200]]", stream=True),
        "prompt100k.json": H.padded_body(100 * 1024),
        "stream200drip.json": H.padded_body(1024, "[[mock:chunks=200,drip=1]]", stream=True),
    }
    out = {}
    for name, b in files.items():
        (d / name).write_bytes(b)
        out[name] = d / name
    return out


def pct(xs: list[float], p: float) -> float:
    """Exact percentile (nearest rank) of a sample."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def stream_run(server: H.Server, body: bytes, seconds: float, max_requests: int | None,
               chunks: int | None) -> dict:
    req = H.request_bytes(server, body)
    conn = H.Conn(server.port)
    ttfb, ttlb, bad = [], [], []
    t0 = time.perf_counter()
    try:
        while True:
            st, b, f, l = conn.exchange(req)
            err = H.check_answer(st, b, True, chunks)
            if err:
                bad.append(err)
            ttfb.append(f)
            ttlb.append(l)
            if max_requests is not None and len(ttlb) >= max_requests:
                break
            if max_requests is None and time.perf_counter() - t0 >= seconds:
                break
    finally:
        conn.close()
    dur = time.perf_counter() - t0
    return {"requests": len(ttlb), "duration_s": dur, "errors": len(bad), "first_error": bad[0] if bad else None,
            "p50_ms": pct(ttlb, 50) * 1e3, "p99_ms": pct(ttlb, 99) * 1e3,
            "ttfb_p50_ms": pct(ttfb, 50) * 1e3, "ttfb_p99_ms": pct(ttfb, 99) * 1e3,
            "ttlb_p50_ms": pct(ttlb, 50) * 1e3, "ttlb_p99_ms": pct(ttlb, 99) * 1e3}


def one_run(server: H.Server, mock: H.Server, wl: str, bodies: dict, secs: dict) -> dict:
    kind, conc, body_name, _ = WORKLOADS[wl]
    c0, m0 = H.cpu_seconds(server.pid), H.cpu_seconds(mock.pid)
    if kind == "wrk":
        r = H.wrk(server, bodies[body_name], connections=conc, seconds=secs[wl])
        res = {"requests": r["requests"], "duration_s": r["duration_us"] / 1e6,
               "errors": r["status_errors"] + r["read_errors"] + r["write_errors"] + r["connect_errors"] + r["timeouts"],
               "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3}
    else:
        chunks = None if server.name == "litellm" else 200
        res = stream_run(server, bodies[body_name].read_bytes(), secs.get(wl, 0),
                         secs["drip_requests"] if kind == "drip" else None, chunks)
    c1, m1 = H.cpu_seconds(server.pid), H.cpu_seconds(mock.pid)
    n = max(res["requests"], 1)
    res["rps"] = res["requests"] / res["duration_s"]
    res["cpu_s_per_1k"] = (c1 - c0) / n * 1000
    res["cpu_cores"] = (c1 - c0) / res["duration_s"]
    res["rps_per_core"] = res["requests"] / (c1 - c0) if c1 > c0 else None
    res["mock_cpu_s_per_1k"] = (m1 - m0) / n * 1000
    res["rss_mb"] = H.rss_bytes(server.pid) / 2**20
    return res


def check_row(server: H.Server, bodies: dict) -> None:
    """Every workload answers a real completion on this row before timing."""
    conn = H.Conn(server.port)
    try:
        for wl, (kind, _, body_name, _) in WORKLOADS.items():
            stream = kind != "wrk"
            st, b, _, _ = conn.exchange(H.request_bytes(server, bodies[body_name].read_bytes()))
            err = H.check_answer(st, b, stream, None if server.name == "litellm" or not stream else 200)
            if err:
                raise RuntimeError(f"{server.name} / {wl}: {err}")
    finally:
        conn.close()


def wasm_memory(server: H.Server) -> dict:
    """What Envoy tells about the filter's VMs (see results.md)."""
    st = H.envoy_stats(server)
    return {k: v for k, v in st.items() if k.startswith(("wasm.", "wasm_vm.", "wasmcustom."))}


def summarize(runs: list[dict]) -> dict:
    """Median and spread (min, max) of each metric over the repeats."""
    out = {}
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for k in keys:
        xs = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if xs:
            out[k] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
    out["errors_total"] = sum(r["errors"] for r in runs)
    out["first_error"] = next((r.get("first_error") for r in runs if r.get("first_error")), None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, sub-second runs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--quotas", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--no-write", action="store_true", help="do not touch results.md / charts")
    a = ap.parse_args()
    rows = [r for r in a.rows.split(",") if r]
    if a.quick:
        a.repeats = 1
        secs = {"chat_c1": 1, "chat_c32": 1, "stream": 0.5, "prompt100k": 1, "drip_requests": 2}
        warm = 0
    else:
        secs = {"chat_c1": 6, "chat_c32": 6, "stream": 5, "prompt100k": 5, "drip_requests": 3}
        warm = 1.0
    if "litellm" in rows and not H.LITELLM.exists():
        print("bench: LiteLLM is not installed (bench/setup.sh); its row is skipped", file=sys.stderr)
        rows.remove("litellm")

    started = time.monotonic()
    tmp = H.RUN / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies(tmp)
    quotas = H.plugin_accepts_quotas() if a.quotas == "auto" else a.quotas == "on"
    plugin = gen_config.plugin_config(quotas)
    info = H.machine_info()
    info["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["quotas"] = quotas
    info["mode"] = "quick" if a.quick else "full"
    print(f"bench: quotas in the filter config: {'on' if quotas else 'off (this filter does not accept quotas yet)'}",
          flush=True)

    mock = H.start_mock(tmp)
    servers: dict[str, H.Server] = {"mock": mock}
    if "envoy" in rows:
        servers["envoy"] = H.start_envoy(tmp, "envoy", mock.port, None, mock.key)
    if "filter" in rows:
        key = gen_config.caller_key(gen_config.BENCH_CALLER)
        servers["filter"] = H.start_envoy(tmp, "filter", mock.port, plugin, key)
    if "litellm" in rows:
        servers["litellm"] = H.start_litellm(tmp, mock.port)
    for r in rows:
        check_row(servers[r], bodies)
    print(f"bench: servers up and answering ({time.monotonic() - started:.0f} s)", flush=True)

    runs: dict[str, dict[str, list]] = {r: {w: [] for w in WORKLOADS} for r in rows}
    # Warm-up: every row, every workload, briefly (JIT, connection pools).
    warm_secs = {k: (warm if k != "drip_requests" else 1) for k in secs}
    for wl in WORKLOADS if warm else ():
        for r in rows:
            one_run(servers[r], mock, wl, bodies, warm_secs)
    for rep in range(a.repeats):
        for wl in WORKLOADS:
            for r in rows:
                res = one_run(servers[r], mock, wl, bodies, secs)
                runs[r][wl].append(res)
                print(f"  rep {rep + 1}/{a.repeats} {wl:11s} {r:8s} {res['rps']:8.0f} req/s  "
                      f"p50 {res['p50_ms']:7.3f} ms  p99 {res['p99_ms']:7.3f} ms  "
                      f"cpu {res['cpu_s_per_1k']:.3f} s/1k  rss {res['rss_mb']:.0f} MB"
                      + (f"  ttfb {res['ttfb_p50_ms']:.3f} ms" if "ttfb_p50_ms" in res else "")
                      + (f"  ERRORS {res['errors']}" if res["errors"] else ""), flush=True)
    vm = wasm_memory(servers["filter"]) if "filter" in servers else {}
    rss_idle = {r: H.rss_bytes(servers[r].pid) / 2**20 for r in rows}
    for s in list(servers.values())[::-1]:
        H.stop(s.proc)
    info["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    info["elapsed_s"] = round(time.monotonic() - started)

    result = {
        "info": info,
        "rows": rows,
        "workloads": {k: v[3] for k, v in WORKLOADS.items()},
        "seconds": secs,
        "repeats": a.repeats,
        "summary": {r: {w: summarize(runs[r][w]) for w in WORKLOADS} for r in rows},
        "runs": runs,
        "wasm_stats": vm,
        "rss_end_mb": rss_idle,
    }
    result["targets"], result["headline"] = report.targets(result)
    if not a.no_write:
        (H.BENCH / "results.json").write_text(json.dumps(result, indent=1))
        report.write_bench(result)
    print()
    for t in result["targets"]:
        print(f"target: {t['what']}: {t['value']} -> {'met' if t['met'] else 'NOT met' if t['met'] is False else 'n/a'}")
    print(result["headline"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
