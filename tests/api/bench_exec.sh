#!/usr/bin/env bash
# Latency of one collected exec (`sh -c true`) through the REST API (curl, a fresh
# HTTP connection per call, the server's shared agent connection) against the
# same-run baseline of `hearth vm exec` (a process and an agent connection per
# call), on one sandbox. Prints median and mean ms of N runs each.
#
#   HEARTH_BIN=... HEARTH_GUEST_BIN=... bash tests/api/bench_exec.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20}
HEARTH_BIN="${HEARTH_BIN:-$PWD/target/release/hearth}"
export HEARTH_GUEST_BIN="${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}"
export HEARTH_IMAGE_CACHE="${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}"
WORK=$(mktemp -d /tmp/hearth-bench-XXXXXX)
export HEARTH_STATE_DIR=$WORK/state
PID=""
cleanup() { set +e; [ -n "$PID" ] && kill -TERM "$PID" && wait "$PID"; "$HEARTH_BIN" vm clean --all >/dev/null 2>&1; rm -rf "$WORK"; }
trap cleanup EXIT
TOKEN=$("$HEARTH_BIN" serve token create --token-file "$WORK/tokens")
"$HEARTH_BIN" serve --listen 127.0.0.1:0 --token-file "$WORK/tokens" >"$WORK/out" 2>"$WORK/err" &
PID=$!
until grep -q '^listening on ' "$WORK/out" 2>/dev/null; do sleep 0.1; done
BASE=$(sed -n 's/^listening on //p' "$WORK/out")
ID=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"mem_mib":256}' "$BASE/v1/sandboxes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
stats() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.stdin]; print(f"median {s.median(v):.1f} ms, mean {s.mean(v):.1f} ms (n={len(v)})")'; }
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )) | awk '{print $1/1000}'; }
rest() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"cmd":"true"}' "$BASE/v1/sandboxes/$ID/exec"; }
cli() { "$HEARTH_BIN" vm exec --vm "$ID" --cmd true; }
rest >/dev/null; cli   # warm up
for _ in $(seq "$N"); do ms rest; done > "$WORK/rest"
for _ in $(seq "$N"); do ms cli; done > "$WORK/cli"
echo "REST POST /exec (curl):        $(stats < "$WORK/rest")"
echo "baseline hearth vm exec (CLI): $(stats < "$WORK/cli")"
