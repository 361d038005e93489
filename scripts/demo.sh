#!/usr/bin/env bash
# hearth's main job on a fresh Debian machine: set up, boot a sandbox (a real
# microVM), run code in it, throw it away.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HEARTH_GUEST_BIN="$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest"
echo "==> hearth run: a bare microVM (hearth's initramfs guest)" >&2
./target/release/hearth run -- sh -c 'echo "guest kernel $(uname -r), pid 1 is $(cat /proc/1/comm)"'
echo "==> hearth run --language python: Debian + CPython in a microVM (the image is built on first use, ~1 min)" >&2
./target/release/hearth run --language python -- python3 -c 'import platform, sys; print(f"hello from Python {sys.version.split()[0]} on {platform.platform()}")'
