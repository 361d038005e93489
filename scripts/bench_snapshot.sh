#!/usr/bin/env bash
# Snapshot benchmarks of issue 10, each against a baseline measured in the same run
# (software emulation figures; the machine is shared, so medians of N):
#   - cold boot → first exec result (`vm create` + `vm exec true`), the baseline;
#     with --kernel K a second cold-boot series with that kernel
#   - restore → first exec result (`vm restore` + `vm exec true`), and the ratio
#   - fork: each clone → first exec result (`vm fork --count C`, then an exec in each)
#   - pause / resume latency (`vm pause|resume --json`)
#   - snapshot time, vCPU pause and size vs guest RAM
#   - host memory (PSS of QEMU + proxy) per idle clone, with C clones alive at once
# Usage: bash scripts/bench_snapshot.sh [--runs N] [--clones C] [--mem MIB] [--kernel K]
# Needs target/release/hearth and the release static guest (bash scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5 CLONES=16 MEM=256 KERNEL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --clones) CLONES=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --kernel) KERNEL=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
H=$PWD/target/release/hearth
export HEARTH_GUEST_BIN=${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}
export HEARTH_IMAGE_CACHE=${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}
export HEARTH_STATE_DIR=$(mktemp -d /tmp/hearth-bench-snap.XXXXXX)
export HEARTH_LOG_LEVEL=warn
trap '"$H" vm clean --all >/dev/null 2>&1 || true; rm -rf "$HEARTH_STATE_DIR"' EXIT

ms() { date +%s%N | awk '{printf "%.1f", $1/1e6}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"} else {print a[int((NR+1)/2)]}}'; }
cold=() own=() restore=() pause=() resume=()
created() { "$H" vm create --mem "$MEM" "$@"; }

# The snapshot every restore uses, from a settled VM.
base=$(created)
"$H" vm exec --vm "$base" --cmd true >/dev/null
snap_json=$("$H" vm snapshot --vm "$base" --name bench --json)
for i in $(seq "$RUNS"); do
    t0=$(ms); id=$(created); "$H" vm exec --vm "$id" --cmd true >/dev/null; t1=$(ms)
    cold+=("$(echo "$t1 - $t0" | bc)"); "$H" vm clean --vm "$id" >/dev/null
    if [ -n "$KERNEL" ]; then
        t0=$(ms); id=$(created --kernel "$KERNEL"); "$H" vm exec --vm "$id" --cmd true >/dev/null; t1=$(ms)
        own+=("$(echo "$t1 - $t0" | bc)"); "$H" vm clean --vm "$id" >/dev/null
    fi
    t0=$(ms); id=$("$H" vm restore bench); "$H" vm exec --vm "$id" --cmd true >/dev/null; t1=$(ms)
    restore+=("$(echo "$t1 - $t0" | bc)")
    pause+=("$("$H" vm pause --vm "$id" --json | sed -n 's/.*"ms":\([0-9.]*\).*/\1/p')")
    resume+=("$("$H" vm resume --vm "$id" --json | sed -n 's/.*"ms":\([0-9.]*\).*/\1/p')")
    "$H" vm clean --vm "$id" >/dev/null
done

# Fork: all clones at once, then the first exec in each.
t0=$(ms)
mapfile -t clones < <("$H" vm fork --vm "$base" --count "$CLONES")
t1=$(ms)
first=()
for c in "${clones[@]}"; do
    a=$(ms); "$H" vm exec --vm "$c" --cmd true >/dev/null; b=$(ms)
    first+=("$(echo "$b - $a" | bc)")
done
sleep 2
pss=()
for c in "${clones[@]}"; do
    rec=$("$H" vm list --json | python3 -c "import json,sys; r=[x for x in json.load(sys.stdin) if x['id']=='$c'][0]; print(r['qemu_pid'], r['proxy_pid'])")
    kib=0
    for p in $rec; do
        k=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        kib=$((kib + k))
    done
    pss+=("$(echo "scale=1; $kib / 1024" | bc)")
done

cold_m=$(printf '%s\n' "${cold[@]}" | median)
restore_m=$(printf '%s\n' "${restore[@]}" | median)
fork_each=$(echo "scale=1; ($t1 - $t0) / $CLONES" | bc)
first_m=$(printf '%s\n' "${first[@]}" | median)
state_mib=$(echo "$snap_json" | python3 -c "import json,sys; v=json.load(sys.stdin); print(round(v['bytes']/1048576,1), v['paused_ms'], round(v['ms']))")
echo "snapshot benchmark: $RUNS runs, ${MEM} MiB guests, $CLONES clones (medians, ms)"
printf '%-40s %10s\n' "cold boot -> first exec (baseline)" "$cold_m"
if [ -n "$KERNEL" ]; then
    own_m=$(printf '%s\n' "${own[@]}" | median)
    printf '%-40s %10s  (%.2fx the baseline)\n' "cold boot, $KERNEL" "$own_m" "$(echo "$own_m / $cold_m" | bc -l)"
fi
printf '%-40s %10s  (%.1fx faster than cold)\n' "restore -> first exec" "$restore_m" "$(echo "$cold_m / $restore_m" | bc -l)"
printf '%-40s %10s  (fork of %d, wall / clone)\n' "fork, per clone" "$fork_each" "$CLONES"
printf '%-40s %10s\n' "  then first exec in a clone" "$first_m"
printf '%-40s %10s  (%.1fx faster than cold)\n' "clone -> first exec (fork/clone + exec)" "$(echo "$fork_each + $first_m" | bc)" "$(echo "$cold_m / ($fork_each + $first_m)" | bc -l)"
printf '%-40s %10s\n' "pause (vm pause)" "$(printf '%s\n' "${pause[@]}" | median)"
printf '%-40s %10s\n' "resume (vm resume)" "$(printf '%s\n' "${resume[@]}" | median)"
read -r smib spaused stotal <<<"$state_mib"
printf '%-40s %10s  (%s MiB for a %s MiB guest; vCPUs stopped %s ms)\n' "snapshot (vm snapshot)" "$stotal" "$smib" "$MEM" "$spaused"
printf '%-40s %10s MiB (median of %d idle clones, QEMU + proxy)\n' "host PSS per idle clone" "$(printf '%s\n' "${pss[@]}" | median)" "$CLONES"
