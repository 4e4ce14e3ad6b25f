#!/usr/bin/env python3
"""Generate the envoyproxy/ratelimit service config (domain, descriptors,
limits) for the gateway's global mode from the filter's own plugin config
(its `quotas` and `callers`), so the two never drift.

    scripts/gen_ratelimit_config.py [SOURCE] [-o OUT]     # print or write
    scripts/gen_ratelimit_config.py [SOURCE] --check FILE # exit 1 if FILE differs

SOURCE (default envoy/envoy-global-ratelimit.yaml) is any file
`llmgw config check` reads: a JSON plugin config, an Envoy bootstrap / ECDS /
EnvoyFilter with the Wasm filter, an Istio WasmPlugin, a ConfigMap holding
one of these, or a YAML stream of them. It must hold exactly one plugin
config (or several identical ones).

The descriptors Envoy sends are fixed (envoy/envoy-global-ratelimit.yaml,
made by scripts/gen_global_envoy_config.py from DESCRIPTORS below); only the
limits depend on the plugin config. For each limit kind K
(requests_per_minute, tokens_per_minute, tokens_per_day) Envoy sends

    (generic_key=K, caller=C)            (generic_key=K, team=T)
    (generic_key=K, caller=C, model=M)   (generic_key=K, team=T, model=M)

with C, T, M from the filter state wasm.llmgw_caller / wasm.llmgw_team /
wasm.llmgw_model that the filter sets (team ones only when the caller has a
team). Requests count 1 on the request path; tokens are checked on the
request path (hits_addend 0: over limit once the window's total passed the
limit) and charged when the stream ends (hits_addend = the answer's tokens).

The quota rules map as follows (the most specific level that sets a field
applies, caller > team > default):
  - default level: a key-only `caller` descriptor (one counter per caller);
    default `models`: `model` children of it;
  - team level: a `team=T` descriptor (one counter shared by the team);
    callers of team T (from the plugin config's `callers`) that fall back to
    it get an explicit `caller=C` descriptor that is `unlimited`, so the
    default per-caller limit does not apply to them as well;
  - caller level: an explicit `caller=C` descriptor.
One difference from the filter's local quotas: the team descriptor is sent
for every caller of the team, so a caller with its own limit whose team also
has one is held to both. usd_per_day, usd_per_month and max_concurrent
cannot be expressed (the service counts integer hits per fixed window, and
calendar months are not windows it has): they stay local-only, listed in the
output's header.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT / "envoy" / "envoy-global-ratelimit.yaml"
DOMAIN = "llm-gateway"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

#: Limit kind (a quota field) -> envoyproxy/ratelimit unit.
KINDS = {
    "requests_per_minute": "minute",
    "tokens_per_minute": "minute",
    "tokens_per_day": "day",
}
#: Quota fields the rate limit service cannot enforce.
LOCAL_ONLY = ("usd_per_day", "usd_per_month", "max_concurrent")
#: Descriptor entry key -> filter state the filter sets on every request it
#: forwards (global mode), read by Envoy's `envoy.rate_limit_descriptors.expr`
#: actions; no request header carries them, so nothing reaches a provider.
FILTER_STATE = {"caller": "wasm.llmgw_caller", "team": "wasm.llmgw_team",
                "model": "wasm.llmgw_model"}
#: The descriptor shapes Envoy sends for every kind (after generic_key=kind).
DESCRIPTORS = [("caller",), ("team",), ("caller", "model"), ("team", "model")]
#: Filter state the filter sets when an answer ends (total tokens).
TOKENS_FILTER_STATE = "%FILTER_STATE(wasm.llmgw_tokens:PLAIN)%"
UINT32_MAX = 2**32 - 1


class ConfigError(Exception):
    pass


# --------------------------------------------------------------- finding the plugin config

def _is_plugin(v) -> bool:
    return isinstance(v, dict) and ("providers" in v or "models" in v)


def _from_wasm_filter(wasm: dict, where: str, out: list):
    conf = (wasm.get("config") or {}).get("configuration") or {}
    value = conf.get("value")
    if isinstance(value, str):
        out.append((where, json.loads(value)))
    elif isinstance(value, dict):
        out.append((where, value))


def _walk(v, where: str, out: list):
    if isinstance(v, dict):
        kind = v.get("kind")
        if kind == "WasmPlugin" and "spec" in v:
            pc = (v.get("spec") or {}).get("pluginConfig")
            if isinstance(pc, dict):
                out.append((f"{where} WasmPlugin {(v.get('metadata') or {}).get('name', '?')}", pc))
            return
        if kind == "ConfigMap":
            for key, text in (v.get("data") or {}).items():
                if isinstance(text, str):
                    try:
                        _document(text, f"{where} ConfigMap data[{key!r}]", out, top=False)
                    except (yaml.YAMLError, json.JSONDecodeError):
                        pass  # a value that holds no config (a script, a PEM)
            return
        ty = v.get("@type")
        if ty == WASM_TYPE:
            _from_wasm_filter(v, where, out)
            return
        if isinstance(ty, str) and ty.endswith(".TypedStruct") and v.get("type_url") == WASM_TYPE:
            _from_wasm_filter(v.get("value") or {}, where, out)
            return
        for k, child in v.items():
            _walk(child, f"{where}.{k}", out)
    elif isinstance(v, list):
        for i, child in enumerate(v):
            _walk(child, f"{where}[{i}]", out)


def _document(text: str, where: str, out: list, top: bool):
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    else:
        docs = [doc]
    for i, doc in enumerate(docs):
        w = f"{where}#{i + 1}" if len(docs) > 1 else where
        before = len(out)
        _walk(doc, w, out)
        if len(out) == before and _is_plugin(doc) and (top or "providers" in doc):
            out.append((w, doc))


def find_plugin_configs(path: Path) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    _document(path.read_text(), str(path), out, top=True)
    return out


def load_plugin_config(path: Path) -> dict:
    found = find_plugin_configs(path)
    if not found:
        raise ConfigError(f"{path}: no llm-gateway plugin config found")
    first = found[0][1]
    for where, cfg in found[1:]:
        if cfg.get("quotas") != first.get("quotas") or cfg.get("callers") != first.get("callers"):
            raise ConfigError(f"{path}: several plugin configs with different quotas/callers "
                              f"({found[0][0]} and {where}): give one")
    return first


# --------------------------------------------------------------- limits

UNLIMITED = "unlimited"


def _field(level: dict | None, kind: str, model: str | None = None):
    if not level:
        return None
    if model is not None:
        level = ((level.get("models") or {}).get(model)) or {}
    v = level.get(kind)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= UINT32_MAX:
        raise ConfigError(f"{kind}: {v!r} is not a whole number from 0 to {UINT32_MAX} "
                          f"(what envoyproxy/ratelimit's requests_per_unit holds)")
    return v


def _models(*levels) -> list[str]:
    names = set()
    for lvl in levels:
        names.update((lvl or {}).get("models") or {})
    return sorted(names)


def _rate_limit(v, unit: str) -> dict:
    if v == UNLIMITED:
        return {"unlimited": True}
    return {"unit": unit, "requests_per_unit": v}


def _node(key: str, value: str | None, limit, children: list, unit: str) -> dict | None:
    n: dict = {"key": key}
    if value is not None:
        n["value"] = value
    if limit is not None:
        n["rate_limit"] = _rate_limit(limit, unit)
    if children:
        n["descriptors"] = children
    return n


def _model_nodes(limits: dict[str, object], unit: str) -> list:
    return [_node("model", m, v, [], unit) for m, v in sorted(limits.items()) if v is not None]


def build(plugin: dict) -> dict:
    """The envoyproxy/ratelimit config for `plugin` (a parsed plugin config)."""
    quotas = plugin.get("quotas") or {}
    default = quotas.get("default") or {}
    teams = quotas.get("teams") or {}
    callers = quotas.get("callers") or {}
    caller_team = {c["id"]: c.get("team") for c in plugin.get("callers") or [] if "id" in c}
    caller_ids = sorted(set(caller_team) | set(callers))

    descriptors = []
    for kind, unit in KINDS.items():
        children = []
        # Default level: per caller.
        d_top = _field(default, kind)
        d_models = {m: _field(default, kind, m) for m in _models(default)}
        base = _node("caller", None, d_top, _model_nodes(d_models, unit), unit)
        if "rate_limit" in base or "descriptors" in base:
            children.append(base)
        # Callers whose limits differ from the default (their own, or their team's).
        for cid in caller_ids:
            c = callers.get(cid)
            t = teams.get(caller_team.get(cid)) if caller_team.get(cid) else None
            top = _field(c, kind)
            if top is None:
                top = UNLIMITED if _field(t, kind) is not None else d_top
            models = {}
            for m in _models(default, t, c):
                v = _field(c, kind, m)
                if v is None:
                    v = None if _field(t, kind, m) is not None else _field(default, kind, m)
                models[m] = v
            if top == UNLIMITED and d_top is None:
                top = None  # no default limit to shadow
            if top == d_top and {m: v for m, v in models.items() if v is not None} == \
                    {m: v for m, v in d_models.items() if v is not None}:
                continue
            children.append(_node("caller", cid, top, _model_nodes(models, unit), unit))
        # Team level: one counter per team.
        for team in sorted(teams):
            t = teams[team]
            n = _node("team", team, _field(t, kind),
                      _model_nodes({m: _field(t, kind, m) for m in _models(t)}, unit), unit)
            if "rate_limit" in n or "descriptors" in n:
                children.append(n)
        if children:
            descriptors.append({"key": "generic_key", "value": kind, "descriptors": children})
    return {"domain": DOMAIN, "descriptors": descriptors}


def local_only(plugin: dict) -> list[str]:
    """'field (where, ...)' for every quota the service cannot enforce."""
    quotas = plugin.get("quotas") or {}
    levels = [("default", quotas.get("default"))]
    levels += [(f"teams.{k}", v) for k, v in sorted((quotas.get("teams") or {}).items())]
    levels += [(f"callers.{k}", v) for k, v in sorted((quotas.get("callers") or {}).items())]
    out = []
    for f in LOCAL_ONLY:
        where = []
        for name, lvl in levels:
            if (lvl or {}).get(f) is not None:
                where.append(name)
            for m, ml in sorted(((lvl or {}).get("models") or {}).items()):
                if (ml or {}).get(f) is not None:
                    where.append(f"{name}.models.{m}")
        if where:
            out.append(f"{f} ({', '.join(where)})")
    return out


def render(source: Path) -> str:
    plugin = load_plugin_config(source)
    try:
        rel = source.resolve().relative_to(ROOT)
    except ValueError:
        rel = source
    head = [f"# GENERATED from {rel} by scripts/gen_ratelimit_config.py: do not edit.",
            "# envoyproxy/ratelimit config for the gateway's global mode (docs/global-ratelimit.md).",
            "# Envoy sends (generic_key=KIND, caller|team[, model]) descriptors; requests count 1,",
            "# tokens are checked on the request path and charged when the answer ends."]
    lo = local_only(plugin)
    if lo:
        head.append("# Enforced only by each gateway's local quotas (not expressible here):")
        head += [f"#   {x}" for x in lo]
    if not (plugin.get("quotas") or {}):
        head.append("# The plugin config sets no quotas: nothing to limit.")
    body = yaml.safe_dump(build(plugin), sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                    help="file holding the plugin config (default: %(default)s)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("-o", "--out", type=Path, help="write here instead of stdout")
    g.add_argument("--check", type=Path, metavar="FILE",
                   help="exit 1 if FILE differs from what would be generated")
    a = ap.parse_args(argv)
    try:
        out = render(a.source)
    except (ConfigError, OSError, json.JSONDecodeError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.check:
        if not a.check.exists() or a.check.read_text() != out:
            print(f"{a.check} is out of date: run scripts/gen_ratelimit_config.py "
                  f"{a.source} -o {a.check}", file=sys.stderr)
            return 1
        return 0
    if a.out:
        a.out.write_text(out)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
