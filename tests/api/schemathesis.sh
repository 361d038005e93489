#!/usr/bin/env bash
# Schemathesis against hearth's own REST API: property-based requests made
# from /v1/openapi.json, with every check (no 5xx, status codes, content types
# and bodies conforming to the document, bad input rejected, auth enforced).
#
#   bash tests/api/schemathesis.sh [extra schemathesis run args...]
#
# Standalone: makes its venv under /var/tmp keyed by requirements.txt (a
# pinned schemathesis from PyPI), starts `hearth serve` ($HEARTH_BIN, default
# the release build) with a token file on a fresh state dir, creates ONE
# sandbox with curl and points every `{id}` path parameter at it. Excluded,
# because they boot or delete VMs: create, delete, stop and start; pause and
# resume, which would leave the one sandbox paused for the other operations
# (api_pause.rs covers them); and snapshot, restore and fork, which write the
# sandbox's memory to disk or boot VMs for every case (api_snapshots.rs covers
# them; list, get and delete of snapshots run); and
# POST /timeout, since a generated short timeout has the reaper delete the
# sandbox; and GET /exec/ws, a WebSocket handshake that an HTTP fuzzer cannot
# make (api_rest.rs covers it); and the three whose answer is a stream that
# lasts as long as the generated command or follow does (POST /exec/stream,
# GET /processes/{p}/attach, GET /logs — each case would hold the run for up
# to --request-timeout; api_rest.rs covers them). Everything else (list/get,
# exec, stdin, files, processes, kill, stats) runs, every case with a valid
# token (the server lets a request in when any token it carries is valid, so
# the random X-API-Key values schemathesis adds do not turn cases into 401s).
# Removes the sandbox and stops the server at the end; exits non-zero on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
REQ=tests/api/requirements.txt
KEY=$(sha256sum "$REQ" | cut -c1-16)
VENV=/var/tmp/hearth-schemathesis-venv-$KEY
if [ ! -e "$VENV/.complete" ]; then
    echo "==> schemathesis: making the venv $VENV (PyPI)" >&2
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    touch "$VENV/.complete"
fi
HEARTH_BIN="${HEARTH_BIN:-$PWD/target/release/hearth}"
export HEARTH_GUEST_BIN="${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}"
export HEARTH_IMAGE_CACHE="${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}"
for f in "$HEARTH_BIN" "$HEARTH_GUEST_BIN"; do
    [ -x "$f" ] || { echo "schemathesis: $f is missing (run scripts/setup.sh)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "schemathesis: curl is missing" >&2; exit 1; }

WORK=$(mktemp -d /tmp/hearth-schemathesis-XXXXXX)
export HEARTH_STATE_DIR=$WORK/state
SERVER_PID=""
SANDBOX=""
TOKEN=""
BASE=""
cleanup() {
    set +e
    if [ -n "$SANDBOX" ] && [ -n "$BASE" ]; then
        curl -s -o /dev/null -X DELETE -H "Authorization: Bearer $TOKEN" "$BASE/v1/sandboxes/$SANDBOX"
    fi
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    "$HEARTH_BIN" vm clean --all >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TOKEN=$("$HEARTH_BIN" serve token create --token-file "$WORK/tokens")
"$HEARTH_BIN" serve --listen 127.0.0.1:0 --token-file "$WORK/tokens" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 100); do
    grep -q '^listening on ' "$WORK/serve.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.err" >&2; exit 1; }
    sleep 0.1
done
BASE=$(sed -n 's/^listening on //p' "$WORK/serve.out" | head -1)
[ -n "$BASE" ] || { echo "schemathesis: the server printed no address" >&2; exit 1; }
echo "==> schemathesis: hearth serve at $BASE" >&2

CREATED=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"mem_mib": 256, "timeout_secs": 1800, "name": "schemathesis"}' "$BASE/v1/sandboxes")
SANDBOX=$(printf '%s' "$CREATED" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "==> schemathesis: sandbox $SANDBOX" >&2

cat >"$WORK/schemathesis.toml" <<TOML
[parameters]
"path.id" = "$SANDBOX"
TOML

set +e
# Run from the scratch dir: schemathesis keeps a `.schemathesis/` cache in its cwd.
(cd "$WORK" && "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks all \
    --exclude-operation-id create_sandbox \
    --exclude-operation-id delete_sandbox \
    --exclude-operation-id stop_sandbox \
    --exclude-operation-id start_sandbox \
    --exclude-operation-id pause_sandbox \
    --exclude-operation-id resume_sandbox \
    --exclude-operation-id snapshot_sandbox \
    --exclude-operation-id restore_snapshot \
    --exclude-operation-id fork_sandbox \
    --exclude-operation-id set_sandbox_timeout \
    --exclude-operation-id exec_ws \
    --exclude-operation-id exec_stream \
    --exclude-operation-id attach_process \
    --exclude-operation-id sandbox_logs \
    --phases examples,coverage,fuzzing \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-6}" \
    --request-timeout 60 \
    --workers 1 \
    --generation-database none \
    --no-color \
    "$@")
RC=$?
set -e
if [ "$RC" -ne 0 ]; then
    echo "==> schemathesis: failed (exit $RC); server log tail:" >&2
    tail -n 20 "$WORK/serve.err" >&2
fi
exit "$RC"
