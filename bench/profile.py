"""Where the filter's time goes (run by `make bench` after the bench).

1. Natively: bench/profile (a small Rust program on the filter crate) times
   each pure pipeline stage the glue calls for one request — key hash and
   caller lookup, body parse + model lookup + provider request, response
   head/body/usage, a 200-chunk stream — on the bench's config and bodies.
2. In Envoy: `perf record` on plain Envoy and on Envoy + filter while wrk
   sends the 1 KB chat at concurrency 32; CPU per request split into the
   Wasm code V8 compiled (perf's `[JIT]`), Envoy itself (its binary: the
   HTTP stack, V8's runtime and the proxy-wasm host calls; the binary is
   stripped, so no finer split), the kernel and libc.

Writes the `profile` section of bench/results.md and bench/profile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import harness as H
import gen_config
import report

PROFILE_DIR = H.BENCH / "profile"
PROFILE_BIN = H.ROOT / "target" / "bench-profile" / "release" / "llmgw-bench-profile"


def native(tmp: Path, plugin: dict) -> dict:
    mock = H.start_mock(tmp)
    d = tmp / "native"
    d.mkdir(exist_ok=True)
    (d / "plugin.json").write_text(json.dumps(plugin))
    (d / "key.txt").write_text(gen_config.caller_key(gen_config.BENCH_CALLER))
    chat = H.padded_body(1024)
    stream = H.padded_body(1024, "[[mock:chunks=200]]", stream=True)
    (d / "chat1k.json").write_bytes(chat)
    (d / "prompt100k.json").write_bytes(H.padded_body(100 * 1024))
    (d / "stream200.json").write_bytes(stream)
    c = H.Conn(mock.port)
    _, resp, _, _ = c.exchange(H.request_bytes(mock, chat))
    _, sse, _, _ = c.exchange(H.request_bytes(mock, stream))
    c.close()
    H.stop(mock.proc)
    (d / "resp.json").write_bytes(resp)
    (d / "stream.sse").write_bytes(sse)
    env = dict(os.environ, CARGO_TARGET_DIR=str(H.ROOT / "target" / "bench-profile"))
    subprocess.run(["nice", "cargo", "build", "--quiet", "--release", "--manifest-path",
                    str(PROFILE_DIR / "Cargo.toml")], check=True, env=env)
    r = subprocess.run([str(PROFILE_BIN), str(d)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def perf_split(tmp: Path, plugin: dict, seconds: int) -> dict | None:
    if not shutil.which("perf"):
        return None
    mock = H.start_mock(tmp)
    body = tmp / "chat1k.json"
    body.write_bytes(H.padded_body(1024))
    out = {}
    key = gen_config.caller_key(gen_config.BENCH_CALLER)
    # "passthrough": the filter in the chain with the same config, but the
    # requests are not under its path prefix (it returns Continue at once)
    # and a plain route sends them to the mock: the fixed cost of a Wasm
    # filter in Envoy.
    configs = [("envoy", None, mock.key, False), ("passthrough", dict(plugin, path_prefix="/elsewhere"), mock.key, True),
               ("filter", plugin, key, False)]
    if "quotas" in plugin:
        configs.append(("filter_noquota", {k: v for k, v in plugin.items() if k != "quotas"}, key, False))
    # The bench sends as one caller (its quota records are the most
    # contended); here also as 64 callers in turn.
    keys = tmp / "keys64.txt"
    keys.write_text("".join(gen_config.caller_key(i) + "\n" for i in range(0, 1000, 1000 // 64)[:64]))
    configs.append(("filter_64callers", plugin, key, False))
    for name, pl, key, plain in configs:
        s = H.start_envoy(tmp, f"perf-{name}", mock.port, pl, key, plain_route=plain)
        extra = {"BENCH_KEYS": str(keys)} if name == "filter_64callers" else None
        H.wrk(s, body, connections=32, seconds=1, extra_env=extra)  # warm-up
        data = tmp / f"perf-{name}.data"
        c0 = H.cpu_seconds(s.pid)
        p = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(s.pid), "-o", str(data),
                              "--", "sleep", str(seconds)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = H.wrk(s, body, connections=32, seconds=seconds, extra_env=extra)
        p.wait()
        if r["status_errors"] or r["read_errors"] or r["timeouts"]:
            raise RuntimeError(f"profile run {name}: errors {r}")
        cpu = H.cpu_seconds(s.pid) - c0
        H.stop(s.proc)
        rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso"],
                             capture_output=True, text=True).stdout
        shares = {}
        for m in re.finditer(r"^\s+([\d.]+)%\s+(.+?)\s*$", rep, re.M):
            dso = m.group(2)
            dso = "wasm (V8 JIT)" if dso.startswith("[JIT]") else \
                "kernel" if "kernel" in dso else "envoy binary" if dso == "envoy" else \
                "libc" if dso.startswith("libc") else "other"
            shares[dso] = shares.get(dso, 0) + float(m.group(1)) / 100
        us = cpu / max(r["requests"], 1) * 1e6
        out[name] = {"requests": r["requests"], "rps": r["requests"] / (r["duration_us"] / 1e6),
                     "p50_ms": r["p50_us"] / 1e3, "cpu_us_per_request": us,
                     "cores": cpu / (r["duration_us"] / 1e6),
                     "us_per_request": {k: v * us for k, v in shares.items()}, "shares": shares}
    H.stop(mock.proc)
    return out


def markdown(res: dict) -> str:
    n = res["native"]
    lines = ["Native timings of the filter's pure core (x86-64 release build of the same Rust code the "
             "`.wasm` is compiled from, `bench/profile`; ns per call, median of 7 batches; V8's Wasm code "
             "runs these somewhat slower than native):", "",
             "| stage (what the glue calls for one request) | ns |", "|---|---|"]
    for k, v in n.items():
        if k != "events":
            lines.append(f"| {k} | " + f"{v:,.0f}".replace(",", " ") + " |")
    p = res.get("perf")
    if p:
        lines += ["", f"`perf record` (999 Hz) on each Envoy during {res['perf_seconds']} s of wrk, 1 KB chat, "
                  "concurrency 32: CPU µs per request, by where the samples fell. `wasm (V8 JIT)` is the "
                  "filter's own compiled code; `envoy binary` holds Envoy's HTTP stack and also V8's runtime "
                  "and the proxy-wasm host calls (header and body copies between Envoy and the VM), which the "
                  "stripped binary does not let perf tell apart.", "",
                  "| | req/s | cores used | CPU µs / request | wasm (V8 JIT) | envoy binary | kernel | libc | other |",
                  "|---|---|---|---|---|---|---|---|---|"]
        names = {"envoy": "plain Envoy", "passthrough": "Envoy + filter, requests outside its prefix (Continue at once)",
                 "filter": "Envoy + filter", "filter_noquota": "Envoy + filter, no `quotas`",
                 "filter_64callers": "Envoy + filter, 64 callers in turn"}
        for name in [n for n in names if n in p]:
            d = p[name]
            u = d["us_per_request"]
            lines.append(f"| {names[name]} | {d.get('rps', 0):,.0f} | {d.get('cores', 0):.2f} | "
                         f"{d['cpu_us_per_request']:.1f} | "
                         + " | ".join(f"{u.get(k, 0):.1f}" for k in
                                      ("wasm (V8 JIT)", "envoy binary", "kernel", "libc", "other")) + " |")
        de, df = p["envoy"]["us_per_request"], p["filter"]["us_per_request"]
        added = p["filter"]["cpu_us_per_request"] - p["envoy"]["cpu_us_per_request"]
        pt = p.get("passthrough")
        lines += ["", (f"A Wasm filter that only looks at the path and continues costs "
                       f"{pt['cpu_us_per_request'] - p['envoy']['cpu_us_per_request']:+.1f} µs per request "
                       "(stream context in the VM, the calls into it per phase). " if pt else "")
                  + f"The filter adds {added:.1f} µs of CPU per request: "
                  f"{df.get('wasm (V8 JIT)', 0):.1f} µs in its own Wasm code, "
                  f"{df.get('envoy binary', 0) - de.get('envoy binary', 0):+.1f} µs in the Envoy binary "
                  f"(host calls, V8 runtime, buffering the body), "
                  f"{df.get('kernel', 0) - de.get('kernel', 0):+.1f} µs in the kernel."]
        if "filter_noquota" in p:
            dq = p["filter_noquota"]
            lines[-1] += (f" The same config without `quotas`: {dq['cpu_us_per_request']:.1f} µs per request and "
                          f"{dq.get('rps', 0):,.0f} req/s against {p['filter'].get('rps', 0):,.0f} with quotas: "
                          f"the quota admission and settlement (compare-and-swap on shared data) cost "
                          f"{p['filter']['cpu_us_per_request'] - dq['cpu_us_per_request']:+.1f} µs per request.")
        if "filter_64callers" in p:
            d6 = p["filter_64callers"]
            lines[-1] += (f" Sent as 64 callers in turn instead of one (less contention on each caller's "
                          f"record; the team records are still shared): {d6['cpu_us_per_request']:.1f} µs per request, "
                          f"{d6.get('rps', 0):,.0f} req/s.")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--quotas", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    tmp = H.RUN / "profile"
    tmp.mkdir(parents=True, exist_ok=True)
    quotas = H.plugin_accepts_quotas() if a.quotas == "auto" else a.quotas == "on"
    plugin = gen_config.plugin_config(quotas)
    res = {"native": native(tmp, plugin), "perf": perf_split(tmp, plugin, a.seconds),
           "perf_seconds": a.seconds, "quotas": quotas}
    print(json.dumps(res, indent=1))
    if not a.no_write:
        (H.BENCH / "profile.json").write_text(json.dumps(res, indent=1))
        report.replace_section("profile", markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
