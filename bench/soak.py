"""`make soak`: one million mixed requests through Envoy + filter, memory
sampled every 50 000 requests, counters checked at the end.

Each segment of 50 000 requests is wrk (16 connections, a weighted mix of
chats, streams, caller errors, provider errors, cut streams and — when the
filter has quotas — requests of a caller over its limit) plus, at the same
time, client disconnects from a Python asyncio client (mid-body, while
waiting for the answer, mid-stream). After each segment: Envoy's RSS and
the Wasm VMs' linear memory (the committed part of each V8 Wasm memory
reservation in /proc/PID/smaps: Envoy has no stat for it).

Fails (exit 1) when:
- Envoy's RSS grows by more than RSS_BOUND_MB after the warm-up (the first
  WARMUP requests), or the Wasm linear memory by more than WASM_BOUND_MB;
- a counter is not back where it must be once the load stops: Envoy's
  active downstream/upstream requests (0), the filter's in-flight / active
  gauges (0), quota in-flight counters in `GET /v1/usage` (0);
- a status outside the mix's expected set appears, a VM was reloaded, or
  the mix's statuses are far off their shares (e.g. every request 503).

    python bench/soak.py [--requests N] [--no-write]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import harness as H
import gen_config
import report

SEGMENT = 50_000
WARMUP = 200_000
RSS_BOUND_MB = 16.0
WASM_BOUND_MB = 1.0
DISCONNECTS_PER_SEGMENT = 1_000
CONNECTIONS = 16

LIMITED = {"id": "soak-limited", "team": "soak", "models": ["gpt-*"]}
ADMIN = {"id": "soak-admin", "team": "soak", "models": ["*"], "admin": True}
LIMITED_RPM = 300


def key_for(caller_id: str) -> str:
    return "sk-llmgw-soak-" + hashlib.sha256(f"{gen_config.SEED}/{caller_id}".encode()).hexdigest()[:32]


def soak_plugin(quotas: bool) -> dict:
    extra = [dict(LIMITED, key_sha256=gen_config.key_sha256(key_for(LIMITED["id"]))),
             dict(ADMIN, key_sha256=gen_config.key_sha256(key_for(ADMIN["id"])))]
    q = None
    if quotas:
        q = gen_config.quotas()
        q["callers"][LIMITED["id"]] = {"requests_per_minute": LIMITED_RPM}
    return gen_config.plugin_config(quotas, extra_callers=extra, quota_override=q)


def lua_str(b: bytes | str) -> str:
    if isinstance(b, str):
        b = b.encode()
    return '"' + "".join(f"\\{c}" if c in (34, 92) else (chr(c) if 32 <= c < 127 else f"\\{c:03d}")
                         for c in b) + '"'


def mix(quotas: bool) -> list[tuple[str, str, dict, bytes, int, set[int]]]:
    """(name, path, headers, body, weight, expected statuses)."""
    good = gen_config.caller_key(gen_config.BENCH_CALLER)
    h = lambda k: {"Authorization": f"Bearer {k}", "Content-Type": "application/json"}  # noqa: E731

    def chat(text, stream=False, **extra):
        b = {"model": gen_config.BENCH_MODEL, "messages": [{"role": "user", "content": text}]}
        if stream:
            b["stream"] = True
            b["stream_options"] = {"include_usage": True}
        b.update(extra)
        return json.dumps(b).encode()

    p = "/v1/chat/completions"
    out = [
        ("chat", p, h(good), H.padded_body(1024), 40, {200}),
        ("chat-other-model", p, h(good), chat("hi there", model="gpt-4.1-mini"), 5, {200}),
        ("stream-20", p, h(good), chat("[[mock:chunks=20]] stream please", True), 14, {200}),
        ("stream-200", p, h(good), chat("[[mock:chunks=200]] long stream", True), 3, {200}),
        ("prompt-100k", p, h(good), H.padded_body(100 * 1024), 2, {200}),
        ("models", "/v1/models", {"Authorization": f"Bearer {good}"}, b"", 2, {200}),
        ("wrong-key", p, h("sk-llmgw-not-a-key"), chat("hi"), 5, {401}),
        ("unknown-model", p, h(good), chat("hi", model="no-such-model"), 4, {404}),
        ("bad-json", p, h(good), b'{"model": "gpt-4o-mini", "messages": [', 3, {400}),
        ("provider-500", p, h(good), chat("[[mock:fail=500]] x"), 4, {500}),
        ("provider-429", p, h(good), chat("[[mock:throttle=1]] x"), 3, {429}),
        ("cut-stream", p, h(good), chat("[[mock:cut=5,chunks=30]] x", True), 3, {200}),
        # Over its quota (300/min) when the filter has quotas: mostly 429.
        ("quota-limited", p, h(key_for(LIMITED["id"])), chat("limited caller"), 10,
         {200, 429} if quotas else {200}),
    ]
    return [(n, path, hd, b, w, exp) for n, path, hd, b, w, exp in out]


def write_mix_lua(path: Path, items) -> None:
    rows = []
    for name, p, hd, body, w, _ in items:
        method = "GET" if not body else "POST"
        hs = ", ".join(f"[{lua_str(k)}] = {lua_str(v)}" for k, v in hd.items())
        rows.append(f"  {{{lua_str(method)}, {lua_str(p)}, {{{hs}}}, "
                    f"{lua_str(body) if body else 'nil'}, {w}}}, -- {name}")
    path.write_text("return {\n" + "\n".join(rows) + "\n}\n")


# ----------------------------------------------------------------- disconnects

async def _disconnect(port: int, kind: int, key: str) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == 0:  # half the body, then gone
            body = H.padded_body(4096)
            w.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                    + body[:2048])
            await w.drain()
            await asyncio.sleep(0.002)
        elif kind == 1:  # whole request, gone before the (stalled) answer
            body = json.dumps({"model": gen_config.BENCH_MODEL,
                               "messages": [{"role": "user", "content": "[[mock:stall=30]] x"}]}).encode()
            w.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
            await w.drain()
            await asyncio.sleep(0.005)
        else:  # a slow stream, gone after its first bytes
            body = json.dumps({"model": gen_config.BENCH_MODEL, "stream": True,
                               "messages": [{"role": "user", "content": "[[mock:chunks=50,drip=2]] x"}]}).encode()
            w.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
            await w.drain()
            await asyncio.wait_for(r.read(200), 10)
    finally:
        w.transport.abort()  # RST: no graceful close


async def _disconnects(port: int, n: int, key: str) -> int:
    sem = asyncio.Semaphore(8)
    done = 0

    async def one(i):
        nonlocal done
        async with sem:
            try:
                await _disconnect(port, i % 3, key)
                done += 1
            except (OSError, asyncio.TimeoutError):
                pass
    await asyncio.gather(*(one(i) for i in range(n)))
    return done


# ----------------------------------------------------------------- measurements

def wasm_memory(pid: int) -> tuple[float, float, int]:
    """(committed MiB, resident MiB, VMs) of the V8 Wasm memories: each is a
    reservation of ≥ 4 GiB whose committed start is an adjacent rw-p
    mapping."""
    txt = Path(f"/proc/{pid}/smaps").read_text()
    maps = []
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", txt):
        head = block.split("\n", 1)[0].split()
        a, b = (int(x, 16) for x in head[0].split("-"))
        m = re.search(r"^Rss:\s+(\d+) kB", block, re.M)
        maps.append((a, b, head[1], int(m.group(1)) if m else 0))
    committed = resident = vms = 0
    for i, (a, b, perm, _) in enumerate(maps):
        if b - a >= 1 << 32 and perm.startswith("---") and i > 0:
            pa, pb, pperm, prss = maps[i - 1]
            if pb == a and pperm.startswith("rw"):
                committed += pb - pa
                resident += prss * 1024
                vms += 1
    return committed / 2**20, resident / 2**20, vms


def http_json(url: str, key: str | None = None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None


def in_flight_values(doc, path="") -> list[tuple[str, float]]:
    """Numbers under keys that name an in-flight / concurrent count (not a
    limit) anywhere in a JSON document."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{path}.{k}" if path else k
            kl = k.lower()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and \
                    any(w in kl for w in ("in_flight", "inflight", "concurrent", "active")) and \
                    not kl.startswith(("max", "limit")) and "limit" not in kl:
                out.append((p, v))
            else:
                out += in_flight_values(v, p)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += in_flight_values(v, f"{path}[{i}]")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--segment", type=int, default=SEGMENT)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--quotas", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    segments = max(1, a.requests // a.segment)
    disc = max(1, a.segment * DISCONNECTS_PER_SEGMENT // SEGMENT)

    started = time.monotonic()
    wall0 = time.time()
    tmp = H.RUN / "soak"
    tmp.mkdir(parents=True, exist_ok=True)
    quotas = H.plugin_accepts_quotas() if a.quotas == "auto" else a.quotas == "on"
    items = mix(quotas)
    mix_lua = tmp / "mix.lua"
    write_mix_lua(mix_lua, items)
    info = H.machine_info()
    info["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"soak: {segments} segments of {a.segment} requests; quotas "
          f"{'on' if quotas else 'off (filter does not accept quotas yet)'}", flush=True)

    mock = H.start_mock(tmp)
    # An upstream cut mid-stream makes Envoy close the client's connection
    # after `delayed_close_timeout` (1 s by default): with cut streams in the
    # mix that would idle wrk's connections, so the soak closes at once.
    gw = H.start_envoy(tmp, "filter", mock.port, soak_plugin(quotas), gen_config.caller_key(gen_config.BENCH_CALLER),
                       hcm_extra={"delayed_close_timeout": "0s"})
    expected = set().union(*(e for *_, e in items))
    samples, statuses, failures = [], {}, []
    total = 0
    rss0, wasm0 = H.rss_bytes(gw.pid) / 2**20, wasm_memory(gw.pid)
    samples.append({"requests": 0, "rss_mb": rss0, "wasm_mb": wasm0[0], "wasm_rss_mb": wasm0[1],
                    "vms": wasm0[2], "rps": None, "t": 0})
    for seg in range(segments):
        t0 = time.monotonic()
        box = {}

        def disconnector():
            box["n"] = asyncio.run(_disconnects(gw.port, disc, gw.key))
        th = threading.Thread(target=disconnector)
        th.start()
        env = dict(__import__("os").environ, SOAK_MIX=str(mix_lua), BENCH_BODY=str(mix_lua), BENCH_KEY=gw.key)
        target = (seg + 1) * a.segment
        w = subprocess.Popen(["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", "3600s", "--timeout", "30s",
                              "-s", str(H.BENCH / "wrk" / "mix.lua"), gw.url("/")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        H.PROCS.append(w)
        # Envoy counts every request it sees, disconnects included: stop wrk
        # (SIGINT: it prints its summary) once the segment is complete.
        while True:
            time.sleep(0.05)
            seen = int(H.envoy_stats(gw).get("http.llm_api.downstream_rq_total", 0))
            if seen >= target and not th.is_alive() or w.poll() is not None or gw.proc.poll() is not None:
                break
            if time.monotonic() - t0 > 300:
                failures.append(f"segment {seg + 1} did not finish in 300 s")
                break
        if w.poll() is None:
            w.send_signal(__import__("signal").SIGINT)
        out, err = w.communicate(timeout=60)
        H.PROCS.remove(w)
        m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
        if not m:
            failures.append(f"wrk failed ({w.returncode}): {out[-500:]} {err[-500:]}")
            th.join()
            break
        r = json.loads(m.group(1))
        th.join()
        seen = int(H.envoy_stats(gw).get("http.llm_api.downstream_rq_total", 0))
        n = seen - total
        total = seen
        for k, v in r["status"].items():
            statuses[k] = statuses.get(k, 0) + v
        rss = H.rss_bytes(gw.pid) / 2**20
        wm = wasm_memory(gw.pid)
        dt_s = time.monotonic() - t0
        samples.append({"requests": total, "rss_mb": rss, "wasm_mb": wm[0], "wasm_rss_mb": wm[1], "vms": wm[2],
                        "rps": n / dt_s, "t": round(time.monotonic() - started, 1),
                        "disconnects": box.get("n", 0), "socket_errors": r["read_errors"] + r["write_errors"]
                        + r["connect_errors"] + r["timeouts"]})
        print(f"  {total:>9,} requests  {n / dt_s:6.0f} req/s  Envoy RSS {rss:6.1f} MiB  "
              f"wasm {wm[0]:.2f} MiB committed / {wm[1]:.2f} MiB resident ({wm[2]} VMs)  "
              f"statuses {dict(sorted(r['status'].items()))}", flush=True)
        if gw.proc.poll() is not None:
            failures.append(f"Envoy exited with {gw.proc.returncode}")
            break

    # ---- end checks
    time.sleep(1.0)  # let the last aborted streams finish upstream
    st = H.envoy_stats(gw)
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": ok, "detail": detail})
        if not ok:
            failures.append(f"{name}: {detail}")

    for k in ("http.llm_api.downstream_rq_active", "cluster.mock.upstream_rq_active"):
        check(f"`{k}` back to 0", st.get(k) == 0, f"{st.get(k)}")
    gauges = {k: v for k, v in st.items() if k.startswith("wasmcustom.") and
              re.search(r"in_?flight|active|concurrent", k)}
    if gauges:
        bad = {k: v for k, v in gauges.items() if v != 0}
        check("filter in-flight gauges back to 0", not bad, f"{len(gauges)} gauges, non-zero: {bad or 'none'}")
    else:
        checks.append({"check": "filter in-flight gauges back to 0", "ok": None,
                       "detail": "the filter on this commit exports no in-flight gauge (metrics: issue 6)"})
    reloads = {k: v for k, v in st.items() if k.startswith("wasm.") and "reload" in k and v}
    # (VMs are made lazily at start: compare from the first segment on.)
    vms = [p["vms"] for p in samples[1:]]
    check("no Wasm VM reload / failure", not reloads and len(set(vms)) == 1,
          f"reload stats {reloads or 'all 0'}, VMs per sample {sorted(set(vms))}")
    unexpected = {k: v for k, v in statuses.items() if int(k) not in expected}
    check("only the mix's statuses", not unexpected, f"all {dict(sorted(statuses.items()))}; unexpected: {unexpected or 'none'}")
    weights = sum(w for *_, w, _ in items)
    got = sum(statuses.values())
    share_200 = statuses.get("200", 0) / max(got, 1)
    w200 = sum(w for _, _, _, _, w, e in items if e == {200}) / weights
    check("share of 200s matches the mix", share_200 >= w200 * 0.95,
          f"{share_200:.3f} of answers (≥ {w200 * 0.95:.3f} expected)")
    def metric(prefix: str, **labels) -> float:
        """Sum of the filter's metric `prefix` over the series matching `labels`."""
        tot = 0.0
        for k, v in st.items():
            if k.startswith("wasmcustom." + prefix + ".") and \
                    all(f".{lk}={lv}" in k + "." for lk, lv in labels.items()):
                tot += v
        return tot

    code, usage = http_json(gw.url("/v1/usage?all=true"), key_for(ADMIN["id"]))
    if code == 200:
        vals = in_flight_values(usage)
        bad = [(p, v) for p, v in vals if v != 0]
        check("quota in-flight counters in /v1/usage back to 0 (all callers, teams, models)", not bad and bool(vals),
              f"{len(vals)} counters, non-zero: {bad[:5] or 'none'}")
        per = {c["caller"]: c for c in usage.get("data", [])}
        if quotas:
            # 429s the clients saw = quota refusals + the provider's own 429s
            # (the mix's only provider 4xx); requests cut by stopping wrk at
            # the end of a segment may be answered but not read.
            rej = metric("llmgw.quota.rejections")
            prov = metric("llmgw.provider.errors", status_class="4xx")
            seen429 = statuses.get("429", 0)
            slack = CONNECTIONS * segments
            check("quota rejections: filter metric + provider 429s = 429s seen by clients",
                  rej > 0 and abs(rej + prov - seen429) <= slack,
                  f"{rej:.0f} + {prov:.0f} vs {seen429} (± {slack} for requests cut at segment ends)")
            # The limited caller: admitted ≤ its limit in every UTC minute.
            lim = per.get(LIMITED["id"], {})
            admitted = metric("llmgw.requests", caller=LIMITED["id"]) - \
                metric("llmgw.quota.rejections", caller=LIMITED["id"])
            minutes = int(time.time() // 60) - int(wall0 // 60) + 1
            day = lim.get("usage", {}).get("requests", {}).get("day")
            check(f"limited caller: admitted ≤ {LIMITED_RPM}/min and counted once",
                  LIMITED_RPM * max(minutes - 2, 1) <= admitted <= LIMITED_RPM * minutes and day == admitted,
                  f"{admitted:.0f} admitted over {minutes} UTC minutes (limit {LIMITED_RPM}/min); "
                  f"/v1/usage requests.day = {day}")
            # Tokens: the filter settles a reservation with the answer's usage;
            # an answer without usage keeps its reservation when the provider
            # had started (cut stream, client gone; by design, see glue.rs
            # `finish`), so the counter may exceed the reported tokens by that.
            me = per.get(f"caller-{gen_config.BENCH_CALLER:04d}", {})
            tok_day = me.get("usage", {}).get("tokens", {}).get("day")
            tok_metric = metric("gen_ai.client.token.usage", caller=f"caller-{gen_config.BENCH_CALLER:04d}")
            checks.append({"check": "bench caller: quota tokens.day vs tokens the answers reported", "ok": None,
                           "detail": f"/v1/usage {tok_day} vs metric {tok_metric:.0f}: the difference "
                                     f"({(tok_day or 0) - tok_metric:+.0f}) is the reservations kept for answers "
                                     "without usage (cut streams, clients gone mid-answer), by design; "
                                     "reported, not checked (in-flight = 0 shows every reservation was settled)"})
    else:
        checks.append({"check": "quota counters in /v1/usage", "ok": None,
                       "detail": f"TODO: `GET /v1/usage` answers {code} on this commit (quotas not merged yet); "
                                 "the check runs once it answers 200"})

    warm = [s for s in samples if s["requests"] >= a.warmup]
    base = warm[0] if warm else samples[-1]
    after = [s for s in samples if s["requests"] > base["requests"]]
    rss_growth = max((s["rss_mb"] for s in after), default=base["rss_mb"]) - base["rss_mb"]
    wasm_growth = max((s["wasm_mb"] for s in after), default=base["wasm_mb"]) - base["wasm_mb"]
    check(f"Envoy RSS growth after warm-up ≤ {RSS_BOUND_MB:g} MiB", rss_growth <= RSS_BOUND_MB,
          f"{rss_growth:+.1f} MiB ({base['rss_mb']:.1f} at {base['requests']:,} → max "
          f"{max((s['rss_mb'] for s in after), default=base['rss_mb']):.1f})")
    check(f"Wasm linear memory growth after warm-up ≤ {WASM_BOUND_MB:g} MiB", wasm_growth <= WASM_BOUND_MB,
          f"{wasm_growth:+.2f} MiB ({base['wasm_mb']:.2f} → max "
          f"{max((s['wasm_mb'] for s in after), default=base['wasm_mb']):.2f} MiB committed, {base['vms']} VMs)")
    H.stop(gw.proc)
    H.stop(mock.proc)
    info["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    elapsed = time.monotonic() - started
    result = {
        "info": info, "quotas": quotas, "total_requests": total, "elapsed_s": round(elapsed),
        "segment": a.segment, "warmup_requests": base["requests"], "samples": samples,
        "statuses": statuses, "mix": [(n, w, sorted(e)) for n, _, _, _, w, e in items],
        "disconnects_per_segment": disc, "checks": checks, "failures": failures,
        "passed": not failures, "rss_bound_mb": RSS_BOUND_MB, "wasm_bound_mb": WASM_BOUND_MB,
        "wasm_label": "Wasm linear memory, all VMs (MiB committed)",
        "filter_stats": {k: v for k, v in st.items() if k.startswith("wasmcustom.")},
    }
    if not a.no_write:
        (H.BENCH / "soak.json").write_text(json.dumps(result, indent=1))
        report.soak_chart(result, H.BENCH / "soak.png")
        report.replace_section("soak", report.soak_markdown(result))
    print()
    for c in checks:
        print(f"check: {c['check']}: {c['detail']} -> "
              f"{'ok' if c['ok'] else 'FAIL' if c['ok'] is False else 'not checked'}")
    print(f"soak: {total:,} requests in {elapsed:.0f} s: {'PASS' if not failures else 'FAIL'}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
