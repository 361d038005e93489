#!/usr/bin/env bash
# VM-level figures for `hearth vm expose` (issue 8, item 5), each run next to
# same-run baselines: a python sandbox with --network none serves files with
# `python3 -m http.server`; the host fetches them with curl through the
# exposure (1 stream of 64 MiB, 8 parallel streams of 8 MiB). Baselines:
# `hearth cp` of the same 64 MiB file (FILE_READ over the same agent
# transport) and the guest fetching it over its own loopback (what the
# server itself can do under this accelerator). Everything is loopback.
# Needs target/release/hearth and the static guest (see scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HEARTH_BIN:-$PWD/target/release/hearth}
export HEARTH_GUEST_BIN=${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}
export HEARTH_IMAGE_CACHE=${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}
export HEARTH_STATE_DIR=$(mktemp -d /tmp/hearth-bench-expose-XXXX)
out=$(mktemp -d)
fpid=""
cleanup() {
    [ -n "$fpid" ] && kill "$fpid" 2>/dev/null || true
    "$H" vm clean --all >/dev/null 2>&1 || true
    rm -rf "$HEARTH_STATE_DIR" "$out"
}
trap cleanup EXIT
rate() { echo "scale=1; $1 / ($3 - $2)" | bc -l; }

id=$("$H" vm create --language python --network none)
"$H" vm exec --vm "$id" --cmd 'mkdir -p /srv && head -c 67108864 /dev/urandom > /srv/blob && for i in 1 2 3 4 5 6 7 8; do head -c 8388608 /srv/blob > /srv/part$i; done' >/dev/null
"$H" vm exec --vm "$id" --detach --tag web --cmd 'cd /srv && exec python3 -m http.server 8000 --bind 127.0.0.1' >/dev/null
"$H" vm exec --vm "$id" --cmd 'for i in $(seq 100); do python3 -c "import socket; socket.create_connection((\"127.0.0.1\", 8000), 1)" 2>/dev/null && exit 0; sleep 0.2; done; exit 1' >/dev/null
"$H" vm expose --vm "$id" 8000 > "$out/fwd" &
fpid=$!
for _ in $(seq 100); do [ -s "$out/fwd" ] && break; sleep 0.1; done
port=$(head -1 "$out/fwd" | sed -E 's/forwarding 127.0.0.1:([0-9]+) .*/\1/')
for run in 1 2 3; do
    t0=$(date +%s.%N); curl -sS --fail -o "$out/b" "http://127.0.0.1:$port/blob"; t1=$(date +%s.%N)
    echo "run $run: expose, 1 stream x 64 MiB:   $(rate 64 "$t0" "$t1") MiB/s"
    t0=$(date +%s.%N); pids=""
    for i in 1 2 3 4 5 6 7 8; do curl -sS --fail -o "$out/p$i" "http://127.0.0.1:$port/part$i" & pids="$pids $!"; done
    # shellcheck disable=SC2086
    wait $pids; t1=$(date +%s.%N)
    echo "run $run: expose, 8 streams x 8 MiB:   $(rate 64 "$t0" "$t1") MiB/s"
    t0=$(date +%s.%N); "$H" cp "$id:/srv/blob" "$out/c"; t1=$(date +%s.%N)
    echo "run $run: baseline hearth cp 64 MiB:   $(rate 64 "$t0" "$t1") MiB/s"
    t0=$(date +%s.%N)
    "$H" vm exec --vm "$id" --cmd 'python3 -c "import urllib.request as u; print(len(u.urlopen(\"http://127.0.0.1:8000/blob\").read()))"' >/dev/null
    t1=$(date +%s.%N)
    echo "run $run: baseline in-guest fetch:     $(rate 64 "$t0" "$t1") MiB/s"
done
