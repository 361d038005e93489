#!/usr/bin/env bash
# Benchmark: sandbox create through `hearth serve` with the unmodified E2B
# Python SDK (Sandbox.create + kill) against the same-run baseline of
# `hearth vm create` + `vm rm` on the CLI, for the base and python templates.
# Prints the median and min of N runs each (default 3). Timings only; no
# assertions.
#
#   HEARTH_BIN=... HEARTH_GUEST_BIN=... bash scripts/bench_e2b_create.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-3}"
export HEARTH_BIN="${HEARTH_BIN:-$PWD/target/release/hearth}"
export HEARTH_IMAGE_CACHE="${HEARTH_IMAGE_CACHE:-/var/tmp/hearth-test-images}"
KEY=$( (cat tests/e2b/requirements.txt; echo "sdk=") | sha256sum | cut -c1-16)
PY=/var/tmp/hearth-e2b-venv-$KEY/bin/python
[ -x "$PY" ] || { echo "bench: run tests/e2b/run.sh once to make the venv ($PY)" >&2; exit 1; }
exec "$PY" - "$N" <<'PYEOF'
import os, statistics, subprocess, sys, tempfile, time
n = int(sys.argv[1])
hearth = os.environ["HEARTH_BIN"]
state = tempfile.mkdtemp(prefix="hearth-bench-e2b-")
env = dict(os.environ, HEARTH_STATE_DIR=state)
tokens = os.path.join(state, "tokens")
token = subprocess.run([hearth, "serve", "token", "create", "--token-file", tokens],
                       env=env, check=True, capture_output=True, text=True).stdout.strip()
srv = subprocess.Popen([hearth, "serve", "--listen", "127.0.0.1:0", "--token-file", tokens],
                       env=env, stdout=subprocess.PIPE, stderr=open(os.path.join(state, "serve.log"), "ab"))
url = srv.stdout.readline().decode().split()[-1]
os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=token)
from e2b import Sandbox

def sdk(template):
    t0 = time.perf_counter()
    s = Sandbox.create(template, timeout=120)
    dt = time.perf_counter() - t0
    s.kill()
    return dt

def cli(template):
    t0 = time.perf_counter()
    out = subprocess.run([hearth, "vm", "create", "--language", template, "--mem", "512", "--json"],
                         env=env, check=True, capture_output=True, text=True).stdout
    dt = time.perf_counter() - t0
    import json
    vid = json.loads(out)["id"]
    subprocess.run([hearth, "vm", "clean", "--vm", vid], env=env, capture_output=True)
    return dt

try:
    for template in ["base", "python"]:
        for name, f in [("cli vm create (baseline)", cli), ("e2b Sandbox.create", sdk)]:
            ts = [f(template) for _ in range(n)]
            print(f"{template:7} {name:26} median {statistics.median(ts):6.2f} s  min {min(ts):6.2f} s  (n={n})")
finally:
    srv.terminate(); srv.wait()
    subprocess.run([hearth, "vm", "clean", "--all"], env=env, capture_output=True)
PYEOF
