"""Benchmark of the envd Process service: the E2B SDK's `commands.run`
through `hearth serve`, next to hearth's own CLI (`hearth vm exec`) on the
same sandbox in the same run, so the figures are read as a ratio.

    HEARTH_BIN=... HEARTH_GUEST_BIN=... HEARTH_IMAGE_CACHE=/var/tmp/hearth-test-images \\
        /var/tmp/hearth-e2b-venv-*/bin/python tests/e2b/bench_commands.py [N]

Prints the mean and median latency of N runs of `true`, and the throughput of
16 MiB of stdout, each way. Not a test: it asserts only that the outputs are
right."""

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from conftest import Server, _make_token  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
BIG = 16 << 20


def timed(f, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def show(name, xs):
    ms = [x * 1000 for x in xs]
    print(f"{name:<38} mean {statistics.mean(ms):8.1f} ms  median {statistics.median(ms):8.1f} ms  (n={len(ms)})")
    return statistics.median(ms)


def main():
    state = tempfile.mkdtemp(prefix="hearth-bench-envd-")
    token_file, token = _make_token(state)
    srv = Server(state, token_file).start()
    os.environ.update(E2B_API_URL=srv.url, E2B_SANDBOX_URL=srv.url, E2B_API_KEY=token)
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=900)
    try:
        cli = [os.environ["HEARTH_BIN"], "vm", "exec", "--vm", sbx.sandbox_id]

        def sdk_true():
            assert sbx.commands.run("true").exit_code == 0

        def cli_true():
            # The SDK runs `/bin/bash -l -c CMD`: the baseline runs the same.
            subprocess.run(cli + ["--cmd", "exec /bin/bash -l -c true"], env=srv.env(), check=True, capture_output=True)

        sdk_true(), cli_true()  # warm both paths
        a = show("sdk commands.run('true')", timed(sdk_true, N))
        b = show("baseline: hearth vm exec bash -l -c true", timed(cli_true, N))
        print(f"{'ratio sdk/cli (median)':<38} {a / b:.2f}")

        def sdk_big():
            r = sbx.commands.run(f"head -c {BIG} /dev/zero | tr '\\0' a", retain_output=True)
            assert len(r.stdout) == BIG

        def cli_big():
            p = subprocess.run(
                cli + ["--cmd", f"exec /bin/bash -l -c \"head -c {BIG} /dev/zero | tr '\\0' a\""],
                env=srv.env(),
                check=True,
                capture_output=True,
            )
            assert len(p.stdout) == BIG

        sa = timed(sdk_big, 3)
        sb = timed(cli_big, 3)
        mib = BIG / (1 << 20)
        ta, tb = mib / statistics.median(sa), mib / statistics.median(sb)
        print(f"{'sdk 16 MiB stdout':<38} {ta:8.1f} MiB/s")
        print(f"{'baseline: hearth vm exec 16 MiB':<38} {tb:8.1f} MiB/s")
        print(f"{'ratio sdk/cli (throughput)':<38} {ta / tb:.2f}")
    finally:
        sbx.kill()
        srv.stop()
        srv.hearth("vm", "clean", "--all", check=False)


if __name__ == "__main__":
    main()
