#!/usr/bin/env bash
# The VM link against the transport it replaced, in one run (issue 10, part 1):
# builds the baseline — the last commit with vhost-user-vsock, aa0dad1 — in a git
# worktree under /var/tmp (cached by commit), installs vhost-device-vsock for it if
# missing, builds this tree, and runs crates/cli/examples/bench_transport.rs, which
# boots one VM with each and measures ping, exec, stdout stream and copy-in
# interleaved through the same client.
# Usage: bash scripts/bench_transport.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=aa0dad1
WT=/var/tmp/hearth-transport-baseline-$BASE
export PATH="$HOME/.cargo/bin:$PATH"
if [ ! -x "$WT/target/release/hearth" ] || [ ! -x "$WT/target/x86_64-unknown-linux-gnu/release/hearth-guest" ]; then
    echo "==> building the baseline $BASE in $WT (once)" >&2
    [ -d "$WT" ] || git worktree add --detach "$WT" "$BASE"
    (cd "$WT" && cargo build -q --release -p hearth-cli \
        && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p hearth-guest --target x86_64-unknown-linux-gnu)
fi
command -v vhost-device-vsock >/dev/null || cargo install --locked vhost-device-vsock
echo "==> building this tree" >&2
cargo build -q --release -p hearth-cli --bin hearth --example bench_transport
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p hearth-guest --target x86_64-unknown-linux-gnu
exec target/release/examples/bench_transport \
    --old-hearth "$WT/target/release/hearth" \
    --old-guest "$WT/target/x86_64-unknown-linux-gnu/release/hearth-guest" \
    --new-hearth target/release/hearth \
    --new-guest target/x86_64-unknown-linux-gnu/release/hearth-guest "$@"
