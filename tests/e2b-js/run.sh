#!/usr/bin/env bash
# The E2B JavaScript SDK tier: the official npm `e2b` package (pinned in
# package.json / package-lock.json) against a real `hearth serve` that
# test.mjs starts, booting real microVMs.
#
#   bash tests/e2b-js/run.sh [node --test args...]
#
# node_modules is cached under /var/tmp keyed by the hash of package-lock.json
# (`npm ci` there), so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/e2b-js
KEY=$(cat "$HERE/package-lock.json" | sha256sum | cut -c1-16)
CACHE=/var/tmp/hearth-e2b-js-$KEY
if [ ! -e "$CACHE/.complete" ]; then
    echo "==> e2b-js tier: npm ci into $CACHE (npm registry)" >&2
    rm -rf "$CACHE"
    mkdir -p "$CACHE"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$CACHE/"
    (cd "$CACHE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    touch "$CACHE/.complete"
fi
export HEARTH_BIN="${HEARTH_BIN:-$PWD/target/release/hearth}"
export HEARTH_GUEST_BIN="${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}"
export HEARTH_IMAGE_CACHE="${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}"
for f in "$HEARTH_BIN" "$HEARTH_GUEST_BIN"; do
    [ -x "$f" ] || { echo "e2b-js tier: $f is missing (run scripts/setup.sh)" >&2; exit 1; }
done
node -e 'const [a]=process.versions.node.split(".");if(+a<20){console.error("e2b-js tier: node >= 20 is needed, have "+process.version);process.exit(1)}'
# The test runs from the cache dir so that `import "e2b"` finds its node_modules.
cp "$HERE/test.mjs" "$CACHE/test.mjs"
echo "==> e2b-js tier: e2b $(node -p "require('$CACHE/node_modules/e2b/package.json').version") against $HEARTH_BIN" >&2
exec node --test --test-concurrency=1 "$@" "$CACHE/test.mjs"
