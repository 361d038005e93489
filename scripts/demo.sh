#!/usr/bin/env bash
# hearth's main job on a fresh Debian machine: set up, boot a sandbox (a real
# microVM), run code in it, throw it away.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HEARTH_GUEST_BIN="$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest"
echo "==> hearth run -- uname -a   (boots a microVM; ~5 s under software emulation)" >&2
./target/release/hearth run -- sh -c 'echo "hello from $(uname -r) as $(id -u), pid 1 is $(cat /proc/1/comm)"'
