#!/usr/bin/env bash
# Installs what `make bench` / `make soak` need beyond `make build`:
#  - a load generator: wrk from the distribution (apt-get); where apt is not
#    available, oha from crates.io (`cargo install oha`; the bench uses it
#    for its wrk runs, the soak needs wrk's Lua scripting);
#  - matplotlib (charts) into .venv (bench/requirements.txt);
#  - the LiteLLM proxy in its own venv, bench/.venv-litellm (`litellm[proxy]`);
#  - perf (linux-perf) for the profile, when apt is there (optional).
# Idempotent; stamps skip the pip steps when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
apt_ok() { have apt-get && [ "$(id -u)" = 0 ]; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null && apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! have wrk; then
  if apt_ok && apt_install wrk; then
    echo "bench setup: installed wrk (apt)"
  elif have oha || [ -x "$HOME/.cargo/bin/oha" ]; then
    echo "bench setup: no wrk; using oha"
  elif have cargo; then
    echo "bench setup: apt unavailable; installing oha from crates.io (a few minutes)"
    nice cargo install oha --locked
  else
    echo "bench setup: need wrk (apt-get install wrk) or oha (cargo install oha)" >&2
    exit 1
  fi
fi
if ! have perf && apt_ok; then
  apt_install linux-perf || echo "bench setup: perf not installed; the profile skips its perf part"
fi

stamp=.venv/.bench-requirements.sha256
want=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bench setup: installing bench/requirements.txt into .venv"
  .venv/bin/pip install --quiet -r bench/requirements.txt
  echo "$want" > "$stamp"
fi

L=bench/.venv-litellm
if [ ! -x "$L/bin/litellm" ]; then
  echo "bench setup: installing LiteLLM into $L (its own venv)"
  "${PYTHON:-python3}" -m venv "$L"
  "$L/bin/pip" install --quiet --upgrade pip
  "$L/bin/pip" install --quiet 'litellm[proxy]'
fi
