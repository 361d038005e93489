#!/usr/bin/env bash
# Issue 9's benchmark: N concurrent E2B SDK clients (default 32), each creating
# a sandbox, running M commands (default 20) and killing it, against
# `hearth serve` — next to the same operations through hearth-runtime directly
# (crates/runtime/examples/bench_lifecycle.rs) in the same run. Prints both
# JSON reports and the ratios (through the server / direct).
#
#   bash scripts/bench_serve.sh [CLIENTS] [COMMANDS]
#
# Needs target/release/hearth and the static guest (scripts/setup.sh). Both
# sides raise the vCPU overcommit to 16 so 32 one-vCPU sandboxes fit on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-32}
COMMANDS=${2:-20}
H=${HEARTH_BIN:-$PWD/target/release/hearth}
export HEARTH_GUEST_BIN=${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}
export HEARTH_IMAGE_CACHE=${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}
export HEARTH_CPU_OVERCOMMIT=16
export HEARTH_BOOT_TIMEOUT=300
VENV=$(bash tests/e2b/venv.sh)
work=$(mktemp -d /tmp/hearth-bench-serve-XXXX)
spid=""
cleanup() {
    if [ -n "$spid" ]; then kill -TERM "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi
    HEARTH_STATE_DIR="$work/serve" "$H" vm clean --all >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> direct: $CLIENTS clients x $COMMANDS commands through hearth-runtime" >&2
cargo build -q --release -p hearth-runtime --example bench_lifecycle
direct=$(target/release/examples/bench_lifecycle --clients "$CLIENTS" --commands "$COMMANDS" \
    --state "$work/direct" --guest "$HEARTH_GUEST_BIN" --image-cache "$HEARTH_IMAGE_CACHE")
echo "$direct"

echo "==> server: the same through the E2B SDK and hearth serve" >&2
mkdir -p "$work/serve"
export HEARTH_STATE_DIR="$work/serve"
token=$("$H" serve token create --token-file "$work/tokens")
"$H" serve --listen 127.0.0.1:0 --token-file "$work/tokens" > "$work/serve.out" 2> "$work/serve.log" &
spid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out" | head -1)
[ -n "$url" ] || { echo "hearth serve did not start:" >&2; tail -20 "$work/serve.log" >&2; exit 1; }
served=$(E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$token" \
    "$VENV/bin/python" bench/e2b_load.py "$CLIENTS" "$COMMANDS")
echo "$served"

"$VENV/bin/python" - "$direct" "$served" <<'PY'
import json, sys
d, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"creates ok: server {s['creates_ok']}/{s['clients']}, direct {d['creates_ok']}/{d['clients']}; "
      f"commands ok: server {s['commands_ok']}, direct {d['commands_ok']}; "
      f"errors: server {len(s['errors'])}, direct {len(d['errors'])}; server 5xx: {s['server_5xx']}")
def f(v):
    return "n/a" if v is None or v != v else f"{v:9.1f}"
for k in ("create_p50_ms", "create_p99_ms", "command_p50_ms", "command_p99_ms"):
    ok = all(isinstance(x[k], (int, float)) and x[k] == x[k] for x in (s, d))
    ratio = f"{s[k] / d[k]:.2f}x" if ok and d[k] else "n/a"
    print(f"{k:15} server {f(s[k])}  direct {f(d[k])}  ratio {ratio}")
print(f"wall_s          server {s['wall_s']:9.1f}  direct {d['wall_s']:9.1f}")
PY
