#!/usr/bin/env python3
"""What routing costs per request (not a test; prints its numbers).

N sequential non-streamed chat requests through the shipped Envoy config,
one each way in turn: `gpt-4o` (one provider, translated in the listener's
filter) and `gpt-4o-ha` (two deployments: planned in the listener's filter,
sent through the routing cluster, translated by its upstream filter, via the
deployment's loopback listener), then `gpt-4o-ha` when its first choice (OpenAI,
by priority, cooldown off) answers 503 and the second (Azure) answers. p50/p90/p99 of each.

Usage: .venv/bin/python scripts/bench-routing.py [--requests 2000]
The shipped quotas are left out (no admission on either side).
(build first: make build). Starts and stops its own mock and Envoy."""
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


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    n = ap.parse_args().requests
    tmp = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    mock = gw.Mock(tmp / "mock")
    try:
        cfg = gw.shipped_plugin_config()
        cfg.pop("quotas")  # the demo's 1000 requests a minute would refuse the run
        # Failover every time: OpenAI first (priority), no cooldown to skip it.
        cfg["routing"]["cooldown"] = {"failures": 0, "window_seconds": 1, "seconds": 1}
        next(m for m in cfg["models"] if m["name"] == "gpt-4o-ha")["strategy"] = "priority"
        g = gw.Gateway(tmp / "gw", mock.port, plugin_config=cfg)
        c = httpx.Client(base_url=g.url, timeout=30)
        body = {m: gw.chat_body("hello", m) for m in ("gpt-4o", "gpt-4o-ha")}
        for m in body:  # warm up connections and VMs
            for _ in range(50):
                c.post("/v1/chat/completions", headers=gw.auth(), json=body[m])
        times: dict[str, list[float]] = {"gpt-4o": [], "gpt-4o-ha": [], "gpt-4o-ha, 2 attempts": []}
        for i in range(n):
            for m in ("gpt-4o", "gpt-4o-ha"):
                t = time.perf_counter()
                r = c.post("/v1/chat/completions", headers=gw.auth(), json=body[m])
                times[m].append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
        mock.add_fault(provider="openai", behavior="fail=503")
        for i in range(n // 2):
            t = time.perf_counter()
            r = c.post("/v1/chat/completions", headers=gw.auth(), json=body["gpt-4o-ha"])
            times["gpt-4o-ha, 2 attempts"].append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200 and r.headers["x-llm-attempts"] == "2", r.text
        print(f"{'requests':<24} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
        for k, xs in times.items():
            print(f"{k:<24} {len(xs):>6} {statistics.median(xs):>8.3f} {pct(xs, .9):>8.3f} {pct(xs, .99):>8.3f}")
        d = statistics.median(times["gpt-4o-ha"]) - statistics.median(times["gpt-4o"])
        print(f"routing adds {d:.3f} ms at p50 (sequential, one client, --concurrency 2)")
    finally:
        gw.stop_all()


if __name__ == "__main__":
    main()
