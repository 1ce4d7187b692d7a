#!/usr/bin/env bash
# Property-based check of the controller's API against its own OpenAPI document: starts
# `amvm demo`, then schemathesis (PyPI, pinned) generates requests for every GET route and checks
# that no answer is a server error and that every answer's status, content type and body match
# the document. Usage: scripts/api-conformance.sh [path/to/amvm]   (default target/debug/amvm)
set -euo pipefail
cd "$(dirname "$0")/.."
AMVM=${1:-target/debug/amvm}
VENV=target/schemathesis-venv
ST_VERSION=4.32.5
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
DATA=$(mktemp -d)
AMVM_ADMIN_TOKEN=$TOKEN "$AMVM" demo --listen "127.0.0.1:$PORT" --data "$DATA" --step-ms 200 --hosts 100 \
  --trace synthetic:vms=150,mean=25 >"$DATA/demo.log" 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true; wait $DEMO 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  kill -0 $DEMO 2>/dev/null || { cat "$DATA/demo.log"; echo "amvm demo exited" >&2; exit 1; }
  sleep 0.2
done
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  -H "Authorization: Bearer $TOKEN" --include-method GET --exclude-path /api/v1/events \
  -n 20 --seed 20261201 --request-timeout 10 \
  -c not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance
