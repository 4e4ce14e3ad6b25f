#!/usr/bin/env python3
"""Two measurements of the quotas (not a test; prints its numbers):

1. latency: N sequential non-streamed chat requests through Envoy with
   quotas on and with quotas off (same config otherwise, same mock), in
   one request each way in turn; p50/p90/p99 of each and the difference.
2. memory: Envoy with 10 000 keyed callers, with and without quotas: RSS
   and the admin /memory numbers after configure (quota records are created
   then), and after one request per caller (each record gains the model).

Usage: .venv/bin/python scripts/bench-quotas.py [--requests 2000] [--callers 10000]
(build first: make build). Starts and stops its own mock and Envoys."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import gw  # noqa: E402
import quota_util as qu  # noqa: E402

BIG = 10**12


def quotas_all_kinds() -> dict:
    """Every kind of limit set (high enough never to refuse), a team limit
    too: admission and settlement touch the caller's and the team's record."""
    return {
        "default": {"requests_per_minute": BIG, "tokens_per_minute": BIG, "tokens_per_day": BIG,
                    "usd_per_day": 1e9, "usd_per_month": 1e9, "max_concurrent": 1000},
        "teams": {"bench-team": {"usd_per_month": 1e9}},
    }


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def latency(tmp: Path, mock: gw.Mock, n: int) -> None:
    on_cfg, keys = qu.config_with({"bench": {"team": "bench-team"}}, quotas_all_kinds())
    off_cfg = {k: v for k, v in on_cfg.items() if k != "quotas"}
    key = keys["bench"]
    gws = {"on": gw.Gateway(tmp / "on", mock.port, plugin_config=on_cfg, concurrency=2),
           "off": gw.Gateway(tmp / "off", mock.port, plugin_config=off_cfg, concurrency=2)}
    times: dict[str, list[float]] = {"on": [], "off": []}
    body = gw.chat_body("latency probe", "gpt-4o-mini", max_tokens=16)
    try:
        clients = {k: httpx.Client(base_url=g.url, timeout=30) for k, g in gws.items()}
        for c in clients.values():  # warm up
            for _ in range(50):
                assert c.post(qu.CHAT, headers=gw.auth(key), json=body).status_code == 200
        # One request each way in turn (the order swapped every time), so
        # that both see the same load from the rest of the machine.
        for i in range(n):
            for name in (("on", "off") if i % 2 == 0 else ("off", "on")):
                t0 = time.perf_counter()
                r = clients[name].post(qu.CHAT, headers=gw.auth(key), json=body)
                times[name].append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        rep = qu.report(gws["on"], key)
        assert rep["usage"]["requests"]["day"] >= n, rep["usage"]["requests"]
        assert "quotas" not in off_cfg
        for c in clients.values():
            c.close()
    finally:
        for g in gws.values():
            g.stop()
    print(f"latency, {n} sequential non-streamed chat requests each way "
          f"(alternating, Envoy --concurrency 2, keep-alive client):")
    for name in ("off", "on"):
        t = [x * 1000 for x in times[name]]
        print(f"  quotas {name:3}: p50 {statistics.median(t):.3f} ms  p90 {pct(t, .9):.3f} ms  "
              f"p99 {pct(t, .99):.3f} ms  mean {statistics.fmean(t):.3f} ms")
    d50 = (statistics.median(times["on"]) - statistics.median(times["off"])) * 1e6
    pairs = statistics.median(a - b for a, b in zip(times["on"], times["off"])) * 1e6
    print(f"  extra latency with quotas: p50 on - p50 off {d50:.0f} µs; "
          f"median of the paired differences {pairs:.0f} µs")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_numbers(g: gw.Gateway) -> dict:
    m = g.admin_get("/memory").json()
    return {"rss_kib": rss_kib(g.pid), "allocated": int(m["allocated"]),
            "heap_size": int(m["heap_size"])}


def memory(tmp: Path, mock: gw.Mock, n: int) -> None:
    callers = {f"c{i:05d}": {"team": f"t{i % 100:02d}"} for i in range(n)}
    quotas = {"default": {"requests_per_minute": 1000, "tokens_per_minute": 10**7,
                          "usd_per_day": 100, "max_concurrent": 10}}
    on_cfg, keys = qu.config_with(callers, quotas)
    off_cfg = {k: v for k, v in on_cfg.items() if k != "quotas"}
    out = {}
    for name, cfg in (("off", off_cfg), ("on", on_cfg)):
        g = gw.Gateway(tmp / f"mem-{name}", mock.port, plugin_config=cfg, concurrency=2,
                       start_timeout=120)
        try:
            time.sleep(2)
            out[name] = memory_numbers(g)
            t0 = time.monotonic()
            with httpx.Client(base_url=g.url, timeout=30) as c:
                for cid, key in keys.items():
                    r = c.post(qu.CHAT, headers=gw.auth(key),
                               json=gw.chat_body("m", "gpt-4o-mini", max_tokens=4))
                    assert r.status_code == 200, r.text
            out[name + "+requests"] = memory_numbers(g)
            if name == "on":
                rep = qu.report(g, keys["c00000"])
                assert rep["usage"]["requests"]["day"] == 1, rep
            print(f"  ({n} requests, quotas {name}: {time.monotonic() - t0:.1f} s)")
        finally:
            g.stop()
    print(f"memory, {n} keyed callers in 100 teams, Envoy --concurrency 2 "
          f"(3 VMs: main + 2 workers; shared data is one per process):")
    for k, v in out.items():
        print(f"  quotas {k:13}: RSS {v['rss_kib'] / 1024:.1f} MiB, /memory allocated "
              f"{v['allocated'] / 2**20:.1f} MiB, heap {v['heap_size'] / 2**20:.1f} MiB")
    for when, a, b in (("after configure", "off", "on"),
                       ("after one request per caller", "off+requests", "on+requests")):
        d_rss = (out[b]["rss_kib"] - out[a]["rss_kib"]) * 1024
        d_alloc = out[b]["allocated"] - out[a]["allocated"]
        print(f"  quotas on - off, {when}: RSS {d_rss / n:+.0f} B/caller, "
              f"allocated {d_alloc / n:+.0f} B/caller")
    rec = 2 + 24 + 72 + 2
    key_len = len("llm-gateway/quota/c/c00000")
    print(f"  record sizes: a caller's record {rec} B value + {key_len} B key; "
          f"+{2 + len('gpt-4o-mini') + 72} B per model used this month")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--callers", type=int, default=10000)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-quotas-") as d:
        tmp = Path(d)
        mock = gw.Mock(tmp / "mock")
        try:
            if not a.skip_latency:
                latency(tmp, mock, a.requests)
            if not a.skip_memory:
                memory(tmp, mock, a.callers)
        finally:
            mock.stop()
            gw.stop_all()


if __name__ == "__main__":
    main()
