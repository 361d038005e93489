#!/usr/bin/env bash
# Cold boots with the Debian cloud kernel vs hearth's own kernel, interleaved:
# N boots each, time from the start of `hearth vm create` to the end of the
# first `hearth vm exec` (create -> first exec), medians and the ratio.
#   bash scripts/bench_kernel.sh [N]      (default N=5)
# Needs the own kernel built (scripts/kernel.sh), the static guest binary
# (HEARTH_GUEST_BIN) and a hearth binary (HEARTH_BIN, else target/release or
# target/debug). One 256 MiB VM at a time, each removed after its exec.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-5}"
HEARTH="${HEARTH_BIN:-}"
if [ -z "$HEARTH" ]; then
    for c in target/release/hearth target/debug/hearth; do
        [ -x "$c" ] && { HEARTH="$c"; break; }
    done
fi
[ -n "$HEARTH" ] && [ -x "$HEARTH" ] || { echo "no hearth binary (cargo build -p hearth-cli or set HEARTH_BIN)" >&2; exit 1; }
[ -n "${HEARTH_GUEST_BIN:-}" ] || { echo "set HEARTH_GUEST_BIN to the static guest binary" >&2; exit 1; }
STATE="$(mktemp -d /tmp/hearth-bench-kernel.XXXXXX)"
export HEARTH_STATE_DIR="$STATE" HEARTH_LOG_LEVEL=warn
export HEARTH_IMAGE_CACHE="${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}"
trap '"$HEARTH" vm clean --all >/dev/null 2>&1 || true; rm -rf "$STATE"' EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# One boot; prints "ms release".
boot() {
    local t0 id rel t1
    t0=$(now_ms)
    id=$("$HEARTH" vm create --mem 256 --kernel "$1" 2>"$STATE/create.err") ||
        { cat "$STATE/create.err" >&2; return 1; }
    rel=$("$HEARTH" vm exec --vm "$id" --cmd 'uname -r')
    t1=$(now_ms)
    "$HEARTH" vm clean --vm "$id" >/dev/null
    echo "$((t1 - t0)) $rel"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "warm-up (builds the initramfs for each kernel once; not counted)" >&2
own_rel=$(boot own | cut -d' ' -f2)
cloud_rel=$(boot cloud | cut -d' ' -f2)
echo "own kernel: $own_rel   cloud kernel: $cloud_rel   N=$N, interleaved" >&2

own=() cloud=()
for i in $(seq "$N"); do
    c=$(boot cloud); o=$(boot own)
    [ "${c#* }" = "$cloud_rel" ] && [ "${o#* }" = "$own_rel" ] || { echo "wrong kernel booted: $c / $o" >&2; exit 1; }
    cloud+=("${c%% *}"); own+=("${o%% *}")
    printf '  run %d: cloud %5d ms   own %5d ms\n' "$i" "${c%% *}" "${o%% *}"
done
mc=$(printf '%s\n' "${cloud[@]}" | median)
mo=$(printf '%s\n' "${own[@]}" | median)
printf 'create -> first exec, median of %d: cloud %s ms, own %s ms, ratio own/cloud %s (target <= 0.6)\n' \
    "$N" "$mc" "$mo" "$(awk -v a="$mo" -v b="$mc" 'BEGIN {printf "%.2f", a/b}')"
