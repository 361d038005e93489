#!/usr/bin/env bash
# Makes (once) and prints the path of the venv with the E2B SDK and pytest,
# cached under /var/tmp keyed by the hash of requirements.txt and the SDK
# version asked for (`venv.sh [VERSION|latest]`; default the pin).
set -euo pipefail
cd "$(dirname "$0")/../.."
SDK="${1:-}"
REQ=tests/e2b/requirements.txt
KEY=$( (cat "$REQ"; echo "sdk=$SDK") | sha256sum | cut -c1-16)
if [ "$SDK" = latest ]; then KEY="$KEY-$(date +%Y%m%d)"; fi
VENV=/var/tmp/hearth-e2b-venv-$KEY
# A venv's scripts name its own path, so it is made in place; the marker says
# the install finished (a half-made venv is made again).
if [ ! -e "$VENV/.complete" ]; then
    echo "==> making the venv $VENV (PyPI)" >&2
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
    case "$SDK" in
        "") ;;
        latest) "$VENV/bin/pip" install -q --disable-pip-version-check -U e2b >&2 ;;
        *) "$VENV/bin/pip" install -q --disable-pip-version-check "e2b==$SDK" >&2 ;;
    esac
    touch "$VENV/.complete"
fi
echo "$VENV"
