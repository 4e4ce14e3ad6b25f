#!/usr/bin/env bash
# `make run`: start the mock provider and Envoy with the filter on the shipped
# default config, print the two lines to paste, stay in the foreground.
# Ctrl-C stops both (by pid). PORT, ADMIN_PORT, MOCK_PORT override the ports.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9901}
MOCK_PORT=${MOCK_PORT:-18080}
export VLLM_API_KEY=${VLLM_API_KEY:-mock-vllm-key}
# The AWS key pair the filter signs Bedrock requests with (the mock's demo pair).
export BEDROCK_ACCESS_KEY_ID=${BEDROCK_ACCESS_KEY_ID:-AKIDMOCKEXAMPLE}
export BEDROCK_SECRET_ACCESS_KEY=${BEDROCK_SECRET_ACCESS_KEY:-mock/secret/EXAMPLEKEY}
DEMO_KEY=sk-llmgw-demo-6vDq9aowcjXAfTg475JWOpXt8MDVC5Qp

mkdir -p .run
# The shipped config with the ports changed (nothing else).
sed -e "s/port_value: 8080\b/port_value: ${PORT}/" \
    -e "s/port_value: 9901\b/port_value: ${ADMIN_PORT}/" \
    -e "s/port_value: 18080\b/port_value: ${MOCK_PORT}/" \
    envoy/envoy.yaml > .run/envoy.yaml

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "stopped." >&2
}
trap "cleanup; exit 0" INT TERM
trap cleanup EXIT

target/release/llm-mock --listen "127.0.0.1:${MOCK_PORT}" --vllm-key "$VLLM_API_KEY" \
  --aws-access-key-id "$BEDROCK_ACCESS_KEY_ID" --aws-secret-access-key "$BEDROCK_SECRET_ACCESS_KEY" --quiet > .run/mock.log 2>&1 &
pids+=($!)
.venv/bin/envoy -c .run/envoy.yaml --concurrency 2 --disable-hot-restart \
  -l warning --log-path .run/envoy.log > .run/access.log 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:${ADMIN_PORT}/ready" >/dev/null 2>&1 \
     && curl -fs "http://127.0.0.1:${MOCK_PORT}/__mock/health" >/dev/null 2>&1; then
    break
  fi
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "start-up failed; see .run/envoy.log and .run/mock.log" >&2
      tail -n 20 .run/envoy.log .run/mock.log >&2 || true
      exit 1
    fi
  done
  sleep 0.1
done
if ! curl -fs "http://127.0.0.1:${ADMIN_PORT}/ready" >/dev/null 2>&1; then
  echo "Envoy did not become ready; see .run/envoy.log" >&2
  exit 1
fi

echo "LLM gateway on http://127.0.0.1:${PORT}/v1 (Envoy admin http://127.0.0.1:${ADMIN_PORT}, mock provider :${MOCK_PORT})." >&2
echo "Logs: .run/envoy.log, access log .run/access.log. Ctrl-C stops everything. Paste these two lines:" >&2
echo "export OPENAI_BASE_URL=http://127.0.0.1:${PORT}/v1"
echo "export OPENAI_API_KEY=${DEMO_KEY}"
wait -n "${pids[@]}" || true
echo "a process exited; stopping." >&2
