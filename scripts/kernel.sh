#!/usr/bin/env bash
# Builds hearth's own guest kernel: Debian's linux-source-6.1, `make tinyconfig`
# plus crates/image/kernel/hearth.config, everything built in, no modules.
#
# The result is cached in /var/tmp/hearth-kernel-<hash16>/ (HEARTH_KERNEL_CACHE
# overrides /var/tmp), where the hash covers the fragment, this script and the
# linux-source package version:
#   vmlinux   uncompressed ELF, booted through the PVH entry
#   config    the final .config
#   release   `uname -r` inside the guest
#   key       what the hash was made of (the runtime matches the fragment and
#             script digests against its own copies to find the entry)
# The build runs in a temporary directory and is renamed into place only when
# complete, so a killed build leaves nothing half-cached. A second call with
# the same inputs prints the cached path and does nothing else.
#
# Prints the cache directory on stdout; progress goes to stderr.
# Needs: linux-source-6.1 flex bison bc libelf-dev gcc make (scripts/setup.sh
# installs them). About 6 minutes on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'kernel.sh: %s\n' "$*" >&2; exit 1; }

FRAGMENT=crates/image/kernel/hearth.config
SCRIPT=scripts/kernel.sh
CACHE_ROOT="${HEARTH_KERNEL_CACHE:-/var/tmp}"
JOBS="${HEARTH_KERNEL_JOBS:-2}"
TARBALL=/usr/src/linux-source-6.1.tar.xz

VERSION="$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || true)"
[ -n "$VERSION" ] && [ -f "$TARBALL" ] ||
    die "linux-source-6.1 is not installed (apt-get install linux-source-6.1)"
for tool in gcc make flex bison bc; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs the kernel build tools)"
done
[ -f /usr/include/gelf.h ] || die "libelf-dev is missing (objtool needs it)"

frag_sha="$(sha256sum "$FRAGMENT" | cut -d' ' -f1)"
script_sha="$(sha256sum "$SCRIPT" | cut -d' ' -f1)"
KEY="fragment $frag_sha
script $script_sha
source linux-source-6.1 $VERSION"
hash="$(printf '%s\n' "$KEY" | sha256sum | cut -c1-16)"
OUT="$CACHE_ROOT/hearth-kernel-$hash"

if [ -f "$OUT/vmlinux" ] && [ -f "$OUT/key" ]; then
    log "kernel cached: $OUT ($(cat "$OUT/release"))"
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/hearth-kernel.lock"
flock 9
if [ -f "$OUT/vmlinux" ]; then # another build finished while we waited
    echo "$OUT"
    exit 0
fi

WORK="$(mktemp -d "$CACHE_ROOT/hearth-kernel-tmp.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
log "building the guest kernel from linux-source-6.1 $VERSION in $WORK (about 6 minutes on 2 cores)"
tar -xf "$TARBALL" -C "$WORK"
SRC="$WORK/linux-source-6.1"
[ -d "$SRC" ] || die "unexpected tarball layout: no linux-source-6.1/ in $TARBALL"
LOG="$WORK/build.log"

make -C "$SRC" -s tinyconfig >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; die "make tinyconfig failed"; }
(cd "$SRC" && scripts/kconfig/merge_config.sh -m .config "$OLDPWD/$FRAGMENT") >>"$LOG" 2>&1 ||
    { tail -20 "$LOG" >&2; die "merging $FRAGMENT failed"; }
make -C "$SRC" -s olddefconfig >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; die "make olddefconfig failed"; }

# Every fragment line must be in the final .config as written: kconfig
# silently drops an option whose dependencies are not met.
dropped=()
while IFS= read -r line; do
    case "$line" in
    CONFIG_*=*) grep -qxF -- "$line" "$SRC/.config" || dropped+=("$line") ;;
    "# CONFIG_"*" is not set")
        opt="${line#\# }"; opt="${opt%% *}"
        grep -q "^$opt=" "$SRC/.config" && dropped+=("$line")
        ;;
    esac
done <"$FRAGMENT"
if [ "${#dropped[@]}" -gt 0 ]; then
    for d in "${dropped[@]}"; do
        opt="${d#\# }"; opt="${opt%%[= ]*}"
        printf '  wanted: %s   got: %s\n' "$d" "$(grep -E "^(# )?$opt[= ]" "$SRC/.config" || echo '(absent)')" >&2
    done
    die "${#dropped[@]} option(s) of $FRAGMENT did not survive olddefconfig (missing dependencies?)"
fi

# Quiet build, with a progress line about every 30 seconds.
make -C "$SRC" -j"$JOBS" vmlinux >>"$LOG" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null || break
    log "  kernel build: $(grep -c '^  CC' "$LOG" || true) files compiled, $((SECONDS - start)) s"
done
wait "$pid" || { tail -30 "$LOG" >&2; die "kernel build failed (log above)"; }

release="$(make -C "$SRC" -s kernelrelease)"
STAGE="$WORK/out"
mkdir "$STAGE"
cp "$SRC/vmlinux" "$STAGE/vmlinux"
cp "$SRC/.config" "$STAGE/config"
printf '%s\n' "$release" >"$STAGE/release"
tail -50 "$LOG" >"$STAGE/build.log.tail"
sync -f "$STAGE/vmlinux"
printf '%s\n' "$KEY" >"$STAGE/key" # written last
rm -rf "$OUT" # an incomplete leftover (no vmlinux or no key)
mv -T "$STAGE" "$OUT"
log "kernel built in $((SECONDS - start)) s: $OUT ($release)"
echo "$OUT"
