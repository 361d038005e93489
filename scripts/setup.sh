#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for hearth and builds it.
#   - Debian packages: QEMU, the cloud kernel the guest boots, image tools, curl (vm_expose),
#     python3-venv (the E2B SDK and schemathesis tiers), Node.js + npm when no node is installed
#   - the static guest binary and the host binaries (release)
#   - hearth's own guest kernel (scripts/kernel.sh: Debian's linux-source-6.1, cached in
#     /var/tmp/hearth-kernel-<hash>; about 6 minutes on 2 idle cores the first time)
# Idempotent: what is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(qemu-system-x86 tmux linux-image-cloud-amd64 busybox-static squashfs-tools e2fsprogs cpio zstd mmdebstrap procps curl python3-venv bc)
# hearth's own guest kernel (scripts/kernel.sh)
PKGS+=(linux-source-6.1 gcc make flex bison libelf-dev xz-utils)
# The JavaScript SDK tier runs on the machine's Node.js; Debian's when there is none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

export PATH="$HOME/.cargo/bin:$PATH"

log "building the static guest binary"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p hearth-guest --target x86_64-unknown-linux-gnu
log "building the hearth CLI"
cargo build --release -p hearth-cli
log "building hearth's own guest kernel (cached; the cloud kernel stays the fallback)"
bash scripts/kernel.sh >/dev/null
log "ready: target/release/hearth"
