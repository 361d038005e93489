#!/usr/bin/env bash
# The E2B SDK tier: the official `e2b` Python SDK from PyPI against a real
# `hearth serve` (started by conftest.py) booting real microVMs.
#
#   bash tests/e2b/run.sh [--sdk VERSION|latest] [pytest args...]
#
# The venv (tests/e2b/venv.sh) is cached under /var/tmp keyed by the hash of
# requirements.txt and the SDK version, so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
SDK=""
if [ "${1:-}" = "--sdk" ]; then SDK="$2"; shift 2; fi
VENV=$(bash tests/e2b/venv.sh "$SDK")
export HEARTH_BIN="${HEARTH_BIN:-$PWD/target/release/hearth}"
export HEARTH_GUEST_BIN="${HEARTH_GUEST_BIN:-$PWD/target/x86_64-unknown-linux-gnu/release/hearth-guest}"
export HEARTH_IMAGE_CACHE="${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}"
for f in "$HEARTH_BIN" "$HEARTH_GUEST_BIN"; do
    [ -x "$f" ] || { echo "e2b tier: $f is missing (run scripts/setup.sh)" >&2; exit 1; }
done
echo "==> e2b tier: $("$VENV/bin/pip" show e2b | grep -E '^Version') against $HEARTH_BIN" >&2
exec "$VENV/bin/pytest" -p no:cacheprovider -ra --timeout=600 tests/e2b "$@"
